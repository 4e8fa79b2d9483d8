//! The fragment format: what the FUSOU client uploads in phase 2.
//!
//! A fragment is a plain byte concatenation of standalone Parquet files ("segments"), one per
//! battle table. Each segment starts and ends with `PAR1` and carries its own footer, whose
//! offsets are relative to the segment's own start, so a segment is extracted by a byte slice.
//! `table_offsets` lists them (in any order). The fragment as a whole is not a Parquet file.

use bytes::Bytes;
use parquet::file::metadata::{ParquetMetaDataOptions, ParquetMetaDataReader, ParquetStatisticsPolicy};
use parquet::schema::types::SchemaDescPtr;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::TableName;

pub mod guard;
mod thrift;

pub use guard::Limits;

/// The magic bytes that open and close every Parquet file.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
/// Most segments (distinct tables) one fragment may declare: the client sends at most 32
/// tables, and a newer client may add some. Each table of a fragment can become an output of
/// the run that compacts it, so this bounds a run's outputs per fragment.
pub const MAX_SEGMENTS: usize = 64;
/// Smallest possible Parquet file: magic, footer length, magic.
const MIN_PARQUET_LEN: u64 = 12;

/// One segment of a fragment, as the client declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableOffset {
    /// The table the segment holds.
    pub table_name: TableName,
    /// Where the segment begins in the fragment.
    pub start_byte: u64,
    /// The segment's length.
    pub byte_length: u64,
    /// Always `parquet`.
    #[serde(default = "parquet_format")]
    pub format: String,
    /// Sent by newer clients only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_rows: Option<u64>,
}

fn parquet_format() -> String {
    "parquet".into()
}

impl TableOffset {
    /// Where the segment ends (exclusive); [`validate_offsets`] checks it does not overflow.
    pub fn end(&self) -> u64 {
        self.start_byte + self.byte_length
    }

    /// The segment's bytes within the whole fragment (checked by [`validate_offsets`]).
    pub fn slice<'a>(&self, fragment: &'a [u8]) -> &'a [u8] {
        &fragment[self.start_byte as usize..self.end() as usize]
    }
}

/// Why a fragment or one of its segments was refused. Each variant's message (its `#[error]`)
/// says what it means; the fields name the segment and the figures at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum FragmentError {
    #[error("table_offsets is not a JSON array of segments: {0}")]
    Malformed(String),
    #[error("table_offsets is empty")]
    Empty,
    #[error("table_offsets lists {0} segments, more than {MAX_SEGMENTS}")]
    TooMany(usize),
    #[error("segment {table}: format {format:?} is not parquet")]
    Format { table: String, format: String },
    #[error("segment {table}: {byte_length} bytes is too short for a Parquet file")]
    TooShort { table: String, byte_length: u64 },
    #[error("segment {table}: bytes {start}..{end} lie outside the {size}-byte fragment")]
    OutOfRange { table: String, start: u64, end: u64, size: u64 },
    #[error("segments {first} and {second} overlap")]
    Overlap { first: String, second: String },
    #[error("segment {table} is listed twice")]
    Duplicate { table: String },
    #[error("segment {table} is not a Parquet file: {reason}")]
    NotParquet { table: String, reason: String },
    #[error("segment {table} declares {declared} rows but holds {actual}")]
    RowCount { table: String, declared: u64, actual: u64 },
}

/// Accepts `table_offsets` as the client sends it (a JSON *string* holding an array) or as a
/// plain JSON array.
pub fn deserialize_offsets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TableOffset>, D::Error> {
    let values = match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => serde_json::from_str::<Vec<serde_json::Value>>(&s)
            .map_err(|e| serde::de::Error::custom(format!("table_offsets is not a JSON array: {e}")))?,
        serde_json::Value::Array(v) => v,
        _ => return Err(serde::de::Error::custom("table_offsets must be a JSON array or a string holding one")),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| serde::de::Error::custom(format!("table_offsets[{i}]: {e}"))))
        .collect()
}

/// Checks the declared segments against the declared fragment size: each one a plausible
/// Parquet file, inside the fragment, no two overlapping, no table twice.
pub fn validate_offsets(offsets: &[TableOffset], fragment_size: u64) -> Result<(), FragmentError> {
    if offsets.is_empty() {
        return Err(FragmentError::Empty);
    }
    if offsets.len() > MAX_SEGMENTS {
        return Err(FragmentError::TooMany(offsets.len()));
    }
    for o in offsets {
        let table = o.table_name.to_string();
        if o.format != "parquet" {
            return Err(FragmentError::Format { table, format: o.format.clone() });
        }
        if o.byte_length < MIN_PARQUET_LEN {
            return Err(FragmentError::TooShort { table, byte_length: o.byte_length });
        }
        match o.start_byte.checked_add(o.byte_length) {
            Some(end) if end <= fragment_size => {}
            _ => {
                return Err(FragmentError::OutOfRange {
                    table,
                    start: o.start_byte,
                    end: o.start_byte.saturating_add(o.byte_length),
                    size: fragment_size,
                });
            }
        }
    }
    let mut sorted: Vec<&TableOffset> = offsets.iter().collect();
    sorted.sort_by_key(|o| o.start_byte);
    for pair in sorted.windows(2) {
        if pair[1].start_byte < pair[0].end() {
            return Err(FragmentError::Overlap { first: pair[0].table_name.to_string(), second: pair[1].table_name.to_string() });
        }
    }
    let mut names: Vec<&str> = offsets.iter().map(|o| o.table_name.as_str()).collect();
    names.sort_unstable();
    if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(FragmentError::Duplicate { table: dup[0].to_owned() });
    }
    Ok(())
}

