//! The SQL the Workers run on D1 (the battle-data index, `migrations/`). Kept here, as named
//! statements with their parameters documented, so that each has one definition and can be
//! tested natively on SQLite. Times are ISO-8601 UTC text; lease expiry is Unix milliseconds.

/// `?1` dataset id → `owner_id`.
pub const DATASET_OWNER: &str = "SELECT owner_id FROM datasets WHERE id = ?1";

/// `?1` dataset id → the whole dataset row.
pub const DATASET_STATE: &str = "SELECT id, owner_id, compaction_needed, lease_run_id, lease_expires_at, \
     lease_epoch, created_at, updated_at, last_compacted_at FROM datasets WHERE id = ?1";

/// `?1` dataset id, `?2` content hash → the key of a fragment with those bytes, if any.
pub const FRAGMENT_BY_HASH: &str = "SELECT key FROM battle_files WHERE dataset_id = ?1 AND content_hash = ?2";

/// Creates the dataset for `?2` (owner) or marks it as needing compaction; does nothing to a
/// dataset of another owner. `?1` id, `?3` now.
pub const CLAIM_DATASET: &str = "INSERT INTO datasets (id, owner_id, compaction_needed, created_at, updated_at) \
     VALUES (?1, ?2, 1, ?3, ?3) \
     ON CONFLICT (id) DO UPDATE SET compaction_needed = 1, updated_at = ?3 WHERE datasets.owner_id = ?2";

/// Records a fragment, only if `?8` (uploader) owns dataset `?2` and key `?1` was not
/// discarded (see [`DISCARD_UPLOAD`]): zero changes means one of them does not hold. `?3`
/// table, `?4` period, `?5` hash, `?6` size, `?7` offsets JSON, `?9` now. Fails on UNIQUE
/// (dataset_id, content_hash) when the bytes are already there, or UNIQUE (key) when another
/// request with the same upload URL recorded them first.
pub const INSERT_FRAGMENT: &str = "INSERT INTO battle_files \
     (key, dataset_id, table_name, period_tag, content_hash, size, table_offsets, uploaded_by, uploaded_at) \
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
     WHERE EXISTS (SELECT 1 FROM datasets WHERE id = ?2 AND owner_id = ?8) \
     AND NOT EXISTS (SELECT 1 FROM discarded_uploads WHERE key = ?1)";

/// After the index refused the fragment of key `?1`: tombstones the key unless a fragment row
/// holds it (`?2` now). Run with [`KEY_RECORDED`] in one batch: the object may be deleted
/// exactly when no row holds the key, and then none ever will.
pub const DISCARD_UPLOAD: &str = "INSERT INTO discarded_uploads (key, discarded_at) SELECT ?1, ?2 \
     WHERE NOT EXISTS (SELECT 1 FROM battle_files WHERE key = ?1) ON CONFLICT (key) DO NOTHING";

/// `?1` key → `recorded` (1 when a fragment row holds it, else 0).
pub const KEY_RECORDED: &str = "SELECT EXISTS (SELECT 1 FROM battle_files WHERE key = ?1) AS recorded";

/// `?1` dataset id → pending fragments: `fragments`, `bytes`, `oldest` (upload time).
pub const PENDING_SUMMARY: &str = "SELECT count(*) AS fragments, coalesce(sum(size), 0) AS bytes, \
     min(uploaded_at) AS oldest FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL";

/// `?1` dataset id → compacted outputs: `files`, `bytes`, `rows`. Here and below, only live
/// outputs: a file merged into a larger one is retired, its rows counted in the larger one.
pub const COMPACTED_SUMMARY: &str = "SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes, \
     coalesce(sum(row_count), 0) AS rows FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL";

/// `?1` dataset id → its summary for the catalog: `fragments` and `bytes` uploaded, `pending`
/// fragments, `compacted_files` and `compacted_bytes`.
pub const DATASET_TOTALS: &str = "SELECT \
     (SELECT count(*) FROM battle_files WHERE dataset_id = ?1) AS fragments, \
     (SELECT coalesce(sum(size), 0) FROM battle_files WHERE dataset_id = ?1) AS bytes, \
     (SELECT count(*) FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL) AS pending, \
     (SELECT count(*) FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL) AS compacted_files, \
     (SELECT coalesce(sum(size), 0) FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL) AS compacted_bytes";

