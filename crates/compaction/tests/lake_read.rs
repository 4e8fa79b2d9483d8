//! The writes of the reader benchmark (`scripts/bench-lake-read.sh`), natively over the same
//! code the Worker runs (SQLite for D1, memory for R2): every dataset uploads one fragment per
//! period, a compaction run takes each, the committer lists the files, then the period roll-ups
//! run and the committer lists them. The bucket is written out as a directory, with each
//! table's metadata file before and after the roll-ups, for the readers (PyIceberg and DuckDB)
//! to query; the rows are compared by value before and after here.
//!
//! A third metadata file per table is the rolled-up table with its manifests' column statistics
//! left out, as the tables were before statistics: what the statistics save a reader.
//!
//! Settings: `FUSOU_BENCH_OUT` (the directory), `FUSOU_BENCH_DATASETS` (default 1,000),
//! `FUSOU_BENCH_ROWS` (rows per table and fragment, default 40), `FUSOU_BENCH_ROLLUP_MB` (the
//! roll-ups' target, default 8: the deployed 256 MiB scaled to this data, whose periods are
//! tens of MB, so that a period is several roll-up files, as a real one of GBs would be).

use std::time::Instant;

use futures::executor::block_on;
use serde_json::json;

use fusou_compaction::memory::MemoryBudget;
use fusou_compaction::rollup::{self, RollupConfig};
use fusou_compaction::{Outcome, RunConfig, RunPorts, compact};
use fusou_contract::ids::PeriodTag;
use fusou_core::index::{self, LakeTable, SqlValue};
use fusou_core::measure::{self, Counting};
use fusou_core::message::CompactionMessage;
use fusou_lake::commit::LakeConfig;
use fusou_lake::manifest::{self, ManifestFile};
use fusou_lake::metadata::TableMetadata;
use fusou_ports::Sql;
use fusou_testing::{FakeClock, FakeRegistry, Memory, Sqlite};

#[global_allocator]
static ALLOCATOR: Counting = Counting::SYSTEM;

const TABLES: [&str; 2] = ["battle", "cells"];
const PERIODS: [&str; 2] = ["2026-01", "2026-02"];

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Commit passes until no table is behind the index.
fn commit_all(db: &Sqlite, blobs: &Memory, clock: &FakeClock, lake: &LakeConfig) -> usize {
    let mut snapshots = 0;
    loop {
        let pass = block_on(fusou_lake::commit_pending(db, blobs, clock, lake));
        assert_eq!(pass.failures, []);
        let made = pass.commits.iter().filter(|c| c.snapshot_id.is_some()).count();
        snapshots += made;
        if made == 0 && pass.next_ms.is_none() {
            return snapshots;
        }
    }
}

/// Each table's pointer: its metadata key.
fn metadata_keys(db: &Sqlite) -> Vec<(String, String)> {
    TABLES
        .iter()
        .map(|t| {
            let pointer: LakeTable = block_on(db.query(index::LAKE_TABLE, &[SqlValue::from(*t)])).unwrap().pop().unwrap();
            (t.to_string(), pointer.metadata_key)
        })
        .collect()
}

/// The rows of table `table` as its current snapshot lists them, by value, sorted.
fn table_rows(db: &Sqlite, blobs: &Memory, lake: &LakeConfig, table: &str) -> Vec<String> {
    let pointer: LakeTable = block_on(db.query(index::LAKE_TABLE, &[SqlValue::from(table)])).unwrap().pop().unwrap();
    let metadata = block_on(fusou_lake::load(blobs, &pointer)).unwrap().metadata;
    let mut rows = Vec::new();
    for file in block_on(fusou_lake::scan(blobs, lake, &metadata, None)).unwrap() {
        let bytes = blobs.objects.borrow()[lake.key(&file.path).unwrap()].clone();
        for batch in parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap() {
            rows.extend(fusou_synth::rows_as_text(&batch.unwrap()));
        }
    }
    rows.sort();
    rows
}

