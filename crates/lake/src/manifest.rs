//! Manifests and manifest lists: Avro object container files with the spec's `manifest_entry`
//! and `manifest_file` schemas (field ids as the `field-id` attributes readers project by), and
//! the header keys the spec requires. Written and read with `apache-avro`.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Reader, Schema as AvroSchema, Writer};

use super::layout::{self, PartitionSpec, optional, unwrap_union};
use super::schema::Schema;
use super::statistics::Statistics;

/// A data file of the table: a compacted file, its partition tuple (in the order of its
/// spec's fields), its size, its column statistics, and the `data_file` fields this crate does
/// not model, which a manifest rewrite carries over.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    pub path: String,
    pub partition: Vec<Option<String>>,
    pub record_count: i64,
    pub file_size_in_bytes: i64,
    pub statistics: Statistics,
    pub unmodeled: Vec<Unmodeled>,
}

/// A `data_file` field read from a manifest and not modeled here: its Avro field (as the
/// manifest's writer declared it) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmodeled {
    pub field: serde_json::Value,
    pub value: Value,
}

impl Unmodeled {
    fn name(&self) -> &str {
        self.field["name"].as_str().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Existing = 0,
    Added = 1,
    Deleted = 2,
}

/// A manifest entry with its inherited values resolved: the snapshot that added (or deleted)
/// the file and its sequence numbers.
#[derive(Debug, Clone, PartialEq)]
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
    /// The partition spec its entries are written with.
    pub partition_spec_id: i32,
    /// Each partition field's values over the live entries, in the spec's order.
    pub partitions: Vec<FieldSummary>,
}

/// The values of one partition field over a manifest's live entries (the manifest list's
/// `field_summary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSummary {
    pub contains_null: bool,
    pub lower: Option<String>,
    pub upper: Option<String>,
}

impl FieldSummary {
    fn include(&mut self, value: Option<&str>) {
        let Some(v) = value else {
            self.contains_null = true;
            return;
        };
        if self.lower.as_deref().is_none_or(|l| v < l) {
            self.lower = Some(v.to_owned());
        }
        if self.upper.as_deref().is_none_or(|u| v > u) {
            self.upper = Some(v.to_owned());
        }
    }

    /// Whether the field may hold `value` (no bounds: it may).
    pub fn may_hold(&self, value: &str) -> bool {
        match (&self.lower, &self.upper) {
            (Some(lo), Some(hi)) => lo.as_str() <= value && value <= hi.as_str(),
            _ => true,
        }
    }
}

impl ManifestFile {
    /// Files the manifest holds that a scan reads.
    pub fn live_files(&self) -> i64 {
        (self.added_files + self.existing_files) as i64
    }
}

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

static FILE_SCHEMA: LazyLock<AvroSchema> = LazyLock::new(|| AvroSchema::parse_str(MANIFEST_FILE).expect("manifest_file schema"));

