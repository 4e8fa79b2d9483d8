//! Manifests and manifest lists: Avro object container files with the spec's `manifest_entry`
//! and `manifest_file` schemas (field ids as the `field-id` attributes readers project by), and
//! the header keys the spec requires. Written and read with `apache-avro`.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Reader, Schema as AvroSchema, Writer};

use super::metadata::PartitionSpec;
use super::schema::Schema;

/// A data file of the table: a compacted file, its partition (period, dataset) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: String,
    pub period: String,
    pub dataset: String,
    pub record_count: i64,
    pub file_size_in_bytes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Existing = 0,
    Added = 1,
    Deleted = 2,
}

/// A manifest entry with its inherited values resolved: the snapshot that added (or deleted)
/// the file and its sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: Status,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub file_sequence_number: i64,
    pub file: DataFile,
}

/// One manifest as its manifest list lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub length: i64,
    pub sequence_number: i64,
    pub min_sequence_number: i64,
    pub added_snapshot_id: i64,
    pub added_files: i32,
    pub existing_files: i32,
    pub deleted_files: i32,
    pub added_rows: i64,
    pub existing_rows: i64,
    pub deleted_rows: i64,
    /// Lower and upper bound of each partition field (period, dataset) over the live entries.
    pub partitions: Vec<(Option<String>, Option<String>)>,
}

impl ManifestFile {
    /// Files the manifest holds that a scan reads.
    pub fn live_files(&self) -> i64 {
        (self.added_files + self.existing_files) as i64
    }
}

const MANIFEST_ENTRY: &str = r#"{"type": "record", "name": "manifest_entry", "fields": [
  {"name": "status", "type": "int", "field-id": 0},
  {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
  {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
  {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
  {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": [
    {"name": "content", "type": "int", "field-id": 134},
    {"name": "file_path", "type": "string", "field-id": 100},
    {"name": "file_format", "type": "string", "field-id": 101},
    {"name": "partition", "field-id": 102, "type": {"type": "record", "name": "r102", "fields": [
      {"name": "period_tag", "type": ["null", "string"], "default": null, "field-id": 1000},
      {"name": "dataset_id", "type": ["null", "string"], "default": null, "field-id": 1001}
    ]}},
    {"name": "record_count", "type": "long", "field-id": 103},
    {"name": "file_size_in_bytes", "type": "long", "field-id": 104}
  ]}}
]}"#;

const MANIFEST_FILE: &str = r#"{"type": "record", "name": "manifest_file", "fields": [
  {"name": "manifest_path", "type": "string", "field-id": 500},
  {"name": "manifest_length", "type": "long", "field-id": 501},
  {"name": "partition_spec_id", "type": "int", "field-id": 502},
  {"name": "content", "type": "int", "field-id": 517},
  {"name": "sequence_number", "type": "long", "field-id": 515},
  {"name": "min_sequence_number", "type": "long", "field-id": 516},
  {"name": "added_snapshot_id", "type": "long", "field-id": 503},
  {"name": "added_files_count", "type": "int", "field-id": 504},
  {"name": "existing_files_count", "type": "int", "field-id": 505},
  {"name": "deleted_files_count", "type": "int", "field-id": 506},
  {"name": "added_rows_count", "type": "long", "field-id": 512},
  {"name": "existing_rows_count", "type": "long", "field-id": 513},
  {"name": "deleted_rows_count", "type": "long", "field-id": 514},
  {"name": "partitions", "default": null, "field-id": 507, "type": ["null", {"type": "array", "element-id": 508,
    "items": {"type": "record", "name": "r508", "fields": [
      {"name": "contains_null", "type": "boolean", "field-id": 509},
      {"name": "contains_nan", "type": ["null", "boolean"], "default": null, "field-id": 518},
      {"name": "lower_bound", "type": ["null", "bytes"], "default": null, "field-id": 510},
      {"name": "upper_bound", "type": ["null", "bytes"], "default": null, "field-id": 511}
    ]}}]}
]}"#;

