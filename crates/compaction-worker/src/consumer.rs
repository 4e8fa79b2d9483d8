//! What happens to each message: the compaction workflow for the compaction queue, the failure
//! record for the dead-letter queue; metrics in Supabase either way.

use fusou_compaction::metrics::{MetricsRow, MetricsUpdate};
use fusou_compaction::{Outcome, RunConfig, RunPorts};
use fusou_core::index;
use fusou_core::measure::{self, Busy};
use fusou_core::message::CompactionMessage;
use fusou_core::supabase as rest;
use fusou_core::workflow::StepError;
use fusou_edge::log;
use fusou_edge::remote::Service;
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;
use worker::MessageBuilder;

use crate::context::Ctx;
use crate::faults;
use fusou_compaction::memory::MemoryBudget;
use fusou_edge::WorkerClock;
use fusou_ports::meter::{Meter, Metered};
use std::rc::Rc;

use crate::ports::{D1, R2, SupabaseRegistry};

/// Creates or updates the message's metrics row; a failure is logged, never fatal.
async fn record(ctx: &Ctx, message: &CompactionMessage, metric_id: Uuid, update: &MetricsUpdate) {
    if let Err(e) = ctx.supabase.execute(&rest::upsert_metric(&MetricsRow::new(message, metric_id, update))).await {
        log::error(
            "supabase.metric_failed",
            json!({ "queue": "fusou-compaction", "datasetId": message.dataset_id, "metricId": metric_id, "error": e.to_string() }),
        );
    }
}

/// Runs the compaction a message asks for, within `memory` (shared with the runs beside it):
/// `Ok(true)` when the run left files pending for the open tables (their committer is to be
/// told). `Err` means "retry the message".
pub(crate) async fn compact(ctx: &Ctx, message: &CompactionMessage, memory: &MemoryBudget) -> Result<bool, String> {
    let metric_id = message.metric_id.unwrap_or_else(Uuid::new_v4);
    let run_id = message.run_id();
    let started = fusou_edge::now_utc();
    let mut fields = json!({ "queue": "fusou-compaction", "datasetId": message.dataset_id, "metricId": metric_id, "runId": run_id });
    record(ctx, message, metric_id, &MetricsUpdate::running(&run_id, started)).await;

    // The run's own meter, counted into the invocation's too: the batch's runs take turns.
    let meter = Rc::new(Meter::within(ctx.meter.clone()));
    let db = D1(ctx.db_counted_in(meter.clone()).map_err(|e| e.to_string())?);
    let bucket = R2 { bucket: ctx.bucket().map_err(|e| e.to_string())?, remote: ctx.remote };
    let bucket = Metered::new(&bucket, &meter);
    let registry = SupabaseRegistry(&ctx.supabase);
    let armed = faults::armed(ctx, &db.0, &message.dataset_id).await;
    let config = RunConfig { crash_after: armed.crash_after, poison: armed.poison, ..ctx.run.clone() };
    let ports = RunPorts { sql: &db, blobs: &bucket, checkpoints: &db, registry: &registry, clock: &WorkerClock, memory };
    let run = fusou_compaction::compact(message, &run_id, &ports, &config);
    let (outcome, busy_ms) = Busy::new(run, &WorkerClock).await;
    let finished = fusou_edge::now_utc();
    let duration_ms = (finished - started).num_milliseconds().max(0) as u64;
    // The run's own execution, without its waits on R2, D1 and Supabase (see `Busy`), and the
    // Wasm memory, which never shrinks: its size now is the isolate's peak so far.
    let metrics = MetricsUpdate {
        worker_busy_ms: Some(busy_ms),
        wasm_memory_bytes: Some(measure::wasm_memory_bytes()),
        operations: Some(meter.operations()),
        ..MetricsUpdate::finished(&outcome, finished, duration_ms)
    };
    record(ctx, message, metric_id, &metrics).await;
    fields["metrics"] = json!(metrics);
    fields["durationMs"] = json!(duration_ms);
    match outcome {
        Ok(Outcome::Committed(summary)) => {
            update_catalog(ctx, &db, message).await;
            if !summary.quarantined.is_empty() {
                log::warn("compaction.quarantined", fields.clone());
            }
            log::info("compaction.committed", fields);
            if summary.continue_after {
                continue_run(ctx, message).await;
            }
            Ok(!summary.tables.is_empty())
        }
        Ok(Outcome::Skipped(_)) => {
            log::info("compaction.skipped", fields);
            Ok(false)
        }
        Ok(Outcome::LostLease { orphans }) => {
            // Another run owns the dataset now and will commit its work; ours is orphaned.
            fields["orphans"] = json!(orphans);
            log::warn("compaction.lost_lease", fields);
            Ok(false)
        }
        Ok(Outcome::Superseded { orphans }) => {
            // Resumed from old checkpoints after another run had taken its fragments or merged
            // its files: it committed nothing. What is still pending gets a fresh run (a no-op
            // if nothing is).
            fields["orphans"] = json!(orphans);
            log::warn("compaction.superseded", fields);
            continue_run(ctx, message).await;
            Ok(false)
        }
        Ok(Outcome::Isolated { .. }) => {
            // Its fragments are taken one at a time from now on: a continuation starts at once.
            log::warn("compaction.isolated", fields);
            continue_run(ctx, message).await;
            Ok(false)
        }
        Err(e) => {
            if let StepError::Interrupted { step } = &e.0 {
                faults::fired(&db.0, &message.dataset_id, step).await;
            }
            fields["error"] = json!(e.to_string());
            log::error("compaction.failed", fields);
            Err(e.to_string())
        }
    }
}