/// A copy of the table whose metadata is at `metadata_key`, its current snapshot's manifests
/// without column statistics, under new keys; answers its metadata key.
fn without_statistics(blobs: &Memory, lake: &LakeConfig, metadata_key: &str) -> String {
    let get = |key: &str| blobs.objects.borrow()[key].clone();
    let mut metadata: TableMetadata = serde_json::from_slice(&get(metadata_key)).unwrap();
    let stem = metadata_key.trim_end_matches(".metadata.json").to_owned();
    let snapshot = metadata.current_snapshot().unwrap().clone();
    let listed = manifest::read_manifest_list(&get(lake.key(&snapshot.manifest_list).unwrap())).unwrap();
    let mut rewritten = Vec::new();
    for (n, m) in listed.iter().enumerate() {
        let mut entries = manifest::read_manifest(&get(lake.key(&m.path).unwrap()), m, &metadata.partition_specs).unwrap();
        entries.iter_mut().for_each(|e| e.file.statistics = Default::default());
        let bytes = manifest::write_manifest(&entries, metadata.current_schema(), metadata.spec(m.partition_spec_id).unwrap()).unwrap();
        let key = format!("{stem}-nostats-m{n}.avro");
        rewritten.push(ManifestFile { path: lake.location(&key), length: bytes.len() as i64, ..m.clone() });
        blobs.objects.borrow_mut().insert(key, bytes.into());
    }
    let list =
        manifest::write_manifest_list(&rewritten, snapshot.snapshot_id, snapshot.parent_snapshot_id, snapshot.sequence_number).unwrap();
    let list_key = format!("{stem}-nostats-list.avro");
    blobs.objects.borrow_mut().insert(list_key.clone(), list.into());
    let current = metadata.snapshots.iter_mut().find(|s| s.snapshot_id == snapshot.snapshot_id).unwrap();
    current.manifest_list = lake.location(&list_key);
    let key = format!("{stem}-nostats.metadata.json");
    blobs.objects.borrow_mut().insert(key.clone(), metadata.to_json().into());
    key
}

