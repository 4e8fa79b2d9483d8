//! The table commit over SQLite (the D1 schema and SQL) and memory (for R2): files recorded as
//! a run's commit records them, tables committed, and what a reader would plan checked.

use std::cell::Cell;
use std::future::Future;
use std::task::Context;

use futures::executor::block_on;
use rusqlite::params;

use super::commit::LakeConfig;
use super::manifest::{self, DataFile, Entry, FieldSummary, ManifestFile, Status, Unmodeled};
use super::metadata::{PartitionSpec, Retention, TableMetadata};
use super::schema::Schema;
use super::statistics::Statistics;
use super::*;
use fusou_core::index::{LakeTable, SqlValue};
use fusou_ports::Sql;
use fusou_testing::{FakeClock, Interleaved, Memory, Sqlite};

const TABLE: &str = "battle";
const COLUMNS: &str = r#"[{"name":"uuid","type":"string"},{"name":"index","type":"int"}]"#;

fn config() -> LakeConfig {
    LakeConfig { root: "s3://bucket".into(), ..LakeConfig::default() }
}

struct World {
    db: Sqlite,
    blobs: Memory,
    clock: FakeClock,
    budget: Cell<u64>,
}

impl World {
    fn new() -> Self {
        let w = World { db: Sqlite::migrated(), blobs: Memory::default(), clock: FakeClock::default(), budget: Cell::new(u64::MAX) };
        w.clock.now.set(1_800_000_000_000);
        w
    }

    /// A compacted file of the table as a run's commit records it.
    fn record(&self, key: &str, dataset: &str, rows: i64, columns: &str) {
        self.record_in(TABLE, key, dataset, rows, columns);
    }

    fn record_in(&self, table: &str, key: &str, dataset: &str, rows: i64, columns: &str) {
        self.record_by("run", table, key, dataset, rows, columns);
    }

    /// A compacted file as run `run`'s commit records it.
    fn record_by(&self, run: &str, table: &str, key: &str, dataset: &str, rows: i64, columns: &str) {
        self.db.with(|c| {
            c.execute("INSERT OR IGNORE INTO datasets (id, owner_id, created_at, updated_at) VALUES (?1, 'o', 't', 't')", params![dataset])
                .unwrap();
            c.execute(
                "INSERT INTO compacted_files (key, dataset_id, period_tag, table_name, run_id, schema_fingerprint, row_count, size, \
                 source_segments, created_at, columns) VALUES (?1, ?2, '2025-11-05', ?3, ?8, 'fp', ?4, ?5, 1, ?6, ?7)",
                params![key, dataset, table, rows, rows * 100, format!("t{key}"), columns, run],
            )
            .unwrap();
        });
    }

    /// Consolidation's commit: `retired` merged into `into`, by a run of its own.
    fn consolidate(&self, retired: &[&str], into: &str, dataset: &str, rows: i64) {
        let run = format!("merge-{into}");
        self.record_by(&run, TABLE, into, dataset, rows, COLUMNS);
        for key in retired {
            let retire = "UPDATE compacted_files SET retired_at = 't', retired_run_id = ?2 WHERE key = ?1";
            self.db.with(|c| c.execute(retire, params![key, run]).unwrap());
        }
    }

    /// Whatever is pending, without a subrequest budget.
    fn all(&self) -> &Cell<u64> {
        &self.budget
    }

    fn commit(&self) -> TableCommit {
        block_on(commit_table(&self.db, &self.blobs, &self.clock, TABLE, &config(), self.all())).unwrap()
    }

    fn pointer(&self) -> LakeTable {
        block_on(self.db.query::<LakeTable>(fusou_core::index::LAKE_TABLE, &[SqlValue::from(TABLE)])).unwrap().pop().expect("a table")
    }

    fn metadata(&self) -> TableMetadata {
        block_on(load(&self.blobs, &self.pointer())).unwrap().metadata
    }

    /// The manifests the current snapshot's list names.
    fn manifests(&self) -> Vec<ManifestFile> {
        let list = self.metadata().current_snapshot().expect("a snapshot").manifest_list.clone();
        manifest::read_manifest_list(&self.blobs.objects.borrow()[config().key(&list).unwrap()]).unwrap()
    }

