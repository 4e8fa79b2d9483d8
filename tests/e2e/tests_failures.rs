//! Compaction when things go wrong, end to end: a message delivered three times, two runs at
//! once for one dataset, a crash injected after each step, a segment that does not decode.
//! Each ends with exactly the uploaded rows, once each. And a queue message that is no
//! compaction message: recorded as failed, never retried.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("failures::the_same_message_three_times_compacts_once", same_message_three_times),
    ("failures::two_runs_at_once_give_one_set_of_outputs", two_runs_at_once),
    ("failures::a_crash_after_each_step_resumes_to_the_exact_rows", crash_after_each_step),
    ("failures::a_corrupt_segment_is_quarantined_and_the_rest_compacted", corrupt_segment),
    ("failures::operator_routes_refuse_bad_requests", operator_routes_refuse_bad_requests),
    ("failures::an_invalid_message_is_recorded_failed_and_never_retried", invalid_message),
    ("failures::a_fragment_that_kills_every_run_is_quarantined_and_its_dataset_compacted", poisonous_fragment),
    ("failures::a_burst_of_requests_is_one_run_that_works_and_the_rest_skipped", burst_of_requests),
];

const PERIOD: &str = "2025-11-20";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A dataset with one fragment compacted, then `more` fragments uploaded while a lease held by
/// nobody keeps their own realtime messages from running (they end as skipped). The lease is
/// then released: the `more` fragments wait for whatever message the test sends.
fn held_back(token: &str, seed: u64, more: usize) -> Result<(String, Vec<fusou_synth::Fragment>), String> {
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..=more as u64).map(|i| small_fragment(seed + i)).collect();
    upload(token, &dataset, PERIOD, &fragments[0])?;
    wait_until_compacted(&dataset, token, 150)?;
    let until = now_ms() + 600_000;
    d1(&format!("UPDATE datasets SET lease_run_id = 'e2e-hold', lease_expires_at = {until} WHERE id = '{dataset}'"))?;
    let skipped_before = events_for("compaction.skipped", &dataset)?.len();
    for f in &fragments[1..] {
        upload(token, &dataset, PERIOD, f)?;
    }
    wait_for_events("compaction.skipped", &dataset, skipped_before + more, 120)?;
    d1(&format!("UPDATE datasets SET lease_run_id = NULL, lease_expires_at = NULL WHERE id = '{dataset}'"))?;
    Ok((dataset, fragments))
}

fn message(dataset: &str, at: &str) -> Value {
    json!({ "datasetId": dataset, "triggeredAt": at, "priority": "manual", "metricId": uuid::Uuid::new_v4() })
}

