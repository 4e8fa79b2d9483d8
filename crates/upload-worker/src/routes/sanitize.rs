//! `POST /sanitize-state` `{"datasetId"}`: the owner repairs a dataset. A lease held past its
//! expiry is released, the needs-compaction flag is set again if fragments are pending, and a
//! `manual` compaction is requested.

use fusou_core::ids::DatasetId;
use fusou_core::index;
use fusou_core::message::Priority;
use fusou_edge::d1::{self, Param};
use serde::Deserialize;
use serde_json::json;
use worker::{Request, Response, RouteContext};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::pipeline;

const ROUTE: &str = "/sanitize-state";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Body {
    dataset_id: DatasetId,
}

#[derive(Deserialize)]
struct Pending {
    fragments: u64,
}

pub async fn handle(req: Request, rc: RouteContext<()>) -> worker::Result<Response> {
    http::respond(ROUTE, run(req, rc).await)
}

async fn run(mut req: Request, rc: RouteContext<()>) -> Result<Response, ApiError> {
    let ctx = Ctx::load(rc.env)?;
    let user = auth::user(&req, &ctx).await?;
    let body: Body = serde_json::from_slice(&req.bytes().await?)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"datasetId\": \"...\"}}: {e}")))?;
    let dataset = body.dataset_id;
    if pipeline::check_owner(&ctx, &dataset, user.id).await?.is_none() {
        return Err(ApiError::not_found(format!("no dataset {dataset}")));
    }
    let db = ctx.db()?;
    let now = fusou_edge::now_utc();
    let now_text = now.to_rfc3339();
    let now_ms = Param::from(now.timestamp_millis());
    let released = d1::run(&db, index::RELEASE_EXPIRED_LEASE, &[dataset.as_str().into(), now_text.as_str().into(), now_ms]).await?;
    let marked = d1::run(&db, index::MARK_IF_PENDING, &[dataset.as_str().into(), now_text.as_str().into()]).await?;
    let pending: Option<Pending> = d1::first(&db, index::PENDING_SUMMARY, &[dataset.as_str().into()]).await?;
    let request = pipeline::request_compaction(&ctx, ROUTE, &dataset, Some(user.id), Priority::Manual, None, None).await;
    Ok(http::json(
        200,
        &json!({
            "datasetId": dataset,
            "leaseReleased": released > 0,
            "compactionNeeded": marked > 0,
            "pendingFragments": pending.map_or(0, |p| p.fragments),
            "compaction": request,
        }),
    )?)
}