    /// The live files' keys of a snapshot (None: the current one), sorted.
    fn live(&self, snapshot: Option<i64>) -> Vec<String> {
        let files = block_on(scan(&self.blobs, &config(), &self.metadata(), snapshot)).unwrap();
        let mut keys: Vec<String> = files.into_iter().map(|f| config().key(&f.path).unwrap().to_owned()).collect();
        keys.sort();
        keys
    }
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[test]
fn manifests_and_lists_round_trip_with_the_specs_schemas_and_header_keys() {
    let file = |path: &str, dataset: &str| DataFile {
        path: path.into(),
        partition: vec![Some("2025-11-05".into()), Some(dataset.into())],
        record_count: 7,
        file_size_in_bytes: 700,
        statistics: Statistics {
            value_counts: [(3, 7), (4, 7)].into(),
            null_value_counts: [(3, 0), (4, 2)].into(),
            lower_bounds: [(3, b"a".to_vec())].into(),
            ..Statistics::default()
        },
        unmodeled: Vec::new(),
    };
    let entries = vec![
        Entry { status: Status::Added, snapshot_id: 9, sequence_number: 3, file_sequence_number: 3, file: file("s3://b/a", "d1") },
        Entry { status: Status::Existing, snapshot_id: 5, sequence_number: 1, file_sequence_number: 1, file: file("s3://b/b", "d2") },
        Entry { status: Status::Deleted, snapshot_id: 9, sequence_number: 2, file_sequence_number: 2, file: file("s3://b/c", "d3") },
    ];
    let schema = Schema::initial();
    let spec = PartitionSpec::by_period_and_dataset();
    let bytes = manifest::write_manifest(&entries, &schema, &spec).unwrap();
    let listed = manifest::describe("s3://b/m.avro".into(), bytes.len() as i64, &entries, &spec, 9, 3);
    assert_eq!((listed.added_files, listed.existing_files, listed.deleted_files), (1, 1, 1));
    assert_eq!(listed.min_sequence_number, 1, "the oldest live entry's");
    let summary = FieldSummary { contains_null: false, lower: Some("d1".into()), upper: Some("d2".into()) };
    assert_eq!(listed.partitions[1], summary, "bounds over live entries only");
    // Added entries inherit their snapshot and sequence numbers from the list.
    assert_eq!(manifest::read_manifest(&bytes, &listed, std::slice::from_ref(&spec)).unwrap(), entries);

    let header = manifest::header(&bytes).unwrap();
    for key in ["schema", "schema-id", "partition-spec", "partition-spec-id", "format-version", "content"] {
        assert!(header.contains_key(key), "manifest header has {key}");
    }
    assert_eq!(header["content"], "data");
    let named = |codec: &[u8]| bytes.windows(codec.len()).any(|w| w == codec);
    assert!(named(b"avro.codec") && named(b"deflate"), "readers need the codec named in the header");
    let avro_schema: serde_json::Value = serde_json::from_str(&header["avro.schema"]).unwrap();
    let data_file = &avro_schema["fields"][4];
    assert_eq!((data_file["name"].as_str(), data_file["field-id"].as_i64()), (Some("data_file"), Some(2)));
    assert_eq!(data_file["type"]["fields"][1]["field-id"], 100, "file_path");
    assert_eq!(data_file["type"]["fields"][3]["type"]["fields"][0]["field-id"], 1000, "the partition's field ids are the spec's");
    let lower = &data_file["type"]["fields"][9];
    assert_eq!((&lower["name"], &lower["field-id"]), (&serde_json::json!("lower_bounds"), &serde_json::json!(125)));
    assert_eq!(lower["type"][1]["logicalType"], "map", "readers read the pairs as a map<int, binary>");

    let list = manifest::write_manifest_list(std::slice::from_ref(&listed), 9, Some(5), 3).unwrap();
    assert_eq!(manifest::read_manifest_list(&list).unwrap(), vec![listed]);
    let header = manifest::header(&list).unwrap();
    assert_eq!((header["snapshot-id"].as_str(), header["parent-snapshot-id"].as_str()), ("9", "5"));
    assert_eq!((header["sequence-number"].as_str(), header["format-version"].as_str()), ("3", "2"));
}

/// A file's columns with statistics, as the compaction records them.
const COLUMNS_WITH_STATISTICS: &str = r#"[
  {"name":"uuid","type":"string","values":10,"nulls":1,"bytes":300,"lower":"0f3c","upper":"f9a1"},
  {"name":"index","type":"int","values":10,"nulls":0,"bytes":40,"lower":-3,"upper":9},
  {"name":"junk","type":"string","values":10,"nulls":0,"lower":"a","upper":"b"}
]"#;

