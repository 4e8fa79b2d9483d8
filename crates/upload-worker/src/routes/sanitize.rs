//! `POST /sanitize-state` `{"datasetId"}`: the owner repairs a dataset. A lease held past its
//! expiry is released, the needs-compaction flag is set again if fragments are pending, and a
//! `manual` compaction is requested (awaited: the answer says what became of it).

use fusou_contract::ids::DatasetId;
use fusou_core::index;
use fusou_core::index::SqlValue;
use fusou_core::message::Priority;
use serde::Deserialize;
use serde_json::json;
use worker::{Request, Response};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::pipeline;
use crate::router::Call;

/// A repair request is one short JSON object.
const MAX_BODY_BYTES: u64 = 4 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Body {
    dataset_id: DatasetId,
}

pub(crate) async fn handle(mut req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    let user = auth::user(&req, ctx).await?;
    crate::rate::check(ctx, crate::rate::Limit::Sanitize, user.id).await?;
    let body: Body = serde_json::from_slice(&http::body_within(&mut req, MAX_BODY_BYTES, "the request").await?)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"datasetId\": \"...\"}}: {e}")))?;
    let dataset = body.dataset_id;
    pipeline::check_readable(ctx, &dataset, user.id).await?;
    let db = ctx.db()?;
    let now_ms = fusou_edge::now_ms();
    let (id, now) = (SqlValue::from(dataset.as_str()), SqlValue::from(index::iso(now_ms)));
    let released = db.run(index::RELEASE_EXPIRED_LEASES, &[id.clone(), now.clone(), SqlValue::from(now_ms)]).await?;
    let marked = db.run(index::MARK_IF_PENDING, &[id.clone(), now]).await?;
    let pending: Option<index::PendingSummary> = db.first(index::PENDING_SUMMARY, &[id]).await?;
    let request = pipeline::Request::new(ctx, call.route, &dataset, Some(user.id), Priority::Manual, None, None).send().await;
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
