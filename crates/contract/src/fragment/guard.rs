//! The segment guard: every size, count and offset an uploaded segment declares is checked
//! before anything is allocated, sliced or looped on by it.
//!
//! The parquet crate sizes buffers from what a file declares (a page's uncompressed size, a
//! Snappy block's length, a statistics value's length) and trusts a footer's schema tree. In a
//! Worker an allocation that fails, a panic or a deep recursion is a trap that takes the whole
//! invocation with it. So before the crate decodes anything of an uploaded segment, the guard
//! walks it with its own bounded reader ([`super::thrift`]):
//!
//! 1. the footer: its length under [`Limits::max_footer_bytes`]; its Thrift structure whole,
//!    nested at most 16 deep; a flat schema (one root, only leaves); at most
//!    [`Limits::max_columns`] columns and [`Limits::max_row_groups`] row groups;
//! 2. the footer decoded without statistics; the rows at most [`Limits::max_rows`] and
//!    [`Limits::max_rows_per_byte`], the row
//!    groups' rows adding up to the file's, every column of a type the client writes;
//! 3. every column chunk's byte range inside the segment's pages, with checked arithmetic;
//! 4. every page header in each chunk: the page inside its chunk, its uncompressed size under
//!    [`Limits::max_page_bytes`] and, with Snappy, equal to what the Snappy block declares;
//!    only the encodings and codecs the client writes; values that add up to the chunk's and
//!    row group's counts; a dictionary page only first and only with entries that fit it.
//!
//! A segment that fails is refused at upload and quarantined (with the reason) by compaction;
//! it is never decoded.

use parquet::basic::{Compression, Type as PhysicalType};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::thrift::{BOOL_FALSE, BOOL_TRUE, LIST, Reader, STRUCT};

/// What one segment may declare. The defaults are far above what the client writes (at most
/// 40 columns, one row group, tens of rows per table per upload, pages of about 1 MiB) and far
/// below what would strain a 128 MB Worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one footer (its Thrift encoding). Default 256 KiB.
    pub max_footer_bytes: usize,
    /// Columns of one segment. Default 128 (the client's widest table has 40).
    pub max_columns: usize,
    /// Row groups of one segment. Default 64 (the client writes one).
    pub max_row_groups: usize,
    /// Rows of one segment. Default 1,000,000: a row costs its columns' bytes when decoded
    /// however few bytes it took to declare (a run of nulls takes a few bytes for millions).
    pub max_rows: u64,
    /// Rows per byte of the segment. Default 4: the client's rows take tens of bytes each (a
    /// 16 MiB segment of its smallest table holds about 270,000), while a page of nulls
    /// declares some 10 rows per byte.
    pub max_rows_per_byte: u64,
    /// Uncompressed bytes of one page. Default 16 MiB.
    pub max_page_bytes: u64,
    /// Uncompressed bytes of all pages of one segment. Default 64 MiB.
    pub max_decoded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_footer_bytes: 256 << 10,
            max_columns: 128,
            max_row_groups: 64,
            max_rows: 1_000_000,
            max_rows_per_byte: 4,
            max_page_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
        }
    }
}

/// The thrift page types.
const DATA_PAGE: i32 = 0;
const DICTIONARY_PAGE: i32 = 2;
const DATA_PAGE_V2: i32 = 3;
/// The encodings the client's writer (arrow-rs) uses: PLAIN, PLAIN_DICTIONARY, RLE,
/// RLE_DICTIONARY.
const PLAIN: i32 = 0;
const PLAIN_DICTIONARY: i32 = 2;
const RLE: i32 = 3;
const RLE_DICTIONARY: i32 = 8;