#[test]
fn a_manifest_rewrite_keeps_every_statistic_and_every_field_it_does_not_model() {
    // Fields another writer put in `data_file` (Iceberg's split_offsets and sort_order_id),
    // held by one file of two: both written back as read, the other file given their null.
    let split_offsets = serde_json::json!({"name": "split_offsets", "default": null, "field-id": 132,
        "type": ["null", {"type": "array", "items": "long", "element-id": 133}]});
    let sort_order_id = serde_json::json!({"name": "sort_order_id", "type": ["null", "int"], "default": null, "field-id": 140});
    let foreign = vec![
        Unmodeled {
            field: split_offsets,
            value: layout::optional(Some(apache_avro::types::Value::Array(vec![apache_avro::types::Value::Long(4)]))),
        },
        Unmodeled { field: sort_order_id, value: layout::optional(Some(apache_avro::types::Value::Int(0))) },
    ];
    let schema = Schema::initial();
    let statistics = Statistics::of_columns(
        &serde_json::from_str::<Vec<schema::Column>>(
            r#"[{"name":"dataset_id","type":"string","values":5,"nulls":0,"lower":"d1","upper":"d1"}]"#,
        )
        .unwrap(),
        &schema,
    );
    assert_eq!(statistics.lower_bounds[&2], b"d1", "string bounds are their UTF-8 bytes");
    let file = |path: &str, unmodeled: Vec<Unmodeled>| DataFile {
        path: path.into(),
        partition: vec![Some("2025-11-05".into()), Some("d1".into())],
        record_count: 5,
        file_size_in_bytes: 500,
        statistics: statistics.clone(),
        unmodeled,
    };
    let entries = vec![
        Entry {
            status: Status::Existing,
            snapshot_id: 1,
            sequence_number: 1,
            file_sequence_number: 1,
            file: file("s3://b/x", foreign.clone()),
        },
        Entry { status: Status::Existing, snapshot_id: 1, sequence_number: 1, file_sequence_number: 1, file: file("s3://b/y", Vec::new()) },
    ];
    let spec = PartitionSpec::by_period_and_dataset();
    let written = manifest::write_manifest(&entries, &schema, &spec).unwrap();
    let listed = manifest::describe("s3://b/m.avro".into(), written.len() as i64, &entries, &spec, 1, 1);
    let read = manifest::read_manifest(&written, &listed, std::slice::from_ref(&spec)).unwrap();
    assert_eq!(read[0].file.unmodeled, foreign);
    assert_eq!(read[1].file.unmodeled.len(), 2, "the file without them reads their nulls");
    // Rewritten (as a commit rewrites a manifest) and read again: field by field the same.
    let rewritten = manifest::write_manifest(&read, &schema, &spec).unwrap();
    let again = manifest::read_manifest(&rewritten, &listed, std::slice::from_ref(&spec)).unwrap();
    for (before, after) in read.iter().zip(&again) {
        let (b, a) = (&before.file.statistics, &after.file.statistics);
        assert_eq!(a.column_sizes, b.column_sizes);
        assert_eq!(a.value_counts, b.value_counts);
        assert_eq!(a.null_value_counts, b.null_value_counts);
        assert_eq!(a.lower_bounds, b.lower_bounds);
        assert_eq!(a.upper_bounds, b.upper_bounds);
        assert_eq!(after.file.unmodeled, before.file.unmodeled);
    }
    assert_eq!(again, read);
}

