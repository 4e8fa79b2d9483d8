//! Tests that change the whole stack, so they run alone, after the others: a Supabase outage, a
//! Supabase that hangs and then is slow, and a clean-up pass with no retention (which deletes
//! every compacted fragment's object).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::*;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("outage::supabase_down_dead_letters_and_the_schedule_completes", supabase_down),
    ("outage::supabase_hanging_then_slow_loses_no_upload_and_compaction_completes", supabase_hangs_then_slows),
    ("outage::cleanup_deletes_orphans_and_compacted_fragments", cleanup),
];

const PERIOD: &str = "2025-11-25";

/// The Supabase stand-in, made unreachable (it closes its listening socket) until dropped.
struct Outage;

impl Outage {
    fn begin() -> Result<Self, String> {
        signal_supabase("-USR1")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while supabase_answers() {
            ensure!(Instant::now() < deadline, "Supabase still answers after SIGUSR1");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Outage)
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        let _ = signal_supabase("-USR2");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !supabase_answers() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn signal_supabase(signal: &str) -> TestResult {
    let pid = std::fs::read_to_string(format!("{}/run/supabase.pid", stack().state)).map_err(|e| format!("the stand-in's pid: {e}"))?;
    let status = std::process::Command::new("kill").args([signal, pid.trim()]).status().map_err(|e| e.to_string())?;
    ensure!(status.success(), "kill {signal} {pid}");
    Ok(())
}

/// The stand-in made to hang or be slow (`PUT /__fault`) until dropped.
struct Fault;

impl Fault {
    fn set(mode: serde_json::Value) -> Result<Self, String> {
        put_fault(&mode)?;
        Ok(Fault)
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        let _ = put_fault(&json!({ "mode": "normal" }));
    }
}

fn put_fault(mode: &serde_json::Value) -> TestResult {
    let s = stack();
    let (status, body) =
        send(s.http.put(format!("{}/__fault", s.supabase_url)).header("apikey", &s.service_key).bearer_auth(&s.service_key).json(mode))?;
    ensure_eq!(status, 200, "{body}");
    Ok(())
}

/// Both phases of the client's upload, each of which must answer within `limit` (well below
/// the remote-call timeout: an upload that waited on Supabase would take at least that long).
/// Answers how long the two took.
fn upload_within(token: &str, dataset: &str, f: &fusou_synth::Fragment, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let (status, answer) =
        send(stack().http.post(upload_url()).bearer_auth(token).json(&client_handshake(dataset, PERIOD, f)).timeout(limit))?;
    ensure_eq!(status, 200, "handshake: {answer}");
    let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?;
    let (status, stored) = send(stack().http.post(url).bearer_auth(token).body(f.bytes.clone()).timeout(limit))?;
    ensure_eq!(status, 200, "upload: {stored}");
    Ok(started.elapsed())
}

fn supabase_hangs_then_slows() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..5).map(|i| small_fragment(1900 + i)).collect();
    // A first upload while all is well (the Worker caches the token keys, as in production).
    upload(&token, &dataset, PERIOD, &fragments[0])?;
    wait_until_compacted(&dataset, &token, 150)?;
    // An upload that waited on Supabase could not answer before REMOTE_TIMEOUT_MS (the test
    // stack's, or the default 5 s); one that does not wait answers in milliseconds.
    let timeout_ms: u64 = std::env::var("FUSOU_REMOTE_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let limit = Duration::from_millis(timeout_ms * 3 / 4);

    {
        let _hanging = Fault::set(json!({ "mode": "hang" }))?;
        for f in &fragments[1..3] {
            let took = upload_within(&token, &dataset, f, limit)?;
            println!("upload while Supabase hangs: {} ms", took.as_millis());
        }
        // Compaction cannot reach the catalog: it gives up on the call, fails the run cleanly
        // (nothing written, lease released) and the message is retried.
        let failed = wait_for_events("compaction.failed", &dataset, 1, 180)?;
        ensure!(failed[0]["error"].as_str().is_some_and(|e| e.contains("did not answer")), "{failed:?}");
        let state = d1(&format!("SELECT compaction_needed FROM datasets WHERE id = '{dataset}'"))?;
        ensure_eq!(state, vec![json!({ "compaction_needed": 1 })], "still due");
    }
    // Supabase answers again: the retried message completes the run.
    wait_until_compacted(&dataset, &token, 240)?;

    {
        let _slow = Fault::set(json!({ "mode": "slow", "delayMs": 1500 }))?;
        for f in &fragments[3..] {
            let took = upload_within(&token, &dataset, f, limit)?;
            println!("upload while Supabase takes 1.5 s an answer: {} ms", took.as_millis());
        }
        wait_until_compacted(&dataset, &token, 240)?;
    }
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    // No upload is lost.
    let pending = d1(&format!("SELECT count(*) AS n FROM battle_files WHERE dataset_id = '{dataset}' AND compacted_at IS NULL"))?;
    ensure_eq!(pending[0]["n"], 0);
    Ok(())
}

fn supabase_answers() -> bool {
    stack().http.get(format!("{}/health", stack().supabase_url)).timeout(Duration::from_secs(2)).send().is_ok()
}

fn supabase_down() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..3).map(|i| small_fragment(1500 + i)).collect();
    // A first upload while all is well (the Worker caches the token keys, as in production).
    upload(&token, &dataset, PERIOD, &fragments[0])?;
    wait_until_compacted(&dataset, &token, 150)?;

    {
        let _outage = Outage::begin()?;
        // Uploads still answer 200: the fragment is stored; the catalog is caught up later.
        for f in &fragments[1..] {
            upload(&token, &dataset, PERIOD, f)?;
        }
        // Each message fails at validate-dataset, is retried, and is dead-lettered.
        wait_for_events("message.dead_lettered", &dataset, 2, 420)?;
        let failed = events_for("compaction.failed", &dataset)?;
        ensure!(failed.iter().all(|e| e["error"].as_str().unwrap_or_default().contains("validate-dataset")), "{failed:?}");
        let state = d1(&format!("SELECT compaction_needed, lease_run_id FROM datasets WHERE id = '{dataset}'"))?;
        ensure_eq!(state, vec![json!({ "compaction_needed": 1, "lease_run_id": null })], "still pending, lease free");
        let pending = d1(&format!("SELECT count(*) AS n FROM battle_files WHERE dataset_id = '{dataset}' AND compacted_at IS NULL"))?;
        ensure_eq!(pending[0]["n"], 2);
    }

    // Supabase is back: the schedule (the cron, fired through wrangler's test endpoint) completes it.
    let resp = stack().http.get(format!("{}/__scheduled?cron=0+2+*+*+*", stack().url)).send().map_err(|e| e.to_string())?;
    ensure_eq!(resp.status().as_u16(), 200, "the scheduled handler");
    wait_until_compacted(&dataset, &token, 180)?;
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    let metrics = pg_json(
        &[],
        &format!(
            "SELECT priority::text FROM public.processing_metrics WHERE dataset_id = '{dataset}' AND status = 'success' AND output_files > 0 ORDER BY finished_at"
        ),
    )?;
    ensure_eq!(metrics.as_array().and_then(|m| m.last()).map(|m| m["priority"].clone()), Some(json!("scheduled")), "{metrics}");
    Ok(())
}

