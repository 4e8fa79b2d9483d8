//! The compaction workflow, defined on the step runner ([`fusou_core::workflow`]) and generic over
//! its ports, so that it runs natively over SQLite and memory exactly as it runs in the Worker
//! over D1 and R2.
//!
//! This crate owns what a run does and in which order, the clean-up and a run's metrics row. It
//! never encodes Parquet or Iceberg itself (the engine and the lake do) and knows no platform
//! type: the compaction Worker hands it the ports.
//!
//! What a run does is decided by [`plan`], as values; [`compact`] executes it, one [`Step`] at a
//! time (the run's id derived from the message, so a redelivery resumes it):
//! 1. `validate-dataset`: take the dataset's lease (a live lease of another run, or nothing to
//!    compact: the run ends as skipped, nothing lost), then make sure the catalog (Supabase)
//!    knows the dataset: an unreachable catalog fails the run before anything is written. Not
//!    checkpointed: a lease belongs to an invocation, so a resumed run takes it again (under a
//!    new epoch if it had been released).
//! 2. `list-fragments`, `list-small-files`: the pending fragments (narrowed by table and period
//!    when the message has them) and the dataset's small compacted files, checkpointed.
//!    The invocation is then counted, before a byte is read, and [`plan::inputs`] decides what
//!    the run takes, sets aside, consolidates, or isolates instead.
//! 3. `read-fragments`: one GET per input, each scanned as it arrives. Not checkpointed: a
//!    resumed run reads again and, planning being deterministic, plans the same outputs
//!    ([`plan::outputs`]: their keys and their merge steps).
//! 4. `stage-outputs`: every output key recorded in D1 before its first byte, so that an output no
//!    commit ever records is found and deleted by [`crate::cleanup`]. Then `merge-{a}-{b}`:
//!    consecutive outputs merged and written ([`write`]) in checkpointed steps of at most
//!    [`RunConfig::merge_step_bytes`] of input: a crash costs one step's merging. Naming a step
//!    by its outputs keeps a checkpoint from being read as other outputs when the grouping
//!    changes between deliveries.
//! 5. `update-metadata`: one fenced batch ([`crate::run_commit`]). If it changes nothing, the run had
//!    lost its lease: its outputs are orphans for clean-up and nothing is counted twice. The
//!    same holds when another run had compacted some of the listed fragments, or merged some of
//!    the chosen files, meanwhile (a run resumed from its checkpoints after its lease had
//!    expired): the run is superseded. When fragments are still pending afterwards (uploads that
//!    arrived during the run, or more than one run takes), the run asks for a continuation.
//!
//! A step that exhausts its retries fails the run: the lease is released and the fragments
//! stay pending; the caller records the failure and lets the message be retried.