#[test]
fn statistics_reach_the_manifest_in_the_tables_types_and_survive_rewrites_and_widening() {
    let w = World::new();
    w.record("c/1", "d1", 10, COLUMNS_WITH_STATISTICS);
    w.record("c/2", "d1", 10, COLUMNS_WITH_STATISTICS);
    w.commit();
    let file_of = |w: &World, key: &str| {
        let metadata = w.metadata();
        let files = block_on(scan(&w.blobs, &config(), &metadata, None)).unwrap();
        (files.into_iter().find(|f| f.path == config().location(key)).expect("the file is live"), metadata)
    };
    let (first, metadata) = file_of(&w, "c/1");
    let (uuid, index) = (metadata.current_schema().field("uuid").unwrap().id, metadata.current_schema().field("index").unwrap().id);
    let s = &first.statistics;
    assert_eq!((s.value_counts[&uuid], s.null_value_counts[&uuid], s.column_sizes[&uuid]), (10, 1, 300));
    assert_eq!((s.lower_bounds[&uuid].as_slice(), s.upper_bounds[&uuid].as_slice()), (&b"0f3c"[..], &b"f9a1"[..]));
    assert_eq!(
        (s.lower_bounds[&index].clone(), s.upper_bounds[&index].clone()),
        ((-3i32).to_le_bytes().to_vec(), 9i32.to_le_bytes().to_vec())
    );
    assert_eq!(s.value_counts.len(), 2, "columns outside the contract carry no statistics");

    // A file writes `index` wide: the table's field becomes a long. A consolidation then
    // rewrites the manifest that lists c/1: its bounds are re-encoded as longs, the rest kept.
    w.record("c/3", "d1", 10, &COLUMNS_WITH_STATISTICS.replace(r#""index","type":"int""#, r#""index","type":"long""#));
    w.commit();
    w.consolidate(&["c/2"], "c/4", "d1", 10);
    w.commit();
    let (after, metadata) = file_of(&w, "c/1");
    assert_eq!(metadata.current_schema().field("index").unwrap().kind, "long");
    let a = &after.statistics;
    assert_eq!(
        (a.lower_bounds[&index].clone(), a.upper_bounds[&index].clone()),
        ((-3i64).to_le_bytes().to_vec(), 9i64.to_le_bytes().to_vec())
    );
    assert_eq!((&a.value_counts, &a.null_value_counts, &a.column_sizes), (&s.value_counts, &s.null_value_counts, &s.column_sizes));
    assert_eq!((&a.lower_bounds[&uuid], &a.upper_bounds[&uuid]), (&s.lower_bounds[&uuid], &s.upper_bounds[&uuid]));
    // Files recorded before the statistics: none, and nothing else changes.
    w.record("c/5", "d1", 10, COLUMNS);
    w.commit();
    assert!(file_of(&w, "c/5").0.statistics.is_empty());
}

#[test]
fn the_metadata_has_every_field_format_v2_requires() {
    let w = World::new();
    w.record("c/1", "d1", 10, COLUMNS);
    w.commit();
    let json: serde_json::Value = serde_json::from_slice(&w.blobs.objects.borrow()[&w.pointer().metadata_key]).unwrap();
    for field in [
        "format-version",
        "table-uuid",
        "location",
        "last-sequence-number",
        "last-updated-ms",
        "last-column-id",
        "schemas",
        "current-schema-id",
        "partition-specs",
        "default-spec-id",
        "last-partition-id",
        "sort-orders",
        "default-sort-order-id",
    ] {
        assert!(json.get(field).is_some(), "metadata lacks {field}");
    }
    assert_eq!(json["format-version"], 2);
    assert_eq!(json["location"], "s3://bucket/lake/fusou/battle");
    assert_eq!(json["refs"]["main"]["snapshot-id"], json["current-snapshot-id"]);
    let snapshot = &json["snapshots"][0];
    for field in ["snapshot-id", "sequence-number", "timestamp-ms", "manifest-list", "summary", "schema-id"] {
        assert!(snapshot.get(field).is_some(), "snapshot lacks {field}");
    }
    assert_eq!(snapshot["summary"]["operation"], "append");
    let spec = &json["partition-specs"][0]["fields"];
    assert_eq!((spec[0]["name"].as_str(), spec[0]["transform"].as_str()), (Some("period_tag"), Some("identity")));
    let mapping: serde_json::Value = serde_json::from_str(json["properties"]["schema.name-mapping.default"].as_str().unwrap()).unwrap();
    // The fields are the contract's columns, in its order, after the two partition columns.
    assert_eq!(mapping[2], serde_json::json!({ "field-id": 3, "names": ["env_uuid"] }));
    assert_eq!(mapping.as_array().unwrap().len(), 2 + contract::Contract::client().table(TABLE).unwrap().len());
}

#[test]
fn appends_then_a_consolidation_replaces_and_time_travel_sees_the_files_before() {
    let w = World::new();
    for (key, dataset) in [("c/a", "d1"), ("c/b", "d1"), ("c/c", "d2")] {
        w.record(key, dataset, 10, COLUMNS);
    }
    let first = w.commit();
    assert_eq!((first.added, first.attempts), (3, 1));
    assert_eq!(w.live(None), keys(&["c/a", "c/b", "c/c"]));

    // Nothing pending: no snapshot.
    assert_eq!(w.commit().snapshot_id, None);
    assert_eq!(w.metadata().snapshots.len(), 1);

    w.consolidate(&["c/a", "c/b"], "c/ab", "d1", 20);
    let second = w.commit();
    assert_eq!((second.added, second.removed), (1, 2));
    assert_eq!(w.live(None), keys(&["c/ab", "c/c"]));
    let metadata = w.metadata();
    let current = metadata.current_snapshot().unwrap();
    assert_eq!(current.summary["operation"], "replace", "the same rows in fewer files");
    assert_eq!(current.summary["total-records"], "30");
    assert_eq!(current.summary["total-data-files"], "2");
    assert_eq!(w.live(first.snapshot_id), keys(&["c/a", "c/b", "c/c"]), "the previous snapshot is as it was");
    // The index agrees: every live file marked, every retired one marked removed.
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files WHERE lake_snapshot IS NULL"), 0);
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files WHERE lake_removed_seq = 2"), 2);
}

#[test]
fn columns_outside_the_contract_are_left_out_and_noted_and_a_type_clash_is_refused() {
    let w = World::new();
    w.record("c/old", "d1", 10, COLUMNS);
    w.commit();
    let fields = w.metadata().current_schema().fields.clone();
    w.record("c/new", "d1", 10, r#"[{"name":"uuid","type":"string"},{"name":"index","type":"int"},{"name":"cell","type":"long"}]"#);
    w.record("c/clash", "d2", 10, r#"[{"name":"uuid","type":"long"}]"#);
    let done = w.commit();
    assert_eq!((done.added, done.refused), (1, 1));
    let metadata = w.metadata();
    assert_eq!(metadata.schemas.len(), 1, "the contract's (no snapshot uses the initial one); no file added a field");
    assert_eq!(metadata.current_schema().fields, fields);
    assert!(metadata.current_schema().field("cell").is_none());
    assert_eq!(w.live(None), keys(&["c/new", "c/old"]));
    let (why, note): (String, String) = w.db.with(|c| {
        let refused = c.query_row("SELECT lake_refused FROM compacted_files WHERE key = 'c/clash'", [], |r| r.get(0)).unwrap();
        (refused, c.query_row("SELECT lake_note FROM compacted_files WHERE key = 'c/new'", [], |r| r.get(0)).unwrap())
    });
    assert_eq!(why, "column uuid is string in the table and long in this file");
    assert_eq!(note, "columns outside the client's contract, left out of the table: cell");
    assert_eq!(w.commit().snapshot_id, None, "a refused file is not pending again");
    // The status route's query shows both.
    let left: Vec<fusou_core::index::LakeLeftOut> =
        block_on(w.db.query(fusou_core::index::LAKE_LEFT_OUT, &[SqlValue::from("d1"), SqlValue::from(20u64)])).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].note.as_deref(), Some(note.as_str()));
}

#[test]
fn a_table_outside_the_contract_is_never_made() {
    let w = World::new();
    w.record_in("junk_table_1", "c/junk", "d1", 10, COLUMNS);
    let done = block_on(commit_table(&w.db, &w.blobs, &w.clock, "junk_table_1", &config(), w.all())).unwrap();
    assert_eq!((done.added, done.refused, done.snapshot_id), (0, 1, None));
    assert_eq!(w.db.count("SELECT count(*) FROM lake_tables"), 0, "no pointer, so no catalog entry");
    assert!(w.blobs.objects.borrow().keys().all(|k| !k.starts_with("lake/")), "no object written");
    let why: String =
        w.db.with(|c| c.query_row("SELECT lake_refused FROM compacted_files WHERE key = 'c/junk'", [], |r| r.get(0)).unwrap());
    assert!(why.contains("outside the client's contract"), "{why}");
}

#[test]
fn a_thousand_commits_of_new_unknown_columns_leave_the_schema_and_a_small_metadata() {
    let w = World::new();
    w.record("c/first", "d1", 10, COLUMNS);
    w.commit();
    let schema = w.metadata().current_schema().clone();
    for i in 0..1000 {
        let columns = format!(r#"[{{"name":"uuid","type":"string"}},{{"name":"hostile_{i}","type":"string"}}]"#);
        w.record(&format!("c/h{i:04}"), &format!("hostile{}", i % 7), 1, &columns);
        assert_eq!(w.commit().added, 1);
    }
    let metadata = w.metadata();
    assert_eq!(metadata.current_schema(), &schema, "the schema is the contract's still");
    assert_eq!(metadata.schemas.len(), 1, "the contract's; no snapshot uses the initial one");
    let bytes = w.blobs.objects.borrow()[&w.pointer().metadata_key].len();
    println!("metadata after 1,000 commits of new unknown columns: {bytes} bytes ({} snapshots kept)", metadata.snapshots.len());
    assert!(bytes < 1 << 20, "metadata {bytes} bytes");
}

#[test]
fn a_commit_that_dies_before_its_swap_leaves_its_files_for_the_next() {
    let w = World::new();
    w.record("c/a", "d1", 10, COLUMNS);
    w.commit();
    w.record("c/b", "d1", 10, COLUMNS);
    // The metadata file's PUT fails: as if the isolate died before the swap.
    w.blobs.fail_write.set(Some(w.blobs.writes.get() + 3));
    assert!(block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config(), w.all())).is_err());
    assert_eq!(w.metadata().snapshots.len(), 1, "the table is as it was");
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files WHERE lake_snapshot IS NULL"), 1);
    w.blobs.fail_write.set(None);
    assert_eq!(w.commit().added, 1);
    assert_eq!(w.live(None), keys(&["c/a", "c/b"]));
}

#[test]
fn a_file_retired_while_a_commit_adds_it_leaves_the_table_with_its_replacement() {
    let w = World::new();
    w.record("c/a", "d1", 10, COLUMNS);
    // A writer that read `c/a` as pending, then lost its turn while a consolidation retired it.
    let slow = Interleaved::new(&w.db, &w.blobs);
    let config = config();
    let budget = Cell::new(u64::MAX);
    let mut commit = Box::pin(commit_table(&slow, &slow, &w.clock, TABLE, &config, &budget));
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    // Step the commit until it has read what is pending (two queries), then retire the file.
    while slow.queries.get() < 2 {
        assert!(commit.as_mut().poll(&mut cx).is_pending());
    }
    w.consolidate(&["c/a"], "c/a2", "d1", 10);
    let done = block_on(commit).unwrap();
    assert_eq!(done.attempts, 1);
    assert_eq!(w.live(None), keys(&["c/a"]), "the snapshot is the index as the commit read it");
    let next = w.commit();
    assert_eq!((next.added, next.removed), (1, 1), "the consolidation's output and input, in one snapshot");
    assert_eq!(w.live(None), keys(&["c/a2"]));
}

#[test]
fn eight_writers_commit_to_one_table_and_no_file_is_lost_or_listed_twice() {
    let w = World::new();
    let shared = Interleaved::new(&w.db, &w.blobs);
    let config = config();
    let budget = Cell::new(u64::MAX);
    let mut expected = Vec::new();
    let writers = (0..8).map(|i| {
        // Each writer's run records its file, then commits the table.
        let key = format!("c/{i}");
        w.record(&key, &format!("d{i}"), 10 + i, COLUMNS);
        expected.push(key);
        commit_table(&shared, &shared, &shared, TABLE, &config, &budget)
    });
    let done: Vec<TableCommit> = block_on(futures::future::join_all(writers)).into_iter().map(Result::unwrap).collect();
    expected.sort();
    assert_eq!(w.live(None), expected);
    let snapshots = done.iter().filter(|d| d.snapshot_id.is_some()).count();
    assert_eq!(w.metadata().snapshots.len(), snapshots, "each successful swap is one snapshot, none lost");
    assert_eq!(done.iter().map(|d| d.added).sum::<u64>(), 8, "each file added by exactly one writer");
    assert!(done.iter().any(|d| d.attempts > 1), "the writers did race: {done:?}");
    let rows: i64 = w.metadata().current_snapshot().unwrap().summary["total-records"].parse().unwrap();
    assert_eq!(rows, (0..8).map(|i| 10 + i).sum::<i64>());
}

#[test]
fn a_table_commit_begins_only_within_its_subrequest_budget() {
    let w = World::new();
    w.record("c/a", "d1", 10, COLUMNS);
    let budget = Cell::new(ATTEMPT_SUBREQUESTS - 1);
    let err = block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config(), &budget)).unwrap_err();
    assert!(err.message.contains("subrequests"), "{err}");
    assert_eq!(w.db.count("SELECT count(*) FROM compacted_files WHERE lake_snapshot IS NULL"), 1, "left pending");
    let budget = Cell::new(ATTEMPT_SUBREQUESTS);
    let done = block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config(), &budget)).unwrap();
    assert_eq!(done.added, 1);
    assert!(budget.get() < ATTEMPT_SUBREQUESTS, "what it spent is counted");

    // A removal reads the manifests that list the file: an attempt that finds it cannot
    // afford them writes nothing.
    w.consolidate(&["c/a"], "c/a2", "d1", 10);
    let objects = w.blobs.objects.borrow().len();
    let budget = Cell::new(ATTEMPT_SUBREQUESTS);
    let err = block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config(), &budget)).unwrap_err();
    assert!(err.message.contains("subrequests"), "{err}");
    assert_eq!(w.blobs.objects.borrow().len(), objects, "nothing written");
    assert_eq!(w.live(None), keys(&["c/a"]));
}

