//! Answers: JSON bodies, the one error shape `{"error": "..."}` with its precise status, and CORS
//! as the FUSOU client and browsers expect it (any origin; `authorization, content-type`).

use fusou_core::auth::AuthError;
use fusou_core::upload::UploadError;
use serde::Serialize;
use serde_json::json;
use worker::{Response, Result};

/// A refusal or failure, answered as `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub fn misconfigured(what: impl std::fmt::Display) -> Self {
        Self::new(500, format!("the service is misconfigured: {what}"))
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(401, e.to_string())
    }
}

/// A platform failure (D1, R2, a binding): the caller's input was fine, so it is a 500.
impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::new(500, format!("internal error: {e}"))
    }
}

pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

pub fn error(status: u16, message: &str) -> Result<Response> {
    json(status, &json!({ "error": message }))
}

/// Turns a handler's outcome into the answer, logging failures once, in one format.
pub fn respond(route: &str, outcome: std::result::Result<Response, ApiError>) -> Result<Response> {
    match outcome {
        Ok(response) => Ok(response),
        Err(e) => {
            let fields = json!({ "route": route, "status": e.status, "error": e.message });
            if e.status >= 500 {
                fusou_edge::log::error("request.failed", fields);
            } else {
                fusou_edge::log::info("request.refused", fields);
            }
            error(e.status, &e.message)
        }
    }
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
