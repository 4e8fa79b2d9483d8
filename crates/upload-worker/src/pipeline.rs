//! What several routes do: check an upload or a reader against the index, store a fragment
//! (R2, then D1, with no orphan either way and no object deleted that a row holds), and request
//! a compaction (a `processing_metrics` row, then a queue message carrying its id).

use fusou_contract::fragment::TableOffset;
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::index;
use fusou_core::index::SqlValue;
use fusou_core::message::{CompactionMessage, Priority};
use fusou_core::supabase::{self as rest, DatasetRow, NewMetric};
use fusou_core::upload::ContentHash;
use fusou_edge::d1::{self, Db};
use fusou_edge::log;
use fusou_edge::remote::{Remote, Service};
use fusou_edge::supabase::Supabase;
use serde_json::json;
use uuid::Uuid;
use worker::{MessageBuilder, Queue};

use crate::context::Ctx;
use crate::http::ApiError;

async fn owner(ctx: &Ctx, dataset: &DatasetId) -> Result<Option<String>, ApiError> {
    let row: Option<index::Owner> = ctx.db()?.first(index::DATASET_OWNER, &[dataset.as_str().into()]).await?;
    Ok(row.map(|o| o.owner_id))
}

/// Before a read or a repair: the dataset exists and `user` owns it. Otherwise 404, the same
/// answer whether it is missing or another user's, so that reads tell no stranger which
/// dataset ids exist.
pub(crate) async fn check_readable(ctx: &Ctx, dataset: &DatasetId, user: Uuid) -> Result<(), ApiError> {
    match owner(ctx, dataset).await? {
        Some(o) if o == user.to_string() => Ok(()),
        _ => Err(ApiError::not_found(format!("no dataset {dataset}"))),
    }
}

/// Before an upload is accepted, in one D1 query: 403 when the dataset belongs to someone
/// other than `user`, 409 when it already holds these exact bytes. (A write route cannot hide
/// whether a dataset exists: a new id is accepted and claimed, a taken one refused. 403 is what
/// the FUSOU client reads as "not allowed", and it does not retry it.)
pub(crate) async fn check_upload(ctx: &Ctx, dataset: &DatasetId, hash: &ContentHash, user: Uuid) -> Result<Dataset, ApiError> {
    let row: Option<index::UploadCheck> = ctx.db()?.first(index::UPLOAD_CHECK, &[dataset.as_str().into(), hash.as_str().into()]).await?;
    let check = row.unwrap_or(index::UploadCheck { owner_id: None, stored_key: None });
    if check.owner_id.as_ref().is_some_and(|o| *o != user.to_string()) {
        return Err(ApiError::forbidden(format!("dataset {dataset} belongs to another user")));
    }
    match check.stored_key {
        Some(key) => Err(ApiError::conflict(format!("this content is already stored as {key}"))),
        None if check.owner_id.is_none() => Ok(Dataset::New),
        None => Ok(Dataset::Owned),
    }
}

/// Whether an upload's dataset is the caller's already or new (claimed by the upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dataset {
    New,
    Owned,
}

