//! Operator routes (operator secret as bearer):
//! - `POST /compact/replay`: sends a compaction message to the queue exactly as given, e.g. one
//!   taken from the dead-letter log. The same message is the same run: a replay resumes it, or
//!   ends quickly when its work is done.
//! - `POST /compact/cleanup`: runs the compaction Worker's clean-up now (through the service
//!   binding), optionally with a shorter retention or orphan grace.
//!
//! Test stacks only (`FAULT_INJECTION=on`, which no deployed config sets): `POST
//! /compact/replay?unchecked` sends any JSON body as it is, even one that is no
//! `CompactionMessage`, so that the end-to-end tests reach the consumer's handling of invalid
//! messages. Anywhere else the parameter is refused.

use fusou_core::message::CompactionMessage;
use fusou_edge::bindings;
use fusou_edge::log;
use serde_json::{Value, json};
use worker::{Method, MessageBuilder, QueueContentType, RawMessageBuilder, Request, RequestInit, Response, RouteContext};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};

const REPLAY: &str = "/compact/replay";
const CLEANUP: &str = "/compact/cleanup";

pub async fn replay(req: Request, rc: RouteContext<()>) -> worker::Result<Response> {
    http::respond(REPLAY, run_replay(req, rc).await)
}

async fn run_replay(mut req: Request, rc: RouteContext<()>) -> Result<Response, ApiError> {
    let ctx = Ctx::load(rc.env)?;
    auth::operator(&req, &ctx)?;
    let body = req.bytes().await?;
    if req.url()?.query_pairs().any(|(k, _)| k == "unchecked") {
        return replay_unchecked(&ctx, &body).await;
    }
    let message = CompactionMessage::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    ctx.queue()?
        .send(MessageBuilder::new(&message).build())
        .await
        .map_err(|e| ApiError::new(503, format!("the queue refused the message: {e}")))?;
    log::info("queue.sent", json!({ "route": REPLAY, "datasetId": message.dataset_id, "metricId": message.metric_id, "runId": message.run_id() }));
    Ok(http::json(202, &json!({ "enqueued": true, "runId": message.run_id(), "message": message }))?)
}

async fn replay_unchecked(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    if !ctx.env.var("FAULT_INJECTION").is_ok_and(|v| v.to_string() == "on") {
        return Err(ApiError::bad_request("`unchecked` is only for test stacks (FAULT_INJECTION=on)"));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("expected JSON: {e}")))?;
    // Parsed by JavaScript, so that an object stays a plain object (serialized from Rust, a
    // JSON object would reach the queue as a `Map`).
    let message = worker::js_sys::JSON::parse(&body.to_string()).map_err(|_| ApiError::bad_request("expected JSON"))?;
    ctx.queue()?
        .send_raw(RawMessageBuilder::new(message).build_with_content_type(QueueContentType::Json))
        .await
        .map_err(|e| ApiError::new(503, format!("the queue refused the message: {e}")))?;
    log::info("queue.sent", json!({ "route": REPLAY, "unchecked": true }));
    Ok(http::json(202, &json!({ "enqueued": true, "message": body }))?)
}

pub async fn cleanup(req: Request, rc: RouteContext<()>) -> worker::Result<Response> {
    http::respond(CLEANUP, run_cleanup(req, rc).await)
}

async fn run_cleanup(mut req: Request, rc: RouteContext<()>) -> Result<Response, ApiError> {
    let ctx = Ctx::load(rc.env)?;
    auth::operator(&req, &ctx)?;
    let body = req.bytes().await?;
    if !body.is_empty() && serde_json::from_slice::<Value>(&body).map_or(true, |v| !v.is_object()) {
        return Err(ApiError::bad_request("expected a JSON object: {\"retentionSeconds\"?, \"orphanGraceSeconds\"?}"));
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body((!body.is_empty()).then(|| worker::wasm_bindgen::JsValue::from(String::from_utf8_lossy(&body).into_owned())));
    let forwarded = Request::new_with_init("https://fusou-compaction/cleanup", &init)?;
    let mut answer = ctx.env.service(bindings::COMPACTION_SERVICE)?.fetch_request(forwarded).await?;
    let status = answer.status_code();
    let body: Value = answer.json().await.unwrap_or_else(|e| json!({ "error": format!("the compaction Worker answered {status}: {e}") }));
    if status == 200 {
        Ok(http::json(200, &body)?)
    } else {
        Err(ApiError::new(status, body["error"].as_str().unwrap_or("clean-up failed").to_owned()))
    }
}
