//! The FUSOU compaction service: consumes the compaction queue and its dead-letter queue.
//!
//! Each message is decoded into the one [`CompactionMessage`] type of `fusou-core`; a body
//! that is not one is logged and acknowledged (a retry could never fix it), so it can never
//! block the queue. A valid one runs the compaction workflow of `fusou_compaction` over
//! D1 and R2 (`ports`); success acknowledges it, a failure retries it with a delay, and after
//! its retries it reaches the dead-letter queue (`consumer::dead_letter`). Each message of a
//! batch is acknowledged or retried on its own. A batch's runs of different datasets run side
//! by side, since they mostly wait on R2 and D1, within one memory budget
//! (`fusou_compaction::memory`); a dataset whose run was interrupted runs alone afterwards
//! (`fusou_core::message::BatchPlan`). A batch whose runs left files pending for the open
//! tables notifies their committer (`committer`, a Durable Object) once. The cron runs the
//! clean-up (`cleanup`).
//!
//! The `fetch` handler answers `GET /health`, and `POST /cleanup` and `GET /status` (operator
//! secret as bearer).
//! The Worker has no public URL (`workers_dev = false`, no routes): only the upload Worker's
//! service binding reaches it.

mod cleanup;
mod committer;
mod consumer;
mod context;
mod faults;
mod ports;

use fusou_compaction::memory::MemoryBudget;
use fusou_core::index;
use fusou_core::message::{BatchPlan, CompactionMessage};
use fusou_edge::log;
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};
use worker::{
    Context, Env, Message, MessageBatch, MessageExt, Method, QueueRetryOptions, QueueRetryOptionsBuilder, Request, Response, Result,
    ScheduleContext, ScheduledEvent, event,
};

use crate::context::Ctx;

// Merging allocates and frees many small buffers: talc does it faster than the default.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

const DEAD_LETTER_QUEUE: &str = "fusou-compaction-dlq";

fn answer(status: u16, body: &Value) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let ctx = match Ctx::load(env) {
        Ok(ctx) => ctx,
        Err(e) => return answer(500, &json!({ "service": "fusou-compaction", "ok": false, "error": e.to_string() })),
    };
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(&ctx).await,
        (Method::Post, "/cleanup") => clean_up_now(req, &ctx).await,
        (Method::Get, "/status") => status(&req, &ctx).await,
        _ => answer(404, &json!({ "error": "no such route" })),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_error_panic_hook::set_once();
    let outcome = match Ctx::load(env) {
        Ok(ctx) => {
            // Whatever a lost notice left pending is committed too, and the roll-ups written.
            committer::notify(&ctx, "cron").await;
            let report = cleanup::run(&ctx, &cleanup::Overrides::default()).await;
            if report.as_ref().is_ok_and(|r| !r.rollups.jobs.is_empty()) {
                committer::notify(&ctx, "cron").await;
            }
            report
        }
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        // Parts that failed are named in the report; the rest of the pass ran.
        Ok(report) if !report.failures.is_empty() || !report.lake.failures.is_empty() => {
            log::warn("cleanup.partly_failed", json!({ "source": "cron", "report": report }))
        }
        Ok(report) => log::info("cleanup.done", json!({ "source": "cron", "report": report })),
        Err(e) => log::error("cleanup.failed", json!({ "source": "cron", "error": e })),
    }
}

async fn clean_up_now(mut req: Request, ctx: &Ctx) -> Result<Response> {
    if ctx.check_operator(&req).is_err() {
        return answer(401, &json!({ "error": "the operator secret is required" }));
    }
    let body = req.bytes().await?;
    let overrides: cleanup::Overrides = if body.is_empty() {
        Default::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(o) => o,
            Err(e) => return answer(400, &json!({ "error": format!("invalid clean-up request: {e}") })),
        }
    };
    if !overrides.is_empty() && !ctx.shared.platform.test_hooks {
        return answer(
            400,
            &json!({ "error": "retentionSeconds, orphanGraceSeconds, rollupMinFiles and rollupPeriod are for test stacks only (TEST_HOOKS=on); deployed, the first three are FRAGMENT_RETENTION_DAYS, ORPHAN_GRACE_MINUTES and LAKE_ROLLUP_MIN_FILES, and every period due is rolled up" }),
        );
    }
    match cleanup::run(ctx, &overrides).await {
        Ok(report) => {
            if !report.rollups.jobs.is_empty() {
                committer::notify(ctx, "operator").await;
            }
            log::info("cleanup.done", json!({ "source": "operator", "report": report }));
            Response::from_json(&report)
        }
        Err(e) => {
            log::error("cleanup.failed", json!({ "source": "operator", "error": e }));
            answer(503, &json!({ "error": format!("clean-up failed: {e}") }))
        }
    }
}

/// What the operator reads of the compaction service: the tables' committer (its last pass,
/// its totals with their billable operations, its alarm). Runs' own counts are in their
/// metrics rows.
async fn status(req: &Request, ctx: &Ctx) -> Result<Response> {
    if ctx.check_operator(req).is_err() {
        return answer(401, &json!({ "error": "the operator secret is required" }));
    }
    match committer::status(ctx).await {
        Ok(committer) => answer(200, &json!({ "committer": committer })),
        Err(e) => answer(503, &json!({ "error": format!("the committer did not answer: {e}") })),
    }
}