/// An Avro object container file of `records`. Its header is written here, with `json` as
/// the schema (`apache-avro` would write its parsed form, which drops the `logicalType` of
/// arrays), and the blocks by `apache-avro` after it, with the header's sync marker.
fn container(schema: &AvroSchema, json: &str, records: Vec<Value>, metadata: &[(&str, String)]) -> Result<Vec<u8>, String> {
    // Deflate, as Iceberg writers compress manifests by default; and readers expect the codec
    // named in the header (PyIceberg takes a header without one for gzip, which it cannot read).
    let codec = Codec::Deflate(DeflateSettings::default());
    let marker = uuid::Uuid::new_v4().into_bytes();
    let mut pairs: Vec<(&str, &[u8])> = vec![("avro.schema", json.as_bytes()), ("avro.codec", b"deflate")];
    pairs.extend(metadata.iter().map(|(k, v)| (*k, v.as_bytes())));
    let mut out = b"Obj\x01".to_vec();
    let long = |out: &mut Vec<u8>, n: i64| {
        // Avro's zig-zag varint.
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    long(&mut out, pairs.len() as i64);
    for (key, value) in pairs {
        long(&mut out, key.len() as i64);
        out.extend_from_slice(key.as_bytes());
        long(&mut out, value.len() as i64);
        out.extend_from_slice(value);
    }
    long(&mut out, 0);
    out.extend_from_slice(&marker);
    let mut writer = Writer::append_to_with_codec(schema, out, codec, marker).map_err(|e| e.to_string())?;
    for record in records {
        writer.append_value(record).map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

/// The header metadata of an Avro container file, as written (the schema's JSON included).
fn raw_header(bytes: &[u8]) -> Result<HashMap<String, Vec<u8>>, String> {
    fn long(bytes: &[u8], at: &mut usize) -> Result<i64, String> {
        let (mut z, mut shift) = (0u64, 0);
        loop {
            let b = *bytes.get(*at).ok_or("a truncated Avro header")?;
            *at += 1;
            z |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err("a malformed Avro header".into());
            }
        }
    }
    fn text(bytes: &[u8], at: &mut usize) -> Result<Vec<u8>, String> {
        let len = usize::try_from(long(bytes, at)?).map_err(|_| "a negative length in an Avro header")?;
        let value = bytes.get(*at..at.saturating_add(len)).ok_or("a truncated Avro header")?.to_vec();
        *at += len;
        Ok(value)
    }
    if bytes.get(..4) != Some(b"Obj\x01") {
        return Err("not an Avro object container file".into());
    }
    let (mut at, mut header) = (4, HashMap::new());
    loop {
        let count = long(bytes, &mut at)?;
        if count == 0 {
            return Ok(header);
        }
        // A negative count is followed by the block's size in bytes.
        if count < 0 {
            long(bytes, &mut at)?;
        }
        for _ in 0..count.unsigned_abs() {
            let key = String::from_utf8(text(bytes, &mut at)?).map_err(|e| e.to_string())?;
            header.insert(key, text(bytes, &mut at)?);
        }
    }
}

/// A manifest of `entries`, written by snapshot `snapshot_id` with `schema` current and their
/// partitions in `spec`. Entries it adds leave their snapshot and sequence numbers to be
/// inherited from the manifest list (so a retried commit needs no rewrite); existing and deleted
/// ones carry theirs, as the spec requires. Bounds are written in `schema`'s types, and fields
/// read from other manifests that are not modeled here are written back as they were read.
pub fn write_manifest(entries: &[Entry], schema: &Schema, spec: &PartitionSpec) -> Result<Vec<u8>, String> {
    let mut unmodeled: Vec<&Unmodeled> = Vec::new();
    for u in entries.iter().flat_map(|e| &e.file.unmodeled) {
        match unmodeled.iter().find(|seen| seen.name() == u.name()) {
            None => unmodeled.push(u),
            Some(seen) if seen.field != u.field => return Err(format!("data_file field {} is declared two ways", u.name())),
            Some(_) => {}
        }
    }
    let (json, avro) = spec.entry_schema(&unmodeled.iter().map(|u| u.field.clone()).collect::<Vec<_>>())?;
    let records = entries
        .iter()
        .map(|e| {
            let added = e.status == Status::Added;
            let explicit = |v: i64| optional((!added).then_some(Value::Long(v)));
            let mut statistics = e.file.statistics.clone();
            statistics.widen(schema);
            let mut data_file = vec![
                ("content".into(), Value::Int(0)),
                ("file_path".into(), Value::String(e.file.path.clone())),
                ("file_format".into(), Value::String("PARQUET".into())),
                ("partition".into(), spec.partition_record(&e.file.partition)),
                ("record_count".into(), Value::Long(e.file.record_count)),
                ("file_size_in_bytes".into(), Value::Long(e.file.file_size_in_bytes)),
            ];
            data_file.extend(statistics.to_avro());
            for field in &unmodeled {
                // A file that lacks a field another file has gets its null (every optional
                // `data_file` field is a union with null first); a required one cannot be made up.
                let value = match e.file.unmodeled.iter().find(|u| u.name() == field.name()) {
                    Some(u) => u.value.clone(),
                    None if field.field["type"][0] == "null" => optional(None),
                    None => return Err(format!("{} lacks required data_file field {}", e.file.path, field.name())),
                };
                data_file.push((field.name().to_owned(), value));
            }
            Ok(Value::Record(vec![
                ("status".into(), Value::Int(e.status as i32)),
                ("snapshot_id".into(), optional(Some(Value::Long(e.snapshot_id)))),
                ("sequence_number".into(), explicit(e.sequence_number)),
                ("file_sequence_number".into(), explicit(e.file_sequence_number)),
                ("data_file".into(), Value::Record(data_file)),
            ]))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let metadata = [
        ("schema", serde_json::to_string(schema).expect("schema serializes")),
        ("schema-id", schema.schema_id.to_string()),
        ("partition-spec", serde_json::to_string(&spec.fields).expect("spec serializes")),
        ("partition-spec-id", spec.spec_id.to_string()),
        ("format-version", "2".into()),
        ("content", "data".into()),
    ];
    container(&avro, &json.to_string(), records, &metadata)
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
                .map(|summary| {
                    let bound = |b: &Option<String>| optional(b.as_ref().map(|s| Value::Bytes(s.as_bytes().to_vec())));
                    Value::Record(vec![
                        ("contains_null".into(), Value::Boolean(summary.contains_null)),
                        ("contains_nan".into(), optional(None)),
                        ("lower_bound".into(), bound(&summary.lower)),
                        ("upper_bound".into(), bound(&summary.upper)),
                    ])
                })
                .collect();
            Value::Record(vec![
                ("manifest_path".into(), Value::String(m.path.clone())),
                ("manifest_length".into(), Value::Long(m.length)),
                ("partition_spec_id".into(), Value::Int(m.partition_spec_id)),
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
    container(&FILE_SCHEMA, MANIFEST_FILE, records, &metadata)
}

/// Summarises `entries` (those of one manifest, in `spec`) as its manifest list lists it.
pub fn describe(
    path: String,
    length: i64,
    entries: &[Entry],
    spec: &PartitionSpec,
    snapshot_id: i64,
    sequence_number: i64,
) -> ManifestFile {
    let mut m = ManifestFile {
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
        partition_spec_id: spec.spec_id,
        partitions: vec![FieldSummary::default(); spec.fields.len()],
    };
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
        for (summary, value) in m.partitions.iter_mut().zip(&e.file.partition) {
            summary.include(value.as_deref());
        }
    }
    m
}

fn fields(value: Value) -> Result<HashMap<String, Value>, String> {
    match value {
        Value::Record(fields) => Ok(fields.into_iter().collect()),
        other => Err(format!("expected a record, read {other:?}")),
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

/// The entries of a manifest, inherited values taken from `listed` (its manifest list entry),
/// partitions read in its spec (of the table's `specs`). The `data_file` fields not modeled
/// here are kept with their Avro declaration, to be written back by a rewrite.
pub fn read_manifest(bytes: &[u8], listed: &ManifestFile, specs: &[PartitionSpec]) -> Result<Vec<Entry>, String> {
    let spec = specs
        .iter()
        .find(|s| s.spec_id == listed.partition_spec_id)
        .ok_or_else(|| format!("manifest {}: the table has no partition spec {}", listed.path, listed.partition_spec_id))?;
    let reader = Reader::new(bytes).map_err(|e| format!("manifest {}: {e}", listed.path))?;
    let declared = data_file_fields(&raw_header(bytes)?)?;
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
        let Some(Value::Record(record)) = f.remove("data_file") else { return Err("data_file is missing".into()) };
        // In the writer's order, so that what is carried over keeps it.
        let order: Vec<String> = record.iter().map(|(name, _)| name.clone()).collect();
        let mut file: HashMap<String, Value> = record.into_iter().collect();
        let mut partition = fields(file.remove("partition").ok_or("partition is missing")?)?;
        let values = spec.fields.iter().map(|p| string(&mut partition, &p.name)).collect::<Result<Vec<_>, String>>()?;
        if let Some(other) = partition.keys().next() {
            return Err(format!("manifest {}: partition field {other} is not in spec {}", listed.path, spec.spec_id));
        }
        let path = string(&mut file, "file_path")?.ok_or("file_path is missing")?;
        let record_count = required(&mut file, "record_count")?;
        let file_size_in_bytes = required(&mut file, "file_size_in_bytes")?;
        let statistics = Statistics::from_avro(&mut file)?;
        let unmodeled = order
            .iter()
            .filter(|name| !layout::is_modeled(name))
            .filter_map(|name| Some(Unmodeled { field: declared.get(name)?.clone(), value: file.remove(name)? }))
            .collect();
        entries.push(Entry {
            status,
            snapshot_id,
            sequence_number,
            file_sequence_number,
            file: DataFile { path, partition: values, record_count, file_size_in_bytes, statistics, unmodeled },
        });
    }
    Ok(entries)
}

/// The Avro declarations of a manifest's `data_file` fields, by name, as its header has them.
fn data_file_fields(header: &HashMap<String, Vec<u8>>) -> Result<HashMap<String, serde_json::Value>, String> {
    let schema = header.get("avro.schema").ok_or("the manifest header has no schema")?;
    let json: serde_json::Value = serde_json::from_slice(schema).map_err(|e| e.to_string())?;
    let fields = json["fields"].as_array().into_iter().flatten();
    let data_file = fields.into_iter().find(|f| f["name"] == "data_file").ok_or("the manifest declares no data_file")?;
    let declared = data_file["type"]["fields"].as_array().ok_or("data_file is not a record")?;
    Ok(declared.iter().filter_map(|f| Some((f["name"].as_str()?.to_owned(), f.clone()))).collect())
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
                    let contains_null = matches!(s.remove("contains_null").map(unwrap_union), Some(Value::Boolean(true)));
                    Ok(FieldSummary { contains_null, lower: string(&mut s, "lower_bound")?, upper: string(&mut s, "upper_bound")? })
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
            partition_spec_id: required(&mut f, "partition_spec_id")? as i32,
            partitions,
        });
    }
    Ok(manifests)
}

/// The header metadata of an Avro container file (the spec's keys above), the schema as
/// written under `avro.schema`.
pub fn header(bytes: &[u8]) -> Result<HashMap<String, String>, String> {
    Ok(raw_header(bytes)?.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect())
}
