//! The clean-up the compaction Worker's cron runs (and an operator can run at once), over the
//! same ports as the compaction workflow. Each pass is bounded, idempotent and safe beside live
//! runs; what one pass leaves, the next one finishes.
//!
//! 0. The open tables ([`fusou_lake::maintain`]): snapshots past their retention expired,
//!    objects no kept snapshot needs deleted a grace period after. A retired compacted file is
//!    deleted below only once no snapshot its table kept a grace period ago lists it. (The
//!    tables' commits are the committer's alone.)
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
//! 6. Periods due are rolled up ([`crate::rollup`]); the committer lists the roll-ups.
//!
//! Multipart uploads begun by a run that died before staging their id are left to R2, which
//! aborts unfinished uploads after 7 days.

use std::collections::BTreeMap;

use serde::Serialize;

use fusou_core::config::{ConfigError, Vars};
use fusou_core::index::{self, KeyRow, RunRow, SqlValue, StagedOutput, Statement, iso, keyed, text};
use fusou_lake::commit::LakeConfig;
use fusou_ports::{Blobs, Clock, PortResult, Sql};

/// How old things must be before the clean-up removes them.
#[derive(Debug, Clone, PartialEq)]
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
    /// The open tables' location and snapshot retention.
    pub lake: fusou_lake::commit::LakeConfig,
    /// Which periods are rolled up, and how.
    pub rollup: crate::rollup::RollupConfig,
    /// How roll-ups write (the engine's defaults: the Worker's memory bound).
    pub engine: fusou_engine::EngineConfig,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            retention_ms: 7 * 24 * 3_600_000,
            orphan_grace_ms: 3_600_000,
            page: 1000,
            max_pages: 10,
            lake: Default::default(),
            rollup: Default::default(),
            engine: Default::default(),
        }
    }
}

impl CleanupConfig {
    /// The defaults, then `FRAGMENT_RETENTION_DAYS` and `ORPHAN_GRACE_MINUTES`, over the open
    /// tables' `lake`.
    pub fn from_vars(vars: &Vars<'_>, lake: LakeConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            retention_ms: vars.number("FRAGMENT_RETENTION_DAYS")?.saturating_mul(86_400_000),
            orphan_grace_ms: vars.number("ORPHAN_GRACE_MINUTES")?.saturating_mul(60_000),
            rollup: crate::rollup::RollupConfig::from_vars(vars)?,
            lake,
            ..Self::default()
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// The open tables: commits of what runs left pending, snapshots expired, objects deleted.
    pub lake: fusou_lake::Maintenance,
    /// Periods rolled up (for the committer to list).
    pub rollups: crate::rollup::RollupPass,
    /// More compacted fragments or retired files are due than one pass deletes: the next pass
    /// goes on.
    pub more_due: bool,
    /// Parts that failed this pass (the others ran); the tables' own are in `lake.failures`.
    pub failures: Vec<PartFailure>,
}

/// One clean-up pass, at the clock's time. Its parts run one after another and each on its
/// own: a part that fails is reported in [`CleanupReport::failures`] and the others still run,
/// so that no table, object or row can hold up the rest of the clean-up. `Err` only when
/// every part failed (D1 or R2 is unreachable).
pub async fn clean_up<S: Sql, B: Blobs, C: Clock>(sql: &S, blobs: &B, clock: &C, config: &CleanupConfig) -> PortResult<CleanupReport> {
    let now_ms = clock.now_ms();
    // First the tables, so that the retired files they no longer list may go below.
    let lake = fusou_lake::maintain(sql, blobs, clock, &config.lake).await;
    let mut report = CleanupReport { lake, ..CleanupReport::default() };
    let mut failures = Vec::new();
    let mut note = |part: &str, outcome: PortResult<()>| {
        if let Err(e) = outcome {
            failures.push(PartFailure { part: part.to_owned(), error: e.to_string() });
        }
    };
    let now = iso(now_ms);
    let cutoff = iso(now_ms.saturating_sub(config.retention_ms));
    let released = sql.run(index::RELEASE_EXPIRED_LEASES, &[SqlValue::Null, text(&now), SqlValue::from(now_ms)]).await;
    note("leases", released.map(|n| report.leases_released = n));
    note("orphans", reap_orphans(sql, blobs, now_ms, config, &mut report).await);
    // A purged fragment's row stays (its hash still refuses a repeated upload); a retired file's goes.
    let fragments = Purge { due: index::DUE_FOR_PURGE, also: None, forget: |now, keys| keyed(index::MARK_PURGED, &[text(now)], keys) };
    let purged = fragments.run(sql, blobs, &cutoff, &now, config).await;
    note(
        "fragments",
        purged.map(|(n, more)| {
            report.fragments_purged = n;
            report.more_due |= more;
        }),
    );
    // A file a table listed waits, besides, for the grace period after the table's last
    // snapshot listing it expired.
    let graced = SqlValue::Int(config.lake.retention.graced(now_ms));
    let retired = Purge { due: index::RETIRED_BEFORE, also: Some(graced), forget: |_, keys| keyed(index::FORGET_RETIRED, &[], keys) };
    let deleted = retired.run(sql, blobs, &cutoff, &now, config).await;
    note(
        "retired files",
        deleted.map(|(n, more)| {
            report.retired_files_deleted = n;
            report.more_due |= more;
        }),
    );
    note("finished runs", forget_finished_runs(sql, now_ms, config, &mut report).await);
    let forgotten = sql.run(index::FORGET_DISCARDED_UPLOADS, &[text(&cutoff)]).await;
    note("tombstones", forgotten.map(|n| report.discarded_uploads_forgotten = n));
    let rolled = crate::rollup::roll_up_due(sql, blobs, clock, &config.rollup, &config.engine).await;
    note("roll-ups", rolled.map(|pass| report.rollups = pass));
    if failures.len() == PARTS {
        return Err(failures.into_iter().map(|f| format!("{}: {}", f.part, f.error)).collect::<Vec<_>>().join("; ").into());
    }
    report.failures = failures;
    Ok(report)
}

/// The parts of a pass after the tables.
const PARTS: usize = 7;

/// A part of the clean-up that failed this pass, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartFailure {
    pub part: String,
    pub error: String,
}