/// Checks `segment`, a whole standalone Parquet file, against `limits`, and returns its footer
/// decoded without statistics. Reads footer and page headers only; no page is decoded.
pub fn check_segment(segment: &[u8], limits: &Limits) -> Result<ParquetMetaData, String> {
    let magic = super::PARQUET_MAGIC.as_slice();
    if segment.len() < 12 || !segment.starts_with(magic) || !segment.ends_with(magic) {
        return Err("it does not begin and end with PAR1".into());
    }
    let footer_end = segment.len() - 8;
    let footer_len = u32::from_le_bytes(segment[footer_end..footer_end + 4].try_into().expect("four bytes")) as usize;
    if footer_len > limits.max_footer_bytes {
        return Err(format!("its footer is {footer_len} bytes, more than {}", limits.max_footer_bytes));
    }
    let footer_start = footer_end.checked_sub(footer_len).filter(|&s| s >= 4).ok_or("its footer length is larger than the file")?;
    let footer = &segment[footer_start..footer_end];
    walk_footer(footer, limits)?;

    let metadata = ParquetMetaDataReader::decode_metadata_with_options(footer, Some(&crate::fragment::lean_footer()))
        .map_err(|e| format!("its footer does not parse: {e}"))?;
    let schema = metadata.file_metadata().schema_descr();
    for column in schema.columns() {
        if column.max_rep_level() > 0 || column.max_def_level() > 1 {
            return Err(format!("column {} is nested; the client writes flat columns", column.path()));
        }
        if !matches!(
            column.physical_type(),
            PhysicalType::BOOLEAN
                | PhysicalType::INT32
                | PhysicalType::INT64
                | PhysicalType::FLOAT
                | PhysicalType::DOUBLE
                | PhysicalType::BYTE_ARRAY
        ) {
            return Err(format!("column {} is {}, a type the client does not write", column.path(), column.physical_type()));
        }
    }
    let rows = u64::try_from(metadata.file_metadata().num_rows()).map_err(|_| "its row count is negative")?;
    if rows > limits.max_rows {
        return Err(format!("it declares {rows} rows, more than {}", limits.max_rows));
    }
    if rows > (segment.len() as u64).saturating_mul(limits.max_rows_per_byte) {
        return Err(format!("it declares {rows} rows in {} bytes, more than {} rows a byte", segment.len(), limits.max_rows_per_byte));
    }
    let mut group_rows = 0u64;
    let mut decoded = 0u64;
    for group in metadata.row_groups() {
        let n = u64::try_from(group.num_rows()).map_err(|_| "a row group's row count is negative")?;
        group_rows = group_rows.saturating_add(n);
        for chunk in group.columns() {
            let name = chunk.column_path().string();
            let pages = chunk_pages(segment, footer_start, chunk).map_err(|e| format!("column {name}: {e}"))?;
            let declared = u64::try_from(chunk.num_values()).map_err(|_| format!("column {name}: negative value count"))?;
            if declared != n {
                return Err(format!("column {name} holds {declared} values in a row group of {n} rows"));
            }
            let levels = chunk.column_descr().max_def_level() > 0;
            let bytes = check_pages(pages, chunk.compression(), n, levels, limits).map_err(|e| format!("column {name}: {e}"))?;
            decoded = decoded.saturating_add(bytes);
            if decoded > limits.max_decoded_bytes {
                return Err(format!("its pages decode to more than {} bytes", limits.max_decoded_bytes));
            }
        }
    }
    if group_rows != rows {
        return Err(format!("its row groups hold {group_rows} rows, its footer says {rows}"));
    }
    Ok(metadata)
}

/// The Thrift structure of a footer (`FileMetaData`), walked before it is decoded: whole, with
/// a flat schema and at most the limits' columns and row groups.
fn walk_footer(footer: &[u8], limits: &Limits) -> Result<(), String> {
    let mut r = Reader::new(footer);
    let mut last = 0;
    while let Some((id, kind)) = r.field(&mut last)? {
        match (id, kind) {
            (2, LIST) => walk_schema(&mut r, limits)?,
            (4, LIST) => {
                let (element, groups) = r.list()?;
                if groups > limits.max_row_groups {
                    return Err(format!("it has {groups} row groups, more than {}", limits.max_row_groups));
                }
                for _ in 0..groups {
                    if element != STRUCT {
                        return Err("thrift: row groups are not structs".into());
                    }
                    walk_row_group(&mut r, limits)?;
                }
            }
            _ => r.skip(kind, 1)?,
        }
    }
    if r.remaining() != 0 {
        return Err(format!("its footer has {} bytes after its end", r.remaining()));
    }
    Ok(())
}

