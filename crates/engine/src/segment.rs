//! The first pass: each fragment is read once and its segments' schemas read from their
//! footers. What planning needs is kept in a [`Scan`]: fragments, table names and schemas once
//! each, and per segment a 24-byte [`SegmentDesc`], so that planning memory is small and holds
//! no footer.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::{ParquetMetaDataOptions, ParquetStatisticsPolicy};
use parquet::schema::types::SchemaDescPtr;

use super::evolution::{Fingerprint, fingerprint};
use fusou_contract::fragment::{self, TableOffset};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};

/// A fragment as stored: its key, its D1 row's dataset and period, its offsets and its bytes.
/// A compacted file being consolidated is an input too: one segment, the whole object.
#[derive(Debug, Clone)]
pub struct FragmentInput {
    /// The fragment's storage key.
    pub key: Arc<str>,
    /// Its dataset.
    pub dataset: DatasetId,
    /// Its period.
    pub period: PeriodTag,
    /// Its segments, as declared at upload (with their row counts).
    pub offsets: Vec<TableOffset>,
    /// Its bytes, whole.
    pub bytes: Bytes,
    /// `Some(n)` for a compacted file, which holds the rows of `n` fragment segments.
    pub compacted: Option<u64>,
}

impl FragmentInput {
    /// A compacted file of `table`, holding the rows of `source_segments` fragment segments.
    pub fn compacted_file(key: &str, dataset: DatasetId, period: PeriodTag, table: TableName, bytes: Bytes, source_segments: u64) -> Self {
        let offset =
            TableOffset { table_name: table, start_byte: 0, byte_length: bytes.len() as u64, format: "parquet".into(), num_rows: None };
        Self { key: Arc::from(key), dataset, period, offsets: vec![offset], bytes, compacted: Some(source_segments) }
    }
}

/// A scanned fragment (its bytes are not kept).
#[derive(Debug, Clone)]
pub struct FragmentInfo {
    /// The fragment's storage key.
    pub key: Arc<str>,
    /// Its dataset.
    pub dataset: DatasetId,
    /// Its period.
    pub period: PeriodTag,
    /// As [`FragmentInput::compacted`].
    pub compacted: Option<u64>,
}

/// One readable segment: indices into its [`Scan`] and where its bytes lie in its fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentDesc {
    /// Index of its fragment in the scan.
    pub fragment: u32,
    /// Index of its table in the scan.
    pub table: u16,
    /// Index of its schema in the scan.
    pub schema: u16,
    /// Where it begins in its fragment.
    pub start: u64,
    /// Its length.
    pub len: u32,
    /// Its rows.
    pub rows: u32,
}

impl SegmentDesc {
    /// Its bytes within its fragment.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

pub use fusou_contract::fragment::Quarantined;

/// Everything the first pass learned.
#[derive(Debug, Default)]
pub struct Scan {
    /// The fragments scanned.
    pub fragments: Vec<FragmentInfo>,
    /// The tables seen, each once.
    pub tables: Vec<TableName>,
    /// The schemas seen, each once, with their fingerprints.
    pub schemas: Vec<(Fingerprint, SchemaRef)>,
    /// The Parquet schema of each entry of `schemas`, so the merge pass need not decode it again.
    pub parquet_schemas: Vec<SchemaDescPtr>,
    /// Every segment that passed, in fragment order.
    pub segments: Vec<SegmentDesc>,
    /// The segments set aside, with why.
    pub quarantined: Vec<Quarantined>,
    table_index: HashMap<TableName, u16>,
    schema_index: HashMap<Fingerprint, u16>,
    /// The schema each table's last segment had: the next one nearly always has it too.
    last_schema: HashMap<TableName, LastSchema>,
}

/// A schema index, and the bytes a footer with that schema began with, up to the schema's end.
#[derive(Debug)]
struct LastSchema {
    index: u16,
    footer_prefix: Vec<u8>,
}

impl Scan {
    /// Reads the schema of each segment of `input`, fragment number `self.fragments.len()`
    /// (numbers follow the order fragments are added); segments that do not parse are
    /// quarantined, each with an error naming the fragment and the table.
    pub fn add_fragment(&mut self, input: &FragmentInput) {
        let quarantine = |table: &str, error: String| Quarantined { fragment_key: input.key.to_string(), table: table.to_owned(), error };
        // Every fragment gets a number, in the caller's order, even one quarantined whole.
        let fragment = self.fragments.len() as u32;
        self.fragments.push(FragmentInfo {
            key: input.key.clone(),
            dataset: input.dataset.clone(),
            period: input.period.clone(),
            compacted: input.compacted,
        });
        if let Err(e) = fragment::validate_offsets(&input.offsets, input.bytes.len() as u64) {
            self.quarantined.push(quarantine("*", e.to_string()));
            return;
        }
        for offset in &input.offsets {
            let bytes = input.bytes.slice(offset.start_byte as usize..offset.end() as usize);
            match self.describe(offset, bytes, input.compacted.is_some()) {
                Ok((schema, rows)) => {
                    let table = self.intern_table(&offset.table_name);
                    self.segments.push(SegmentDesc {
                        fragment,
                        table,
                        schema,
                        start: offset.start_byte,
                        len: offset.byte_length as u32,
                        rows,
                    });
                }
                Err(e) => self.quarantined.push(quarantine(offset.table_name.as_str(), e)),
            }
        }
    }

