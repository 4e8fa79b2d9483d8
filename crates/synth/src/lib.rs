//! Deterministic synthetic fragments shaped like the FUSOU client's, and hostile ones
//! ([`forge`]). For tests, benchmarks and the demo only: no Worker links it.
//!
//! The tables and columns are the client's own (`data/port_tables.json`, data version 0.4: 32
//! uploaded tables); segments are written as the client writes them (arrow-rs, SNAPPY, every
//! column nullable, UUIDs and lists as Utf8, one row group). The same seed gives the same bytes,
//! so tests, benchmarks, the local demo and load tests all see the same data.

// Not every public item of this crate is documented yet (row types and settings fields
// above all): the workspace denies `missing_docs`, and this crate opts out until it passes.
#![allow(missing_docs)]

pub mod forge;

use std::ops::RangeInclusive;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{BooleanBuilder, Float32Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

use fusou_contract::fragment::TableOffset;
use fusou_contract::ids::TableName;

/// The physical type the client writes for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ColumnKind {
    Utf8,
    Int32,
    Int64,
    Float32,
    Boolean,
}

impl ColumnKind {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::Utf8 => DataType::Utf8,
            ColumnKind::Int32 => DataType::Int32,
            ColumnKind::Int64 => DataType::Int64,
            ColumnKind::Float32 => DataType::Float32,
            ColumnKind::Boolean => DataType::Boolean,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    /// The client's model type (`uuid`, `i32`, `[i32]`, `string?`, …).
    pub model_type: String,
    #[serde(rename = "parquet")]
    pub kind: ColumnKind,
}

#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: TableName,
    pub columns: Vec<ColumnSpec>,
    pub schema: SchemaRef,
}

/// The tables the client uploads, in the order of `uploaded_tables`.
pub fn client_tables() -> &'static [TableSpec] {
    static TABLES: OnceLock<Vec<TableSpec>> = OnceLock::new();
    TABLES.get_or_init(|| {
        #[derive(Deserialize)]
        struct Spec {
            uploaded_tables: Vec<String>,
            tables: std::collections::HashMap<String, Vec<ColumnSpec>>,
        }
        let spec: Spec = serde_json::from_str(fusou_contract::PORT_TABLES_JSON).expect("data/port_tables.json is well-formed");
        spec.uploaded_tables
            .iter()
            .map(|name| {
                let columns = spec.tables[name].clone();
                let fields: Vec<Field> = columns.iter().map(|c| Field::new(&c.name, c.kind.data_type(), true)).collect();
                TableSpec {
                    name: TableName::parse(name).expect("the client's table names are valid"),
                    columns,
                    schema: Arc::new(Schema::new(fields)),
                }
            })
            .collect()
    })
}

/// SplitMix64: small, fast and the same everywhere, which is all a data generator needs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `range` (inclusive).
    pub fn range(&mut self, range: RangeInclusive<u64>) -> u64 {
        let span = range.end() - range.start() + 1;
        range.start() + self.next_u64() % span
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        let hex = format!("{a:016x}{b:016x}");
        format!("{}-{}-4{}-a{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct FragmentSpec {
    pub seed: u64,
    /// Rows per table, drawn for each table.
    pub rows: RangeInclusive<u64>,
    /// Older clients also upload tables with no rows; newer ones leave them out.
    pub include_empty_tables: bool,
}

impl Default for FragmentSpec {
    fn default() -> Self {
        Self { seed: 1, rows: 1..=40, include_empty_tables: false }
    }
}

/// One generated table segment: its rows (for comparison) and its Parquet bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    pub table: TableName,
    pub batch: RecordBatch,
    pub bytes: Vec<u8>,
}

/// A fragment as the client uploads it.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub bytes: Vec<u8>,
    pub offsets: Vec<TableOffset>,
    pub segments: Vec<Segment>,
}

