//! Answers: JSON bodies, the JSON error shape `{"error": "..."}`, and CORS as the FUSOU client
//! and browsers expect it (any origin; `authorization, content-type`).

use serde::Serialize;
use worker::{Error, Response, Result};

pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

pub fn error(status: u16, message: &str) -> Result<Response> {
    json(status, &serde_json::json!({ "error": message }))
}

pub fn not_found() -> Result<Response> {
    error(404, "no such route")
}

/// A failure of the platform, not of the caller: logged in full, answered without details.
pub fn internal(e: &Error) -> Result<Response> {
    worker::console_error!(
        "{}",
        serde_json::json!({ "level": "error", "event": "unhandled", "error": e.to_string() })
    );
    error(500, "internal error")
}

pub fn preflight() -> Result<Response> {
    with_cors(Response::empty()?.with_status(204))
}

pub fn with_cors(mut response: Response) -> Result<Response> {
    let headers = response.headers_mut();
    headers.set("access-control-allow-origin", "*")?;
    headers.set("access-control-allow-methods", "GET, POST, OPTIONS")?;
    headers.set("access-control-allow-headers", "authorization, content-type")?;
    headers.set("access-control-max-age", "86400")?;
    Ok(response)
}