// Not every public item of this crate is documented yet (row types and settings fields
// above all): the workspace denies `missing_docs`, and this crate opts out until it passes.
#![allow(missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use self::consolidate::{ConsolidationConfig, SmallFile};
use self::memory::MemoryBudget;
use self::plan::{Inputs, Listing, Outputs, ReadPlan, SMALL_FILES_LISTED};
use self::write::Merged;
use crate::run_commit::{CommitOutcome, Lease, OutputRecord, commit_batch};
use fusou_contract::ids::DatasetId;
use fusou_core::config::{ConfigError, Vars};
use fusou_core::index::{self, SqlValue, Statement, iso, keyed, text};
use fusou_core::message::CompactionMessage;
use fusou_core::workflow::{Backoff, RetryPolicy, Run, StepConfig, StepError};
use fusou_engine::EngineConfig;
use fusou_engine::segment::{FragmentInput, Quarantined, Scan};
use fusou_lake::commit::LakeConfig;
use fusou_ports::{Blobs, CheckpointStore, Clock, DatasetRegistry, PortError, Sql};

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
    /// The open tables (their committer and clean-up read it; a run only leaves its files
    /// pending for them).
    pub lake: LakeConfig,
    /// Outputs one run plans at most: the distinct (period, table) its fragments and the files
    /// it consolidates write. With the fragment and byte caps it bounds a run's subrequests
    /// ([`RunConfig::subrequests_at_most`]). At least one fragment is always taken; a fragment
    /// holds at most [`fusou_contract::fragment::MAX_SEGMENTS`] tables.
    pub max_outputs: usize,
    /// Invocations of a run that may begin reading and not finish before the run gives up on
    /// reading its fragments together: a run of several fragments then *isolates* them (later
    /// runs take each alone), a run of one quarantines it whole, unread. So a fragment that
    /// crashes every run that reads it (out of memory, out of CPU, a trap) costs only its own
    /// compaction, and its dataset is never wedged.
    pub invocations_before_isolation: u64,
    /// Fault injection for tests: the invocation stops after this step as if it had died there
    /// (see [`fusou_core::workflow::Run::crash_after`]). Always `None` in production.
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
            max_fragment_bytes: fusou_core::upload::MAX_BODY_BYTES_CEILING,
            merge_step_bytes: 8 << 20,
            consolidation: ConsolidationConfig::default(),
            lake: LakeConfig::default(),
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
    /// `COMPACTION_FAN_IN` and `COMPACTION_SMALL_FILE_BYTES`, over the open tables' `lake`. A
    /// value that is not a whole number, or a cap of 0, is an error, never a silent default.
    pub fn from_vars(vars: &Vars<'_>, lake: LakeConfig) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            max_fragments: u32::try_from(vars.positive("COMPACTION_MAX_FRAGMENTS")?).map_err(|_| ConfigError {
                name: "COMPACTION_MAX_FRAGMENTS",
                value: "too large".into(),
                expected: "at most 4294967295",
            })?,
            max_run_bytes: vars.positive("COMPACTION_MAX_RUN_BYTES")?,
            merge_step_bytes: vars.number("COMPACTION_MERGE_STEP_BYTES")?,
            max_outputs: vars.positive("COMPACTION_MAX_OUTPUTS")? as usize,
            consolidation: ConsolidationConfig {
                fan_in: vars.number("COMPACTION_FAN_IN")? as usize,
                small_file_bytes: vars.number("COMPACTION_SMALL_FILE_BYTES")?,
            },
            lake,
            ..d
        })
    }
}

/// Everything the compaction Worker reads besides the shared settings
/// ([`fusou_core::config::Shared`]), the open tables' settings parsed once for both the runs
/// and the clean-up.
#[derive(Debug, Clone)]
pub struct CompactionSettings {
    /// How a run is bounded.
    pub run: RunConfig,
    /// What the clean-up keeps.
    pub cleanup: cleanup::CleanupConfig,
    /// `COMPACTION_RETRY_DELAY_SECONDS`: the delay before a failed message is delivered again.
    pub retry_delay_secs: u32,
    /// `COMPACTION_CONCURRENT_RUNS`: runs of different datasets a queue batch runs side by
    /// side, within [`RunConfig::memory_bytes`] together.
    pub concurrent_runs: usize,
}

