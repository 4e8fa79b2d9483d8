//! What happens to each message: the compaction workflow for the compaction queue, the failure
//! record for the dead-letter queue; metrics in Supabase either way.

use fusou_core::compaction::{self, Outcome, RunConfig, Step};
use fusou_core::index;
use fusou_core::measure::{self, Busy};
use fusou_core::message::CompactionMessage;
use fusou_core::supabase::{self as rest, MetricStatus};
use fusou_core::workflow::StepError;
use fusou_edge::log;
use fusou_edge::remote::Service;
use serde_json::{Value, json};
use uuid::Uuid;
use worker::MessageBuilder;

use crate::context::Ctx;
use crate::faults;
use crate::ports::{D1, R2, SupabaseCatalog, WorkerClock};

/// Creates or updates the message's metrics row; a failure is logged, never fatal.
async fn record(ctx: &Ctx, message: &CompactionMessage, metric_id: Uuid, status: MetricStatus, extra: Value) {
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
    if let Err(e) = ctx.supabase.execute(&rest::upsert_metric(&row)).await {
        log::error(
            "supabase.metric_failed",
            json!({ "queue": "fusou-compaction", "datasetId": message.dataset_id, "metricId": metric_id, "error": e.to_string() }),
        );
    }
}

/// Runs the compaction a message asks for. `Err` means "retry the message".
pub async fn compact(ctx: &Ctx, message: &CompactionMessage) -> Result<(), String> {
    let metric_id = message.metric_id.unwrap_or_else(Uuid::new_v4);
    let run_id = message.run_id();
    let started = fusou_edge::now_utc();
    let fields = json!({ "queue": "fusou-compaction", "datasetId": message.dataset_id, "metricId": metric_id, "runId": run_id });
    record(ctx, message, metric_id, MetricStatus::Running, json!({ "run_id": run_id, "started_at": started })).await;

    let db = D1(ctx.db().map_err(|e| e.to_string())?);
    let bucket = R2 { bucket: ctx.bucket().map_err(|e| e.to_string())?, remote: ctx.remote };
    let catalog = SupabaseCatalog(&ctx.supabase);
    let armed = faults::armed(ctx, &db.0, &message.dataset_id).await;
    let config = RunConfig { crash_after: armed.crash_after, poison: armed.poison, ..ctx.run.clone() };
    let run = compaction::compact(message, &run_id, &db, &bucket, &db, &catalog, &WorkerClock, &config);
    let (outcome, busy_ms) = Busy::new(run, &WorkerClock).await;
    let finished = fusou_edge::now_utc();
    let duration_ms = (finished - started).num_milliseconds();
    match outcome {
        Ok(Outcome::Committed(summary)) => {
            let ratio = if summary.output_bytes > 0 { summary.input_bytes as f64 / summary.output_bytes as f64 } else { 0.0 };
            record(
                ctx,
                message,
                metric_id,
                MetricStatus::Success,
                json!({
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
                }),
            )
            .await;
            update_catalog(ctx, &db, message).await;
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
                continue_run(ctx, message).await;
            }
            Ok(())
        }
        Ok(Outcome::Skipped) => {
            record(
                ctx,
                message,
                metric_id,
                MetricStatus::Success,
                json!({
                    "finished_at": finished, "output_files": 0,
                    "error_message": "skipped: another run holds the dataset, or nothing is pending",
                }),
            )
            .await;
            log::info("compaction.skipped", fields);
            Ok(())
        }
        Ok(Outcome::LostLease { orphans }) => {
            // Another run owns the dataset now and will commit its work; ours is orphaned.
            record(
                ctx,
                message,
                metric_id,
                MetricStatus::Failure,
                json!({
                    "finished_at": finished, "error_step": Step::UpdateMetadata.name(), "error_message": "the run lost its lease; outputs orphaned",
                }),
            )
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
            record(
                ctx,
                message,
                metric_id,
                MetricStatus::Failure,
                json!({
                    "finished_at": finished, "error_step": Step::UpdateMetadata.name(),
                    "error_message": "another run had compacted this run's inputs meanwhile; nothing committed, outputs orphaned",
                }),
            )
            .await;
            let mut f = fields;
            f["orphans"] = json!(orphans);
            log::warn("compaction.superseded", f);
            continue_run(ctx, message).await;
            Ok(())
        }
        Ok(Outcome::Isolated { fragments }) => {
            // Its fragments are taken one at a time from now on: a continuation starts at once.
            record(ctx, message, metric_id, MetricStatus::Failure, json!({
                "finished_at": finished, "error_step": Step::ReadFragments.name(),
                "error_message": format!("invocations of this run kept dying or failing while reading; its {fragments} fragments will be compacted one at a time"),
            }))
            .await;
            let mut f = fields;
            f["fragments"] = json!(fragments);
            log::warn("compaction.isolated", f);
            continue_run(ctx, message).await;
            Ok(())
        }
        Err(e) => {
            if let StepError::Interrupted { step } = &e.0 {
                faults::fired(&db.0, &message.dataset_id, step).await;
            }
            record(
                ctx,
                message,
                metric_id,
                MetricStatus::Failure,
                json!({
                    "finished_at": finished, "error_step": e.0.step(), "error_message": e.to_string(),
                }),
            )
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

fn step_durations(summary: &compaction::Summary, total_ms: i64) -> Value {
    let mut steps = json!(summary.step_ms);
    steps["total"] = json!(total_ms);
    steps
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
pub async fn invalid(ctx: &Ctx, body: &Value, error: &str) {
    let Some(metric_id) = body.get("metricId").and_then(Value::as_str).and_then(|id| id.parse::<Uuid>().ok()) else { return };
    let changes = json!({
        "status": MetricStatus::Failure,
        "finished_at": fusou_edge::now_utc(),
        "error_step": "decode-message",
        "error_message": error,
    });
    if let Err(e) = ctx.supabase.execute(&rest::patch_metric(metric_id, &changes)).await {
        log::error("supabase.metric_failed", json!({ "queue": "fusou-compaction", "metricId": metric_id, "error": e.to_string() }));
    }
}

/// A message that exhausted its retries: its metrics row says so, its lease is released, and the
/// dataset stays marked so the schedule tries again later.
pub async fn dead_letter(ctx: &Ctx, message: &CompactionMessage) {
    let metric_id = message.metric_id.unwrap_or_else(Uuid::new_v4);
    record(
        ctx,
        message,
        metric_id,
        MetricStatus::DlqFailure,
        json!({
            "finished_at": fusou_edge::now_utc(), "error_message": "dead-lettered after its retries",
        }),
    )
    .await;
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
