//! Everything a request needs from `Env`, read in one place. A missing or malformed setting
//! makes every route answer 500 "misconfigured": nothing falls back to a built-in value.

use std::future::Future;

use fusou_core::config::{ConfigError, Platform, number};
use fusou_core::upload::{MIN_SECRET_LEN, UploadLimits};
use fusou_edge::bindings;
use fusou_edge::d1::Db;
use fusou_edge::remote::Remote;
use fusou_edge::supabase::Supabase;
use worker::{Bucket, Context, Env, Queue};

use crate::http::ApiError;

pub struct Ctx {
    pub env: Env,
    pub platform: Platform,
    pub remote: Remote,
    pub limits: UploadLimits,
    pub supabase: Supabase,
    /// The legacy HS256 JWT secret of older Supabase projects; unset refuses HS256 tokens.
    pub legacy_jwt_secret: Option<String>,
    upload_secret: Option<String>,
    operator_secret: Option<String>,
    /// How long realtime compaction requests wait in the queue, so one run takes a burst.
    pub realtime_delay_secs: u32,
    /// Where the open tables' readers find the bucket's keys (`LAKE_LOCATION`).
    pub lake_root: String,
    /// The request's execution context: work deferred past the answer ([`Ctx::defer`]).
    context: Option<Context>,
}

impl Ctx {
    /// Reads the settings; `context` is the request's (none for the cron).
    pub fn load(env: Env, context: Option<Context>) -> Result<Self, ApiError> {
        let get = |name: &str| fusou_edge::var(&env, name);
        let platform = Platform::from_vars(get).map_err(ApiError::misconfigured)?;
        let remote = fusou_edge::remote(&platform);
        let limits = UploadLimits::from_vars(get).map_err(ApiError::misconfigured)?;
        let supabase_url = get("SUPABASE_URL").ok_or_else(|| ApiError::misconfigured("SUPABASE_URL is not set"))?;
        let service_key = get("SUPABASE_SERVICE_KEY").ok_or_else(|| ApiError::misconfigured("SUPABASE_SERVICE_KEY is not set"))?;
        let delay = number(&get, "REALTIME_DELAY_SECONDS", 30).map_err(ApiError::misconfigured)?;
        // A queue delays a message by at most 12 hours.
        let realtime_delay_secs = u32::try_from(delay.min(43_200)).unwrap_or(43_200);
        let lake_root = fusou_lake::rest::lake_root(get).map_err(ApiError::misconfigured)?;
        Ok(Self {
            lake_root,
            limits,
            supabase: Supabase::new(supabase_url, service_key, remote),
            legacy_jwt_secret: get("SUPABASE_JWT_SECRET"),
            upload_secret: get("UPLOAD_TOKEN_SECRET"),
            operator_secret: get("OPERATOR_SECRET"),
            realtime_delay_secs,
            platform,
            remote,
            context,
            env,
        })
    }

    /// The location readers use for bucket key `key`.
    pub fn lake_location(&self, key: &str) -> String {
        format!("{}/{key}", self.lake_root)
    }

    /// The secret that signs upload grants (core refuses a short one).
    pub fn upload_secret(&self) -> &str {
        self.upload_secret.as_deref().unwrap_or_default()
    }

    /// The operator secret, if it is set and long enough.
    pub fn operator_secret(&self) -> Result<&str, ApiError> {
        match self.operator_secret.as_deref() {
            Some(s) if s.len() >= MIN_SECRET_LEN => Ok(s),
            _ => Err(ApiError::misconfigured(ConfigError {
                name: "OPERATOR_SECRET",
                value: String::new(),
                expected: "set, at least 32 characters",
            })),
        }
    }

    pub fn db(&self) -> Result<Db, ApiError> {
        Ok(Db::new(self.env.d1(bindings::BATTLE_INDEX_DB)?, self.remote))
    }

    pub fn bucket(&self) -> Result<Bucket, ApiError> {
        Ok(self.env.bucket(bindings::BATTLE_DATA_BUCKET)?)
    }

    pub fn queue(&self) -> Result<Queue, ApiError> {
        Ok(self.env.queue(bindings::COMPACTION_QUEUE)?)
    }

    /// Runs `work` after the answer is sent (the request's `waitUntil`); without a request
    /// (the cron), at once.
    pub async fn defer(&self, work: impl Future<Output = ()> + 'static) {
        match &self.context {
            Some(context) => context.wait_until(work),
            None => work.await,
        }
    }
}
