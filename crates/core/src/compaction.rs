//! The compaction workflow, defined on the step runner ([`crate::workflow`]) and generic over
//! its ports, so that it runs natively over SQLite and memory exactly as it runs in the Worker
//! over D1 and R2.
//!
//! Steps of one run (its id derived from the message, so a redelivery resumes it):
//! 1. `validate-dataset`: take the dataset's lease (a live lease of another run, or nothing to
//!    compact: the run ends as skipped, nothing lost), then make sure the catalog (Supabase)
//!    knows the dataset: an unreachable catalog fails the run before anything is written. Not
//!    checkpointed: a lease belongs to an invocation, so a resumed run takes it again (under a
//!    new epoch if it had been released).
//! 2. `list-fragments`: the pending fragments, narrowed by table and period when the message
//!    has them, at most [`RunConfig::max_fragments`] and [`RunConfig::max_run_bytes`] per run
//!    (more left: `continue_after`).
//!    Then `list-small-files`: the dataset's small live compacted files, of which
//!    [`consolidate`] chooses the tiers to merge again within the bytes the fragments leave;
//!    they join their table's outputs and are retired by the commit.
//! 3. The fragments are read (one GET each), scanned and planned; planning is deterministic, so a
//!    resumed run plans the same outputs. Output `n` is written to
//!    `battle_compacted/{period}/{dataset}/{table}/{run}-{n}.parquet`. Consecutive outputs are
//!    merged in steps of at most [`RunConfig::merge_step_bytes`] of input, `merge-{a}-{b}`
//!    writing outputs `a` to `b`: a crash costs one step's merging, and a run's many small
//!    outputs do not each cost a checkpoint write. Naming a step by its outputs keeps a
//!    checkpoint from being read as other outputs when the grouping changes between deliveries.
//!    Every key is first *staged* in D1 (one checkpointed step, `stage-outputs`), so that an
//!    output no commit ever records is found and deleted by [`crate::cleanup`].
//! 4. `update-metadata`: one fenced batch ([`crate::commit`]). If it changes nothing, the run had
//!    lost its lease: its outputs are orphans for clean-up and nothing is counted twice. The
//!    same holds when another run had compacted some of the listed fragments, or merged some of
//!    the chosen files, meanwhile (a run resumed from its checkpoints after its lease had
//!    expired): the run is superseded. When
//!    fragments are still pending afterwards (uploads that arrived during the run, or more than
//!    one run takes), the run asks for a continuation.
//!
//! A step that exhausts its retries fails the run: the lease is released and the fragments
//! stay pending; the caller records the failure and lets the message be retried.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use self::consolidate::{ConsolidationConfig, Room, SmallFile};
use crate::commit::{CommitOutcome, Lease, OutputRecord, SqlValue, Statement, commit_batch, text};
use crate::config::{ConfigError, number};
use crate::engine::segment::{FragmentInput, Quarantined, Scan};
use crate::engine::{EngineConfig, merge, plan};
use crate::fragment::TableOffset;
use crate::ids::{DatasetId, PeriodTag, TableName};
use crate::index::{self, iso};
use crate::message::CompactionMessage;
use crate::workflow::{Backoff, CheckpointStore, Clock, RetryPolicy, Run, StepConfig, StepError};

/// SQL on the battle-data index (D1 in the Worker, SQLite in tests).
#[allow(async_fn_in_trait)]
pub trait Sql {
    async fn rows(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Map<String, Value>>, String>;
    /// Runs statements atomically; answers each one's changed rows.
    async fn batch(&self, statements: &[Statement]) -> Result<Vec<u64>, String>;
}

/// Object storage (R2 in the Worker, memory in tests).
#[allow(async_fn_in_trait)]
pub trait Blobs {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, String>;
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), String>;
    async fn create_multipart(&self, key: &str) -> Result<String, String>;
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> Result<String, String>;
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> Result<(), String>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), String>;
    /// Deletes up to 1,000 objects; a key with no object is not an error.
    async fn delete(&self, keys: &[String]) -> Result<(), String>;
}

/// The dataset catalog (Supabase in the Worker): what users see of their datasets.
#[allow(async_fn_in_trait)]
pub trait Catalog {
    /// Makes sure the catalog has dataset `dataset` of `owner` (an upload made while the catalog
    /// was down may have left it out); fails when the catalog cannot be reached.
    async fn ensure_dataset(&self, dataset: &DatasetId, owner: &str) -> Result<(), String>;
}

/// Fragment GETs one run keeps in flight, to hide the round trips (R2 binding calls are not
/// subject to the six-connection limit of `fetch`).
const CONCURRENT_READS: usize = 16;

