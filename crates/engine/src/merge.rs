//! Merging one planned output: decode each segment, align it to the output's superset schema,
//! gather small batches into larger ones, encode with `ArrowWriter` into large row groups.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use bytes::Bytes;
use fusou_contract::ids::{DATASET_COLUMN, PERIOD_COLUMN};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::KeyValue;
use parquet::file::metadata::ParquetStatisticsPolicy;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::{ColumnPath, SchemaDescPtr};

use super::binpack::OutputPlan;
use super::segment::{Scan, SegmentDesc};
use super::sink::PartSink;
use super::stats::{self, ColumnStatistics};
use super::stitch;
use super::{ENGINE_VERSION, EngineConfig, EngineError};

/// Most segments decoded together (zero-row segments add none to a run's rows).
const MAX_RUN_SEGMENTS: usize = 256;
/// A segment of more than this many write batches of rows is decoded batch by batch.
const LARGE_SEGMENT_BATCHES: usize = 4;

/// Key-value metadata keys of every output.
pub const META_SOURCE_SEGMENTS: &str = "fusou.source_segments";
/// The output file's key-value metadata: the fingerprint of its schema.
pub const META_FINGERPRINT: &str = "fusou.schema_fingerprint";
/// The engine version that wrote it.
pub const META_ENGINE_VERSION: &str = "fusou.engine_version";

/// Writes one output, segment by segment; its parts can be taken as they fill.
pub struct Merger {
    writer: ArrowWriter<PartSink>,
    /// The inputs' superset schema, less the period and dataset columns.
    schema: SchemaRef,
    /// What is written: `schema` and then the period and dataset columns.
    output_schema: SchemaRef,
    /// The output's period, the value of that column.
    period: String,
    /// The dataset of the rows pushed now (a roll-up's output holds many, in turn).
    dataset: Arc<str>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    /// The dataset of each run of pending rows, in order: (dataset, rows).
    owners: Vec<(Arc<str>, usize)>,
    /// Segments of one schema not decoded yet: they are decoded together (see [`stitch`]).
    run: Vec<(SegmentDesc, Bytes)>,
    run_schema: Option<SchemaDescPtr>,
    run_rows: usize,
    rows_in: u64,
    write_batch_rows: usize,
    row_group_bytes: usize,
    peak_buffered: usize,
    quarantined: Vec<(SegmentDesc, String)>,
    /// Fragment segments whose rows are in the output (a compacted input counts its own).
    sources: u64,
    /// A large input being streamed in by [`Merger::pump`].
    streaming: Option<Streaming>,
}

/// One file streamed into the output batch by batch: its reader, the rows it must hold, and
/// the fragment segments it stands for.
struct Streaming {
    reader: ParquetRecordBatchReader,
    expected: usize,
    rows: usize,
    sources: u64,
}

/// A finished output.
#[derive(Debug)]
pub struct Finished {
    /// The parts not taken before [`Merger::finish`], the last one possibly short.
    pub parts: Vec<Bytes>,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Row groups written.
    pub row_groups: usize,
    /// Most bytes the writer and sink held at once (encoded data not yet handed out).
    pub peak_buffered: usize,
    /// Segments whose footer parsed but whose pages did not decode: left out whole.
    pub quarantined: Vec<(SegmentDesc, String)>,
    /// Fragment segments whose rows the output holds (`fusou.source_segments`).
    pub source_segments: u64,
    /// Each column's counts and bounds, from the footer just written.
    pub statistics: Vec<ColumnStatistics>,
    /// The schema written: the inputs' columns, then the period and dataset columns.
    pub schema: SchemaRef,
}