/// `?1` dataset id, `?2` period or NULL, `?3` table or NULL, `?4` limit, `?5` key to start after
/// ('' for the first page) → outputs in key order.
pub const LIST_OUTPUTS: &str = "SELECT key, period_tag, table_name, row_count, size, source_segments, created_at \
     FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL AND (?2 IS NULL OR period_tag = ?2) \
     AND (?3 IS NULL OR table_name = ?3) AND key > ?5 ORDER BY key LIMIT ?4";

/// `?1` dataset id, `?2` key → the output, if it belongs to the dataset, and when it was retired
/// (merged into a larger one), if it was.
pub const OUTPUT_BY_KEY: &str = "SELECT key, size, retired_at FROM compacted_files WHERE dataset_id = ?1 AND key = ?2";

/// Releases the lease of dataset `?1` if it expired by `?3` (Unix ms); `?2` now.
pub const RELEASE_EXPIRED_LEASE: &str = "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL, \
     updated_at = ?2 WHERE id = ?1 AND lease_expires_at IS NOT NULL AND lease_expires_at <= ?3";

/// Marks dataset `?1` as needing compaction if it has pending fragments; `?2` now.
pub const MARK_IF_PENDING: &str = "UPDATE datasets SET compaction_needed = 1, updated_at = ?2 \
     WHERE id = ?1 AND EXISTS (SELECT 1 FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL)";

/// Datasets that need compaction and hold no live lease at `?1` (Unix ms), after id `?2`
/// ('' for the first page), `?3` at most, in id order.
pub const DATASETS_DUE: &str = "SELECT id FROM datasets WHERE compaction_needed = 1 \
     AND (lease_expires_at IS NULL OR lease_expires_at <= ?1) AND id > ?2 ORDER BY id LIMIT ?3";

/// D1's error text for a UNIQUE violation: the same bytes are already stored.
pub fn is_unique_violation(message: &str) -> bool {
    message.contains("UNIQUE constraint failed")
}

/// `?1` run id → `step`, `output` of each of its completed steps.
pub const STEP_OUTPUTS: &str = "SELECT step, output FROM workflow_steps WHERE run_id = ?1";

/// Records a completed step; the first write wins, and the stored `output` is answered (the
/// no-op update makes an existing row answer). `?1` run id, `?2` step, `?3` output (JSON),
/// `?4` attempts, `?5` duration in ms, `?6` now.
pub const SAVE_STEP: &str = "INSERT INTO workflow_steps (run_id, step, output, attempts, duration_ms, completed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (run_id, step) DO UPDATE SET run_id = excluded.run_id \
     RETURNING output";

/// Takes the compaction lease of dataset `?1` for run `?2` until `?4` (Unix ms), if the dataset
/// needs compaction, no other run holds a live lease at `?3`, and run `?2` was not reaped by
/// clean-up (its outputs deleted: it may never commit); `?5` now (text). A new holder bumps
/// the fencing epoch; the same run taking its own lease again keeps it. Answers the epoch and
/// the owner (no row: not taken).
pub const ACQUIRE_LEASE: &str = "UPDATE datasets SET \
     lease_epoch = CASE WHEN lease_run_id = ?2 THEN lease_epoch ELSE lease_epoch + 1 END, \
     lease_run_id = ?2, lease_expires_at = ?4, updated_at = ?5 \
     WHERE id = ?1 AND compaction_needed = 1 \
     AND (lease_run_id IS NULL OR lease_run_id = ?2 OR lease_expires_at <= ?3) \
     AND NOT EXISTS (SELECT 1 FROM reaped_runs WHERE run_id = ?2) \
     RETURNING lease_epoch, owner_id";

/// Records multipart upload `?2` of staged output `?1`, so that clean-up can abort it.
pub const STAGED_UPLOAD: &str = "UPDATE staged_outputs SET upload_id = ?2 WHERE key = ?1";

/// Releases run `?2`'s lease of dataset `?1` (after a failure); the flags stay as they are.
pub const RELEASE_LEASE: &str = "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_run_id = ?2";

/// The pending fragments of dataset `?1`, optionally of table `?2` and period `?3` (NULL: any),
/// those not isolated first, each part in key (upload time) order, at most `?4`, and none after
/// the first that takes their bytes past `?5`: a run's share and one more, not every fragment a
/// count cap would list.
pub const PENDING_FRAGMENTS: &str = "SELECT key, table_name, period_tag, size, table_offsets, isolated FROM ( \
     SELECT key, table_name, period_tag, size, table_offsets, isolated, \
     SUM(size) OVER (ORDER BY isolated, key ROWS UNBOUNDED PRECEDING) - size AS bytes_before FROM battle_files \
     WHERE dataset_id = ?1 AND compacted_at IS NULL AND (?2 IS NULL OR table_name = ?2) \
     AND (?3 IS NULL OR period_tag = ?3) ORDER BY isolated, key LIMIT ?4) \
     WHERE bytes_before <= ?5 ORDER BY isolated, key";

