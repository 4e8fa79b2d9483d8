//! The compaction workflow over SQLite (the D1 schema and SQL) and memory (for R2): rows
//! compared by value, redelivery, crashes at every step, a stolen lease, continuation,
//! quarantine.

use arrow_array::RecordBatch;
use fusou_ports::PortResult;
use futures::executor::block_on;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rusqlite::params;

use super::*;
use fusou_contract::ids::{PeriodTag, TableName};
use fusou_core::index::LakeTable;
use fusou_core::workflow::{Backoff, RetryPolicy};
use fusou_engine::EngineConfig;
use fusou_lake::commit::LakeConfig;
use fusou_synth::{self as synth, FragmentSpec};
use fusou_testing::{FakeClock, FakeRegistry, Interleaved, Memory, Sqlite};

const DS: &str = "ds-1";

/// A run's ports over SQLite (the index and the checkpoints) and memory (the bucket).
pub(crate) type LocalPorts<'a> = RunPorts<'a, Sqlite, Memory, Sqlite, FakeRegistry, FakeClock>;

pub(crate) fn local_ports<'a>(
    db: &'a Sqlite,
    blobs: &'a Memory,
    registry: &'a FakeRegistry,
    clock: &'a FakeClock,
    memory: &'a MemoryBudget,
) -> LocalPorts<'a> {
    RunPorts { sql: db, blobs, checkpoints: db, registry, clock, memory }
}

struct World {
    db: Sqlite,
    blobs: Memory,
    catalog: FakeRegistry,
    clock: FakeClock,
    memory: MemoryBudget,
    fragments: Vec<synth::Fragment>,
}

impl World {
    fn with_fragments(n: u64) -> Self {
        let w = World {
            db: Sqlite::migrated(),
            blobs: Memory::default(),
            catalog: FakeRegistry::default(),
            clock: FakeClock::default(),
            memory: MemoryBudget::alone(RunConfig::default().memory_bytes()),
            fragments: Vec::new(),
        };
        let mut w = w;
        for seed in 0..n {
            w.upload(synth::fragment(&FragmentSpec { seed, rows: 1..=20, include_empty_tables: false }));
        }
        w
    }

    fn upload(&mut self, f: synth::Fragment) {
        let key = format!("battle_data/{DS}/port_table/{:04}.parquet", self.fragments.len());
        fusou_testing::store_fragment(&self.db, &self.blobs, DS, &key, &f);
        self.fragments.push(f);
    }