impl Merger {
    /// A merger for `plan`, writing with `config`.
    pub fn new(plan: &OutputPlan, config: &EngineConfig) -> Result<Self, EngineError> {
        if config.part_bytes == 0 || config.write_batch_rows == 0 {
            return Err(EngineError::Config("part_bytes and write_batch_rows must be positive".into()));
        }
        // `fusou.source_segments` is added by `finish`, once quarantined segments are known.
        let metadata = vec![
            KeyValue::new(META_FINGERPRINT.into(), plan.fingerprint.to_string()),
            KeyValue::new(META_ENGINE_VERSION.into(), ENGINE_VERSION.to_string()),
        ];
        let (schema, output_schema) = self_describing(&plan.schema);
        let props = writer_properties(&output_schema, config, metadata);
        let writer = ArrowWriter::try_new(PartSink::new(config.part_bytes), output_schema.clone(), Some(props))?;
        Ok(Self {
            writer,
            schema,
            output_schema,
            period: plan.period.to_string(),
            dataset: Arc::from(plan.dataset.as_str()),
            pending: Vec::new(),
            pending_rows: 0,
            owners: Vec::new(),
            run: Vec::new(),
            run_schema: None,
            run_rows: 0,
            rows_in: 0,
            write_batch_rows: config.write_batch_rows,
            row_group_bytes: config.row_group_bytes,
            peak_buffered: 0,
            quarantined: Vec::new(),
            sources: 0,
            streaming: None,
        })
    }

    /// Queues a segment (`bytes`, as `desc` describes them; `parquet_schema` is its schema as
    /// the scan decoded it). Segments are decoded in runs of one schema, about a write batch at
    /// a time. A segment is taken whole or not at all: one whose footer or pages do not decode,
    /// or whose rows are not the count the scan took, is quarantined and the merge goes on
    /// without it, so that one bad segment never blocks the others.
    pub fn push(&mut self, desc: &SegmentDesc, parquet_schema: &SchemaDescPtr, bytes: Bytes) -> Result<(), EngineError> {
        self.drain()?;
        if bytes.len() != desc.len as usize {
            return Err(EngineError::Config(format!("a segment read {} bytes, its offsets say {}", bytes.len(), desc.len)));
        }
        if desc.rows as usize > LARGE_SEGMENT_BATCHES * self.write_batch_rows {
            return self.push_large(desc, parquet_schema, bytes);
        }
        if self.run.first().is_some_and(|(d, _)| d.schema != desc.schema) {
            self.decode_run()?;
        }
        self.run.push((*desc, bytes));
        self.run_rows += desc.rows as usize;
        self.run_schema = Some(parquet_schema.clone());
        if self.run_rows >= self.write_batch_rows || self.run.len() >= MAX_RUN_SEGMENTS {
            self.decode_run()?;
        }
        Ok(())
    }

    /// Decodes the queued run with one reader; if any of its segments fails, decodes them one
    /// by one, quarantining those that fail.
    fn decode_run(&mut self) -> Result<(), EngineError> {
        let (run, Some(schema)) = (std::mem::take(&mut self.run), self.run_schema.take()) else { return Ok(()) };
        let rows = std::mem::take(&mut self.run_rows);
        match self.decode(&run, &schema, rows) {
            Ok(batches) => self.queue(batches, run.len(), rows),
            Err(_) => {
                for one in &run {
                    match self.decode(std::slice::from_ref(one), &schema, one.0.rows as usize) {
                        Ok(batches) => self.queue(batches, 1, one.0.rows as usize),
                        Err(e) => self.quarantined.push((one.0, e.to_string())),
                    }
                }
            }
        }
        self.write_if_due()
    }

    /// Every row of `segments`, aligned to the output's schema, if they hold `rows` rows.
    fn decode(&self, segments: &[(SegmentDesc, Bytes)], schema: &SchemaDescPtr, rows: usize) -> Result<Vec<RecordBatch>, EngineError> {
        // Batches of twice a write batch: a run holds a write batch and at most one segment
        // more, so it nearly always comes out as one batch, written without a copy.
        let batches = stitch::read_together(segments.iter().map(|(_, b)| b.clone()).collect(), schema, 2 * self.write_batch_rows)?;
        expect_rows(rows, batches.iter().map(RecordBatch::num_rows).sum())?;
        batches.into_iter().map(|b| align(b, &self.schema)).collect()
    }