/// Counts an invocation of run `?1` of dataset `?2` that is about to read its fragments; `?3`
/// now. Answers `invocations`, this one included.
pub const COUNT_INVOCATION: &str = "INSERT INTO compaction_runs (run_id, dataset_id, invocations, updated_at) \
     VALUES (?1, ?2, 1, ?3) ON CONFLICT (run_id) DO UPDATE SET invocations = invocations + 1, updated_at = ?3 \
     RETURNING invocations";

/// Takes back the count of an invocation of run `?1` that failed cleanly on I/O.
pub const UNCOUNT_INVOCATION: &str = "UPDATE compaction_runs SET invocations = invocations - 1 WHERE run_id = ?1 AND invocations > 0";

/// `?1` dataset id → its quarantined segments, newest first, at most `?2`: `fragment_key`,
/// `table_name` (`*` for a whole fragment), `error`, `created_at`.
pub const QUARANTINED: &str = "SELECT fragment_key, table_name, error, created_at FROM quarantined_segments \
     WHERE dataset_id = ?1 ORDER BY created_at DESC, fragment_key, table_name LIMIT ?2";

/// `?1` dataset id → `segments` quarantined (whole fragments count once).
pub const QUARANTINED_COUNT: &str = "SELECT count(*) AS segments FROM quarantined_segments WHERE dataset_id = ?1";

/// The live compacted files of dataset `?1` smaller than `?2` bytes, optionally of period `?3`
/// (NULL: any), oldest first, at most `?4`: what consolidation chooses from. (A message's
/// `table` names the fragments' table, not the tables inside them: it does not narrow this.)
pub const SMALL_OUTPUTS: &str = "SELECT key, period_tag, table_name, size, source_segments FROM compacted_files \
     WHERE dataset_id = ?1 AND retired_at IS NULL AND size < ?2 AND (?3 IS NULL OR period_tag = ?3) \
     ORDER BY created_at, key LIMIT ?4";

/// ISO-8601 UTC text of a Unix-ms instant, as the index stores times (one format, so that
/// times compare as text).
pub fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::*;
    use crate::testing::migrated_sqlite;

    fn insert(conn: &Connection, key: &str, hash: &str) -> rusqlite::Result<usize> {
        conn.execute(INSERT_FRAGMENT, params![key, "ds", "port_table", "2025-11-05", hash, 10, "[]", "owner", "t0"])
    }

    /// What a refused request decides: tombstone the key unless a row holds it; delete the
    /// object exactly when no row does.
    fn may_delete(conn: &Connection, key: &str) -> bool {
        conn.execute(DISCARD_UPLOAD, params![key, "t1"]).unwrap();
        conn.query_row(KEY_RECORDED, params![key], |r| r.get::<_, i64>(0)).unwrap() == 0
    }

    #[test]
    fn a_refused_upload_deletes_its_object_only_when_no_row_holds_its_key() {
        let conn = migrated_sqlite();
        conn.execute(CLAIM_DATASET, params!["ds", "owner", "t0"]).unwrap();

        // Two requests with one upload URL: A records the key, B is refused (same key, same
        // bytes). B must keep the object A's row points at.
        assert_eq!(insert(&conn, "k1", "h1").unwrap(), 1);
        assert!(insert(&conn, "k1", "h1").is_err_and(|e| is_unique_violation(&e.to_string())));
        assert!(!may_delete(&conn, "k1"), "a row holds k1");
        assert_eq!(conn.query_row("SELECT count(*) FROM discarded_uploads", [], |r| r.get::<_, i64>(0)).unwrap(), 0);

        // B is refused before A records (the index failed B for another reason): B tombstones
        // the key and deletes the object; A's insert is then refused too, so no row ever
        // points at the deleted object, and A's client uploads again under a new key.
        assert!(may_delete(&conn, "k2"));
        assert_eq!(insert(&conn, "k2", "h2").unwrap(), 0, "a discarded key is never recorded");
        assert!(may_delete(&conn, "k2"), "A, refused in turn, deletes too (a no-op)");

        // The same bytes under another key (a second handshake): its own object goes.
        assert!(insert(&conn, "k3", "h1").is_err_and(|e| is_unique_violation(&e.to_string())));
        assert!(may_delete(&conn, "k3"));
    }
}
