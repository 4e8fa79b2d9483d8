//! A table's Iceberg schema: field ids assigned once and kept, new columns added as new fields
//! of a new schema version, and the name mapping that lets readers find columns in files written
//! without field ids (the engine's outputs, like the client's fragments, carry none).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The partition source columns. Files written since the engine adds them hold them as
/// columns (readers map them to the same field ids by the name mapping); for older files an
/// Iceberg reader projects the identity partition's value.
pub use fusou_contract::ids::{DATASET_COLUMN, PERIOD_COLUMN};

/// A column of a compacted file, as the compaction recorded it: its name and its Iceberg
/// primitive type, or `unsupported(<arrow type>)` when Iceberg has none for it; and, for files
/// written since the engine reports them, its statistics (bounds as JSON values of the
/// column's kind: numbers, strings of at most 16 characters, booleans).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<serde_json::Value>,
}

impl Column {
    /// A column without statistics.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Column { name: name.into(), kind: kind.into(), ..Column::default() }
    }
}

/// One field of a table schema (every field is optional: the client writes every column nullable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub id: i32,
    pub name: String,
    pub required: bool,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A schema of the table metadata (`"type": "struct"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Schema {
    pub schema_id: i32,
    #[serde(rename = "type")]
    pub kind: String,
    pub fields: Vec<Field>,
}

impl Schema {
    /// A new table's first schema: the two partition columns.
    pub fn initial() -> Self {
        Schema { schema_id: 0, kind: "struct".into(), fields: super::layout::PartitionSpec::source_fields() }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn last_column_id(&self) -> i32 {
        self.fields.iter().map(|f| f.id).max().unwrap_or(0)
    }

    /// Iceberg's name mapping of this schema (table property `schema.name-mapping.default`):
    /// every field by its name, ids never reused, so it maps every file ever written.
    pub fn name_mapping(&self) -> String {
        let fields: Vec<serde_json::Value> =
            self.fields.iter().map(|f| serde_json::json!({ "field-id": f.id, "names": [f.name] })).collect();
        serde_json::Value::Array(fields).to_string()
    }
}

/// What admitting a file to a governed table decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admission {
    /// A new schema version, when the file widens a field (Iceberg's promotions).
    pub schema: Option<Schema>,
    /// The file's columns outside the contract: they stay in the file, unread by the table.
    pub outside: Vec<String>,
}

impl Admission {
    /// Why some of the file's columns are not in the table, if any are not.
    pub fn note(&self) -> Option<String> {
        (!self.outside.is_empty())
            .then(|| format!("columns outside the client's contract, left out of the table: {}", self.outside.join(", ")))
    }
}

/// Admits a file of `columns` to a table governed by `contract` (its columns, see
/// [`super::contract`]) whose schema, `schema`, already holds every contract column
/// ([`conform`]). A contract column of the table's type, or of one that reads as it, is taken;
/// one of a wider type the table can be promoted to widens the field (int to long, float to
/// double), the only way a file changes the schema; any other type is a clash, refused with the
/// reason (the file is left out of the table, never read under a wrong type). Columns outside
/// the contract are listed, not added.
pub fn admit(schema: &Schema, columns: &[Column], contract: &[Column]) -> Result<Admission, String> {
    let mut next = schema.clone();
    let mut outside = Vec::new();
    for column in columns {
        // The partition source columns the engine writes: fields of every table already.
        if column.name == PERIOD_COLUMN || column.name == DATASET_COLUMN {
            continue;
        }
        if !contract.iter().any(|c| c.name == column.name) {
            outside.push(column.name.clone());
            continue;
        }
        let field = next
            .fields
            .iter_mut()
            .find(|f| f.name == column.name)
            .ok_or_else(|| format!("the table lacks contract column {}", column.name))?;
        if field.kind == column.kind || reads_as(&column.kind, &field.kind) {
            continue;
        }
        if reads_as(&field.kind, &column.kind) {
            field.kind = column.kind.clone();
            continue;
        }
        return Err(format!("column {} is {} in the table and {} in this file", column.name, field.kind, column.kind));
    }
    let schema = (next.fields != schema.fields).then(|| Schema { schema_id: schema.schema_id + 1, ..next });
    Ok(Admission { schema, outside })
}

/// The schema of a table governed by `contract`: `schema` with the contract's columns it lacks
/// appended as new fields, and the fields the contract does not name dropped (a table made
/// before it was governed may hold an uploader's), as a new version; `None` when it is the
/// contract's already. Ids are kept and never reused. Run on every commit, so that a change of
/// the contract reaches each table with its next commit, and a dropped field leaves the name
/// mapping, so that no reader reads it again.
pub fn conform(schema: &Schema, last_column_id: i32, contract: &[Column]) -> Result<Option<Schema>, String> {
    let mut next = evolve(schema, last_column_id, contract)?.unwrap_or_else(|| schema.clone());
    next.fields.retain(|f| f.name == PERIOD_COLUMN || f.name == DATASET_COLUMN || contract.iter().any(|c| c.name == f.name));
    if next.fields == schema.fields {
        return Ok(None);
    }
    next.schema_id = schema.schema_id + 1;
    Ok(Some(next))
}

/// The schema that holds `columns`: `schema` itself, or a new version of it with the new
/// columns appended as new fields (ids after `last_column_id`) and a field widened where
/// Iceberg allows (int to long, float to double). A column whose type the table cannot take is
/// a clash, refused with the reason.
fn evolve(schema: &Schema, last_column_id: i32, columns: &[Column]) -> Result<Option<Schema>, String> {
    let mut next = schema.clone();
    let mut last = last_column_id;
    for column in columns {
        if column.name == PERIOD_COLUMN || column.name == DATASET_COLUMN {
            return Err(format!("column {} is the table's partition column", column.name));
        }
        if column.kind.starts_with("unsupported") {
            return Err(format!("column {} has a type Iceberg does not have: {}", column.name, column.kind));
        }
        match next.fields.iter_mut().find(|f| f.name == column.name) {
            None => {
                last += 1;
                next.fields.push(Field { id: last, name: column.name.clone(), required: false, kind: column.kind.clone() });
            }
            Some(field) if field.kind == column.kind || reads_as(&column.kind, &field.kind) => {}
            Some(field) if reads_as(&field.kind, &column.kind) => field.kind = column.kind.clone(),
            Some(field) => {
                return Err(format!("column {} is {} in the table and {} in this file", column.name, field.kind, column.kind));
            }
        }
    }
    if next.fields == schema.fields {
        return Ok(None);
    }
    next.schema_id = schema.schema_id + 1;
    Ok(Some(next))
}

/// Whether a column written as `file` reads as the table's `table` type (Iceberg's promotions).
fn reads_as(file: &str, table: &str) -> bool {
    matches!((file, table), ("int", "long") | ("float", "double"))
}

/// The Iceberg type of an Arrow column, as the compaction's outputs hold them.
pub fn iceberg_type(data_type: &arrow_schema::DataType) -> String {
    use arrow_schema::{DataType as D, TimeUnit};
    match data_type {
        D::Boolean => "boolean".into(),
        D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 => "int".into(),
        D::Int64 | D::UInt32 => "long".into(),
        D::Float16 | D::Float32 => "float".into(),
        D::Float64 => "double".into(),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "binary".into(),
        D::Date32 => "date".into(),
        D::Timestamp(TimeUnit::Microsecond, None) => "timestamp".into(),
        D::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamptz".into(),
        other => format!("unsupported({other})"),
    }
}

/// The columns of an output's Arrow schema.
pub fn columns(schema: &arrow_schema::Schema) -> Vec<Column> {
    schema.fields().iter().map(|f| Column::new(f.name(), iceberg_type(f.data_type()))).collect()
}

/// The columns as the index stores them (JSON text).
pub fn columns_json(columns: &[Column]) -> String {
    serde_json::to_string(columns).expect("columns serialize")
}

/// Table properties every table carries.
pub fn properties(schema: &Schema) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("schema.name-mapping.default".to_owned(), schema.name_mapping()),
        ("write.format.default".to_owned(), "parquet".to_owned()),
        ("write.parquet.compression-codec".to_owned(), "zstd".to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[(&str, &str)]) -> Vec<Column> {
        c.iter().map(|(n, k)| Column::new(*n, *k)).collect()
    }

    #[test]
    fn new_columns_become_new_fields_of_a_new_schema_and_ids_are_kept() {
        let first = evolve(&Schema::initial(), 2, &cols(&[("uuid", "string"), ("index", "int")])).unwrap().unwrap();
        assert_eq!(first.schema_id, 1);
        assert_eq!(
            first.fields.iter().map(|f| (f.id, f.name.as_str())).collect::<Vec<_>>(),
            [(1, "period_tag"), (2, "dataset_id"), (3, "uuid"), (4, "index")]
        );
        // The same columns in another order, or fewer of them: the schema stands.
        assert_eq!(evolve(&first, 4, &cols(&[("index", "int"), ("uuid", "string")])).unwrap(), None);
        assert_eq!(evolve(&first, 4, &cols(&[("uuid", "string")])).unwrap(), None);
        // A new column: a new version, the old ids unchanged, the new one after the last ever
        // assigned (here 9: ids of dropped columns are never reused).
        let second = evolve(&first, 9, &cols(&[("uuid", "string"), ("timestamp", "long")])).unwrap().unwrap();
        assert_eq!(second.schema_id, 2);
        assert_eq!(second.field("uuid").unwrap().id, 3);
        assert_eq!(second.field("timestamp").unwrap().id, 10);
        assert!(second.name_mapping().contains(r#"{"field-id":10,"names":["timestamp"]}"#));
    }

    #[test]
    fn types_widen_where_iceberg_promotes_and_clashes_are_refused() {
        let table = evolve(&Schema::initial(), 2, &cols(&[("n", "int"), ("x", "float"), ("s", "string")])).unwrap().unwrap();
        // Narrower files read as the table's type.
        let wide = evolve(&table, 5, &cols(&[("n", "long")])).unwrap().unwrap();
        assert_eq!(wide.field("n").unwrap().kind, "long");
        assert_eq!(evolve(&wide, 5, &cols(&[("n", "int")])).unwrap(), None);
        let err = evolve(&table, 5, &cols(&[("s", "int")])).unwrap_err();
        assert_eq!(err, "column s is string in the table and int in this file");
        assert!(evolve(&table, 5, &cols(&[("period_tag", "string")])).is_err());
        assert!(evolve(&table, 5, &cols(&[("d", "unsupported(Decimal128(10, 2))")])).is_err());
    }

    #[test]
    fn a_governed_table_takes_only_the_contracts_columns_and_types() {
        let contract = cols(&[("uuid", "string"), ("n", "int"), ("x", "float")]);
        let table = conform(&Schema::initial(), 2, &contract).unwrap().unwrap();
        assert_eq!(conform(&table, 5, &contract).unwrap(), None, "conformed once, then stable");
        // Columns outside the contract are listed, never added; the schema stands.
        let a = admit(&table, &cols(&[("uuid", "string"), ("junk", "string"), ("n", "int")]), &contract).unwrap();
        assert_eq!((a.schema.clone(), a.outside.clone()), (None, vec!["junk".to_owned()]));
        assert!(a.note().unwrap().contains("junk"));
        // The period and dataset columns the engine writes are the table's own fields.
        let own = admit(&table, &cols(&[("uuid", "string"), ("period_tag", "string"), ("dataset_id", "string")]), &contract).unwrap();
        assert_eq!((own.schema, own.outside), (None, Vec::<String>::new()));
        // The first writer of a column does not fix its type: the contract did.
        assert_eq!(
            admit(&table, &cols(&[("n", "string")]), &contract).unwrap_err(),
            "column n is int in the table and string in this file"
        );
        // Iceberg's promotions still widen a type.
        let wide = admit(&table, &cols(&[("n", "long")]), &contract).unwrap().schema.unwrap();
        assert_eq!((wide.schema_id, wide.field("n").unwrap().kind.as_str()), (table.schema_id + 1, "long"));
        // A new contract column reaches the table by conform, not by a file.
        let mut newer = contract.clone();
        newer.push(Column::new("added", "long"));
        assert!(admit(&table, &cols(&[("added", "long")]), &contract).unwrap().outside == ["added"]);
        let evolved = conform(&table, 5, &newer).unwrap().unwrap();
        assert_eq!(evolved.field("added").unwrap().id, 6);
        // A table made before it was governed, with an uploader's field: conform drops it, and
        // it leaves the name mapping, so readers no longer read it from any file.
        let ungoverned = evolve(&table, 5, &cols(&[("junk", "string")])).unwrap().unwrap();
        assert!(ungoverned.name_mapping().contains("junk"));
        let governed = conform(&ungoverned, 6, &contract).unwrap().unwrap();
        assert_eq!((governed.fields.clone(), governed.schema_id), (table.fields.clone(), ungoverned.schema_id + 1));
        assert!(!governed.name_mapping().contains("junk"));
    }

    #[test]
    fn arrow_types_map_to_iceberg_primitives() {
        use arrow_schema::{DataType, Field as F, Schema as S};
        let s = S::new(vec![
            F::new("a", DataType::Utf8, true),
            F::new("b", DataType::Int32, true),
            F::new("c", DataType::Int64, true),
            F::new("d", DataType::Float64, true),
            F::new("e", DataType::Boolean, true),
            F::new("f", DataType::Decimal128(10, 2), true),
        ]);
        let kinds: Vec<String> = columns(&s).into_iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["string", "int", "long", "double", "boolean", "unsupported(Decimal128(10, 2))"]);
    }
}