async fn reap_orphans<S: Sql, B: Blobs>(
    sql: &S,
    blobs: &B,
    now_ms: u64,
    config: &CleanupConfig,
    report: &mut CleanupReport,
) -> PortResult<()> {
    let cutoff = now_ms.saturating_sub(config.orphan_grace_ms) as i64;
    let staged: Vec<StagedOutput> = sql.query(index::STAGED_BEFORE, &[SqlValue::Int(cutoff), SqlValue::from(config.page as u64)]).await?;
    // (dataset, run) → its staged keys; committed keys are only forgotten.
    let mut runs: BTreeMap<(String, String), Vec<StagedOutput>> = BTreeMap::new();
    let mut committed = Vec::new();
    for s in staged {
        if s.committed {
            committed.push(s.key);
        } else {
            runs.entry((s.dataset_id.clone(), s.run_id.clone())).or_default().push(s);
        }
    }
    if !committed.is_empty() {
        sql.batch(&keyed(index::UNSTAGE, &[], &committed)).await?;
    }
    for ((dataset, run), staged) in runs {
        sql.run(index::REAP_RUN, &[text(&dataset), text(&run), text(&iso(now_ms))]).await?;
        if sql.query::<serde::de::IgnoredAny>(index::IS_REAPED, &[text(&run)]).await?.is_empty() {
            continue; // it holds its lease: alive, or about to resume
        }
        report.runs_reaped += 1;
        for StagedOutput { key, upload_id, .. } in &staged {
            if let Some(upload) = upload_id {
                // An upload already completed or aborted answers an error: nothing to abort.
                if blobs.abort_multipart(key, upload).await.is_ok() {
                    report.uploads_aborted += 1;
                }
            }
        }
        let keys: Vec<String> = staged.into_iter().map(|s| s.key).collect();
        blobs.delete(&keys).await?;
        report.orphans_deleted += keys.len() as u64;
        let mut forget = keyed(index::UNSTAGE, &[], &keys);
        forget.push(Statement::new(index::FORGET_RUN_STEPS, vec![text(&run)]));
        forget.push(Statement::new(index::FORGET_RUN_COUNT, vec![text(&run)]));
        sql.batch(&forget).await?;
    }
    Ok(())
}

/// Objects past the retention: `due` finds their keys (`?1` cutoff, `?2` page size), `forget`
/// records them gone (given the time now and the keys).
struct Purge {
    due: &'static str,
    /// A third parameter of `due`, if it takes one.
    also: Option<SqlValue>,
    forget: fn(&str, &[String]) -> Vec<Statement>,
}

impl Purge {
    /// Deletes up to `max_pages` pages; answers how many, and whether more are due.
    async fn run<S: Sql, B: Blobs>(&self, sql: &S, blobs: &B, cutoff: &str, now: &str, config: &CleanupConfig) -> PortResult<(u64, bool)> {
        let mut done = 0;
        for _ in 0..config.max_pages {
            let params: Vec<SqlValue> = [text(cutoff), SqlValue::from(config.page as u64)].into_iter().chain(self.also.clone()).collect();
            let due: Vec<KeyRow> = sql.query(self.due, &params).await?;
            let keys: Vec<String> = due.into_iter().map(|r| r.key).collect();
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

async fn forget_finished_runs<S: Sql>(sql: &S, now_ms: u64, config: &CleanupConfig, report: &mut CleanupReport) -> PortResult<()> {
    let cutoff = text(&iso(now_ms.saturating_sub(config.retention_ms)));
    let now = text(&iso(now_ms));
    let rows: Vec<RunRow> = sql.query(index::RUNS_WITH_OLD_STEPS, &[cutoff.clone(), SqlValue::from(config.page as u64)]).await?;
    let runs: Vec<String> = rows.into_iter().map(|r| r.run_id).collect();
    // Reap and forget in one batch per run group: a run still going (a step newer than the
    // cutoff, or its lease) is neither reaped nor forgotten.
    for group in runs.chunks(50) {
        let statements: Vec<Statement> = group
            .iter()
            .flat_map(|run| {
                [
                    Statement::new(index::REAP_FINISHED_RUN, vec![text(run), cutoff.clone(), now.clone()]),
                    Statement::new(index::FORGET_REAPED_RUN, vec![text(run)]),
                    Statement::new(index::FORGET_REAPED_RUN_COUNT, vec![text(run)]),
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
