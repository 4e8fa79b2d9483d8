//! Answers: JSON bodies, the one error shape `{"error": "..."}` with its precise status, and CORS
//! as the FUSOU client and browsers expect it (any origin; `authorization, content-type`).

use fusou_auth::AuthError;
use fusou_core::upload::UploadError;
use serde::Serialize;
use serde_json::json;
use worker::{Response, Result};

/// A refusal or failure, answered as `{"error": message}` with `status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    /// Seconds after which the caller may try again (`Retry-After`, with 429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }
    /// 429: the caller is over a rate limit, and may try again after `retry_after` seconds.
    pub(crate) fn too_many(message: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(429, message) }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub(crate) fn misconfigured(what: impl std::fmt::Display) -> Self {
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

/// A remote call that failed (500) or did not answer in time (503): the caller's input was
/// fine, and the FUSOU client retries either later.
impl From<fusou_edge::remote::RemoteError> for ApiError {
    fn from(e: fusou_edge::remote::RemoteError) -> Self {
        let status = if e.timed_out_ms.is_some() { 503 } else { 500 };
        Self::new(status, e.to_string())
    }
}

/// A platform failure (D1, R2, a binding): the caller's input was fine, so it is a 500.
impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::new(500, format!("internal error: {e}"))
    }
}

/// The request's body, refused with 413 as soon as it is known to be longer than `max` bytes:
/// by its declared length, or, when it declares none (a chunked body) or declares too little,
/// by counting it as it streams, so that no body larger than `max` is ever held.
pub(crate) async fn body_within(req: &mut worker::Request, max: u64, what: &str) -> std::result::Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let declared = req.headers().get("content-length")?.and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > max) {
        return Err(ApiError::new(413, format!("{what} is {len} bytes, more than the {max} allowed")));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = req.stream()?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (body.len() + chunk.len()) as u64 > max {
            // Nothing more is kept. Up to `max` (at least 1 MiB) more bytes are read and
            // dropped, so that a client that sent a little too much gets its answer after its
            // whole request, on a connection it can use again; past that, the answer goes at once.
            let mut dropped = 0u64;
            while dropped <= max.max(1 << 20)
                && let Some(Ok(chunk)) = stream.next().await
            {
                dropped += chunk.len() as u64;
            }
            return Err(ApiError::new(413, format!("{what} is more than the {max} bytes allowed")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(crate) fn json<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

pub(crate) fn error(status: u16, message: &str) -> Result<Response> {
    json(status, &json!({ "error": message }))
}

/// Turns a handler's outcome into the answer, logging failures once, in one format.
pub(crate) fn respond(route: &str, outcome: std::result::Result<Response, ApiError>) -> Result<Response> {
    match outcome {
        Ok(response) => Ok(response),
        Err(e) => {
            // Refusals are info: the caller's doing, not the service's. A failure's cause (a
            // D1 or R2 error's text, a configuration) goes to the log only, under an incident
            // id the answer names.
            if e.status >= 500 {
                let incident = uuid::Uuid::new_v4().simple().to_string();
                let answer = public_failure(e.status, &incident);
                fusou_edge::log::error(
                    "request.failed",
                    json!({ "route": route, "status": e.status, "error": e.message, "incident": incident }),
                );
                error(e.status, &answer)
            } else {
                fusou_edge::log::info("request.refused", json!({ "route": route, "status": e.status, "error": e.message }));
                let mut response = error(e.status, &e.message)?;
                if let Some(seconds) = e.retry_after {
                    response.headers_mut().set("retry-after", &seconds.to_string())?;
                }
                Ok(response)
            }
        }
    }
}

/// What a failure's answer says: never its cause, which may quote the platform's errors.
pub(crate) fn public_failure(status: u16, incident: &str) -> String {
    match status {
        503 => format!("a service this one depends on did not answer in time; try again later (incident {incident})"),
        _ => format!("internal error (incident {incident}); the service logged its cause"),
    }
}

pub(crate) fn preflight() -> Result<Response> {
    with_cors(Response::empty()?.with_status(204))
}

pub(crate) fn with_cors(mut response: Response) -> Result<Response> {
    let headers = response.headers_mut();
    headers.set("access-control-allow-origin", "*")?;
    headers.set("access-control-allow-methods", "GET, POST, OPTIONS")?;
    headers.set("access-control-allow-headers", "authorization, content-type")?;
    headers.set("access-control-max-age", "86400")?;
    Ok(response)
}
