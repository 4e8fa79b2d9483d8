//! Many segments of one schema decoded by one reader, as if they were the row groups of one
//! file. A segment holds about 20 rows: a reader per segment builds its column readers and a
//! record batch for those few rows, and the batches must then be concatenated; one reader over
//! many segments builds them once and yields full batches.

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{FileMetaData, ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::reader::{ChunkReader, Length};
use parquet::schema::types::SchemaDescPtr;

use super::segment::footer_options;

/// Segment `k`'s bytes lie at offsets `k << 32` onwards of the stitched file: segments are
/// smaller than 4 GiB (see [`super::segment::SegmentDesc::len`]).
const SEGMENT_SHIFT: u32 = 32;
const SEGMENT_LIMIT: i64 = 1 << SEGMENT_SHIFT;

/// The segments as one file, for the reader: each offset names a segment and a place in it.
struct Stitched(Vec<Bytes>);

impl Stitched {
    fn locate(&self, start: u64) -> Result<(&Bytes, usize)> {
        let segment =
            self.0.get((start >> SEGMENT_SHIFT) as usize).ok_or_else(|| ParquetError::EOF(format!("no segment at offset {start}")))?;
        let local = (start & ((1 << SEGMENT_SHIFT) - 1)) as usize;
        if local > segment.len() {
            return Err(ParquetError::EOF(format!("offset {local} is past a segment of {} bytes", segment.len())));
        }
        Ok((segment, local))
    }
}

impl Length for Stitched {
    fn len(&self) -> u64 {
        (self.0.len() as u64) << SEGMENT_SHIFT
    }
}

impl ChunkReader for Stitched {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T> {
        let (segment, local) = self.locate(start)?;
        Ok(segment.slice(local..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let (segment, local) = self.locate(start)?;
        // Checked: on wasm32 a declared length near 4 GiB would wrap the sum.
        match local.checked_add(length) {
            Some(end) if end <= segment.len() => Ok(segment.slice(local..end)),
            _ => Err(ParquetError::EOF(format!("{length} bytes at {local} are past a segment of {} bytes", segment.len()))),
        }
    }
}

/// Every row of `segments` (each a whole Parquet file whose schema is `schema`), in order, in
/// batches of `batch_rows`. Fails if any segment does not decode: the caller then decodes them
/// one by one to find which.
pub(crate) fn read_together(segments: Vec<Bytes>, schema: &SchemaDescPtr, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut row_groups = Vec::new();
    for (k, bytes) in segments.iter().enumerate() {
        // Each footer is decoded again, without its schema or statistics: keeping the scan's
        // footers would make memory grow with the input.
        let footer =
            ParquetMetaDataReader::new().with_metadata_options(Some(footer_options(Some(schema.clone())))).parse_and_finish(bytes)?;
        let base = i64::try_from(k)
            .ok()
            .and_then(|k| k.checked_mul(SEGMENT_LIMIT))
            .ok_or_else(|| ParquetError::General("too many segments".into()))?;
        for group in footer.row_groups() {
            row_groups.push(shifted(group, base)?);
        }
    }
    let rows = row_groups.iter().map(RowGroupMetaData::num_rows).sum();
    let file = FileMetaData::new(1, rows, None, None, schema.clone(), None);
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let metadata = ArrowReaderMetadata::try_new(Arc::new(ParquetMetaData::new(file, row_groups)), options)?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(Stitched(segments), metadata).with_batch_size(batch_rows).build()?;
    reader.map(|batch| batch.map_err(ParquetError::from)).collect()
}

/// `group` with its column chunks moved by `base` bytes. Offsets come from the segment's
/// footer: each must lie inside the segment, or the sum could reach another segment or wrap.
fn shifted(group: &RowGroupMetaData, base: i64) -> Result<RowGroupMetaData> {
    let shift = |offset: i64| match offset {
        0..SEGMENT_LIMIT => Ok(base + offset),
        _ => Err(ParquetError::General(format!("a column chunk offset {offset} lies outside its segment"))),
    };
    let columns = group
        .columns()
        .iter()
        .map(|c| {
            c.clone()
                .into_builder()
                .set_data_page_offset(shift(c.data_page_offset())?)
                .set_dictionary_page_offset(c.dictionary_page_offset().map(shift).transpose()?)
                .set_index_page_offset(None)
                .set_offset_index_offset(None)
                .set_column_index_offset(None)
                .set_bloom_filter_offset(None)
                .build()
        })
        .collect::<Result<Vec<_>>>()?;
    group
        .clone()
        .into_builder()
        .set_column_metadata(columns)
        .set_file_offset(base + group.file_offset().unwrap_or(0).clamp(0, SEGMENT_LIMIT - 1))
        .build()
}
