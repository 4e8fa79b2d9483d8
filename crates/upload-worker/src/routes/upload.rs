//! `POST /battle-data/upload`: the FUSOU client's two-phase upload (see `fusou_core::upload`).
//! Without `?token=` it is the handshake, which checks everything and writes nothing; with it,
//! the body, which is held to the handshake and stored.

use bytes::Bytes;
use fusou_core::message::Priority;
use fusou_core::upload::{Handshake, UploadGrant, fragment_key};
use serde_json::json;
use uuid::Uuid;
use worker::{Request, Response, RouteContext};

use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::pipeline::{self, NewFragment};
use crate::auth;

const ROUTE: &str = "/battle-data/upload";
/// A handshake is a few kilobytes (32 segments of offsets); anything near this is not one.
const MAX_HANDSHAKE_BYTES: usize = 256 * 1024;

pub async fn handle(req: Request, rc: RouteContext<()>) -> worker::Result<Response> {
    http::respond(ROUTE, run(req, rc).await)
}

async fn run(mut req: Request, rc: RouteContext<()>) -> Result<Response, ApiError> {
    let ctx = Ctx::load(rc.env)?;
    let user = auth::user(&req, &ctx).await?;
    let token = req.url()?.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    match token {
        None => handshake(&mut req, &ctx, user.id).await,
        Some(token) => body(&mut req, &ctx, user.id, &token).await,
    }
}

/// Declared length of the request body, when the client sent one.
fn content_length(req: &Request) -> Result<Option<u64>, ApiError> {
    Ok(req.headers().get("content-length")?.and_then(|v| v.trim().parse().ok()))
}

async fn handshake(req: &mut Request, ctx: &Ctx, user: Uuid) -> Result<Response, ApiError> {
    if content_length(req)?.is_some_and(|n| n > MAX_HANDSHAKE_BYTES as u64) {
        return Err(ApiError::new(413, "the handshake body is too large"));
    }
    let body = req.bytes().await?;
    if body.len() > MAX_HANDSHAKE_BYTES {
        return Err(ApiError::new(413, "the handshake body is too large"));
    }
    let h = Handshake::parse(&body, &ctx.limits)?;
    pipeline::check_owner(ctx, &h.dataset_id, user).await?;
    pipeline::check_not_stored(ctx, &h.dataset_id, &h.content_hash).await?;

    let now = fusou_edge::now_utc();
    let key = fragment_key(&h.dataset_id, &h.table, now, Uuid::new_v4());
    let grant = UploadGrant::new(&h, user, key, now.timestamp() as u64, &ctx.limits);
    let token = grant.sign(ctx.upload_secret())?;
    let mut url = req.url()?;
    url.query_pairs_mut().clear().append_pair("token", &token);
    let expires_at = chrono::DateTime::from_timestamp(grant.exp as i64, 0).expect("in range");
    Ok(http::json(200, &json!({ "uploadUrl": url.as_str(), "expiresAt": expires_at.to_rfc3339() }))?)
}

async fn body(req: &mut Request, ctx: &Ctx, user: Uuid, token: &str) -> Result<Response, ApiError> {
    let now = fusou_edge::now_ms() / 1000;
    let grant = UploadGrant::verify(token, ctx.upload_secret(), user, now)?;
    // Refuse a body of the wrong length before reading it.
    if let Some(len) = content_length(req)?
        && len != grant.size
    {
        return Err(ApiError::bad_request(format!("body is {len} bytes but {} were declared", grant.size)));
    }
    let body = Bytes::from(req.bytes().await?);
    let offsets = grant.check_body(&body)?;
    pipeline::check_owner(ctx, &grant.dataset, user).await?;
    pipeline::check_not_stored(ctx, &grant.dataset, &grant.hash).await?;

    let size = body.len();
    let uploaded_at = pipeline::store_fragment(
        ctx,
        NewFragment {
            dataset: grant.dataset.clone(),
            owner: user,
            table: grant.table.clone(),
            period: grant.period.clone(),
            key: grant.key.clone(),
            hash: grant.hash.clone(),
            offsets,
            body: Vec::from(body),
        },
    )
    .await?;
    let request = pipeline::request_compaction(
        ctx,
        ROUTE,
        &grant.dataset,
        Some(user),
        Priority::Realtime,
        Some(grant.table.clone()),
        Some(grant.period.clone()),
    )
    .await;
    Ok(http::json(
        200,
        &json!({
            "ok": true,
            "key": grant.key,
            "size": size,
            "uploaded_at": uploaded_at,
            "metricId": request.metric_id,
        }),
    )?)
}
