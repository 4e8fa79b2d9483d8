//! A signed-in user who sends what no client would: segments whose sizes lie, columns and
//! tables outside the client's contract, more requests than a client makes. None of it reaches
//! another user's data or holds up another user's compaction.

use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};
use fusou_contract::fragment::TableOffset;
use fusou_contract::ids::TableName;
use fusou_synth::forge::Forge;
use fusou_synth::{self as synth, Fragment, Segment};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("hostile::segments_whose_sizes_lie_are_refused_at_upload", refused_at_upload),
    ("hostile::columns_and_tables_outside_the_contract_stay_out_of_the_shared_tables", outside_contract),
    ("hostile::honest_datasets_compact_beside_a_hostile_one_and_none_is_retried", honest_beside_hostile),
    ("hostile::rate_limits_answer_429_with_retry_after", rate_limits),
];

const PERIOD: &str = "2025-11-21";

/// A fragment of the given segments, in order.
fn fragment_of(segments: Vec<(&str, Vec<u8>, Option<RecordBatch>)>) -> Fragment {
    let (mut bytes, mut offsets, mut segs) = (Vec::new(), Vec::new(), Vec::new());
    for (table, data, batch) in segments {
        let table = TableName::parse(table).expect("a table name");
        offsets.push(TableOffset {
            table_name: table.clone(),
            start_byte: bytes.len() as u64,
            byte_length: data.len() as u64,
            format: "parquet".into(),
            num_rows: None,
        });
        bytes.extend_from_slice(&data);
        if let Some(batch) = batch {
            segs.push(Segment { table, batch, bytes: data });
        }
    }
    Fragment { bytes, offsets, segments: segs }
}

/// Both phases; answers phase 2's status and body (the handshake must pass).
fn try_upload(token: &str, dataset: &str, f: &Fragment) -> Result<(u16, Value), String> {
    let (status, answer) = handshake_at(&upload_url(), token, &client_handshake(dataset, PERIOD, f))?;
    ensure_eq!(status, 200, "handshake: {answer}");
    send_bytes(answer["uploadUrl"].as_str().ok_or("no uploadUrl")?, token, f.bytes.clone())
}