/// The schema list: a root whose children are every other element, each a leaf.
fn walk_schema(r: &mut Reader<'_>, limits: &Limits) -> Result<(), String> {
    let (element, size) = r.list()?;
    if element != STRUCT || size == 0 {
        return Err("its schema is not a list of elements".into());
    }
    if size - 1 > limits.max_columns {
        return Err(format!("it has {} columns, more than {}", size - 1, limits.max_columns));
    }
    for i in 0..size {
        let mut children = 0;
        let mut last = 0;
        while let Some((id, kind)) = r.field(&mut last)? {
            match id {
                5 => children = r.i32_field(kind, "num_children")?,
                _ => r.skip(kind, 2)?,
            }
        }
        let expected = if i == 0 { size - 1 } else { 0 };
        if usize::try_from(children).ok() != Some(expected) {
            return Err("its schema is not flat: one root holding every column".into());
        }
    }
    Ok(())
}

fn walk_row_group(r: &mut Reader<'_>, limits: &Limits) -> Result<(), String> {
    let mut last = 0;
    while let Some((id, kind)) = r.field(&mut last)? {
        if (id, kind) == (1, LIST) {
            let (_, columns) = r.list()?;
            if columns > limits.max_columns {
                return Err(format!("a row group has {columns} column chunks, more than {}", limits.max_columns));
            }
            for _ in 0..columns {
                r.skip(STRUCT, 2)?;
            }
        } else {
            r.skip(kind, 2)?;
        }
    }
    Ok(())
}

/// The bytes of one column chunk's pages, checked to lie between the leading magic and the
/// footer.
fn chunk_pages<'a>(
    segment: &'a [u8],
    footer_start: usize,
    chunk: &parquet::file::metadata::ColumnChunkMetaData,
) -> Result<&'a [u8], String> {
    let start = match chunk.dictionary_page_offset() {
        Some(d) if d > 0 => d,
        _ => chunk.data_page_offset(),
    };
    let len = chunk.compressed_size();
    let end = start.checked_add(len).ok_or("its byte range overflows")?;
    if start < 4 || len < 0 || end > footer_start as i64 {
        return Err(format!("its pages at bytes {start}..{end} lie outside the segment's pages (4..{footer_start})"));
    }
    Ok(&segment[start as usize..end as usize])
}

/// What one page header declares.
#[derive(Debug, Default)]
struct PageHeader {
    kind: i32,
    uncompressed: i32,
    compressed: i32,
    num_values: i32,
    encoding: i32,
    level_encoding: Option<i32>,
    /// Data page v2: rows, nulls, levels' bytes, whether the rest is compressed.
    v2_rows: i32,
    v2_nulls: i32,
    v2_levels: i64,
    v2_compressed: bool,
}

