//! Period roll-ups, the job: a table's files of one period, across datasets, rewritten into a
//! few large files (the engine's [`fusou_engine::rollup`]) and recorded for the tables'
//! committer, which lists them in place of those files ([`fusou_lake::rollup`]). The
//! per-dataset files, and so every owner's downloads, are untouched.
//!
//! **When.** The clean-up (daily cron, or an operator's call) rolls up each (table, period)
//! whose files the table lists on their own number at least [`RollupConfig::min_files`]. So a
//! closed period is rolled up once, when its last files have arrived; the open period is
//! rolled up again on each pass that finds enough new files, each roll-up superseding the last
//! (it rewrites every file of the period, so a period stays a few files). No calendar of periods
//! is needed: the files say which periods are changing.
//!
//! **What it costs.** A roll-up reads each file once and writes the period once, streaming in
//! the engine's bounded memory: a dataset is decoded whole only when its files are at most
//! [`RollupConfig::sort_bytes`], else streamed file by file. A period of more than
//! [`RollupConfig::max_files`] files is rolled up in parts (the files listed on their own,
//! up to that many), so a job's subrequests stay within an invocation's.
//!
//! **Nothing half-written.** Output keys are staged in D1 before their first byte, as a run's
//! (the clean-up deletes them if the job dies); the job's record, its members and the
//! unstaging go in one D1 batch.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::write::{PartUpload, Target, columns_with_statistics};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::config::{ConfigError, Vars};
use fusou_core::index::{self, RollupDue, RollupInput, SqlValue, Statement, iso, keyed, text};
use fusou_engine::EngineConfig;
use fusou_engine::rollup::{self, Roller, RollupFile};
use fusou_lake::commit::table_prefix;
use fusou_lake::contract::Contract;
use fusou_lake::rollup::RollupFile as ListedFile;
use fusou_ports::{Blobs, Clock, PortResult, Sql};

/// How periods are rolled up.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupConfig {
    /// A (table, period) is rolled up once the table lists this many of its files on their
    /// own (`LAKE_ROLLUP_MIN_FILES`, default 32).
    pub min_files: u64,
    /// Outputs are packed to this many input bytes (`LAKE_ROLLUP_TARGET_MB`, default 256 MiB).
    pub target_bytes: u64,
    /// Files one job reads at most (a GET each; default 2,000).
    pub max_files: usize,
    /// Files one pass reads at most, over its jobs (default 6,000: an invocation makes 10,000
    /// subrequests). A pass runs at least one job.
    pub files_per_pass: u64,
    /// Only this period (an operator's choice on a test stack; `None`: every period due).
    pub period: Option<String>,
    /// As [`fusou_engine::rollup::RollupConfig::sort_bytes`].
    pub sort_bytes: u64,
    /// Row groups of 1 MiB (not the compacted files' 16 MiB): a one-dataset lookup in a large
    /// roll-up file reads only the row groups whose `dataset_id` bounds hold its dataset.
    pub row_group_bytes: usize,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self {
            min_files: 32,
            target_bytes: 256 << 20,
            max_files: 2000,
            files_per_pass: 6000,
            period: None,
            sort_bytes: 4 << 20,
            row_group_bytes: 1 << 20,
        }
    }
}

impl RollupConfig {
    /// The defaults, then `LAKE_ROLLUP_MIN_FILES` and `LAKE_ROLLUP_TARGET_MB`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            min_files: vars.positive("LAKE_ROLLUP_MIN_FILES")?,
            target_bytes: vars.positive("LAKE_ROLLUP_TARGET_MB")?.saturating_mul(1 << 20),
            ..Self::default()
        })
    }
}

/// The column a table's rows are sorted by within a dataset: its time, when it has one.
/// Tables without one keep their files' order, which is the order of upload.
pub fn order_column(table: &str) -> Option<&'static str> {
    const TIME: &str = "timestamp";
    Contract::client().table(table)?.iter().any(|c| c.name == TIME).then_some(TIME)
}

/// What one roll-up job did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupReport {
    pub id: String,
    pub table: String,
    pub period: String,
    pub files_in: u64,
    pub bytes_in: u64,
    pub rows: u64,
    /// Roll-ups of the period it supersedes (their files are among its inputs).
    pub supersedes: u64,
    pub outputs: Vec<ListedFile>,
    /// Most bytes the writer held at once, over its outputs.
    pub peak_buffered: usize,
}

/// What one pass of roll-ups did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollupPass {
    pub jobs: Vec<RollupReport>,
    /// (table, period) and why, for jobs that failed (their files stay as they are).
    pub failures: Vec<(String, String, String)>,
}

/// Periods due listed per pass at most.
const JOBS_LISTED: i64 = 256;