#[test]
fn manifests_are_merged_and_snapshots_expire_by_age_above_a_floor_after_a_grace_period() {
    let w = World::new();
    let hour = 3_600_000;
    let config = LakeConfig {
        manifests_before_merge: 4,
        retention: Retention { max_age_ms: hour, min_snapshots: 5, max_metadata_log: 3, grace_ms: 600_000 },
        ..config()
    };
    // A commit every 5 minutes for 150 minutes.
    for i in 0..30 {
        w.record(&format!("c/{i:02}"), "d1", 1, COLUMNS);
        block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config, w.all())).unwrap();
        w.clock.now.set(w.clock.now.get() + 300_000);
    }
    let metadata = w.metadata();
    let listed = w.manifests();
    assert!(listed.len() <= 4, "{} manifests after 30 commits", listed.len());
    assert_eq!(metadata.snapshots.len(), 12, "the last hour's, by age, not by count");
    assert_eq!(metadata.metadata_log.len(), 3);
    assert_eq!(w.live(None).len(), 30);

    // Two hours on, the clean-up expires all but the newest 5; what only the expired ones
    // referenced stays through the grace period (a reader may be planning from them).
    w.clock.now.set(w.clock.now.get() + 2 * hour as u64);
    let expired_lists: Vec<String> = metadata.snapshots[..7].iter().map(|s| config.key(&s.manifest_list).unwrap().to_owned()).collect();
    let report = block_on(maintain(&w.db, &w.blobs, &w.clock, &config));
    assert_eq!(report.failures, []);
    assert_eq!(report.snapshots_expired, 7);
    assert_eq!(w.metadata().snapshots.len(), 5, "the floor");
    assert!(expired_lists.iter().all(|k| w.blobs.objects.borrow().contains_key(k)), "kept through the grace period");
    assert_eq!(w.live(None).len(), 30);

    // After the grace period they go, and nothing a kept snapshot needs does.
    w.clock.now.set(w.clock.now.get() + 600_000);
    let report = block_on(maintain(&w.db, &w.blobs, &w.clock, &config));
    assert_eq!(report.failures, []);
    assert!(report.objects_deleted >= 7);
    let metadata = w.metadata();
    let avro = |keys: Vec<String>| keys.into_iter().filter(|k| k.ends_with(".avro")).collect::<std::collections::BTreeSet<_>>();
    let objects = avro(w.blobs.objects.borrow().keys().filter(|k| k.starts_with("lake/")).cloned().collect());
    let blobs = &w.blobs;
    let referenced = block_on(mirror::referenced(&metadata, &config.root, async |k: &str| {
        blobs.objects.borrow().get(k).map(|b| b.to_vec()).ok_or_else(|| format!("{k} is missing"))
    }))
    .unwrap();
    assert_eq!(objects, avro(referenced), "exactly what the kept snapshots reference is left");
    assert_eq!(w.live(None).len(), 30);
    let waiting = w.db.count("SELECT count(*) FROM lake_garbage");
    let still_needed =
        w.db.count(&format!("SELECT count(*) FROM lake_garbage WHERE free_at_sequence > {}", metadata.oldest_sequence_number()));
    assert_eq!(waiting, still_needed, "what garbage is left, a kept snapshot still needs");
}