static ENTRY_SCHEMA: LazyLock<AvroSchema> = LazyLock::new(|| AvroSchema::parse_str(MANIFEST_ENTRY).expect("manifest_entry schema"));
static FILE_SCHEMA: LazyLock<AvroSchema> = LazyLock::new(|| AvroSchema::parse_str(MANIFEST_FILE).expect("manifest_file schema"));

fn optional(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

fn container(schema: &AvroSchema, records: Vec<Value>, metadata: &[(&str, String)]) -> Result<Vec<u8>, String> {
    // Deflate, as Iceberg writers compress manifests by default; and readers expect the codec
    // named in the header (PyIceberg takes a header without one for gzip, which it cannot read).
    let codec = Codec::Deflate(DeflateSettings::default());
    let mut writer = Writer::with_codec(schema, Vec::new(), codec).map_err(|e| e.to_string())?;
    for (key, value) in metadata {
        writer.add_user_metadata((*key).to_owned(), value).map_err(|e| e.to_string())?;
    }
    for record in records {
        writer.append_value(record).map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

/// A manifest of `entries`, written by snapshot `snapshot_id` with `schema` current. Entries it
/// adds leave their snapshot and sequence numbers to be inherited from the manifest list (so a
/// retried commit needs no rewrite); existing and deleted ones carry theirs, as the spec requires.
pub fn write_manifest(entries: &[Entry], schema: &Schema, spec: &PartitionSpec) -> Result<Vec<u8>, String> {
    let records = entries
        .iter()
        .map(|e| {
            let added = e.status == Status::Added;
            let explicit = |v: i64| optional((!added).then_some(Value::Long(v)));
            let partition = Value::Record(vec![
                ("period_tag".into(), optional(Some(Value::String(e.file.period.clone())))),
                ("dataset_id".into(), optional(Some(Value::String(e.file.dataset.clone())))),
            ]);
            let data_file = Value::Record(vec![
                ("content".into(), Value::Int(0)),
                ("file_path".into(), Value::String(e.file.path.clone())),
                ("file_format".into(), Value::String("PARQUET".into())),
                ("partition".into(), partition),
                ("record_count".into(), Value::Long(e.file.record_count)),
                ("file_size_in_bytes".into(), Value::Long(e.file.file_size_in_bytes)),
            ]);
            Value::Record(vec![
                ("status".into(), Value::Int(e.status as i32)),
                ("snapshot_id".into(), optional(Some(Value::Long(e.snapshot_id)))),
                ("sequence_number".into(), explicit(e.sequence_number)),
                ("file_sequence_number".into(), explicit(e.file_sequence_number)),
                ("data_file".into(), data_file),
            ])
        })
        .collect();
    let metadata = [
        ("schema", serde_json::to_string(schema).expect("schema serializes")),
        ("schema-id", schema.schema_id.to_string()),
        ("partition-spec", serde_json::to_string(&spec.fields).expect("spec serializes")),
        ("partition-spec-id", spec.spec_id.to_string()),
        ("format-version", "2".into()),
        ("content", "data".into()),
    ];
    container(&ENTRY_SCHEMA, records, &metadata)
}

/// The manifest list of snapshot `snapshot_id` (sequence number `sequence_number`).
pub fn write_manifest_list(
    manifests: &[ManifestFile],
    snapshot_id: i64,
    parent: Option<i64>,
    sequence_number: i64,
) -> Result<Vec<u8>, String> {
    let records = manifests
        .iter()
        .map(|m| {
            let summaries = m
                .partitions
                .iter()
                .map(|(lower, upper)| {
                    let bound = |b: &Option<String>| optional(b.as_ref().map(|s| Value::Bytes(s.as_bytes().to_vec())));
                    Value::Record(vec![
                        ("contains_null".into(), Value::Boolean(false)),
                        ("contains_nan".into(), optional(None)),
                        ("lower_bound".into(), bound(lower)),
                        ("upper_bound".into(), bound(upper)),
                    ])
                })
                .collect();
            Value::Record(vec![
                ("manifest_path".into(), Value::String(m.path.clone())),
                ("manifest_length".into(), Value::Long(m.length)),
                ("partition_spec_id".into(), Value::Int(0)),
                ("content".into(), Value::Int(0)),
                ("sequence_number".into(), Value::Long(m.sequence_number)),
                ("min_sequence_number".into(), Value::Long(m.min_sequence_number)),
                ("added_snapshot_id".into(), Value::Long(m.added_snapshot_id)),
                ("added_files_count".into(), Value::Int(m.added_files)),
                ("existing_files_count".into(), Value::Int(m.existing_files)),
                ("deleted_files_count".into(), Value::Int(m.deleted_files)),
                ("added_rows_count".into(), Value::Long(m.added_rows)),
                ("existing_rows_count".into(), Value::Long(m.existing_rows)),
                ("deleted_rows_count".into(), Value::Long(m.deleted_rows)),
                ("partitions".into(), optional(Some(Value::Array(summaries)))),
            ])
        })
        .collect();
    let metadata = [
        ("snapshot-id", snapshot_id.to_string()),
        ("parent-snapshot-id", parent.map_or("null".into(), |p| p.to_string())),
        ("sequence-number", sequence_number.to_string()),
        ("format-version", "2".into()),
    ];
    container(&FILE_SCHEMA, records, &metadata)
}

/// Summarises `entries` (those of one manifest) as its manifest list lists it.
pub fn describe(path: String, length: i64, entries: &[Entry], snapshot_id: i64, sequence_number: i64) -> ManifestFile {
    let (mut m, mut bounds) = (
        ManifestFile {
            path,
            length,
            sequence_number,
            min_sequence_number: sequence_number,
            added_snapshot_id: snapshot_id,
            added_files: 0,
            existing_files: 0,
            deleted_files: 0,
            added_rows: 0,
            existing_rows: 0,
            deleted_rows: 0,
            partitions: Vec::new(),
        },
        [(None::<&str>, None::<&str>), (None, None)],
    );
    for e in entries {
        let rows = e.file.record_count;
        match e.status {
            Status::Added => (m.added_files, m.added_rows) = (m.added_files + 1, m.added_rows + rows),
            Status::Existing => (m.existing_files, m.existing_rows) = (m.existing_files + 1, m.existing_rows + rows),
            Status::Deleted => (m.deleted_files, m.deleted_rows) = (m.deleted_files + 1, m.deleted_rows + rows),
        }
        if e.status == Status::Deleted {
            continue;
        }
        m.min_sequence_number = m.min_sequence_number.min(e.sequence_number);
        for (bound, value) in bounds.iter_mut().zip([e.file.period.as_str(), e.file.dataset.as_str()]) {
            bound.0 = Some(bound.0.map_or(value, |b| b.min(value)));
            bound.1 = Some(bound.1.map_or(value, |b| b.max(value)));
        }
    }
    m.partitions = bounds.iter().map(|(l, u)| (l.map(str::to_owned), u.map(str::to_owned))).collect();
    m
}

fn fields(value: Value) -> Result<HashMap<String, Value>, String> {
    match value {
        Value::Record(fields) => Ok(fields.into_iter().collect()),
        other => Err(format!("expected a record, read {other:?}")),
    }
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn long(f: &mut HashMap<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match f.remove(name).map(unwrap_union) {
        Some(Value::Long(v)) => Ok(Some(v)),
        Some(Value::Int(v)) => Ok(Some(v as i64)),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(format!("{name}: expected a long, read {other:?}")),
    }
}

fn required(f: &mut HashMap<String, Value>, name: &str) -> Result<i64, String> {
    long(f, name)?.ok_or_else(|| format!("{name} is missing"))
}

fn string(f: &mut HashMap<String, Value>, name: &str) -> Result<Option<String>, String> {
    match f.remove(name).map(unwrap_union) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Bytes(b)) => String::from_utf8(b).map(Some).map_err(|e| format!("{name}: {e}")),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(format!("{name}: expected a string, read {other:?}")),
    }
}

/// The entries of a manifest, inherited values taken from `listed` (its manifest list entry).
pub fn read_manifest(bytes: &[u8], listed: &ManifestFile) -> Result<Vec<Entry>, String> {
    let reader = Reader::new(bytes).map_err(|e| format!("manifest {}: {e}", listed.path))?;
    let mut entries = Vec::new();
    for value in reader {
        let mut f = fields(value.map_err(|e| e.to_string())?)?;
        let status = match required(&mut f, "status")? {
            0 => Status::Existing,
            1 => Status::Added,
            2 => Status::Deleted,
            other => return Err(format!("manifest entry status {other}")),
        };
        let inherit = |v: Option<i64>, from: i64| v.unwrap_or(from);
        let snapshot_id = inherit(long(&mut f, "snapshot_id")?, listed.added_snapshot_id);
        let sequence_number = inherit(long(&mut f, "sequence_number")?, listed.sequence_number);
        let file_sequence_number = inherit(long(&mut f, "file_sequence_number")?, listed.sequence_number);
        let mut file = fields(f.remove("data_file").ok_or("data_file is missing")?)?;
        let mut partition = fields(file.remove("partition").ok_or("partition is missing")?)?;
        entries.push(Entry {
            status,
            snapshot_id,
            sequence_number,
            file_sequence_number,
            file: DataFile {
                path: string(&mut file, "file_path")?.ok_or("file_path is missing")?,
                period: string(&mut partition, "period_tag")?.unwrap_or_default(),
                dataset: string(&mut partition, "dataset_id")?.unwrap_or_default(),
                record_count: required(&mut file, "record_count")?,
                file_size_in_bytes: required(&mut file, "file_size_in_bytes")?,
            },
        });
    }
    Ok(entries)
}

/// The manifests a manifest list lists.
pub fn read_manifest_list(bytes: &[u8]) -> Result<Vec<ManifestFile>, String> {
    let reader = Reader::new(bytes).map_err(|e| format!("manifest list: {e}"))?;
    let mut manifests = Vec::new();
    for value in reader {
        let mut f = fields(value.map_err(|e| e.to_string())?)?;
        let partitions = match f.remove("partitions").map(unwrap_union) {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| {
                    let mut s = fields(item)?;
                    Ok((string(&mut s, "lower_bound")?, string(&mut s, "upper_bound")?))
                })
                .collect::<Result<Vec<_>, String>>()?,
            _ => Vec::new(),
        };
        let count = |f: &mut HashMap<String, Value>, name: &str| required(f, name).map(|v| v as i32);
        manifests.push(ManifestFile {
            path: string(&mut f, "manifest_path")?.ok_or("manifest_path is missing")?,
            length: required(&mut f, "manifest_length")?,
            sequence_number: required(&mut f, "sequence_number")?,
            min_sequence_number: required(&mut f, "min_sequence_number")?,
            added_snapshot_id: required(&mut f, "added_snapshot_id")?,
            added_files: count(&mut f, "added_files_count")?,
            existing_files: count(&mut f, "existing_files_count")?,
            deleted_files: count(&mut f, "deleted_files_count")?,
            added_rows: required(&mut f, "added_rows_count")?,
            existing_rows: required(&mut f, "existing_rows_count")?,
            deleted_rows: required(&mut f, "deleted_rows_count")?,
            partitions,
        });
    }
    Ok(manifests)
}

/// The header metadata of an Avro container file (the spec's keys above).
pub fn header(bytes: &[u8]) -> Result<HashMap<String, String>, String> {
    let reader = Reader::new(bytes).map_err(|e| e.to_string())?;
    let mut header: HashMap<String, String> =
        reader.user_metadata().iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
    header.insert("avro.schema".into(), serde_json::to_string(reader.writer_schema()).map_err(|e| e.to_string())?);
    Ok(header)
}