    /// Queues the rows of `segments` fragment segments.
    fn queue(&mut self, batches: Vec<RecordBatch>, segments: usize, rows: usize) {
        batches.into_iter().for_each(|b| self.hold(b));
        self.rows_in += rows as u64;
        self.sources += segments as u64;
    }

    /// A segment of many rows (a client's large upload, or a one-file `/compact/upload`): it is
    /// decoded batch by batch, never whole, so that its decoded rows never sit in memory at
    /// once. It is decoded twice: first to check that every page decodes and the rows are the
    /// count the scan took (else it is quarantined, as any segment, before a row of it is
    /// written), then into the output by [`Merger::pump`].
    fn push_large(&mut self, desc: &SegmentDesc, parquet_schema: &SchemaDescPtr, bytes: Bytes) -> Result<(), EngineError> {
        self.decode_run()?;
        let checked = self.reader(parquet_schema, bytes.clone()).and_then(|reader| {
            let rows = reader.map(|b| b.map(|b| b.num_rows())).sum::<Result<usize, _>>()?;
            expect_rows(desc.rows as usize, rows)
        });
        if let Err(e) = checked {
            self.quarantined.push((*desc, e.to_string()));
            return Ok(());
        }
        self.stream(desc, parquet_schema, bytes, 1)
    }

    /// Streams a compacted file (`bytes`, holding the rows of `source_segments` fragment
    /// segments) into the output, batch by batch, by [`Merger::pump`]: such a file can be
    /// large, so it is never decoded whole. It was written by this engine, so a failure to
    /// decode it is an error of the whole merge, not a quarantine.
    pub fn push_compacted(
        &mut self,
        desc: &SegmentDesc,
        parquet_schema: &SchemaDescPtr,
        bytes: Bytes,
        source_segments: u64,
    ) -> Result<(), EngineError> {
        self.drain()?;
        self.decode_run()?;
        self.stream(desc, parquet_schema, bytes, source_segments)
    }

    fn stream(&mut self, desc: &SegmentDesc, parquet_schema: &SchemaDescPtr, bytes: Bytes, sources: u64) -> Result<(), EngineError> {
        let reader = self.reader(parquet_schema, bytes)?;
        self.streaming = Some(Streaming { reader, expected: desc.rows as usize, rows: 0, sources });
        Ok(())
    }

    /// Streams the large input pushed last until a full part is ready to take, or until it is
    /// done; answers whether more of it remains. Calling it between taking parts keeps a large
    /// input's output from piling up in memory (an input left unpumped is streamed whole by the
    /// next push or by [`Merger::finish`]).
    pub fn pump(&mut self) -> Result<bool, EngineError> {
        let Some(mut s) = self.streaming.take() else { return Ok(false) };
        while !self.writer.inner().has_ready() {
            match s.reader.next() {
                Some(batch) => {
                    let batch = align(batch?, &self.schema)?;
                    s.rows += batch.num_rows();
                    self.hold(batch);
                    self.write_if_due()?;
                }
                None => {
                    expect_rows(s.expected, s.rows)?;
                    self.rows_in += s.rows as u64;
                    self.sources += s.sources;
                    return Ok(false);
                }
            }
        }
        self.streaming = Some(s);
        Ok(true)
    }

    /// Streams what is left of a large input.
    fn drain(&mut self) -> Result<(), EngineError> {
        while self.pump()? {}
        Ok(())
    }