/// How a run is bounded and retried.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub engine: EngineConfig,
    pub steps: StepConfig,
    pub lease_ms: u64,
    pub max_fragments: u32,
    /// Fragment bytes one run reads into memory (at least one fragment is always taken). The
    /// run holds its fragments whole, so this is what bounds a Worker's memory beside the
    /// engine's own (see `engine`'s `# Memory usage`).
    pub max_run_bytes: u64,
    /// The largest fragment a run reads: a larger one (stored under older limits, say) is
    /// quarantined whole, unread, since holding it could take the Worker past its memory.
    pub max_fragment_bytes: u64,
    /// Input bytes of the consecutive outputs one checkpointed `merge-{a}-{b}` step writes (an
    /// output larger than this is a step of its own; 0: one output per step).
    pub merge_step_bytes: u64,
    /// Which small compacted files a run merges again (see [`consolidate`]).
    pub consolidation: ConsolidationConfig,
    /// Outputs one run plans at most: the distinct (period, table) its fragments and the files
    /// it consolidates write. With the fragment and byte caps it bounds a run's subrequests
    /// ([`RunConfig::subrequests_at_most`]). At least one fragment is always taken; a fragment
    /// holds at most [`crate::fragment::MAX_SEGMENTS`] tables.
    pub max_outputs: usize,
    /// Invocations of a run that may begin reading and not finish before the run gives up on
    /// reading its fragments together: a run of several fragments then *isolates* them (later
    /// runs take each alone), a run of one quarantines it whole, unread. So a fragment that
    /// crashes every run that reads it (out of memory, out of CPU, a trap) costs only its own
    /// compaction, and its dataset is never wedged.
    pub invocations_before_isolation: u64,
    /// Fault injection for tests: the invocation stops after this step as if it had died there
    /// (see [`crate::workflow::Run::crash_after`]). Always `None` in production.
    pub crash_after: Option<String>,
    /// Fault injection for tests: every invocation that would read this fragment dies just
    /// before reading it, as one that a poisonous fragment kills would. Always `None` in
    /// production.
    pub poison: Option<String>,
}

/// The defaults of a deployment: what one run holds and how it is retried. A run holds its
/// fragments whole in memory, so the byte cap (32 MiB) keeps its Wasm memory under 64 MiB beside
/// the engine's own buffers (`scripts/bench-worker.sh`); a Worker has 128 MB. Merge steps of 8
/// MiB of input bound what a crash costs to well under a second of merging.
impl Default for RunConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            steps: StepConfig { retries: RetryPolicy { limit: 2, delay_ms: 1000, backoff: Backoff::Exponential }, timeout_ms: 120_000 },
            lease_ms: 15 * 60 * 1000,
            max_fragments: 500,
            max_run_bytes: 32 << 20,
            max_fragment_bytes: crate::upload::MAX_BODY_BYTES_CEILING,
            merge_step_bytes: 8 << 20,
            consolidation: ConsolidationConfig::default(),
            max_outputs: 128,
            invocations_before_isolation: 2,
            crash_after: None,
            poison: None,
        }
    }
}

impl RunConfig {
    /// The defaults, then the Worker's variables: `COMPACTION_MAX_FRAGMENTS`,
    /// `COMPACTION_MAX_RUN_BYTES`, `COMPACTION_MERGE_STEP_BYTES`, `COMPACTION_MAX_OUTPUTS`,
    /// `COMPACTION_FAN_IN` and `COMPACTION_SMALL_FILE_BYTES`. A value that is not a whole
    /// number, or a cap of 0, is an error, never a silent default.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let positive = |name: &'static str, default: u64| match number(&get, name, default)? {
            0 => Err(ConfigError { name, value: "0".into(), expected: "a whole number above 0" }),
            n => Ok(n),
        };
        Ok(Self {
            max_fragments: u32::try_from(positive("COMPACTION_MAX_FRAGMENTS", d.max_fragments as u64)?).map_err(|_| ConfigError {
                name: "COMPACTION_MAX_FRAGMENTS",
                value: "too large".into(),
                expected: "at most 4294967295",
            })?,
            max_run_bytes: positive("COMPACTION_MAX_RUN_BYTES", d.max_run_bytes)?,
            merge_step_bytes: number(&get, "COMPACTION_MERGE_STEP_BYTES", d.merge_step_bytes)?,
            max_outputs: positive("COMPACTION_MAX_OUTPUTS", d.max_outputs as u64)? as usize,
            consolidation: ConsolidationConfig {
                fan_in: number(&get, "COMPACTION_FAN_IN", d.consolidation.fan_in as u64)? as usize,
                small_file_bytes: number(&get, "COMPACTION_SMALL_FILE_BYTES", d.consolidation.small_file_bytes)?,
            },
            ..d
        })
    }
}

