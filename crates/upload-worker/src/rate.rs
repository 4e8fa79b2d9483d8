//! Per-user rate limits, through the platform's Rate Limiting bindings (`[[ratelimits]]` in
//! `wrangler.toml`, which `wrangler dev` runs locally). The limits are the bindings' settings;
//! the defaults are far above what the FUSOU client does (an upload per battle, a dataset per
//! install, `sanitize-state` when its owner asks) and far below what would let one account
//! crowd out the others. A refusal is 429 with `Retry-After`. The FUSOU client treats a 4xx as
//! its own error and does not retry it, so a limit a real client meets would lose its data:
//! that is why they are generous.
//!
//! The platform's counters are per location and eventually consistent: a bound on abuse, not an
//! exact quota.

use fusou_edge::remote::Service;
use uuid::Uuid;

use crate::context::Ctx;
use crate::http::ApiError;

/// What is limited, each by its own binding and keyed by the user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Uploads (handshakes of the two-phase upload, one-step uploads): default 600 a minute.
    Uploads,
    /// Datasets an upload claims: default 10 a minute.
    NewDatasets,
    /// `POST /sanitize-state`: default 10 a minute.
    Sanitize,
}

impl Limit {
    pub(crate) const fn binding(self) -> &'static str {
        match self {
            Limit::Uploads => "UPLOAD_RATE_LIMIT",
            Limit::NewDatasets => "DATASET_RATE_LIMIT",
            Limit::Sanitize => "SANITIZE_RATE_LIMIT",
        }
    }

    const fn what(self) -> &'static str {
        match self {
            Limit::Uploads => "uploads",
            Limit::NewDatasets => "new datasets",
            Limit::Sanitize => "sanitize-state requests",
        }
    }
}

/// The bindings' period: the platform counts per 10 or 60 seconds; these are per minute.
const PERIOD_SECONDS: u32 = 60;

/// Counts one `limit` for `user`; 429 with `Retry-After` when over it.
pub(crate) async fn check(ctx: &Ctx, limit: Limit, user: Uuid) -> Result<(), ApiError> {
    let limiter = ctx.rate_limiter(limit.binding()).map_err(|_| ApiError::misconfigured(format!("no {} binding", limit.binding())))?;
    let outcome = ctx.remote.call(Service::RateLimit, "a rate limit", limiter.limit(user.to_string())).await?;
    if outcome.success {
        return Ok(());
    }
    Err(ApiError::too_many(format!("too many {} from this user: try again in a minute", limit.what()), PERIOD_SECONDS))
}
