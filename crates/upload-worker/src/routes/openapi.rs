//! `GET /openapi.json`: the OpenAPI 3 document of every route (kept true by a test).

use worker::{Request, Response};

use crate::context::Ctx;
use crate::http::ApiError;
use crate::router::Call;

pub(crate) const DOCUMENT: &str = include_str!("../../openapi.json");

pub(crate) async fn handle(_req: Request, _ctx: &Ctx, _call: &Call) -> Result<Response, ApiError> {
    let mut response = Response::ok(DOCUMENT)?;
    response.headers_mut().set("content-type", "application/json")?;
    Ok(response)
}