/// Which of `runs` an earlier invocation began reading for and never finished, with how many
/// of their invocations read alone (see `index::INTERRUPTED_RUNS`). A failure to ask is logged
/// and answers none: the order is a precaution, never a reason to hold a message.
pub(crate) async fn interrupted_runs(ctx: &Ctx, runs: &[String]) -> HashMap<String, u64> {
    let ids = serde_json::to_string(runs).unwrap_or_default();
    let found = match ctx.db() {
        Ok(db) => db.all::<index::Interrupted>(index::INTERRUPTED_RUNS, &[ids.into()]).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match found {
        Ok(rows) => rows.into_iter().map(|r| (r.run_id, r.invocations)).collect(),
        Err(e) => {
            log::error("consumer.interrupted_runs_failed", json!({ "error": e }));
            Default::default()
        }
    }
}

/// The dataset's summary in Supabase, from the index after a commit; a failure is logged.
async fn update_catalog(ctx: &Ctx, db: &D1, message: &CompactionMessage) {
    let dataset = &message.dataset_id;
    let Ok(Some(t)) = db.0.first::<index::DatasetTotals>(index::DATASET_TOTALS, &[dataset.as_str().into()]).await else { return };
    let changes = json!({
        "compaction_needed": t.pending > 0,
        "compaction_in_progress": false,
        "file_count": t.fragments,
        "total_bytes": t.bytes,
        "compacted_file_count": t.compacted_files,
        "compacted_bytes": t.compacted_bytes,
        "last_compacted_at": fusou_edge::now_utc(),
    });
    if let Err(e) = ctx.supabase.execute(&rest::patch_dataset(dataset, &changes)).await {
        log::error("supabase.dataset_failed", json!({ "queue": "fusou-compaction", "datasetId": dataset, "error": e.to_string() }));
    }
}

/// More fragments are pending than one run takes: the dataset gets another message at once.
async fn continue_run(ctx: &Ctx, message: &CompactionMessage) {
    let next = CompactionMessage { triggered_at: fusou_edge::now_utc(), metric_id: Some(Uuid::new_v4()), ..message.clone() };
    let sent = match ctx.queue() {
        Ok(q) => {
            ctx.remote.call(Service::Queue, "the continuation", q.send(MessageBuilder::new(&next).build())).await.map_err(|e| e.to_string())
        }
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
pub(crate) async fn invalid(ctx: &Ctx, body: &Value, error: &str) {
    let Some(metric_id) = body.get("metricId").and_then(Value::as_str).and_then(|id| id.parse::<Uuid>().ok()) else { return };
    if let Err(e) = ctx.supabase.execute(&rest::patch_metric(metric_id, &MetricsUpdate::invalid(error, fusou_edge::now_utc()))).await {
        log::error("supabase.metric_failed", json!({ "queue": "fusou-compaction", "metricId": metric_id, "error": e.to_string() }));
    }
}

/// A message that exhausted its retries: its metrics row says so, its lease is released, and the
/// dataset stays marked so the schedule tries again later.
pub(crate) async fn dead_letter(ctx: &Ctx, message: &CompactionMessage) {
    let metric_id = message.metric_id.unwrap_or_else(Uuid::new_v4);
    record(ctx, message, metric_id, &MetricsUpdate::dead_lettered(fusou_edge::now_utc())).await;
    let dataset = &message.dataset_id;
    let run_id = message.run_id();
    let released = match ctx.db() {
        Ok(db) => {
            db.run(index::RELEASE_LEASE, &[dataset.as_str().into(), run_id.as_str().into()]).await.map(|_| ()).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = released {
        log::error("lease.release_failed", json!({ "datasetId": dataset, "error": e }));
    }
    log::error("message.dead_lettered", json!({ "queue": "fusou-compaction-dlq", "datasetId": message.dataset_id, "metricId": metric_id }));
}