    /// A reader of one compacted file, batch by batch.
    fn reader(&self, parquet_schema: &SchemaDescPtr, bytes: Bytes) -> Result<ParquetRecordBatchReader, EngineError> {
        // The footer is decoded again, as in `stitch`, without its schema or statistics.
        let options = ArrowReaderOptions::new()
            .with_skip_arrow_metadata(true)
            .with_parquet_schema(parquet_schema.clone())
            .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll);
        let metadata = ArrowReaderMetadata::load(&bytes, options)?;
        Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, metadata).with_batch_size(self.write_batch_rows).build()?)
    }

    /// Queues decoded rows of the current dataset.
    fn hold(&mut self, batch: RecordBatch) {
        let rows = batch.num_rows();
        match self.owners.last_mut() {
            Some((dataset, n)) if Arc::ptr_eq(dataset, &self.dataset) => *n += rows,
            _ => self.owners.push((self.dataset.clone(), rows)),
        }
        self.pending_rows += rows;
        self.pending.push(batch);
    }

    /// The rows pushed from now on are dataset `dataset`'s (a roll-up's output holds the rows
    /// of many datasets, each pushed in turn); what was pushed before stays its own dataset's.
    pub fn begin_dataset(&mut self, dataset: &str) -> Result<(), EngineError> {
        self.drain()?;
        self.decode_run()?;
        if &*self.dataset != dataset {
            self.dataset = Arc::from(dataset);
        }
        Ok(())
    }

    /// `batch` aligned to the schema rows are pushed in (see [`Merger::input_schema`]).
    pub fn align(&self, batch: RecordBatch) -> Result<RecordBatch, EngineError> {
        align(batch, &self.schema)
    }

    /// The schema rows are pushed in: the output's columns less the period and dataset.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Queues rows already decoded (a roll-up's sorted rows of one dataset), holding the rows
    /// of `sources` fragment segments.
    pub fn push_rows(&mut self, batch: RecordBatch, sources: u64) -> Result<(), EngineError> {
        self.drain()?;
        self.decode_run()?;
        let batch = align(batch, &self.schema)?;
        self.rows_in += batch.num_rows() as u64;
        self.sources += sources;
        self.hold(batch);
        self.write_if_due()
    }

    /// Writes the queued rows once there are enough for a write batch.
    fn write_if_due(&mut self) -> Result<(), EngineError> {
        if self.pending_rows >= self.write_batch_rows {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), EngineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        self.pending_rows = 0;
        let rows = batch.num_rows();
        let period = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(&self.period, rows))) as ArrayRef;
        let owners = std::mem::take(&mut self.owners);
        let datasets = owners.iter().flat_map(|(dataset, n)| std::iter::repeat_n(&**dataset, *n));
        let dataset = Arc::new(StringArray::from_iter_values(datasets)) as ArrayRef;
        let mut columns = batch.columns().to_vec();
        columns.extend([period, dataset]);
        self.writer.write(&RecordBatch::try_new(self.output_schema.clone(), columns)?)?;
        self.peak_buffered = self.peak_buffered.max(self.writer.memory_size() + self.writer.inner().buffered());
        if self.writer.memory_size() >= self.row_group_bytes {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// [`Self::push`] for a fragment's segment, [`Self::push_compacted`] for a compacted file.
    pub fn push_input(&mut self, scan: &Scan, desc: &SegmentDesc, bytes: Bytes) -> Result<(), EngineError> {
        let schema = &scan.parquet_schemas[desc.schema as usize];
        match scan.fragment(desc).compacted {
            Some(sources) => self.push_compacted(desc, schema, bytes, sources),
            None => self.push(desc, schema, bytes),
        }
    }

    /// The full parts written so far, to upload while merging goes on.
    pub fn take_parts(&mut self) -> Vec<Bytes> {
        self.writer.inner_mut().take_ready()
    }

    /// Writes what is queued and the footer, and checks that every row came out.
    pub fn finish(mut self) -> Result<Finished, EngineError> {
        self.drain()?;
        self.decode_run()?;
        self.write_pending()?;
        self.writer.append_key_value_metadata(KeyValue::new(META_SOURCE_SEGMENTS.into(), self.sources.to_string()));
        let metadata = self.writer.finish()?;
        let rows = metadata.file_metadata().num_rows() as u64;
        if rows != self.rows_in {
            return Err(EngineError::RowCountMismatch { expected: self.rows_in, out: rows });
        }
        let sink = self.writer.inner_mut();
        let bytes = sink.written();
        Ok(Finished {
            parts: sink.take_all(),
            rows,
            bytes,
            row_groups: metadata.num_row_groups(),
            peak_buffered: self.peak_buffered,
            quarantined: std::mem::take(&mut self.quarantined),
            source_segments: self.sources,
            statistics: stats::of_file(&self.output_schema, &metadata),
            schema: self.output_schema.clone(),
        })
    }
}