    fn ports(&self) -> LocalPorts<'_> {
        local_ports(&self.db, &self.blobs, &self.catalog, &self.clock, &self.memory)
    }

    fn run(&self, run_id: &str, config: &RunConfig) -> Result<Outcome, RunError> {
        block_on(compact(&message(), run_id, &self.ports(), config))
    }

    /// Every compacted row of `table`, read back from the outputs D1 lists, in key order.
    fn compacted_rows(&self, table: &str) -> Vec<RecordBatch> {
        let keys: Vec<String> = self.db.with(|c| {
            let mut s = c.prepare("SELECT key FROM compacted_files WHERE table_name = ?1 AND retired_at IS NULL ORDER BY key").unwrap();
            s.query_map(params![table], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        });
        keys.iter()
            .flat_map(|k| {
                let file = self.blobs.objects.borrow()[k].clone();
                ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(Result::unwrap).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Asserts that the outputs hold exactly the rows of these fragments, in their order, by value.
    fn check_exact(&self, fragments: impl IntoIterator<Item = usize>) {
        let fragments: Vec<usize> = fragments.into_iter().collect();
        for table in synth::client_tables() {
            let expected: Vec<RecordBatch> = fragments
                .iter()
                .map(|&i| self.fragments[i].segments.iter().find(|s| s.table == table.name).unwrap().batch.clone())
                .collect();
            let expected = arrow_select::concat::concat_batches(&table.schema, &expected).unwrap();
            let got = self.compacted_rows(table.name.as_str());
            let got = arrow_select::concat::concat_batches(&got[0].schema(), &got).unwrap();
            assert_eq!(got.num_rows(), expected.num_rows(), "{}", table.name);
            for (i, field) in table.schema.fields().iter().enumerate() {
                assert_eq!(
                    got.column_by_name(field.name()).unwrap().to_data(),
                    expected.column(i).to_data(),
                    "{}.{}",
                    table.name,
                    field.name()
                );
            }
        }
    }

    /// A pass of the open tables' committer, as its alarm runs it.
    fn commit_tables(&self) -> fusou_lake::CommitPass {
        block_on(fusou_lake::commit_pending(&self.db, &self.blobs, &self.clock, &LakeConfig::default()))
    }

    fn pending(&self) -> i64 {
        self.db.count("SELECT count(*) FROM battle_files WHERE compacted_at IS NULL")
    }
}

/// As the upload service sends it: narrowed to the fragment's table and period.
fn message() -> CompactionMessage {
    CompactionMessage {
        table: Some(TableName::parse("port_table").unwrap()),
        period_tag: Some(PeriodTag::parse("2025-11-05").unwrap()),
        ..fusou_testing::realtime_message(DS)
    }
}

fn config(retries: u32) -> RunConfig {
    RunConfig {
        engine: EngineConfig { part_bytes: 16 * 1024, row_group_bytes: 64 * 1024, ..EngineConfig::default() },
        steps: StepConfig { retries: RetryPolicy { limit: retries, delay_ms: 10, backoff: Backoff::Exponential }, timeout_ms: 60_000 },
        lease_ms: 900_000,
        max_fragments: 500,
        max_run_bytes: 1 << 30,
        // One output per step, so that a crash can fall between any two outputs.
        merge_step_bytes: 0,
        ..RunConfig::default()
    }
}

fn committed(outcome: Outcome) -> Summary {
    match outcome {
        Outcome::Committed(s) => s,
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn a_run_compacts_every_row_exactly_once() {
    let w = World::with_fragments(12);
    let summary = committed(w.run("run-a", &config(0)).unwrap());
    assert_eq!(summary.input_fragments, 12);
    assert_eq!(summary.outputs.len(), 32);
    assert!(summary.quarantined.is_empty());
    w.check_exact(0..12);
    assert_eq!(w.pending(), 0);
    assert_eq!(w.db.count("SELECT compaction_needed FROM datasets"), 0);
    assert_eq!(w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL"), 1, "lease released");
    assert!(w.blobs.uploads.borrow().is_empty(), "no multipart upload left open");
    assert_eq!(w.db.count("SELECT count(*) FROM staged_outputs"), 0, "committed keys are no longer staged");
    assert_eq!(w.catalog.datasets.borrow().as_slice(), &[(DS.to_string(), "owner".to_string())], "the catalog knows the dataset");
    let key = &summary.outputs[0].key;
    assert!(key.starts_with(&format!("battle_compacted/2025-11-05/{DS}/")) && key.ends_with("run-a-0.parquet"), "{key}");
}

#[test]
fn a_redelivered_message_changes_nothing() {
    let mut w = World::with_fragments(5);
    committed(w.run("run-a", &config(0)).unwrap());
    let writes = w.blobs.writes.get();
    // Delivered again with nothing pending: a quick no-op.
    assert_eq!(w.run("run-a", &config(0)).unwrap(), Outcome::Skipped(SkipReason::NothingPending));
    // Delivered again after new uploads: every step comes from its checkpoint, nothing is
    // written or counted again, the lease is given back, and the new fragment stays pending.
    w.upload(synth::fragment(&FragmentSpec { seed: 50, rows: 1..=20, include_empty_tables: false }));
    let again = committed(w.run("run-a", &config(0)).unwrap());
    assert_eq!(again.input_fragments, 5);
    assert_eq!(w.blobs.writes.get(), writes);
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files"), 32);
    assert_eq!(w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND compaction_needed = 1"), 1);
    assert_eq!(w.pending(), 1);
    w.check_exact(0..5);
    // The next message takes the new fragment.
    committed(w.run("run-b", &config(0)).unwrap());
    w.check_exact(0..6);
}

#[test]
fn a_crash_at_any_write_resumes_to_the_exact_rows() {
    // Fail the n-th object write (every output is one or more writes), then run again.
    let probe = World::with_fragments(6);
    committed(probe.run("probe", &config(0)).unwrap());
    let total_writes = probe.blobs.writes.get();
    for fail_at in [1, 2, total_writes / 2, total_writes] {
        let w = World::with_fragments(6);
        w.blobs.fail_write.set(Some(fail_at));
        let err = w.run("run-a", &config(0)).unwrap_err();
        assert!(err.0.step().starts_with("merge-"), "{err}");
        assert_eq!(w.pending(), 6, "nothing marked");
        assert_eq!(w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL"), 1, "lease released");
        w.blobs.fail_write.set(None);
        committed(w.run("run-a", &config(0)).unwrap());
        w.check_exact(0..6);
        assert_eq!(w.db.count("SELECT count(*) FROM compacted_files"), 32, "fail at {fail_at}");
        assert!(w.blobs.uploads.borrow().is_empty(), "aborted uploads are gone");
    }
    // The run writes nothing of the tables: its D1 commit is its end, its files pending for
    // the committer.
    assert!(!probe.blobs.objects.borrow().keys().any(|k| k.starts_with("lake/")));
    assert_eq!(probe.db.count("SELECT count(*) FROM compacted_files WHERE lake_snapshot IS NULL"), 32);
}

#[test]
fn a_transient_failure_is_retried_within_the_step() {
    let w = World::with_fragments(3);
    w.blobs.fail_write.set(Some(2));
    committed(w.run("run-a", &config(2)).unwrap());
    w.check_exact(0..3);
    assert_eq!(*w.clock.slept.borrow(), vec![10]);
}

#[test]
fn a_run_that_lost_its_lease_commits_nothing() {
    /// Lets another run take the lease just before the commit.
    struct Thief<'a>(&'a Sqlite);
    impl Sql for Thief<'_> {
        async fn query<T: serde::de::DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> PortResult<Vec<T>> {
            self.0.query(sql, params).await
        }
        async fn run(&self, sql: &str, params: &[SqlValue]) -> PortResult<u64> {
            self.0.run(sql, params).await
        }
        async fn batch(&self, statements: &[Statement]) -> PortResult<Vec<u64>> {
            self.0.with(|c| c.execute("UPDATE datasets SET lease_run_id = 'thief', lease_epoch = lease_epoch + 1", []).unwrap());
            self.0.batch(statements).await
        }
    }
    let w = World::with_fragments(4);
    let thief = Thief(&w.db);
    let outcome = block_on(compact(
        &message(),
        "run-a",
        &RunPorts { sql: &thief, blobs: &w.blobs, checkpoints: &w.db, registry: &w.catalog, clock: &w.clock, memory: &w.memory },
        &config(0),
    ))
    .unwrap();
    let Outcome::LostLease { orphans } = outcome else { panic!("expected a lost lease, got {outcome:?}") };
    assert_eq!(orphans.len(), 32);
    assert_eq!(w.db.count("SELECT count(*) FROM staged_outputs WHERE run_id = 'run-a'"), 32, "left staged for clean-up");
    assert_eq!(w.pending(), 4);
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files"), 0, "nothing counted");
}

#[test]
fn a_resumed_run_whose_fragments_another_run_compacted_counts_nothing_twice() {
    let mut w = World::with_fragments(4);
    // run-a merges every output, then its invocation dies before the commit...
    let crashing = RunConfig { crash_after: Some("merge-31-31".into()), ..config(0) };
    w.run("run-a", &crashing).unwrap_err();
    // ...its lease expires and run-b compacts the same fragments...
    w.clock.now.set(w.clock.now.get() + config(0).lease_ms + 1);
    committed(w.run("run-b", &config(0)).unwrap());
    // ...and a new upload marks the dataset again, so run-a's redelivery takes the lease and
    // resumes from its checkpoints: outputs of fragments that are no longer pending.
    w.upload(synth::fragment(&FragmentSpec { seed: 50, rows: 1..=20, include_empty_tables: false }));
    let outcome = w.run("run-a", &config(0)).unwrap();
    let Outcome::Superseded { orphans } = outcome else { panic!("expected a superseded run, got {outcome:?}") };
    assert_eq!(orphans.len(), 32);
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files WHERE run_id = 'run-a'"), 0, "nothing counted twice");
    assert_eq!(w.db.count("SELECT count(*) FROM staged_outputs WHERE run_id = 'run-a'"), 32, "left staged for clean-up");
    assert_eq!(w.db.count("SELECT count(*) FROM battle_files WHERE compacted_run_id = 'run-a'"), 0, "no fragment taken");
    assert_eq!(
        w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND compaction_needed = 1"),
        1,
        "lease released, work left"
    );
    w.check_exact(0..4);
    committed(w.run("run-c", &config(0)).unwrap());
    w.check_exact(0..5);
}

#[test]
fn a_run_whose_listing_another_run_partly_took_marks_none_of_it() {
    let w = World::with_fragments(3);
    let crashing = RunConfig { crash_after: Some("merge-31-31".into()), ..config(0) };
    w.run("run-a", &crashing).unwrap_err();
    // Another run took only the first fragment (as a run capped at one fragment would).
    w.clock.now.set(w.clock.now.get() + config(0).lease_ms + 1);
    committed(w.run("run-b", &RunConfig { max_fragments: 1, ..config(0) }).unwrap());
    let outcome = w.run("run-a", &config(0)).unwrap();
    assert!(matches!(outcome, Outcome::Superseded { .. }), "{outcome:?}");
    assert_eq!(w.pending(), 2, "run-a's two other fragments stay pending, not marked without their rows");
    committed(w.run("run-c", &config(0)).unwrap());
    w.check_exact(0..3);
}

/// Three runs of one fragment each leave three small files per table; with a fan-in of 3, the
/// fourth run merges them with its own fragment.
fn consolidating(fan_in: usize) -> RunConfig {
    RunConfig { consolidation: ConsolidationConfig { fan_in, small_file_bytes: 4 << 20 }, ..config(0) }
}

fn upload_and_run(w: &mut World, seed: u64, run_id: &str, config: &RunConfig) -> Result<Outcome, RunError> {
    w.upload(synth::fragment(&FragmentSpec { seed, rows: 1..=20, include_empty_tables: false }));
    w.run(run_id, config)
}

fn live_files(w: &World) -> i64 {
    w.db.count("SELECT count(*) FROM compacted_files WHERE retired_at IS NULL")
}

#[test]
fn small_files_are_merged_once_a_tier_holds_fan_in_of_them() {
    let mut w = World::with_fragments(0);
    for (seed, run) in [(0, "run-1"), (1, "run-2"), (2, "run-3")] {
        let summary = committed(upload_and_run(&mut w, seed, run, &consolidating(3)).unwrap());
        assert_eq!(summary.consolidated_files, 0, "{run}: a tier of fewer than 3 files waits");
    }
    assert_eq!(live_files(&w), 3 * 32);
    let summary = committed(upload_and_run(&mut w, 3, "run-4", &consolidating(3)).unwrap());
    assert_eq!(summary.consolidated_files, 3 * 32);
    assert_eq!(summary.outputs.len(), 32, "one file per table: the old files and the new fragment together");
    assert!(summary.outputs.iter().all(|o| o.source_segments == 4), "{:?}", summary.outputs);
    assert_eq!(live_files(&w), 32);
    w.check_exact(0..4);
    let retired = w.db.count("SELECT count(*) FROM compacted_files WHERE retired_run_id = 'run-4' AND retired_at IS NOT NULL");
    assert_eq!(retired, 3 * 32, "retired in the commit that recorded their replacement");
    // The output says how many fragment segments it holds, as its D1 row does.
    let key = &summary.outputs[0].key;
    let file = w.blobs.objects.borrow()[key].clone();
    let meta = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().metadata().clone();
    let sources = meta
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .find(|kv| kv.key == fusou_engine::merge::META_SOURCE_SEGMENTS)
        .unwrap()
        .value
        .clone();
    assert_eq!(sources.as_deref(), Some("4"));
    // The next runs start a new tier 0 beside the merged files.
    committed(upload_and_run(&mut w, 4, "run-5", &consolidating(3)).unwrap());
    assert_eq!(live_files(&w), 2 * 32);
    w.check_exact(0..5);
}

#[test]
fn a_fan_in_of_zero_never_consolidates() {
    let mut w = World::with_fragments(0);
    for (seed, run) in [(0, "run-1"), (1, "run-2"), (2, "run-3")] {
        committed(upload_and_run(&mut w, seed, run, &consolidating(0)).unwrap());
    }
    assert_eq!(live_files(&w), 3 * 32);
    assert!(
        w.db.with(|c| c
            .query_row("SELECT count(*) FROM workflow_steps WHERE step = 'list-small-files'", [], |r| r.get::<_, i64>(0))
            .unwrap())
            == 0
    );
}

#[test]
fn a_consolidating_run_that_crashes_after_any_step_resumes_to_the_exact_rows() {
    for step in ["list-small-files", "read-fragments", "merge-0-0", "merge-31-31"] {
        let mut w = World::with_fragments(0);
        for (seed, run) in [(0, "run-1"), (1, "run-2")] {
            committed(upload_and_run(&mut w, seed, run, &consolidating(2)).unwrap());
        }
        let crashing = RunConfig { crash_after: Some(step.into()), ..consolidating(2) };
        upload_and_run(&mut w, 2, "run-3", &crashing).unwrap_err();
        let summary = committed(w.run("run-3", &consolidating(2)).unwrap());
        assert_eq!(summary.consolidated_files, 2 * 32, "{step}");
        assert_eq!(live_files(&w), 32, "{step}");
        w.check_exact(0..3);
    }
}

#[test]
fn a_run_leaves_consolidation_that_does_not_fit_its_bytes_to_a_later_run() {
    let mut w = World::with_fragments(0);
    for (seed, run) in [(0, "run-1"), (1, "run-2")] {
        committed(upload_and_run(&mut w, seed, run, &consolidating(2)).unwrap());
    }
    // A run whose byte cap its fragment fills: no room to merge files as well.
    let fragment = synth::fragment(&FragmentSpec { seed: 2, rows: 1..=20, include_empty_tables: false });
    let tight = RunConfig { max_run_bytes: fragment.bytes.len() as u64, ..consolidating(2) };
    w.upload(fragment);
    assert_eq!(committed(w.run("run-3", &tight).unwrap()).consolidated_files, 0);
    assert_eq!(live_files(&w), 3 * 32);
    committed(upload_and_run(&mut w, 3, "run-4", &consolidating(2)).unwrap());
    assert_eq!(live_files(&w), 32, "the next run with room merges every tier that filled");
    w.check_exact(0..4);
}

#[test]
fn another_runs_live_lease_means_skipped() {
    let w = World::with_fragments(2);
    let epoch: i64 =
        w.db.with(|c| c.query_row(fusou_core::index::ACQUIRE_LEASE, params![DS, "other", 0, 10_000_000, "t"], |r| r.get(0)).unwrap());
    assert_eq!(epoch, 1);
    assert_eq!(w.run("run-a", &config(0)).unwrap(), Outcome::Skipped(SkipReason::LeaseHeld { by: "other".into() }));
    assert_eq!(w.blobs.writes.get(), 0);
    assert_eq!(w.pending(), 2);
}

#[test]
fn a_run_takes_at_most_its_cap_and_asks_to_continue() {
    let w = World::with_fragments(5);
    let mut capped = config(0);
    capped.max_fragments = 3;
    let summary = committed(w.run("run-a", &capped).unwrap());
    assert_eq!((summary.input_fragments, summary.continue_after), (3, true));
    assert_eq!(w.pending(), 2);
    assert_eq!(w.db.count("SELECT compaction_needed FROM datasets"), 1);
    let rest = committed(w.run("run-b", &capped).unwrap());
    assert_eq!((rest.input_fragments, rest.continue_after), (2, false));
    assert_eq!(w.pending(), 0);
}

#[test]
fn a_run_reads_at_most_its_byte_cap_but_always_one_fragment() {
    let w = World::with_fragments(4);
    let sizes: Vec<u64> = w.fragments.iter().map(|f| f.bytes.len() as u64).collect();
    let mut capped = config(0);
    capped.max_run_bytes = sizes[0] + sizes[1];
    let first = committed(w.run("run-a", &capped).unwrap());
    assert_eq!((first.input_fragments, first.continue_after), (2, true));
    let listed: String = w.db.with(|c| {
        c.query_row("SELECT output FROM workflow_steps WHERE run_id = 'run-a' AND step = 'list-fragments'", [], |r| r.get(0)).unwrap()
    });
    let listed: Vec<FragmentRow> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 3, "the listing stops one fragment past the cap");
    capped.max_run_bytes = 1;
    let second = committed(w.run("run-b", &capped).unwrap());
    assert_eq!((second.input_fragments, second.continue_after), (1, true), "one fragment even above the cap");
    w.check_exact(0..3);
}

#[test]
fn a_corrupt_fragment_is_quarantined_and_the_rest_compacted() {
    let mut w = World::with_fragments(3);
    let mut broken = synth::fragment(&FragmentSpec { seed: 99, rows: 1..=20, include_empty_tables: false });
    let o = broken.offsets.iter().find(|o| o.table_name.as_str() == "battle").unwrap().clone();
    broken.bytes[o.start_byte as usize] = b'X';
    w.upload(broken);
    let summary = committed(w.run("run-a", &config(0)).unwrap());
    assert_eq!(summary.quarantined.len(), 1);
    assert_eq!(summary.quarantined[0].table, "battle", "{:?}", summary.quarantined);
    assert_eq!(w.db.count("SELECT count(*) FROM quarantined_segments WHERE table_name = 'battle'"), 1, "recorded in the index");
    assert_eq!(w.pending(), 0, "its readable segments are compacted, so it is consumed");
    let battle_rows: usize = w.compacted_rows("battle").iter().map(|b| b.num_rows()).sum();
    let expected: usize =
        w.fragments[..3].iter().map(|f| f.segments.iter().find(|s| s.table.as_str() == "battle").unwrap().batch.num_rows()).sum();
    assert_eq!(battle_rows, expected);
}

#[test]
fn an_unreachable_catalog_fails_the_run_before_anything_is_written() {
    let w = World::with_fragments(3);
    w.catalog.down.set(true);
    let err = w.run("run-a", &config(1)).unwrap_err();
    assert_eq!(err.0.step(), "validate-dataset", "{err}");
    assert_eq!(w.blobs.writes.get(), 0);
    assert_eq!(w.pending(), 3);
    assert_eq!(
        w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND compaction_needed = 1"),
        1,
        "still pending, lease free"
    );
    // The catalog is back: the next delivery (or the schedule) completes it.
    w.catalog.down.set(false);
    committed(w.run("run-a", &config(1)).unwrap());
    w.check_exact(0..3);
}

#[test]
fn a_crash_after_any_step_resumes_to_the_exact_rows() {
    for step in [
        "validate-dataset",
        "list-fragments",
        "read-fragments",
        "stage-outputs",
        "merge-0-0",
        "merge-17-17",
        "merge-31-31",
        "update-metadata",
    ] {
        let w = World::with_fragments(4);
        let crashing = RunConfig { crash_after: Some(step.into()), ..config(0) };
        let err = w.run("run-a", &crashing).unwrap_err();
        assert_eq!(err.0, StepError::Interrupted { step: step.into() });
        // As after a real crash, the lease is still the run's (unless the commit released it):
        // the redelivery resumes under it.
        let held = if step == "update-metadata" { 0 } else { 1 };
        assert_eq!(w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id = 'run-a'"), held, "{step}");
        let writes = w.blobs.writes.get();
        match w.run("run-a", &config(0)).unwrap() {
            Outcome::Committed(summary) => assert_eq!(summary.input_fragments, 4, "{step}"),
            // The commit itself had happened: the redelivery finds nothing to do.
            Outcome::Skipped(SkipReason::NothingPending) if step == "update-metadata" => {
                assert_eq!(w.blobs.writes.get(), writes, "nothing written again")
            }
            other => panic!("{step}: {other:?}"),
        }
        w.check_exact(0..4);
        assert_eq!(w.db.count("SELECT count(*) FROM compacted_files"), 32, "{step}");
        assert_eq!(w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND compaction_needed = 0"), 1, "{step}");
        // The committer's pass puts every output in its table, once.
        assert_eq!(w.commit_tables().failures, [], "{step}");
        assert_eq!(w.db.count("SELECT count(*) FROM compacted_files WHERE lake_snapshot IS NULL"), 0, "{step}");
        assert_eq!(w.db.count("SELECT count(*) FROM lake_tables"), 32, "{step}");
    }
}

fn merge_step_names(w: &World, run_id: &str) -> Vec<String> {
    w.db.with(|c| {
        let mut s =
            c.prepare("SELECT step FROM workflow_steps WHERE run_id = ?1 AND step LIKE 'merge-%' ORDER BY completed_at, rowid").unwrap();
        s.query_map(params![run_id], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    })
}

#[test]
fn steps_of_several_outputs_resume_to_the_exact_rows() {
    let budget = |w: &World| RunConfig { merge_step_bytes: w.fragments.iter().map(|f| f.bytes.len() as u64).sum::<u64>() / 4, ..config(0) };
    let w = World::with_fragments(4);
    committed(w.run("run-a", &budget(&w)).unwrap());
    let steps = merge_step_names(&w, "run-a");
    assert!((2..16).contains(&steps.len()), "32 outputs in a few steps: {steps:?}");
    w.check_exact(0..4);

    for (i, step) in steps.iter().enumerate() {
        let w = World::with_fragments(4);
        let crashing = RunConfig { crash_after: Some(step.clone()), ..budget(&w) };
        assert_eq!(w.run("run-a", &crashing).unwrap_err().0, StepError::Interrupted { step: step.clone() });
        // Resumed with the same grouping, and with another one (a changed setting): steps are
        // named by their outputs, so no checkpoint is read as other outputs.
        let resumed = if i % 2 == 0 { budget(&w) } else { config(0) };
        assert_eq!(committed(w.run("run-a", &resumed).unwrap()).outputs.len(), 32, "{step}");
        w.check_exact(0..4);
        assert_eq!(w.db.count("SELECT count(*) FROM compacted_files"), 32, "{step}");
    }
}

#[test]
fn uploads_during_a_run_ask_for_a_continuation() {
    let mut w = World::with_fragments(3);
    let crashing = RunConfig { crash_after: Some("list-fragments".into()), ..config(0) };
    w.run("run-a", &crashing).unwrap_err();
    w.upload(synth::fragment(&FragmentSpec { seed: 77, rows: 1..=20, include_empty_tables: false }));
    let summary = committed(w.run("run-a", &config(0)).unwrap());
    assert_eq!(summary.input_fragments, 3, "the run takes what it listed");
    assert!(summary.continue_after, "the new upload must not wait for the schedule");
    assert_eq!(w.db.count("SELECT compaction_needed FROM datasets"), 1);
    let next = committed(w.run("run-b", &config(0)).unwrap());
    assert_eq!((next.input_fragments, next.continue_after), (1, false));
    w.check_exact(0..4);
}

#[test]
fn a_segment_whose_pages_do_not_decode_is_quarantined_at_merge() {
    let mut w = World::with_fragments(3);
    let mut broken = synth::fragment(&FragmentSpec { seed: 98, rows: 1..=20, include_empty_tables: false });
    broken.garble_first_page("battle");
    w.upload(broken);
    let summary = committed(w.run("run-a", &config(0)).unwrap());
    assert_eq!(summary.quarantined.len(), 1, "{:?}", summary.quarantined);
    assert_eq!((summary.quarantined[0].table.as_str(), summary.quarantined[0].fragment_key.ends_with("0003.parquet")), ("battle", true));
    assert_eq!(w.db.count("SELECT count(*) FROM quarantined_segments WHERE table_name = 'battle' AND run_id = 'run-a'"), 1);
    let battle_rows: usize = w.compacted_rows("battle").iter().map(|b| b.num_rows()).sum();
    let expected: usize =
        w.fragments[..3].iter().map(|f| f.segments.iter().find(|s| s.table.as_str() == "battle").unwrap().batch.num_rows()).sum();
    assert_eq!(battle_rows, expected, "the good segments' rows, each once");
    let recorded: i64 = w.db.count("SELECT row_count FROM compacted_files WHERE table_name = 'battle'");
    assert_eq!(recorded as usize, expected);
    assert_eq!(w.db.count("SELECT source_segments FROM compacted_files WHERE table_name = 'battle'"), 3);
}

#[test]
fn the_defaults_keep_a_run_within_an_invocations_subrequests() {
    let config = RunConfig::default();
    let at_most = config.subrequests_at_most();
    // A batch of 10 messages (the consumer's `max_batch_size`) shares an invocation's 10,000.
    assert!(at_most * 10 <= 10_000, "{at_most} subrequests");
    let unbounded = RunConfig { max_outputs: 10_000, ..RunConfig::default() };
    assert!(unbounded.subrequests_at_most() > 10_000 / 10, "the output cap is what bounds them");
}

#[test]
fn settings_come_from_the_variables_and_bad_ones_are_errors() {
    let settings = |pairs: &'static [(&'static str, &'static str)]| {
        let get = move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        CompactionSettings::from_vars(&fusou_core::config::Vars::new(&get))
    };
    let defaults = settings(&[]).unwrap();
    assert_eq!(defaults.run.max_outputs, 128);
    assert_eq!((defaults.retry_delay_secs, defaults.cleanup.retention_ms), (10, 7 * 86_400_000));
    assert_eq!(defaults.run.lake, defaults.cleanup.lake, "the open tables' settings, parsed once for both");
    let set = settings(&[("COMPACTION_MAX_OUTPUTS", "16"), ("COMPACTION_FAN_IN", "0"), ("LAKE_SNAPSHOT_DAYS", "3")]).unwrap();
    assert_eq!((set.run.max_outputs, set.run.consolidation.fan_in), (16, 0));
    assert_eq!(set.cleanup.lake.retention.max_age_ms, 3 * 86_400_000);
    assert_eq!(settings(&[("COMPACTION_MAX_RUN_BYTES", "32MB")]).unwrap_err().name, "COMPACTION_MAX_RUN_BYTES");
    assert_eq!(settings(&[("COMPACTION_MAX_FRAGMENTS", "0")]).unwrap_err().name, "COMPACTION_MAX_FRAGMENTS");
    assert_eq!(settings(&[]).unwrap().concurrent_runs, 10);
    assert_eq!(settings(&[("COMPACTION_CONCURRENT_RUNS", "0")]).unwrap_err().name, "COMPACTION_CONCURRENT_RUNS");
    assert_eq!(settings(&[("COMPACTION_RETRY_DELAY_SECONDS", "99999")]).unwrap().retry_delay_secs, 43_200);
}

#[test]
fn a_fragment_that_kills_every_run_reading_it_is_isolated_then_quarantined_and_the_rest_compacted() {
    let w = World::with_fragments(4);
    let poison = "battle_data/ds-1/port_table/0002.parquet";
    let poisoned = RunConfig { poison: Some(poison.into()), ..config(0) };
    // Each invocation dies reading, and is counted before it reads.
    for _ in 0..2 {
        assert_eq!(w.run("r1", &poisoned).unwrap_err().0, StepError::Interrupted { step: "read-fragments".into() });
    }
    assert_eq!(w.run("r1", &poisoned).unwrap(), Outcome::Isolated { fragments: 4 }, "the third gives up reading them together");
    assert_eq!(w.db.count("SELECT count(*) FROM battle_files WHERE isolated = 1"), 4);
    assert_eq!(
        w.db.count("SELECT count(*) FROM datasets WHERE lease_run_id IS NULL AND compaction_needed = 1"),
        1,
        "lease free, still due"
    );
    // Later runs take one fragment each, in order; the poisoned one fails alone, then is set aside.
    for (run, fragment) in [("r2", 0), ("r3", 1)] {
        let summary = committed(w.run(run, &poisoned).unwrap());
        assert_eq!((summary.input_fragments, summary.continue_after), (1, true), "fragment {fragment}");
    }
    for _ in 0..2 {
        w.run("r4", &poisoned).unwrap_err();
    }
    let summary = committed(w.run("r4", &poisoned).unwrap());
    assert_eq!(summary.outputs.len(), 0);
    assert_eq!(summary.quarantined.len(), 1);
    assert_eq!((summary.quarantined[0].fragment_key.as_str(), summary.quarantined[0].table.as_str()), (poison, "*"));
    assert!(summary.quarantined[0].error.contains("died or failed"), "{:?}", summary.quarantined);
    let last = committed(w.run("r5", &poisoned).unwrap());
    assert_eq!((last.input_fragments, last.continue_after), (1, false));
    w.check_exact([0, 1, 3]);
    assert_eq!(w.pending(), 0, "nothing left to retry");
    assert_eq!(w.db.count(&format!("SELECT count(*) FROM quarantined_segments WHERE fragment_key = '{poison}' AND table_name = '*'")), 1);
    assert_eq!(w.db.count("SELECT compaction_needed FROM datasets"), 0, "the dataset is not wedged");
}

#[test]
fn an_invocation_that_dies_reading_beside_other_runs_never_counts_towards_isolation() {
    let w = World::with_fragments(4);
    let poisoned = RunConfig { poison: Some("battle_data/ds-1/port_table/0002.parquet".into()), ..config(0) };
    let beside = MemoryBudget::shared(poisoned.memory_bytes());
    let ports = RunPorts { memory: &beside, ..w.ports() };
    for _ in 0..5 {
        let died = block_on(compact(&message(), "r1", &ports, &poisoned)).unwrap_err();
        assert_eq!(died.0, StepError::Interrupted { step: "read-fragments".into() });
    }
    assert_eq!(w.db.count("SELECT count(*) FROM battle_files WHERE isolated = 1"), 0, "a batch-mate may have been the killer");
    let interrupted: Vec<index::Interrupted> = block_on(w.db.query(index::INTERRUPTED_RUNS, &[text(r#"["r1"]"#)])).unwrap();
    assert_eq!(
        interrupted.iter().map(|r| (r.run_id.as_str(), r.invocations)).collect::<Vec<_>>(),
        [("r1", 0)],
        "interrupted, so its message runs alone next time, where it counts"
    );
    for _ in 0..2 {
        assert!(w.run("r1", &poisoned).is_err());
    }
    assert_eq!(w.run("r1", &poisoned).unwrap(), Outcome::Isolated { fragments: 4 }, "the third invocation alone gives up");
}

#[test]
fn a_run_that_fails_cleanly_on_reads_is_not_counted_against_its_fragments() {
    let w = World::with_fragments(3);
    w.blobs.fail_reads.set(true);
    for _ in 0..5 {
        let failed = w.run("r1", &config(0));
        assert_eq!(failed.as_ref().unwrap_err().0.step(), "read-fragments");
        // R2's timeout crosses the port as a timeout, to the run's error and its metrics row.
        assert_eq!(failed.as_ref().unwrap_err().0.timed_out_ms(), Some(30_000), "{failed:?}");
        let row = serde_json::to_value(crate::metrics::MetricsUpdate::finished(&failed, chrono::DateTime::UNIX_EPOCH, 1)).unwrap();
        assert_eq!(row["error_timed_out_ms"], 30_000, "{row}");
    }
    assert_eq!(w.db.count("SELECT invocations FROM compaction_runs WHERE run_id = 'r1'"), 0);
    w.blobs.fail_reads.set(false);
    assert_eq!(committed(w.run("r1", &config(0)).unwrap()).input_fragments, 3, "R2 answers again: read together");
    w.check_exact(0..3);
}

#[test]
fn a_fragment_larger_than_a_run_reads_is_quarantined_unread() {
    let w = World::with_fragments(3);
    let sizes: Vec<u64> = w.fragments.iter().map(|f| f.bytes.len() as u64).collect();
    let limited = RunConfig { max_fragment_bytes: sizes[1] - 1, ..config(0) };
    assert!(sizes[0] < sizes[1] && sizes[2] < sizes[1], "{sizes:?}");
    let summary = committed(w.run("r1", &limited).unwrap());
    assert_eq!(summary.input_fragments, 3);
    assert_eq!(summary.quarantined.len(), 1);
    assert!(summary.quarantined[0].error.contains("more than a run reads"), "{:?}", summary.quarantined);
    w.check_exact([0, 2]);
    assert_eq!(w.pending(), 0);
}

#[test]
fn a_burst_of_requests_is_one_run_that_works_and_the_rest_skipped() {
    // Five uploads, five messages: the first run takes the lease and is still going when the
    // others arrive; they skip. One more arrives after its commit: nothing is pending.
    let w = World::with_fragments(5);
    let going = RunConfig { crash_after: Some(Step::ListFragments.name()), ..config(0) };
    w.run("r1", &going).unwrap_err();
    let mut outcomes: Vec<Outcome> = (2..=5).map(|n| w.run(&format!("r{n}"), &config(0)).unwrap()).collect();
    outcomes.push(w.run("r1", &config(0)).unwrap());
    outcomes.push(w.run("r6", &config(0)).unwrap());
    let statuses: Vec<String> = outcomes
        .iter()
        .map(|o| {
            serde_json::to_value(crate::metrics::MetricsUpdate::finished(&Ok(o.clone()), "2026-12-01T00:00:00Z".parse().unwrap(), 1))
                .unwrap()
        })
        .map(|row| row["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["skipped", "skipped", "skipped", "skipped", "success", "skipped"]);
    assert!(outcomes[..4].iter().all(|o| *o == Outcome::Skipped(SkipReason::LeaseHeld { by: "r1".into() })));
    assert_eq!(outcomes[5], Outcome::Skipped(SkipReason::NothingPending));
    w.check_exact(0..5);
}

#[test]
fn eight_compaction_runs_at_once_then_one_pass_of_the_committer_put_every_output_in_its_table_once() {
    let (db, blobs) = (Sqlite::migrated(), Memory::default());
    let w = (&db, &blobs);
    let shared = Interleaved::new(w.0, w.1);
    let catalog = FakeRegistry::default();
    let mut uploaded_rows = 0;
    let datasets: Vec<String> = (0..8).map(|i| format!("ds-{i}")).collect();
    for (i, dataset) in datasets.iter().enumerate() {
        let f = synth::fragment(&FragmentSpec { seed: i as u64, rows: 1..=10, include_empty_tables: false });
        uploaded_rows += f.total_rows() as i64;
        fusou_testing::store_fragment(w.0, w.1, dataset, &format!("battle_data/{dataset}/port_table/0.parquet"), &f);
    }
    let config = RunConfig { lake: LakeConfig { root: "s3://bucket".into(), ..LakeConfig::default() }, ..RunConfig::default() };
    let messages: Vec<_> = datasets.iter().map(|d| fusou_testing::realtime_message(d)).collect();
    // Memory for about three of them at a time: the others wait their turn.
    let memory = MemoryBudget::shared(3 * MemoryBudget::need(64 << 10));
    let runs = messages.iter().enumerate().map(|(i, m)| {
        let (shared, catalog, config, memory) = (&shared, &catalog, &config, &memory);
        async move {
            let ports = RunPorts { sql: shared, blobs: shared, checkpoints: shared, registry: catalog, clock: shared, memory };
            compact(m, &format!("run-{i}"), &ports, config).await
        }
    });
    let outcomes = block_on(futures::future::join_all(runs));
    let mut touched = std::collections::BTreeSet::new();
    for outcome in outcomes {
        match outcome.unwrap() {
            Outcome::Committed(summary) => touched.extend(summary.tables),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(memory.free(), 3 * MemoryBudget::need(64 << 10), "every run gave its memory back");
    assert_eq!(
        (w.0.count("SELECT sum(invocations) FROM compaction_runs"), w.0.count("SELECT sum(shared_invocations) FROM compaction_runs")),
        (0, 8),
        "runs that read side by side are counted apart"
    );
    let pass = block_on(fusou_lake::commit_pending(w.0, w.1, &FakeClock::default(), &config.lake));
    assert_eq!(pass.failures, []);
    let commits = pass.commits.iter().filter(|t| t.snapshot_id.is_some()).count();
    assert_eq!(commits, touched.len(), "one commit per table the runs left files for");
    // Every compacted file is in its table exactly once, and the tables' records are every
    // uploaded row.
    let mut tables_rows = 0;
    let mut snapshots = 0;
    let outputs = w.0.count("SELECT count(*) FROM compacted_files");
    let mut listed = 0;
    for table in fusou_synth::client_tables() {
        let Some(pointer) =
            block_on(w.0.query::<LakeTable>(fusou_core::index::LAKE_TABLE, &[SqlValue::from(table.name.as_str())])).unwrap().pop()
        else {
            continue;
        };
        let metadata = block_on(fusou_lake::load(w.1, &pointer)).unwrap().metadata;
        let files = block_on(fusou_lake::scan(w.1, &config.lake, &metadata, None)).unwrap();
        let keys: std::collections::BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(keys.len(), files.len(), "{}: a file listed twice", table.name);
        listed += files.len() as i64;
        tables_rows += files.iter().map(|f| f.record_count).sum::<i64>();
        snapshots += metadata.snapshots.len();
    }
    assert_eq!(listed, outputs, "every output listed");
    assert_eq!(tables_rows, uploaded_rows, "every row, once");
    assert_eq!(snapshots, commits, "one snapshot per table, taking every run's files");
}

#[test]
fn every_file_a_table_lists_carries_the_counts_and_bounds_of_its_rows() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let w = World::with_fragments(12);
    committed(w.run("run-a", &config(0)).unwrap());
    assert_eq!(w.commit_tables().failures, []);
    let config = LakeConfig::default();
    let pointer: LakeTable =
        block_on(w.db.query(fusou_core::index::LAKE_TABLE, &[fusou_core::index::SqlValue::from("battle")])).unwrap().pop().unwrap();
    let metadata = block_on(fusou_lake::load(&w.blobs, &pointer)).unwrap().metadata;
    let files = block_on(fusou_lake::scan(&w.blobs, &config, &metadata, None)).unwrap();
    assert!(!files.is_empty());
    let schema = metadata.current_schema();
    let (timestamp, uuid) = (schema.field("timestamp").unwrap().id, schema.field("uuid").unwrap().id);
    for file in &files {
        // The file's rows, read back: the statistics the manifest lists are theirs.
        let bytes = w.blobs.objects.borrow()[config.key(&file.path).unwrap()].clone();
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect();
        let rows = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
        let s = &file.statistics;
        assert_eq!(s.value_counts[&timestamp], file.record_count);
        let column = rows.column_by_name("timestamp").unwrap();
        assert_eq!(s.null_value_counts[&timestamp], column.null_count() as i64);
        let values = column.as_primitive::<Int64Type>().iter().flatten();
        let (least, most) = (values.clone().min().unwrap(), values.max().unwrap());
        assert_eq!(s.lower_bounds[&timestamp], least.to_le_bytes(), "a long's bound is 8 bytes, little-endian");
        assert_eq!(s.upper_bounds[&timestamp], most.to_le_bytes());
        let uuids = rows.column_by_name("uuid").unwrap().as_string::<i32>().iter().flatten().min().unwrap().to_owned();
        assert_eq!(s.lower_bounds[&uuid], uuids.chars().take(16).collect::<String>().as_bytes(), "strings are truncated to 16 characters");
        assert!(s.column_sizes.values().all(|&b| b > 0));
        // The file describes itself: its period and dataset are columns, under the partition
        // source fields' ids, bounded by the partition's own values.
        let dataset = rows.column_by_name("dataset_id").unwrap().as_string::<i32>();
        assert!(dataset.iter().all(|d| d == Some(DS)));
        let id = schema.field("dataset_id").unwrap().id;
        assert_eq!((id, &s.lower_bounds[&id], &s.upper_bounds[&id]), (2, &DS.as_bytes().to_vec(), &DS.as_bytes().to_vec()));
        assert_eq!(file.partition[1].as_deref(), Some(DS));
    }
}

/// The lake of a few datasets' runs, for roll-ups: each dataset's battle rows in one file of
/// one period, committed.
struct Lake {
    db: Sqlite,
    blobs: Memory,
    clock: FakeClock,
    catalog: FakeRegistry,
    memory: MemoryBudget,
    uploads: u64,
}

impl Lake {
    const PERIOD: &str = "2025-11-05";

    fn new(datasets: usize) -> Self {
        let mut lake = Lake {
            db: Sqlite::migrated(),
            blobs: Memory::default(),
            clock: FakeClock::default(),
            catalog: FakeRegistry::default(),
            memory: MemoryBudget::alone(RunConfig::default().memory_bytes()),
            uploads: 0,
        };
        for d in 0..datasets {
            lake.upload_and_run(&format!("ds-{d}"), &config(0));
        }
        lake.commit();
        lake
    }

    fn lake_config() -> LakeConfig {
        LakeConfig { commit_interval_ms: 0, ..LakeConfig::default() }
    }

    fn upload_and_run(&mut self, dataset: &str, config: &RunConfig) {
        let f = synth::fragment(&FragmentSpec { seed: self.uploads + 1, rows: 1..=20, include_empty_tables: false });
        self.run_fragment(dataset, &f, config);
    }

    /// Uploads `f` for `dataset` and compacts it.
    fn run_fragment(&mut self, dataset: &str, f: &synth::Fragment, config: &RunConfig) {
        self.uploads += 1;
        let key = format!("battle_data/{dataset}/port_table/{:04}.parquet", self.uploads);
        fusou_testing::store_fragment(&self.db, &self.blobs, dataset, &key, f);
        let ports = local_ports(&self.db, &self.blobs, &self.catalog, &self.clock, &self.memory);
        let period = Some(PeriodTag::parse(Self::PERIOD).unwrap());
        let message = CompactionMessage { period_tag: period, ..fusou_testing::realtime_message(dataset) };
        committed(block_on(compact(&message, &format!("run-{}", self.uploads), &ports, config)).unwrap());
    }

    fn commit(&self) -> fusou_lake::CommitPass {
        let pass = block_on(fusou_lake::commit_pending(&self.db, &self.blobs, &self.clock, &Self::lake_config()));
        assert_eq!(pass.failures, []);
        pass
    }

    fn roll_up(&self) -> Option<rollup::RollupReport> {
        let config = rollup::RollupConfig { min_files: 2, ..rollup::RollupConfig::default() };
        block_on(rollup::roll_up(&self.db, &self.blobs, &self.clock, "battle", Self::PERIOD, &config, &EngineConfig::default())).unwrap()
    }

    /// The current snapshot of `fusou.battle`: its summary and its files.
    fn table(&self) -> (std::collections::BTreeMap<String, String>, Vec<fusou_lake::manifest::DataFile>) {
        let pointer: LakeTable =
            block_on(self.db.query(fusou_core::index::LAKE_TABLE, &[SqlValue::from("battle")])).unwrap().pop().unwrap();
        let metadata = block_on(fusou_lake::load(&self.blobs, &pointer)).unwrap().metadata;
        let files = block_on(fusou_lake::scan(&self.blobs, &Self::lake_config(), &metadata, None)).unwrap();
        (metadata.current_snapshot().unwrap().summary.clone(), files)
    }

    fn rows_of(&self, keys: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut rows: Vec<String> = keys
            .into_iter()
            .flat_map(|k| {
                let bytes = self.blobs.objects.borrow()[&k].clone();
                let batches: Vec<RecordBatch> =
                    ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect();
                batches.iter().flat_map(synth::rows_as_text).collect::<Vec<_>>()
            })
            .collect();
        rows.sort();
        rows
    }

    /// The table's rows by value, read from the files its current snapshot lists.
    fn table_rows(&self) -> Vec<String> {
        let config = Self::lake_config();
        self.rows_of(self.table().1.iter().map(|f| config.key(&f.path).unwrap().to_owned()))
    }

    /// The rows of the live per-dataset files the index holds: what the table must hold.
    fn index_rows(&self) -> Vec<String> {
        let keys: Vec<String> = self.db.with(|c| {
            let mut s = c.prepare("SELECT key FROM compacted_files WHERE table_name = 'battle' AND retired_at IS NULL").unwrap();
            s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        });
        self.rows_of(keys)
    }

    fn rollup_state(&self, id: &str) -> (Option<i64>, Option<i64>, Option<String>) {
        self.db.with(|c| {
            c.query_row("SELECT lake_snapshot, lake_removed_seq, lake_refused FROM lake_rollups WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
        })
    }
}

#[test]
fn a_period_roll_up_replaces_its_files_with_the_same_rows_and_stays_exact_through_consolidation_and_newer_roll_ups() {
    let mut lake = Lake::new(10);
    let before = lake.table_rows();
    assert_eq!(before, lake.index_rows());
    assert_eq!(lake.table().1.len(), 10, "one file per dataset");

    // A roll-up of the period: its files listed in their place, in a replace snapshot.
    let first = lake.roll_up().unwrap();
    assert_eq!((first.files_in, first.supersedes, first.outputs.len()), (10, 0, 1));
    assert_eq!(lake.table_rows(), before, "nothing changes before the committer lists it");
    lake.commit();
    let (summary, files) = lake.table();
    assert_eq!(summary["operation"], "replace");
    assert_eq!((summary["added-data-files"].as_str(), summary["deleted-data-files"].as_str()), ("1", "10"));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].partition, [Some(Lake::PERIOD.to_owned())], "the period-only spec");
    assert_eq!(lake.table_rows(), before, "the same rows, by value");
    // The owners' files are untouched.
    assert_eq!(lake.index_rows(), before);
    assert_eq!(lake.db.count("SELECT count(*) FROM compacted_files WHERE table_name = 'battle' AND lake_rollup IS NOT NULL"), 10);

    // A consolidation retires a covered file: the roll-up is taken apart in the same snapshot
    // that lists the consolidation's output, and each row is still there once.
    lake.upload_and_run("ds-3", &config(0));
    lake.commit();
    assert_eq!(lake.table().1.len(), 2, "the roll-up and the new file");
    lake.upload_and_run("ds-3", &consolidating(2));
    assert_eq!(lake.db.count("SELECT count(*) FROM compacted_files WHERE table_name = 'battle' AND retired_at IS NOT NULL"), 2);
    lake.commit();
    assert!(lake.rollup_state(&first.id).1.is_some(), "taken apart");
    assert_eq!(lake.table_rows(), lake.index_rows());
    assert_eq!(lake.table().1.len(), 10, "each dataset's file on its own again");
    assert_eq!(lake.db.count("SELECT count(*) FROM compacted_files WHERE lake_rollup IS NOT NULL"), 0);

    // Rolled up again; then a new dataset arrives and a newer roll-up supersedes the last.
    let second = lake.roll_up().unwrap();
    lake.commit();
    assert_eq!(lake.table().1.len(), 1);
    lake.upload_and_run("ds-10", &config(0));
    lake.commit();
    assert_eq!(lake.table().1.len(), 2, "the roll-up and the new file");
    let third = lake.roll_up().unwrap();
    assert_eq!((third.files_in, third.supersedes), (11, 1));
    lake.commit();
    assert_eq!(lake.table().1.len(), 1);
    assert!(lake.rollup_state(&second.id).1.is_some(), "superseded");
    assert!(lake.rollup_state(&third.id).0.is_some());
    assert_eq!(lake.table_rows(), lake.index_rows());

    // A roll-up whose files change before the committer lists it is refused, its files
    // garbage; the one it would have replaced is taken apart by the retirement.
    let stale = lake.roll_up().unwrap();
    lake.upload_and_run("ds-5", &config(0));
    lake.upload_and_run("ds-5", &consolidating(2));
    assert!(lake.db.count("SELECT count(*) FROM compacted_files WHERE dataset_id = 'ds-5' AND retired_at IS NOT NULL") > 0);
    lake.commit();
    let (_, _, refused) = lake.rollup_state(&stale.id);
    assert!(refused.is_some_and(|why| why.contains("changed")), "refused");
    let garbage = lake.db.count(&format!("SELECT count(*) FROM lake_garbage WHERE key = '{}'", stale.outputs[0].key));
    assert_eq!(garbage, 1, "its file is garbage");
    assert_eq!(lake.table_rows(), lake.index_rows());
}

#[test]
fn a_roll_up_writes_only_the_contracts_columns_whatever_an_uploader_adds() {
    use arrow_array::{ArrayRef, StringArray};
    let mut lake = Lake::new(4);
    // An uploader's battle rows with a column of its own (and its own dataset_id column).
    let mut f = synth::fragment_of_tables(77, &["battle"], 12);
    let batch = &f.segments[0].batch;
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for name in ["x_forged", "dataset_id"] {
        fields.push(std::sync::Arc::new(arrow_schema::Field::new(name, arrow_schema::DataType::Utf8, true)));
        columns.push(std::sync::Arc::new(StringArray::from(vec!["ds-0"; batch.num_rows()])));
    }
    let forged = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    let bytes = synth::write_segment(&forged);
    f.offsets[0].byte_length = bytes.len() as u64;
    f.segments[0] = synth::Segment { table: f.segments[0].table.clone(), batch: forged, bytes: bytes.clone() };
    f.bytes = bytes;
    lake.run_fragment("ds-x", &f, &config(0));
    lake.commit();
    assert_eq!(lake.table().1.len(), 5);

    let report = lake.roll_up().unwrap();
    assert_eq!((report.files_in, report.outputs.len()), (5, 1), "one roll-up file: the uploader's column splits nothing");
    lake.commit();
    let key = &report.outputs[0].key;
    let bytes = lake.blobs.objects.borrow()[key].clone();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    let contract = fusou_lake::contract::Contract::client().table("battle").unwrap();
    for name in &names {
        assert!(contract.iter().any(|c| &c.name == name) || name == "period_tag" || name == "dataset_id", "{name} is not the contract's");
    }
    assert!(!names.contains(&"x_forged".to_owned()));
    // Every row is there, the uploader's under its own dataset.
    let rows: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let of_x: usize = rows
        .iter()
        .map(|b| {
            use arrow_array::cast::AsArray;
            b.column_by_name("dataset_id").unwrap().as_string::<i32>().iter().filter(|d| *d == Some("ds-x")).count()
        })
        .sum();
    assert_eq!(of_x, 12);
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>() as u64, report.rows);
}
