//! The open tables end to end: fragments of three datasets, compacted, are read back from the
//! Iceberg tables `fusou.<table>` by PyIceberg (through the REST catalog) and DuckDB (its
//! `iceberg` extension), by value; time travel to an earlier snapshot gives the earlier rows.
//! Local R2 has no S3 API: the tables' metadata and data files are mirrored (through the
//! read-only object route) into the directory the stack's `LAKE_LOCATION` names.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use fusou_lake::metadata::TableMetadata;
use fusou_lake::mirror;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::support::*;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("lake::pyiceberg_and_duckdb_read_exactly_the_uploaded_rows_and_time_travel", read_back),
    ("lake::a_rolled_up_period_is_one_file_per_table_with_the_same_rows_for_both_readers", rolled_up),
];

const TABLES: [&str; 2] = ["battle", "cells"];

fn read_back() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let datasets: Vec<String> = (0..3).map(|_| unique_dataset()).collect();
    let mut uploaded: Vec<Vec<fusou_synth::Fragment>> = Vec::new();
    for (i, dataset) in datasets.iter().enumerate() {
        let f = small_fragment(900 + i as u64);
        upload(&token, dataset, "2025-11-20", &f)?;
        uploaded.push(vec![f]);
    }
    for dataset in &datasets {
        wait_until_compacted(dataset, &token, 150)?;
    }
    wait_until_in_tables(&datasets)?;
    // The operator sees the committer: its passes, their snapshots and their operations (each
    // snapshot at least its manifest, its manifest list and its metadata file: 3 puts).
    let (status, body) = send(operator(reqwest::Method::GET, "/compact/status"))?;
    ensure_eq!(status, 200, "{body}");
    let total = &body["committer"]["total"];
    let snapshots = total["snapshots"].as_u64().ok_or("snapshots")?;
    ensure!(snapshots >= TABLES.len() as u64 && total["passes"].as_u64() >= Some(1), "{body}");
    ensure!(total["operations"]["r2_class_a"].as_u64() >= Some(3 * snapshots), "{body}");
    ensure!(body["committer"]["lastPass"]["atMs"].is_u64(), "{body}");
    let (status, _) = send(lake_reader(reqwest::Method::GET, "/compact/status"))?;
    ensure_eq!(status, 403, "the read key is no operator");
    let first: Vec<(String, i64)> =
        TABLES.iter().map(|t| Ok::<_, String>((t.to_string(), current_snapshot(t)?))).collect::<Result<_, _>>()?;

    // More rows for the first dataset: a later snapshot.
    let more = small_fragment(950);
    upload(&token, &datasets[0], "2025-11-20", &more)?;
    wait_until_compacted(&datasets[0], &token, 150)?;
    wait_until_in_tables(&datasets)?;
    let before: Vec<_> = uploaded.iter().flatten().cloned().collect();
    uploaded[0].push(more);
    let after: Vec<_> = uploaded.iter().flatten().cloned().collect();

    // What is mirrored is the tables as they are now: the reads name these snapshots and
    // metadata files (other tests' runs keep committing to the same tables meanwhile).
    let mirrored = mirror(&TABLES)?;
    let out = format!("{}/lake-read", stack().state);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut reads = Vec::new();
    for (table, metadata, current) in &mirrored {
        reads.push(json!({ "name": table, "table": table, "snapshot": current, "metadata": metadata }));
        let earlier = first.iter().find(|(t, _)| t == table).map(|(_, s)| *s).ok_or("a first snapshot")?;
        reads.push(json!({ "name": format!("{table}@{earlier}"), "table": table, "snapshot": earlier, "metadata": metadata }));
    }
    let plan = format!("{out}/plan.json");
    write(&plan, json!({ "datasets": datasets, "reads": reads }).to_string().as_bytes())?;
    // The readers use the read-only key, which opens the catalog and the object route only.
    let (status, _) = send(lake_reader(reqwest::Method::POST, "/trigger-scheduled"))?;
    ensure_eq!(status, 403, "the read key is no operator");
    // The catalog advertises its read endpoints, and refuses a writer in its own error model
    // before the writer commits anything, whatever key it holds.
    let (status, config) = send(lake_reader(reqwest::Method::GET, "/iceberg/v1/config"))?;
    ensure_eq!(status, 200, "{config}");
    ensure!(
        config["endpoints"].as_array().is_some_and(|e| e.iter().any(|e| e == "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}")),
        "{config}"
    );
    for (method, path) in
        [(reqwest::Method::POST, "/iceberg/v1/namespaces/fusou/tables/battle"), (reqwest::Method::POST, "/iceberg/v1/transactions/commit")]
    {
        let (status, body) = send(operator(method, path))?;
        ensure_eq!(status, 403, "{path}: {body}");
        ensure_eq!(body["error"]["type"], "ForbiddenException", "{path}");
    }
    let report = read_lake(&out, &plan)?;
    ensure_eq!(report["namespaces"], json!([["fusou"]]));
    for t in TABLES {
        ensure!(report["tables"].as_array().is_some_and(|a| a.contains(&json!(t))), "listed: {report}");
        ensure_eq!(report[t]["partition"], json!(["period_tag", "dataset_id"]), "{report}");
        // The column statistics prune: a filter beyond every file's bounds plans none of them.
        ensure!(report[t]["files"].as_u64().is_some_and(|n| n > 0), "{report}");
        ensure_eq!(report[t]["files_beyond_bounds"], json!(0), "{t}: {report}");
    }

    // The object route answers a byte range, as Parquet readers ask for a footer.
    let data_key = d1(&format!(
        "SELECT key FROM compacted_files WHERE dataset_id = '{}' AND table_name = 'battle' AND retired_at IS NULL LIMIT 1",
        datasets[1]
    ))?;
    let data_key = data_key.first().and_then(|r| r["key"].as_str()).ok_or("a compacted file")?.to_owned();
    let whole = std::fs::read(format!("{}/lake/{data_key}", stack().state)).map_err(|e| e.to_string())?;
    let tail = fetch(lake_reader(reqwest::Method::GET, "/lake/object").query(&[("key", &data_key)]).header("range", "bytes=-8"))?;
    ensure_eq!(tail.status().as_u16(), 206);
    let expected_range = format!("bytes {}-{}/{}", whole.len() - 8, whole.len() - 1, whole.len());
    ensure_eq!(tail.headers().get("content-range").and_then(|v| v.to_str().ok()), Some(expected_range.as_str()));
    ensure_eq!(tail.bytes().map_err(|e| e.to_string())?.to_vec(), whole[whole.len() - 8..].to_vec(), "the footer's length and PAR1");
    let bad = fetch(lake_reader(reqwest::Method::GET, "/lake/object").query(&[("key", &data_key)]).header("range", "bytes=9-3"))?;
    ensure_eq!(bad.status().as_u16(), 416);
    let (status, _) = send(lake_reader(reqwest::Method::GET, "/lake/object").query(&[("key", "battle_data/x/../y")]))?;
    ensure_eq!(status, 400, "only the lake's objects");

    // The file alone, without the table, says whose rows it holds and of which period.
    let alone =
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(whole)).map_err(|e| e.to_string())?.build().map_err(|e| e.to_string())?;
    for batch in alone {
        let batch = batch.map_err(|e| e.to_string())?;
        ensure_eq!(strings(&batch, "dataset_id")?, vec![datasets[1].clone(); batch.num_rows()], "{data_key}");
        ensure_eq!(strings(&batch, "period_tag")?, vec!["2025-11-20".to_owned(); batch.num_rows()], "{data_key}");
    }

    let mut read = 0;
    for reader in ["pyiceberg", "duckdb"] {
        for t in TABLES {
            read += same_rows(&format!("{out}/{reader}-{t}.parquet"), t, &after).map_err(|e| format!("{reader} {t}: {e}"))?;
            // Each reader's dataset_id is the dataset each row was uploaded to.
            for (dataset, fragments) in datasets.iter().zip(&uploaded) {
                same_rows_of(&format!("{out}/{reader}-{t}.parquet"), t, fragments, Some(dataset))
                    .map_err(|e| format!("{reader} {t} of {dataset}: {e}"))?;
            }
        }
        for (t, s) in &first {
            same_rows(&format!("{out}/{reader}-{t}@{s}.parquet"), t, &before).map_err(|e| format!("{reader} {t} at {s}: {e}"))?;
        }
    }
    let uploaded_rows: usize = TABLES.iter().map(|t| table_rows(&after, t).len()).sum::<usize>() * 2;
    ensure_eq!(read, uploaded_rows, "rows read by both readers against rows uploaded");
    println!("lake: PyIceberg and DuckDB each read {} rows of {TABLES:?} across 3 datasets ({} uploaded)", read / 2, uploaded_rows / 2);
    Ok(())
}