#[test]
#[ignore = "a benchmark: scripts/bench-lake-read.sh"]
fn lake_read_bench() {
    let out = std::env::var("FUSOU_BENCH_OUT").expect("FUSOU_BENCH_OUT: where the bucket is written");
    let (datasets, rows) = (setting("FUSOU_BENCH_DATASETS", 1000), setting("FUSOU_BENCH_ROWS", 40));
    let lake = LakeConfig { root: format!("file://{out}/bucket"), commit_interval_ms: 0, ..LakeConfig::default() };
    let (db, blobs, clock, catalog) = (Sqlite::migrated(), Memory::default(), FakeClock::default(), FakeRegistry::default());
    let config = RunConfig { lake: lake.clone(), ..RunConfig::default() };
    let memory = MemoryBudget::alone(config.memory_bytes());
    let ports = RunPorts { sql: &db, blobs: &blobs, checkpoints: &db, registry: &catalog, clock: &clock, memory: &memory };

    let started = Instant::now();
    let mut uploads = 0u64;
    for period in PERIODS {
        for d in 0..datasets {
            uploads += 1;
            let dataset = format!("ds-{d:04}");
            let fragment = fusou_synth::fragment_of_tables(uploads, &TABLES, rows);
            let key = format!("battle_data/{dataset}/{period}/{uploads}.parquet");
            fusou_testing::store_fragment_of(&db, &blobs, &dataset, period, &key, &fragment);
            let message =
                CompactionMessage { period_tag: Some(PeriodTag::parse(period).unwrap()), ..fusou_testing::realtime_message(&dataset) };
            let outcome = block_on(compact(&message, &format!("run-{uploads}"), &ports, &config)).unwrap();
            assert!(matches!(outcome, Outcome::Committed(_)), "{outcome:?}");
        }
    }
    let snapshots = commit_all(&db, &blobs, &clock, &lake);
    eprintln!(
        "wrote {uploads} uploads of {datasets} datasets × {} periods in {:.1} s; {snapshots} snapshots",
        PERIODS.len(),
        started.elapsed().as_secs_f64()
    );
    let before = metadata_keys(&db);
    let rows_before: Vec<Vec<String>> = TABLES.iter().map(|t| table_rows(&db, &blobs, &lake, t)).collect();

    // The roll-ups, as the clean-up runs them: every (table, period) is due.
    let target_mb = setting("FUSOU_BENCH_ROLLUP_MB", 8) as u64;
    let rollup = RollupConfig { min_files: 2, target_bytes: target_mb << 20, ..RollupConfig::default() };
    let live = measure::live();
    measure::reset_peak();
    let started = Instant::now();
    let pass = block_on(rollup::roll_up_due(&db, &blobs, &clock, &rollup, &config.engine)).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let peak = measure::peak().saturating_sub(live);
    assert_eq!(pass.failures, []);
    let bytes_in: u64 = pass.jobs.iter().map(|j| j.bytes_in).sum();
    let bytes_out: i64 = pass.jobs.iter().flat_map(|j| &j.outputs).map(|o| o.size).sum();
    let largest = pass.jobs.iter().max_by_key(|j| j.bytes_in).unwrap();
    let snapshots = commit_all(&db, &blobs, &clock, &lake);
    let after = metadata_keys(&db);
    let bare: Vec<String> = after.iter().map(|(_, key)| without_statistics(&blobs, &lake, key)).collect();
    for (i, table) in TABLES.iter().enumerate() {
        let rows_after = table_rows(&db, &blobs, &lake, table);
        assert_eq!(rows_after.len(), rows_before[i].len(), "{table}: rows before and after the roll-ups");
        assert!(rows_after == rows_before[i], "{table}: the same rows by value before and after the roll-ups");
        eprintln!("{table}: {} rows before and after the roll-ups, equal by value", rows_after.len());
    }
    eprintln!(
        "roll-ups (target {target_mb} MiB): {} jobs, {} files ({:.1} MB) in, {} files ({:.1} MB) out, in {seconds:.2} s: {:.1} MB/s; {snapshots} replace snapshots",
        pass.jobs.len(),
        pass.jobs.iter().map(|j| j.files_in).sum::<u64>(),
        bytes_in as f64 / 1e6,
        pass.jobs.iter().map(|j| j.outputs.len()).sum::<usize>(),
        bytes_out as f64 / 1e6,
        bytes_in as f64 / 1e6 / seconds,
    );
    eprintln!(
        "largest period ({}/{}): {} files, {:.1} MB in; writer's buffers at most {:.1} MiB; native heap growth over the pass {:.1} MiB (the in-memory bucket holds the {:.1} MB written)",
        largest.table,
        largest.period,
        largest.files_in,
        largest.bytes_in as f64 / 1e6,
        largest.peak_buffered as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        bytes_out as f64 / 1e6,
    );

    // The bucket as a directory, and what the readers query.
    for (key, bytes) in blobs.objects.borrow().iter().filter(|(k, _)| !k.starts_with("battle_data/")) {
        let path = format!("{out}/bucket/{key}");
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let tables: serde_json::Map<String, serde_json::Value> = before
        .iter()
        .zip(&after)
        .zip(&bare)
        .map(|(((table, b), (_, a)), n)| {
            let states = json!({
                "before": format!("{out}/bucket/{b}"),
                "after": format!("{out}/bucket/{a}"),
                "after, no stats": format!("{out}/bucket/{n}"),
            });
            (table.clone(), states)
        })
        .collect();
    let plan = json!({ "tables": tables, "period": PERIODS[0], "dataset": format!("ds-{:04}", datasets / 2) });
    std::fs::write(format!("{out}/plan.json"), plan.to_string()).unwrap();
}