/// Rolls up the (table, period)s that are due, the most files first, while the pass has read
/// fewer than [`RollupConfig::files_per_pass`] files.
pub async fn roll_up_due<S: Sql, B: Blobs, C: Clock>(
    sql: &S,
    blobs: &B,
    clock: &C,
    config: &RollupConfig,
    engine: &EngineConfig,
) -> PortResult<RollupPass> {
    let period = config.period.as_deref().map_or(SqlValue::Null, text);
    let params = [SqlValue::Int(JOBS_LISTED), SqlValue::from(config.min_files), period];
    let due: Vec<RollupDue> = sql.query(index::LAKE_ROLLUPS_DUE, &params).await?;
    let mut pass = RollupPass::default();
    let mut files = 0;
    for d in due {
        files += d.files.min(config.max_files as u64);
        if files > config.files_per_pass && !(pass.jobs.is_empty() && pass.failures.is_empty()) {
            break;
        }
        match roll_up(sql, blobs, clock, &d.table_name, &d.period_tag, config, engine).await {
            Ok(Some(report)) => pass.jobs.push(report),
            Ok(None) => {}
            Err(e) => pass.failures.push((d.table_name, d.period_tag, e.to_string())),
        }
    }
    Ok(pass)
}

/// Rolls up `table`'s files of `period` that the table lists: writes the outputs and records
/// them for the committer. `None`: fewer than two files to roll up.
pub async fn roll_up<S: Sql, B: Blobs, C: Clock>(
    sql: &S,
    blobs: &B,
    clock: &C,
    table: &str,
    period: &str,
    config: &RollupConfig,
    engine: &EngineConfig,
) -> PortResult<Option<RollupReport>> {
    let (table_name, period_tag) =
        (TableName::parse(table).map_err(|e| e.to_string())?, PeriodTag::parse(period).map_err(|e| e.to_string())?);
    let mut members: Vec<RollupInput> = sql.query(index::LAKE_ROLLUP_CANDIDATES, &[text(table), text(period)]).await?;
    if members.len() > config.max_files {
        // Too many for one job: the files listed on their own, in parts.
        members.retain(|m| m.rollup.is_none());
        members.truncate(config.max_files);
    }
    if members.len() < 2 {
        return Ok(None);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = clock.now_ms();
    let supersedes = members.iter().filter_map(|m| m.rollup.as_deref()).collect::<std::collections::BTreeSet<_>>().len() as u64;
    let engine = EngineConfig {
        target_file_bytes: config.target_bytes,
        min_tail_bytes: config.target_bytes / 8,
        row_group_bytes: config.row_group_bytes,
        ..engine.clone()
    };
    let sorting = rollup::RollupConfig { sort_bytes: config.sort_bytes };
    let order = order_column(table);

    // Files of the same contract columns are rolled up together (by their columns, then whole
    // datasets in order), and only those columns are written: a roll-up file is read by every
    // reader of the table, and a column outside the client's contract, which an uploader can
    // name at will, stays in its owner's files alone (nor can such columns split a period into
    // many roll-up files).
    let mut groups: BTreeMap<String, Vec<&RollupInput>> = BTreeMap::new();
    members.iter().for_each(|m| groups.entry(contract_columns(table, m)).or_default().push(m));
    let mut planned: Vec<Output> = Vec::new();
    for (key, files) in &groups {
        let keep: Option<Vec<String>> =
            serde_json::from_str::<Vec<(String, String)>>(key).ok().map(|c| c.into_iter().map(|(n, _)| n).collect());
        let mut datasets = rollup::by_dataset(files.iter().copied(), |m| (m.dataset_id.clone(), m.size as u64));
        for output in rollup::plan(&datasets, &engine) {
            let datasets = output.into_iter().map(|i| std::mem::take(&mut datasets[i].files)).collect();
            planned.push(Output { keep: keep.clone(), datasets });
        }
    }
    let keys: Vec<String> =
        (0..planned.len()).map(|n| format!("{}/data/period_tag={period}/rollup-{id}-{n:03}.parquet", table_prefix(table))).collect();
    let dataset = DatasetId::parse("rollup").expect("a valid id");
    sql.batch(&index::stage_outputs(&keys, &dataset, &format!("rollup-{id}"), now)).await?;

    let mut report = RollupReport {
        id: id.clone(),
        table: table.to_owned(),
        period: period.to_owned(),
        files_in: members.len() as u64,
        bytes_in: members.iter().map(|m| m.size as u64).sum(),
        rows: 0,
        supersedes,
        outputs: Vec::new(),
        peak_buffered: 0,
    };
    for (output, key) in planned.iter().zip(&keys) {
        let target = Target { key, sql, blobs };
        let mut upload = PartUpload::new(&target);
        let columns = Columns { keep: output.keep.as_deref(), order };
        let written = write_output(&output.datasets, &table_name, &period_tag, columns, &engine, &sorting, blobs, &mut upload).await;
        if written.is_err() {
            upload.abort().await;
        }
        let finished = written?;
        report.rows += finished.rows;
        report.peak_buffered = report.peak_buffered.max(finished.peak_buffered);
        let columns = columns_with_statistics(&finished);
        report.outputs.push(ListedFile { key: key.clone(), rows: finished.rows as i64, size: finished.bytes as i64, columns });
    }

    let files = serde_json::to_string(&report.outputs).map_err(|e| e.to_string())?;
    let mut statements = vec![Statement::new(
        index::LAKE_ROLLUP_RECORD,
        vec![text(&id), text(table), text(period), text(&files), text(&iso(clock.now_ms()))],
    )];
    let member_keys: Vec<String> = members.iter().map(|m| m.key.clone()).collect();
    statements.extend(keyed(index::LAKE_ROLLUP_MEMBERS_RECORD, &[text(&id)], &member_keys));
    statements.extend(keyed(index::UNSTAGE, &[], &keys));
    sql.batch(&statements).await?;
    Ok(Some(report))
}

/// The group a member is rolled up in: its recorded columns that are the contract's (names and
/// types, as JSON), or its schema's fingerprint when the run recorded no columns.
fn contract_columns(table: &str, member: &RollupInput) -> String {
    let contract = Contract::client().table(table).unwrap_or(&[]);
    let recorded: Option<Vec<fusou_lake::schema::Column>> = member.columns.as_deref().and_then(|c| serde_json::from_str(c).ok());
    match recorded {
        Some(columns) => {
            let own: Vec<(&str, &str)> =
                columns.iter().filter(|c| contract.iter().any(|k| k.name == c.name)).map(|c| (c.name.as_str(), c.kind.as_str())).collect();
            serde_json::to_string(&own).expect("columns serialize")
        }
        None => format!("fingerprint {}", member.schema_fingerprint),
    }
}

/// One planned output: the columns it keeps (all: `None`), and its datasets' files.
struct Output<'m> {
    keep: Option<Vec<String>>,
    datasets: Vec<Vec<&'m RollupInput>>,
}

