//! Everything a request needs from `Env`, read in one place. A missing secret makes every route
//! that needs it answer 500 "misconfigured": nothing falls back to a built-in value.

use fusou_core::config::{ConfigError, number};
use fusou_core::upload::{MIN_SECRET_LEN, UploadLimits};
use fusou_edge::bindings;
use fusou_edge::supabase::Supabase;
use worker::{Bucket, D1Database, Env, Queue};

use crate::http::ApiError;

pub struct Ctx {
    pub env: Env,
    pub limits: UploadLimits,
    pub supabase: Supabase,
    /// The legacy HS256 JWT secret of older Supabase projects; unset refuses HS256 tokens.
    pub legacy_jwt_secret: Option<String>,
    upload_secret: Option<String>,
    operator_secret: Option<String>,
    /// How long realtime compaction requests wait in the queue, so one run takes a burst.
    pub realtime_delay_secs: u32,
}

fn text(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

impl Ctx {
    pub fn load(env: Env) -> Result<Self, ApiError> {
        let get = |name: &str| text(&env, name);
        let limits = UploadLimits::from_vars(get).map_err(ApiError::misconfigured)?;
        let supabase_url = get("SUPABASE_URL").ok_or_else(|| ApiError::misconfigured("SUPABASE_URL is not set"))?;
        let service_key =
            get("SUPABASE_SERVICE_KEY").ok_or_else(|| ApiError::misconfigured("SUPABASE_SERVICE_KEY is not set"))?;
        let delay = number(&get, "REALTIME_DELAY_SECONDS", 30).map_err(ApiError::misconfigured)?;
        let realtime_delay_secs = u32::try_from(delay.min(43_200)).unwrap_or(43_200);
        Ok(Self {
            limits,
            supabase: Supabase::new(supabase_url, service_key),
            legacy_jwt_secret: get("SUPABASE_JWT_SECRET"),
            upload_secret: get("UPLOAD_TOKEN_SECRET"),
            operator_secret: get("OPERATOR_SECRET"),
            realtime_delay_secs,
            env,
        })
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

    pub fn db(&self) -> Result<D1Database, ApiError> {
        Ok(self.env.d1(bindings::BATTLE_INDEX_DB)?)
    }

    pub fn bucket(&self) -> Result<Bucket, ApiError> {
        Ok(self.env.bucket(bindings::BATTLE_DATA_BUCKET)?)
    }

    pub fn queue(&self) -> Result<Queue, ApiError> {
        Ok(self.env.queue(bindings::COMPACTION_QUEUE)?)
    }
}