impl Fragment {
    /// Overwrites the compressed data of the first page of `table`'s segment with garbage,
    /// keeping its footer, its page headers and the Snappy block's declared length: the upload's
    /// checks (which read no page's data) pass and only decoding the page fails.
    pub fn garble_first_page(&mut self, table: &str) {
        let o = self.offsets.iter().find(|o| o.table_name.as_str() == table).expect("a table of the fragment").clone();
        let segment = bytes::Bytes::copy_from_slice(&self.bytes[o.start_byte as usize..o.end() as usize]);
        let footer = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&segment).expect("a valid segment");
        let (first_page, _) = footer.row_group(0).column(0).byte_range();
        let (header, body) = fusou_contract::fragment::guard::first_page_body(&segment[first_page as usize..]).expect("a page header");
        // Past the Snappy block's length varint (at most 5 bytes for a page).
        let data = o.start_byte as usize + first_page as usize + header + 5.min(body);
        let end = (data + 8).min(o.start_byte as usize + first_page as usize + header + body);
        self.bytes[data..end].fill(0xff);
    }

    /// `table_offsets` as the client sends it: a JSON array encoded into a string.
    pub fn table_offsets_string(&self) -> String {
        serde_json::to_string(&self.offsets).expect("offsets serialize")
    }

    pub fn total_rows(&self) -> u64 {
        self.segments.iter().map(|s| s.batch.num_rows() as u64).sum()
    }
}

/// Writes one batch as a standalone Parquet file, the way the client does.
pub fn write_segment(batch: &RecordBatch) -> Vec<u8> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).expect("a valid schema");
    writer.write(batch).expect("an in-memory write");
    writer.close().expect("an in-memory write");
    out
}

/// Generates one table's rows. `env_uuid` links every row to the fragment's `env_info`.
pub fn table_batch(table: &TableSpec, rows: usize, env_uuid: &str, rng: &mut Rng) -> RecordBatch {
    let group = rng.uuid();
    let columns: Vec<ArrayRef> = table
        .columns
        .iter()
        .map(|c| -> ArrayRef {
            let key = matches!(c.name.as_str(), "uuid" | "env_uuid" | "index");
            let null = |rng: &mut Rng| !key && rng.chance(3);
            match c.kind {
                ColumnKind::Utf8 => {
                    let mut b = StringBuilder::new();
                    for _ in 0..rows {
                        if null(rng) {
                            b.append_null();
                        } else if c.name == "env_uuid" || (c.name == "uuid" && table.name.as_str() == "env_info") {
                            b.append_value(env_uuid);
                        } else if c.name == "uuid" {
                            b.append_value(&group);
                        } else if c.model_type == "uuid" || c.model_type == "uuid?" {
                            b.append_value(rng.uuid());
                        } else if c.model_type.starts_with('[') || c.model_type.starts_with("Option<[") {
                            let n = rng.range(0..=6);
                            let items: Vec<String> = (0..n).map(|_| rng.range(0..=1500).to_string()).collect();
                            b.append_value(format!("[{}]", items.join(",")));
                        } else {
                            b.append_value(format!("{}-{}", c.name, rng.range(0..=999)));
                        }
                    }
                    Arc::new(b.finish())
                }
                ColumnKind::Int32 => {
                    let mut b = Int32Builder::new();
                    for i in 0..rows {
                        if null(rng) {
                            b.append_null();
                        } else if c.name == "index" {
                            b.append_value(i as i32);
                        } else {
                            b.append_value(rng.range(0..=2000) as i32);
                        }
                    }
                    Arc::new(b.finish())
                }
                ColumnKind::Int64 => {
                    let mut b = Int64Builder::new();
                    for _ in 0..rows {
                        if null(rng) {
                            b.append_null();
                        } else {
                            b.append_value(1_762_300_000_000 + rng.range(0..=86_400_000) as i64);
                        }
                    }
                    Arc::new(b.finish())
                }
                ColumnKind::Float32 => {
                    let mut b = Float32Builder::new();
                    for _ in 0..rows {
                        if null(rng) { b.append_null() } else { b.append_value(rng.range(0..=10_000) as f32 / 100.0) }
                    }
                    Arc::new(b.finish())
                }
                ColumnKind::Boolean => {
                    let mut b = BooleanBuilder::new();
                    for _ in 0..rows {
                        if null(rng) { b.append_null() } else { b.append_value(rng.chance(50)) }
                    }
                    Arc::new(b.finish())
                }
            }
        })
        .collect();
    RecordBatch::try_new(table.schema.clone(), columns).expect("columns match the schema")
}

/// The fragment of `segments` in their order, as the client concatenates them.
fn concatenate(segments: Vec<Segment>) -> Fragment {
    let mut bytes = Vec::new();
    let offsets = segments
        .iter()
        .map(|s| {
            let start = bytes.len() as u64;
            bytes.extend_from_slice(&s.bytes);
            TableOffset {
                table_name: s.table.clone(),
                start_byte: start,
                byte_length: s.bytes.len() as u64,
                format: "parquet".into(),
                num_rows: Some(s.batch.num_rows() as u64),
            }
        })
        .collect();
    Fragment { bytes, offsets, segments }
}