#[test]
fn a_consolidation_writes_one_manifest_however_many_small_ones_it_touches() {
    let w = World::new();
    for key in ["c/a", "c/b", "c/c"] {
        w.record(key, "d1", 10, COLUMNS);
        w.commit();
    }
    assert_eq!(w.manifests().len(), 3, "one manifest a commit, below the merge threshold");
    w.consolidate(&["c/a", "c/b", "c/c"], "c/abc", "d1", 30);
    let done = w.commit();
    assert_eq!((done.added, done.removed), (1, 3));
    assert_eq!(w.manifests().len(), 1, "the touched manifests and the new file's entry in one");
    assert_eq!(w.live(None), keys(&["c/abc"]));
}

#[test]
fn a_retired_file_is_deleted_only_when_no_kept_snapshot_lists_it_after_a_grace_period() {
    let w = World::new();
    let config = LakeConfig { retention: Retention { min_snapshots: 1, ..Retention::default() }, ..config() };
    let commit = |w: &World| block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config, w.all())).unwrap();
    w.record("c/a", "d1", 10, COLUMNS);
    commit(&w);
    w.consolidate(&["c/a"], "c/b", "d1", 10);
    // The clean-up's own statement: retired before 'u' (every test time), within the grace.
    let due = |w: &World| {
        let graced = SqlValue::Int(w.clock.now.get() as i64 - config.retention.grace_ms);
        let rows: Vec<fusou_core::index::KeyRow> =
            block_on(w.db.query(fusou_core::index::RETIRED_BEFORE, &[SqlValue::from("u"), SqlValue::Int(10), graced])).unwrap();
        rows.len()
    };
    assert_eq!(due(&w), 0, "the table still lists it");
    commit(&w);
    assert_eq!(due(&w), 0, "snapshot 1, which lists it, is kept for time travel");
    w.clock.now.set(w.clock.now.get() + 30 * 24 * 3_600_000);
    assert_eq!(block_on(maintain(&w.db, &w.blobs, &w.clock, &config)).failures, []);
    assert_eq!(w.metadata().snapshots.len(), 1, "snapshot 1 expired");
    assert_eq!(due(&w), 0, "a reader may still be planning from snapshot 1");
    w.clock.now.set(w.clock.now.get() + config.retention.grace_ms as u64);
    assert_eq!(due(&w), 1, "after the grace period");
}