/// Walks the pages of one chunk (`levels`: its values have definition levels); answers their
/// uncompressed bytes.
fn check_pages(mut pages: &[u8], codec: Compression, rows: u64, levels: bool, limits: &Limits) -> Result<u64, String> {
    if !matches!(codec, Compression::UNCOMPRESSED | Compression::SNAPPY) {
        return Err(format!("its codec {codec} is not one the client writes (SNAPPY, or none)"));
    }
    let (mut values, mut decoded, mut first, mut dictionary) = (0u64, 0u64, true, false);
    while !pages.is_empty() {
        let mut r = Reader::new(pages);
        let header = page_header(&mut r)?;
        let body_start = r.pos;
        let compressed = usize::try_from(header.compressed).map_err(|_| "a page's compressed size is negative")?;
        let uncompressed = u64::try_from(header.uncompressed).map_err(|_| "a page's uncompressed size is negative")?;
        let body_end = body_start.checked_add(compressed).filter(|&e| e <= pages.len()).ok_or("a page runs past its column chunk")?;
        let body = &pages[body_start..body_end];
        if uncompressed > limits.max_page_bytes {
            return Err(format!("a page declares {uncompressed} uncompressed bytes, more than {}", limits.max_page_bytes));
        }
        decoded += uncompressed;
        match header.kind {
            DICTIONARY_PAGE => {
                if !first {
                    return Err("a dictionary page follows a data page".into());
                }
                if !matches!(header.encoding, PLAIN | PLAIN_DICTIONARY) {
                    return Err(format!("a dictionary page has encoding {}", header.encoding));
                }
                let entries = u64::try_from(header.num_values).map_err(|_| "a dictionary's entry count is negative")?;
                if entries > uncompressed || (entries == 0) != (uncompressed == 0) {
                    return Err(format!("a dictionary of {entries} entries in {uncompressed} bytes"));
                }
                check_codec(codec, body, 0, uncompressed)?;
                dictionary = true;
            }
            DATA_PAGE | DATA_PAGE_V2 => {
                if !matches!(header.encoding, PLAIN | PLAIN_DICTIONARY | RLE | RLE_DICTIONARY) {
                    return Err(format!("a data page has encoding {}, not one the client writes", header.encoding));
                }
                if matches!(header.encoding, PLAIN_DICTIONARY | RLE_DICTIONARY) && !dictionary {
                    return Err("a data page indexes a dictionary the chunk does not have".into());
                }
                let n = u64::try_from(header.num_values).map_err(|_| "a page's value count is negative")?;
                values += n;
                if header.kind == DATA_PAGE {
                    if header.level_encoding.is_some_and(|e| e != RLE) {
                        return Err("a page's levels are not RLE".into());
                    }
                    if n > 0 && uncompressed == 0 {
                        return Err(format!("a page declares {n} values in no bytes"));
                    }
                    check_codec(codec, body, 0, uncompressed)?;
                    if levels && n > 0 {
                        // The levels lead the page's data, after their 4-byte length.
                        let data = match codec {
                            Compression::SNAPPY => std::borrow::Cow::Owned(
                                snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("a page does not decompress: {e}"))?,
                            ),
                            _ => std::borrow::Cow::Borrowed(body),
                        };
                        let len = data.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")) as usize);
                        let levels =
                            len.and_then(|len| data.get(4..4usize.checked_add(len)?)).ok_or("a page's levels are longer than the page")?;
                        check_levels(levels, n)?;
                    }
                } else {
                    if header.v2_rows != header.num_values || header.v2_nulls < 0 || header.v2_nulls > header.num_values {
                        return Err("a v2 page's rows, nulls and values disagree".into());
                    }
                    let level_bytes = usize::try_from(header.v2_levels).ok().filter(|&l| l <= body.len() && l as u64 <= uncompressed);
                    let level_bytes = level_bytes.ok_or("a v2 page's levels are larger than the page")?;
                    if header.v2_nulls == header.num_values && (uncompressed - level_bytes as u64) > 0 {
                        return Err("a v2 page of nulls only holds value bytes".into());
                    }
                    if levels && header.num_values > 0 {
                        check_levels(&body[..level_bytes], n)?;
                    }
                    let codec = if header.v2_compressed { codec } else { Compression::UNCOMPRESSED };
                    check_codec(codec, &body[level_bytes..], level_bytes as u64, uncompressed)?;
                }
            }
            other => return Err(format!("a page of type {other}, not one the client writes")),
        }
        first = false;
        pages = &pages[body_end..];
    }
    if values != rows {
        return Err(format!("its pages hold {values} values in a chunk of {rows}"));
    }
    Ok(decoded)
}

