//! `scripts/bench-cost.sh`: a realistic day over the real pipeline code, every billable
//! operation counted through [`Metered`] ports, with the tables committed the way this version
//! does (one committer, one snapshot per table per interval) against the way the previous one
//! did (each run its own snapshot of every table it touched), side by side in one run.
//!
//! The day: `FUSOU_COST_DATASETS` (30) admirals, each playing `FUSOU_COST_SESSIONS` (2)
//! sessions that begin within the evening's `FUSOU_COST_WINDOW_MINUTES` (180, from 19:00), each
//! a burst of `FUSOU_COST_BURST` (10) small fragments `FUSOU_COST_SPACING_SECONDS` (90) apart. Every upload replays the upload
//! Worker's D1 and R2 calls and sends its compaction message, delivered
//! `REALTIME_DELAY_SECONDS` (30 s) later; the clean-up runs at 03:30 the next night. (The
//! previous way of committing rewrites each table's metadata once per run; kept in memory, a
//! larger day than this outgrows the machine, which is the point of the change.) Runs
//! take no simulated time, so freshness here is the pipeline's waits (the realtime delay and
//! the commit interval), not its round trips. Prints figures; asserts only that every row
//! reached its table.

use std::collections::{BTreeMap, BinaryHeap};

use futures::executor::block_on;

use fusou_compaction::cleanup::{CleanupConfig, clean_up};
use fusou_compaction::memory::MemoryBudget;
use fusou_compaction::{Outcome, RunConfig, RunPorts, compact};
use fusou_core::index::{self, LakeTable, SqlValue, Statement};
use fusou_lake::commit::LakeConfig;
use fusou_ports::meter::{Meter, Metered, Operations, Prices};
use fusou_ports::{Blobs, Sql};
use fusou_synth::{self as synth, FragmentSpec};
use fusou_testing::{FakeClock, FakeRegistry, Memory, Sqlite};

const DAY_MS: u64 = 86_400_000;
const START_MS: u64 = 1_800_000_000_000;
const REALTIME_DELAY_MS: u64 = 30_000;
/// When the evening's sessions begin: 19:00.
const EVENING_MS: u64 = 19 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Dataset, fragment number within the day.
    Upload(usize, usize),
    /// The compaction message of an upload of this dataset.
    Message(usize),
    /// The committer's alarm.
    Alarm,
    Cleanup,
}

/// How the tables are committed.
#[derive(Clone, Copy)]
enum Commits {
    /// Each run commits every table it touched, at once (the previous version).
    PerRun,
    /// The committer, notified by runs, at most once per table per interval.
    Grouped { interval_ms: i64 },
}

struct Figures {
    name: &'static str,
    uploads: u64,
    upload: Operations,
    compaction: Operations,
    lake: Operations,
    cleanup: Operations,
    lake_objects: u64,
    data_objects: u64,
    snapshots_per_table: Vec<usize>,
    attempts_per_commit: f64,
    freshness_ms: Vec<u64>,
    oldest_kept_ms: u64,
    metadata_bytes: usize,
}

