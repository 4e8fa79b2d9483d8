//! `POST /compact/upload`: a one-step multipart upload of one plain Parquet file, for tools and
//! operators. Fields: `datasetId`, `tableId`, optional `periodTag` (default `0`, "unknown", as
//! the client says when it does not know the period), and `file`. It is recorded as a fragment
//! with a one-segment offsets list, so compaction treats it like any other.

use bytes::Bytes;
use fusou_contract::fragment::{TableOffset, inspect_segment};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::message::Priority;
use fusou_core::upload::{check_uploader, fragment_key};
use serde_json::json;
use uuid::Uuid;
use worker::{FormEntry, Request, RequestInit, Response};

use crate::auth;
use crate::context::Ctx;
use crate::crypto;
use crate::http::{self, ApiError};
use crate::pipeline::{self, NewFragment};
use crate::router::Call;

/// What a multipart body may add to its file: the boundaries and the three other fields.
const FORM_OVERHEAD_BYTES: u64 = 64 * 1024;

fn field(form: &worker::FormData, name: &str) -> Option<String> {
    match form.get(name) {
        Some(FormEntry::Field(v)) => Some(v),
        _ => None,
    }
}

pub(crate) async fn handle(mut req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    let user = auth::user(&req, ctx).await?;
    check_uploader(&user, &ctx.limits)?;
    let max = ctx.limits.max_direct_bytes;
    let content_type = req.headers().get("content-type")?.unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::new(415, "send multipart/form-data with datasetId, tableId and file"));
    }
    // The form is parsed from a body counted as it arrived: never more than the limit is held.
    let raw = http::body_within(&mut req, max + FORM_OVERHEAD_BYTES, "the upload").await?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post).with_body(Some(worker::js_sys::Uint8Array::from(raw.as_slice()).into()));
    init.headers.set("content-type", &content_type)?;
    let mut parsed = Request::new_with_init("https://form.invalid/", &init)?;
    drop(raw);
    let form = parsed.form_data().await.map_err(|e| ApiError::bad_request(format!("unreadable form: {e}")))?;
    let required = |name: &str| field(&form, name).ok_or_else(|| ApiError::bad_request(format!("{name} is required")));
    let dataset = DatasetId::parse(&required("datasetId")?).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let table = TableName::parse(&required("tableId")?).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let period = PeriodTag::parse(field(&form, "periodTag").as_deref().unwrap_or("0")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(FormEntry::File(file)) = form.get("file") else {
        return Err(ApiError::bad_request("file is required"));
    };
    if file.size() as u64 > max {
        return Err(ApiError::new(413, format!("the file is {} bytes, more than the {max} allowed", file.size())));
    }
    let bytes = Bytes::from(file.bytes().await?);
    if bytes.is_empty() {
        return Err(ApiError::bad_request("file is empty"));
    }
    let offset =
        TableOffset { table_name: table.clone(), start_byte: 0, byte_length: bytes.len() as u64, format: "parquet".into(), num_rows: None };
    // Parquet or not is told by the bytes, not by the file's name or type.
    let num_rows = inspect_segment(&offset, bytes.clone()).map_err(|e| ApiError::new(415, e.to_string()))?.num_rows;
    let offset = TableOffset { num_rows: Some(num_rows), ..offset };

    let hash = crypto::sha256(&bytes).await?;
    crate::rate::check(ctx, crate::rate::Limit::Uploads, user.id).await?;
    if pipeline::check_upload(ctx, &dataset, &hash, user.id).await? == pipeline::Dataset::New {
        crate::rate::check(ctx, crate::rate::Limit::NewDatasets, user.id).await?;
    }
    let key = fragment_key(&dataset, &table, fusou_edge::now_utc(), Uuid::new_v4());
    let size = bytes.len();
    let uploaded_at = pipeline::store_fragment(
        ctx,
        NewFragment {
            dataset: dataset.clone(),
            owner: user.id,
            table: table.clone(),
            period: period.clone(),
            key: key.clone(),
            hash,
            offsets: vec![offset],
            body: Vec::from(bytes),
        },
    )
    .await?;
    let request = pipeline::Request::new(ctx, call.route, &dataset, Some(user.id), Priority::Realtime, Some(table), Some(period));
    let metric_id = request.metric_id();
    ctx.defer(async move {
        request.send().await;
    })
    .await;
    Ok(http::json(200, &json!({ "ok": true, "key": key, "size": size, "uploaded_at": uploaded_at, "metricId": metric_id }))?)
}
