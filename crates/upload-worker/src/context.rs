//! Everything a request needs from `Env`, read in one place. A missing or malformed setting
//! makes every route answer 500 "misconfigured": nothing falls back to a built-in value.

use std::future::Future;
use std::ops::Deref;

use fusou_core::config::{ConfigError, UploadSettings};
use fusou_core::upload::UploadLimits;
use fusou_edge::context::WorkerEnv;
use worker::{Context, Env};

use crate::http::ApiError;

/// A request's context: the shared one ([`WorkerEnv`]: settings both Workers read, bindings,
/// the operator check) and the upload Worker's own settings.
pub(crate) struct Ctx {
    worker: WorkerEnv,
    /// What an upload may be.
    pub limits: UploadLimits,
    /// The legacy HS256 JWT secret of older Supabase projects; unset refuses HS256 tokens.
    pub legacy_jwt_secret: Option<String>,
    upload_secret: Option<String>,
    /// How long realtime compaction requests wait in the queue, so one run takes a burst.
    pub realtime_delay_secs: u32,
    /// Where the open tables' readers find the bucket's keys (`LAKE_LOCATION`).
    pub lake_root: String,
    /// The open tables' read-only bearer (`LAKE_READ_SECRET`).
    pub lake_read_secret: Option<String>,
    /// The request's execution context: work deferred past the answer ([`Ctx::defer`]).
    context: Option<Context>,
}

impl Deref for Ctx {
    type Target = WorkerEnv;

    fn deref(&self) -> &WorkerEnv {
        &self.worker
    }
}

impl Ctx {
    /// Reads the settings; `context` is the request's (none for the cron).
    pub(crate) fn load(env: Env, context: Option<Context>) -> Result<Self, ApiError> {
        let own = |vars: &fusou_core::config::Vars<'_>| -> Result<_, ConfigError> {
            Ok((UploadSettings::from_vars(vars)?, fusou_lake::rest::lake_root(vars)?))
        };
        let (worker, (settings, lake_root)) = WorkerEnv::load(env, own).map_err(ApiError::misconfigured)?;
        let UploadSettings { limits, upload_secret, legacy_jwt_secret, realtime_delay_secs, lake_read_secret } = settings;
        Ok(Self { worker, limits, legacy_jwt_secret, upload_secret, realtime_delay_secs, lake_root, lake_read_secret, context })
    }

    /// The location readers use for bucket key `key`.
    pub(crate) fn lake_location(&self, key: &str) -> String {
        format!("{}/{key}", self.lake_root)
    }

    /// The secret that signs upload grants (core refuses a short one).
    pub(crate) fn upload_secret(&self) -> &str {
        self.upload_secret.as_deref().unwrap_or_default()
    }

    /// Runs `work` after the answer is sent (the request's `waitUntil`); without a request
    /// (the cron), at once.
    pub(crate) async fn defer(&self, work: impl Future<Output = ()> + 'static) {
        match &self.context {
            Some(context) => context.wait_until(work),
            None => work.await,
        }
    }
}
