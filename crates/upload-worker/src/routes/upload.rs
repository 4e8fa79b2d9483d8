//! `POST /battle-data/upload`: the FUSOU client's two-phase upload (see `fusou_core::upload`).
//! Without `?token=` it is the handshake, which checks everything and writes nothing; with it,
//! the body, which is held to the handshake and stored. On the critical path: one D1 query for
//! the handshake; the R2 put and one D1 batch for the body. The compaction request (Supabase,
//! the queue) runs after the answer: the client never waits on it.

use bytes::Bytes;
use fusou_core::message::Priority;
use fusou_core::upload::{Handshake, UploadGrant, check_uploader, fragment_key};
use serde_json::json;
use uuid::Uuid;
use worker::{Request, Response};

use crate::auth;
use crate::context::Ctx;
use crate::crypto;
use crate::http::{self, ApiError};
use crate::pipeline::{self, NewFragment};
use crate::rate;
use crate::router::Call;

/// A handshake is a few kilobytes (up to 64 segments of offsets); anything near this is not one.
const MAX_HANDSHAKE_BYTES: u64 = 256 * 1024;

pub(crate) async fn handle(mut req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    let user = auth::user(&req, ctx).await?;
    check_uploader(&user, &ctx.limits)?;
    let token = req.url()?.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    match token {
        None => handshake(&mut req, ctx, user.id).await,
        Some(token) => body(&mut req, ctx, call, user.id, &token).await,
    }
}

async fn handshake(req: &mut Request, ctx: &Ctx, user: Uuid) -> Result<Response, ApiError> {
    // One upload is one handshake: its body needs the grant the handshake signs.
    rate::check(ctx, rate::Limit::Uploads, user).await?;
    let body = http::body_within(req, MAX_HANDSHAKE_BYTES, "the handshake body").await?;
    let h = Handshake::parse(&body, &ctx.limits)?;
    if pipeline::check_upload(ctx, &h.dataset_id, &h.content_hash, user).await? == pipeline::Dataset::New {
        rate::check(ctx, rate::Limit::NewDatasets, user).await?;
    }

    let now = fusou_edge::now_utc();
    let key = fragment_key(&h.dataset_id, &h.table, now, Uuid::new_v4());
    let grant = UploadGrant::new(&h, user, key, now.timestamp() as u64, &ctx.limits);
    let token = grant.sign(ctx.upload_secret())?;
    let mut url = req.url()?;
    url.query_pairs_mut().clear().append_pair("token", &token);
    let expires_at = chrono::DateTime::from_timestamp(grant.exp as i64, 0).expect("in range");
    Ok(http::json(200, &json!({ "uploadUrl": url.as_str(), "expiresAt": expires_at.to_rfc3339() }))?)
}

async fn body(req: &mut Request, ctx: &Ctx, call: &Call, user: Uuid, token: &str) -> Result<Response, ApiError> {
    let now = fusou_edge::now_ms() / 1000;
    let grant = UploadGrant::verify(token, ctx.upload_secret(), user, now)?;
    // Refuse a body of the wrong declared length before reading it; never read past the grant.
    if let Some(len) = req.headers().get("content-length")?.and_then(|v| v.trim().parse::<u64>().ok())
        && len != grant.size
    {
        return Err(ApiError::bad_request(format!("body is {len} bytes but {} were declared", grant.size)));
    }
    let body = Bytes::from(http::body_within(req, grant.size, "the body").await?);
    let offsets = grant.check_body(&body, &crypto::sha256(&body).await?, &ctx.limits)?;
    // No checks before the put: the one D1 batch that records the fragment refuses another
    // user's dataset (403) and bytes the dataset already holds (409), and then the object goes.

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
    let request = pipeline::Request::new(
        ctx,
        call.route,
        &grant.dataset,
        Some(user),
        Priority::Realtime,
        Some(grant.table.clone()),
        Some(grant.period.clone()),
    );
    let metric_id = request.metric_id();
    ctx.defer(async move {
        request.send().await;
    })
    .await;
    Ok(http::json(
        200,
        &json!({
            "ok": true,
            "key": grant.key,
            "size": size,
            "uploaded_at": uploaded_at,
            "metricId": metric_id,
        }),
    )?)
}