async fn health(ctx: &Ctx) -> Result<Response> {
    let migrations = match ctx.db() {
        Ok(db) => db.all::<index::Migration>(index::MIGRATIONS, &[]).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (status, body) = match migrations {
        Ok(m) if !m.is_empty() => (200, json!({ "service": "fusou-compaction", "ok": true, "d1Migrations": m.len() })),
        Ok(_) => (503, json!({ "service": "fusou-compaction", "ok": false, "error": "no D1 migrations applied" })),
        Err(e) => (503, json!({ "service": "fusou-compaction", "ok": false, "error": e })),
    };
    answer(status, &body)
}

#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> Result<()> {
    console_error_panic_hook::set_once();
    let queue = batch.queue();
    let ctx = match Ctx::load(env) {
        Ok(ctx) => ctx,
        Err(e) => {
            // Nothing can run until the settings are fixed: every message waits and comes back.
            log::error("consumer.misconfigured", json!({ "queue": queue, "error": e.to_string() }));
            batch.retry_all_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(300).build());
            return Ok(());
        }
    };
    let retry = QueueRetryOptionsBuilder::new().with_delay_seconds(ctx.retry_delay_secs).build();
    let messages: Vec<_> = batch.messages()?.into_iter().map(|m| (CompactionMessage::from_value(m.body().clone()), m)).collect();
    if queue == DEAD_LETTER_QUEUE {
        for (decoded, message) in &messages {
            match decoded {
                Ok(msg) => consumer::dead_letter(&ctx, msg).await,
                Err(e) => invalid(&ctx, &queue, message, e).await,
            }
            message.ack();
        }
        return Ok(());
    }
    // Runs of different datasets run side by side within one memory budget, each message
    // acknowledged or retried as soon as it is done, so that what ran before a trap stays done.
    // A message whose run an earlier invocation began and never finished may have trapped it
    // (out of memory, out of CPU): its dataset's messages run alone, after the others.
    let keys: Vec<_> = messages.iter().map(|(m, _)| m.as_ref().ok().map(|m| (m.dataset_id.as_str(), m.run_id()))).collect();
    let interrupted = if messages.len() > 1 {
        consumer::interrupted_runs(&ctx, &keys.iter().flatten().map(|(_, run)| run.clone()).collect::<Vec<_>>()).await
    } else {
        Default::default()
    };
    let plan = BatchPlan::new(&keys, &interrupted);
    for &i in &plan.invalid {
        let (decoded, message) = &messages[i];
        if let Err(e) = decoded {
            invalid(&ctx, &queue, message, e).await;
        }
        message.ack();
    }
    let alone = MemoryBudget::alone(ctx.run.memory_bytes());
    let beside = match plan.lanes.len().min(ctx.concurrent_runs) {
        0 | 1 => &alone,
        _ => &MemoryBudget::shared(ctx.run.memory_bytes()),
    };
    let lanes = plan.lanes.iter().map(|lane| run_lane(&ctx, &queue, &messages, lane, beside, &retry));
    let left_pending: Vec<bool> = stream::iter(lanes).buffer_unordered(ctx.concurrent_runs).collect().await;
    let mut pending_for_tables = left_pending.contains(&true);
    pending_for_tables |= run_lane(&ctx, &queue, &messages, &plan.alone, &alone, &retry).await;
    if pending_for_tables {
        committer::notify(&ctx, "queue").await;
    }
    Ok(())
}

/// A batch's message, decoded or not, and its handle.
type Delivered = (std::result::Result<CompactionMessage, fusou_core::message::MessageError>, Message<Value>);

/// Runs the messages `lane` of `messages` one after the other within `memory`, acknowledging
/// or retrying each as soon as it is done: whether a run left files pending for the tables.
async fn run_lane(
    ctx: &Ctx,
    queue: &str,
    messages: &[Delivered],
    lane: &[usize],
    memory: &MemoryBudget,
    retry: &QueueRetryOptions,
) -> bool {
    let mut pending_for_tables = false;
    for &i in lane {
        let (Ok(msg), message) = &messages[i] else { continue };
        log::info("message.received", json!({ "queue": queue, "datasetId": msg.dataset_id, "metricId": msg.metric_id, "message": msg }));
        match consumer::compact(ctx, msg, memory).await {
            Ok(left_pending) => {
                pending_for_tables |= left_pending;
                message.ack()
            }
            Err(_) => message.retry_with_options(retry),
        }
    }
    pending_for_tables
}

/// A body that is not a compaction message: logged and marked failed (it is acknowledged by
/// the caller: no retry can fix it).
async fn invalid(ctx: &Ctx, queue: &str, message: &Message<Value>, error: &impl std::fmt::Display) {
    log::error(
        "message.invalid",
        json!({ "queue": queue, "messageId": message.id(), "metricId": message.body().get("metricId"), "error": error.to_string() }),
    );
    consumer::invalid(ctx, message.body(), &error.to_string()).await;
}
