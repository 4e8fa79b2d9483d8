//! Period roll-ups: one table's compacted files of one period, across datasets, rewritten into
//! a few large files for readers who query a whole period. An output holds whole datasets, in
//! dataset order, and each dataset's rows in time order: one admiral's rows stay together, so a
//! one-dataset lookup still prunes on the files' `dataset_id` bounds, and a period-wide query
//! reads a few large files instead of one small file per dataset.
//!
//! The rewrite is the merge's ([`Merger`]), so memory stays bounded the same way: a dataset's
//! files are pushed one after the other and streamed batch by batch ([`Roller::push_file`]). A
//! dataset whose files are small (up to [`RollupConfig::sort_bytes`]) is decoded whole and its
//! rows sorted by the table's order column, stable, nulls last ([`Roller::push_sorted`]); a
//! larger one keeps its files' order (they are taken oldest first, so rows still follow time
//! from file to file).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use arrow_select::concat::concat_batches;
use arrow_select::take::take_record_batch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::ParquetMetaDataReader;

use super::binpack::{OutputPlan, pack};
use super::evolution::fingerprint;
use super::merge::{Finished, Merger};
use super::segment::SegmentDesc;
use super::{EngineConfig, EngineError};
use fusou_contract::ids::{DATASET_COLUMN, DatasetId, PERIOD_COLUMN, PeriodTag, TableName};

/// How roll-ups sort their rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupConfig {
    /// A dataset whose files hold at most this many bytes is sorted by the order column
    /// (default 4 MiB: decoded, a few times that, next to the merge's own buffers).
    pub sort_bytes: u64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self { sort_bytes: 4 << 20 }
    }
}

/// One compacted file to roll up.
#[derive(Debug, Clone)]
pub struct RollupFile {
    /// Its dataset.
    pub dataset: DatasetId,
    /// Its bytes, whole.
    pub bytes: Bytes,
    /// Its rows, as the index records them (checked).
    pub rows: u64,
    /// The fragment segments whose rows it holds.
    pub source_segments: u64,
}

/// One dataset's files (or anything standing for them) among a roll-up's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetFiles<K, T> {
    /// The dataset.
    pub dataset: K,
    /// The bytes of its files.
    pub bytes: u64,
    /// Its files, in the order given.
    pub files: Vec<T>,
}

/// Gathers `files`, listed in dataset order, into each dataset's; `of` answers a file's
/// dataset and size.
pub fn by_dataset<K: PartialEq, T>(files: impl IntoIterator<Item = T>, of: impl Fn(&T) -> (K, u64)) -> Vec<DatasetFiles<K, T>> {
    let mut datasets: Vec<DatasetFiles<K, T>> = Vec::new();
    for file in files {
        let (dataset, bytes) = of(&file);
        match datasets.last_mut() {
            Some(d) if d.dataset == dataset => {
                d.bytes += bytes;
                d.files.push(file);
            }
            _ => datasets.push(DatasetFiles { dataset, bytes, files: vec![file] }),
        }
    }
    datasets
}

/// Which datasets go into which output: outputs hold whole datasets, in the order given,
/// packed up to `config.target_file_bytes` (one dataset larger than that is an output of its
/// own). Answers each output's indices into `datasets`.
pub fn plan<K, T>(datasets: &[DatasetFiles<K, T>], config: &EngineConfig) -> Vec<Vec<usize>> {
    let candidates: Vec<(usize, u64)> = datasets.iter().enumerate().map(|(i, d)| (i, d.bytes)).collect();
    let unbounded = EngineConfig { max_inputs_per_bin: usize::MAX, ..config.clone() };
    pack(&candidates, &unbounded).into_iter().map(|bin| bin.inputs).collect()
}

/// Writes one roll-up output, a dataset at a time; its parts can be taken as they fill.
pub struct Roller {
    merger: Merger,
    /// The order column's index in the merged schema, if the table has one.
    order: Option<usize>,
    config: RollupConfig,
}

impl Roller {
    /// A roll-up output of `table`'s `period`, whose files have the schema of `first` (its
    /// first file: its schema less the period and dataset columns, and only the columns `keep`
    /// names when given), rows sorted within a dataset by `order` when given.
    pub fn new(
        period: &PeriodTag,
        table: &TableName,
        first: &RollupFile,
        keep: Option<&[String]>,
        order: Option<&str>,
        engine: &EngineConfig,
        config: &RollupConfig,
    ) -> Result<Self, EngineError> {
        let metadata = ParquetMetaDataReader::new().parse_and_finish(&first.bytes)?;
        let schema = parquet_to_arrow_schema(metadata.file_metadata().schema_descr(), None)?;
        let kept = |name: &String| name != PERIOD_COLUMN && name != DATASET_COLUMN && keep.is_none_or(|k| k.contains(name));
        let fields: Vec<_> = schema.fields().iter().filter(|f| kept(f.name())).cloned().collect();
        let schema: SchemaRef = Arc::new(arrow_schema::Schema::new(fields));
        let plan = OutputPlan {
            dataset: first.dataset.clone(),
            period: period.clone(),
            table: table.clone(),
            fingerprint: fingerprint(&schema),
            schema: schema.clone(),
            inputs: Vec::new(),
            input_bytes: 0,
            input_rows: 0,
        };
        let order = order.and_then(|name| schema.index_of(name).ok()).filter(|&i| sortable(schema.field(i).data_type()));
        Ok(Self { merger: Merger::new(&plan, engine)?, order, config: config.clone() })
    }

