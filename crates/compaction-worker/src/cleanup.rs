//! The clean-up pass (`fusou_compaction::cleanup`) over D1 and R2: run by this Worker's cron, and at
//! once by an operator through the upload Worker (`POST /compact/cleanup`, service binding).

use fusou_compaction::cleanup::{self, CleanupConfig, CleanupReport};
use fusou_compaction::rollup::RollupConfig;
use serde::Deserialize;

use crate::context::Ctx;
use crate::ports::{D1, R2};

/// Ages a test stack may choose for one pass (refused elsewhere: on a deployed Worker they
/// would let a caller delete every compacted fragment's recovery copy at once).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Overrides {
    pub retention_seconds: Option<u64>,
    pub orphan_grace_seconds: Option<u64>,
    /// Roll up periods of this many files the tables list on their own (a small stack has few),
    /// and only this period.
    pub rollup_min_files: Option<u64>,
    pub rollup_period: Option<String>,
}

impl Overrides {
    pub(crate) fn is_empty(&self) -> bool {
        self.retention_seconds.is_none()
            && self.orphan_grace_seconds.is_none()
            && self.rollup_min_files.is_none()
            && self.rollup_period.is_none()
    }

    /// The configured clean-up with these ages instead.
    fn apply(&self, config: &CleanupConfig) -> CleanupConfig {
        CleanupConfig {
            retention_ms: self.retention_seconds.map_or(config.retention_ms, |s| s.saturating_mul(1000)),
            orphan_grace_ms: self.orphan_grace_seconds.map_or(config.orphan_grace_ms, |s| s.saturating_mul(1000)),
            rollup: RollupConfig {
                min_files: self.rollup_min_files.unwrap_or(config.rollup.min_files),
                period: self.rollup_period.clone().or(config.rollup.period.clone()),
                ..config.rollup.clone()
            },
            ..config.clone()
        }
    }
}

/// One pass.
pub(crate) async fn run(ctx: &Ctx, overrides: &Overrides) -> Result<CleanupReport, String> {
    let db = D1(ctx.db().map_err(|e| e.to_string())?);
    let bucket = R2 { bucket: ctx.bucket().map_err(|e| e.to_string())?, remote: ctx.remote };
    cleanup::clean_up(&db, &bucket, &fusou_edge::WorkerClock, &overrides.apply(&ctx.cleanup)).await.map_err(|e| e.to_string())
}