/// Sends each message to the queue through the operator's replay route, all at once.
fn replay_all(messages: &[Value]) -> Result<Vec<String>, String> {
    let answers: Vec<Result<(u16, Value), String>> = std::thread::scope(|scope| {
        let sent: Vec<_> = messages.iter().map(|m| scope.spawn(move || send(operator(Method::POST, "/compact/replay").json(m)))).collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut run_ids = Vec::new();
    for answer in answers {
        let (status, body) = answer?;
        ensure_eq!(status, 202, "{body}");
        run_ids.push(body["runId"].as_str().ok_or("no runId")?.to_owned());
    }
    Ok(run_ids)
}

/// The run ids of the dataset's outputs (keys end `{run}-{n}.parquet`), with the first run's.
fn output_runs(outputs: &[Value]) -> Vec<String> {
    let mut runs: Vec<String> = outputs
        .iter()
        .filter_map(|o| o["key"].as_str())
        .filter_map(|k| k.rsplit('/').next())
        .filter_map(|name| name.rsplit_once('-').map(|(run, _)| run.to_owned()))
        .collect();
    runs.sort();
    runs.dedup();
    runs
}

fn same_message_three_times() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let (dataset, fragments) = held_back(&token, 1100, 4)?;
    let m = message(&dataset, "2026-11-28T00:00:00Z");
    let run_ids = replay_all(&[m.clone(), m.clone(), m])?;
    ensure!(run_ids.iter().all(|r| r == &run_ids[0]), "one message, one run id: {run_ids:?}");
    wait_until_compacted(&dataset, &token, 180)?;
    let (outputs, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    let runs = output_runs(&outputs);
    ensure_eq!(runs.len(), 2, "the first upload's run and the replayed one: {runs:?}");
    ensure!(runs.contains(&run_ids[0]), "{runs:?} lacks the replayed run {}", run_ids[0]);
    let received = consumer_messages()?.into_iter().filter(|m| m["datasetId"] == dataset.as_str() && m["priority"] == "manual").count();
    ensure_eq!(received, 3, "the consumer got the message three times");
    Ok(())
}

fn two_runs_at_once() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let (dataset, fragments) = held_back(&token, 1200, 4)?;
    let run_ids = replay_all(&[message(&dataset, "2026-11-28T00:00:01Z"), message(&dataset, "2026-11-28T00:00:02Z")])?;
    ensure!(run_ids[0] != run_ids[1], "two messages, two runs");
    wait_until_compacted(&dataset, &token, 180)?;
    let (outputs, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    let runs = output_runs(&outputs);
    let replayed: Vec<_> = runs.iter().filter(|r| run_ids.contains(r)).collect();
    ensure_eq!(replayed.len(), 1, "one set of outputs for the four fragments: {runs:?}");
    Ok(())
}

fn crash_after_each_step() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    d1("CREATE TABLE IF NOT EXISTS fault_injections (dataset_id TEXT NOT NULL, step TEXT NOT NULL)")?;
    let steps =
        ["validate-dataset", "list-fragments", "list-small-files", "read-fragments", "stage-outputs", "merge-0-31", "update-metadata"];
    // One dataset per step, all at once: the retries' delays overlap.
    let cases: Vec<(String, &str, Vec<fusou_synth::Fragment>)> = steps
        .iter()
        .enumerate()
        .map(|(i, step)| (unique_dataset(), *step, (0..2).map(|j| small_fragment(1300 + 10 * i as u64 + j)).collect()))
        .collect();
    for (dataset, step, _) in &cases {
        d1(&format!("INSERT INTO fault_injections VALUES ('{dataset}', '{step}')"))?;
    }
    for (dataset, _, fragments) in &cases {
        for f in fragments {
            upload(&token, dataset, PERIOD, f)?;
        }
    }
    for (dataset, step, fragments) in &cases {
        wait_until_compacted(dataset, &token, 240).map_err(|e| format!("crash after {step}: {e}"))?;
        let failed = events_for("compaction.failed", dataset)?;
        ensure!(!failed.is_empty(), "crash after {step}: the fault never fired");
        ensure!(failed[0]["error"].as_str().unwrap_or_default().contains(&format!("interrupted after step {step}")), "{failed:?}");
        let (_, mut got) = compacted_rows(dataset, &token)?;
        ensure_same_rows(&mut got, fragments, &[]).map_err(|e| format!("crash after {step}: {e}"))?;
    }
    // This test's faults only: other tests running beside it inject their own.
    let ids: Vec<String> = cases.iter().map(|(dataset, _, _)| format!("'{dataset}'")).collect();
    let left = d1(&format!("SELECT count(*) AS n FROM fault_injections WHERE dataset_id IN ({})", ids.join(",")))?;
    ensure_eq!(left[0]["n"], 0, "every fault fired once");
    Ok(())
}

fn corrupt_segment() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let mut fragments: Vec<_> = (0..3).map(|i| small_fragment(1400 + i)).collect();
    // Fragment 1's `battle` segment keeps a valid footer (the upload's check passes) over a
    // first page header of garbage: only decoding it fails.
    fragments[1].garble_first_page("battle");
    let mut keys = Vec::new();
    for f in &fragments {
        keys.push(upload(&token, &dataset, PERIOD, f)?["key"].as_str().unwrap_or_default().to_owned());
    }
    wait_until_compacted(&dataset, &token, 150)?;
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[(1, "battle")])?;

    let recorded = d1(&format!("SELECT fragment_key, table_name, error FROM quarantined_segments WHERE dataset_id = '{dataset}'"))?;
    ensure_eq!(recorded.len(), 1, "{recorded:?}");
    ensure_eq!(recorded[0]["table_name"], "battle");
    ensure!(keys.contains(&recorded[0]["fragment_key"].as_str().unwrap_or_default().to_owned()), "{recorded:?} names an uploaded fragment");
    let metrics = pg_json(
        &[],
        &format!(
            "SELECT error_message FROM public.processing_metrics WHERE dataset_id = '{dataset}' AND status = 'success' AND error_message LIKE 'quarantined%'"
        ),
    )?;
    ensure_eq!(metrics.as_array().map(Vec::len), Some(1), "reported in the run's metrics: {metrics}");
    Ok(())
}

