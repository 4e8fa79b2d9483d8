//! The lease and the commit, run on SQLite with the D1 migrations and statements.

use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use super::*;
use fusou_contract::fragment::Quarantined;
use fusou_core::index;
use fusou_testing::migrated_sqlite;

const DS: &str = "ds-1";

fn bind(v: &SqlValue) -> &dyn ToSql {
    match v {
        SqlValue::Text(s) => s,
        SqlValue::Int(n) => n,
        SqlValue::Null => &rusqlite::types::Null,
    }
}

/// Runs a batch atomically, as D1's `batch()` does; answers each statement's changes.
fn run_batch(conn: &mut Connection, batch: &[Statement]) -> Vec<u64> {
    let tx = conn.transaction().unwrap();
    let changes = batch.iter().map(|s| tx.execute(&s.sql, params_from_iter(s.params.iter().map(bind))).unwrap() as u64).collect();
    tx.commit().unwrap();
    changes
}

fn upload(conn: &Connection, key: &str) {
    conn.execute(index::CLAIM_DATASET, params![DS, "owner", "t0"]).unwrap();
    let n =
        conn.execute(index::INSERT_FRAGMENT, params![key, DS, "port_table", "p", format!("hash-{key}"), 100, "[]", "owner", "t0"]).unwrap();
    assert_eq!(n, 1);
}

fn acquire(conn: &Connection, run: &str, now_ms: i64) -> Option<i64> {
    conn.query_row(index::ACQUIRE_LEASE, params![DS, run, now_ms, now_ms + 60_000, "t"], |r| r.get(0)).optional().unwrap()
}

fn lease(run: &str, epoch: i64) -> Lease {
    Lease { dataset: DatasetId::parse(DS).unwrap(), run_id: run.into(), epoch }
}

fn output(key: &str) -> OutputRecord {
    OutputRecord {
        key: key.into(),
        period: PeriodTag::parse("p").unwrap(),
        table: TableName::parse("battle").unwrap(),
        schema_fingerprint: "fp".into(),
        rows: 10,
        bytes: 1000,
        source_segments: 2,
        columns: r#"[{"name":"uuid","type":"string"}]"#.into(),
    }
}

