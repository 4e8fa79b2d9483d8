//! Everything the compaction Worker needs from `Env`, read in one place and as strictly as the
//! upload Worker reads its own: a malformed setting is an error, never a silent default (the
//! defaults live in `fusou-core`, with the types they configure).

use fusou_compaction::RunConfig;
use fusou_compaction::cleanup::CleanupConfig;
use fusou_core::config::{ConfigError, Platform, number};
use fusou_core::upload::MIN_SECRET_LEN;
use fusou_edge::bindings;
use fusou_edge::d1::Db;
use fusou_edge::remote::Remote;
use fusou_edge::supabase::Supabase;
use worker::{Bucket, Env, Queue};

pub struct Ctx {
    pub env: Env,
    pub platform: Platform,
    pub remote: Remote,
    pub run: RunConfig,
    pub cleanup: CleanupConfig,
    pub supabase: Supabase,
    /// The delay before a failed message is delivered again (`COMPACTION_RETRY_DELAY_SECONDS`).
    pub retry_delay_secs: u32,
    operator_secret: Option<String>,
}

/// Why the Worker cannot run: a setting is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("the compaction service is misconfigured: {0}")]
pub struct Misconfigured(pub String);

impl From<ConfigError> for Misconfigured {
    fn from(e: ConfigError) -> Self {
        Self(e.to_string())
    }
}

impl Ctx {
    pub fn load(env: Env) -> Result<Self, Misconfigured> {
        let get = |name: &str| fusou_edge::var(&env, name);
        let platform = Platform::from_vars(get)?;
        let remote = fusou_edge::remote(&platform);
        let required = |name: &str| get(name).ok_or_else(|| Misconfigured(format!("{name} is not set")));
        let supabase = Supabase::new(required("SUPABASE_URL")?, required("SUPABASE_SERVICE_KEY")?, remote);
        let retry_delay_secs = number(&get, "COMPACTION_RETRY_DELAY_SECONDS", 10)?;
        Ok(Self {
            run: RunConfig::from_vars(get)?,
            cleanup: CleanupConfig::from_vars(get)?,
            supabase,
            // A queue delays a retry by at most 12 hours.
            retry_delay_secs: u32::try_from(retry_delay_secs.min(43_200)).unwrap_or(43_200),
            operator_secret: get("OPERATOR_SECRET"),
            platform,
            remote,
            env,
        })
    }

    /// The operator secret, if it is set and long enough.
    pub fn operator_secret(&self) -> Result<&str, Misconfigured> {
        match self.operator_secret.as_deref() {
            Some(s) if s.len() >= MIN_SECRET_LEN => Ok(s),
            _ => Err(Misconfigured("OPERATOR_SECRET is not set or shorter than 32 characters".into())),
        }
    }

    pub fn db(&self) -> worker::Result<Db> {
        Ok(Db::new(self.env.d1(bindings::BATTLE_INDEX_DB)?, self.remote))
    }

    pub fn bucket(&self) -> worker::Result<Bucket> {
        self.env.bucket(bindings::BATTLE_DATA_BUCKET)
    }

    pub fn queue(&self) -> worker::Result<Queue> {
        self.env.queue(bindings::COMPACTION_QUEUE)
    }
}
