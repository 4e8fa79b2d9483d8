//! The two things several routes do: store a fragment (R2, then D1, with no orphan either way)
//! and request a compaction (a `processing_metrics` row, then a queue message carrying its id).

use fusou_core::fragment::TableOffset;
use fusou_core::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::index;
use fusou_core::message::{CompactionMessage, Priority};
use fusou_core::supabase::{self as rest, DatasetRow, NewMetric};
use fusou_core::upload::ContentHash;
use fusou_edge::d1::{self, Param};
use fusou_edge::log;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use worker::MessageBuilder;

use crate::context::Ctx;
use crate::http::ApiError;

#[derive(Deserialize)]
struct Owner {
    owner_id: String,
}

#[derive(Deserialize)]
struct Key {
    key: String,
}

/// The dataset's owner, if the dataset exists; 403 when it belongs to someone other than `user`.
pub async fn check_owner(ctx: &Ctx, dataset: &DatasetId, user: Uuid) -> Result<Option<Uuid>, ApiError> {
    let row: Option<Owner> = d1::first(&ctx.db()?, index::DATASET_OWNER, &[dataset.as_str().into()]).await?;
    match row {
        None => Ok(None),
        Some(o) if o.owner_id == user.to_string() => Ok(Some(user)),
        Some(_) => Err(ApiError::forbidden(format!("dataset {dataset} belongs to another user"))),
    }
}

/// 409 when the dataset already holds these exact bytes.
pub async fn check_not_stored(ctx: &Ctx, dataset: &DatasetId, hash: &ContentHash) -> Result<(), ApiError> {
    let row: Option<Key> =
        d1::first(&ctx.db()?, index::FRAGMENT_BY_HASH, &[dataset.as_str().into(), hash.as_str().into()]).await?;
    match row {
        Some(k) => Err(ApiError::conflict(format!("this content is already stored as {}", k.key))),
        None => Ok(()),
    }
}

/// A fragment ready to be stored: every part validated.
pub struct NewFragment {
    pub dataset: DatasetId,
    pub owner: Uuid,
    pub table: TableName,
    pub period: PeriodTag,
    pub key: String,
    pub hash: ContentHash,
    pub offsets: Vec<TableOffset>,
    pub body: Vec<u8>,
}

/// Stores the bytes in R2, then records them in D1 in one atomic batch (the dataset claimed or
/// marked, the fragment row). If D1 refuses, the object is deleted again: no orphan is left.
/// Answers the upload time.
pub async fn store_fragment(ctx: &Ctx, f: NewFragment) -> Result<String, ApiError> {
    let size = f.body.len() as u64;
    let uploaded_at = fusou_edge::now_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let owner = f.owner.to_string();
    let offsets_json = serde_json::to_string(&f.offsets).map_err(|e| ApiError::new(500, e.to_string()))?;
    let metadata = [
        ("dataset_id", f.dataset.as_str()),
        ("table", f.table.as_str()),
        ("period_tag", f.period.as_str()),
        ("content_hash", f.hash.as_str()),
        ("uploaded_by", owner.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect::<std::collections::HashMap<_, _>>();

    let bucket = ctx.bucket()?;
    bucket
        .put(&f.key, f.body)
        .custom_metadata(metadata)
        .http_metadata(worker::HttpMetadata { content_type: Some("application/octet-stream".into()), ..Default::default() })
        .sha256(f.hash.to_bytes())
        .execute()
        .await?;

    let db = ctx.db()?;
    let batch = vec![
        d1::statement(&db, index::CLAIM_DATASET, &[f.dataset.as_str().into(), owner.as_str().into(), uploaded_at.as_str().into()])?,
        d1::statement(
            &db,
            index::INSERT_FRAGMENT,
            &[
                f.key.as_str().into(),
                f.dataset.as_str().into(),
                f.table.as_str().into(),
                f.period.as_str().into(),
                f.hash.as_str().into(),
                Param::from(size),
                offsets_json.as_str().into(),
                owner.as_str().into(),
                uploaded_at.as_str().into(),
            ],
        )?,
    ];
    let outcome = match db.batch(batch).await {
        Ok(results) => {
            let inserted = results.get(1).and_then(|r| r.meta().ok().flatten()).and_then(|m| m.changes).unwrap_or(0);
            if inserted == 1 {
                Ok(uploaded_at)
            } else {
                Err(ApiError::forbidden(format!("dataset {} belongs to another user", f.dataset)))
            }
        }
        Err(e) if index::is_unique_violation(&e.to_string()) => {
            Err(ApiError::conflict("this content is already stored"))
        }
        Err(e) => Err(ApiError::from(e)),
    };
    if outcome.is_err() {
        // The index refused the fragment: take the bytes back so nothing is left half-written.
        if let Err(e) = bucket.delete(&f.key).await {
            log::error("r2.orphan", json!({ "key": f.key, "error": e.to_string() }));
        }
    }
    outcome
}

/// What became of a compaction request.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactionRequest {
    pub metric_id: Uuid,
    pub metrics_recorded: bool,
    pub enqueued: bool,
}

/// Requests a compaction: the dataset's summary and a `queued` metrics row in Supabase, then a
/// message carrying the row's id. Neither failure fails the caller: the dataset stays marked in
/// D1, so the schedule picks it up; both are logged at error level.
pub async fn request_compaction(
    ctx: &Ctx,
    route: &str,
    dataset: &DatasetId,
    owner: Option<Uuid>,
    priority: Priority,
    table: Option<TableName>,
    period_tag: Option<PeriodTag>,
) -> CompactionRequest {
    let message = CompactionMessage {
        dataset_id: dataset.clone(),
        triggered_at: fusou_edge::now_utc(),
        priority,
        metric_id: Some(Uuid::new_v4()),
        table,
        period_tag,
    };
    let metric_id = message.metric_id.expect("set above");
    let fields = json!({ "route": route, "datasetId": dataset, "metricId": metric_id, "priority": priority.as_str() });

    let mut metrics_recorded = true;
    if let Some(owner_id) = owner {
        let row = DatasetRow { id: dataset.clone(), owner_id, compaction_needed: true };
        if let Err(e) = ctx.supabase.execute(&rest::upsert_dataset(&row)).await {
            metrics_recorded = false;
            log::error("supabase.dataset_failed", with_error(&fields, &e.to_string()));
        }
    }
    let metric = NewMetric::queued(&message).expect("the message carries its metric id");
    if metrics_recorded && let Err(e) = ctx.supabase.execute(&rest::insert_metrics(&[metric])).await {
        metrics_recorded = false;
        log::error("supabase.metric_failed", with_error(&fields, &e.to_string()));
    }

    let delay = if priority == Priority::Realtime { ctx.realtime_delay_secs } else { 0 };
    let sent = match ctx.queue() {
        Ok(queue) => queue.send(MessageBuilder::new(&message).delay_seconds(delay).build()).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.message),
    };
    let enqueued = match sent {
        Ok(()) => {
            log::info("queue.sent", fields.clone());
            true
        }
        Err(e) => {
            log::error("queue.send_failed", with_error(&fields, &e));
            false
        }
    };
    CompactionRequest { metric_id, metrics_recorded, enqueued }
}

fn with_error(fields: &serde_json::Value, error: &str) -> serde_json::Value {
    let mut f = fields.clone();
    f["error"] = json!(error);
    f
}