impl CompactionSettings {
    /// Reads [`RunConfig`], [`cleanup::CleanupConfig`], `COMPACTION_RETRY_DELAY_SECONDS` and
    /// `COMPACTION_CONCURRENT_RUNS`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let lake = LakeConfig::from_vars(vars)?;
        Ok(Self {
            run: RunConfig::from_vars(vars, lake.clone())?,
            cleanup: cleanup::CleanupConfig::from_vars(vars, lake)?,
            retry_delay_secs: vars.queue_delay_secs("COMPACTION_RETRY_DELAY_SECONDS")?,
            concurrent_runs: vars.positive("COMPACTION_CONCURRENT_RUNS")? as usize,
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
    /// checkpoint per merge step and the fixed calls. (The tables' commits are the committer's,
    /// in an invocation of their own.) Queue consumers get 10,000 per invocation (1,000 on
    /// older pages), shared by a batch's messages.
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

    /// The memory an invocation's runs share ([`memory::MemoryBudget`]): what the largest run
    /// holds, so that runs side by side never hold more than one run alone may. (A run reads at
    /// most `max_run_bytes`, or one fragment of up to `max_fragment_bytes`.)
    pub fn memory_bytes(&self) -> u64 {
        memory::MemoryBudget::need(self.max_run_bytes.max(self.max_fragment_bytes))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The run did nothing, for this reason (nothing is lost: see [`SkipReason`]).
    Skipped(SkipReason),
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

/// Why a run did nothing. In a burst of uploads to one dataset, one run does the work and the
/// others' requests are coalesced into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Another run holds the dataset's live lease: it takes what is pending, or asks for a run
    /// that will.
    LeaseHeld { by: String },
    /// Nothing is pending: an earlier run took this request's fragments.
    NothingPending,
    /// This run finished long ago and the clean-up forgot it (reaped): a late redelivery of its
    /// message may not run it again.
    Forgotten,
}

/// What a committed run did. Each figure has the name of its `processing_metrics` column
/// ([`crate::metrics::MetricsUpdate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Fragments consumed (read, or set aside unread).
    pub input_fragments: u64,
    /// Bytes and rows of every readable segment read, consolidated files included.
    pub input_bytes: u64,
    pub input_rows: u64,
    pub outputs: Vec<OutputRecord>,
    pub output_bytes: u64,
    /// `input_rows` less the rows of segments the merge left out.
    pub output_rows: u64,
    /// Segments set aside (unreadable), each naming its fragment and table; recorded in D1.
    pub quarantined: Vec<Quarantined>,
    /// Small compacted files merged into this run's outputs (and retired), and their rows
    /// (part of `input_rows`: `input_rows - consolidated_rows` are the fragments' rows).
    pub consolidated_files: u64,
    pub consolidated_rows: u64,
    /// Fragments are still pending after this run: the caller enqueues a continuation.
    pub continue_after: bool,
    /// Milliseconds spent in each step kind this invocation ran (merges summed as `merge`).
    pub step_ms: std::collections::BTreeMap<String, u64>,
    /// The open tables the run left files pending for (its outputs, its retirements): the
    /// tables' committer ([`fusou_lake::commit_pending`]) publishes them.
    pub tables: Vec<String>,
}

/// A run's failure: the step that failed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub StepError);

/// Runs the compaction workflow of `message` as run `run_id`.
pub async fn compact<S: Sql, B: Blobs, K: CheckpointStore, R: DatasetRegistry, C: Clock>(
    message: &CompactionMessage,
    run_id: &str,
    ports: &RunPorts<'_, S, B, K, R, C>,
    config: &RunConfig,
) -> Result<Outcome, RunError> {
    let RunPorts { sql, blobs, checkpoints, registry, clock, memory } = *ports;
    let dataset = &message.dataset_id;
    let mut run = Run::new(run_id, checkpoints, clock);
    if let Some(step) = &config.crash_after {
        run = run.crash_after(step);
    }
    let steps = Steps { sql, blobs, catalog: registry, clock, memory, config };
    let outcome = steps.steps(message, &mut run).await;
    if outcome.as_ref().is_err_and(|e| !matches!(e, StepError::Interrupted { .. })) {
        // Best effort: an expired lease frees itself anyway. (An interrupted invocation
        // stands for one that died, which releases nothing.)
        let _ = sql.run(index::RELEASE_LEASE, &[text(dataset.as_str()), text(run_id)]).await;
    }
    outcome.map_err(RunError)
}

/// What a run works over: the platform's ports (in the Worker D1, R2, D1 again for the
/// checkpoints, Supabase and its timers; in tests SQLite, memory and a fake clock).
pub struct RunPorts<'a, S, B, K, R, C> {
    /// The battle-data index.
    pub sql: &'a S,
    /// The battle-data bucket.
    pub blobs: &'a B,
    /// Where the run's steps are checkpointed.
    pub checkpoints: &'a K,
    /// The registry of datasets users see.
    pub registry: &'a R,
    /// Time.
    pub clock: &'a C,
    /// The memory this run shares with the runs beside it.
    pub memory: &'a MemoryBudget,
}

impl<S, B, K, R, C> Clone for RunPorts<'_, S, B, K, R, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, B, K, R, C> Copy for RunPorts<'_, S, B, K, R, C> {}

/// One run's ports and settings, for its steps.
struct Steps<'a, S, B, Ca, C> {
    sql: &'a S,
    blobs: &'a B,
    catalog: &'a Ca,
    clock: &'a C,
    memory: &'a MemoryBudget,
    config: &'a RunConfig,
}