    /// Whether a dataset whose files hold `bytes` bytes is sorted: the table has an order
    /// column and the files are small enough to decode at once ([`Roller::push_sorted`]);
    /// otherwise its files are pushed one by one ([`Roller::push_file`]).
    pub fn sorts(&self, bytes: u64) -> bool {
        self.order.is_some() && bytes <= self.config.sort_bytes
    }

    /// Pushes every file of one dataset whose rows [`Roller::sorts`]: decoded, sorted by the
    /// order column (stable, so rows of equal time keep their files' order) and queued.
    pub fn push_sorted(&mut self, dataset: &DatasetId, files: Vec<RollupFile>) -> Result<(), EngineError> {
        let order = self.order.ok_or_else(|| EngineError::Config("the table has no order column".into()))?;
        self.merger.begin_dataset(dataset.as_str())?;
        let (mut batches, mut sources) = (Vec::new(), 0);
        for file in files {
            let mut rows = 0;
            for batch in ParquetRecordBatchReaderBuilder::try_new(file.bytes)?.build()? {
                let batch = self.merger.align(batch?)?;
                rows += batch.num_rows();
                batches.push(batch);
            }
            if rows as u64 != file.rows {
                return Err(EngineError::RowCountMismatch { expected: file.rows, out: rows as u64 });
            }
            sources += file.source_segments;
        }
        let all = concat_batches(self.merger.input_schema(), &batches)?;
        drop(batches);
        self.merger.push_rows(sort_by(&all, order)?, sources)
    }

    /// Pushes one file of a dataset (its files oldest first), streamed by [`Roller::pump`].
    pub fn push_file(&mut self, file: RollupFile) -> Result<(), EngineError> {
        self.merger.begin_dataset(file.dataset.as_str())?;
        let rows = u32::try_from(file.rows).map_err(|_| EngineError::Config("a file of 2^32 rows or more".into()))?;
        let len = u32::try_from(file.bytes.len()).map_err(|_| EngineError::Config("a file of 4 GiB or more".into()))?;
        let desc = SegmentDesc { fragment: 0, table: 0, schema: 0, start: 0, len, rows };
        let schema = ParquetMetaDataReader::new().parse_and_finish(&file.bytes)?.file_metadata().schema_descr_ptr();
        self.merger.push_compacted(&desc, &schema, file.bytes, file.source_segments)
    }

    /// As [`Merger::pump`].
    pub fn pump(&mut self) -> Result<bool, EngineError> {
        self.merger.pump()
    }

    /// As [`Merger::take_parts`].
    pub fn take_parts(&mut self) -> Vec<Bytes> {
        self.merger.take_parts()
    }

    /// As [`Merger::finish`].
    pub fn finish(self) -> Result<Finished, EngineError> {
        self.merger.finish()
    }
}

/// Rolls up files held in memory, in dataset order and oldest first within a dataset, handing
/// each part to `emit` with its output's number; answers each output as it finished (its parts
/// taken). The compaction Worker drives the same [`Roller`], fetching each dataset's files as
/// it goes; this is for tests and benchmarks.
pub fn roll_up_in_memory(
    period: &PeriodTag,
    table: &TableName,
    files: &[RollupFile],
    order: Option<&str>,
    engine: &EngineConfig,
    config: &RollupConfig,
    mut emit: impl FnMut(usize, Bytes),
) -> Result<Vec<Finished>, EngineError> {
    let datasets = by_dataset(files, |f| (f.dataset.clone(), f.bytes.len() as u64));
    let mut outputs = Vec::new();
    for (n, output) in plan(&datasets, engine).into_iter().enumerate() {
        let mut roller = Roller::new(period, table, datasets[output[0]].files[0], None, order, engine, config)?;
        let mut drain = |roller: &mut Roller| -> Result<(), EngineError> {
            loop {
                roller.take_parts().into_iter().for_each(|part| emit(n, part));
                if !roller.pump()? {
                    return Ok(());
                }
            }
        };
        for i in output {
            let DatasetFiles { dataset, bytes, files } = &datasets[i];
            let of: Vec<RollupFile> = files.iter().map(|f| (*f).clone()).collect();
            if roller.sorts(*bytes) {
                roller.push_sorted(dataset, of)?;
                drain(&mut roller)?;
            } else {
                for file in of {
                    roller.push_file(file)?;
                    drain(&mut roller)?;
                }
            }
        }
        let mut finished = roller.finish()?;
        finished.parts.drain(..).for_each(|part| emit(n, part));
        outputs.push(finished);
    }
    Ok(outputs)
}

/// Order columns the roll-up sorts by: integers (a time in milliseconds, a sequence).
fn sortable(kind: &DataType) -> bool {
    matches!(kind, DataType::Int64 | DataType::Int32)
}

/// `batch`'s rows in the order of column `order` (stable; nulls last).
fn sort_by(batch: &RecordBatch, order: usize) -> Result<RecordBatch, EngineError> {
    let column = batch.column(order);
    let key = |i: usize| -> Option<i64> {
        if column.is_null(i) {
            return None;
        }
        match column.data_type() {
            DataType::Int64 => Some(column.as_primitive::<Int64Type>().value(i)),
            _ => Some(column.as_primitive::<Int32Type>().value(i) as i64),
        }
    };
    let mut indices: Vec<u32> = (0..batch.num_rows() as u32).collect();
    indices.sort_by_key(|&i| key(i as usize).map_or((1, 0), |v| (0, v)));
    Ok(take_record_batch(batch, &UInt32Array::from(indices))?)
}