/// The D1 queries, R2 calls, Supabase calls and queue sends of one run's invocation that do
/// not grow with its input (lease, listings, checkpoints of the fixed steps, commit, release,
/// summaries, metrics, a continuation).
const FIXED_SUBREQUESTS: u64 = 30;

impl RunConfig {
    /// The most subrequests one invocation of a run makes, step retries aside: a GET per input,
    /// a PUT per output (multipart: create, parts, complete and the upload id staged in D1), a
    /// checkpoint per merge step, and the fixed calls. Queue consumers get 10,000 per invocation
    /// (1,000 on older pages), shared by a batch's messages.
    pub fn subrequests_at_most(&self) -> u64 {
        let outputs = self.max_outputs as u64;
        // Only an output of more than one part is a multipart upload, and outputs are smaller
        // than their inputs: all of a run's parts number at most its bytes over the part size.
        // Each multipart output adds its create, its complete and its staged upload id.
        let parts = self.max_run_bytes.max(self.max_fragment_bytes).div_ceil(self.engine.part_bytes.max(1) as u64);
        // Next-fit packing: two consecutive steps always hold more than the budget.
        let merge_steps = match self.merge_step_bytes {
            0 => outputs,
            budget => (2 * self.max_run_bytes.div_ceil(budget) + 1).min(outputs),
        };
        FIXED_SUBREQUESTS + self.max_fragments as u64 + outputs + 4 * parts + merge_steps
    }
}

/// A pending fragment as `list-fragments` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentRow {
    pub key: String,
    pub table: TableName,
    pub period: PeriodTag,
    pub size: u64,
    pub offsets: Vec<TableOffset>,
    /// Taken alone by a run (see [`RunConfig::invocations_before_isolation`]).
    #[serde(default)]
    pub isolated: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Another run holds the dataset's lease, or the dataset needs no compaction.
    Skipped,
    Committed(Summary),
    /// The run had lost its lease by the time it committed: its outputs are orphans.
    LostLease {
        orphans: Vec<String>,
    },
    /// Another run had compacted some of the fragments this run listed, or merged some of the
    /// files it chose (this one had died before its commit, and its message came back after
    /// its lease had expired): nothing is committed, the lease is released, the outputs are
    /// orphans.
    Superseded {
        orphans: Vec<String>,
    },
    /// The run's invocations kept dying or failing while its fragments were read together: it
    /// isolated them (each is taken alone by a later run), committed nothing and released its
    /// lease. The caller enqueues a continuation.
    Isolated {
        fragments: u64,
    },
}

/// What a committed run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub fragments: u64,
    pub input_bytes: u64,
    pub rows: u64,
    pub outputs: Vec<OutputRecord>,
    pub output_bytes: u64,
    /// Segments set aside (unreadable), each naming its fragment and table; recorded in D1.
    pub quarantined: Vec<Quarantined>,
    /// Small compacted files merged into this run's outputs (and retired), and their rows
    /// (counted in `rows` too: `rows - consolidated_rows` are the fragments' rows).
    pub consolidated: u64,
    pub consolidated_rows: u64,
    /// Fragments are still pending after this run: the caller enqueues a continuation.
    pub continue_after: bool,
    /// Milliseconds spent in each step this invocation ran (merges summed as `merge`).
    pub step_ms: std::collections::BTreeMap<String, u64>,
}

/// What merging one output leaves behind: the output, and the segments it had to leave out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Merged {
    output: OutputRecord,
    quarantined: Vec<Quarantined>,
}

/// A run's failure: the step that failed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub StepError);

fn field<'a>(row: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    row.get(name).ok_or_else(|| format!("column {name} missing"))
}

/// The deterministic key of output `n` of run `run`.
pub fn output_key(period: &PeriodTag, dataset: &DatasetId, table: &TableName, run: &str, n: usize) -> String {
    format!("battle_compacted/{period}/{dataset}/{table}/{run}-{n}.parquet")
}

