//! What happens to each message: the compaction workflow for the compaction queue, the failure
//! record for the dead-letter queue; metrics in Supabase either way.

use fusou_core::compaction::consolidate::ConsolidationConfig;
use fusou_core::compaction::{self, Outcome, RunConfig};
use fusou_core::engine::EngineConfig;
use fusou_core::index;
use fusou_core::measure::{self, Busy};
use fusou_core::message::CompactionMessage;
use fusou_core::supabase::{self as rest, MetricStatus};
use fusou_core::workflow::{Backoff, RetryPolicy, StepConfig, StepError};
use fusou_edge::bindings;
use fusou_edge::d1;
use fusou_edge::log;
use fusou_edge::supabase::Supabase;
use serde_json::{Value, json};
use uuid::Uuid;
use worker::{Env, MessageBuilder};

use crate::faults;
use crate::ports::{D1, R2, SupabaseCatalog, WorkerClock};

/// How runs are bounded here: one run reads its fragments into memory, so the byte cap (32 MiB
/// by default) keeps a run inside 64 MiB of Wasm memory beside the engine's own buffers
/// (measured by scripts/bench-worker.sh: at most 48 MiB); a Worker has 128 MB. Merge steps of 8 MiB
/// of input bound what a crash costs to well under a second of merging.
pub fn run_config(env: &Env) -> RunConfig {
    let number = |name: &str, default: u64| env.var(name).ok().and_then(|v| v.to_string().parse().ok()).unwrap_or(default);
    RunConfig {
        engine: EngineConfig::default(),
        steps: StepConfig { retries: RetryPolicy { limit: 2, delay_ms: 1000, backoff: Backoff::Exponential }, timeout_ms: 120_000 },
        lease_ms: 15 * 60 * 1000,
        max_fragments: number("COMPACTION_MAX_FRAGMENTS", 500) as u32,
        max_run_bytes: number("COMPACTION_MAX_RUN_BYTES", 32 << 20),
        merge_step_bytes: number("COMPACTION_MERGE_STEP_BYTES", 8 << 20),
        consolidation: ConsolidationConfig {
            fan_in: number("COMPACTION_FAN_IN", 8) as usize,
            small_file_bytes: number("COMPACTION_SMALL_FILE_BYTES", 4 << 20),
        },
        crash_after: None,
    }
}

fn supabase(env: &Env) -> Option<Supabase> {
    let url = env.var("SUPABASE_URL").ok()?.to_string();
    let key = env.secret("SUPABASE_SERVICE_KEY").ok()?.to_string();
    Some(Supabase::new(url, key))
}

/// Creates or updates the message's metrics row; a failure is logged, never fatal.
async fn record(env: &Env, message: &CompactionMessage, metric_id: Uuid, status: MetricStatus, extra: Value) {
    let mut row = json!({
        "id": metric_id,
        "dataset_id": message.dataset_id,
        "priority": message.priority.as_str(),
        "table_name": message.table,
        "period_tag": message.period_tag,
        "status": status,
    });
    if let (Some(row), Some(extra)) = (row.as_object_mut(), extra.as_object()) {
        row.extend(extra.clone());
    }
    let fields = json!({ "queue": "fusou-compaction", "datasetId": message.dataset_id, "metricId": metric_id });
    match supabase(env) {
        None => log::error("supabase.misconfigured", fields),
        Some(s) => {
            if let Err(e) = s.execute(&rest::upsert_metric(&row)).await {
                let mut f = fields;
                f["error"] = json!(e.to_string());
                log::error("supabase.metric_failed", f);
            }
        }
    }
}

