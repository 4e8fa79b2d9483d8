//! A table's layout as data: its partition spec, and from it everything that depends on it —
//! the first fields of a new table's schema, a data file's partition tuple, and the Avro schema
//! of its manifests' entries (the `partition` record follows the spec's fields, and `data_file`
//! carries the statistics of [`STATISTICS`]). Changing the spec, or adding a statistic, is a
//! change here.

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::schema::{DATASET_COLUMN, Field, PERIOD_COLUMN};

/// A partition spec (the table metadata's `partition-specs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionSpec {
    pub spec_id: i32,
    pub fields: Vec<PartitionField>,
}

/// A field of a partition spec. Every field here is an identity partition of a string column,
/// named after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionField {
    pub name: String,
    pub transform: String,
    pub source_id: i32,
    pub field_id: i32,
}

/// The partition source columns of every table, with their field ids (the first of a new
/// table's schema). They are in the files' partition tuples.
pub const SOURCES: [(i32, &str); 2] = [(1, PERIOD_COLUMN), (2, DATASET_COLUMN)];

/// The statistics a data file carries: Iceberg's optional `map<int, long | binary>` fields of
/// `data_file`, by name, with the ids of the field, its key and its value, and the value type.
pub const STATISTICS: [(&str, i32, i32, i32, &str); 5] = [
    ("column_sizes", 108, 117, 118, "long"),
    ("value_counts", 109, 119, 120, "long"),
    ("null_value_counts", 110, 121, 122, "long"),
    ("lower_bounds", 125, 126, 127, "bytes"),
    ("upper_bounds", 128, 129, 130, "bytes"),
];

impl PartitionSpec {
    /// Identity on the period, then on the dataset: readers prune by period ("all rows of
    /// period P"), and by dataset (one admiral's records, or consolidation's rewrites, which
    /// touch one dataset). Each compacted file holds one period of one dataset, so the
    /// partition tuple is exact.
    pub fn by_period_and_dataset() -> Self {
        let fields = SOURCES
            .iter()
            .enumerate()
            .map(|(i, (source_id, name))| PartitionField {
                name: (*name).into(),
                transform: "identity".into(),
                source_id: *source_id,
                field_id: 1000 + i as i32,
            })
            .collect();
        PartitionSpec { spec_id: 0, fields }
    }

    /// Identity on the period alone (spec 1): the layout of period roll-ups, whose files each
    /// hold one period of many datasets. A second spec rather than a second table: readers see
    /// one table, and a query by period prunes both kinds of file (Iceberg partition evolution;
    /// the period's partition field keeps its id, as the spec requires).
    pub fn by_period() -> Self {
        let mut spec = Self::by_period_and_dataset();
        spec.fields.retain(|f| f.name == PERIOD_COLUMN);
        PartitionSpec { spec_id: 1, ..spec }
    }

    /// The fields a new table's schema starts with: the partition sources.
    pub fn source_fields() -> Vec<Field> {
        SOURCES.iter().map(|(id, name)| Field { id: *id, name: (*name).into(), required: false, kind: "string".into() }).collect()
    }

    /// Where the partition of source column `name` is in a partition tuple.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The partition tuple of a file whose source columns hold `value(name)`.
    pub fn partition(&self, value: impl Fn(&str) -> Option<String>) -> Vec<Option<String>> {
        self.fields.iter().map(|f| value(&f.name)).collect()
    }

    /// The partition tuple as its Avro record.
    pub fn partition_record(&self, values: &[Option<String>]) -> Value {
        let field = |(f, v): (&PartitionField, &Option<String>)| (f.name.clone(), optional(v.clone().map(Value::String)));
        Value::Record(self.fields.iter().zip(values).map(field).collect())
    }

    /// The manifest entry's Avro schema: the spec's (v2) fields, this spec's partition record,
    /// the statistics, then `unmodeled`, the Avro fields of `data_file` that a manifest read
    /// held and that are carried over as they are.
    /// Answered as its JSON too: the parsed schema drops `logicalType` from arrays, which
    /// readers need to see the statistics' arrays as maps, so the file header takes the JSON.
    pub fn entry_schema(&self, unmodeled: &[serde_json::Value]) -> Result<(serde_json::Value, AvroSchema), String> {
        let partition: Vec<_> = self
            .fields
            .iter()
            .map(|f| json!({"name": f.name, "type": ["null", "string"], "default": null, "field-id": f.field_id}))
            .collect();
        let statistics = STATISTICS.iter().map(|(name, id, key, value, kind)| {
            let pair = json!({"type": "record", "name": format!("k{key}_v{value}"), "fields": [
                {"name": "key", "type": "int", "field-id": key},
                {"name": "value", "type": kind, "field-id": value}
            ]});
            json!({"name": name, "default": null, "field-id": id,
                   "type": ["null", {"type": "array", "logicalType": "map", "items": pair}]})
        });
        let mut data_file = vec![
            json!({"name": "content", "type": "int", "field-id": 134}),
            json!({"name": "file_path", "type": "string", "field-id": 100}),
            json!({"name": "file_format", "type": "string", "field-id": 101}),
            json!({"name": "partition", "field-id": 102, "type": {"type": "record", "name": "r102", "fields": partition}}),
            json!({"name": "record_count", "type": "long", "field-id": 103}),
            json!({"name": "file_size_in_bytes", "type": "long", "field-id": 104}),
        ];
        data_file.extend(statistics);
        data_file.extend(unmodeled.iter().cloned());
        let entry = json!({"type": "record", "name": "manifest_entry", "fields": [
            {"name": "status", "type": "int", "field-id": 0},
            {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
            {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
            {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
            {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": data_file}}
        ]});
        let parsed = AvroSchema::parse(&entry).map_err(|e| format!("manifest entry schema: {e}"))?;
        Ok((entry, parsed))
    }
}

/// The names of the `data_file` fields this crate models: any other field a manifest holds is
/// carried over as it is.
pub fn is_modeled(name: &str) -> bool {
    matches!(name, "content" | "file_path" | "file_format" | "partition" | "record_count" | "file_size_in_bytes")
        || STATISTICS.iter().any(|(n, ..)| *n == name)
}

/// An optional Avro value (the union `["null", T]`).
pub fn optional(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

/// The value inside an optional Avro value (a union), or the value itself.
pub fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}