/// Runs the compaction workflow of `message` as run `run_id`.
#[allow(clippy::too_many_arguments)] // the workflow's ports, each a separate platform binding
pub async fn compact<S: Sql, B: Blobs, K: CheckpointStore, Ca: Catalog, C: Clock>(
    message: &CompactionMessage,
    run_id: &str,
    sql: &S,
    blobs: &B,
    checkpoints: &K,
    catalog: &Ca,
    clock: &C,
    config: &RunConfig,
) -> Result<Outcome, RunError> {
    let dataset = &message.dataset_id;
    let mut run = Run::new(run_id, checkpoints, clock);
    if let Some(step) = &config.crash_after {
        run = run.crash_after(step);
    }
    let outcome = steps(message, &mut run, sql, blobs, catalog, clock, config).await;
    if outcome.as_ref().is_err_and(|e| !matches!(e, StepError::Interrupted { .. })) {
        // Best effort: an expired lease frees itself anyway. (An interrupted invocation
        // stands for one that died, which releases nothing.)
        let _ = sql.rows(index::RELEASE_LEASE, &[SqlValue::Text(dataset.to_string()), SqlValue::Text(run_id.into())]).await;
    }
    outcome.map_err(RunError)
}

async fn steps<S: Sql, B: Blobs, K: CheckpointStore, Ca: Catalog, C: Clock>(
    message: &CompactionMessage,
    run: &mut Run<'_, K, C>,
    sql: &S,
    blobs: &B,
    catalog: &Ca,
    clock: &C,
    config: &RunConfig,
) -> Result<Outcome, StepError> {
    let dataset = message.dataset_id.clone();
    let run_id = run.id().to_owned();

    let epoch: Option<i64> = run
        .ephemeral(&Step::ValidateDataset.name(), &config.steps, || async {
            let now = clock.now_ms() as i64;
            let params = [
                text(dataset.as_str()),
                text(&run_id),
                SqlValue::Int(now),
                SqlValue::Int(now + config.lease_ms as i64),
                text(&iso(clock.now_ms())),
            ];
            let rows = sql.rows(index::ACQUIRE_LEASE, &params).await?;
            let Some(row) = rows.first() else { return Ok(None) };
            let epoch = field(row, "lease_epoch")?.as_i64().unwrap_or(0);
            let owner = field(row, "owner_id")?.as_str().unwrap_or_default();
            // A retry takes the run's own lease again; a failed run releases it (`compact`).
            catalog.ensure_dataset(&dataset, owner).await.map_err(|e| format!("the catalog: {e}"))?;
            Ok(Some(epoch))
        })
        .await?;
    let Some(epoch) = epoch else { return Ok(Outcome::Skipped) };
    let lease = Lease { dataset: dataset.clone(), run_id: run_id.clone(), epoch };

    let table = message.table.as_ref().map_or(SqlValue::Null, |t| text(t.as_str()));
    let period = message.period_tag.as_ref().map_or(SqlValue::Null, |p| text(p.as_str()));
    let fragments: Vec<FragmentRow> = run
        .step(&Step::ListFragments.name(), &config.steps, || async {
            let params = [
                text(dataset.as_str()),
                table.clone(),
                period.clone(),
                // One more than a run takes, to know whether more remain.
                SqlValue::Int(config.max_fragments as i64 + 1),
                SqlValue::Int(config.max_run_bytes.min(i64::MAX as u64) as i64),
            ];
            sql.rows(index::PENDING_FRAGMENTS, &params).await?.iter().map(fragment_row).collect()
        })
        .await?;
    let take = run_share(&fragments, config);
    let continue_after = fragments.len() > take;
    let fragments = &fragments[..take];

    // Before a byte is read, this invocation is counted: one that dies reading (out of memory,
    // out of CPU, a trap) cannot count itself afterwards. A run whose earlier invocations all
    // died or failed gives up on reading its fragments together.
    let mut set_aside: Vec<Quarantined> = fragments
        .iter()
        .filter(|f| f.size > config.max_fragment_bytes)
        .map(|f| whole_fragment(f, format!("the fragment is {} bytes, more than a run reads ({})", f.size, config.max_fragment_bytes)))
        .collect();
    if !run.completed(&Step::UpdateMetadata.name()) {
        let invocations = count_invocation(sql, &run_id, &dataset, clock.now_ms()).await?;
        if invocations > config.invocations_before_isolation {
            if fragments.len() > 1 {
                isolate(sql, &lease, fragments, clock.now_ms()).await?;
                return Ok(Outcome::Isolated { fragments: fragments.len() as u64 });
            }
            if let Some(f) = fragments.first()
                && set_aside.is_empty()
            {
                let reason =
                    format!("{} invocations of the run that read this fragment alone died or failed; it is kept, unread", invocations - 1);
                set_aside.push(whole_fragment(f, reason));
            }
        }
    }
    let readable: Vec<&FragmentRow> = fragments.iter().filter(|f| !set_aside.iter().any(|q| q.fragment_key == f.key)).collect();
    if let Some(poison) = &config.poison
        && readable.iter().any(|f| &f.key == poison)
    {
        return Err(StepError::Interrupted { step: Step::ReadFragments.name() });
    }

    // Small compacted files to merge again, within what the fragments leave of the run's caps.
    let small_files: Vec<SmallFile> = if config.consolidation.fan_in < 2 {
        Vec::new()
    } else {
        run.step(&Step::ListSmallFiles.name(), &config.steps, || async {
            let params = [
                text(dataset.as_str()),
                SqlValue::Int(config.consolidation.small_file_bytes as i64),
                period.clone(),
                SqlValue::Int(SMALL_FILES_LISTED),
            ];
            sql.rows(index::SMALL_OUTPUTS, &params).await?.iter().map(small_file_row).collect()
        })
        .await?
    };
    let written = output_groups(readable.iter().copied());
    let room = Room {
        bytes: config.max_run_bytes.saturating_sub(readable.iter().map(|f| f.size).sum()),
        files: (config.max_fragments as usize).saturating_sub(readable.len()),
        new_outputs: config.max_outputs.saturating_sub(written.len()),
    };
    let merged_files = consolidate::choose(&small_files, &config.consolidation, &written, room);

    // Read and scan every input (one GET each), scanning each as it arrives while the next
    // GETs are in flight. Not checkpointed: a resumed run reads them again and, planning being
    // deterministic, plans the same outputs.
    let read: Result<(Vec<FragmentInput>, Scan), StepError> = run
        .ephemeral(&Step::ReadFragments.name(), &config.steps, || async {
            let sources = readable.iter().copied().map(Source::Fragment).chain(merged_files.iter().map(Source::Compacted));
            let dataset = &dataset;
            let mut reads = futures_util::stream::iter(sources)
                .map(|source| async move {
                    // A missing object reads as empty: its segments are quarantined, the rest go on.
                    let key = source.key();
                    let bytes = blobs.get(key).await.map_err(|e| read_error(key, e))?.unwrap_or_default();
                    Ok::<_, String>(source.input(dataset, bytes))
                })
                .buffered(CONCURRENT_READS);
            let (mut inputs, mut scan) = (Vec::with_capacity(readable.len() + merged_files.len()), Scan::default());
            while let Some(input) = reads.try_next().await? {
                scan.add_fragment(&input);
                inputs.push(input);
            }
            Ok((inputs, scan))
        })
        .await;
    if read.as_ref().is_err_and(|e| !matches!(e, StepError::Interrupted { .. })) {
        // The reads failed cleanly (R2 did not answer): that says nothing of the fragments.
        let _ = sql.rows(index::UNCOUNT_INVOCATION, &[text(&run_id)]).await;
    }
    let (inputs, scan) = read?;
    let plans = plan::plan(&scan, &config.engine);

    let keys: Vec<String> = plans.iter().enumerate().map(|(n, o)| output_key(&o.period, &o.dataset, &o.table, &run_id, n)).collect();
    run.step(&Step::StageOutputs.name(), &config.steps, || async {
        let statements = stage_outputs(&keys, &dataset, &run_id, clock.now_ms());
        // A run whose every fragment was set aside writes no output.
        if !statements.is_empty() {
            sql.batch(&statements).await?;
        }
        Ok(())
    })
    .await?;

    let mut outputs = Vec::with_capacity(plans.len());
    let mut quarantined = set_aside;
    quarantined.extend(scan.quarantined.iter().cloned());
    for step in merge_steps(plans.iter().map(|o| o.input_bytes), config.merge_step_bytes) {
        let name = Step::Merge { outputs: step.clone() }.name();
        let merged: Vec<Merged> = run
            .step(&name, &config.steps, || async {
                let mut merged = Vec::with_capacity(step.len());
                for (output, key) in plans[step.clone()].iter().zip(&keys[step.clone()]) {
                    merged.push(write_output(output, &scan, &inputs, &Target { key, sql, blobs }, &config.engine).await?);
                }
                Ok(merged)
            })
            .await?;
        for m in merged {
            outputs.push(m.output);
            quarantined.extend(m.quarantined);
        }
    }

    let consumed: Vec<String> = fragments.iter().map(|f| f.key.clone()).collect();
    // A merged file that did not scan is not in any output: it stays live.
    let retired: Vec<String> =
        merged_files.iter().map(|f| f.key.clone()).filter(|k| !scan.quarantined.iter().any(|q| &q.fragment_key == k)).collect();
    let committed: CommitOutcome = run
        .step(&Step::UpdateMetadata.name(), &config.steps, || async {
            let batch = commit_batch(&lease, &outputs, &consumed, &retired, &quarantined, &iso(clock.now_ms()));
            Ok(batch.outcome(&sql.batch(&batch.statements).await?))
        })
        .await?;
    let orphans = || outputs.iter().map(|o| o.key.clone()).collect();
    match committed {
        CommitOutcome::Committed => {}
        CommitOutcome::LostLease => return Ok(Outcome::LostLease { orphans: orphans() }),
        CommitOutcome::Superseded => return Ok(Outcome::Superseded { orphans: orphans() }),
    }
    if run.records().last().is_some_and(|r| !r.ran) {
        // Committed by an earlier invocation: this one only re-took the lease. Give it back.
        sql.rows(index::RELEASE_LEASE, &[text(dataset.as_str()), text(&run_id)]).await.map_err(|message| StepError::Failed {
            step: Step::UpdateMetadata.name(),
            attempts: 1,
            message,
        })?;
    }
    // Uploads that arrived during the run, or more than one run takes: ask for another run.
    // (If the index cannot say, what the listing showed decides.)
    let continue_after = sql
        .rows(index::PENDING_SUMMARY, &[text(dataset.as_str())])
        .await
        .map(|rows| rows.first().and_then(|r| r.get("fragments")).and_then(Value::as_u64).unwrap_or(0) > 0)
        .unwrap_or(continue_after);
    let mut step_ms = std::collections::BTreeMap::new();
    for r in run.records().iter().filter(|r| r.ran) {
        let name = Step::kind(&r.name);
        *step_ms.entry(name.to_owned()).or_insert(0) += r.duration_ms;
    }
    Ok(Outcome::Committed(Summary {
        step_ms,
        fragments: fragments.len() as u64,
        input_bytes: scan.bytes(),
        rows: outputs.iter().map(|o| o.rows).sum(),
        output_bytes: outputs.iter().map(|o| o.bytes).sum(),
        outputs,
        quarantined,
        consolidated: retired.len() as u64,
        consolidated_rows: scan.segments.iter().filter(|s| scan.fragment(s).compacted.is_some()).map(|s| s.rows as u64).sum(),
        continue_after,
    }))
}

