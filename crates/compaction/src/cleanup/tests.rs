//! The clean-up over SQLite (the D1 schema and SQL) and memory (for R2), beside real runs of
//! the compaction workflow.

use futures::executor::block_on;
use rusqlite::params;

use super::*;
use crate::{Outcome, RunConfig, SkipReason, compact};
use fusou_core::workflow::{Backoff, RetryPolicy, StepConfig};
use fusou_engine::EngineConfig;
use fusou_synth::{self as synth, FragmentSpec};
use fusou_testing::{FakeClock, FakeRegistry, Memory, Sqlite};

const DS: &str = "ds-1";
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

struct World {
    db: Sqlite,
    blobs: Memory,
    catalog: FakeRegistry,
    clock: FakeClock,
    memory: crate::memory::MemoryBudget,
    uploaded: usize,
}

impl World {
    fn new() -> Self {
        let w = World {
            db: Sqlite::migrated(),
            blobs: Memory::default(),
            catalog: FakeRegistry::default(),
            clock: FakeClock::default(),
            memory: crate::memory::MemoryBudget::alone(crate::RunConfig::default().memory_bytes()),
            uploaded: 0,
        };
        w.clock.now.set(1_800_000_000_000);
        w
    }

    fn upload(&mut self, n: usize) {
        for _ in 0..n {
            let f = synth::fragment(&FragmentSpec { seed: self.uploaded as u64, rows: 1..=10, include_empty_tables: false });
            let key = format!("battle_data/{DS}/port_table/{:04}.parquet", self.uploaded);
            fusou_testing::store_fragment(&self.db, &self.blobs, DS, &key, &f);
            self.uploaded += 1;
        }
    }

    fn try_run(&self, run_id: &str, config: &RunConfig) -> Result<Outcome, crate::RunError> {
        let message = fusou_testing::realtime_message(DS);
        block_on(compact(
            &message,
            run_id,
            &crate::tests::local_ports(&self.db, &self.blobs, &self.catalog, &self.clock, &self.memory),
            config,
        ))
    }