/// A segment that passed the guard: what the upload keeps of it (its footer is dropped at once,
/// so that a request holds one decoded footer at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The table it holds.
    pub table_name: TableName,
    /// Its rows, as its footer gives them.
    pub num_rows: u64,
    /// Its columns' names, in order.
    pub columns: Vec<String>,
}

/// Checks that `segment` is a standalone Parquet file within the guard's default [`Limits`]:
/// magic at both ends, a footer that walks and parses, pages whose headers check. Reads the
/// footer (without statistics) and page headers only; no page is decoded.
pub fn inspect_segment(offset: &TableOffset, segment: Bytes) -> Result<SegmentInfo, FragmentError> {
    inspect_segment_within(offset, &segment, &Limits::default())
}

/// [`inspect_segment`] within `limits`.
pub fn inspect_segment_within(offset: &TableOffset, segment: &[u8], limits: &Limits) -> Result<SegmentInfo, FragmentError> {
    let metadata = guard::check_segment(segment, limits).map_err(|reason| not_parquet(offset, reason))?;
    let num_rows = metadata.file_metadata().num_rows() as u64;
    if let Some(declared) = offset.num_rows
        && declared != num_rows
    {
        return Err(FragmentError::RowCount { table: offset.table_name.to_string(), declared, actual: num_rows });
    }
    let columns = metadata.file_metadata().schema_descr().columns().iter().map(|c| c.name().to_owned()).collect();
    Ok(SegmentInfo { table_name: offset.table_name.clone(), num_rows, columns })
}

/// Footer decoding that skips what nothing here reads: column, encoding and size statistics.
pub fn lean_footer() -> ParquetMetaDataOptions {
    ParquetMetaDataOptions::new()
        .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll)
}

/// The schema an encoded footer holds, decoded alone (the rest of the footer, row groups and
/// all, is left undecoded: about a third of the cost of a whole footer).
pub fn footer_schema(offset: &TableOffset, footer: &[u8]) -> Result<SchemaDescPtr, FragmentError> {
    ParquetMetaDataReader::decode_schema(footer).map_err(|e| not_parquet(offset, format!("its footer's schema does not parse: {e}")))
}

/// How many bytes at the start of an encoded footer whose schema decodes hold that schema (and
/// the version before it): another footer that begins with the same bytes has the same schema.
/// Found by bisection, since a prefix decodes exactly when it holds the whole schema.
pub fn schema_prefix_len(footer: &[u8]) -> usize {
    let (mut short, mut enough) = (0, footer.len());
    while enough - short > 1 {
        let mid = short + (enough - short) / 2;
        match ParquetMetaDataReader::decode_schema(&footer[..mid]) {
            Ok(_) => enough = mid,
            Err(_) => short = mid,
        }
    }
    enough
}

fn not_parquet(offset: &TableOffset, reason: String) -> FragmentError {
    FragmentError::NotParquet { table: offset.table_name.to_string(), reason }
}

/// The encoded footer of a standalone Parquet file: `PAR1`, pages, footer, its length, `PAR1`.
pub fn segment_footer<'a>(offset: &TableOffset, segment: &'a [u8]) -> Result<&'a [u8], FragmentError> {
    if segment.len() < MIN_PARQUET_LEN as usize || &segment[..4] != PARQUET_MAGIC || &segment[segment.len() - 4..] != PARQUET_MAGIC {
        return Err(not_parquet(offset, "it does not begin and end with PAR1".into()));
    }
    let end = segment.len() - 8;
    let len = u32::from_le_bytes(segment[end..end + 4].try_into().expect("four bytes")) as usize;
    if len > end - 4 {
        return Err(not_parquet(offset, format!("its footer length {len} is larger than the file")));
    }
    Ok(&segment[end - len..end])
}

/// Inspects every declared segment of a whole fragment (offsets already validated), one at a
/// time.
pub fn inspect_fragment(offsets: &[TableOffset], fragment: &Bytes) -> Result<Vec<SegmentInfo>, FragmentError> {
    let limits = Limits::default();
    offsets.iter().map(|o| inspect_segment_within(o, &fragment[o.start_byte as usize..o.end() as usize], &limits)).collect()
}

/// A segment set aside because it cannot be read; the rest of its fragment goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The fragment's storage key.
    pub fragment_key: String,
    /// The table, or `*` when the whole fragment is unreadable (its offsets do not fit it).
    pub table: String,
    /// Why it cannot be read.
    pub error: String,
}