/// The outputs of each merge step, given each output's input bytes: consecutive, packed
/// next-fit up to `budget` bytes, at least one per step.
fn merge_steps(input_bytes: impl IntoIterator<Item = u64>, budget: u64) -> Vec<Range<usize>> {
    let mut steps: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (n, size) in input_bytes.into_iter().enumerate() {
        match steps.last_mut() {
            Some(step) if bytes + size <= budget => {
                step.end = n + 1;
                bytes += size;
            }
            _ => {
                steps.push(n..n + 1);
                bytes = size;
            }
        }
    }
    steps
}

/// Small files listed per run at most (the oldest): what one run can consolidate is far less.
const SMALL_FILES_LISTED: i64 = 2000;

/// What a run reads: a pending fragment, or a small compacted file to merge again.
enum Source<'a> {
    Fragment(&'a FragmentRow),
    Compacted(&'a SmallFile),
}

impl Source<'_> {
    fn key(&self) -> &str {
        match self {
            Source::Fragment(f) => &f.key,
            Source::Compacted(f) => &f.key,
        }
    }

    fn input(&self, dataset: &DatasetId, bytes: Bytes) -> FragmentInput {
        match self {
            Source::Fragment(f) => FragmentInput {
                key: Arc::from(f.key.as_str()),
                dataset: dataset.clone(),
                period: f.period.clone(),
                offsets: f.offsets.clone(),
                bytes,
                compacted: None,
            },
            Source::Compacted(f) => {
                FragmentInput::compacted_file(&f.key, dataset.clone(), f.period.clone(), f.table.clone(), bytes, f.source_segments)
            }
        }
    }
}

