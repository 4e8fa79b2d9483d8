//! The compaction workflow, defined on the step runner ([`crate::workflow`]) and generic over
//! its ports, so that it runs natively over SQLite and memory exactly as it runs in the Worker
//! over D1 and R2.
//!
//! Steps of one run (its id derived from the message, so a redelivery resumes it):
//! 1. `validate-dataset`: take the dataset's lease (a live lease of another run, or nothing to
//!    compact: the run ends as skipped, nothing lost). Not checkpointed: a lease belongs to an
//!    invocation, so a resumed run takes it again (under a new epoch if it had been released).
//! 2. `list-fragments`: the pending fragments, narrowed by table and period when the message
//!    has them, at most [`RunConfig::max_fragments`] and [`RunConfig::max_run_bytes`] per run
//!    (more left: `continue_after`).
//! 3. The fragments are read (one GET each), scanned and planned; planning is deterministic, so a
//!    resumed run plans the same outputs. Each output is its own step, `merge-{n}`, written to
//!    `battle_compacted/{period}/{dataset}/{table}/{run}-{n}.parquet`: a crash costs one output.
//! 4. `update-metadata`: one fenced batch ([`crate::commit`]). If it changes nothing, the run had
//!    lost its lease: its outputs are orphans for clean-up and nothing is counted twice.
//!
//! A step that exhausts its retries fails the run: the lease is released and the fragments
//! stay pending; the caller records the failure and lets the message be retried.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::commit::{Lease, OutputRecord, SqlValue, Statement, commit_batch};
use crate::engine::segment::{FragmentInput, Scan};
use crate::engine::{EngineConfig, merge, plan};
use crate::fragment::TableOffset;
use crate::ids::{DatasetId, PeriodTag, TableName};
use crate::index;
use crate::message::CompactionMessage;
use crate::workflow::{Clock, CheckpointStore, Run, StepConfig, StepError};

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
}

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
}

/// A pending fragment as `list-fragments` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentRow {
    pub key: String,
    pub table: TableName,
    pub period: PeriodTag,
    pub size: u64,
    pub offsets: Vec<TableOffset>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Another run holds the dataset's lease, or the dataset needs no compaction.
    Skipped,
    Committed(Summary),
    /// The run had lost its lease by the time it committed: its outputs are orphans.
    LostLease { orphans: Vec<String> },
}

/// What a committed run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub fragments: u64,
    pub input_bytes: u64,
    pub rows: u64,
    pub outputs: Vec<OutputRecord>,
    pub output_bytes: u64,
    pub quarantined: Vec<String>,
    /// More pending fragments than one run takes: the caller enqueues a continuation.
    pub continue_after: bool,
    /// Milliseconds spent in each step this invocation ran (merges summed as `merge`).
    pub step_ms: std::collections::BTreeMap<String, u64>,
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
pub async fn compact<S: Sql, B: Blobs, K: CheckpointStore, C: Clock>(
    message: &CompactionMessage,
    run_id: &str,
    sql: &S,
    blobs: &B,
    checkpoints: &K,
    clock: &C,
    config: &RunConfig,
) -> Result<Outcome, RunError> {
    let dataset = &message.dataset_id;
    let mut run = Run::new(run_id, checkpoints, clock);
    let outcome = steps(message, &mut run, sql, blobs, clock, config).await;
    if outcome.is_err() {
        // Best effort: an expired lease frees itself anyway.
        let _ = sql.rows(index::RELEASE_LEASE, &[SqlValue::Text(dataset.to_string()), SqlValue::Text(run_id.into())]).await;
    }
    outcome.map_err(RunError)
}

