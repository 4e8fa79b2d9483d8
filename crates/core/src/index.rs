//! The battle-data index on D1 (`migrations/`): every statement the Workers run on it, named,
//! with its parameters and the row type it answers, in one place. A test prepares each one on
//! SQLite with the D1 migrations applied; the commit, clean-up and compaction tests run them.
//!
//! Parameters are bound as `?1, ?2, …` ([`SqlValue`], the one parameter type). Statements over
//! a list of keys carry `{keys}` where [`keyed`] puts the placeholders, in chunks that D1 binds.
//! Times are ISO-8601 UTC text with milliseconds ([`iso`], one format, so that they compare as
//! text); lease expiry and staging times are Unix milliseconds, compared as numbers.

use serde::{Deserialize, Deserializer, Serialize};

use fusou_contract::ids::DatasetId;

pub use fusou_ports::{KEYS_PER_STATEMENT, SqlValue, Statement, keyed, text};

/// ISO-8601 UTC text of a Unix-ms instant, as the index stores every time written as text.
pub fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// D1's error text for a UNIQUE violation: the same bytes are already stored.
pub fn is_unique_violation(message: &str) -> bool {
    message.contains("UNIQUE constraint failed")
}

/// Named statements, declared once, and listed under `$group` for the test that prepares each.
macro_rules! statements {
    ($group:ident; $( $(#[$doc:meta])* $name:ident = $sql:expr; )*) => {
        $( $(#[$doc])* pub const $name: &str = $sql; )*
        #[cfg(test)]
        const $group: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

/// The lease check every statement of a run's commit carries: the lease is still this run's,
/// at this epoch (`?1` dataset, `?2` run, `?3` epoch).
macro_rules! fence {
    () => {
        "EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3)"
    };
}

/// The fence, and the commit's check passed: it marks the lease with an expiry of -1, which no
/// lease has otherwise; the release at the end of the same batch clears it.
macro_rules! checked {
    () => {
        "EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3 AND lease_expires_at = -1)"
    };
}

// ---------------------------------------------------------------------------------------------
// Uploads and datasets (the upload Worker).

statements! {
    UPLOADS;

    /// `?1` dataset id → [`Owner`].
    DATASET_OWNER = "SELECT owner_id FROM datasets WHERE id = ?1";

    /// `?1` dataset id → [`DatasetState`].
    DATASET_STATE = "SELECT compaction_needed, lease_run_id, lease_expires_at, created_at, updated_at, last_compacted_at \
         FROM datasets WHERE id = ?1";

    /// `?1` dataset id, `?2` content hash → one [`UploadCheck`]: the dataset's owner and a
    /// fragment with those bytes, in one query (the handshake's only one).
    UPLOAD_CHECK = "SELECT (SELECT owner_id FROM datasets WHERE id = ?1) AS owner_id, \
         (SELECT key FROM battle_files WHERE dataset_id = ?1 AND content_hash = ?2 LIMIT 1) AS stored_key";

    /// Creates the dataset for `?2` (owner) or marks it as needing compaction; does nothing to a
    /// dataset of another owner. `?1` id, `?3` now.
    CLAIM_DATASET = "INSERT INTO datasets (id, owner_id, compaction_needed, created_at, updated_at) \
         VALUES (?1, ?2, 1, ?3, ?3) \
         ON CONFLICT (id) DO UPDATE SET compaction_needed = 1, updated_at = ?3 WHERE datasets.owner_id = ?2";

    /// Records a fragment, only if `?8` (uploader) owns dataset `?2` and key `?1` was not
    /// discarded (see [`DISCARD_UPLOAD`]): zero changes means one of them does not hold. `?3`
    /// table, `?4` period, `?5` hash, `?6` size, `?7` offsets JSON, `?9` now. Fails on UNIQUE
    /// (dataset_id, content_hash) when the bytes are already there, or UNIQUE (key) when another
    /// request with the same upload URL recorded them first.
    INSERT_FRAGMENT = "INSERT INTO battle_files \
         (key, dataset_id, table_name, period_tag, content_hash, size, table_offsets, uploaded_by, uploaded_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
         WHERE EXISTS (SELECT 1 FROM datasets WHERE id = ?2 AND owner_id = ?8) \
         AND NOT EXISTS (SELECT 1 FROM discarded_uploads WHERE key = ?1)";

    /// After the index refused the fragment of key `?1`: tombstones the key unless a fragment row
    /// holds it (`?2` now). Run with [`KEY_RECORDED`] in one batch: the object may be deleted
    /// exactly when no row holds the key, and then none ever will.
    DISCARD_UPLOAD = "INSERT INTO discarded_uploads (key, discarded_at) SELECT ?1, ?2 \
         WHERE NOT EXISTS (SELECT 1 FROM battle_files WHERE key = ?1) ON CONFLICT (key) DO NOTHING";

    /// `?1` key → [`Recorded`].
    KEY_RECORDED = "SELECT EXISTS (SELECT 1 FROM battle_files WHERE key = ?1) AS recorded";

    /// `?1` dataset id → [`PendingSummary`].
    PENDING_SUMMARY = "SELECT count(*) AS fragments, coalesce(sum(size), 0) AS bytes, \
         min(uploaded_at) AS oldest FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL";

    /// `?1` dataset id → [`CompactedSummary`]. Here and below, only live outputs: a file merged
    /// into a larger one is retired, its rows counted in the larger one.
    COMPACTED_SUMMARY = "SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes, \
         coalesce(sum(row_count), 0) AS rows FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL";

    /// `?1` dataset id → [`DatasetTotals`], its summary for the catalog.
    DATASET_TOTALS = "SELECT \
         (SELECT count(*) FROM battle_files WHERE dataset_id = ?1) AS fragments, \
         (SELECT coalesce(sum(size), 0) FROM battle_files WHERE dataset_id = ?1) AS bytes, \
         (SELECT count(*) FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL) AS pending, \
         (SELECT count(*) FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL) AS compacted_files, \
         (SELECT coalesce(sum(size), 0) FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL) AS compacted_bytes";

    /// `?1` dataset id, `?2` period or NULL, `?3` table or NULL, `?4` limit, `?5` key to start
    /// after ('' for the first page) → [`OutputRow`]s in key order.
    LIST_OUTPUTS = "SELECT key, period_tag, table_name, row_count, size, source_segments, created_at \
         FROM compacted_files WHERE dataset_id = ?1 AND retired_at IS NULL AND (?2 IS NULL OR period_tag = ?2) \
         AND (?3 IS NULL OR table_name = ?3) AND key > ?5 ORDER BY key LIMIT ?4";

    /// `?1` dataset id, `?2` key → the [`FoundOutput`], if it belongs to the dataset.
    OUTPUT_BY_KEY = "SELECT key, retired_at FROM compacted_files WHERE dataset_id = ?1 AND key = ?2";

    /// `?1` dataset id → its [`QuarantinedSegment`]s, newest first, at most `?2`.
    QUARANTINED = "SELECT fragment_key, table_name, error, created_at FROM quarantined_segments \
         WHERE dataset_id = ?1 ORDER BY created_at DESC, fragment_key, table_name LIMIT ?2";

    /// `?1` dataset id → [`QuarantinedCount`] (a whole fragment counts once).
    QUARANTINED_COUNT = "SELECT count(*) AS segments FROM quarantined_segments WHERE dataset_id = ?1";

    /// Releases expired leases: of dataset `?1` (NULL: every dataset) that expired by `?3` (Unix
    /// ms); `?2` now. A run that died holding one blocks nobody for longer.
    RELEASE_EXPIRED_LEASES = "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL, updated_at = ?2 \
         WHERE (?1 IS NULL OR id = ?1) AND lease_expires_at IS NOT NULL AND lease_expires_at <= ?3";

    /// Marks dataset `?1` as needing compaction if it has pending fragments; `?2` now.
    MARK_IF_PENDING = "UPDATE datasets SET compaction_needed = 1, updated_at = ?2 \
         WHERE id = ?1 AND EXISTS (SELECT 1 FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL)";

    /// [`DueDataset`]s: needing compaction and holding no live lease at `?1` (Unix ms), after id
    /// `?2` ('' for the first page), `?3` at most, in id order.
    DATASETS_DUE = "SELECT id FROM datasets WHERE compaction_needed = 1 \
         AND (lease_expires_at IS NULL OR lease_expires_at <= ?1) AND id > ?2 ORDER BY id LIMIT ?3";

    /// The [`Migration`]s applied, in order.
    MIGRATIONS = "SELECT name FROM d1_migrations ORDER BY id";
}

/// The owner of a dataset.
#[derive(Debug, Deserialize)]
pub struct Owner {
    pub owner_id: String,
}

/// A dataset's compaction state.
#[derive(Debug, Deserialize)]
pub struct DatasetState {
    pub compaction_needed: u8,
    pub lease_run_id: Option<String>,
    pub lease_expires_at: Option<f64>,
    pub created_at: String,
    pub updated_at: String,
    pub last_compacted_at: Option<String>,
}

/// What the index says of an upload before it is accepted.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct UploadCheck {
    /// The dataset's owner; `None` for a new dataset (the upload claims it).
    pub owner_id: Option<String>,
    /// The key of a fragment of the dataset with the same bytes, if one is stored.
    pub stored_key: Option<String>,
}

/// Whether a fragment row holds a key (1) or not (0).
#[derive(Debug, Deserialize)]
pub struct Recorded {
    pub recorded: u8,
}

/// A dataset's pending fragments.
#[derive(Debug, Deserialize)]
pub struct PendingSummary {
    pub fragments: u64,
    pub bytes: u64,
    /// The oldest upload time.
    pub oldest: Option<String>,
}

/// A dataset's live compacted files.
#[derive(Debug, Deserialize)]
pub struct CompactedSummary {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
}

/// A dataset's figures for the catalog: fragments and bytes uploaded, fragments pending, live
/// compacted files and their bytes.
#[derive(Debug, Deserialize)]
pub struct DatasetTotals {
    pub fragments: u64,
    pub bytes: u64,
    pub pending: u64,
    pub compacted_files: u64,
    pub compacted_bytes: u64,
}

/// A live compacted file, as listed to its owner.
#[derive(Debug, Deserialize, Serialize)]
pub struct OutputRow {
    pub key: String,
    pub period_tag: String,
    pub table_name: String,
    pub row_count: u64,
    pub size: u64,
    pub source_segments: u64,
    pub created_at: String,
}

/// A compacted file looked up by key, and when it was retired (merged into a larger one).
#[derive(Debug, Deserialize)]
pub struct FoundOutput {
    pub key: String,
    pub retired_at: Option<String>,
}

/// A segment (or a whole fragment, table `*`) that could not be compacted, and why.
#[derive(Debug, Deserialize, Serialize)]
pub struct QuarantinedSegment {
    pub fragment_key: String,
    pub table_name: String,
    pub error: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize)]
pub struct QuarantinedCount {
    pub segments: u64,
}

#[derive(Debug, Deserialize)]
pub struct DueDataset {
    pub id: DatasetId,
}

#[derive(Debug, Deserialize)]
pub struct Migration {
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Compaction runs (the compaction Worker): lease, listings, checkpoints, staging.

statements! {
    RUNS;

    /// Takes the compaction lease of dataset `?1` for run `?2` until `?4` (Unix ms), if the
    /// dataset needs compaction, no other run holds a live lease at `?3`, and run `?2` was not
    /// reaped by clean-up (its outputs deleted: it may never commit); `?5` now. A new holder
    /// bumps the fencing epoch; the same run taking its own lease again keeps it. Answers a
    /// [`LeaseTaken`] (no row: not taken).
    ACQUIRE_LEASE = "UPDATE datasets SET \
         lease_epoch = CASE WHEN lease_run_id = ?2 THEN lease_epoch ELSE lease_epoch + 1 END, \
         lease_run_id = ?2, lease_expires_at = ?4, updated_at = ?5 \
         WHERE id = ?1 AND compaction_needed = 1 \
         AND (lease_run_id IS NULL OR lease_run_id = ?2 OR lease_expires_at <= ?3) \
         AND NOT EXISTS (SELECT 1 FROM reaped_runs WHERE run_id = ?2) \
         RETURNING lease_epoch, owner_id";

    /// Releases run `?2`'s lease of dataset `?1` (after a failure); the flags stay as they are.
    RELEASE_LEASE = "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_run_id = ?2";

    /// The pending fragments of dataset `?1`, optionally of table `?2` and period `?3` (NULL:
    /// any), those not isolated first, each part in key (upload time) order, at most `?4`, and
    /// none after the first that takes their bytes past `?5`: a run's share and one more
    /// ([`fusou_compaction::FragmentRow`]s; which of them a run takes is decided by
    /// [`fusou_compaction::plan::inputs`]).
    PENDING_FRAGMENTS = "SELECT key, table_name, period_tag, size, table_offsets, isolated FROM ( \
         SELECT key, table_name, period_tag, size, table_offsets, isolated, \
         SUM(size) OVER (ORDER BY isolated, key ROWS UNBOUNDED PRECEDING) - size AS bytes_before FROM battle_files \
         WHERE dataset_id = ?1 AND compacted_at IS NULL AND (?2 IS NULL OR table_name = ?2) \
         AND (?3 IS NULL OR period_tag = ?3) ORDER BY isolated, key LIMIT ?4) \
         WHERE bytes_before <= ?5 ORDER BY isolated, key";

    /// The live compacted files of dataset `?1` smaller than `?2` bytes, optionally of period `?3`
    /// (NULL: any), oldest first, at most `?4`: what consolidation chooses from
    /// ([`fusou_compaction::consolidate::SmallFile`]s). A message's `table` names the
    /// fragments' table, not the tables inside them: it does not narrow this.
    SMALL_OUTPUTS = "SELECT key, period_tag, table_name, size, source_segments FROM compacted_files \
         WHERE dataset_id = ?1 AND retired_at IS NULL AND size < ?2 AND (?3 IS NULL OR period_tag = ?3) \
         ORDER BY created_at, key LIMIT ?4";

    /// Counts an invocation of run `?1` of dataset `?2` that is about to read its fragments; `?3`
    /// now; `?4` 1 if it reads alone, 0 if beside other runs (counted apart: it may die of their
    /// bytes). Answers [`Invocations`]: those that read alone, this one included.
    COUNT_INVOCATION = "INSERT INTO compaction_runs (run_id, dataset_id, invocations, shared_invocations, updated_at) \
         VALUES (?1, ?2, ?4, 1 - ?4, ?3) ON CONFLICT (run_id) DO UPDATE SET invocations = invocations + ?4, \
         shared_invocations = shared_invocations + 1 - ?4, updated_at = ?3 RETURNING invocations";

    /// Of the runs whose ids `?1` lists (a JSON array), those an invocation began reading for and
    /// never finished: it may have trapped on their bytes. Answers [`Interrupted`]s.
    INTERRUPTED_RUNS = "SELECT run_id, invocations FROM compaction_runs \
         WHERE invocations + shared_invocations > 0 AND run_id IN (SELECT value FROM json_each(?1))";

    /// Takes back the count of an invocation of run `?1` that failed cleanly on I/O; `?2` as
    /// [`COUNT_INVOCATION`]'s `?4`.
    UNCOUNT_INVOCATION = "UPDATE compaction_runs SET invocations = invocations - ?2, \
         shared_invocations = shared_invocations - (1 - ?2) WHERE run_id = ?1 AND invocations >= ?2 AND shared_invocations >= 1 - ?2";

    /// Isolates the pending fragments `{keys}` of dataset `?1` (each is taken alone by a later
    /// run), fenced by run `?2`'s lease at epoch `?3`.
    ISOLATE_FRAGMENTS = concat!(
        "UPDATE battle_files SET isolated = 1 WHERE dataset_id = ?1 AND compacted_at IS NULL AND key IN ({keys}) AND ",
        fence!()
    );

    /// Gives back run `?2`'s lease of dataset `?1` at epoch `?3` without committing; `?4` now.
    RETURN_LEASE = "UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL, updated_at = ?4 \
         WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3";

    /// Stages output keys before any is written: `?1` dataset, `?2` run, `?3` now (Unix ms),
    /// then the keys, one row each (`{rows}`: `(?4, ?1, ?2, ?3), …`; see [`stage_outputs`]).
    STAGE_OUTPUTS = "INSERT INTO staged_outputs (key, dataset_id, run_id, staged_at) VALUES {rows} ON CONFLICT (key) DO NOTHING";

    /// Records multipart upload `?2` of staged output `?1`, so that clean-up can abort it.
    STAGED_UPLOAD = "UPDATE staged_outputs SET upload_id = ?2 WHERE key = ?1";

    /// `?1` run id → the [`StepOutput`] of each of its completed steps.
    STEP_OUTPUTS = "SELECT step, output FROM workflow_steps WHERE run_id = ?1";

    /// Records a completed step; the first write wins, and the stored [`SavedOutput`] is answered
    /// (the no-op update makes an existing row answer). `?1` run id, `?2` step, `?3` output
    /// (JSON), `?4` attempts, `?5` duration in ms, `?6` now.
    SAVE_STEP = "INSERT INTO workflow_steps (run_id, step, output, attempts, duration_ms, completed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (run_id, step) DO UPDATE SET run_id = excluded.run_id \
         RETURNING output";

    /// The test stack's injected faults of dataset `?1` ([`Fault`]s; the table exists only
    /// where the tests made it).
    FAULTS_ARMED = "SELECT step FROM fault_injections WHERE dataset_id = ?1 ORDER BY step";

    /// Uses up fault `?2` of dataset `?1`.
    FAULT_FIRED = "DELETE FROM fault_injections WHERE dataset_id = ?1 AND step = ?2";
}

/// Records every output key of a run before any is written (a few statements, one batch). The
/// commit clears them; those left behind are orphans for [`fusou_compaction::cleanup`].
pub fn stage_outputs(keys: &[String], dataset: &DatasetId, run_id: &str, now_ms: u64) -> Vec<Statement> {
    // Four parameters a row (three shared), within D1's 100 per statement.
    keys.chunks(24)
        .map(|chunk| {
            let rows: Vec<String> = (0..chunk.len()).map(|i| format!("(?{}, ?1, ?2, ?3)", i + 4)).collect();
            let mut params = vec![text(dataset.as_str()), text(run_id), SqlValue::from(now_ms)];
            params.extend(chunk.iter().map(|k| text(k)));
            Statement { sql: STAGE_OUTPUTS.replace("{rows}", &rows.join(", ")), params }
        })
        .collect()
}

/// The lease a run took, and the dataset's owner.
#[derive(Debug, Deserialize)]
pub struct LeaseTaken {
    pub lease_epoch: i64,
    pub owner_id: String,
}

/// A compacted file the shared tables refused (`refused`) or took without some of its columns
/// (`note`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LakeLeftOut {
    pub key: String,
    pub table_name: String,
    pub refused: Option<String>,
    pub note: Option<String>,
}

/// A run an earlier invocation began reading for and never finished, and how many of its
/// invocations read alone ([`INTERRUPTED_RUNS`]).
#[derive(Debug, Deserialize)]
pub struct Interrupted {
    pub run_id: String,
    pub invocations: u64,
}

#[derive(Debug, Deserialize)]
pub struct Invocations {
    pub invocations: u64,
}

#[derive(Debug, Deserialize)]
pub struct StepOutput {
    pub step: String,
    pub output: String,
}

#[derive(Debug, Deserialize)]
pub struct SavedOutput {
    pub output: String,
}

#[derive(Debug, Deserialize)]
pub struct Fault {
    pub step: String,
}

// ---------------------------------------------------------------------------------------------
// A run's commit: one fenced batch ([`fusou_compaction::run_commit::commit_batch`]). `?1` dataset, `?2` run,
// `?3` epoch, `?4` now; each statement's own parameters follow.

statements! {
    COMMIT;

    /// Marks the consumed fragments `{keys}` compacted by the run.
    COMMIT_MARK_FRAGMENTS = concat!(
        "UPDATE battle_files SET compacted_at = ?4, compacted_run_id = ?2 \
         WHERE dataset_id = ?1 AND compacted_at IS NULL AND key IN ({keys}) AND ",
        fence!()
    );

    /// Retires the merged compacted files `{keys}`.
    COMMIT_RETIRE_FILES = concat!(
        "UPDATE compacted_files SET retired_at = ?4, retired_run_id = ?2 \
         WHERE dataset_id = ?1 AND retired_at IS NULL AND key IN ({keys}) AND ",
        fence!()
    );

    /// The check: changes one row exactly when the run marked `?5` fragments and retired `?6`
    /// files, every one it took (another run had taken none of them).
    COMMIT_CHECK = "UPDATE datasets SET lease_expires_at = -1, last_compacted_at = ?4 \
         WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3 \
         AND (SELECT count(*) FROM battle_files WHERE compacted_at = ?4 AND compacted_run_id = ?2 AND dataset_id = ?1) = ?5 \
         AND (SELECT count(*) FROM compacted_files WHERE retired_at = ?4 AND retired_run_id = ?2 AND dataset_id = ?1) = ?6";

    /// The check failed: the marks are undone.
    COMMIT_UNMARK_FRAGMENTS = concat!(
        "UPDATE battle_files SET compacted_at = NULL, compacted_run_id = NULL \
         WHERE compacted_at = ?4 AND compacted_run_id = ?2 AND dataset_id = ?1 AND ",
        fence!(),
        " AND NOT ",
        checked!()
    );

    /// The check failed: the retirements are undone.
    COMMIT_UNRETIRE_FILES = concat!(
        "UPDATE compacted_files SET retired_at = NULL, retired_run_id = NULL \
         WHERE retired_at = ?4 AND retired_run_id = ?2 AND dataset_id = ?1 AND ",
        fence!(),
        " AND NOT ",
        checked!()
    );

    /// Records output `?5` of period `?6`, table `?7`, schema `?8`: `?9` rows, `?10` bytes, `?11`
    /// fragment segments, `?12` its columns (JSON, for its table).
    COMMIT_OUTPUT = concat!(
        "INSERT INTO compacted_files (key, dataset_id, period_tag, table_name, run_id, schema_fingerprint, \
         row_count, size, source_segments, created_at, columns) \
         SELECT ?5, ?1, ?6, ?7, ?2, ?8, ?9, ?10, ?11, ?4, ?12 WHERE ",
        checked!()
    );

    /// Records that table `?6` of fragment `?5` could not be compacted, and why (`?7`).
    COMMIT_QUARANTINE = concat!(
        "INSERT OR IGNORE INTO quarantined_segments (fragment_key, table_name, dataset_id, run_id, error, created_at) \
         SELECT ?5, ?6, ?1, ?2, ?7, ?4 WHERE ",
        checked!()
    );

    /// The committed keys `{keys}` are no longer staged (`?1` dataset, `?2` run, `?3` epoch).
    COMMIT_UNSTAGE = concat!("DELETE FROM staged_outputs WHERE run_id = ?2 AND dataset_id = ?1 AND key IN ({keys}) AND ", checked!());

    /// Last: the dataset's flag follows what is still pending, and the lease is released.
    COMMIT_RELEASE = "UPDATE datasets SET \
         compaction_needed = CASE WHEN EXISTS (SELECT 1 FROM battle_files WHERE dataset_id = ?1 AND compacted_at IS NULL) THEN 1 ELSE 0 END, \
         lease_run_id = NULL, lease_expires_at = NULL, updated_at = ?4 \
         WHERE id = ?1 AND lease_run_id = ?2 AND lease_epoch = ?3";
}

// ---------------------------------------------------------------------------------------------
// The clean-up (the compaction Worker's cron, [`fusou_compaction::cleanup`]).

statements! {
    CLEANUP;

    /// [`StagedOutput`]s staged at or before `?1` (Unix ms), at most `?2`, each with
    /// `committed` = 1 when a commit recorded it after all (two invocations of one run at once
    /// can stage a key again after its commit).
    STAGED_BEFORE = "SELECT s.key, s.dataset_id, s.run_id, s.upload_id, \
         EXISTS (SELECT 1 FROM compacted_files c WHERE c.key = s.key) AS committed FROM staged_outputs s \
         WHERE s.staged_at <= ?1 ORDER BY s.staged_at, s.key LIMIT ?2";

    /// Forgets the staged keys `{keys}`.
    UNSTAGE = "DELETE FROM staged_outputs WHERE key IN ({keys})";

    /// Reaps run `?2` of dataset `?1` unless it holds the dataset's lease; `?3` now.
    REAP_RUN = "INSERT OR IGNORE INTO reaped_runs (run_id, dataset_id, reaped_at) SELECT ?2, ?1, ?3 \
         WHERE NOT EXISTS (SELECT 1 FROM datasets WHERE id = ?1 AND lease_run_id = ?2)";

    /// `?1` run id → a row when it was reaped.
    IS_REAPED = "SELECT 1 AS reaped FROM reaped_runs WHERE run_id = ?1";

    /// Forgets run `?1`'s checkpoints.
    FORGET_RUN_STEPS = "DELETE FROM workflow_steps WHERE run_id = ?1";

    /// Forgets run `?1`'s invocation count.
    FORGET_RUN_COUNT = "DELETE FROM compaction_runs WHERE run_id = ?1";

    /// [`KeyRow`]s of fragments compacted at or before `?1`, not yet purged and with no
    /// quarantined segment, at most `?2`, oldest first.
    DUE_FOR_PURGE = "SELECT key FROM battle_files \
         WHERE compacted_at IS NOT NULL AND compacted_at <= ?1 AND purged_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM quarantined_segments q WHERE q.fragment_key = battle_files.key) \
         ORDER BY compacted_at, key LIMIT ?2";

    /// The fragments `{keys}` had their objects deleted at `?1` (their rows stay).
    MARK_PURGED = "UPDATE battle_files SET purged_at = ?1 WHERE key IN ({keys})";

    /// [`KeyRow`]s of compacted files retired at or before `?1`, at most `?2`, oldest first;
    /// of those its table listed, only once no snapshot the table kept at `?3` (ms: now less the
    /// lake's grace period) or since lists them (removed at a sequence number no higher than
    /// the table's oldest kept one then).
    RETIRED_BEFORE = "SELECT key FROM compacted_files WHERE retired_at IS NOT NULL AND retired_at <= ?1 \
         AND (lake_snapshot IS NULL OR lake_removed_seq <= (SELECT coalesce(max(oldest_sequence), 0) \
              FROM lake_expiries WHERE table_name = compacted_files.table_name AND at_ms <= ?3)) \
         ORDER BY retired_at, key LIMIT ?2";

    /// Forgets the retired files `{keys}`.
    FORGET_RETIRED = "DELETE FROM compacted_files WHERE retired_at IS NOT NULL AND key IN ({keys})";

    /// [`RunRow`]s of runs with a checkpoint at or before `?1`, at most `?2`.
    RUNS_WITH_OLD_STEPS = "SELECT DISTINCT run_id FROM workflow_steps WHERE completed_at <= ?1 LIMIT ?2";

    /// Reaps run `?1` if none of its steps is newer than `?2` and it holds no lease; `?3` now. Its
    /// dataset is the one of its outputs ('' for a run that wrote none).
    REAP_FINISHED_RUN = "INSERT OR IGNORE INTO reaped_runs (run_id, dataset_id, reaped_at) \
         SELECT ?1, coalesce((SELECT dataset_id FROM compacted_files WHERE run_id = ?1 LIMIT 1), ''), ?3 \
         WHERE NOT EXISTS (SELECT 1 FROM workflow_steps WHERE run_id = ?1 AND completed_at > ?2) \
         AND NOT EXISTS (SELECT 1 FROM datasets WHERE lease_run_id = ?1)";

    /// Forgets reaped run `?1`'s checkpoints.
    FORGET_REAPED_RUN = "DELETE FROM workflow_steps WHERE run_id = ?1 AND EXISTS (SELECT 1 FROM reaped_runs WHERE run_id = ?1)";

    /// Forgets reaped run `?1`'s invocation count.
    FORGET_REAPED_RUN_COUNT = "DELETE FROM compaction_runs WHERE run_id = ?1 AND EXISTS (SELECT 1 FROM reaped_runs WHERE run_id = ?1)";

    /// Forgets tombstones of refused uploads discarded at or before `?1`.
    FORGET_DISCARDED_UPLOADS = "DELETE FROM discarded_uploads WHERE discarded_at <= ?1";
}

// ---------------------------------------------------------------------------------------------
// Open tables (`fusou_lake`): each table's pointer, what it must take, what it no longer needs.

statements! {
    LAKE;

    /// `?1` table → its [`LakeTable`] pointer, if it has one.
    LAKE_TABLE = "SELECT name, metadata_key, version, oldest_sequence, committed_ms, updated_at FROM lake_tables WHERE name = ?1";

    /// Every table's [`LakeTable`] pointer, by name.
    LAKE_TABLES = "SELECT name, metadata_key, version, oldest_sequence, committed_ms, updated_at FROM lake_tables ORDER BY name";

    /// Tables ([`LakeBehind`]) whose files the index holds and the table does not (to add or
    /// to remove), with when each last committed, at most `?1`.
    LAKE_TABLES_BEHIND = "SELECT b.name, coalesce(t.committed_ms, 0) AS committed_ms FROM ( \
             SELECT DISTINCT table_name AS name FROM compacted_files \
             WHERE lake_snapshot IS NULL AND lake_refused IS NULL AND retired_at IS NULL \
             UNION SELECT DISTINCT table_name FROM compacted_files \
             WHERE lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL AND retired_at IS NOT NULL \
             UNION SELECT DISTINCT table_name FROM lake_rollups WHERE lake_snapshot IS NULL AND lake_refused IS NULL) b \
         LEFT JOIN lake_tables t ON t.name = b.name ORDER BY b.name LIMIT ?1";

    /// `?1` table → [`LakePending`] rows of whole runs, in one read (so that a snapshot takes a
    /// run's new files and the files it retired together, and sees them as one state of the
    /// index): live files not in the table (`add` = 1, by the run that recorded them), retired
    /// files the table still lists (`add` = 0, by the run that retired them). Runs are taken
    /// oldest first while fewer than `?2` files are taken before them (so the first run always
    /// is, however large); `backlog` counts every pending file of the table.
    LAKE_PENDING = "WITH p AS ( \
             SELECT 1 AS \"add\", key, dataset_id, period_tag, row_count, size, columns, run_id AS run, created_at AS at, \
             NULL AS rollup \
             FROM compacted_files WHERE table_name = ?1 AND lake_snapshot IS NULL AND lake_refused IS NULL AND retired_at IS NULL \
             UNION ALL SELECT 0, key, dataset_id, period_tag, row_count, size, NULL, coalesce(retired_run_id, ''), retired_at, \
             lake_rollup \
             FROM compacted_files WHERE table_name = ?1 AND lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL \
             AND retired_at IS NOT NULL), \
         runs AS (SELECT run, count(*) AS files, sum(count(*)) OVER (ORDER BY min(at), run) AS upto FROM p GROUP BY run) \
         SELECT p.\"add\", p.key, p.dataset_id, p.period_tag, p.row_count, p.size, p.columns, p.run, p.rollup, \
             (SELECT count(*) FROM p) AS backlog \
         FROM p JOIN runs ON runs.run = p.run WHERE runs.upto - runs.files < ?2 ORDER BY p.at, p.key";

    /// A table's first pointer: `?1` table, `?2` metadata key, `?3` version, `?4` oldest kept
    /// sequence number, `?5` now, `?6` its snapshot's time (ms); only if no other commit created
    /// the table first (zero changes: the commit lost the race).
    LAKE_CREATE = "INSERT INTO lake_tables (name, metadata_key, version, oldest_sequence, updated_at, committed_ms) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 ON CONFLICT (name) DO NOTHING";

    /// The compare-and-swap: the pointer moves from `?7` to `?2` (`?3` version, `?4` oldest kept
    /// sequence number, `?5` now, `?6` its current snapshot's time in ms) only if it still names
    /// `?7`. (A file the commit adds that a
    /// consolidation retired meanwhile is listed as the index held it when the commit read,
    /// and leaves with the consolidation's output, in one later snapshot.)
    LAKE_SWAP = "UPDATE lake_tables SET metadata_key = ?2, version = ?3, oldest_sequence = ?4, updated_at = ?5, \
         committed_ms = ?6 WHERE name = ?1 AND metadata_key = ?7";

    /// Table `?1` keeps no snapshot below sequence number `?3` from `?4` (ms) on, if the pointer
    /// names `?2` (the first time only: when it became so).
    LAKE_EXPIRY = "INSERT OR IGNORE INTO lake_expiries (table_name, oldest_sequence, at_ms) \
         SELECT ?1, ?3, ?4 WHERE (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// Forgets table `?1`'s expiries from before `?2` (ms) but the latest of them (the one
    /// the grace period reads).
    LAKE_FORGET_EXPIRIES = "DELETE FROM lake_expiries WHERE table_name = ?1 AND at_ms <= ?2 \
         AND oldest_sequence < (SELECT max(oldest_sequence) FROM lake_expiries WHERE table_name = ?1 AND at_ms <= ?2)";

    /// The files `{keys}` of table `?1` are in snapshot `?3`, if the pointer names `?2` (the
    /// swap in the same batch succeeded).
    LAKE_MARK_ADDED = "UPDATE compacted_files SET lake_snapshot = ?3 \
         WHERE table_name = ?1 AND lake_snapshot IS NULL AND key IN ({keys}) \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// The files `{keys}` of table `?1` left it at sequence number `?3`, if the pointer names `?2`.
    LAKE_MARK_REMOVED = "UPDATE compacted_files SET lake_removed_seq = ?3 \
         WHERE table_name = ?1 AND lake_removed_seq IS NULL AND key IN ({keys}) \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// File `?3` of table `?1` is in the table without some of its columns (`?4` which and
    /// why), if the pointer names `?2`.
    LAKE_MARK_NOTED = "UPDATE compacted_files SET lake_note = ?4 \
         WHERE table_name = ?1 AND key = ?3 AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// Dataset `?1`'s compacted files that the shared tables refused or took without some of
    /// their columns, newest first, at most `?2`: [`LakeLeftOut`] rows for the status route.
    LAKE_LEFT_OUT = "SELECT key, table_name, lake_refused AS refused, lake_note AS note FROM compacted_files \
         WHERE dataset_id = ?1 AND retired_at IS NULL AND (lake_refused IS NOT NULL OR lake_note IS NOT NULL) \
         ORDER BY created_at DESC, key LIMIT ?2";

    /// File `?3` of table `?1` is refused by the table (`?4` why), decided on the metadata the
    /// pointer names, `?2` (NULL: no table yet).
    LAKE_MARK_REFUSED = "UPDATE compacted_files SET lake_refused = ?4 \
         WHERE table_name = ?1 AND key = ?3 AND lake_snapshot IS NULL \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) IS ?2";

    /// Object `?3` of table `?1` is free once the table keeps no snapshot below sequence number
    /// `?4` (`?5` now), if the pointer names `?2`.
    LAKE_GARBAGE = "INSERT OR IGNORE INTO lake_garbage (key, table_name, free_at_sequence, created_at) \
         SELECT ?3, ?1, ?4, ?5 WHERE (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// `?1` table → [`KeyRow`]s of its objects no snapshot it kept at `?3` (ms: now less the
    /// grace period) or since needs, at most `?2`.
    LAKE_GARBAGE_DUE = "SELECT key FROM lake_garbage WHERE table_name = ?1 AND free_at_sequence <= \
         (SELECT coalesce(max(oldest_sequence), 0) FROM lake_expiries WHERE table_name = ?1 AND at_ms <= ?3) \
         ORDER BY key LIMIT ?2";

    /// Forgets deleted objects `{keys}`.
    LAKE_FORGET_GARBAGE = "DELETE FROM lake_garbage WHERE key IN ({keys})";
    /// `?1` table → its [`LakeRollup`]s not yet listed nor refused, oldest first, at most `?2`,
    /// each with its members that changed since it read them (`stale`: retired, unlisted, or
    /// gone) and the files covered by the roll-ups it supersedes that it does not hold
    /// (`outside`): it can be listed only when both are 0.
    LAKE_ROLLUPS_PENDING = "SELECT r.id, r.period_tag, r.files, \
             (SELECT count(*) FROM lake_rollup_members m LEFT JOIN compacted_files f ON f.key = m.file_key \
              WHERE m.rollup_id = r.id AND (f.key IS NULL OR f.retired_at IS NOT NULL OR f.lake_snapshot IS NULL \
              OR f.lake_removed_seq IS NOT NULL)) AS stale, \
             (SELECT count(*) FROM compacted_files o WHERE o.lake_rollup IN (SELECT f.lake_rollup FROM lake_rollup_members m \
              JOIN compacted_files f ON f.key = m.file_key WHERE m.rollup_id = r.id AND f.lake_rollup IS NOT NULL) \
              AND o.key NOT IN (SELECT file_key FROM lake_rollup_members WHERE rollup_id = r.id)) AS outside \
         FROM lake_rollups r WHERE r.table_name = ?1 AND r.lake_snapshot IS NULL AND r.lake_refused IS NULL \
         ORDER BY r.created_at, r.id LIMIT ?2";

    /// `?1` roll-up → its members ([`RollupInput`]), with the roll-up each is covered by now.
    LAKE_ROLLUP_MEMBERS = "SELECT f.key, f.dataset_id, f.period_tag, f.row_count, f.size, f.source_segments, \
         f.schema_fingerprint, f.columns, f.lake_rollup AS rollup \
         FROM lake_rollup_members m JOIN compacted_files f ON f.key = m.file_key WHERE m.rollup_id = ?1 ORDER BY f.key";

    /// `?1` roll-up → the files ([`RollupInput`]) it covers now, retired or not.
    LAKE_ROLLUP_COVERED = "SELECT key, dataset_id, period_tag, row_count, size, source_segments, schema_fingerprint, columns, lake_rollup AS rollup \
         FROM compacted_files WHERE lake_rollup = ?1 ORDER BY key";

    /// `?1` roll-up → its [`LakeRollup`] row.
    LAKE_ROLLUP = "SELECT id, period_tag, files, 0 AS stale, 0 AS outside FROM lake_rollups WHERE id = ?1";

    /// Roll-up `?3` of table `?1` is listed by snapshot `?4`, and covers its members, if the
    /// pointer names `?2`.
    LAKE_MARK_ROLLUP_ADDED = "UPDATE lake_rollups SET lake_snapshot = ?4 WHERE id = ?3 AND table_name = ?1 \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";
    LAKE_MARK_COVERED = "UPDATE compacted_files SET lake_rollup = ?3 WHERE table_name = ?1 \
         AND key IN (SELECT file_key FROM lake_rollup_members WHERE rollup_id = ?3) \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// Roll-up `?3` of table `?1` left it at sequence number `?4`, if the pointer names `?2`.
    LAKE_MARK_ROLLUP_REMOVED = "UPDATE lake_rollups SET lake_removed_seq = ?4 WHERE id = ?3 AND table_name = ?1 \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";
    /// The files roll-up `?3` covered are listed on their own again, if the pointer names `?2`.
    LAKE_MARK_UNCOVERED = "UPDATE compacted_files SET lake_rollup = NULL WHERE table_name = ?1 AND lake_rollup = ?3 \
         AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) = ?2";

    /// Roll-up `?3` of table `?1` is refused (`?4` why), decided on metadata `?2`.
    LAKE_MARK_ROLLUP_REFUSED = "UPDATE lake_rollups SET lake_refused = ?4 WHERE id = ?3 AND table_name = ?1 \
         AND lake_snapshot IS NULL AND (SELECT metadata_key FROM lake_tables WHERE name = ?1) IS ?2";

    /// `?1` at most, `?2` fewest, `?3` one period only (or NULL) → [`RollupDue`]: each (table,
    /// period) whose files the tables list on their own number at least `?2`, and that has no
    /// roll-up waiting for the committer; most such files first.
    LAKE_ROLLUPS_DUE = "SELECT table_name, period_tag, count(*) AS files FROM compacted_files \
         WHERE lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL AND retired_at IS NULL AND lake_rollup IS NULL \
         AND (?3 IS NULL OR period_tag = ?3) GROUP BY table_name, period_tag HAVING count(*) >= ?2 AND NOT EXISTS (SELECT 1 FROM lake_rollups r \
         WHERE r.table_name = compacted_files.table_name AND r.period_tag = compacted_files.period_tag \
         AND r.lake_snapshot IS NULL AND r.lake_refused IS NULL) ORDER BY files DESC, table_name, period_tag LIMIT ?1";

    /// `?1` table, `?2` period → [`RollupInput`]s: the files the table lists of that period (on
    /// their own or through a roll-up), by schema, then dataset, oldest first.
    LAKE_ROLLUP_CANDIDATES = "SELECT key, dataset_id, period_tag, row_count, size, source_segments, schema_fingerprint, columns, lake_rollup AS rollup \
         FROM compacted_files WHERE table_name = ?1 AND period_tag = ?2 \
         AND lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL AND retired_at IS NULL \
         ORDER BY schema_fingerprint, dataset_id, created_at, key";

    /// A roll-up job's outputs: `?1` id, `?2` table, `?3` period, `?4` files (JSON), `?5` now.
    LAKE_ROLLUP_RECORD = "INSERT INTO lake_rollups (id, table_name, period_tag, files, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
    /// Its members: `?1` id, then the file keys `{keys}`.
    LAKE_ROLLUP_MEMBERS_RECORD = "INSERT INTO lake_rollup_members (rollup_id, file_key) \
         SELECT ?1, key FROM compacted_files WHERE key IN ({keys})";
}

/// A table's pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeTable {
    pub name: String,
    pub metadata_key: String,
    pub version: i64,
    pub oldest_sequence: i64,
    /// When its current snapshot was committed (ms; 0: unknown).
    pub committed_ms: i64,
    pub updated_at: String,
}

/// A table the index holds files for that it does not list (or lists retired).
#[derive(Debug, Deserialize)]
pub struct LakeBehind {
    pub name: String,
    /// When it last committed (ms; 0: never).
    pub committed_ms: i64,
}

/// A file a table must take (`add`) or let go of.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LakePending {
    #[serde(deserialize_with = "flag")]
    pub add: bool,
    pub key: String,
    pub dataset_id: String,
    pub period_tag: String,
    pub row_count: i64,
    pub size: i64,
    pub columns: Option<String>,
    /// The run that recorded it (`add`) or retired it.
    pub run: String,
    /// The roll-up that covers it (a file to remove only).
    #[serde(default)]
    pub rollup: Option<String>,
    /// How many files of the table are pending in all.
    pub backlog: u64,
}

/// A roll-up waiting for the committer (or named by [`LAKE_ROLLUP`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LakeRollup {
    pub id: String,
    pub period_tag: String,
    /// Its output files (JSON).
    pub files: String,
    /// Members changed since it read them.
    pub stale: u64,
    /// Files of the roll-ups it supersedes that it does not hold.
    pub outside: u64,
}

/// A (table, period) due for a roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RollupDue {
    pub table_name: String,
    pub period_tag: String,
    pub files: u64,
}