/// Definition levels of a flat optional column (bit width 1), as the RLE/bit-packed hybrid
/// encodes them: every run inside `levels`, no empty run, RLE values 0 or 1, and runs that
/// cover the page's `values` (the parquet crate's level decoder trusts all of these).
fn check_levels(levels: &[u8], values: u64) -> Result<(), String> {
    let mut r = Reader::new(levels);
    let mut covered = 0u64;
    while covered < values {
        if r.remaining() == 0 {
            return Err(format!("a page's levels cover {covered} of its {values} values"));
        }
        let header = r.varint().map_err(|_| "a page's level run does not decode")?;
        let count = header >> 1;
        if count == 0 {
            return Err("a page has an empty level run".into());
        }
        if header & 1 == 1 {
            // `count` groups of 8 levels, one byte each at bit width 1.
            r.skip_bytes(count).map_err(|_| "a page's bit-packed level run runs past its levels")?;
            covered = covered.saturating_add(count.saturating_mul(8));
        } else {
            if r.byte().map_err(|_| "a page's level run has no value")? > 1 {
                return Err("a page's level is neither 0 nor 1".into());
            }
            covered = covered.saturating_add(count);
        }
    }
    Ok(())
}

/// The page body (after `levels` uncompressed bytes) decompresses to exactly `uncompressed`
/// bytes in all: with Snappy, the block's own declared length is checked, since the decoder
/// allocates it.
fn check_codec(codec: Compression, body: &[u8], levels: u64, uncompressed: u64) -> Result<(), String> {
    let want = uncompressed - levels;
    let got = match codec {
        Compression::SNAPPY if body.is_empty() => 0,
        Compression::SNAPPY => Reader::new(body).varint().map_err(|_| "a Snappy block has no length")?,
        _ => body.len() as u64,
    };
    if got != want {
        return Err(format!("a page decompresses to {got} bytes, its header says {want}"));
    }
    Ok(())
}

/// The length of the page header that begins `pages`, and of the page's data after it.
pub fn first_page_body(pages: &[u8]) -> Result<(usize, usize), String> {
    let mut r = Reader::new(pages);
    let header = page_header(&mut r)?;
    Ok((r.pos, usize::try_from(header.compressed).map_err(|_| "a negative page size")?))
}

/// Reads a `PageHeader` struct, skipping (bounded) what the guard does not check.
fn page_header(r: &mut Reader<'_>) -> Result<PageHeader, String> {
    let mut h = PageHeader { kind: -1, v2_compressed: true, ..PageHeader::default() };
    let mut last = 0;
    while let Some((id, kind)) = r.field(&mut last)? {
        match id {
            1 => h.kind = r.i32_field(kind, "type")?,
            2 => h.uncompressed = r.i32_field(kind, "uncompressed_page_size")?,
            3 => h.compressed = r.i32_field(kind, "compressed_page_size")?,
            5 | 7 | 8 if kind == STRUCT => {
                let mut last = 0;
                let (v1, v2) = (id == 5, id == 8);
                while let Some((f, k)) = r.field(&mut last)? {
                    match (f, v1, v2) {
                        (1, ..) => h.num_values = r.i32_field(k, "num_values")?,
                        (2, _, false) => h.encoding = r.i32_field(k, "encoding")?,
                        (3, true, _) => h.level_encoding = Some(r.i32_field(k, "definition_level_encoding")?),
                        (4, true, _) => {
                            if r.i32_field(k, "repetition_level_encoding")? != RLE {
                                return Err("a page's levels are not RLE".into());
                            }
                        }
                        (2, _, true) => h.v2_nulls = r.i32_field(k, "num_nulls")?,
                        (3, _, true) => h.v2_rows = r.i32_field(k, "num_rows")?,
                        (4, _, true) => h.encoding = r.i32_field(k, "encoding")?,
                        (5 | 6, _, true) => {
                            let len = r.i32_field(k, "levels_byte_length")?;
                            h.v2_levels += i64::from(len);
                            if len < 0 {
                                return Err("a v2 page's levels have a negative length".into());
                            }
                        }
                        (7, _, true) if matches!(k, BOOL_TRUE | BOOL_FALSE) => h.v2_compressed = k == BOOL_TRUE,
                        _ => r.skip(k, 2)?,
                    }
                }
            }
            _ => r.skip(kind, 1)?,
        }
    }
    Ok(h)
}