async fn steps<S: Sql, B: Blobs, K: CheckpointStore, C: Clock>(
    message: &CompactionMessage,
    run: &mut Run<'_, K, C>,
    sql: &S,
    blobs: &B,
    clock: &C,
    config: &RunConfig,
) -> Result<Outcome, StepError> {
    let dataset = message.dataset_id.clone();
    let run_id = run.id().to_owned();
    let text = |s: &str| SqlValue::Text(s.to_owned());

    let epoch: Option<i64> = run
        .ephemeral("validate-dataset", &config.steps, || async {
            let now = clock.now_ms() as i64;
            let params = [
                text(dataset.as_str()),
                text(&run_id),
                SqlValue::Int(now),
                SqlValue::Int(now + config.lease_ms as i64),
                text(&iso(clock.now_ms())),
            ];
            let rows = sql.rows(index::ACQUIRE_LEASE, &params).await?;
            rows.first().map(|r| field(r, "lease_epoch").map(|v| v.as_i64().unwrap_or(0))).transpose()
        })
        .await?;
    let Some(epoch) = epoch else { return Ok(Outcome::Skipped) };
    let lease = Lease { dataset: dataset.clone(), run_id: run_id.clone(), epoch };

    let fragments: Vec<FragmentRow> = run
        .step("list-fragments", &config.steps, || async {
            let optional = |v: Option<&str>| v.map_or(SqlValue::Null, text);
            let params = [
                text(dataset.as_str()),
                optional(message.table.as_ref().map(TableName::as_str)),
                optional(message.period_tag.as_ref().map(PeriodTag::as_str)),
                // One more than a run takes, to know whether more remain.
                SqlValue::Int(config.max_fragments as i64 + 1),
            ];
            sql.rows(index::PENDING_FRAGMENTS, &params).await?.iter().map(fragment_row).collect()
        })
        .await?;
    let take = run_share(&fragments, config);
    let continue_after = fragments.len() > take;
    let fragments = &fragments[..take];

    // Read and scan every fragment (one GET each). Not checkpointed: a resumed run reads them
    // again and, planning being deterministic, plans the same outputs.
    let inputs: Vec<FragmentInput> = run
        .ephemeral("read-fragments", &config.steps, || async {
            let mut inputs = Vec::with_capacity(fragments.len());
            for f in fragments {
                // A missing object reads as empty: its segments are quarantined, the rest go on.
                let bytes = blobs.get(&f.key).await.map_err(|e| read_error(&f.key, e))?.unwrap_or_default();
                inputs.push(FragmentInput {
                    key: Arc::from(f.key.as_str()),
                    dataset: dataset.clone(),
                    period: f.period.clone(),
                    offsets: f.offsets.clone(),
                    bytes,
                });
            }
            Ok(inputs)
        })
        .await?;
    let mut scan = Scan::default();
    inputs.iter().for_each(|f| scan.add_fragment(f));
    let plans = plan::plan(&scan, &config.engine);

    let mut outputs = Vec::with_capacity(plans.len());
    for (n, output) in plans.iter().enumerate() {
        let key = output_key(&output.period, &output.dataset, &output.table, &run_id, n);
        let record: OutputRecord = run
            .step(&format!("merge-{n}"), &config.steps, || write_output(output, &scan, &inputs, &key, blobs, &config.engine))
            .await?;
        outputs.push(record);
    }

    let consumed: Vec<String> = fragments.iter().map(|f| f.key.clone()).collect();
    let committed: bool = run
        .step("update-metadata", &config.steps, || async {
            let changes = sql.batch(&commit_batch(&lease, &outputs, &consumed, &iso(clock.now_ms()))).await?;
            Ok(changes.last() == Some(&1))
        })
        .await?;
    if !committed {
        return Ok(Outcome::LostLease { orphans: outputs.into_iter().map(|o| o.key).collect() });
    }
    if run.records().last().is_some_and(|r| !r.ran) {
        // Committed by an earlier invocation: this one only re-took the lease. Give it back.
        sql.rows(index::RELEASE_LEASE, &[text(dataset.as_str()), text(&run_id)])
            .await
            .map_err(|message| StepError::Failed { step: "update-metadata".into(), attempts: 1, message })?;
    }
    let mut step_ms = std::collections::BTreeMap::new();
    for r in run.records().iter().filter(|r| r.ran) {
        let name = if r.name.starts_with("merge-") { "merge" } else { r.name.as_str() };
        *step_ms.entry(name.to_owned()).or_insert(0) += r.duration_ms;
    }
    Ok(Outcome::Committed(Summary {
        step_ms,
        fragments: fragments.len() as u64,
        input_bytes: scan.bytes(),
        rows: outputs.iter().map(|o| o.rows).sum(),
        output_bytes: outputs.iter().map(|o| o.bytes).sum(),
        outputs,
        quarantined: scan.quarantined.iter().map(|q| format!("{} {}: {}", q.fragment_key, q.table, q.error)).collect(),
        continue_after,
    }))
}

/// How many of the listed fragments one run takes: within both caps, and at least one.
fn run_share(listed: &[FragmentRow], config: &RunConfig) -> usize {
    let mut bytes = 0u64;
    let within = listed
        .iter()
        .take(config.max_fragments as usize)
        .take_while(|f| {
            bytes += f.size;
            bytes <= config.max_run_bytes
        })
        .count();
    within.max(listed.len().min(1))
}