#[test]
fn every_snapshot_of_a_backlog_larger_than_a_commit_holds_each_row_once() {
    // 3 datasets × 24 files from 72 runs, in the table; then consolidations (each its own run:
    // 8 files retired into 1, rows kept) pile up while nothing commits, more than one commit
    // takes.
    let w = World::new();
    let config = LakeConfig { files_per_commit: 5, ..config() };
    let commit = |w: &World| block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config, w.all())).unwrap();
    let mut rows_of = std::collections::BTreeMap::new();
    for d in 0..3 {
        for i in 0..24 {
            let rows = 1 + i as i64;
            w.record_by(&format!("r{d}-{i}"), TABLE, &format!("c/d{d}/{i:02}"), &format!("d{d}"), rows, COLUMNS);
            *rows_of.entry(format!("d{d}")).or_insert(0) += rows;
        }
    }
    while commit(&w).more {}
    for d in 0..3 {
        for group in 0..3 {
            let retired: Vec<String> = (group * 8..group * 8 + 8).map(|i| format!("c/d{d}/{i:02}")).collect();
            let rows: i64 = (group * 8..group * 8 + 8).map(|i| 1 + i as i64).sum();
            let run = format!("c{d}-{group}");
            w.record_by(&run, TABLE, &format!("c/d{d}/g{group}"), &format!("d{d}"), rows, COLUMNS);
            w.db.with(|c| {
                for key in &retired {
                    c.execute("UPDATE compacted_files SET retired_at = 't', retired_run_id = ?2 WHERE key = ?1", params![key, run])
                        .unwrap();
                }
            });
        }
    }
    let mut snapshots = 0;
    loop {
        let done = commit(&w);
        snapshots += done.snapshot_id.is_some() as u32;
        // What each dataset's files in this snapshot hold: every row once, never fewer or more.
        let files = block_on(scan(&w.blobs, &config, &w.metadata(), None)).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for f in &files {
            *seen.entry(f.partition[1].clone().unwrap()).or_insert(0) += f.record_count;
        }
        assert_eq!(seen, rows_of, "snapshot {snapshots}: rows by dataset");
        if !done.more {
            break;
        }
    }
    assert!(snapshots > 1, "the backlog took more than one commit");
    assert_eq!(w.live(None).len(), 9, "three consolidated files per dataset");
}

#[test]
fn the_committer_gives_each_table_one_snapshot_per_interval_whatever_the_runs() {
    let w = World::new();
    let config = config();
    let start = w.clock.now.get();
    let mut snapshots_at = Vec::new();
    // Ten minutes: a run finishes every 5 s with a file for each of two tables, and the committer
    // passes after each (as each run's notice would have it).
    for t in 0..120 {
        w.record_by(&format!("r{t}"), TABLE, &format!("c/{t:03}"), "d1", 1, COLUMNS);
        w.record_by(&format!("r{t}"), "cells", &format!("p/{t:03}"), "d1", 1, COLUMNS);
        let pass = block_on(commit_pending(&w.db, &w.blobs, &w.clock, &config));
        assert_eq!(pass.failures, []);
        let committed: Vec<&TableCommit> = pass.commits.iter().filter(|c| c.snapshot_id.is_some()).collect();
        if !committed.is_empty() {
            assert_eq!(committed.len(), 2, "both tables, in one pass");
            snapshots_at.push(w.clock.now.get() - start);
            assert_eq!(pass.next_ms, None, "everything pending was taken");
        } else {
            assert_eq!(pass.waiting, 2);
            let last = *snapshots_at.last().unwrap();
            assert_eq!(pass.next_ms, Some((start + last) as i64 + config.commit_interval_ms), "when the alarm is due");
        }
        w.clock.now.set(w.clock.now.get() + 5_000);
    }
    assert_eq!(snapshots_at, (0..10).map(|i| i * 60_000).collect::<Vec<_>>(), "one snapshot a minute");
    block_on(commit_pending(&w.db, &w.blobs, &w.clock, &config));
    assert_eq!(w.live(None).len(), 120, "the last pass took the rest");
    assert_eq!(w.metadata().snapshots.len(), 11);
}

