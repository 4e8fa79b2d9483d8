//! Read routes for a dataset's owner: its state, its compacted outputs, and a download. A
//! dataset of another user answers 404, as one that does not exist.

use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::index;
use fusou_core::index::SqlValue;
use fusou_core::supabase as rest;
use fusou_edge::remote::Service;
use serde_json::{Value, json};
use worker::{Request, Response};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::pipeline;
use crate::router::Call;

const MAX_PAGE: u64 = 1000;

/// The dataset named in the path, if it exists and the caller owns it (404 otherwise).
async fn owned_dataset(req: &Request, ctx: &Ctx, call: &Call) -> Result<DatasetId, ApiError> {
    let user = auth::user(req, ctx).await?;
    let dataset = DatasetId::parse(call.param("id").unwrap_or_default()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    pipeline::check_readable(ctx, &dataset, user.id).await?;
    Ok(dataset)
}

fn query(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    Ok(req.url()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
}

pub(crate) async fn show(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    let dataset = owned_dataset(&req, ctx, call).await?;
    let db = ctx.db()?;
    let id = [SqlValue::from(dataset.as_str())];
    let state: index::DatasetState = db.first(index::DATASET_STATE, &id).await?.ok_or_else(|| ApiError::not_found("no dataset"))?;
    let pending: index::PendingSummary = db.first(index::PENDING_SUMMARY, &id).await?.ok_or_else(|| ApiError::new(500, "no summary"))?;
    let compacted: index::CompactedSummary =
        db.first(index::COMPACTED_SUMMARY, &id).await?.ok_or_else(|| ApiError::new(500, "no summary"))?;
    let outputs: Vec<index::OutputRow> =
        db.all(index::LIST_OUTPUTS, &[dataset.as_str().into(), SqlValue::Null, SqlValue::Null, SqlValue::from(20u64), "".into()]).await?;
    let quarantined: Vec<index::QuarantinedSegment> = db.all(index::QUARANTINED, &[dataset.as_str().into(), SqlValue::from(20u64)]).await?;
    let quarantined_count = db.first::<index::QuarantinedCount>(index::QUARANTINED_COUNT, &id).await?.map_or(0, |c| c.segments);
    let left_out: Vec<index::LakeLeftOut> = db.all(index::LAKE_LEFT_OUT, &[dataset.as_str().into(), SqlValue::from(20u64)]).await?;
    let now = fusou_edge::now_utc();
    let oldest_age = pending
        .oldest
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.to_utc()).num_seconds().max(0));
    let lease_live = state.lease_expires_at.is_some_and(|e| e > now.timestamp_millis() as f64);
    // The runs come from Supabase; if it is down the rest of the answer still stands.
    let runs = match ctx.supabase.execute(&rest::recent_metrics(&dataset, 10)).await {
        Ok(text) => serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        Err(e) => json!({ "error": e.to_string() }),
    };
    Ok(http::json(
        200,
        &json!({
            "datasetId": dataset,
            "createdAt": state.created_at,
            "updatedAt": state.updated_at,
            "compaction": {
                "needed": state.compaction_needed == 1,
                "inProgress": lease_live,
                "runId": if lease_live { state.lease_run_id } else { None },
                "lastCompactedAt": state.last_compacted_at,
            },
            "pending": { "fragments": pending.fragments, "bytes": pending.bytes, "oldestUploadedAt": pending.oldest, "oldestAgeSeconds": oldest_age },
            "compacted": { "files": compacted.files, "bytes": compacted.bytes, "rows": compacted.rows, "latest": outputs },
            // Segments (or whole fragments, table `*`) that could not be compacted: kept, with why.
            "quarantined": { "segments": quarantined_count, "latest": quarantined },
            // Compacted files the shared tables refused, or took without columns outside the
            // client's contract: the files keep everything, the tables take what the contract names.
            "sharedTables": { "leftOut": left_out },
            "runs": runs,
        }),
    )?)
}

pub(crate) async fn outputs(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    let dataset = owned_dataset(&req, ctx, call).await?;
    let bad = |e: fusou_contract::ids::IdError| ApiError::bad_request(e.to_string());
    let period = query(&req, "period")?.map(|p| PeriodTag::parse(&p)).transpose().map_err(bad)?;
    let table = query(&req, "table")?.map(|t| TableName::parse(&t)).transpose().map_err(bad)?;
    let limit = match query(&req, "limit")? {
        None => 100,
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_PAGE}")))?,
    };
    let after = query(&req, "after")?.unwrap_or_default();
    let rows: Vec<index::OutputRow> = ctx
        .db()?
        .all(
            index::LIST_OUTPUTS,
            &[
                dataset.as_str().into(),
                period.as_ref().map(PeriodTag::as_str).into(),
                table.as_ref().map(TableName::as_str).into(),
                SqlValue::from(limit),
                after.as_str().into(),
            ],
        )
        .await?;
    let next = (rows.len() as u64 == limit).then(|| rows.last().map(|r| r.key.clone())).flatten();
    Ok(http::json(200, &json!({ "datasetId": dataset, "outputs": rows, "next": next }))?)
}

pub(crate) async fn download(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    let dataset = owned_dataset(&req, ctx, call).await?;
    let key = query(&req, "key")?.ok_or_else(|| ApiError::bad_request("key is required"))?;
    let found: Option<index::FoundOutput> = ctx.db()?.first(index::OUTPUT_BY_KEY, &[dataset.as_str().into(), key.as_str().into()]).await?;
    let found = found.ok_or_else(|| ApiError::not_found("no such output in this dataset"))?;
    if let Some(at) = found.retired_at {
        return Err(ApiError::new(410, format!("output {key} was merged into a larger one at {at}: list the outputs again")));
    }
    let bucket = ctx.bucket()?;
    let object = ctx.remote.call(Service::R2, "the output's get", bucket.get(&found.key).execute()).await?;
    let object = object.ok_or_else(|| ApiError::not_found("the output's object is missing"))?;
    let body = object.body().ok_or_else(|| ApiError::new(500, "the object has no body"))?;
    let file_name = found.key.rsplit('/').next().unwrap_or("output.parquet").to_owned();
    let mut response = Response::from_stream(body.stream()?)?;
    let headers = response.headers_mut();
    headers.set("content-type", "application/vnd.apache.parquet")?;
    headers.set("content-length", &object.size().to_string())?;
    headers.set("content-disposition", &format!("attachment; filename=\"{file_name}\""))?;
    Ok(response)
}