/// Runs the compaction a message asks for. `Err` means "retry the message".
pub async fn compact(env: &Env, message: &CompactionMessage) -> Result<(), String> {
    let metric_id = message.metric_id.unwrap_or_else(Uuid::new_v4);
    let run_id = message.run_id();
    let started = fusou_edge::now_utc();
    let fields = json!({ "queue": "fusou-compaction", "datasetId": message.dataset_id, "metricId": metric_id, "runId": run_id });
    record(env, message, metric_id, MetricStatus::Running, json!({ "run_id": run_id, "started_at": started })).await;

    let db = D1(env.d1(bindings::BATTLE_INDEX_DB).map_err(|e| e.to_string())?);
    let bucket = R2(env.bucket(bindings::BATTLE_DATA_BUCKET).map_err(|e| e.to_string())?);
    let catalog = SupabaseCatalog(supabase(env));
    let config = RunConfig { crash_after: faults::armed(env, &db.0, &message.dataset_id).await, ..run_config(env) };
    let run = compaction::compact(message, &run_id, &db, &bucket, &db, &catalog, &WorkerClock, &config);
    let (outcome, busy_ms) = Busy::new(run, &WorkerClock).await;
    let finished = fusou_edge::now_utc();
    let duration_ms = (finished - started).num_milliseconds();
    match outcome {
        Ok(Outcome::Committed(summary)) => {
            let ratio = if summary.output_bytes > 0 { summary.input_bytes as f64 / summary.output_bytes as f64 } else { 0.0 };
            record(env, message, metric_id, MetricStatus::Success, json!({
                "finished_at": finished,
                "step_durations_ms": step_durations(&summary, duration_ms),
                "input_bytes": summary.input_bytes,
                "output_bytes": summary.output_bytes,
                "input_rows": summary.rows,
                "output_rows": summary.rows,
                "input_fragments": summary.fragments,
                "consolidated_files": summary.consolidated,
                "consolidated_rows": summary.consolidated_rows,
                "output_files": summary.outputs.len(),
                "compression_ratio": ratio,
                "error_message": quarantine_note(&summary),
            }))
            .await;
            update_catalog(env, &db, message).await;
            let mut f = fields.clone();
            f["outputs"] = json!(summary.outputs.len());
            f["rows"] = json!(summary.rows);
            f["fragments"] = json!(summary.fragments);
            f["consolidated"] = json!(summary.consolidated);
            f["inputBytes"] = json!(summary.input_bytes);
            f["outputBytes"] = json!(summary.output_bytes);
            f["durationMs"] = json!(duration_ms);
            f["steps"] = step_durations(&summary, duration_ms);
            // The run's own execution, without its waits on R2, D1 and Supabase: a local figure
            // (see `Busy`; on Cloudflare the clock stands still while code runs).
            f["busyMs"] = json!(busy_ms);
            // Wasm memory never shrinks: its size now is the isolate's peak so far.
            f["wasmMemoryBytes"] = json!(measure::wasm_memory_bytes());
            if !summary.quarantined.is_empty() {
                f["quarantined"] = quarantine_note(&summary);
                log::warn("compaction.quarantined", f.clone());
            }
            log::info("compaction.committed", f);
            if summary.continue_after {
                continue_run(env, message).await;
            }
            Ok(())
        }
        Ok(Outcome::Skipped) => {
            record(env, message, metric_id, MetricStatus::Success, json!({
                "finished_at": finished, "output_files": 0,
                "error_message": "skipped: another run holds the dataset, or nothing is pending",
            }))
            .await;
            log::info("compaction.skipped", fields);
            Ok(())
        }
        Ok(Outcome::LostLease { orphans }) => {
            // Another run owns the dataset now and will commit its work; ours is orphaned.
            record(env, message, metric_id, MetricStatus::Failure, json!({
                "finished_at": finished, "error_step": "update-metadata", "error_message": "the run lost its lease; outputs orphaned",
            }))
            .await;
            let mut f = fields;
            f["orphans"] = json!(orphans);
            log::warn("compaction.lost_lease", f);
            Ok(())
        }
        Ok(Outcome::Superseded { orphans }) => {
            // Resumed from old checkpoints after another run had taken its fragments or merged
            // its files: it committed nothing. What is still pending gets a fresh run (a no-op
            // if nothing is).
            record(env, message, metric_id, MetricStatus::Failure, json!({
                "finished_at": finished, "error_step": "update-metadata",
                "error_message": "another run had compacted this run's inputs meanwhile; nothing committed, outputs orphaned",
            }))
            .await;
            let mut f = fields;
            f["orphans"] = json!(orphans);
            log::warn("compaction.superseded", f);
            continue_run(env, message).await;
            Ok(())
        }
        Err(e) => {
            if let StepError::Interrupted { step } = &e.0 {
                faults::fired(&db.0, &message.dataset_id, step).await;
            }
            record(env, message, metric_id, MetricStatus::Failure, json!({
                "finished_at": finished, "error_step": e.0.step(), "error_message": e.to_string(),
            }))
            .await;
            let mut f = fields;
            f["error"] = json!(e.to_string());
            log::error("compaction.failed", f);
            Err(e.to_string())
        }
    }
}