fn refused_at_upload() -> TestResult {
    let honest = synth::write_segment(&small_fragment(2100).segments[0].batch);
    let mut cases: Vec<(&str, Forge, &str)> = vec![
        ("20 million null rows", Forge::nulls_and(20_000_000, &[]), "rows, more than"),
        ("a page of 2 GiB", Forge::honest(), "uncompressed bytes"),
        ("a thousand columns", Forge::honest(), "columns, more than"),
        ("a chunk offset near i64::MAX", Forge::honest(), "overflows"),
        ("ZSTD", Forge::honest(), "not one the client writes"),
    ];
    cases[1].1.uncompressed = Some(i32::MAX);
    cases[2].1.extra_columns = 1000;
    cases[3].1.data_page_offset = Some(i64::MAX - 2);
    cases[4].1.codec = 6;
    for (name, forge, reason) in cases {
        // A user and a dataset per case (new datasets are rate-limited per user).
        let (_, token) = new_user(json!({}))?;
        let dataset = unique_dataset();
        let f = fragment_of(vec![("cells", honest.clone(), None), ("battle", forge.bytes(), None)]);
        let (status, body) = try_upload(&token, &dataset, &f)?;
        ensure_eq!(status, 400, "{name}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        ensure!(error.contains("battle") && error.contains(reason), "{name}: {error}");
        // Nothing half-written: no fragment row, no dataset claimed.
        let rows = d1(&format!("SELECT count(*) AS n FROM battle_files WHERE dataset_id = '{dataset}'"))?;
        ensure_eq!(rows[0]["n"], 0, "{name}");
    }
    Ok(())
}

/// The current schema's field names of `fusou.<table>`, through the catalog.
fn shared_fields(table: &str) -> Result<Vec<String>, String> {
    let (status, loaded) = send(operator(Method::GET, &format!("/iceberg/v1/namespaces/fusou/tables/{table}")))?;
    ensure_eq!(status, 200, "{loaded}");
    let metadata = &loaded["metadata"];
    let current = metadata["current-schema-id"].clone();
    let schema = metadata["schemas"].as_array().and_then(|s| s.iter().find(|s| s["schema-id"] == current)).ok_or("no current schema")?;
    Ok(schema["fields"].as_array().ok_or("no fields")?.iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect())
}

fn outside_contract() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let honest = small_fragment(2200);
    let battle = honest.segments.iter().find(|s| s.table.as_str() == "battle").ok_or("a battle segment")?.batch.clone();
    // The battle table with a column of its own, and a table of its own.
    let rows = battle.num_rows();
    let extra: ArrayRef = std::sync::Arc::new(StringArray::from(vec!["x"; rows]));
    let mut fields: Vec<Field> = battle.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("hostile_column", DataType::Utf8, true));
    let mut columns = battle.columns().to_vec();
    columns.push(extra.clone());
    let widened = RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    let junk =
        RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(vec![Field::new("x", DataType::Utf8, true)])), vec![extra])
            .map_err(|e| e.to_string())?;
    let f = fragment_of(vec![
        ("battle", synth::write_segment(&widened), Some(widened.clone())),
        ("junk_table_1", synth::write_segment(&junk), Some(junk)),
    ]);
    let before = shared_fields("battle").ok();
    upload(&token, &dataset, PERIOD, &f)?;
    wait_until_compacted(&dataset, &token, 150)?;
    // Every file of the dataset decided: in its table, or refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = d1(&format!(
            "SELECT count(*) AS n FROM compacted_files WHERE dataset_id = '{dataset}' AND lake_snapshot IS NULL AND lake_refused IS NULL"
        ))?;
        if pending[0]["n"] == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "files still undecided: {pending:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The owner's files keep everything; the shared table took the contract's columns only.
    let fields = shared_fields("battle")?;
    ensure!(!fields.iter().any(|f| f == "hostile_column"), "{fields:?}");
    if let Some(before) = before {
        ensure_eq!(fields, before, "the shared schema is unchanged");
    }
    let (status, _) = send(operator(Method::GET, "/iceberg/v1/namespaces/fusou/tables/junk_table_1"))?;
    ensure_eq!(status, 404, "no shared table junk_table_1");
    let (_, tables) = send(operator(Method::GET, "/iceberg/v1/namespaces/fusou/tables"))?;
    ensure!(!tables.to_string().contains("junk_table_1"), "{tables}");
    // The owner sees why, on the status route.
    let (_, state) = send(stack().http.get(format!("{}/api/battle-data/datasets/{dataset}", stack().url)).bearer_auth(&token))?;
    let left_out = state["sharedTables"]["leftOut"].as_array().ok_or_else(|| format!("no sharedTables: {state}"))?;
    let said =
        |table: &str, field: &str| left_out.iter().any(|l| l["table_name"] == table && l[field].as_str().is_some_and(|s| !s.is_empty()));
    ensure!(said("junk_table_1", "refused") && said("battle", "note"), "{left_out:?}");
    ensure!(left_out.iter().any(|l| l["note"].as_str().is_some_and(|n| n.contains("hostile_column"))), "{left_out:?}");
    Ok(())
}