fn var(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn day(name: &'static str, commits: Commits) -> Figures {
    let (datasets, sessions, burst) = (var("FUSOU_COST_DATASETS", 30), var("FUSOU_COST_SESSIONS", 2), var("FUSOU_COST_BURST", 10));
    let window_ms = var("FUSOU_COST_WINDOW_MINUTES", 180).max(1) as u64 * 60_000;
    let spacing_ms = var("FUSOU_COST_SPACING_SECONDS", 90) as u64 * 1000;
    let (db, blobs, clock, registry) = (Sqlite::migrated(), Memory::default(), FakeClock::default(), FakeRegistry::default());
    let (upload_meter, compaction_meter, lake_meter, cleanup_meter) =
        (Meter::default(), Meter::default(), Meter::default(), Meter::default());
    let lake_config = match commits {
        Commits::PerRun => LakeConfig { commit_interval_ms: 0, root: "s3://bucket".into(), ..LakeConfig::default() },
        Commits::Grouped { interval_ms } => {
            LakeConfig { commit_interval_ms: interval_ms, root: "s3://bucket".into(), ..LakeConfig::default() }
        }
    };
    let run_config = RunConfig { lake: lake_config.clone(), ..RunConfig::default() };
    let memory = MemoryBudget::alone(run_config.memory_bytes());

    // The day's events, in time order (a min-heap of (time, event)).
    let mut events = BinaryHeap::new();
    let mut seed = 7u64;
    let mut random = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for d in 0..datasets {
        for s in 0..sessions {
            let start = START_MS + EVENING_MS + random(window_ms);
            for f in 0..burst {
                events.push(std::cmp::Reverse((start + f as u64 * spacing_ms, Event::Upload(d, s * burst + f))));
            }
        }
    }
    events.push(std::cmp::Reverse((START_MS + DAY_MS + 3 * 3_600_000 + 1_800_000, Event::Cleanup)));

    let mut last_upload = vec![0u64; datasets];
    let mut alarm: Option<u64> = None;
    let mut committer = Committer::default();
    let mut uploads = 0;
    let mut runs = 0;
    while let Some(std::cmp::Reverse((at, event))) = events.pop() {
        clock.now.set(at);
        match event {
            Event::Upload(d, n) => {
                let dataset = format!("ds-{d:04}");
                let fragment = synth::fragment(&FragmentSpec { seed: (d * 1000 + n) as u64, rows: 1..=5, include_empty_tables: false });
                upload(&db, &blobs, &upload_meter, &dataset, &format!("battle_data/{dataset}/port_table/{n:04}.parquet"), &fragment);
                uploads += 1;
                last_upload[d] = at;
                events.push(std::cmp::Reverse((at + REALTIME_DELAY_MS, Event::Message(d))));
            }
            Event::Message(d) => {
                let message = fusou_testing::realtime_message(&format!("ds-{d:04}"));
                runs += 1;
                let (sql, blobs_m, checkpoints) =
                    (Metered::new(&db, &compaction_meter), Metered::new(&blobs, &compaction_meter), Metered::new(&db, &compaction_meter));
                let ports =
                    RunPorts { sql: &sql, blobs: &blobs_m, checkpoints: &checkpoints, registry: &registry, clock: &clock, memory: &memory };
                let outcome = block_on(compact(&message, &format!("run-{runs}"), &ports, &run_config)).expect("a run");
                // The batch's notice, or the previous version's own table commits.
                if let Outcome::Committed(summary) = outcome
                    && !summary.tables.is_empty()
                {
                    compaction_meter.add(|o| o.subrequests += 1);
                    match commits {
                        Commits::PerRun => {
                            committer.pass(&db, &blobs, &clock, &lake_meter, &lake_config);
                        }
                        Commits::Grouped { .. } if alarm.is_none() => {
                            alarm = Some(at);
                            events.push(std::cmp::Reverse((at, Event::Alarm)));
                        }
                        Commits::Grouped { .. } => {}
                    }
                }
            }
            Event::Alarm => {
                let next = committer.pass(&db, &blobs, &clock, &lake_meter, &lake_config);
                alarm = next.map(|ms| ms as u64);
                if let Some(next) = alarm {
                    events.push(std::cmp::Reverse((next.max(at), Event::Alarm)));
                }
            }
            Event::Cleanup => {
                let config = CleanupConfig { lake: lake_config.clone(), ..CleanupConfig::default() };
                let (sql, blobs_m) = (Metered::new(&db, &cleanup_meter), Metered::new(&blobs, &cleanup_meter));
                block_on(clean_up(&sql, &blobs_m, &clock, &config)).expect("the clean-up");
            }
        }
    }
    if let Commits::PerRun = commits {
        committer.pass(&db, &blobs, &clock, &lake_meter, &lake_config);
    }

    // Every row in its table, and when each dataset's last file got there.
    let pointers: Vec<LakeTable> = block_on(db.query(index::LAKE_TABLES, &[])).unwrap();
    let mut snapshot_at = BTreeMap::new();
    let mut snapshots_per_table = Vec::new();
    let mut oldest_kept_ms = u64::MAX;
    let mut rows_in_tables = 0;
    let mut metadata_bytes = 0;
    for p in &pointers {
        metadata_bytes = metadata_bytes.max(blobs.objects.borrow()[&p.metadata_key].len());
        let metadata = block_on(fusou_lake::load(&blobs, p)).unwrap().metadata;
        snapshots_per_table.push(metadata.snapshots.len());
        for s in &metadata.snapshots {
            snapshot_at.insert(s.snapshot_id, s.timestamp_ms as u64);
            oldest_kept_ms = oldest_kept_ms.min(s.timestamp_ms as u64);
        }
        let current = metadata.current_snapshot().unwrap();
        rows_in_tables += current.summary["total-records"].parse::<i64>().unwrap();
    }
    let rows_live = db.count("SELECT coalesce(sum(row_count), 0) FROM compacted_files WHERE retired_at IS NULL AND lake_refused IS NULL");
    assert_eq!(rows_in_tables, rows_live, "{name}: every live row in its table, once");
    assert_eq!(db.count("SELECT count(*) FROM battle_files WHERE compacted_at IS NULL"), 0, "{name}: every fragment compacted");
    // When each dataset's last file reached its table (snapshot ids are random: by time).
    let files: Vec<(String, i64)> = db.with(|c| {
        let mut s = c.prepare("SELECT DISTINCT dataset_id, lake_snapshot FROM compacted_files WHERE lake_snapshot IS NOT NULL").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    });
    let mut reached = vec![0u64; datasets];
    for (dataset, snapshot) in &files {
        let d: usize = dataset.trim_start_matches("ds-").parse().expect("a benchmark dataset");
        reached[d] = reached[d].max(snapshot_at.get(snapshot).copied().unwrap_or(0));
    }
    let mut freshness_ms: Vec<u64> = reached.iter().zip(&last_upload).map(|(r, u)| r.saturating_sub(*u)).collect();
    freshness_ms.sort_unstable();
    snapshots_per_table.sort_unstable();
    let objects = blobs.objects.borrow();
    let (mut data_objects, mut lake_objects) = (0, 0);
    for key in objects.keys() {
        if key.starts_with("lake/") {
            lake_objects += 1;
        } else if key.starts_with("battle_compacted/") {
            data_objects += 1;
        }
    }
    Figures {
        name,
        uploads,
        upload: upload_meter.operations(),
        compaction: compaction_meter.operations(),
        lake: lake_meter.operations(),
        cleanup: cleanup_meter.operations(),
        lake_objects,
        data_objects,
        snapshots_per_table,
        attempts_per_commit: committer.attempts as f64 / committer.snapshots.max(1) as f64,
        freshness_ms,
        oldest_kept_ms: clock.now.get().saturating_sub(oldest_kept_ms),
        metadata_bytes,
    }
}

/// The committer's passes: their snapshots and compare-and-swap attempts.
#[derive(Default)]
struct Committer {
    snapshots: u64,
    attempts: u64,
}

impl Committer {
    /// One pass over metered ports; answers when the next is due.
    fn pass(&mut self, db: &Sqlite, blobs: &Memory, clock: &FakeClock, meter: &Meter, config: &LakeConfig) -> Option<i64> {
        let (sql, blobs) = (Metered::new(db, meter), Metered::new(blobs, meter));
        let pass = block_on(fusou_lake::commit_pending(&sql, &blobs, clock, config));
        assert_eq!(pass.failures, [], "the committer's pass");
        self.snapshots += pass.commits.iter().filter(|c| c.snapshot_id.is_some()).count() as u64;
        self.attempts += pass.commits.iter().map(|c| c.attempts as u64).sum::<u64>();
        pass.next_ms
    }
}

/// The upload Worker's calls for one upload (`pipeline.rs`): the handshake's owner and upload
/// checks, the fragment's PUT, the batch that records it; and its compaction message.
fn upload(db: &Sqlite, blobs: &Memory, meter: &Meter, dataset: &str, key: &str, f: &synth::Fragment) {
    let (sql, blobs) = (Metered::new(db, meter), Metered::new(blobs, meter));
    block_on(async {
        let _: Vec<serde_json::Value> = sql.query(index::DATASET_OWNER, &[dataset.into()]).await.unwrap();
        let _: Vec<serde_json::Value> = sql.query(index::UPLOAD_CHECK, &[dataset.into(), key.into()]).await.unwrap();
        blobs.put(key, bytes::Bytes::from(f.bytes.clone())).await.unwrap();
        let record = [
            Statement::new(index::CLAIM_DATASET, vec![dataset.into(), "owner".into(), "t0".into()]),
            Statement::new(
                index::INSERT_FRAGMENT,
                vec![
                    key.into(),
                    dataset.into(),
                    "port_table".into(),
                    "2025-11-05".into(),
                    key.into(),
                    SqlValue::from(f.bytes.len() as u64),
                    f.table_offsets_string().as_str().into(),
                    "owner".into(),
                    "t0".into(),
                ],
            ),
        ];
        sql.batch(&record).await.unwrap();
    });
    // The message is written, read and deleted; its send is a subrequest.
    meter.add(|o| (o.queue_operations, o.subrequests) = (o.queue_operations + 3, o.subrequests + 1));
}

fn print(f: &Figures) {
    let prices = Prices::PUBLISHED_2026_12_06;
    let all = f.upload.plus(f.compaction).plus(f.lake).plus(f.cleanup);
    let percentile = |v: &[u64], p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0) as f64 / 1000.0;
    let median = f.snapshots_per_table.get(f.snapshots_per_table.len() / 2).copied().unwrap_or(0);
    println!("\n== {} ({} uploads) ==", f.name, f.uploads);
    println!("part        R2 A/upload  R2 B/upload  D1 stmts/upload  D1 rows written/upload  queue ops/upload  $ per million uploads");
    for (part, ops) in [("upload", f.upload), ("compaction", f.compaction), ("lake", f.lake), ("clean-up", f.cleanup), ("all", all)] {
        let u = f.uploads as f64;
        println!(
            "{part:<11} {:>11.2}  {:>11.2}  {:>15.2}  {:>22.2}  {:>16.2}  {:>21.2}",
            ops.r2_class_a as f64 / u,
            ops.r2_class_b as f64 / u,
            ops.d1_statements as f64 / u,
            ops.d1_rows_written as f64 / u,
            ops.queue_operations as f64 / u,
            ops.dollars(&prices) * 1e6 / u
        );
    }
    println!(
        "lake metadata writes: {} of {} R2 class A ({:.1}%); objects left: {} data, {} lake metadata",
        f.lake.r2_class_a,
        all.r2_class_a,
        100.0 * f.lake.r2_class_a as f64 / all.r2_class_a.max(1) as f64,
        f.data_objects,
        f.lake_objects
    );
    println!(
        "snapshots per table: median {median}, max {}; compare-and-swap attempts per commit {:.2}",
        f.snapshots_per_table.last().copied().unwrap_or(0),
        f.attempts_per_commit
    );
    println!(
        "freshness (last upload → its rows in the tables, simulated time): p50 {:.0} s, max {:.0} s over {} datasets",
        percentile(&f.freshness_ms, 0.5),
        percentile(&f.freshness_ms, 1.0),
        f.freshness_ms.len()
    );
    println!(
        "time travel kept at the clean-up: {:.1} h (LAKE_SNAPSHOT_DAYS 7, LAKE_MIN_SNAPSHOTS 100); the largest metadata file {} KiB",
        f.oldest_kept_ms as f64 / 3.6e6,
        f.metadata_bytes / 1024
    );
}

#[test]
#[ignore = "a benchmark: scripts/bench-cost.sh"]
fn bench_a_day_of_uploads() {
    let interval_ms = var("FUSOU_COST_INTERVAL_SECONDS", 60) as i64 * 1000;
    let after = day("one committer, a snapshot per table per interval (after)", Commits::Grouped { interval_ms });
    // FUSOU_COST_BEFORE=0 skips the previous way, whose metadata outgrows memory on larger days.
    if var("FUSOU_COST_BEFORE", 1) == 0 {
        print(&after);
        return;
    }
    let before = day("each run commits its own snapshots (before)", Commits::PerRun);
    print(&before);
    print(&after);
    let class_a = |f: &Figures| f.upload.plus(f.compaction).plus(f.lake).plus(f.cleanup).r2_class_a;
    println!(
        "\nafter/before: lake R2 class A {:.3}, all R2 class A {:.3}, snapshots {:.3}",
        after.lake.r2_class_a as f64 / before.lake.r2_class_a.max(1) as f64,
        class_a(&after) as f64 / class_a(&before).max(1) as f64,
        after.snapshots_per_table.iter().sum::<usize>() as f64 / before.snapshots_per_table.iter().sum::<usize>().max(1) as f64
    );
}