/// How many of the listed fragments one run takes: within the fragment, byte and output caps,
/// and at least one. Isolated fragments come last in the listing and are taken alone.
fn run_share(listed: &[FragmentRow], config: &RunConfig) -> usize {
    if listed.first().is_some_and(|f| f.isolated) {
        return 1;
    }
    let mut bytes = 0u64;
    let mut outputs = std::collections::BTreeSet::new();
    let within = listed
        .iter()
        .take(config.max_fragments as usize)
        .take_while(|f| {
            bytes += f.size;
            outputs.extend(f.offsets.iter().map(|o| (&f.period, &o.table_name)));
            !f.isolated && bytes <= config.max_run_bytes && outputs.len() <= config.max_outputs
        })
        .count();
    within.max(listed.len().min(1))
}

/// The (period, table) outputs of these fragments' segments.
fn output_groups<'a>(fragments: impl Iterator<Item = &'a FragmentRow>) -> std::collections::BTreeSet<(PeriodTag, TableName)> {
    fragments.flat_map(|f| f.offsets.iter().map(|o| (f.period.clone(), o.table_name.clone()))).collect()
}

/// A whole fragment set aside unread, and why.
fn whole_fragment(f: &FragmentRow, error: String) -> Quarantined {
    Quarantined { fragment_key: f.key.clone(), table: "*".into(), error }
}