fn operator_routes_refuse_bad_requests() -> TestResult {
    let s = stack();
    for path in ["/compact/replay", "/compact/cleanup"] {
        let (status, body) = send(s.http.post(format!("{}/api{path}", s.url)).json(&json!({})))?;
        ensure_eq!(status, 401, "{path} without the operator secret: {body}");
        ensure!(body["error"].is_string(), "{body}");
    }
    let bad = [
        json!({ "datasetId": "ds", "priority": "manual" }),
        json!({ "datasetId": "../x", "triggeredAt": "2026-11-28T00:00:00Z", "priority": "manual" }),
        json!({ "datasetId": "ds", "triggeredAt": "2026-11-28T00:00:00Z", "priority": "manual", "extra": 1 }),
    ];
    for body in bad {
        let (status, answer) = send(operator(Method::POST, "/compact/replay").json(&body))?;
        ensure_eq!(status, 400, "{body}: {answer}");
        ensure!(answer["error"].is_string(), "{answer}");
    }
    let (status, answer) = send(operator(Method::POST, "/compact/cleanup").json(&json!({ "retentionDays": 1 })))?;
    ensure_eq!(status, 400, "{answer}");
    let (status, answer) = send(operator(Method::POST, "/compact/cleanup").body("[1]"))?;
    ensure_eq!(status, 400, "{answer}");
    Ok(())
}

