//! The clean-up the compaction Worker's cron runs (and an operator can run at once), over the
//! same ports as the compaction workflow. Each pass is bounded, idempotent and safe beside live
//! runs; what one pass leaves, the next one finishes.
//!
//! 1. Expired leases are released (a run that died holding one blocks nobody for longer).
//! 2. Orphan outputs: keys a run staged (D1's `staged_outputs`) but never committed, older
//!    than [`CleanupConfig::orphan_grace_ms`]. Their run is first *reaped*, in one D1 statement
//!    that succeeds only while the run holds no lease; a reaped run can never take a lease
//!    again, so it can never commit the keys about to be deleted. Then its multipart uploads are
//!    aborted, its objects deleted and its checkpoints dropped (its work is redone by a new run,
//!    since its fragments stayed pending).
//! 3. Retention: the R2 objects of fragments compacted longer ago than
//!    [`CleanupConfig::retention_ms`] are deleted and the rows marked `purged_at` (the rows stay:
//!    their content hash still answers a repeated upload with 409). Fragments with a quarantined
//!    segment are kept, for inspection.
//!    Compacted files retired longer ago than the retention (merged into larger ones by
//!    consolidation: readers that listed them before have that long to download them) are
//!    deleted, objects and rows.
//! 4. Checkpoints of runs whose last step is older than the retention are dropped. The run is
//!    reaped first (the same conditional statement), so a late redelivery of its message, which
//!    has the same run id, can take no lease and never writes under the keys the run committed.
//!
//!    Their invocation counts go with them.
//! 5. Tombstones of refused uploads (`discarded_uploads`) older than the retention are
//!    forgotten: their keys belong to upload URLs that expired long before.
//!
//! Multipart uploads begun by a run that died before staging their id are left to R2, which
//! aborts unfinished uploads after 7 days.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::commit::{SqlValue, Statement, keyed, text};
use crate::compaction::{Blobs, Sql};
use crate::index::iso;

/// How old things must be before the clean-up removes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupConfig {
    /// Compacted fragments' objects are kept this long after compaction (default 7 days).
    pub retention_ms: u64,
    /// A staged output this old whose run holds no lease is an orphan (default 1 hour: longer
    /// than a run's lease, so a run that is only slow is never reaped).
    pub orphan_grace_ms: u64,
    /// Rows looked at per query, and fragment objects deleted per call (R2 takes 1,000 keys).
    pub page: usize,
    /// Pages of fragments purged per pass, bounding one invocation's subrequests.
    pub max_pages: usize,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self { retention_ms: 7 * 24 * 3_600_000, orphan_grace_ms: 3_600_000, page: 1000, max_pages: 10 }
    }
}

