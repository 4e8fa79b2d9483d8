//! A data file's column statistics as its manifest entry carries them: counts and bounds by
//! field id, the bounds in Iceberg's single-value binary form of the table's type. They are
//! taken from the statistics the compaction recorded for the file's columns (read off the
//! footer it wrote), and widened with the field when a later schema promotes it.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;

use super::layout::{STATISTICS, optional, unwrap_union};
use super::schema::{Column, Schema};

/// Counts and bounds by field id (Iceberg's `column_sizes`, `value_counts`,
/// `null_value_counts`, `lower_bounds` and `upper_bounds`). Empty maps: not known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statistics {
    pub column_sizes: BTreeMap<i32, i64>,
    pub value_counts: BTreeMap<i32, i64>,
    pub null_value_counts: BTreeMap<i32, i64>,
    pub lower_bounds: BTreeMap<i32, Vec<u8>>,
    pub upper_bounds: BTreeMap<i32, Vec<u8>>,
}

impl Statistics {
    /// The statistics of a file of `columns` in a table of `schema`: the columns that are
    /// fields of the table, by their ids, bounds encoded in the field's type (a column written
    /// narrower than its field is encoded wide). Columns without statistics add nothing.
    pub fn of_columns(columns: &[Column], schema: &Schema) -> Self {
        let mut s = Statistics::default();
        for column in columns {
            let Some(field) = schema.field(&column.name) else { continue };
            let id = field.id;
            let count = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
            s.column_sizes.extend(count(column.bytes).map(|v| (id, v)));
            s.value_counts.extend(count(column.values).map(|v| (id, v)));
            s.null_value_counts.extend(count(column.nulls).map(|v| (id, v)));
            s.lower_bounds.extend(column.lower.as_ref().and_then(|b| encode(b, &field.kind)).map(|b| (id, b)));
            s.upper_bounds.extend(column.upper.as_ref().and_then(|b| encode(b, &field.kind)).map(|b| (id, b)));
        }
        s
    }

    /// The bounds re-encoded in `schema`'s types, where a field was promoted since they were
    /// written (int to long, float to double); bounds of fields the schema no longer has are
    /// kept, as a reader ignores them.
    pub fn widen(&mut self, schema: &Schema) {
        for field in &schema.fields {
            for bounds in [&mut self.lower_bounds, &mut self.upper_bounds] {
                if let Some(bytes) = bounds.get_mut(&field.id) {
                    *bytes = widened(bytes, &field.kind);
                }
            }
        }
    }

    /// The Avro fields of `data_file` that hold the statistics, in [`STATISTICS`]' order.
    pub fn to_avro(&self) -> Vec<(String, Value)> {
        let counts = |m: &BTreeMap<i32, i64>| m.iter().map(|(k, v)| (*k, Value::Long(*v))).collect::<Vec<_>>();
        let bounds = |m: &BTreeMap<i32, Vec<u8>>| m.iter().map(|(k, v)| (*k, Value::Bytes(v.clone()))).collect::<Vec<_>>();
        let maps = [
            counts(&self.column_sizes),
            counts(&self.value_counts),
            counts(&self.null_value_counts),
            bounds(&self.lower_bounds),
            bounds(&self.upper_bounds),
        ];
        STATISTICS
            .iter()
            .zip(maps)
            .map(|((name, ..), pairs)| {
                let items: Vec<Value> =
                    pairs.into_iter().map(|(k, v)| Value::Record(vec![("key".into(), Value::Int(k)), ("value".into(), v)])).collect();
                ((*name).to_owned(), optional((!items.is_empty()).then_some(Value::Array(items))))
            })
            .collect()
    }

    /// The statistics in a `data_file` record's fields (taken out of `fields`).
    pub fn from_avro(fields: &mut HashMap<String, Value>) -> Result<Self, String> {
        let mut pairs = |name: &str| -> Result<Vec<(i32, Value)>, String> {
            let items = match fields.remove(name).map(unwrap_union) {
                None | Some(Value::Null) => return Ok(Vec::new()),
                Some(Value::Array(items)) => items,
                Some(Value::Map(_)) => return Err(format!("{name}: an Avro map, where Iceberg writes an array of pairs")),
                Some(other) => return Err(format!("{name}: expected an array of pairs, read {other:?}")),
            };
            items
                .into_iter()
                .map(|item| match item {
                    Value::Record(mut kv) if kv.len() == 2 => {
                        let (value, key) = (kv.pop().unwrap().1, kv.pop().unwrap().1);
                        match key {
                            Value::Int(k) => Ok((k, value)),
                            other => Err(format!("{name}: a key that is not an int: {other:?}")),
                        }
                    }
                    other => Err(format!("{name}: expected a key-value pair, read {other:?}")),
                })
                .collect()
        };
        let count = |pairs: Vec<(i32, Value)>| {
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Long(v) => Ok((k, v)),
                    Value::Int(v) => Ok((k, v.into())),
                    other => Err(format!("a count that is not a long: {other:?}")),
                })
                .collect::<Result<BTreeMap<_, _>, String>>()
        };
        let bound = |pairs: Vec<(i32, Value)>| {
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Bytes(b) | Value::Fixed(_, b) => Ok((k, b)),
                    other => Err(format!("a bound that is not bytes: {other:?}")),
                })
                .collect::<Result<BTreeMap<_, _>, String>>()
        };
        Ok(Statistics {
            column_sizes: count(pairs(STATISTICS[0].0)?)?,
            value_counts: count(pairs(STATISTICS[1].0)?)?,
            null_value_counts: count(pairs(STATISTICS[2].0)?)?,
            lower_bounds: bound(pairs(STATISTICS[3].0)?)?,
            upper_bounds: bound(pairs(STATISTICS[4].0)?)?,
        })
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.column_sizes.is_empty()
            && self.value_counts.is_empty()
            && self.null_value_counts.is_empty()
            && self.lower_bounds.is_empty()
            && self.upper_bounds.is_empty()
    }
}

/// A bound recorded as JSON (see [`Column`]) in Iceberg's single-value binary form of `kind`;
/// `None` where the type has no bound here or the value does not fit it.
fn encode(bound: &serde_json::Value, kind: &str) -> Option<Vec<u8>> {
    use serde_json::Value as J;
    match (kind, bound) {
        ("boolean", J::Bool(b)) => Some(vec![u8::from(*b)]),
        ("int" | "date", J::Number(n)) => n.as_i64().and_then(|v| i32::try_from(v).ok()).map(|v| v.to_le_bytes().to_vec()),
        ("long" | "timestamp" | "timestamptz", J::Number(n)) => n.as_i64().map(|v| v.to_le_bytes().to_vec()),
        ("float", J::Number(n)) => n.as_f64().map(|v| (v as f32).to_le_bytes().to_vec()),
        ("double", J::Number(n)) => n.as_f64().map(|v| v.to_le_bytes().to_vec()),
        ("string", J::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// A bound of a narrower type read as `kind` (Iceberg's promotions), or as it is.
fn widened(bytes: &[u8], kind: &str) -> Vec<u8> {
    match (kind, <[u8; 4]>::try_from(bytes)) {
        ("long", Ok(b)) => i64::from(i32::from_le_bytes(b)).to_le_bytes().to_vec(),
        ("double", Ok(b)) => f64::from(f32::from_le_bytes(b)).to_le_bytes().to_vec(),
        _ => bytes.to_vec(),
    }
}