    fn describe(&mut self, offset: &TableOffset, bytes: Bytes, compacted: bool) -> Result<(u16, u32), String> {
        if offset.byte_length > u32::MAX as u64 {
            return Err(format!("segment {} is larger than 4 GiB", offset.table_name));
        }
        let footer = fragment::segment_footer(offset, &bytes).map_err(|e| e.to_string())?;
        // An uploaded segment passes the guard again, whatever the upload checked (it may have
        // been uploaded before a check existed): nothing of it is decoded otherwise. A compacted
        // file is this engine's own output.
        let rows = if compacted {
            let footer =
                parquet::file::metadata::ParquetMetaDataReader::decode_metadata_with_options(footer, Some(&fragment::lean_footer()))
                    .map_err(|e| format!("compacted file {}: its footer does not parse: {e}", offset.table_name))?;
            footer.file_metadata().num_rows().max(0) as u64
        } else {
            fragment::inspect_segment(offset, bytes.clone()).map_err(|e| e.to_string())?.num_rows
        };
        let rows = u32::try_from(rows).map_err(|_| format!("segment {} has too many rows", offset.table_name))?;
        // A footer that begins with the bytes of its table's last schema has that schema.
        if let Some(last) = self.last_schema.get(&offset.table_name)
            && footer.starts_with(&last.footer_prefix)
        {
            return Ok((last.index, rows));
        }
        let schema = fragment::footer_schema(offset, footer).map_err(|e| e.to_string())?;
        // The Arrow schema is derived from the Parquet schema alone: the client's columns are
        // plain Int32/Int64/Float32/Boolean/Utf8, which that conversion gives exactly.
        let arrow =
            parquet_to_arrow_schema(&schema, None).map_err(|e| format!("segment {} has no Arrow schema: {e}", offset.table_name))?;
        let fp = fingerprint(&arrow);
        let next = self.schemas.len() as u16;
        let index = *self.schema_index.entry(fp.clone()).or_insert(next);
        if index == next {
            self.schemas.push((fp, Arc::new(arrow)));
            self.parquet_schemas.push(schema);
        }
        let footer_prefix = footer[..fragment::schema_prefix_len(footer)].to_vec();
        self.last_schema.insert(offset.table_name.clone(), LastSchema { index, footer_prefix });
        Ok((index, rows))
    }

    fn intern_table(&mut self, table: &TableName) -> u16 {
        let next = self.tables.len() as u16;
        let index = *self.table_index.entry(table.clone()).or_insert(next);
        if index == next {
            self.tables.push(table.clone());
        }
        index
    }

    /// The fragment segment `s` belongs to.
    pub fn fragment(&self, s: &SegmentDesc) -> &FragmentInfo {
        &self.fragments[s.fragment as usize]
    }

    /// Segment `s`'s table.
    pub fn table(&self, s: &SegmentDesc) -> &TableName {
        &self.tables[s.table as usize]
    }

    /// Segment `s`'s schema fingerprint.
    pub fn fingerprint(&self, s: &SegmentDesc) -> &Fingerprint {
        &self.schemas[s.schema as usize].0
    }

    /// Rows in all readable segments.
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows as u64).sum()
    }

    /// Bytes of all readable segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len as u64).sum()
    }
}

/// Footer decoding that skips what compaction never reads (column, encoding and size
/// statistics), and the schema too when it is already known.
pub fn footer_options(schema: Option<SchemaDescPtr>) -> ParquetMetaDataOptions {
    let mut options = ParquetMetaDataOptions::new()
        .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll);
    if let Some(schema) = schema {
        options.set_schema(schema);
    }
    options
}

/// The byte range of one table's segment, for a ranged read of a large fragment when only that
/// table is wanted. `None` when the fragment has no such segment.
pub fn segment_range(offsets: &[TableOffset], table: &TableName) -> Option<std::ops::Range<u64>> {
    offsets.iter().find(|o| &o.table_name == table).map(|o| o.start_byte..o.end())
}