impl CleanupConfig {
    /// The defaults, then `FRAGMENT_RETENTION_DAYS` and `ORPHAN_GRACE_MINUTES`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, crate::config::ConfigError> {
        let d = Self::default();
        let number = |name, default| crate::config::number(&get, name, default);
        Ok(Self {
            retention_ms: number("FRAGMENT_RETENTION_DAYS", d.retention_ms / 86_400_000)?.saturating_mul(86_400_000),
            orphan_grace_ms: number("ORPHAN_GRACE_MINUTES", d.orphan_grace_ms / 60_000)?.saturating_mul(60_000),
            ..d
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    pub leases_released: u64,
    pub runs_reaped: u64,
    pub orphans_deleted: u64,
    pub uploads_aborted: u64,
    pub fragments_purged: u64,
    /// Retired compacted files deleted (objects and rows).
    pub retired_files_deleted: u64,
    /// Finished runs whose checkpoints were dropped.
    pub runs_forgotten: u64,
    /// Tombstones of refused uploads forgotten.
    pub discarded_uploads_forgotten: u64,
    /// More compacted fragments or retired files are due than one pass deletes: the next pass
    /// goes on.
    pub more_due: bool,
}

const RELEASE_EXPIRED_LEASES: &str = "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL, updated_at = ?2 \
     WHERE lease_expires_at IS NOT NULL AND lease_expires_at <= ?1";

/// Staged keys older than `?1`, at most `?2`, each with `committed` = 1 when a commit recorded
/// it after all (two invocations of one run at once can stage a key again after its commit).
const STAGED_BEFORE: &str = "SELECT s.key, s.dataset_id, s.run_id, s.upload_id, \
     EXISTS (SELECT 1 FROM compacted_files c WHERE c.key = s.key) AS committed FROM staged_outputs s \
     WHERE s.staged_at <= ?1 ORDER BY s.staged_at, s.key LIMIT ?2";

/// Reaps run `?2` of dataset `?1` unless it holds the dataset's lease; `?3` now.
const REAP_RUN: &str = "INSERT OR IGNORE INTO reaped_runs (run_id, dataset_id, reaped_at) SELECT ?2, ?1, ?3 \
     WHERE NOT EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2)";

const IS_REAPED: &str = "SELECT 1 AS reaped FROM reaped_runs WHERE run_id = ?1";

const DUE_FOR_PURGE: &str = "SELECT key FROM battle_files \
     WHERE compacted_at IS NOT NULL AND compacted_at <= ?1 AND purged_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM quarantined_segments q WHERE q.fragment_key = battle_files.key) \
     ORDER BY compacted_at, key LIMIT ?2";

/// Compacted files retired at or before `?1`, at most `?2`, oldest first.
const RETIRED_BEFORE: &str = "SELECT key FROM compacted_files WHERE retired_at IS NOT NULL AND retired_at <= ?1 \
     ORDER BY retired_at, key LIMIT ?2";

/// Runs with a checkpoint older than `?1`, at most `?2`.
const RUNS_WITH_OLD_STEPS: &str = "SELECT DISTINCT run_id FROM workflow_steps WHERE completed_at <= ?1 LIMIT ?2";

/// Reaps run `?1` if none of its steps is newer than `?2` and it holds no lease; `?3` now. Its
/// dataset is the one of its outputs ('' for a run that wrote none).
const REAP_FINISHED_RUN: &str = "INSERT OR IGNORE INTO reaped_runs (run_id, dataset_id, reaped_at) \
     SELECT ?1, coalesce((SELECT dataset_id FROM compacted_files WHERE run_id = ?1 LIMIT 1), ''), ?3 \
     WHERE NOT EXISTS (SELECT 1 FROM workflow_steps WHERE run_id = ?1 AND completed_at > ?2) \
     AND NOT EXISTS (SELECT 1 FROM datasets WHERE lease_run_id = ?1)";

const FORGET_REAPED_RUN: &str = "DELETE FROM workflow_steps WHERE run_id = ?1 AND EXISTS (SELECT 1 FROM reaped_runs WHERE run_id = ?1)";

const FORGET_REAPED_RUN_COUNT: &str =
    "DELETE FROM compaction_runs WHERE run_id = ?1 AND EXISTS (SELECT 1 FROM reaped_runs WHERE run_id = ?1)";

/// Tombstones of refused uploads discarded at or before `?1`.
const FORGET_DISCARDED_UPLOADS: &str = "DELETE FROM discarded_uploads WHERE discarded_at <= ?1";

fn column(row: &Map<String, Value>, name: &str) -> Option<String> {
    row.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// One clean-up pass at `now_ms`.
pub async fn clean_up<S: Sql, B: Blobs>(sql: &S, blobs: &B, now_ms: u64, config: &CleanupConfig) -> Result<CleanupReport, String> {
    let mut report = CleanupReport::default();
    let now = iso(now_ms);
    let released =
        sql.batch(&[Statement { sql: RELEASE_EXPIRED_LEASES.into(), params: vec![SqlValue::Int(now_ms as i64), text(&now)] }]).await?;
    report.leases_released = released.iter().sum();
    reap_orphans(sql, blobs, now_ms, config, &mut report).await?;
    let cutoff = iso(now_ms.saturating_sub(config.retention_ms));
    let now = iso(now_ms);
    // A purged fragment's row stays (its hash still refuses a repeated upload); a retired file's goes.
    let fragments = Purge {
        due: DUE_FOR_PURGE,
        forget: |now, keys| keyed("UPDATE battle_files SET purged_at = ?1 WHERE key IN ({keys})", &[text(now)], keys),
    };
    let (purged, more_fragments) = fragments.run(sql, blobs, &cutoff, &now, config).await?;
    let retired = Purge {
        due: RETIRED_BEFORE,
        forget: |_, keys| keyed("DELETE FROM compacted_files WHERE retired_at IS NOT NULL AND key IN ({keys})", &[], keys),
    };
    let (deleted, more_retired) = retired.run(sql, blobs, &cutoff, &now, config).await?;
    report.fragments_purged = purged;
    report.retired_files_deleted = deleted;
    report.more_due = more_fragments || more_retired;
    forget_finished_runs(sql, now_ms, config, &mut report).await?;
    let forgotten = sql.batch(&[Statement { sql: FORGET_DISCARDED_UPLOADS.into(), params: vec![text(&cutoff)] }]).await?;
    report.discarded_uploads_forgotten = forgotten.iter().sum();
    Ok(report)
}

/// An output key a run staged, and its multipart upload if one was begun.
struct Staged {
    key: String,
    upload: Option<String>,
}

async fn reap_orphans<S: Sql, B: Blobs>(
    sql: &S,
    blobs: &B,
    now_ms: u64,
    config: &CleanupConfig,
    report: &mut CleanupReport,
) -> Result<(), String> {
    let cutoff = now_ms.saturating_sub(config.orphan_grace_ms) as i64;
    let staged = sql.rows(STAGED_BEFORE, &[SqlValue::Int(cutoff), SqlValue::Int(config.page as i64)]).await?;
    // (dataset, run) → its staged keys; committed keys are only forgotten.
    let mut runs: BTreeMap<(String, String), Vec<Staged>> = BTreeMap::new();
    let mut committed = Vec::new();
    for row in &staged {
        let (Some(key), Some(dataset), Some(run)) = (column(row, "key"), column(row, "dataset_id"), column(row, "run_id")) else {
            continue;
        };
        if row.get("committed").and_then(Value::as_i64) == Some(1) {
            committed.push(key);
        } else {
            runs.entry((dataset, run)).or_default().push(Staged { key, upload: column(row, "upload_id") });
        }
    }
    if !committed.is_empty() {
        sql.batch(&keyed("DELETE FROM staged_outputs WHERE key IN ({keys})", &[], &committed)).await?;
    }
    for ((dataset, run), staged) in runs {
        sql.rows(REAP_RUN, &[text(&dataset), text(&run), text(&iso(now_ms))]).await?;
        if sql.rows(IS_REAPED, &[text(&run)]).await?.is_empty() {
            continue; // it holds its lease: alive, or about to resume
        }
        report.runs_reaped += 1;
        for Staged { key, upload } in &staged {
            if let Some(upload) = upload {
                // An upload already completed or aborted answers an error: nothing to abort.
                if blobs.abort_multipart(key, upload).await.is_ok() {
                    report.uploads_aborted += 1;
                }
            }
        }
        let keys: Vec<String> = staged.into_iter().map(|s| s.key).collect();
        blobs.delete(&keys).await?;
        report.orphans_deleted += keys.len() as u64;
        let mut forget = keyed("DELETE FROM staged_outputs WHERE key IN ({keys})", &[], &keys);
        forget.push(Statement { sql: "DELETE FROM workflow_steps WHERE run_id = ?1".into(), params: vec![text(&run)] });
        forget.push(Statement { sql: "DELETE FROM compaction_runs WHERE run_id = ?1".into(), params: vec![text(&run)] });
        sql.batch(&forget).await?;
    }
    Ok(())
}

/// Objects past the retention: `due` finds their keys (`?1` cutoff, `?2` page size), `forget`
/// records them gone (given the time now and the keys).
struct Purge {
    due: &'static str,
    forget: fn(&str, &[String]) -> Vec<Statement>,
}

impl Purge {
    /// Deletes up to `max_pages` pages; answers how many, and whether more are due.
    async fn run<S: Sql, B: Blobs>(
        &self,
        sql: &S,
        blobs: &B,
        cutoff: &str,
        now: &str,
        config: &CleanupConfig,
    ) -> Result<(u64, bool), String> {
        let mut done = 0;
        for _ in 0..config.max_pages {
            let due = sql.rows(self.due, &[text(cutoff), SqlValue::Int(config.page as i64)]).await?;
            let keys: Vec<String> = due.iter().filter_map(|r| column(r, "key")).collect();
            // Objects first: if forgetting fails, the next pass deletes them again (a no-op).
            if !keys.is_empty() {
                blobs.delete(&keys).await?;
                sql.batch(&(self.forget)(now, &keys)).await?;
            }
            done += keys.len() as u64;
            if keys.len() < config.page {
                return Ok((done, false));
            }
        }
        Ok((done, true))
    }
}

async fn forget_finished_runs<S: Sql>(sql: &S, now_ms: u64, config: &CleanupConfig, report: &mut CleanupReport) -> Result<(), String> {
    let cutoff = text(&iso(now_ms.saturating_sub(config.retention_ms)));
    let now = text(&iso(now_ms));
    let rows = sql.rows(RUNS_WITH_OLD_STEPS, &[cutoff.clone(), SqlValue::Int(config.page as i64)]).await?;
    let runs: Vec<String> = rows.iter().filter_map(|r| column(r, "run_id")).collect();
    // Reap and forget in one batch per run group: a run still going (a step newer than the
    // cutoff, or its lease) is neither reaped nor forgotten.
    for group in runs.chunks(50) {
        let statements: Vec<Statement> = group
            .iter()
            .flat_map(|run| {
                [
                    Statement { sql: REAP_FINISHED_RUN.into(), params: vec![text(run), cutoff.clone(), now.clone()] },
                    Statement { sql: FORGET_REAPED_RUN.into(), params: vec![text(run)] },
                    Statement { sql: FORGET_REAPED_RUN_COUNT.into(), params: vec![text(run)] },
                ]
            })
            .collect();
        let changed = sql.batch(&statements).await?;
        report.runs_forgotten += changed.iter().skip(1).step_by(3).filter(|&&n| n > 0).count() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