/// The quarantined segments, for the metrics row (they are also recorded in D1).
fn quarantine_note(summary: &compaction::Summary) -> Value {
    if summary.quarantined.is_empty() {
        return Value::Null;
    }
    let each: Vec<String> = summary.quarantined.iter().map(|q| format!("{} {}: {}", q.fragment_key, q.table, q.error)).collect();
    json!(format!("quarantined {} segment(s): {}", each.len(), each.join("; ")))
}

/// The dataset's summary in Supabase, from the index after a commit; a failure is logged.
async fn update_catalog(env: &Env, db: &D1, message: &CompactionMessage) {
    #[derive(serde::Deserialize)]
    struct Totals {
        fragments: u64,
        bytes: u64,
        pending: u64,
        compacted_files: u64,
        compacted_bytes: u64,
    }
    let dataset = &message.dataset_id;
    let totals: Option<Totals> = d1::first(&db.0, index::DATASET_TOTALS, &[dataset.as_str().into()]).await.ok().flatten();
    let (Some(t), Some(s)) = (totals, supabase(env)) else { return };
    let changes = json!({
        "compaction_needed": t.pending > 0,
        "compaction_in_progress": false,
        "file_count": t.fragments,
        "total_bytes": t.bytes,
        "compacted_file_count": t.compacted_files,
        "compacted_bytes": t.compacted_bytes,
        "last_compacted_at": fusou_edge::now_utc(),
    });
    if let Err(e) = s.execute(&rest::patch_dataset(dataset, &changes)).await {
        log::error("supabase.dataset_failed", json!({ "queue": "fusou-compaction", "datasetId": dataset, "error": e.to_string() }));
    }
}

fn step_durations(summary: &compaction::Summary, total_ms: i64) -> Value {
    let mut steps = json!(summary.step_ms);
    steps["total"] = json!(total_ms);
    steps
}

/// More fragments are pending than one run takes: the dataset gets another message at once.
async fn continue_run(env: &Env, message: &CompactionMessage) {
    let next = CompactionMessage { triggered_at: fusou_edge::now_utc(), metric_id: Some(Uuid::new_v4()), ..message.clone() };
    let sent = match env.queue(bindings::COMPACTION_QUEUE) {
        Ok(q) => q.send(MessageBuilder::new(&next).build()).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let fields = json!({ "queue": "fusou-compaction", "datasetId": next.dataset_id, "metricId": next.metric_id });
    match sent {
        Ok(()) => log::info("queue.sent", fields),
        // The dataset stays marked: the schedule continues it.
        Err(e) => log::error("queue.send_failed", json!({ "datasetId": next.dataset_id, "error": e })),
    }
}

/// A body that is not a `CompactionMessage`: it is acknowledged (no retry can fix it), and if it
/// names the metrics row its producer made, that row is marked failed.
pub async fn invalid(env: &Env, body: &Value, error: &str) {
    let Some(metric_id) = body.get("metricId").and_then(Value::as_str).and_then(|id| id.parse::<Uuid>().ok()) else { return };
    let Some(s) = supabase(env) else { return };
    let changes = json!({
        "status": MetricStatus::Failure,
        "finished_at": fusou_edge::now_utc(),
        "error_step": "decode-message",
        "error_message": error,
    });
    if let Err(e) = s.execute(&rest::patch_metric(metric_id, &changes)).await {
        log::error("supabase.metric_failed", json!({ "queue": "fusou-compaction", "metricId": metric_id, "error": e.to_string() }));
    }
}

/// A message that exhausted its retries: its metrics row says so, its lease is released, and the
/// dataset stays marked so the schedule tries again later.
pub async fn dead_letter(env: &Env, message: &CompactionMessage) {
    let metric_id = message.metric_id.unwrap_or_else(Uuid::new_v4);
    record(env, message, metric_id, MetricStatus::DlqFailure, json!({
        "finished_at": fusou_edge::now_utc(), "error_message": "dead-lettered after its retries",
    }))
    .await;
    if let Ok(db) = env.d1(bindings::BATTLE_INDEX_DB) {
        let dataset = &message.dataset_id;
        let run_id = message.run_id();
        if let Err(e) = d1::run(&db, index::RELEASE_LEASE, &[dataset.as_str().into(), run_id.as_str().into()]).await {
            log::error("lease.release_failed", json!({ "datasetId": dataset, "error": e.to_string() }));
        }
    }
    log::error("message.dead_lettered", json!({ "queue": "fusou-compaction-dlq", "datasetId": message.dataset_id, "metricId": metric_id }));
}
