//! Operator routes (operator secret as bearer):
//! - `POST /compact/replay`: sends a compaction message to the queue exactly as given, e.g. one
//!   taken from the dead-letter log. The same message is the same run: a replay resumes it, or
//!   ends quickly when its work is done.
//! - `GET /compact/status`: the compaction service's status through the service binding: the
//!   tables' committer's last pass, its totals and their billable operations.
//! - `POST /compact/cleanup`: runs the compaction Worker's clean-up now, through the service
//!   binding, passing the operator's bearer on (the compaction Worker checks it too). On a test
//!   stack it may name a shorter retention or orphan grace, and a period to roll up at once.
//!
//! Test stacks only (`TEST_HOOKS=on`, which the production configuration refuses): `POST
//! /compact/replay?unchecked` sends any JSON body as it is, even one that is no
//! `CompactionMessage`, so that the end-to-end tests reach the consumer's handling of invalid
//! messages; anywhere else the parameter is refused. `POST /compact/sql` runs one statement on
//! D1 through the Worker's binding, so that the tests' own writes (injected faults, held leases)
//! queue behind the Worker's instead of locking its database from another process; anywhere
//! else it is 404.

use fusou_core::message::{CompactionMessage, MAX_MESSAGE_BYTES};
use fusou_edge::log;
use fusou_edge::remote::Service;
use serde_json::{Value, json};
use worker::{MessageBuilder, Method, QueueContentType, RawMessageBuilder, Request, RequestInit, Response};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::router::Call;

/// A clean-up pass can take a while (it deletes objects by the thousand): the operator waits.
const CLEANUP_TIMEOUT_MS: u64 = 120_000;

pub(crate) async fn replay(mut req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    auth::operator(&req, ctx)?;
    let body = http::body_within(&mut req, MAX_MESSAGE_BYTES as u64, "the message").await?;
    if req.url()?.query_pairs().any(|(k, _)| k == "unchecked") {
        return replay_unchecked(ctx, call, &body).await;
    }
    let message = CompactionMessage::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let queue = ctx.queue()?;
    ctx.remote
        .call(Service::Queue, "the replayed message", queue.send(MessageBuilder::new(&message).build()))
        .await
        .map_err(|e| ApiError::new(503, format!("the queue refused the message: {e}")))?;
    log::info(
        "queue.sent",
        json!({ "route": call.route, "datasetId": message.dataset_id, "metricId": message.metric_id, "runId": message.run_id() }),
    );
    Ok(http::json(202, &json!({ "enqueued": true, "runId": message.run_id(), "message": message }))?)
}

async fn replay_unchecked(ctx: &Ctx, call: &Call, body: &[u8]) -> Result<Response, ApiError> {
    if !ctx.shared.platform.test_hooks {
        return Err(ApiError::bad_request("`unchecked` is only for test stacks (TEST_HOOKS=on)"));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("expected JSON: {e}")))?;
    // Parsed by JavaScript, so that an object stays a plain object (serialized from Rust, a
    // JSON object would reach the queue as a `Map`).
    let message = worker::js_sys::JSON::parse(&body.to_string()).map_err(|_| ApiError::bad_request("expected JSON"))?;
    let queue = ctx.queue()?;
    ctx.remote
        .call(
            Service::Queue,
            "the replayed message",
            queue.send_raw(RawMessageBuilder::new(message).build_with_content_type(QueueContentType::Json)),
        )
        .await
        .map_err(|e| ApiError::new(503, format!("the queue refused the message: {e}")))?;
    log::info("queue.sent", json!({ "route": call.route, "unchecked": true }));
    Ok(http::json(202, &json!({ "enqueued": true, "message": body }))?)
}

pub(crate) async fn cleanup(mut req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    auth::operator(&req, ctx)?;
    let body = http::body_within(&mut req, 4 * 1024, "the request").await?;
    if !body.is_empty() && serde_json::from_slice::<Value>(&body).map_or(true, |v| !v.is_object()) {
        return Err(ApiError::bad_request(
            "expected a JSON object: {\"retentionSeconds\"?, \"orphanGraceSeconds\"?, \"rollupMinFiles\"?, \"rollupPeriod\"?} (test stacks only)",
        ));
    }
    let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let (status, body) = forward(ctx, Method::Post, "/cleanup", body, "the clean-up", CLEANUP_TIMEOUT_MS).await?;
    if status == 200 {
        Ok(http::json(200, &body)?)
    } else {
        Err(ApiError::new(status, body["error"].as_str().unwrap_or("clean-up failed").to_owned()))
    }
}

/// The compaction service's status: the tables' committer, its last pass and its totals, with
/// their billable operations.
pub(crate) async fn status(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    auth::operator(&req, ctx)?;
    let (status, body) =
        forward(ctx, Method::Get, "/status", None, "the compaction status", ctx.remote.timeout_ms(Service::Worker)).await?;
    if status == 200 {
        Ok(http::json(200, &body)?)
    } else {
        Err(ApiError::new(status, body["error"].as_str().unwrap_or("the compaction service did not answer").to_owned()))
    }
}

/// Calls the compaction Worker's operator route `path` through the service binding, with the
/// operator secret (its routes check it too: reaching it is not enough), answering its status
/// and JSON body.
async fn forward(
    ctx: &Ctx,
    method: Method,
    path: &str,
    body: Option<String>,
    what: &str,
    timeout_ms: u64,
) -> Result<(u16, Value), ApiError> {
    let mut init = RequestInit::new();
    init.with_method(method).with_body(body.map(worker::wasm_bindgen::JsValue::from));
    init.headers.set("authorization", &format!("Bearer {}", ctx.shared.operator_secret().map_err(ApiError::misconfigured)?))?;
    let forwarded = Request::new_with_init(&format!("https://fusou-compaction{path}"), &init)?;
    let service = ctx.compaction_service()?;
    Ok(ctx
        .remote
        .call_within(Service::Worker, what, timeout_ms, async {
            let mut answer = service.fetch_request(forwarded).await?;
            let status = answer.status_code();
            let body: Value =
                answer.json().await.unwrap_or_else(|e| json!({ "error": format!("the compaction Worker answered {status}: {e}") }));
            Ok::<_, worker::Error>((status, body))
        })
        .await?)
}

/// A statement on D1 through the binding (test stacks only), answering its rows.
pub(crate) async fn sql(mut req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    if !ctx.shared.platform.test_hooks {
        return Err(ApiError::not_found("no such route (test stacks only: TEST_HOOKS=on)"));
    }
    auth::operator(&req, ctx)?;
    let body = http::body_within(&mut req, 64 * 1024, "the statement").await?;
    let sql = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["sql"].as_str().map(str::to_owned))
        .ok_or_else(|| ApiError::bad_request("expected {\"sql\": \"…\"}"))?;
    let results: Vec<Value> = ctx.db()?.all(&sql, &[]).await?;
    Ok(http::json(200, &json!({ "results": results }))?)
}
