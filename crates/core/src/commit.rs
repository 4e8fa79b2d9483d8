//! The metadata commit of a compaction run, as one atomic D1 batch: the outputs recorded, the
//! consumed fragments marked, the dataset's flags cleared and its lease released. Every
//! statement is fenced by the lease (run id and epoch), and the lease is released last: a run
//! that lost its lease changes nothing at all, so nothing is counted twice, and its outputs are
//! orphans for clean-up.
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

/// The commit batch. `consumed` are the fragment keys the run read (all of them, quarantined
/// segments included: their readable segments are in the outputs); `quarantined` are recorded
/// (their fragments are kept by clean-up, for inspection); the run's staged output keys are
/// cleared (they are committed now); `now` is ISO-8601 text. Its last statement changes one
/// row exactly when the commit took effect.
pub fn commit_batch(
    lease: &Lease,
    outputs: &[OutputRecord],
    consumed: &[String],
    quarantined: &[Quarantined],
    now: &str,
) -> Vec<Statement> {
    let fence = || vec![text(lease.dataset.as_str()), text(&lease.run_id), SqlValue::Int(lease.epoch)];
    let mut batch = Vec::new();
    for o in outputs {
        let mut params = fence();
        params.extend([
            text(&o.key),
            text(o.period.as_str()),
            text(o.table.as_str()),
            text(&o.schema_fingerprint),
            SqlValue::Int(o.rows as i64),
            SqlValue::Int(o.bytes as i64),
            SqlValue::Int(o.source_segments as i64),
            text(now),
        ]);
        batch.push(Statement {
            sql: format!(
                "INSERT INTO compacted_files (key, dataset_id, period_tag, table_name, run_id, schema_fingerprint, \
                 row_count, size, source_segments, created_at) \
                 SELECT ?4, ?1, ?5, ?6, ?2, ?7, ?8, ?9, ?10, ?11 WHERE {FENCE}"
            ),
            params,
        });
    }
    let mut params = fence();
    params.push(text(now));
    batch.extend(keyed(
        &format!(
            "UPDATE battle_files SET compacted_at = ?4, compacted_run_id = ?2 \
             WHERE dataset_id = ?1 AND compacted_at IS NULL AND key IN ({{keys}}) AND {FENCE}"
        ),
        &params,
        consumed,
    ));
    for q in quarantined {
        let mut params = fence();
        params.extend([text(&q.fragment_key), text(&q.table), text(&q.error), text(now)]);
        batch.push(Statement {
            sql: format!(
                "INSERT OR IGNORE INTO quarantined_segments (fragment_key, table_name, dataset_id, run_id, error, created_at) \
                 SELECT ?4, ?5, ?1, ?2, ?6, ?7 WHERE {FENCE}"
            ),
            params,
        });
    }
    batch.push(Statement {
        sql: format!("DELETE FROM staged_outputs WHERE run_id = ?2 AND dataset_id = ?1 AND {FENCE}"),
        params: fence(),
    });
    let mut params = fence();
    params.push(text(now));
    batch.push(Statement {
        sql: "UPDATE datasets SET \
              compaction_needed = CASE WHEN EXISTS (SELECT 1 FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL) THEN 1 ELSE 0 END, \
              lease_run_id = NULL, lease_expires_at = NULL, last_compacted_at = ?4, updated_at = ?4 \
              WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3"
            .into(),
        params,
    });
    batch
}

#[cfg(test)]
mod tests;