/// A period of four datasets rolled up through the clean-up route: once the committer lists the
/// roll-ups, each table's period is one file, both readers read exactly the uploaded rows from
/// it (each with its own dataset), and a one-dataset lookup plans that one file.
fn rolled_up() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    // A period of this test's own, so that only its files are rolled up.
    let period = format!("ru-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let datasets: Vec<String> = (0..4).map(|_| unique_dataset()).collect();
    let mut uploaded: Vec<Vec<fusou_synth::Fragment>> = Vec::new();
    for (i, dataset) in datasets.iter().enumerate() {
        let f = small_fragment(970 + i as u64);
        upload(&token, dataset, &period, &f)?;
        uploaded.push(vec![f]);
    }
    for dataset in &datasets {
        wait_until_compacted(dataset, &token, 150)?;
    }
    wait_until_in_tables(&datasets)?;

    let (status, report) =
        send(operator(reqwest::Method::POST, "/compact/cleanup").json(&json!({ "rollupMinFiles": 2, "rollupPeriod": period })))?;
    ensure_eq!(status, 200, "{report}");
    let jobs = report["rollups"]["jobs"].as_array().ok_or_else(|| format!("no roll-ups: {report}"))?;
    for t in TABLES {
        let job = jobs.iter().find(|j| j["table"] == t).ok_or_else(|| format!("{t} not rolled up: {report}"))?;
        ensure_eq!(job["filesIn"], json!(datasets.len()), "{job}");
    }
    // The committer lists them in the tables' next snapshots.
    let listed =
        format!("SELECT count(*) AS n FROM lake_rollups WHERE period_tag = '{period}' AND lake_snapshot IS NULL AND lake_refused IS NULL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while d1(&listed)?.first().and_then(|r| r["n"].as_i64()) != Some(0) {
        ensure!(std::time::Instant::now() < deadline, "roll-ups of {period} still waiting for the committer after 90 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let refused = d1(&format!("SELECT id, lake_refused FROM lake_rollups WHERE period_tag = '{period}' AND lake_refused IS NOT NULL"))?;
    ensure!(refused.is_empty(), "refused: {refused:?}");

    let mirrored = mirror(&TABLES)?;
    let out = format!("{}/lake-rollup", stack().state);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let reads: Vec<Value> = mirrored
        .iter()
        .map(|(table, metadata, current)| json!({ "name": table, "table": table, "snapshot": current, "metadata": metadata }))
        .collect();
    let plan = format!("{out}/plan.json");
    write(&plan, json!({ "datasets": datasets, "period": period, "reads": reads }).to_string().as_bytes())?;
    let report = read_lake(&out, &plan)?;
    let all: Vec<_> = uploaded.iter().flatten().cloned().collect();
    let mut read = 0;
    for t in TABLES {
        // One file for the period, and for one dataset of it.
        ensure_eq!(report[t]["period_files"], json!(1), "{t}: {report}");
        ensure_eq!(report[t]["dataset_files"], json!(1), "{t}: {report}");
        for reader in ["pyiceberg", "duckdb"] {
            read += same_rows(&format!("{out}/{reader}-{t}.parquet"), t, &all).map_err(|e| format!("{reader} {t}: {e}"))?;
            for (dataset, fragments) in datasets.iter().zip(&uploaded) {
                same_rows_of(&format!("{out}/{reader}-{t}.parquet"), t, fragments, Some(dataset))
                    .map_err(|e| format!("{reader} {t} of {dataset}: {e}"))?;
            }
        }
    }
    println!("lake: a rolled-up period of {} datasets, one file per table, {} rows read by each reader", datasets.len(), read / 2);
    Ok(())
}

/// Runs `read_lake.py` on `plan`, writing into `out`; answers its report.
fn read_lake(out: &str, plan: &str) -> Result<Value, String> {
    let args = [format!("{}/iceberg", stack().url), stack().lake_read_secret.clone(), out.to_owned(), plan.to_owned()];
    let python = std::env::var("FUSOU_LAKE_PYTHON").map_err(|_| "FUSOU_LAKE_PYTHON is not set (scripts/test.sh sets it)")?;
    let script = format!("{}/tests/e2e/read_lake.py", stack().root);
    let ran = std::process::Command::new(python).arg(script).args(&args).output().map_err(|e| e.to_string())?;
    ensure!(
        ran.status.success(),
        "read_lake.py ({}): {}{}",
        ran.status,
        String::from_utf8_lossy(&ran.stderr),
        String::from_utf8_lossy(&ran.stdout)
    );
    serde_json::from_slice(&ran.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&ran.stdout)))
}