/// A fragment ready to be stored: every part validated.
pub(crate) struct NewFragment {
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
/// marked, the fragment row). If D1 refuses, the object is deleted again, but only when no row
/// holds its key ([`discard`]): two requests with one upload URL put the same key, and the one
/// refused must not delete what the other recorded. Answers the upload time.
pub(crate) async fn store_fragment(ctx: &Ctx, f: NewFragment) -> Result<String, ApiError> {
    let size = f.body.len() as u64;
    let uploaded_at = index::iso(fusou_edge::now_ms());
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
    let put = bucket
        .put(&f.key, f.body)
        .custom_metadata(metadata)
        .http_metadata(worker::HttpMetadata { content_type: Some("application/octet-stream".into()), ..Default::default() })
        .sha256(f.hash.to_bytes())
        .execute();
    ctx.remote.call(Service::R2, "the fragment put", put).await?;
    ctx.meter.add(|o| (o.r2_class_a, o.subrequests) = (o.r2_class_a + 1, o.subrequests + 1));

    let db = ctx.db()?;
    let batch = vec![
        db.statement(index::CLAIM_DATASET, &[f.dataset.as_str().into(), owner.as_str().into(), uploaded_at.as_str().into()])?,
        db.statement(
            index::INSERT_FRAGMENT,
            &[
                f.key.as_str().into(),
                f.dataset.as_str().into(),
                f.table.as_str().into(),
                f.period.as_str().into(),
                f.hash.as_str().into(),
                SqlValue::from(size),
                offsets_json.as_str().into(),
                owner.as_str().into(),
                uploaded_at.as_str().into(),
            ],
        )?,
    ];
    let outcome = match db.batch(batch).await {
        Ok(results) if results.get(1).map(d1::changes) == Some(1) => return Ok(uploaded_at),
        // Zero rows: the dataset is another user's (or the key was discarded by a racing request).
        Ok(_) => Err(ApiError::forbidden(format!("dataset {} belongs to another user", f.dataset))),
        Err(e) if index::is_unique_violation(&e.message) => Err(ApiError::conflict("this content is already stored")),
        Err(e) => Err(ApiError::from(e)),
    };
    discard(ctx, &db, &bucket, &f.key).await;
    outcome
}

/// The index refused the fragment under `key`: the object is deleted if no row holds the key,
/// and the key is tombstoned in the same statement so that no row ever will. If the index
/// cannot say, the object is kept (an unreferenced object costs bytes; a deleted one that a row
/// holds would lose the upload).
async fn discard(ctx: &Ctx, db: &Db, bucket: &worker::Bucket, key: &str) {
    let now = index::iso(fusou_edge::now_ms());
    let decision = async {
        let statements = vec![
            db.statement(index::DISCARD_UPLOAD, &[key.into(), now.as_str().into()])?,
            db.statement(index::KEY_RECORDED, &[key.into()])?,
        ];
        let results = db.batch(statements).await?;
        let recorded: Vec<index::Recorded> = results.get(1).map(|r| r.results()).transpose().map_err(ApiError::from)?.unwrap_or_default();
        Ok::<_, ApiError>(recorded.first().is_some_and(|r| r.recorded == 1))
    };
    match decision.await {
        Ok(true) => log::info("r2.kept", json!({ "key": key, "why": "another request recorded this key" })),
        Ok(false) => {
            if let Err(e) = ctx.remote.call(Service::R2, "the refused fragment's delete", bucket.delete(key)).await {
                log::error("r2.orphan", json!({ "key": key, "error": e.to_string() }));
            }
        }
        Err(e) => log::error(
            "r2.orphan",
            json!({ "key": key, "error": format!("kept: the index cannot say whether a row holds it: {}", e.message) }),
        ),
    }
}

/// What became of a compaction request.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompactionRequest {
    pub metric_id: Uuid,
    pub metrics_recorded: bool,
    pub enqueued: bool,
}

/// A compaction request about to be made: the message, and who owns the dataset.
pub(crate) struct Request {
    route: &'static str,
    message: CompactionMessage,
    owner: Option<Uuid>,
    delay_secs: u32,
    supabase: Supabase,
    queue: Result<Queue, String>,
    remote: Remote,
}

impl Request {
    /// A request for `dataset` by `priority`, from `route`; a realtime one waits in the queue
    /// for the configured delay, so that one run takes a burst of uploads.
    pub(crate) fn new(
        ctx: &Ctx,
        route: &'static str,
        dataset: &DatasetId,
        owner: Option<Uuid>,
        priority: Priority,
        table: Option<TableName>,
        period_tag: Option<PeriodTag>,
    ) -> Self {
        let message = CompactionMessage {
            dataset_id: dataset.clone(),
            triggered_at: fusou_edge::now_utc(),
            priority,
            metric_id: Some(Uuid::new_v4()),
            table,
            period_tag,
        };
        Self {
            route,
            message,
            owner,
            delay_secs: if priority == Priority::Realtime { ctx.realtime_delay_secs } else { 0 },
            supabase: ctx.supabase.clone(),
            queue: ctx.queue().map_err(|e| e.to_string()),
            remote: ctx.remote,
        }
    }

    pub(crate) fn metric_id(&self) -> Uuid {
        self.message.metric_id.expect("set by new")
    }

    /// Makes the request: the dataset's summary and a `queued` metrics row in Supabase, then
    /// the message carrying the row's id. Neither failure fails the caller: the dataset stays
    /// marked in D1, so the schedule picks it up; both are logged at error level.
    pub(crate) async fn send(self) -> CompactionRequest {
        let metric_id = self.metric_id();
        let dataset = &self.message.dataset_id;
        let fields =
            json!({ "route": self.route, "datasetId": dataset, "metricId": metric_id, "priority": self.message.priority.as_str() });

        let mut metrics_recorded = true;
        if let Some(owner_id) = self.owner {
            let row = DatasetRow { id: dataset.clone(), owner_id, compaction_needed: true };
            if let Err(e) = self.supabase.execute(&rest::upsert_dataset(&row)).await {
                metrics_recorded = false;
                log::error("supabase.dataset_failed", with_error(&fields, &e.to_string()));
            }
        }
        let metric = NewMetric::queued(&self.message).expect("the message carries its metric id");
        if metrics_recorded && let Err(e) = self.supabase.execute(&rest::insert_metrics(&[metric])).await {
            metrics_recorded = false;
            log::error("supabase.metric_failed", with_error(&fields, &e.to_string()));
        }

        let sent = match &self.queue {
            Ok(queue) => {
                let send = queue.send(MessageBuilder::new(&self.message).delay_seconds(self.delay_secs).build());
                self.remote.call(Service::Queue, "the compaction message", send).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.clone()),
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
}

fn with_error(fields: &serde_json::Value, error: &str) -> serde_json::Value {
    let mut f = fields.clone();
    f["error"] = json!(error);
    f
}