impl<S: Sql, B: Blobs, Ca: DatasetRegistry, C: Clock> Steps<'_, S, B, Ca, C> {
    /// The run, step by step: lease → list → plan inputs → read → plan outputs → stage → merge →
    /// commit.
    async fn steps<K: CheckpointStore>(&self, message: &CompactionMessage, run: &mut Run<'_, K, C>) -> Result<Outcome, StepError> {
        let lease = match self.take_lease(&message.dataset_id, run).await? {
            Ok(lease) => lease,
            Err(reason) => return Ok(Outcome::Skipped(reason)),
        };
        let listing = self.list(message, run).await?;
        // Before a byte is read, this invocation is counted: one that dies reading (out of
        // memory, out of CPU, a trap) cannot count itself afterwards.
        let invocations = match run.completed(&Step::UpdateMetadata.name()) {
            true => None,
            false => Some(self.count_invocation(&lease).await?),
        };
        let inputs = match plan::inputs(&listing, invocations, self.config) {
            Inputs::Isolate(keys) => {
                self.isolate(&lease, &keys).await?;
                return Ok(Outcome::Isolated { fragments: keys.len() as u64 });
            }
            Inputs::Read(inputs) => inputs,
        };
        // Held until the run ends: its inputs and its outputs' buffers live until then.
        let _memory = self.memory.hold(inputs.bytes()).await;
        if let Some(poison) = &self.config.poison
            && inputs.to_read().any(|f| &f.key == poison)
        {
            return Err(StepError::Interrupted { step: Step::ReadFragments.name() });
        }
        let (read, scan) = self.read(&lease, &inputs, run).await?;
        let outputs = plan::outputs(&scan, &lease.run_id, self.config);
        self.stage(&lease, &outputs, run).await?;
        let (written, mut quarantined) = self.merge(&outputs, &scan, &read, run).await?;
        quarantined.splice(0..0, inputs.set_aside.iter().cloned().chain(scan.quarantined.iter().cloned()));
        let retired = inputs.retired(&scan);
        let committed = self.commit(&lease, &written, &inputs.consumed(), &retired, &quarantined, run).await?;
        let orphans = || written.iter().map(|o| o.key.clone()).collect();
        match committed {
            CommitOutcome::Committed => {}
            CommitOutcome::LostLease => return Ok(Outcome::LostLease { orphans: orphans() }),
            CommitOutcome::Superseded => return Ok(Outcome::Superseded { orphans: orphans() }),
        }
        let mut tables: Vec<String> = written.iter().map(|o| o.table.to_string()).chain(inputs.retired_tables(&scan)).collect();
        tables.sort();
        tables.dedup();
        if run.records().iter().any(|r| r.name == Step::UpdateMetadata.name() && !r.ran) {
            // Committed by an earlier invocation: this one only re-took the lease. Give it back.
            self.sql
                .run(index::RELEASE_LEASE, &[text(lease.dataset.as_str()), text(&lease.run_id)])
                .await
                .map_err(|e| StepError::failed_once(Step::UpdateMetadata.name(), e))?;
        }
        // Uploads that arrived during the run, or more than one run takes: ask for another run.
        // (If the index cannot say, what the listing showed decides.)
        let continue_after = self
            .sql
            .query::<index::PendingSummary>(index::PENDING_SUMMARY, &[text(lease.dataset.as_str())])
            .await
            .map(|rows| rows.first().is_some_and(|r| r.fragments > 0))
            .unwrap_or(inputs.continue_after);
        let mut step_ms = std::collections::BTreeMap::new();
        for r in run.records().iter().filter(|r| r.ran) {
            *step_ms.entry(Step::kind(&r.name).to_owned()).or_insert(0) += r.duration_ms;
        }
        Ok(Outcome::Committed(Summary {
            step_ms,
            input_fragments: inputs.taken.len() as u64,
            input_bytes: scan.bytes(),
            input_rows: scan.rows(),
            output_rows: written.iter().map(|o| o.rows).sum(),
            output_bytes: written.iter().map(|o| o.bytes).sum(),
            outputs: written,
            quarantined,
            consolidated_files: retired.len() as u64,
            consolidated_rows: scan.segments.iter().filter(|s| scan.fragment(s).compacted.is_some()).map(|s| s.rows as u64).sum(),
            continue_after,
            tables,
        }))
    }

    /// `validate-dataset`: the dataset's lease, if this run may have it, once the catalog knows
    /// the dataset; else why not.
    async fn take_lease<K: CheckpointStore>(
        &self,
        dataset: &DatasetId,
        run: &mut Run<'_, K, C>,
    ) -> Result<Result<Lease, SkipReason>, StepError> {
        let run_id = run.id().to_owned();
        let (sql, catalog, clock, config) = (self.sql, self.catalog, self.clock, self.config);
        let epoch: Result<i64, SkipReason> = run
            .ephemeral(&Step::ValidateDataset.name(), &config.steps, || async {
                let now = clock.now_ms() as i64;
                let params = [
                    text(dataset.as_str()),
                    text(&run_id),
                    SqlValue::Int(now),
                    SqlValue::Int(now + config.lease_ms as i64),
                    text(&iso(clock.now_ms())),
                ];
                let Some(taken) = sql.query::<index::LeaseTaken>(index::ACQUIRE_LEASE, &params).await?.pop() else {
                    let state: Option<index::DatasetState> = sql.query(index::DATASET_STATE, &[text(dataset.as_str())]).await?.pop();
                    return Ok(Err(match state {
                        Some(s) if s.compaction_needed == 0 => SkipReason::NothingPending,
                        Some(index::DatasetState { lease_run_id: Some(by), .. }) if by != run_id => SkipReason::LeaseHeld { by },
                        Some(_) => SkipReason::Forgotten,
                        None => SkipReason::NothingPending,
                    }));
                };
                // A retry takes the run's own lease again; a failed run releases it (`compact`).
                catalog.ensure_dataset(dataset.as_str(), &taken.owner_id).await.map_err(|e| e.context("the dataset registry"))?;
                Ok(Ok(taken.lease_epoch))
            })
            .await?;
        Ok(epoch.map(|epoch| Lease { dataset: dataset.clone(), run_id, epoch }))
    }

    /// `list-fragments` and `list-small-files`.
    async fn list<K: CheckpointStore>(&self, message: &CompactionMessage, run: &mut Run<'_, K, C>) -> Result<Listing, StepError> {
        let (sql, config) = (self.sql, self.config);
        let dataset = text(message.dataset_id.as_str());
        let table = message.table.as_ref().map_or(SqlValue::Null, |t| text(t.as_str()));
        let period = message.period_tag.as_ref().map_or(SqlValue::Null, |p| text(p.as_str()));
        let fragments: Vec<FragmentRow> = run
            .step(&Step::ListFragments.name(), &config.steps, || async {
                let params = [
                    dataset.clone(),
                    table.clone(),
                    period.clone(),
                    // One more than a run takes, to know whether more remain.
                    SqlValue::Int(config.max_fragments as i64 + 1),
                    SqlValue::Int(config.max_run_bytes.min(i64::MAX as u64) as i64),
                ];
                sql.query(index::PENDING_FRAGMENTS, &params).await
            })
            .await?;
        if config.consolidation.fan_in < 2 {
            return Ok(Listing { fragments, small_files: Vec::new() });
        }
        let small_files: Vec<SmallFile> = run
            .step(&Step::ListSmallFiles.name(), &config.steps, || async {
                let params = [
                    dataset.clone(),
                    SqlValue::from(config.consolidation.small_file_bytes),
                    period.clone(),
                    SqlValue::from(SMALL_FILES_LISTED),
                ];
                sql.query(index::SMALL_OUTPUTS, &params).await
            })
            .await?;
        Ok(Listing { fragments, small_files })
    }

    /// `read-fragments`: every input read (one GET each) and scanned as it arrives, while the
    /// next GETs are in flight. A clean failure (R2 did not answer) takes the invocation's count
    /// back: it says nothing of the fragments.
    async fn read<K: CheckpointStore>(
        &self,
        lease: &Lease,
        inputs: &ReadPlan,
        run: &mut Run<'_, K, C>,
    ) -> Result<(Vec<FragmentInput>, Scan), StepError> {
        let (blobs, dataset) = (self.blobs, &lease.dataset);
        let read = run
            .ephemeral(&Step::ReadFragments.name(), &self.config.steps, || async {
                let sources = inputs.to_read().map(Source::Fragment).chain(inputs.consolidate.iter().map(Source::Compacted));
                let mut reads = futures_util::stream::iter(sources)
                    .map(|source| async move {
                        // A missing object reads as empty: its segments are quarantined, the rest go on.
                        let key = source.key();
                        let bytes = blobs.get(key).await.map_err(|e| e.context(format!("reading {key}")))?.unwrap_or_default();
                        Ok::<_, PortError>(source.input(dataset, bytes))
                    })
                    .buffered(CONCURRENT_READS);
                let (mut read, mut scan) = (Vec::new(), Scan::default());
                while let Some(input) = reads.try_next().await? {
                    scan.add_fragment(&input);
                    read.push(input);
                }
                Ok((read, scan))
            })
            .await;
        if read.as_ref().is_err_and(|e| !matches!(e, StepError::Interrupted { .. })) {
            let _ = self.sql.run(index::UNCOUNT_INVOCATION, &[text(&lease.run_id), self.reads_alone()]).await;
        }
        read
    }

    /// `stage-outputs`: every output key recorded before its first byte.
    async fn stage<K: CheckpointStore>(&self, lease: &Lease, outputs: &Outputs, run: &mut Run<'_, K, C>) -> Result<(), StepError> {
        let keys = outputs.keys();
        run.step(&Step::StageOutputs.name(), &self.config.steps, || async {
            let statements = index::stage_outputs(&keys, &lease.dataset, &lease.run_id, self.clock.now_ms());
            // A run whose every fragment was set aside writes no output.
            if !statements.is_empty() {
                self.sql.batch(&statements).await?;
            }
            Ok(())
        })
        .await
    }

    /// `merge-{a}-{b}`: the outputs written, step by step; answers them and the segments their
    /// merges left out.
    async fn merge<K: CheckpointStore>(
        &self,
        outputs: &Outputs,
        scan: &Scan,
        read: &[FragmentInput],
        run: &mut Run<'_, K, C>,
    ) -> Result<(Vec<OutputRecord>, Vec<Quarantined>), StepError> {
        let (mut written, mut quarantined) = (Vec::with_capacity(outputs.outputs.len()), Vec::new());
        for step in &outputs.steps {
            let merged: Vec<Merged> = run
                .step(&Step::Merge { outputs: step.clone() }.name(), &self.config.steps, || async {
                    let mut merged = Vec::with_capacity(step.len());
                    for output in &outputs.outputs[step.clone()] {
                        merged.push(write::write(output, scan, read, self.sql, self.blobs, &self.config.engine).await?);
                    }
                    Ok(merged)
                })
                .await?;
            for m in merged {
                written.push(m.output);
                quarantined.extend(m.quarantined);
            }
        }
        Ok((written, quarantined))
    }

    /// `update-metadata`: the fenced commit.
    async fn commit<K: CheckpointStore>(
        &self,
        lease: &Lease,
        outputs: &[OutputRecord],
        consumed: &[String],
        retired: &[String],
        quarantined: &[Quarantined],
        run: &mut Run<'_, K, C>,
    ) -> Result<CommitOutcome, StepError> {
        run.step(&Step::UpdateMetadata.name(), &self.config.steps, || async {
            let batch = commit_batch(lease, outputs, consumed, retired, quarantined, &iso(self.clock.now_ms()));
            Ok(batch.outcome(&self.sql.batch(&batch.statements).await?))
        })
        .await
    }

    /// 1 if this invocation's runs read alone, so that one that dies died of its own bytes (see
    /// [`memory`]); 0 if they read side by side.
    fn reads_alone(&self) -> SqlValue {
        SqlValue::Int(self.memory.reads_alone().into())
    }

    /// Counts this invocation of the run before it reads; answers the invocations so far that
    /// read alone.
    async fn count_invocation(&self, lease: &Lease) -> Result<u64, StepError> {
        let failed = |e: PortError| StepError::failed_once(Step::ReadFragments.name(), e);
        let params = [text(&lease.run_id), text(lease.dataset.as_str()), text(&iso(self.clock.now_ms())), self.reads_alone()];
        let rows: Vec<index::Invocations> = self.sql.query(index::COUNT_INVOCATION, &params).await.map_err(failed)?;
        rows.first().map(|r| r.invocations).ok_or_else(|| failed(PortError::new("the invocation was not counted")))
    }

    /// Marks the fragments isolated and gives the lease back, fenced by the lease: a run that
    /// lost it changes nothing.
    async fn isolate(&self, lease: &Lease, keys: &[String]) -> Result<(), StepError> {
        let fence = [text(lease.dataset.as_str()), text(&lease.run_id), SqlValue::Int(lease.epoch)];
        let mut statements = keyed(index::ISOLATE_FRAGMENTS, &fence, keys);
        statements.push(Statement::new(index::RETURN_LEASE, [&fence[..], &[text(&iso(self.clock.now_ms()))]].concat()));
        self.sql.batch(&statements).await.map(|_| ()).map_err(|e| StepError::failed_once(Step::ReadFragments.name(), e))
    }
}

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

pub mod cleanup;
pub mod consolidate;
pub mod memory;
pub mod metrics;
pub mod plan;
pub mod rollup;
pub mod run_commit;
pub mod step;
mod write;

pub use self::plan::FragmentRow;
pub use self::step::Step;
#[cfg(test)]
mod tests;