/// `scripts/bench-lake.sh`: 10,000 commits to one table, then the metadata's size and the time
/// to plan a full scan, against a baseline that never merges manifests; and commits per second
/// to one table from 8 concurrent writers. Prints figures; asserts nothing about time.
#[test]
#[ignore = "a benchmark: scripts/bench-lake.sh"]
fn bench_ten_thousand_commits_and_eight_writers() {
    use std::time::Instant;
    let commits: usize = std::env::var("FUSOU_LAKE_COMMITS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let run = |name: &str, config: LakeConfig| {
        let w = World::new();
        let started = Instant::now();
        for i in 0..commits {
            w.record(&format!("battle_compacted/2025-11-05/d{}/battle/run-{i}.parquet", i % 50), &format!("d{}", i % 50), 10, COLUMNS);
            block_on(commit_table(&w.db, &w.blobs, &w.clock, TABLE, &config, w.all())).unwrap();
            w.clock.now.set(w.clock.now.get() + 1_000);
        }
        let commit_ms = started.elapsed().as_secs_f64() * 1000.0;
        let metadata = w.metadata();
        let metadata_bytes = w.blobs.objects.borrow()[&w.pointer().metadata_key].len();
        let list_key = config.key(&metadata.current_snapshot().unwrap().manifest_list).unwrap().to_owned();
        let list = manifest::read_manifest_list(&w.blobs.objects.borrow()[&list_key]).unwrap();
        let list_bytes = w.blobs.objects.borrow()[&list_key].len();
        let manifest_bytes: usize = list.iter().map(|m| w.blobs.objects.borrow()[config.key(&m.path).unwrap()].len()).sum();
        let started = Instant::now();
        let files = block_on(scan(&w.blobs, &config, &metadata, None)).unwrap();
        let plan_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(files.len(), commits, "every file is listed once");
        let objects = |w: &World| w.blobs.objects.borrow().keys().filter(|k| k.starts_with("lake/")).count();
        let before = objects(&w);
        w.clock.now.set(w.clock.now.get() + 8 * 86_400_000);
        assert_eq!(block_on(maintain(&w.db, &w.blobs, &w.clock, &config)).failures, []);
        println!(
            "{name}: {commits} commits in {:.0} ms ({:.2} ms/commit, {:.0} commits/s); current: {} snapshots, metadata file {} B, \
             manifest list {} B ({} manifests), manifests {} B; full scan planned in {plan_ms:.1} ms ({} files); \
             table objects {before} → {} after the clean-up",
            commit_ms,
            commit_ms / commits as f64,
            commits as f64 / commit_ms * 1000.0,
            metadata.snapshots.len(),
            metadata_bytes,
            list_bytes,
            list.len(),
            manifest_bytes,
            files.len(),
            objects(&w),
        );
        plan_ms
    };
    let merged = run("merged manifests (16 at most)", config());
    let baseline = run("baseline: manifests never merged", LakeConfig { manifests_before_merge: usize::MAX, ..config() });
    println!("scan planning: {:.1}x faster with merged manifests than the baseline", baseline / merged);

    // 8 writers, each recording and committing 50 files to the one table.
    let w = World::new();
    let shared = Interleaved::new(&w.db, &w.blobs);
    let config = config();
    let budget = Cell::new(u64::MAX);
    let started = Instant::now();
    let writers = (0..8).map(|writer| {
        let (w, shared, config, budget) = (&w, &shared, &config, &budget);
        async move {
            let (mut attempts, mut exhausted) = (0, 0);
            for i in 0..50 {
                w.record(&format!("c/{writer}-{i}"), &format!("d{writer}"), 10, COLUMNS);
                // A call whose attempts all lost is retried, as the run's step would be.
                loop {
                    match commit_table(shared, shared, shared, TABLE, config, budget).await {
                        Ok(done) => {
                            attempts += done.attempts;
                            break;
                        }
                        Err(e) if e.message.contains("lost the race") => {
                            attempts += config.attempts;
                            exhausted += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            (attempts, exhausted)
        }
    });
    let (attempts, exhausted) = block_on(futures::future::join_all(writers)).into_iter().fold((0, 0), |(a, e), (wa, we)| (a + wa, e + we));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let snapshots = w.db.count("SELECT count(DISTINCT lake_snapshot) FROM compacted_files");
    assert_eq!(w.live(None).len(), 400);
    println!(
        "8 concurrent writers, 400 files: {snapshots} snapshots in {ms:.0} ms ({:.0} commits/s to one table, CPU only: \
         storage here answers at once), {attempts} attempts ({:.2} per commit call), {exhausted} calls lost all {} attempts \
         and were retried",
        snapshots as f64 / ms * 1000.0,
        attempts as f64 / 400.0,
        config.attempts
    );
}