/// Counts this invocation of the run before it reads; answers the invocations so far.
async fn count_invocation<S: Sql>(sql: &S, run_id: &str, dataset: &DatasetId, now_ms: u64) -> Result<u64, StepError> {
    let failed = |message: String| StepError::Failed { step: Step::ReadFragments.name(), attempts: 1, message };
    let rows = sql.rows(index::COUNT_INVOCATION, &[text(run_id), text(dataset.as_str()), text(&iso(now_ms))]).await.map_err(failed)?;
    rows.first().and_then(|r| r.get("invocations")).and_then(Value::as_u64).ok_or_else(|| failed("the invocation was not counted".into()))
}

/// Marks the run's fragments isolated and gives its lease back, fenced by the lease: a run that
/// lost it changes nothing.
async fn isolate<S: Sql>(sql: &S, lease: &Lease, fragments: &[FragmentRow], now_ms: u64) -> Result<(), StepError> {
    let keys: Vec<String> = fragments.iter().map(|f| f.key.clone()).collect();
    let mut statements = crate::commit::keyed(
        "UPDATE battle_files SET isolated = 1 WHERE dataset_id = ?1 AND compacted_at IS NULL AND key IN ({keys}) \
         AND EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3)",
        &[text(lease.dataset.as_str()), text(&lease.run_id), SqlValue::Int(lease.epoch)],
        &keys,
    );
    statements.push(Statement {
        sql: "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL, updated_at = ?4 \
              WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3"
            .into(),
        params: vec![text(lease.dataset.as_str()), text(&lease.run_id), SqlValue::Int(lease.epoch), text(&iso(now_ms))],
    });
    sql.batch(&statements).await.map(|_| ()).map_err(|message| StepError::Failed { step: Step::ReadFragments.name(), attempts: 1, message })
}

/// The key, period and table columns every listed row has.
fn key_period_table(r: &Map<String, Value>) -> Result<(String, PeriodTag, TableName), String> {
    let s = |name| field(r, name).map(|v| v.as_str().unwrap_or_default().to_owned());
    let period = PeriodTag::parse(&s("period_tag")?).map_err(|e| e.to_string())?;
    let table = TableName::parse(&s("table_name")?).map_err(|e| e.to_string())?;
    Ok((s("key")?, period, table))
}

fn small_file_row(r: &Map<String, Value>) -> Result<SmallFile, String> {
    let (key, period, table) = key_period_table(r)?;
    let number = |name| field(r, name).map(|v| v.as_u64().unwrap_or(0));
    Ok(SmallFile { key, period, table, size: number("size")?, source_segments: number("source_segments")? })
}

fn read_error(key: &str, e: String) -> String {
    format!("reading {key}: {e}")
}

fn fragment_row(r: &Map<String, Value>) -> Result<FragmentRow, String> {
    let (key, period, table) = key_period_table(r)?;
    let offsets = field(r, "table_offsets")?.as_str().unwrap_or_default();
    Ok(FragmentRow {
        key,
        table,
        period,
        size: field(r, "size")?.as_u64().unwrap_or(0),
        offsets: serde_json::from_str(offsets).map_err(|e| e.to_string())?,
        isolated: field(r, "isolated")?.as_i64().unwrap_or(0) == 1,
    })
}

/// Records every output key of a run before any is written (a few statements, one batch). The
/// commit clears them; those left behind are orphans for [`crate::cleanup`].
fn stage_outputs(keys: &[String], dataset: &DatasetId, run_id: &str, now_ms: u64) -> Vec<Statement> {
    // Four parameters a row, within D1's 100 per statement.
    keys.chunks(24)
        .map(|chunk| {
            let rows: Vec<String> = (0..chunk.len()).map(|i| format!("(?{}, ?1, ?2, ?3)", i + 4)).collect();
            let mut params = vec![SqlValue::Text(dataset.to_string()), SqlValue::Text(run_id.to_owned()), SqlValue::Int(now_ms as i64)];
            params.extend(chunk.iter().map(|k| SqlValue::Text(k.clone())));
            Statement {
                sql: format!(
                    "INSERT INTO staged_outputs (key, dataset_id, run_id, staged_at) VALUES {} ON CONFLICT (key) DO NOTHING",
                    rows.join(", ")
                ),
                params,
            }
        })
        .collect()
}