/// The columns an output keeps (all: `None`) and the one its datasets' rows are sorted by.
#[derive(Clone, Copy)]
struct Columns<'a> {
    keep: Option<&'a [String]>,
    order: Option<&'a str>,
}

/// Files fetched at once for a dataset that is streamed file by file.
const CONCURRENT_GETS: usize = 4;

/// Merges one output's datasets (each its files, oldest first) and streams it to R2.
#[allow(clippy::too_many_arguments)]
async fn write_output<S: Sql, B: Blobs>(
    datasets: &[Vec<&RollupInput>],
    table: &TableName,
    period: &PeriodTag,
    columns: Columns<'_>,
    engine: &EngineConfig,
    sorting: &rollup::RollupConfig,
    blobs: &B,
    upload: &mut PartUpload<'_, '_, S, B>,
) -> PortResult<fusou_engine::merge::Finished> {
    let fetch = |m: &RollupInput| {
        let (key, rows, sources, dataset) = (m.key.clone(), m.row_count as u64, m.source_segments as u64, m.dataset_id.clone());
        async move {
            let bytes: Bytes = blobs.get(&key).await?.ok_or_else(|| format!("{key} is missing"))?;
            let dataset = DatasetId::parse(&dataset).map_err(|e| e.to_string())?;
            Ok::<_, fusou_ports::PortError>(RollupFile { dataset, bytes, rows, source_segments: sources })
        }
    };
    let engine_error = |e: fusou_engine::EngineError| fusou_ports::PortError::new(e);
    let mut roller: Option<Roller> = None;
    for files in datasets {
        let bytes: u64 = files.iter().map(|m| m.size as u64).sum();
        let mut fetched = futures_util::stream::iter(files.iter().map(|m| fetch(m))).buffered(CONCURRENT_GETS);
        let first = fetched.try_next().await?.ok_or("a dataset without files")?;
        let roller = match &mut roller {
            Some(r) => r,
            None => roller.insert(Roller::new(period, table, &first, columns.keep, columns.order, engine, sorting).map_err(engine_error)?),
        };
        if roller.sorts(bytes) {
            let mut all = vec![first];
            all.extend(fetched.try_collect::<Vec<_>>().await?);
            let dataset = all[0].dataset.clone();
            roller.push_sorted(&dataset, all).map_err(engine_error)?;
            send_ready(roller, upload).await?;
        } else {
            roller.push_file(first).map_err(engine_error)?;
            send_ready(roller, upload).await?;
            while let Some(file) = fetched.try_next().await? {
                roller.push_file(file).map_err(engine_error)?;
                send_ready(roller, upload).await?;
            }
        }
    }
    let mut finished = roller.ok_or("an output without datasets")?.finish().map_err(engine_error)?;
    upload.finish(std::mem::take(&mut finished.parts)).await?;
    Ok(finished)
}

/// Uploads the parts that are full, streaming what is left of a large file as it goes.
async fn send_ready<S: Sql, B: Blobs>(roller: &mut Roller, upload: &mut PartUpload<'_, '_, S, B>) -> PortResult<()> {
    loop {
        for part in roller.take_parts() {
            upload.send(part).await?;
        }
        if !roller.pump().map_err(fusou_ports::PortError::new)? {
            return Ok(());
        }
    }
}
