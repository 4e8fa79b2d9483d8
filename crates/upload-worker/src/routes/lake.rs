//! The open tables' Iceberg REST catalog (`/iceberg/v1/…`: config, namespaces, tables, load
//! table) and a read-only object route for readers without R2's S3 API (a local machine), all
//! behind the operator secret. Answers are shaped by `fusou_core::lake::catalog`; errors in the
//! protocol's error model, so that Iceberg clients raise the matching exception.

use fusou_core::index::{self, LakeTable};
use fusou_core::lake::catalog;
use fusou_edge::remote::Service;
use serde_json::Value;
use worker::{Request, Response};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::router::Call;

/// The protocol's error model instead of the service's `{"error": "..."}`.
fn iceberg(outcome: Result<Response, ApiError>) -> Result<Response, ApiError> {
    outcome.or_else(|e| Ok(http::json(e.status, &catalog::error(e.status, &e.message))?))
}

fn namespace(call: &Call) -> Result<(), ApiError> {
    match call.param("namespace") {
        Some(ns) if catalog::is_ours(ns) => Ok(()),
        _ => Err(ApiError::not_found("no such namespace: the tables are in `fusou`")),
    }
}

pub async fn config(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    iceberg(auth::operator(&req, ctx).and_then(|_| Ok(http::json(200, &catalog::config())?)))
}

pub async fn namespaces(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    iceberg(
        async {
            auth::operator(&req, ctx)?;
            let parent = req.url()?.query_pairs().find(|(k, _)| k == "parent").map(|(_, v)| v.into_owned());
            Ok(http::json(200, &catalog::namespaces(parent.as_deref()))?)
        }
        .await,
    )
}

pub async fn show_namespace(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    iceberg(auth::operator(&req, ctx).and_then(|_| namespace(call)).and_then(|_| Ok(http::json(200, &catalog::namespace())?)))
}

pub async fn tables(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    iceberg(
        async {
            auth::operator(&req, ctx)?;
            namespace(call)?;
            let tables: Vec<LakeTable> = ctx.db()?.all(index::LAKE_TABLES, &[]).await?;
            Ok(http::json(200, &catalog::tables(tables.iter().map(|t| t.name.as_str())))?)
        }
        .await,
    )
}

pub async fn load_table(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    iceberg(
        async {
            auth::operator(&req, ctx)?;
            namespace(call)?;
            let name = call.param("table").unwrap_or_default();
            let pointer: Option<LakeTable> = ctx.db()?.first(index::LAKE_TABLE, &[name.into()]).await?;
            let pointer = pointer.ok_or_else(|| ApiError::not_found(format!("no such table: fusou.{name}")))?;
            let bytes =
                object(ctx, &pointer.metadata_key).await?.ok_or_else(|| ApiError::new(500, "the table's metadata file is missing"))?;
            let metadata: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::new(500, format!("the table's metadata: {e}")))?;
            let location = ctx.lake_location(&pointer.metadata_key);
            Ok(http::json(200, &catalog::load_table(&location, metadata))?)
        }
        .await,
    )
}

/// `GET /lake/object?key=…`: an object of the lake (table metadata under `lake/`, data files
/// under `battle_compacted/`), whole; for readers that cannot reach R2's S3 API.
pub async fn get_object(req: Request, ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    auth::operator(&req, ctx)?;
    let key = req.url()?.query_pairs().find(|(k, _)| k == "key").map(|(_, v)| v.into_owned());
    let key = key.ok_or_else(|| ApiError::bad_request("key is required"))?;
    if !(key.starts_with("lake/") || key.starts_with("battle_compacted/")) || key.split('/').any(|s| s == ".." || s.is_empty()) {
        return Err(ApiError::bad_request("key must name an object under lake/ or battle_compacted/"));
    }
    let bytes = object(ctx, &key).await?.ok_or_else(|| ApiError::not_found(format!("no object {key}")))?;
    let mut response = Response::from_bytes(bytes)?;
    response.headers_mut().set("content-type", "application/octet-stream")?;
    Ok(response)
}

async fn object(ctx: &Ctx, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let bucket = ctx.bucket()?;
    let object = ctx.remote.call(Service::R2, "a lake object's get", bucket.get(key).execute()).await?;
    let Some(object) = object else { return Ok(None) };
    let body = object.body().ok_or_else(|| ApiError::new(500, "the object has no body"))?;
    Ok(Some(body.bytes().await?))
}
