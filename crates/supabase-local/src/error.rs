//! Errors in PostgREST's shape: `{code, message, details, hint}` with PostgREST's statuses, and
//! the API gateway's `{message}` answers for a missing or wrong API key.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
    /// Answered by the gateway in front of PostgREST, which only says `message`.
    pub gateway: bool,
}

impl ApiError {
    pub(crate) fn pgrst(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), details: None, hint: None, gateway: false }
    }

    pub(crate) fn gateway(message: &str, hint: &str) -> Self {
        Self { hint: Some(hint.into()), gateway: true, ..Self::pgrst(401, "", message) }
    }

    pub(crate) fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// A PostgreSQL error, with the status PostgREST gives its SQLSTATE. `authenticated` says
    /// whether the caller presented a token (42501 is then 403, otherwise 401).
    pub(crate) fn from_postgres(e: &tokio_postgres::Error, authenticated: bool) -> Self {
        let Some(db) = e.as_db_error() else {
            return Self::pgrst(503, "PGRST000", format!("database connection error: {e}"));
        };
        let code = db.code().code();
        Self {
            status: status_for_sqlstate(code, authenticated),
            code: code.into(),
            message: db.message().into(),
            details: db.detail().map(Into::into),
            hint: db.hint().map(Into::into),
            gateway: false,
        }
    }
}

/// PostgREST's table from SQLSTATE to HTTP status.
pub(crate) fn status_for_sqlstate(code: &str, authenticated: bool) -> u16 {
    match code {
        "23503" | "23505" => 409,
        "25006" => 405,
        "P0001" => 400,
        "42883" | "42P01" => 404,
        "42501" if authenticated => 403,
        "42501" => 401,
        _ => match &code[..2] {
            "08" | "53" => 503,
            "0L" | "0P" | "28" => 403,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0" | "HV" | "P0" | "XX" => 500,
            _ => 400,
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = if self.gateway {
            json!({ "message": self.message, "hint": self.hint })
        } else {
            json!({ "code": self.code, "message": self.message, "details": self.details, "hint": self.hint })
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::status_for_sqlstate;

    #[test]
    fn statuses_follow_postgrest() {
        for (code, auth, status) in [
            ("23505", true, 409),
            ("23503", true, 409),
            ("23502", true, 400),
            ("22P02", true, 400),
            ("42501", false, 401),
            ("42501", true, 403),
            ("42P01", true, 404),
            ("08006", true, 503),
            ("XX000", true, 500),
            ("P0001", true, 400),
        ] {
            assert_eq!(status_for_sqlstate(code, auth), status, "{code}");
        }
    }
}
