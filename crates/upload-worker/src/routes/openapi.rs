//! `GET /openapi.json`: the OpenAPI 3 document of every route (kept true by a test).

use worker::{Request, Response, RouteContext};

pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn handle(_req: Request, _rc: RouteContext<()>) -> worker::Result<Response> {
    let mut response = Response::ok(DOCUMENT)?;
    response.headers_mut().set("content-type", "application/json")?;
    Ok(response)
}
