//! The FUSOU compaction service: consumes the compaction queue and its dead-letter queue.
//!
//! Each message is decoded into the one [`CompactionMessage`] type of `fusou-core`; a body
//! that is not one is logged and acknowledged (a retry could never fix it), so it can never
//! block the queue. A valid one runs the compaction workflow of `fusou_core::compaction` over
//! D1 and R2 (`ports`); success acknowledges it, a failure retries it with a delay, and after
//! its retries it reaches the dead-letter queue (`consumer::dead_letter`). The cron runs the
//! clean-up (`cleanup`). A `fetch` handler, reachable only through the upload Worker's service
//! binding, answers `GET /health` and `POST /cleanup` (the operator's clean-up, authenticated
//! there).

mod cleanup;
mod consumer;
mod faults;
mod ports;

use fusou_core::message::CompactionMessage;
use fusou_edge::bindings::BATTLE_INDEX_DB;
use fusou_edge::log;
use serde_json::{Value, json};
use worker::{Context, Env, MessageBatch, MessageExt, Method, QueueRetryOptionsBuilder, Request, Response, Result, ScheduleContext, ScheduledEvent, event};

// Merging allocates and frees many small buffers: talc does it faster than the default.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

const DEAD_LETTER_QUEUE: &str = "fusou-compaction-dlq";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/health") => health(env).await,
        (Method::Post, "/cleanup") => clean_up_now(req, env).await,
        _ => Ok(Response::from_json(&json!({ "error": "no such route" }))?.with_status(404)),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_error_panic_hook::set_once();
    match cleanup::run(&env, &cleanup::Overrides::default()).await {
        Ok(report) => log::info("cleanup.done", json!({ "source": "cron", "report": report })),
        Err(e) => log::error("cleanup.failed", json!({ "source": "cron", "error": e })),
    }
}

async fn clean_up_now(mut req: Request, env: Env) -> Result<Response> {
    let body = req.bytes().await?;
    let overrides: cleanup::Overrides = if body.is_empty() {
        Default::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(o) => o,
            Err(e) => return Ok(Response::from_json(&json!({ "error": format!("invalid clean-up request: {e}") }))?.with_status(400)),
        }
    };
    match cleanup::run(&env, &overrides).await {
        Ok(report) => {
            log::info("cleanup.done", json!({ "source": "operator", "report": report }));
            Response::from_json(&report)
        }
        Err(e) => {
            log::error("cleanup.failed", json!({ "source": "operator", "error": e }));
            Ok(Response::from_json(&json!({ "error": format!("clean-up failed: {e}") }))?.with_status(503))
        }
    }
}

async fn health(env: Env) -> Result<Response> {
    let d1 = env
        .d1(BATTLE_INDEX_DB)?
        .prepare("SELECT count(*) AS n FROM d1_migrations")
        .first::<u32>(Some("n"))
        .await;
    let (status, body) = match d1 {
        Ok(Some(n)) if n > 0 => (200, json!({ "service": "fusou-compaction", "ok": true, "d1Migrations": n })),
        Ok(_) => (503, json!({ "service": "fusou-compaction", "ok": false, "error": "no D1 migrations applied" })),
        Err(e) => (503, json!({ "service": "fusou-compaction", "ok": false, "error": e.to_string() })),
    };
    Ok(Response::from_json(&body)?.with_status(status))
}

#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> Result<()> {
    console_error_panic_hook::set_once();
    let queue = batch.queue();
    for message in batch.messages()? {
        let decoded = CompactionMessage::from_value(message.body().clone());
        match (decoded, queue.as_str()) {
            (Err(e), _) => {
                log::error("message.invalid", json!({ "queue": queue, "messageId": message.id(), "metricId": message.body().get("metricId"), "error": e.to_string() }));
                consumer::invalid(&env, message.body(), &e.to_string()).await;
                message.ack();
            }
            (Ok(msg), DEAD_LETTER_QUEUE) => {
                consumer::dead_letter(&env, &msg).await;
                message.ack();
            }
            (Ok(msg), _) => {
                log::info("message.received", json!({ "queue": queue, "datasetId": msg.dataset_id, "metricId": msg.metric_id, "message": msg }));
                match consumer::compact(&env, &msg).await {
                    Ok(()) => message.ack(),
                    Err(_) => message.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(10).build()),
                }
            }
        }
    }
    Ok(())
}