    fn run(&self, run_id: &str, config: &RunConfig) -> Outcome {
        self.try_run(run_id, config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn clean(&self, config: &CleanupConfig) -> CleanupReport {
        block_on(clean_up(&self.db, &self.blobs, &self.clock, config)).unwrap()
    }

    fn advance(&self, ms: u64) {
        self.clock.now.set(self.clock.now.get() + ms);
    }

    fn count(&self, sql: &str) -> i64 {
        self.db.count(sql)
    }

    fn objects_under(&self, prefix: &str) -> usize {
        self.blobs.objects.borrow().keys().filter(|k| k.starts_with(prefix)).count()
    }
}

fn run_config() -> RunConfig {
    RunConfig {
        // Small parts, so that outputs go up by multipart upload.
        engine: EngineConfig { part_bytes: 4 * 1024, row_group_bytes: 16 * 1024, ..EngineConfig::default() },
        steps: StepConfig { retries: RetryPolicy { limit: 0, delay_ms: 10, backoff: Backoff::Exponential }, timeout_ms: 60_000 },
        lease_ms: 15 * 60_000,
        max_fragments: 500,
        max_run_bytes: 1 << 30,
        // One output per step, so that a crash can fall between any two outputs.
        merge_step_bytes: 0,
        ..RunConfig::default()
    }
}

#[test]
fn expired_leases_are_released_and_live_ones_kept() {
    let mut w = World::new();
    w.upload(1);
    let now = w.clock.now.get() as i64;
    w.db.with(|c| c.query_row(fusou_core::index::ACQUIRE_LEASE, params![DS, "dead", now, now + 1000, "t"], |_| Ok(())).unwrap());
    assert_eq!(w.clean(&CleanupConfig::default()).leases_released, 0, "still live");
    w.advance(1000);
    assert_eq!(w.clean(&CleanupConfig::default()).leases_released, 1);
    assert_eq!(w.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND compaction_needed = 1"), 1);
}

#[test]
fn a_dead_runs_outputs_are_deleted_and_it_can_never_commit_them() {
    let mut w = World::new();
    w.upload(4);
    // A run dies after writing some outputs (uploads half done included): they are staged, and
    // its lease is still held.
    w.blobs.fail_write.set(Some(40));
    let died = w.try_run("dead", &RunConfig { crash_after: Some("merge-5-5".into()), ..run_config() });
    assert!(died.is_err());
    w.blobs.fail_write.set(None);
    let staged = w.count("SELECT count(*) FROM staged_outputs WHERE run_id = 'dead'");
    assert!(staged >= 6, "{staged} staged");
    assert!(w.objects_under("battle_compacted/") >= 6);

    // Within the grace, or while the run holds its lease: untouched.
    let report = w.clean(&CleanupConfig::default());
    assert_eq!((report.runs_reaped, report.orphans_deleted), (0, 0));
    w.advance(HOUR + 1);
    let report = w.clean(&CleanupConfig { orphan_grace_ms: HOUR, ..CleanupConfig::default() });
    assert_eq!(report.leases_released, 1, "its 15-minute lease expired first");
    assert_eq!(report.runs_reaped, 1);
    assert_eq!(report.orphans_deleted, staged as u64);
    assert_eq!(w.objects_under("battle_compacted/"), 0, "every orphan object is gone");
    assert!(w.blobs.uploads.borrow().is_empty(), "and every unfinished upload aborted");
    assert_eq!(w.count("SELECT count(*) FROM staged_outputs"), 0);
    assert_eq!(w.count("SELECT count(*) FROM workflow_steps WHERE run_id = 'dead'"), 0);

    // Its message delivered again: the run may not come back to commit keys that are gone.
    assert_eq!(w.run("dead", &run_config()), Outcome::Skipped(SkipReason::Forgotten));
    // The fragments stayed pending: a new run compacts them, and keeps its outputs.
    let Outcome::Committed(summary) = w.run("next", &run_config()) else { panic!("expected a commit") };
    assert_eq!(summary.input_fragments, 4);
    w.advance(2 * HOUR);
    let report = w.clean(&CleanupConfig { orphan_grace_ms: HOUR, ..CleanupConfig::default() });
    assert_eq!((report.runs_reaped, report.orphans_deleted), (0, 0), "committed outputs are never orphans");
    assert_eq!(w.objects_under("battle_compacted/"), 32);

    // Two invocations of one run at once: the slower one may stage a key again after the other
    // committed it. Clean-up forgets the staged row and keeps the object.
    let key = summary.outputs[0].key.clone();
    w.db.with(|c| {
        c.execute("INSERT INTO staged_outputs (key, dataset_id, run_id, staged_at) VALUES (?1, ?2, 'next', 0)", params![key, DS]).unwrap()
    });
    let report = w.clean(&CleanupConfig { orphan_grace_ms: HOUR, ..CleanupConfig::default() });
    assert_eq!((report.runs_reaped, report.orphans_deleted), (0, 0));
    assert!(w.blobs.objects.borrow().contains_key(&key));
    assert_eq!(w.count("SELECT count(*) FROM staged_outputs"), 0);
}

#[test]
fn a_run_that_holds_its_lease_is_never_reaped() {
    let mut w = World::new();
    w.upload(2);
    let crashing = RunConfig { crash_after: Some("merge-3-3".into()), lease_ms: 10 * DAY, ..run_config() };
    assert!(w.try_run("slow", &crashing).is_err());
    w.advance(2 * DAY);
    let report = w.clean(&CleanupConfig::default());
    assert_eq!((report.runs_reaped, report.orphans_deleted), (0, 0));
    assert_eq!(w.count("SELECT count(*) FROM staged_outputs WHERE run_id = 'slow'"), 32, "all keys are staged up front");
}

#[test]
fn compacted_fragments_are_deleted_after_the_retention() {
    let mut w = World::new();
    w.upload(5);
    assert!(matches!(w.run("first", &run_config()), Outcome::Committed(_)));
    w.advance(3 * DAY);
    w.upload(2); // compacted later
    assert!(matches!(w.run("second", &run_config()), Outcome::Committed(_)));
    w.upload(1); // still pending
    let config = CleanupConfig { retention_ms: 7 * DAY, page: 2, ..CleanupConfig::default() };

    w.advance(3 * DAY);
    assert_eq!(w.clean(&config).fragments_purged, 0, "compacted 6 and 3 days ago: none due");
    w.advance(DAY + 1);
    let report = w.clean(&config);
    assert_eq!((report.fragments_purged, report.more_due), (5, false), "the first run's five, paged by 2");
    assert_eq!(w.objects_under("battle_data/"), 3);
    assert_eq!(w.count("SELECT count(*) FROM battle_files WHERE purged_at IS NOT NULL"), 5);
    assert_eq!(w.count("SELECT count(*) FROM battle_files"), 8, "rows stay, for the 409 of a repeated upload");
    assert_eq!(w.objects_under("battle_compacted/"), 64, "outputs are kept");

    w.advance(3 * DAY);
    let small = CleanupConfig { max_pages: 1, page: 1, ..config.clone() };
    let report = w.clean(&small);
    assert_eq!((report.fragments_purged, report.more_due), (1, true), "a pass is bounded; the next goes on");
    assert_eq!(w.clean(&config).fragments_purged, 1);
    assert_eq!(w.objects_under("battle_data/"), 1, "the pending fragment stays");
}

#[test]
fn retired_files_are_deleted_after_the_retention() {
    let mut w = World::new();
    let merging =
        RunConfig { consolidation: crate::consolidate::ConsolidationConfig { fan_in: 2, small_file_bytes: 4 << 20 }, ..run_config() };
    for run in ["first", "second", "third"] {
        w.upload(1);
        assert!(matches!(w.run(run, &merging), Outcome::Committed(_)), "{run}");
    }
    assert_eq!(
        w.count("SELECT count(*) FROM compacted_files WHERE retired_at IS NOT NULL"),
        64,
        "the third run merged the first two runs' files"
    );
    let live: Vec<String> = w.db.with(|c| {
        let mut s = c.prepare("SELECT key FROM compacted_files WHERE retired_at IS NULL").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    });
    let config = CleanupConfig { retention_ms: 7 * DAY, page: 50, ..CleanupConfig::default() };
    w.advance(7 * DAY - 1);
    assert_eq!(w.clean(&config).retired_files_deleted, 0, "retired less than 7 days ago: still downloadable");
    assert_eq!(w.objects_under("battle_compacted/"), 96);
    w.advance(1);
    let report = w.clean(&config);
    assert_eq!((report.retired_files_deleted, report.more_due), (64, false), "in two pages of 50");
    assert_eq!(w.count("SELECT count(*) FROM compacted_files"), 32, "retired rows are gone, live ones kept");
    let mut left: Vec<String> = w.blobs.objects.borrow().keys().filter(|k| k.starts_with("battle_compacted/")).cloned().collect();
    left.sort();
    let mut live = live;
    live.sort();
    assert_eq!(left, live, "exactly the live files' objects remain");
}

#[test]
fn fragments_with_a_quarantined_segment_are_kept() {
    let mut w = World::new();
    w.upload(2);
    w.db.with(|c| {
        c.execute(
            "INSERT INTO quarantined_segments VALUES ('battle_data/ds-1/port_table/0001.parquet', 'battle', ?1, 'r', 'bad page', 't')",
            params![DS],
        )
        .unwrap()
    });
    assert!(matches!(w.run("first", &run_config()), Outcome::Committed(_)));
    w.advance(8 * DAY);
    assert_eq!(w.clean(&CleanupConfig::default()).fragments_purged, 1);
    assert!(w.blobs.objects.borrow().contains_key("battle_data/ds-1/port_table/0001.parquet"));
}

#[test]
fn finished_runs_are_forgotten_after_the_retention_and_never_come_back() {
    let mut w = World::new();
    w.upload(3);
    let Outcome::Committed(first) = w.run("first", &run_config()) else { panic!("expected a commit") };
    w.advance(6 * DAY);
    w.upload(1);
    // A run that is still going (its lease held, its last step recent) is kept at any age.
    assert!(w.try_run("going", &RunConfig { crash_after: Some("merge-0-0".into()), lease_ms: 10 * DAY, ..run_config() }).is_err());
    let steps = |run: &str| w.count(&format!("SELECT count(*) FROM workflow_steps WHERE run_id = '{run}'"));
    let (first_steps, going_steps) = (steps("first"), steps("going"));
    assert!(first_steps > 32 && going_steps > 0);

    let config = CleanupConfig { retention_ms: 7 * DAY, ..CleanupConfig::default() };
    assert_eq!(w.clean(&config).runs_forgotten, 0, "6 days old: kept");
    w.advance(DAY + 1);
    assert_eq!(w.clean(&config).runs_forgotten, 1);
    assert_eq!((steps("first"), steps("going")), (0, going_steps));
    assert_eq!(w.count("SELECT count(*) FROM reaped_runs WHERE run_id = 'first' AND dataset_id = 'ds-1'"), 1);
    let counted = |run: &str| w.count(&format!("SELECT count(*) FROM compaction_runs WHERE run_id = '{run}'"));
    assert_eq!((counted("first"), counted("going")), (0, 1), "invocation counts go with their checkpoints");

    // The first run's message delivered once more: with no checkpoints it would start over and
    // write under the keys it committed; reaped, it takes no lease and changes nothing.
    let before = w.blobs.objects.borrow().get(&first.outputs[0].key).cloned();
    w.db.with(|c| c.execute("UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL", []).unwrap());
    assert_eq!(w.run("first", &run_config()), Outcome::Skipped(SkipReason::Forgotten));
    assert_eq!(w.blobs.objects.borrow().get(&first.outputs[0].key).cloned(), before);
    assert_eq!(w.count("SELECT count(*) FROM battle_files WHERE compacted_at IS NULL"), 1, "the late upload still waits");
    assert!(matches!(w.run("next", &run_config()), Outcome::Committed(_)));
}

#[test]
fn tombstones_of_refused_uploads_are_forgotten_after_the_retention() {
    let w = World::new();
    let start = w.clock.now.get();
    let at = |ms: u64| fusou_core::index::iso(start + ms);
    w.db.with(|c| {
        c.execute(fusou_core::index::DISCARD_UPLOAD, rusqlite::params!["old", at(0)]).unwrap();
        c.execute(fusou_core::index::DISCARD_UPLOAD, rusqlite::params!["new", at(6 * DAY)]).unwrap();
    });
    w.advance(8 * DAY);
    let config = CleanupConfig { retention_ms: 7 * DAY, ..CleanupConfig::default() };
    assert_eq!(w.clean(&config).discarded_uploads_forgotten, 1);
    assert_eq!(w.count("SELECT count(*) FROM discarded_uploads WHERE key = 'new'"), 1);
}

#[test]
fn a_table_that_cannot_be_read_stops_no_other_part_of_the_clean_up() {
    let mut w = World::new();
    w.upload(3);
    assert!(matches!(w.run("r1", &run_config()), Outcome::Committed(_)));
    let pass = block_on(fusou_lake::commit_pending(&w.db, &w.blobs, &w.clock, &CleanupConfig::default().lake));
    assert_eq!(pass.failures, []);
    let tables = w.count("SELECT count(*) FROM lake_tables");
    assert!(tables > 0, "the committer committed the run's tables");
    // A lease left by a dead run (on a new upload), and fragments past their retention.
    w.upload(1);
    let now = w.clock.now.get() as i64;
    w.db.with(|c| c.query_row(fusou_core::index::ACQUIRE_LEASE, params![DS, "dead", now, now + 1000, "t"], |_| Ok(())).unwrap());
    w.advance(8 * DAY);
    // Every read of the tables' objects fails.
    *w.blobs.fail_reads_under.borrow_mut() = Some("lake/".into());
    let report = w.clean(&CleanupConfig::default());
    assert_eq!(report.lake.failures.len() as i64, tables, "each table failed on its own: {:?}", report.lake.failures);
    assert!(report.lake.failures.iter().all(|f| f.error.contains("injected")), "{:?}", report.lake.failures);
    assert_eq!(report.failures, []);
    assert_eq!(report.leases_released, 1);
    assert_eq!(report.fragments_purged, 3);
    // Readable again: the next pass maintains every table.
    *w.blobs.fail_reads_under.borrow_mut() = None;
    assert_eq!(w.clean(&CleanupConfig::default()).lake.failures, []);
}
