//! The clean-up pass (`fusou_core::cleanup`) over D1 and R2: run by this Worker's cron, and at
//! once by an operator through the upload Worker (`POST /compact/cleanup`, service binding).

use fusou_core::cleanup::{self, CleanupConfig, CleanupReport};
use fusou_edge::bindings;
use serde::Deserialize;
use worker::Env;

use crate::ports::{D1, R2};

/// What an operator may override for one pass (the cron uses the configured values).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    pub retention_seconds: Option<u64>,
    pub orphan_grace_seconds: Option<u64>,
}

/// The configured clean-up: `FRAGMENT_RETENTION_DAYS` (default 7) and
/// `ORPHAN_GRACE_MINUTES` (default 60), then the overrides.
pub fn config(env: &Env, overrides: &Overrides) -> CleanupConfig {
    let number = |name: &str| env.var(name).ok().and_then(|v| v.to_string().parse::<u64>().ok());
    let defaults = CleanupConfig::default();
    CleanupConfig {
        retention_ms: overrides
            .retention_seconds
            .map(|s| s * 1000)
            .or(number("FRAGMENT_RETENTION_DAYS").map(|d| d * 86_400_000))
            .unwrap_or(defaults.retention_ms),
        orphan_grace_ms: overrides
            .orphan_grace_seconds
            .map(|s| s * 1000)
            .or(number("ORPHAN_GRACE_MINUTES").map(|m| m * 60_000))
            .unwrap_or(defaults.orphan_grace_ms),
        ..defaults
    }
}

/// One pass.
pub async fn run(env: &Env, overrides: &Overrides) -> Result<CleanupReport, String> {
    let db = D1(env.d1(bindings::BATTLE_INDEX_DB).map_err(|e| e.to_string())?);
    let bucket = R2(env.bucket(bindings::BATTLE_DATA_BUCKET).map_err(|e| e.to_string())?);
    cleanup::clean_up(&db, &bucket, fusou_edge::now_ms(), &config(env, overrides)).await
}
