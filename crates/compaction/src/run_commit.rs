//! The metadata commit of a compaction run, as one atomic D1 batch: the outputs recorded, the
//! consumed fragments marked, the dataset's flags cleared and its lease released. Every
//! statement is fenced by the lease (run id and epoch), and the lease is released last: a run
//! that lost its lease changes nothing at all, so nothing is counted twice, and its outputs are
//! orphans for clean-up. The outputs are recorded only if every fragment the run consumed was
//! still pending and every compacted file it merged still live: a run resumed from old
//! checkpoints after another run took some of them records nothing either.
//!
//! The batch is built here as data, of the statements in [`fusou_core::index`]; the Worker binds it to
//! D1, the tests to SQLite.

use serde::{Deserialize, Serialize};

use fusou_contract::fragment::Quarantined;
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::index::{self, SqlValue, Statement, keyed, text};

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
    /// Its columns for its table ([`fusou_lake`]'s JSON); empty in checkpoints written before.
    #[serde(default)]
    pub columns: String,
}

/// The lease a run holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub dataset: DatasetId,
    pub run_id: String,
    pub epoch: i64,
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
    let mut statements = keyed(index::COMMIT_MARK_FRAGMENTS, &common(), consumed);
    statements.extend(keyed(index::COMMIT_RETIRE_FILES, &common(), retired));
    let check = statements.len();
    statements
        .push(Statement::new(index::COMMIT_CHECK, with(vec![SqlValue::from(consumed.len() as u64), SqlValue::from(retired.len() as u64)])));
    statements.push(Statement::new(index::COMMIT_UNMARK_FRAGMENTS, common()));
    statements.push(Statement::new(index::COMMIT_UNRETIRE_FILES, common()));
    for o in outputs {
        let own = vec![
            text(&o.key),
            text(o.period.as_str()),
            text(o.table.as_str()),
            text(&o.schema_fingerprint),
            SqlValue::from(o.rows),
            SqlValue::from(o.bytes),
            SqlValue::from(o.source_segments),
            if o.columns.is_empty() { SqlValue::Null } else { text(&o.columns) },
        ];
        statements.push(Statement::new(index::COMMIT_OUTPUT, with(own)));
    }
    for q in quarantined {
        statements.push(Statement::new(index::COMMIT_QUARANTINE, with(vec![text(&q.fragment_key), text(&q.table), text(&q.error)])));
    }
    // Only the keys committed: a key staged by an earlier invocation that planned otherwise
    // (its fragments set aside since) stays staged, an orphan for the clean-up.
    let committed: Vec<String> = outputs.iter().map(|o| o.key.clone()).collect();
    statements.extend(keyed(index::COMMIT_UNSTAGE, &common()[..3], &committed));
    statements.push(Statement::new(index::COMMIT_RELEASE, common()));
    CommitBatch { statements, check }
}

#[cfg(test)]
mod tests;
