//! The open tables' Iceberg REST catalog (`/iceberg/v1/…`: config, namespaces, tables, load
//! table) and a read-only object route for readers without R2's S3 API (a local machine), all
//! behind the open tables' read key (`LAKE_READ_SECRET`) or the operator secret. Answers are shaped by `fusou_lake::rest`; errors in the
//! protocol's error model, so that Iceberg clients raise the matching exception.

use fusou_core::index::{self, LakeTable};
use fusou_edge::remote::Service;
use fusou_lake::rest;
use serde_json::Value;
use worker::{Range, Request, Response};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::router::Call;

/// The protocol's error model instead of the service's `{"error": "..."}`.
fn iceberg(outcome: Result<Response, ApiError>) -> Result<Response, ApiError> {
    outcome.or_else(|e| Ok(http::json(e.status, &rest::error(e.status, &e.message))?))
}

fn namespace(call: &Call) -> Result<(), ApiError> {
    match call.param("namespace") {
        Some(ns) if rest::is_ours(ns) => Ok(()),
        _ => Err(ApiError::not_found("no such namespace: the tables are in `fusou`")),
    }
}

pub(crate) async fn config(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    iceberg(auth::lake_reader(&req, ctx).and_then(|_| Ok(http::json(200, &rest::config())?)))
}

pub(crate) async fn namespaces(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    iceberg(
        async {
            auth::lake_reader(&req, ctx)?;
            let parent = req.url()?.query_pairs().find(|(k, _)| k == "parent").map(|(_, v)| v.into_owned());
            Ok(http::json(200, &rest::namespaces(parent.as_deref()))?)
        }
        .await,
    )
}

pub(crate) async fn show_namespace(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    iceberg(auth::lake_reader(&req, ctx).and_then(|_| namespace(call)).and_then(|_| Ok(http::json(200, &rest::namespace())?)))
}

pub(crate) async fn tables(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    iceberg(
        async {
            auth::lake_reader(&req, ctx)?;
            namespace(call)?;
            let tables: Vec<LakeTable> = ctx.db()?.all(index::LAKE_TABLES, &[]).await?;
            Ok(http::json(200, &rest::tables(tables.iter().map(|t| t.name.as_str())))?)
        }
        .await,
    )
}

pub(crate) async fn load_table(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    iceberg(
        async {
            auth::lake_reader(&req, ctx)?;
            namespace(call)?;
            let name = call.param("table").unwrap_or_default();
            let pointer: Option<LakeTable> = ctx.db()?.first(index::LAKE_TABLE, &[name.into()]).await?;
            let pointer = pointer.ok_or_else(|| ApiError::not_found(format!("no such table: fusou.{name}")))?;
            let bytes =
                object(ctx, &pointer.metadata_key).await?.ok_or_else(|| ApiError::new(500, "the table's metadata file is missing"))?;
            let metadata: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::new(500, format!("the table's metadata: {e}")))?;
            let location = ctx.lake_location(&pointer.metadata_key);
            Ok(http::json(200, &rest::load_table(&location, metadata))?)
        }
        .await,
    )
}

/// `GET /lake/object?key=…`: an object of the lake (table metadata under `lake/`, data files
/// under `battle_compacted/`), streamed; with `Range: bytes=…` (one range) the part asked for,
/// 206, as readers of Parquet footers ask. For readers that cannot reach R2's S3 API.
pub(crate) async fn get_object(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    auth::lake_reader(&req, ctx)?;
    let key = req.url()?.query_pairs().find(|(k, _)| k == "key").map(|(_, v)| v.into_owned());
    let key = key.ok_or_else(|| ApiError::bad_request("key is required"))?;
    if !(key.starts_with("lake/") || key.starts_with("battle_compacted/")) || key.split('/').any(|s| s == ".." || s.is_empty()) {
        return Err(ApiError::bad_request("key must name an object under lake/ or battle_compacted/"));
    }
    let range = match req.headers().get("range")? {
        Some(header) => Some(byte_range(&header).ok_or_else(|| ApiError::new(416, format!("unsupported range: {header}")))?),
        None => None,
    };
    let bucket = ctx.bucket()?;
    let mut get = bucket.get(&key);
    if let Some(r) = &range {
        get = get.range(r.clone());
    }
    let object = ctx.remote.call(Service::R2, "a lake object's get", get.execute()).await?;
    let object = object.ok_or_else(|| ApiError::not_found(format!("no object {key}")))?;
    let body = object.body().ok_or_else(|| ApiError::new(416, "the range is outside the object"))?;
    let size = object.size();
    let (status, first, length) = match &range {
        None => (200, 0, size),
        Some(r) => {
            let (first, length) = resolved(r, size);
            (206, first, length)
        }
    };
    let mut response = Response::from_stream(body.stream()?)?.with_status(status);
    let headers = response.headers_mut();
    headers.set("content-type", "application/octet-stream")?;
    headers.set("accept-ranges", "bytes")?;
    headers.set("content-length", &length.to_string())?;
    if status == 206 {
        headers.set("content-range", &format!("bytes {first}-{}/{size}", (first + length).saturating_sub(1)))?;
    }
    Ok(response)
}

/// Largest byte position a range may name: R2's binding takes JavaScript numbers, exact only
/// up to 2^53 - 1 (no object here comes near it).
const MAX_RANGE_POSITION: u64 = (1 << 53) - 1;

/// One range of a `Range: bytes=…` header: `a-b`, `a-` or `-n`. `None` (answered 416) for
/// anything else, a position past [`MAX_RANGE_POSITION`] included; arithmetic is checked.
pub(crate) fn byte_range(header: &str) -> Option<Range> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok().filter(|&n| n <= MAX_RANGE_POSITION);
    match (start.trim(), end.trim()) {
        ("", n) => Some(Range::Suffix { suffix: number(n).filter(|&n| n > 0)? }),
        (a, "") => Some(Range::OffsetToEnd { offset: number(a)? }),
        (a, b) => {
            let (a, b) = (number(a)?, number(b)?);
            Some(Range::OffsetWithLength { offset: a, length: b.checked_sub(a)?.checked_add(1)? })
        }
    }
}

/// The first byte and the length a range covers in an object of `size` bytes.
pub(crate) fn resolved(range: &Range, size: u64) -> (u64, u64) {
    match *range {
        Range::OffsetWithLength { offset, length } => (offset.min(size), length.min(size.saturating_sub(offset))),
        Range::OffsetToEnd { offset } => (offset.min(size), size.saturating_sub(offset)),
        Range::Prefix { length } => (0, length.min(size)),
        Range::Suffix { suffix } => (size.saturating_sub(suffix), suffix.min(size)),
    }
}

async fn object(ctx: &Ctx, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let bucket = ctx.bucket()?;
    let object = ctx.remote.call(Service::R2, "a lake object's get", bucket.get(key).execute()).await?;
    let Some(object) = object else { return Ok(None) };
    let body = object.body().ok_or_else(|| ApiError::new(500, "the object has no body"))?;
    Ok(Some(body.bytes().await?))
}