fn invalid_message() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    upload(&token, &dataset, PERIOD, &small_fragment(1700))?;
    wait_until_compacted(&dataset, &token, 150)?;
    // A metrics row a producer made, and a message naming it whose priority no version knows.
    let metric = uuid::Uuid::new_v4().to_string();
    let (status, row) = send(
        rest_as_service(Method::POST, "processing_metrics")
            .json(&json!({ "id": metric, "dataset_id": dataset, "priority": "manual", "status": "queued" })),
    )?;
    ensure_eq!(status, 201, "{row}");
    let body = json!({ "datasetId": dataset, "triggeredAt": "2026-11-28T00:00:00Z", "priority": "whenever", "metricId": metric });
    let (status, answer) = send(operator(Method::POST, "/compact/replay?unchecked").json(&body))?;
    ensure_eq!(status, 202, "{answer}");

    let failed = format!("SELECT status::text, error_step, error_message FROM public.processing_metrics WHERE id = '{metric}'");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let row = loop {
        let row = pg_json(&[], &failed)?;
        if row[0]["status"] == "failure" {
            break row;
        }
        ensure!(std::time::Instant::now() < deadline, "the metrics row was not marked failed: {row}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    ensure_eq!(row[0]["error_step"], "decode-message", "{row}");
    ensure!(row[0]["error_message"].as_str().is_some_and(|m| m.contains("whenever")), "the error names what is wrong: {row}");
    // Acknowledged: a retry would come back after 10 s and log it again.
    std::thread::sleep(std::time::Duration::from_secs(15));
    let logged = log_events("message.invalid")?.into_iter().filter(|e| e["metricId"] == metric.as_str()).count();
    ensure_eq!(logged, 1, "logged once, not retried");
    Ok(())
}

fn poisonous_fragment() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let (dataset, fragments) = held_back(&token, 1800, 3)?;
    // Fragment 2 kills every invocation that reads it, as an out-of-memory trap would.
    let hash = fusou_core::upload::ContentHash::of(&fragments[2].bytes);
    let rows = d1(&format!("SELECT key FROM battle_files WHERE dataset_id = '{dataset}' AND content_hash = '{}'", hash.as_str()))?;
    let poison = rows.first().and_then(|r| r["key"].as_str()).ok_or("fragment 2's key")?.to_owned();
    d1("CREATE TABLE IF NOT EXISTS fault_injections (dataset_id TEXT NOT NULL, step TEXT NOT NULL)")?;
    d1(&format!("INSERT INTO fault_injections VALUES ('{dataset}', 'poison:{poison}')"))?;
    // Another dataset's message, sent at the same moment (the consumer takes them in one batch):
    // it must not fail with the poisoned one.
    let (healthy, healthy_fragments) = held_back(&token, 1850, 2)?;
    replay_all(&[message(&dataset, "2026-11-28T00:00:03Z"), message(&healthy, "2026-11-28T00:00:03Z")])?;
    wait_until_compacted(&healthy, &token, 120)?;
    let (_, mut got) = compacted_rows(&healthy, &token)?;
    ensure_same_rows(&mut got, &healthy_fragments, &[])?;
    ensure!(events_for("compaction.failed", &healthy)?.is_empty(), "the healthy dataset's run never failed");

    // The run gives up reading the three together, each is then taken alone, and the poisonous
    // one is quarantined whole: nothing pending, nothing retried forever.
    wait_until_compacted(&dataset, &token, 300)?;
    wait_for_events("compaction.isolated", &dataset, 1, 10)?;
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    let left_out: Vec<(usize, &str)> = fusou_synth::client_tables().iter().map(|t| (2, t.name.as_str())).collect();
    ensure_same_rows(&mut got, &fragments, &left_out)?;

    // The owner sees it, with the reason, on the status route.
    let (status, state) = send(stack().http.get(format!("{}/api/battle-data/datasets/{dataset}", stack().url)).bearer_auth(&token))?;
    ensure_eq!(status, 200, "{state}");
    ensure_eq!(state["quarantined"]["segments"], 1, "{state}");
    let q = &state["quarantined"]["latest"][0];
    ensure_eq!((q["fragment_key"].as_str(), q["table_name"].as_str()), (Some(poison.as_str()), Some("*")), "{state}");
    ensure!(q["error"].as_str().is_some_and(|e| e.contains("died or failed")), "{q}");
    d1(&format!("DELETE FROM fault_injections WHERE dataset_id = '{dataset}'"))?;
    Ok(())
}

fn burst_of_requests() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let (dataset, fragments) = held_back(&token, 1950, 3)?;
    let messages: Vec<Value> = (0..5).map(|i| message(&dataset, &format!("2026-11-28T00:01:0{i}Z"))).collect();
    let ids: Vec<String> = messages.iter().map(|m| format!("'{}'", m["metricId"].as_str().unwrap_or_default())).collect();
    replay_all(&messages)?;
    wait_until_compacted(&dataset, &token, 120)?;
    // Every request's row is finished: one run did the work, the others say they were coalesced.
    let sql = format!(
        "SELECT status::text, error_message FROM public.processing_metrics WHERE id IN ({}) ORDER BY status::text DESC",
        ids.join(",")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rows = loop {
        let rows = pg_json(&[], &sql)?;
        let finished =
            rows.as_array().is_some_and(|r| r.len() == 5 && r.iter().all(|m| m["status"] != "running" && m["status"] != "queued"));
        if finished || std::time::Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let statuses: Vec<&str> = rows.as_array().into_iter().flatten().filter_map(|m| m["status"].as_str()).collect();
    ensure_eq!(statuses, vec!["success", "skipped", "skipped", "skipped", "skipped"], "{rows}");
    ensure!(
        rows.as_array().into_iter().flatten().skip(1).all(|m| m["error_message"].as_str().is_some_and(|e| e.starts_with("coalesced"))),
        "{rows}"
    );
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    Ok(())
}
