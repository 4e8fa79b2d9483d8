//! `POST /compact/upload`: a one-step multipart upload of one plain Parquet file, for tools and
//! operators. Fields: `datasetId`, `tableId`, optional `periodTag` (default `0`, "unknown", as
//! the client says when it does not know the period), and `file`. It is recorded as a fragment
//! with a one-segment offsets list, so compaction treats it like any other.

use bytes::Bytes;
use fusou_core::fragment::{TableOffset, inspect_segment};
use fusou_core::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::message::Priority;
use fusou_core::upload::{ContentHash, fragment_key};
use serde_json::json;
use uuid::Uuid;
use worker::{FormEntry, Request, Response, RouteContext};

use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::pipeline::{self, NewFragment};
use crate::auth;

const ROUTE: &str = "/compact/upload";

pub async fn handle(req: Request, rc: RouteContext<()>) -> worker::Result<Response> {
    http::respond(ROUTE, run(req, rc).await)
}

fn field(form: &worker::FormData, name: &str) -> Option<String> {
    match form.get(name) {
        Some(FormEntry::Field(v)) => Some(v),
        _ => None,
    }
}

async fn run(mut req: Request, rc: RouteContext<()>) -> Result<Response, ApiError> {
    let ctx = Ctx::load(rc.env)?;
    let user = auth::user(&req, &ctx).await?;
    let max = ctx.limits.max_direct_bytes;
    if let Some(len) = req.headers().get("content-length")?.and_then(|v| v.parse::<u64>().ok())
        && len > max + 64 * 1024
    {
        return Err(ApiError::new(413, format!("the upload is {len} bytes, more than the {max} allowed")));
    }
    let content_type = req.headers().get("content-type")?.unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::new(415, "send multipart/form-data with datasetId, tableId and file"));
    }
    let form = req.form_data().await.map_err(|e| ApiError::bad_request(format!("unreadable form: {e}")))?;
    let required = |name: &str| field(&form, name).ok_or_else(|| ApiError::bad_request(format!("{name} is required")));
    let dataset = DatasetId::parse(&required("datasetId")?).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let table = TableName::parse(&required("tableId")?).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let period = PeriodTag::parse(field(&form, "periodTag").as_deref().unwrap_or("0"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
    let offset = TableOffset {
        table_name: table.clone(),
        start_byte: 0,
        byte_length: bytes.len() as u64,
        format: "parquet".into(),
        num_rows: None,
    };
    // Parquet or not is told by the bytes, not by the file's name or type.
    let num_rows = inspect_segment(&offset, bytes.clone()).map_err(|e| ApiError::new(415, e.to_string()))?.num_rows;
    let offset = TableOffset { num_rows: Some(num_rows), ..offset };

    pipeline::check_owner(&ctx, &dataset, user.id).await?;
    let hash = ContentHash::of(&bytes);
    pipeline::check_not_stored(&ctx, &dataset, &hash).await?;
    let key = fragment_key(&dataset, &table, fusou_edge::now_utc(), Uuid::new_v4());
    let size = bytes.len();
    let uploaded_at = pipeline::store_fragment(
        &ctx,
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
    let request =
        pipeline::request_compaction(&ctx, ROUTE, &dataset, Some(user.id), Priority::Realtime, Some(table), Some(period))
            .await;
    Ok(http::json(
        200,
        &json!({ "ok": true, "key": key, "size": size, "uploaded_at": uploaded_at, "metricId": request.metric_id }),
    )?)
}