/// Where one output goes: its staged key.
struct Target<'a, S, B> {
    key: &'a str,
    sql: &'a S,
    blobs: &'a B,
}

/// Parts on their way to one object: a multipart upload begun at the first full part (its id
/// recorded with the staged key, so that clean-up can abort it), or a single PUT when the whole
/// output is one part.
struct PartUpload<'t, 'a, S, B> {
    target: &'t Target<'a, S, B>,
    multipart: Option<(String, Vec<(u16, String)>)>,
}

impl<'t, 'a, S: Sql, B: Blobs> PartUpload<'t, 'a, S, B> {
    fn new(target: &'t Target<'a, S, B>) -> Self {
        Self { target, multipart: None }
    }

    async fn send(&mut self, part: Bytes) -> Result<(), String> {
        let Target { key, sql, blobs, .. } = *self.target;
        let (id, parts) = match &mut self.multipart {
            Some(m) => m,
            None => {
                let id = blobs.create_multipart(key).await?;
                sql.rows(index::STAGED_UPLOAD, &[SqlValue::Text(key.to_owned()), SqlValue::Text(id.clone())]).await?;
                self.multipart.insert((id, Vec::new()))
            }
        };
        let number = u16::try_from(parts.len() + 1).map_err(|_| "more than 65535 parts".to_string())?;
        let etag = blobs.upload_part(key, id, number, part).await?;
        parts.push((number, etag));
        Ok(())
    }

    async fn finish(&mut self, last: Vec<Bytes>) -> Result<(), String> {
        let Target { key, blobs, .. } = *self.target;
        match self.multipart.take() {
            None if last.len() <= 1 => blobs.put(key, last.into_iter().next().unwrap_or_default()).await,
            taken => {
                self.multipart = taken;
                for part in last {
                    self.send(part).await?;
                }
                let (id, parts) = self.multipart.take().expect("begun by send");
                blobs.complete_multipart(key, &id, parts).await
            }
        }
    }

    async fn abort(&mut self) {
        if let Some((id, _)) = self.multipart.take() {
            // Best effort: clean-up aborts what is left, from the staged upload id.
            let _ = self.target.blobs.abort_multipart(self.target.key, &id).await;
        }
    }
}

/// Merges one output and streams it to its target.
async fn write_output<S: Sql, B: Blobs>(
    output: &plan::OutputPlan,
    scan: &Scan,
    inputs: &[FragmentInput],
    target: &Target<'_, S, B>,
    config: &EngineConfig,
) -> Result<Merged, String> {
    let mut upload = PartUpload::new(target);
    let written = stream_output(output, scan, inputs, &mut upload, config).await;
    if written.is_err() {
        upload.abort().await;
    }
    let finished = written?;
    let quarantined = finished
        .quarantined
        .iter()
        .map(|(d, error)| Quarantined {
            fragment_key: scan.fragment(d).key.to_string(),
            table: scan.table(d).to_string(),
            error: error.clone(),
        })
        .collect();
    Ok(Merged {
        output: OutputRecord {
            key: target.key.to_owned(),
            period: output.period.clone(),
            table: output.table.clone(),
            schema_fingerprint: output.fingerprint.to_string(),
            rows: finished.rows,
            bytes: finished.bytes,
            source_segments: finished.source_segments,
        },
        quarantined,
    })
}

async fn stream_output<S: Sql, B: Blobs>(
    output: &plan::OutputPlan,
    scan: &Scan,
    inputs: &[FragmentInput],
    upload: &mut PartUpload<'_, '_, S, B>,
    config: &EngineConfig,
) -> Result<merge::Finished, String> {
    let mut merger = merge::Merger::new(output, config).map_err(|e| e.to_string())?;
    for &i in &output.inputs {
        let d = &scan.segments[i];
        let bytes = inputs[d.fragment as usize].bytes.slice(d.range());
        merger.push_input(scan, d, bytes).map_err(|e| e.to_string())?;
        loop {
            for part in merger.take_parts() {
                upload.send(part).await?;
            }
            if !merger.pump().map_err(|e| e.to_string())? {
                break;
            }
        }
    }
    let mut finished = merger.finish().map_err(|e| e.to_string())?;
    upload.finish(std::mem::take(&mut finished.parts)).await?;
    Ok(finished)
}

pub mod consolidate;
pub mod step;

pub use self::step::Step;
#[cfg(test)]
mod tests;