/// A table's compacted file as roll-ups see it: one a roll-up job may take
/// ([`LAKE_ROLLUP_CANDIDATES`]), or one a roll-up holds or covers ([`LAKE_ROLLUP_MEMBERS`],
/// [`LAKE_ROLLUP_COVERED`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RollupInput {
    pub key: String,
    pub dataset_id: String,
    pub period_tag: String,
    pub row_count: i64,
    pub size: i64,
    pub source_segments: i64,
    pub schema_fingerprint: String,
    /// Its columns as the run recorded them (JSON), if it did.
    pub columns: Option<String>,
    /// The roll-up that covers it now.
    pub rollup: Option<String>,
}

/// A staged output key, its run, its multipart upload if one was begun, and whether a commit
/// recorded it after all.
#[derive(Debug, Deserialize)]
pub struct StagedOutput {
    pub key: String,
    pub dataset_id: String,
    pub run_id: String,
    pub upload_id: Option<String>,
    #[serde(deserialize_with = "flag")]
    pub committed: bool,
}

#[derive(Debug, Deserialize)]
pub struct KeyRow {
    pub key: String,
}

#[derive(Debug, Deserialize)]
pub struct RunRow {
    pub run_id: String,
}

/// A boolean column: SQLite and D1 answer 0 or 1.
/// Reads a D1 boolean (0 or 1) as a `bool`, for `#[serde(deserialize_with)]`.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Number(f64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Number(n) => n != 0.0,
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::*;
    use fusou_testing::migrated_sqlite;

    #[test]
    fn every_statement_prepares_on_the_d1_schema_within_d1s_limits() {
        let conn = migrated_sqlite();
        // What wrangler makes when it applies the migrations, and the tests on a test stack.
        conn.execute_batch(
            "CREATE TABLE d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP);
             CREATE TABLE fault_injections (dataset_id TEXT NOT NULL, step TEXT NOT NULL);",
        )
        .unwrap();
        let all = [UPLOADS, RUNS, COMMIT, CLEANUP, LAKE].concat();
        assert!(all.len() >= 50, "{} statements", all.len());
        for (name, sql) in all {
            let keys: Vec<String> = (0..KEYS_PER_STATEMENT).map(|i| format!("k{i}")).collect();
            let sql = if sql.contains("{keys}") {
                keyed(sql, &[text("a"), text("b"), SqlValue::Int(1), text("d")], &keys).remove(0).sql
            } else if sql.contains("{rows}") {
                stage_outputs(&keys[..24], &DatasetId::parse("ds").unwrap(), "run", 0).remove(0).sql
            } else {
                sql.to_string()
            };
            let statement = conn.prepare(&sql).unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
            assert!(statement.parameter_count() <= 100, "{name} binds {} parameters", statement.parameter_count());
            assert!(sql.len() <= 100 * 1024, "{name} is longer than D1 takes");
        }
    }

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

    #[test]
    fn one_query_tells_the_owner_and_the_same_bytes() {
        let conn = migrated_sqlite();
        let check = |dataset: &str, hash: &str| {
            conn.query_row(UPLOAD_CHECK, params![dataset, hash], |r| Ok(UploadCheck { owner_id: r.get(0)?, stored_key: r.get(1)? }))
                .unwrap()
        };
        assert_eq!(check("ds", "h1"), UploadCheck { owner_id: None, stored_key: None }, "a new dataset answers one row");
        conn.execute(CLAIM_DATASET, params!["ds", "owner", "t0"]).unwrap();
        assert_eq!(check("ds", "h1"), UploadCheck { owner_id: Some("owner".into()), stored_key: None });
        insert(&conn, "k1", "h1").unwrap();
        assert_eq!(check("ds", "h1"), UploadCheck { owner_id: Some("owner".into()), stored_key: Some("k1".into()) });
        assert_eq!(check("other", "h1").stored_key, None, "bytes count per dataset");
    }

    #[test]
    fn every_time_is_written_in_one_format_that_orders_as_text() {
        let (a, b) = (iso(1_800_000_000_000), iso(1_800_000_000_001));
        assert_eq!(a, "2027-01-15T08:00:00.000Z");
        assert!(a < b);
        assert_eq!(iso(1_800_000_000_000 + 86_400_000 * 400).len(), a.len(), "fixed width");
    }
}