/// Generates one fragment: a segment per client table, concatenated in a shuffled order.
pub fn fragment(spec: &FragmentSpec) -> Fragment {
    let mut rng = Rng::new(spec.seed);
    let env_uuid = rng.uuid();
    let mut segments: Vec<Segment> = client_tables()
        .iter()
        .filter_map(|table| {
            let rows = if table.name.as_str() == "env_info" { 1 } else { rng.range(spec.rows.clone()) as usize };
            if rows == 0 && !spec.include_empty_tables {
                return None;
            }
            let batch = table_batch(table, rows, &env_uuid, &mut rng);
            let bytes = write_segment(&batch);
            Some(Segment { table: table.name.clone(), batch, bytes })
        })
        .collect();
    // The client's segment order is arbitrary: shuffle (Fisher-Yates) so nothing relies on it.
    for i in (1..segments.len()).rev() {
        let j = rng.range(0..=i as u64) as usize;
        segments.swap(i, j);
    }
    concatenate(segments)
}

/// A fragment of only the client tables named, `rows` rows each (for benchmarks that look at a
/// few tables across many datasets).
pub fn fragment_of_tables(seed: u64, tables: &[&str], rows: usize) -> Fragment {
    let mut rng = Rng::new(seed);
    let env_uuid = rng.uuid();
    let segments = client_tables()
        .iter()
        .filter(|t| tables.contains(&t.name.as_str()))
        .map(|table| {
            let batch = table_batch(table, rows, &env_uuid, &mut rng);
            Segment { table: table.name.clone(), bytes: write_segment(&batch), batch }
        })
        .collect();
    concatenate(segments)
}

/// A fragment of about `target_bytes` bytes whose first `tables` client tables (in
/// `client_tables` order, `env_info` aside) share the rows evenly: the largest uploads, for
/// tests and benchmarks of what a Worker must hold. One table makes a single segment of many
/// rows in one row group, the hardest shape to merge within bounded memory.
pub fn fragment_of_size(seed: u64, tables: usize, target_bytes: u64) -> Fragment {
    let mut rng = Rng::new(seed);
    let env_uuid = rng.uuid();
    let chosen: Vec<&TableSpec> = client_tables().iter().filter(|t| t.name.as_str() != "env_info").take(tables.max(1)).collect();
    let share = target_bytes / chosen.len() as u64;
    let segments: Vec<Segment> = chosen
        .into_iter()
        .map(|table| {
            // Bytes per row from a sample, then from a first try at the share's size.
            let mut rows = 2000usize;
            for _ in 0..2 {
                let size = write_segment(&table_batch(table, rows, &env_uuid, &mut rng.clone())).len() as u64;
                rows = ((share as f64 / size.max(1) as f64) * rows as f64).max(1.0) as usize;
            }
            let batch = table_batch(table, rows, &env_uuid, &mut rng);
            let bytes = write_segment(&batch);
            Segment { table: table.name.clone(), batch, bytes }
        })
        .collect();
    concatenate(segments)
}

/// Each row of `batch` as text, its columns by name: a row's identity, for comparing the rows of
/// files by value as multisets, whatever their order and their columns' order.
pub fn rows_as_text(batch: &RecordBatch) -> Vec<String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
    let mut names: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    names.sort();
    (0..batch.num_rows())
        .map(|i| {
            let cell = |name: &str| {
                let c = batch.column_by_name(name).unwrap();
                if c.is_null(i) {
                    return "null".to_owned();
                }
                match c.data_type() {
                    DataType::Utf8 => c.as_string::<i32>().value(i).to_owned(),
                    DataType::Int32 => c.as_primitive::<Int32Type>().value(i).to_string(),
                    DataType::Int64 => c.as_primitive::<Int64Type>().value(i).to_string(),
                    DataType::Float32 => c.as_primitive::<Float32Type>().value(i).to_string(),
                    DataType::Float64 => c.as_primitive::<Float64Type>().value(i).to_string(),
                    DataType::Boolean => c.as_boolean().value(i).to_string(),
                    other => format!("?{other}"),
                }
            };
            names.iter().map(|n| format!("{n}={}", cell(n))).collect::<Vec<_>>().join("|")
        })
        .collect()
}