/// How every output is encoded. Dictionary encoding is kept for numeric columns and turned off
/// for string columns: the client's strings are UUIDs (mostly distinct) and lists written as
/// text, where building a dictionary costs hashing every value and then falls back to plain
/// encoding anyway. Measured with `scripts/bench-engine.sh` (2,000 fragments, ZSTD): 8% more
/// throughput and outputs 10% smaller (78.5 MB against 87.1 MB); turning it off for numeric
/// columns too made outputs larger (80.0 MB) and needed more memory.
/// The period and dataset columns keep their dictionary: one value per file, a few bytes.
fn writer_properties(schema: &SchemaRef, config: &EngineConfig, metadata: Vec<KeyValue>) -> WriterProperties {
    let constant = |f: &&Arc<Field>| f.name() == PERIOD_COLUMN || f.name() == DATASET_COLUMN;
    let strings = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
        .filter(|f| !constant(f));
    strings
        .fold(WriterProperties::builder(), |props, f| props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false))
        .set_compression(config.compression)
        // Row groups are cut by bytes (see `write_pending`), not by a row count.
        .set_max_row_group_row_count(Some(usize::MAX))
        .set_key_value_metadata(Some(metadata))
        .build()
}

/// The rows decoded are the rows expected.
fn expect_rows(expected: usize, decoded: usize) -> Result<(), EngineError> {
    if decoded != expected {
        return Err(EngineError::RowCountMismatch { expected: expected as u64, out: decoded as u64 });
    }
    Ok(())
}

/// The schema inputs are aligned to (`superset` less any column named as the period or dataset
/// column, so that an uploader's column of that name is dropped, never read as one) and the
/// schema written (that, then the two columns). Every output thus describes itself: a reader
/// of the file alone, or one that ignores partition values, finds the true period and dataset.
fn self_describing(superset: &SchemaRef) -> (SchemaRef, SchemaRef) {
    let own = |f: &Arc<Field>| f.name() != PERIOD_COLUMN && f.name() != DATASET_COLUMN;
    let fields: Vec<Arc<Field>> = superset.fields().iter().filter(|f| own(f)).cloned().collect();
    let input = Arc::new(Schema::new_with_metadata(fields.clone(), superset.metadata().clone()));
    let mut written = fields;
    written.extend([PERIOD_COLUMN, DATASET_COLUMN].map(|name| Arc::new(Field::new(name, DataType::Utf8, true))));
    (input, Arc::new(Schema::new_with_metadata(written, superset.metadata().clone())))
}

/// `batch` with `schema`'s columns in `schema`'s order; columns it lacks are all null.
fn align(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, EngineError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.with_schema(schema.clone())?);
    }
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| batch.column_by_name(f.name()).cloned().unwrap_or_else(|| new_null_array(f.data_type(), rows)))
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Merges one planned output, reading each segment's bytes from `read` and handing every part
/// to `emit` as soon as it is full (the last, possibly short, one included).
pub fn merge_output(
    plan: &OutputPlan,
    scan: &Scan,
    config: &EngineConfig,
    mut read: impl FnMut(&SegmentDesc) -> Result<Bytes, EngineError>,
    mut emit: impl FnMut(Bytes),
) -> Result<Finished, EngineError> {
    let mut merger = Merger::new(plan, config)?;
    for &i in &plan.inputs {
        let desc = &scan.segments[i];
        merger.push_input(scan, desc, read(desc)?)?;
        loop {
            merger.take_parts().into_iter().for_each(&mut emit);
            if !merger.pump()? {
                break;
            }
        }
    }
    let mut finished = merger.finish()?;
    finished.parts.drain(..).for_each(&mut emit);
    Ok(finished)
}