fn cleanup() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..2).map(|i| small_fragment(1600 + i)).collect();
    let mut keys = Vec::new();
    for f in &fragments {
        keys.push(upload(&token, &dataset, PERIOD, f)?["key"].as_str().unwrap_or_default().to_owned());
    }
    wait_until_compacted(&dataset, &token, 150)?;
    for key in &keys {
        ensure!(r2_get(key)?.is_some(), "{key} is kept until the clean-up");
    }

    // An orphan: an output some run staged and wrote but never committed.
    let orphan = format!("battle_compacted/{PERIOD}/{dataset}/battle/deadrun-0.parquet");
    r2_put(&orphan, b"PAR1 never committed")?;
    d1(&format!("INSERT INTO staged_outputs (key, dataset_id, run_id, staged_at) VALUES ('{orphan}', '{dataset}', 'deadrun', 0)"))?;

    let (status, report) =
        send(operator(Method::POST, "/compact/cleanup").json(&json!({ "retentionSeconds": 0, "orphanGraceSeconds": 0 })))?;
    ensure_eq!(status, 200, "{report}");
    ensure!(report["fragmentsPurged"].as_u64().unwrap_or(0) >= 2, "{report}");
    ensure!(report["runsReaped"].as_u64().unwrap_or(0) >= 1, "{report}");
    ensure!(r2_get(&orphan)?.is_none(), "the orphan is deleted");
    for key in &keys {
        ensure!(r2_get(key)?.is_none(), "{key} is deleted after the retention");
    }
    let purged = d1(&format!("SELECT count(*) AS n FROM battle_files WHERE dataset_id = '{dataset}' AND purged_at IS NOT NULL"))?;
    ensure_eq!(purged[0]["n"], 2);
    let reaped = d1("SELECT count(*) AS n FROM reaped_runs WHERE run_id = 'deadrun'")?;
    ensure_eq!(reaped[0]["n"], 1);
    // The dataset's finished run is forgotten, and fenced off by name.
    ensure!(report["runsForgotten"].as_u64().unwrap_or(0) >= 1, "{report}");
    let runs = d1(&format!(
        "SELECT count(*) AS n FROM reaped_runs WHERE dataset_id = '{dataset}' \
        AND run_id IN (SELECT run_id FROM compacted_files WHERE dataset_id = '{dataset}')"
    ))?;
    ensure!(runs[0]["n"].as_u64().unwrap_or(0) >= 1, "{runs:?}");
    let steps = d1(&format!(
        "SELECT count(*) AS n FROM workflow_steps WHERE run_id IN \
        (SELECT run_id FROM compacted_files WHERE dataset_id = '{dataset}')"
    ))?;
    ensure_eq!(steps[0]["n"], 0, "its checkpoints are gone");

    // The compacted data is untouched, and the same bytes uploaded again are still refused.
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    let (status, answer) = handshake_at(&upload_url(), &token, &client_handshake(&dataset, PERIOD, &fragments[0]))?;
    ensure_eq!(status, 409, "{answer}");
    Ok(())
}