/// ISO-8601 UTC text of a Unix-ms instant, as the index stores times.
fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn read_error(key: &str, e: String) -> String {
    format!("reading {key}: {e}")
}

fn fragment_row(r: &Map<String, Value>) -> Result<FragmentRow, String> {
    let s = |name| field(r, name).map(|v| v.as_str().unwrap_or_default().to_owned());
    Ok(FragmentRow {
        key: s("key")?,
        table: TableName::parse(&s("table_name")?).map_err(|e| e.to_string())?,
        period: PeriodTag::parse(&s("period_tag")?).map_err(|e| e.to_string())?,
        size: field(r, "size")?.as_u64().unwrap_or(0),
        offsets: serde_json::from_str(&s("table_offsets")?).map_err(|e| e.to_string())?,
    })
}

/// Parts on their way to one object: a multipart upload begun at the first full part, or a
/// single PUT when the whole output is one part.
struct PartUpload<'a> {
    key: &'a str,
    multipart: Option<(String, Vec<(u16, String)>)>,
}

impl<'a> PartUpload<'a> {
    fn new(key: &'a str) -> Self {
        Self { key, multipart: None }
    }

    async fn send<B: Blobs>(&mut self, blobs: &B, part: Bytes) -> Result<(), String> {
        let (id, parts) = match &mut self.multipart {
            Some(m) => m,
            None => self.multipart.insert((blobs.create_multipart(self.key).await?, Vec::new())),
        };
        let number = u16::try_from(parts.len() + 1).map_err(|_| "more than 65535 parts".to_string())?;
        let etag = blobs.upload_part(self.key, id, number, part).await?;
        parts.push((number, etag));
        Ok(())
    }

    async fn finish<B: Blobs>(&mut self, blobs: &B, last: Vec<Bytes>) -> Result<(), String> {
        match self.multipart.take() {
            None if last.len() <= 1 => blobs.put(self.key, last.into_iter().next().unwrap_or_default()).await,
            taken => {
                self.multipart = taken;
                for part in last {
                    self.send(blobs, part).await?;
                }
                let (id, parts) = self.multipart.take().expect("begun by send");
                blobs.complete_multipart(self.key, &id, parts).await
            }
        }
    }

    async fn abort<B: Blobs>(&mut self, blobs: &B) {
        if let Some((id, _)) = self.multipart.take() {
            // Unfinished uploads are also aborted by R2 after 7 days, and by the cron clean-up.
            let _ = blobs.abort_multipart(self.key, &id).await;
        }
    }
}

/// Merges one output and streams it to `key`.
async fn write_output<B: Blobs>(
    output: &plan::OutputPlan,
    scan: &Scan,
    inputs: &[FragmentInput],
    key: &str,
    blobs: &B,
    config: &EngineConfig,
) -> Result<OutputRecord, String> {
    let mut upload = PartUpload::new(key);
    let written = stream_output(output, scan, inputs, &mut upload, blobs, config).await;
    if written.is_err() {
        upload.abort(blobs).await;
    }
    let finished = written?;
    Ok(OutputRecord {
        key: key.to_owned(),
        period: output.period.clone(),
        table: output.table.clone(),
        schema_fingerprint: output.fingerprint.to_string(),
        rows: finished.rows,
        bytes: finished.bytes,
        source_segments: output.inputs.len() as u64,
    })
}

async fn stream_output<B: Blobs>(
    output: &plan::OutputPlan,
    scan: &Scan,
    inputs: &[FragmentInput],
    upload: &mut PartUpload<'_>,
    blobs: &B,
    config: &EngineConfig,
) -> Result<merge::Finished, String> {
    let mut merger = merge::Merger::new(output, config).map_err(|e| e.to_string())?;
    for &i in &output.inputs {
        let d = &scan.segments[i];
        let bytes = inputs[d.fragment as usize].bytes.slice(d.range());
        merger.push(d, &scan.parquet_schemas[d.schema as usize], bytes).map_err(|e| e.to_string())?;
        for part in merger.take_parts() {
            upload.send(blobs, part).await?;
        }
    }
    let mut finished = merger.finish().map_err(|e| e.to_string())?;
    upload.finish(blobs, std::mem::take(&mut finished.parts)).await?;
    Ok(finished)
}

#[cfg(test)]
mod tests;
