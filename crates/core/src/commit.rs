//! The metadata commit of a compaction run, as one atomic D1 batch: the outputs recorded, the
//! consumed fragments marked, the dataset's flags cleared and its lease released. Every
//! statement is fenced by the lease (run id and epoch), and the lease is released last: a run
//! that lost its lease changes nothing at all, so nothing is counted twice, and its outputs are
//! orphans for clean-up. The outputs are recorded only if every fragment the run consumed was
//! still pending and every compacted file it merged still live: a run resumed from old
//! checkpoints after another run took some of them records nothing either.
//!
//! The batch is built here as data; the Worker binds it to D1, the tests to SQLite.

use serde::{Deserialize, Serialize};

use crate::fragment::Quarantined;
use crate::ids::{DatasetId, PeriodTag, TableName};

/// D1 binds at most 100 parameters per statement; fragment keys are marked in chunks below it.
pub const KEYS_PER_STATEMENT: usize = 90;

/// A bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Null,
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}

impl From<Option<&str>> for SqlValue {
    fn from(s: Option<&str>) -> Self {
        s.map_or(SqlValue::Null, SqlValue::from)
    }
}

impl From<i64> for SqlValue {
    fn from(n: i64) -> Self {
        SqlValue::Int(n)
    }
}

/// Sizes and counts: D1 numbers are exact far beyond any of them.
impl From<u64> for SqlValue {
    fn from(n: u64) -> Self {
        SqlValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// One statement of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

/// A compacted file written to R2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub key: String,
    pub period: PeriodTag,
    pub table: TableName,
    pub schema_fingerprint: String,
    pub rows: u64,
    pub bytes: u64,
    pub source_segments: u64,
}

/// The lease a run holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub dataset: DatasetId,
    pub run_id: String,
    pub epoch: i64,
}

/// The fence every statement carries: the lease is still this run's, at this epoch.
const FENCE: &str = "EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3)";

/// The fence, and the batch's check passed: every fragment the run consumed was still pending,
/// every file it merged still live, and all are now marked by this commit. The check marks the lease with an expiry of -1, which no
/// lease has otherwise; the release at the end of the same batch clears it.
const CHECKED: &str = "EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3 AND lease_expires_at = -1)";

/// A text parameter.
pub(crate) fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_owned())
}

/// Statements over `keys` in chunks D1 binds: `sql` with `{keys}` for the placeholders, after
/// the `leading` parameters.
pub(crate) fn keyed(sql: &str, leading: &[SqlValue], keys: &[String]) -> Vec<Statement> {
    keys.chunks(KEYS_PER_STATEMENT)
        .map(|chunk| {
            let first = leading.len() + 1;
            let placeholders: Vec<String> = (first..first + chunk.len()).map(|i| format!("?{i}")).collect();
            let mut params = leading.to_vec();
            params.extend(chunk.iter().map(|k| text(k)));
            Statement { sql: sql.replace("{keys}", &placeholders.join(", ")), params }
        })
        .collect()
}

/// What a commit batch did, read from its statements' changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitOutcome {
    Committed,
    /// The lease was another run's: the batch changed nothing.
    LostLease,
    /// Some consumed fragment had been compacted, or some merged file retired, by another run
    /// (this run resumed from checkpoints after its lease had expired and been taken): nothing
    /// is recorded, nothing stays marked, the lease is released.
    Superseded,
}

/// The commit of one run: its statements, run as one D1 batch.
#[derive(Debug, Clone)]
pub struct CommitBatch {
    pub statements: Vec<Statement>,
    /// The statement that changes one row exactly when every consumed fragment was marked and
    /// every merged file retired.
    check: usize,
}

impl CommitBatch {
    /// What the batch did, from each statement's changed rows.
    pub fn outcome(&self, changes: &[u64]) -> CommitOutcome {
        if changes.last() != Some(&1) {
            CommitOutcome::LostLease
        } else if changes.get(self.check) == Some(&1) {
            CommitOutcome::Committed
        } else {
            CommitOutcome::Superseded
        }
    }
}