fn stage(conn: &Connection, key: &str, run: &str) {
    conn.execute("INSERT INTO staged_outputs (key, dataset_id, run_id, staged_at) VALUES (?1, ?2, ?3, 0)", params![key, DS, run]).unwrap();
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn pending(conn: &Connection) -> i64 {
    count(conn, "SELECT count(*) FROM battle_files WHERE compacted_at IS NULL")
}

fn needed(conn: &Connection) -> i64 {
    count(conn, "SELECT compaction_needed FROM datasets")
}

#[test]
fn one_run_holds_the_lease_until_it_expires() {
    let conn = migrated_sqlite();
    assert_eq!(acquire(&conn, "a", 0), None, "no dataset yet");
    upload(&conn, "k1");
    assert_eq!(acquire(&conn, "a", 1_000), Some(1));
    assert_eq!(acquire(&conn, "b", 2_000), None, "a live lease is another run's");
    assert_eq!(acquire(&conn, "a", 3_000), Some(1), "a redelivered run resumes its own lease");
    assert_eq!(acquire(&conn, "b", 1_000 + 60_000 + 60_000), Some(2), "an expired lease is taken over, fenced by a new epoch");
}

#[test]
fn a_commit_records_marks_clears_and_releases_at_once() {
    let mut conn = migrated_sqlite();
    upload(&conn, "k1");
    upload(&conn, "k2");
    let epoch = acquire(&conn, "a", 0).unwrap();
    stage(&conn, "out/1", "a");
    let bad = Quarantined { fragment_key: "k2".into(), table: "battle".into(), error: "bad page".into() };
    let batch = commit_batch(&lease("a", epoch), &[output("out/1")], &["k1".into(), "k2".into()], &[], &[bad], "t1");
    let changes = run_batch(&mut conn, &batch.statements);
    assert_eq!(changes, vec![2, 1, 0, 0, 1, 1, 1, 1], "fragments, check, no undo (twice), output, quarantine, staged key, dataset");
    assert_eq!(batch.outcome(&changes), CommitOutcome::Committed);
    assert_eq!(count(&conn, "SELECT count(*) FROM staged_outputs"), 0, "committed: no longer an orphan candidate");
    assert_eq!(count(&conn, "SELECT count(*) FROM quarantined_segments WHERE fragment_key = 'k2' AND run_id = 'a'"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM compacted_files WHERE run_id = 'a'"), 1);
    assert_eq!(pending(&conn), 0);
    assert_eq!(needed(&conn), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND last_compacted_at = 't1'"), 1);

    // The same commit again (a redelivered message after success): the lease is gone, nothing changes.
    let again = run_batch(&mut conn, &batch.statements);
    assert_eq!(again, vec![0; 8]);
    assert_eq!(batch.outcome(&again), CommitOutcome::LostLease);
    assert_eq!(pending(&conn), 0, "the first commit's marks stay");
    assert_eq!(count(&conn, "SELECT count(*) FROM compacted_files"), 1, "nothing counted twice");
}

#[test]
fn a_run_that_lost_its_lease_changes_nothing() {
    let mut conn = migrated_sqlite();
    upload(&conn, "k1");
    let old = acquire(&conn, "slow", 0).unwrap();
    let new = acquire(&conn, "fast", 200_000).unwrap();
    assert!(new > old);
    // The slow run finishes late: fenced by the epoch, its batch is a no-op (outputs orphaned).
    stage(&conn, "out/slow", "slow");
    let late = run_batch(&mut conn, &commit_batch(&lease("slow", old), &[output("out/slow")], &["k1".into()], &[], &[], "t1").statements);
    assert_eq!(late, vec![0; 7]);
    assert_eq!(count(&conn, "SELECT count(*) FROM staged_outputs WHERE run_id = 'slow'"), 1, "left for clean-up");
    assert_eq!((pending(&conn), needed(&conn)), (1, 1));
    let won = run_batch(&mut conn, &commit_batch(&lease("fast", new), &[output("out/fast")], &["k1".into()], &[], &[], "t2").statements);
    assert_eq!(won, vec![1, 1, 0, 0, 1, 0, 1]);
    assert_eq!(count(&conn, "SELECT count(*) FROM compacted_files"), 1);
}

#[test]
fn fragments_uploaded_during_a_run_stay_pending() {
    let mut conn = migrated_sqlite();
    upload(&conn, "k1");
    let epoch = acquire(&conn, "a", 0).unwrap();
    upload(&conn, "k2"); // arrives after the run listed its fragments
    run_batch(&mut conn, &commit_batch(&lease("a", epoch), &[output("out/1")], &["k1".into()], &[], &[], "t1").statements);
    assert_eq!(pending(&conn), 1);
    assert_eq!(needed(&conn), 1, "the dataset stays marked for the next run");
}

#[test]
fn many_fragments_are_marked_within_the_parameter_limit() {
    let mut conn = migrated_sqlite();
    let keys: Vec<String> = (0..250).map(|i| format!("k{i:03}")).collect();
    keys.iter().for_each(|k| upload(&conn, k));
    let epoch = acquire(&conn, "a", 0).unwrap();
    let batch = commit_batch(&lease("a", epoch), &[], &keys, &[], &[], "t1");
    assert!(batch.statements.iter().all(|s| s.params.len() <= 100), "D1 binds at most 100 parameters");
    // Three chunks of marks, the check, two undos and the release (no output: no staged key).
    assert_eq!(batch.statements.len(), 3 + 4);
    let changes = run_batch(&mut conn, &batch.statements);
    assert_eq!(changes.iter().take(3).sum::<u64>(), 250);
    assert_eq!(batch.outcome(&changes), CommitOutcome::Committed);
    assert_eq!(pending(&conn), 0);
}

#[test]
fn a_commit_of_fragments_another_run_compacted_records_nothing_and_marks_nothing() {
    let mut conn = migrated_sqlite();
    upload(&conn, "k1");
    upload(&conn, "k2");
    // Run "b" compacted k1 while "a" (resumed later from its checkpoints) had listed k1 and k2.
    let b = acquire(&conn, "b", 0).unwrap();
    run_batch(&mut conn, &commit_batch(&lease("b", b), &[output("out/b")], &["k1".into()], &[], &[], "t1").statements);
    let a = acquire(&conn, "a", 1).unwrap();
    stage(&conn, "out/a", "a");
    let batch = commit_batch(&lease("a", a), &[output("out/a")], &["k1".into(), "k2".into()], &[], &[], "t2");
    let changes = run_batch(&mut conn, &batch.statements);
    assert_eq!(changes, vec![1, 0, 1, 0, 0, 0, 1], "k2 marked, check failed, k2 unmarked, nothing recorded, lease released");
    assert_eq!(batch.outcome(&changes), CommitOutcome::Superseded);
    assert_eq!(count(&conn, "SELECT count(*) FROM compacted_files WHERE run_id = 'a'"), 0, "k1's rows are not counted twice");
    assert_eq!(count(&conn, "SELECT count(*) FROM battle_files WHERE key = 'k2' AND compacted_at IS NULL"), 1, "k2 stays pending");
    assert_eq!(count(&conn, "SELECT count(*) FROM staged_outputs WHERE run_id = 'a'"), 1, "left for clean-up");
    let last: String = conn.query_row("SELECT last_compacted_at FROM datasets", [], |r| r.get(0)).unwrap();
    assert_eq!(last, "t1", "the last commit is still b's");
    assert_eq!((needed(&conn), acquire(&conn, "c", 2).is_some()), (1, true), "released, still marked");
}

/// Run "a" compacted fragment k1 into out/a1 and out/a2.
fn first_run_wrote_two_files() -> Connection {
    let mut conn = migrated_sqlite();
    upload(&conn, "k1");
    let a = acquire(&conn, "a", 0).unwrap();
    run_batch(&mut conn, &commit_batch(&lease("a", a), &[output("out/a1"), output("out/a2")], &["k1".into()], &[], &[], "t1").statements);
    conn
}

fn live_outputs(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("SELECT key FROM compacted_files WHERE retired_at IS NULL ORDER BY key").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn a_consolidating_commit_retires_the_merged_files_with_its_output() {
    let mut conn = first_run_wrote_two_files();
    upload(&conn, "k2");
    let b = acquire(&conn, "b", 1).unwrap();
    let retired = ["out/a1".to_string(), "out/a2".to_string()];
    let batch = commit_batch(&lease("b", b), &[output("out/b")], &["k2".into()], &retired, &[], "t2");
    let changes = run_batch(&mut conn, &batch.statements);
    assert_eq!(batch.outcome(&changes), CommitOutcome::Committed);
    assert_eq!(live_outputs(&conn), ["out/b"], "the merged files' rows are counted once, in the new file");
    assert_eq!(count(&conn, "SELECT count(*) FROM compacted_files WHERE retired_run_id = 'b' AND retired_at = 't2'"), 2);
    let summary: (i64, i64) = conn.query_row(index::COMPACTED_SUMMARY, params![DS], |r| Ok((r.get(0)?, r.get(2)?))).unwrap();
    assert_eq!(summary, (1, 10), "the summary sees live files only");
    let retired_at: Option<String> = conn.query_row(index::OUTPUT_BY_KEY, params![DS, "out/a1"], |r| r.get("retired_at")).unwrap();
    assert_eq!(retired_at.as_deref(), Some("t2"), "the download route answers a retired file with 410");
}

#[test]
fn a_commit_that_merged_a_file_another_run_retired_records_nothing() {
    let mut conn = first_run_wrote_two_files();
    // "b" merged out/a1 into its output; "c", resumed from old checkpoints, had merged both.
    upload(&conn, "k2");
    let b = acquire(&conn, "b", 1).unwrap();
    run_batch(&mut conn, &commit_batch(&lease("b", b), &[output("out/b")], &["k2".into()], &["out/a1".into()], &[], "t2").statements);
    upload(&conn, "k3");
    let c = acquire(&conn, "c", 2).unwrap();
    let batch = commit_batch(&lease("c", c), &[output("out/c")], &["k3".into()], &["out/a1".into(), "out/a2".into()], &[], "t3");
    let changes = run_batch(&mut conn, &batch.statements);
    assert_eq!(batch.outcome(&changes), CommitOutcome::Superseded);
    assert_eq!(live_outputs(&conn), ["out/a2", "out/b"], "out/a2 is live again, out/c not recorded");
    assert_eq!(pending(&conn), 1, "k3 stays pending");
}

#[test]
fn release_after_failure_keeps_the_work_pending() {
    let conn = migrated_sqlite();
    upload(&conn, "k1");
    acquire(&conn, "a", 0).unwrap();
    assert_eq!(conn.execute(index::RELEASE_LEASE, params![DS, "b"]).unwrap(), 0, "only the holder releases");
    assert_eq!(conn.execute(index::RELEASE_LEASE, params![DS, "a"]).unwrap(), 1);
    assert_eq!((pending(&conn), needed(&conn)), (1, 1));
    assert_eq!(acquire(&conn, "c", 1).map(|e| e > 1), Some(true), "the next run takes it at once");
    let listed: Vec<String> = {
        let mut stmt = conn.prepare(index::PENDING_FRAGMENTS).unwrap();
        stmt.query_map(params![DS, None::<String>, None::<String>, 10, i64::MAX], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(listed, vec!["k1".to_string()]);
}