/// Uploads two fragments to each of `honest`, all at once; answers the seconds until every
/// one is compacted.
fn upload_together(token: &str, honest: &[String], seed: u64) -> Result<f64, String> {
    let mut jobs: Vec<(String, Fragment)> = Vec::new();
    for (i, dataset) in honest.iter().enumerate() {
        for k in 0..2 {
            jobs.push((dataset.clone(), small_fragment(seed + 10 * i as u64 + k)));
        }
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.iter().map(|(d, f)| scope.spawn(move || upload(token, d, PERIOD, f).map(drop))).collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap())
    })?;
    for dataset in honest {
        wait_until_compacted(dataset, token, 180)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn honest_beside_hostile() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let (_, hostile_token) = new_user(json!({}))?;
    let alone: Vec<String> = (0..3).map(|_| unique_dataset()).collect();
    let alone_s = upload_together(&token, &alone, 2300)?;
    let (_, token) = new_user(json!({}))?;
    let beside: Vec<String> = (0..3).map(|_| unique_dataset()).collect();
    let hostile = unique_dataset();
    // The hostile user's uploads go first, so that its messages share batches with the others.
    let hostile_fragments: Vec<Fragment> = (0..2)
        .map(|k| {
            let mut f = small_fragment(2400 + k);
            f.garble_first_page("battle");
            f
        })
        .collect();
    for f in &hostile_fragments {
        upload(&hostile_token, &hostile, PERIOD, f)?;
    }
    let beside_s = upload_together(&token, &beside, 2500)?;
    wait_until_compacted(&hostile, &hostile_token, 180)?;
    println!("hostile: honest datasets compacted in {alone_s:.1} s alone, {beside_s:.1} s beside a hostile one");
    for dataset in alone.iter().chain(&beside) {
        ensure!(events_for("compaction.failed", dataset)?.is_empty(), "{dataset}: a run failed");
        let failed_messages = d1(&format!("SELECT count(*) AS n FROM quarantined_segments WHERE dataset_id = '{dataset}'"))?;
        ensure_eq!(failed_messages[0]["n"], 0, "{dataset}: nothing of it set aside");
    }
    // The hostile dataset's pages were quarantined, not retried into the dead-letter queue.
    ensure!(events_for("compaction.failed", &hostile)?.is_empty(), "the hostile dataset's runs quarantined, never failed");
    let quarantined = d1(&format!("SELECT count(*) AS n FROM quarantined_segments WHERE dataset_id = '{hostile}'"))?;
    ensure_eq!(quarantined[0]["n"], 2, "both garbled segments set aside");
    Ok(())
}

fn rate_limits() -> TestResult {
    // sanitize-state: 10 a minute per user, counted before anything else is read. 25 requests:
    // should they straddle the limiter's minute, one of its windows still holds more than 10.
    let (_, token) = new_user(json!({}))?;
    let mut answers = Vec::new();
    for _ in 0..25 {
        let req = stack()
            .http
            .post(format!("{}/api/sanitize-state", stack().url))
            .bearer_auth(&token)
            .json(&json!({ "datasetId": unique_dataset() }));
        let response = fetch(req)?;
        answers.push((response.status().as_u16(), response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned)));
    }
    ensure!(answers[..10].iter().all(|(s, _)| *s != 429), "{answers:?}");
    ensure!(answers.iter().any(|(s, _)| *s == 429), "{answers:?}");
    ensure!(answers.iter().filter(|(s, _)| *s == 429).all(|(_, r)| r.as_deref() == Some("60")), "{answers:?}");
    // New datasets: 10 a minute per user; a dataset of the user's own is not new.
    let (_, token) = new_user(json!({}))?;
    let f = small_fragment(2600);
    let statuses: Vec<u16> = (0..25)
        .map(|_| handshake_at(&upload_url(), &token, &client_handshake(&unique_dataset(), PERIOD, &f)).map(|(s, _)| s))
        .collect::<Result<_, _>>()?;
    ensure!(statuses[..10].iter().all(|&s| s == 200), "{statuses:?}");
    ensure!(statuses.contains(&429) && statuses.iter().all(|&s| s == 200 || s == 429), "{statuses:?}");
    // Another user is not limited by this one.
    let (_, other) = new_user(json!({}))?;
    let (status, body) = handshake_at(&upload_url(), &other, &client_handshake(&unique_dataset(), PERIOD, &f))?;
    ensure_eq!(status, 200, "{body}");
    Ok(())
}