/// Waits until every live compacted file of `datasets` is in its table (a run's table commit
/// follows its D1 commit, which is what the owner's status shows).
fn wait_until_in_tables(datasets: &[String]) -> TestResult {
    let ids: Vec<String> = datasets.iter().map(|d| format!("'{d}'")).collect();
    let sql = format!(
        "SELECT count(*) AS n FROM compacted_files WHERE dataset_id IN ({}) AND retired_at IS NULL \
         AND lake_snapshot IS NULL AND lake_refused IS NULL",
        ids.join(", ")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows = d1(&sql)?;
        if rows.first().and_then(|r| r["n"].as_i64()) == Some(0) {
            return Ok(());
        }
        ensure!(std::time::Instant::now() < deadline, "files of {datasets:?} still outside their tables after 60 s: {rows:?}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// The current snapshot of `fusou.<table>`, through the catalog.
fn current_snapshot(table: &str) -> Result<i64, String> {
    let (status, loaded) = send(lake_reader(reqwest::Method::GET, &format!("/iceberg/v1/namespaces/fusou/tables/{table}")))?;
    ensure_eq!(status, 200, "{loaded}");
    loaded["metadata"]["current-snapshot-id"].as_i64().ok_or_else(|| format!("no snapshot: {loaded}"))
}

/// Mirrors what the tables' snapshots reference into the stack's lake directory, as
/// `fusou lake-sync` does: metadata files, manifest lists, manifests, data files. Answers each
/// table's mirrored metadata file and its current snapshot.
fn mirror(tables: &[&str]) -> Result<Vec<(String, String, i64)>, String> {
    let root = format!("file://{}/lake", stack().state);
    let mut mirrored = Vec::new();
    for table in tables {
        let (status, loaded) = send(lake_reader(reqwest::Method::GET, &format!("/iceberg/v1/namespaces/fusou/tables/{table}")))?;
        ensure_eq!(status, 200, "{loaded}");
        let location = loaded["metadata-location"].as_str().ok_or("metadata-location")?;
        let path = location.strip_prefix("file://").ok_or_else(|| format!("{location} is not a local file"))?;
        write(path, loaded["metadata"].to_string().as_bytes())?;
        let metadata: TableMetadata = serde_json::from_value(loaded["metadata"].clone()).map_err(|e| e.to_string())?;
        let fetch = async |key: &str| copy(&root, key);
        for key in futures::executor::block_on(mirror::referenced(&metadata, &root, fetch))? {
            copy(&root, &key)?;
        }
        mirrored.push((table.to_string(), location.to_owned(), metadata.current_snapshot_id.ok_or("no current snapshot")?));
    }
    Ok(mirrored)
}

fn write(path: &str, bytes: &[u8]) -> TestResult {
    std::fs::create_dir_all(Path::new(path).parent().ok_or("a parent")?).map_err(|e| e.to_string())?;
    std::fs::write(path, bytes).map_err(|e| format!("{path}: {e}"))
}

/// The object of bucket key `key`, copied into the mirror once (objects never change).
fn copy(root: &str, key: &str) -> Result<Vec<u8>, String> {
    let path = format!("{}/{key}", root.strip_prefix("file://").unwrap_or(root));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    let resp = fetch(lake_reader(reqwest::Method::GET, "/lake/object").query(&[("key", key)]))?;
    ensure_eq!(resp.status().as_u16(), 200, "{key}");
    let bytes = resp.bytes().map_err(|e| e.to_string())?.to_vec();
    write(&path, &bytes)?;
    Ok(bytes)
}

fn table_rows(fragments: &[fusou_synth::Fragment], table: &str) -> Vec<String> {
    let mut rows: Vec<String> =
        fragments.iter().flat_map(|f| f.segments.iter().filter(|s| s.table.as_str() == table)).flat_map(|s| rows(&s.batch)).collect();
    rows.sort();
    rows
}

/// Checks that the Parquet file a reader wrote holds exactly the rows of `table` in
/// `fragments`, by value over the fragments' columns; answers how many.
fn same_rows(path: &str, table: &str, fragments: &[fusou_synth::Fragment]) -> Result<usize, String> {
    same_rows_of(path, table, fragments, None)
}

/// A string column of a reader's batch, nulls as empty strings.
fn strings(batch: &arrow_array::RecordBatch, name: &str) -> Result<Vec<String>, String> {
    use arrow_array::cast::AsArray;
    let column = batch.column_by_name(name).ok_or_else(|| format!("no {name} column"))?;
    let column = column.as_string_opt::<i32>().ok_or_else(|| format!("{name} read as {}", column.data_type()))?;
    Ok(column.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
}

/// As [`same_rows`], of the rows whose `dataset_id` is `dataset` (all rows: `None`).
fn same_rows_of(path: &str, table: &str, fragments: &[fusou_synth::Fragment], dataset: Option<&String>) -> Result<usize, String> {
    let expected = table_rows(fragments, table);
    let columns: BTreeSet<String> = fragments
        .iter()
        .flat_map(|f| f.segments.iter().filter(|s| s.table.as_str() == table))
        .flat_map(|s| s.batch.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>())
        .collect();
    let file = Bytes::from(std::fs::read(path).map_err(|e| format!("{path}: {e}"))?);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?.build().map_err(|e| e.to_string())?;
    let mut actual = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| columns.contains(batch.schema().field(i).name())).collect();
        let of_dataset: Vec<bool> = match dataset {
            Some(d) => strings(&batch, "dataset_id")?.iter().map(|v| v == d).collect(),
            None => vec![true; batch.num_rows()],
        };
        let all = rows(&batch.project(&keep).map_err(|e| e.to_string())?);
        actual.extend(all.into_iter().zip(&of_dataset).filter(|(_, of)| **of).map(|(row, _)| row));
    }
    actual.sort();
    ensure_eq!(actual.len(), expected.len(), "rows");
    ensure!(actual == expected, "rows differ by value: first read {:?}, first uploaded {:?}", actual.first(), expected.first());
    Ok(actual.len())
}