/// The commit batch. `consumed` are the fragment keys the run read (all of them, quarantined
/// segments included: their readable segments are in the outputs); `retired` the compacted
/// files merged into the outputs (consolidation); `quarantined` are recorded (their fragments
/// are kept by clean-up, for inspection); the run's staged output keys are cleared (they are
/// committed now); `now` is ISO-8601 text.
///
/// In order: the consumed fragments are marked and the merged files retired; a check counts
/// both (all of them, or another run had taken some: their rows would be counted twice); if it
/// failed, the marks are undone; the outputs, quarantined segments and staged keys are written
/// only if it passed; last, the lease is released. Every statement is fenced by the lease.
pub fn commit_batch(
    lease: &Lease,
    outputs: &[OutputRecord],
    consumed: &[String],
    retired: &[String],
    quarantined: &[Quarantined],
    now: &str,
) -> CommitBatch {
    // ?1 dataset, ?2 run, ?3 epoch, ?4 now; each statement's own parameters follow.
    let common = || vec![text(lease.dataset.as_str()), text(&lease.run_id), SqlValue::Int(lease.epoch), text(now)];
    let with = |own: Vec<SqlValue>| common().into_iter().chain(own).collect::<Vec<_>>();
    let mut statements = keyed(
        &format!(
            "UPDATE battle_files SET compacted_at = ?4, compacted_run_id = ?2 \
             WHERE dataset_id = ?1 AND compacted_at IS NULL AND key IN ({{keys}}) AND {FENCE}"
        ),
        &common(),
        consumed,
    );
    statements.extend(keyed(
        &format!(
            "UPDATE compacted_files SET retired_at = ?4, retired_run_id = ?2 \
             WHERE dataset_id = ?1 AND retired_at IS NULL AND key IN ({{keys}}) AND {FENCE}"
        ),
        &common(),
        retired,
    ));
    let check = statements.len();
    statements.push(Statement {
        sql: "UPDATE datasets SET lease_expires_at = -1, last_compacted_at = ?4 \
              WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3 \
              AND (SELECT count(*) FROM battle_files WHERE compacted_at = ?4 AND compacted_run_id = ?2 AND dataset_id = ?1) = ?5 \
              AND (SELECT count(*) FROM compacted_files WHERE retired_at = ?4 AND retired_run_id = ?2 AND dataset_id = ?1) = ?6"
            .into(),
        params: with(vec![SqlValue::Int(consumed.len() as i64), SqlValue::Int(retired.len() as i64)]),
    });
    statements.push(Statement {
        sql: format!(
            "UPDATE battle_files SET compacted_at = NULL, compacted_run_id = NULL \
             WHERE compacted_at = ?4 AND compacted_run_id = ?2 AND dataset_id = ?1 AND {FENCE} AND NOT {CHECKED}"
        ),
        params: common(),
    });
    statements.push(Statement {
        sql: format!(
            "UPDATE compacted_files SET retired_at = NULL, retired_run_id = NULL \
             WHERE retired_at = ?4 AND retired_run_id = ?2 AND dataset_id = ?1 AND {FENCE} AND NOT {CHECKED}"
        ),
        params: common(),
    });
    for o in outputs {
        statements.push(Statement {
            sql: format!(
                "INSERT INTO compacted_files (key, dataset_id, period_tag, table_name, run_id, schema_fingerprint, \
                 row_count, size, source_segments, created_at) \
                 SELECT ?5, ?1, ?6, ?7, ?2, ?8, ?9, ?10, ?11, ?4 WHERE {CHECKED}"
            ),
            params: with(vec![
                text(&o.key),
                text(o.period.as_str()),
                text(o.table.as_str()),
                text(&o.schema_fingerprint),
                SqlValue::Int(o.rows as i64),
                SqlValue::Int(o.bytes as i64),
                SqlValue::Int(o.source_segments as i64),
            ]),
        });
    }
    for q in quarantined {
        statements.push(Statement {
            sql: format!(
                "INSERT OR IGNORE INTO quarantined_segments (fragment_key, table_name, dataset_id, run_id, error, created_at) \
                 SELECT ?5, ?6, ?1, ?2, ?7, ?4 WHERE {CHECKED}"
            ),
            params: with(vec![text(&q.fragment_key), text(&q.table), text(&q.error)]),
        });
    }
    // Only the keys committed: a key staged by an earlier invocation that planned otherwise
    // (its fragments set aside since) stays staged, an orphan for the clean-up.
    let committed: Vec<String> = outputs.iter().map(|o| o.key.clone()).collect();
    statements.extend(keyed(
        &format!("DELETE FROM staged_outputs WHERE run_id = ?2 AND dataset_id = ?1 AND key IN ({{keys}}) AND {CHECKED}"),
        &common()[..3],
        &committed,
    ));
    statements.push(Statement {
        sql: "UPDATE datasets SET \
              compaction_needed = CASE WHEN EXISTS (SELECT 1 FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL) THEN 1 ELSE 0 END, \
              lease_run_id = NULL, lease_expires_at = NULL, updated_at = ?4 \
              WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3"
            .into(),
        params: common(),
    });
    CommitBatch { statements, check }
}

#[cfg(test)]
mod tests;
