//! The upload service, driven exactly as the deployed FUSOU client drives it, and checked in
//! every store it writes: R2, D1, Supabase (through PostgreSQL) and the queue (as the consumer
//! received the message).

use serde_json::{Value, json};

use crate::support::*;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("upload::the_clients_two_phase_upload_reaches_every_store", client_upload),
    ("upload::the_same_bytes_again_are_409_in_either_phase", duplicate_upload),
    ("upload::operators_upload_one_parquet_file", direct_upload),
    ("upload::owners_see_their_dataset_and_repair_it", owner_routes),
    ("upload::the_operator_triggers_scheduled_compaction", trigger_scheduled),
    ("upload::phase_2_requests_racing_with_one_upload_url_lose_nothing", racing_phase_2),
    ("upload::a_body_sent_chunked_is_counted_and_stored", chunked_body),
];

fn sql_text(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn client_upload() -> TestResult {
    let (user, token) = new_user(json!({}))?;
    let dataset = uuid::Uuid::new_v4().to_string();
    let f = small_fragment(11);
    ensure!(f.offsets.len() >= 30, "a fragment of many segments");

    // Phase 1 as the client sends it: a dataset id read from a file, newline and all.
    let (status, answer) = handshake_at(&upload_url(), &token, &client_handshake(&format!("{dataset}\n"), "2025-11-05", &f))?;
    ensure_eq!(status, 200, "{answer}");
    let url = answer["uploadUrl"].as_str().ok_or("no uploadUrl")?;
    ensure!(url.starts_with(&format!("{}/api/battle-data/upload?token=", stack().url)), "uploadUrl {url}");
    let expires = chrono::DateTime::parse_from_rfc3339(answer["expiresAt"].as_str().ok_or("no expiresAt")?).map_err(|e| e.to_string())?;
    let lifetime = (expires.to_utc() - chrono::Utc::now()).num_seconds();
    ensure!((100..=125).contains(&lifetime), "expiresAt {expires} is {lifetime}s away");

    // Phase 2: the raw bytes.
    let (status, stored) = send_bytes(url, &token, f.bytes.clone())?;
    ensure_eq!(status, 200, "{stored}");
    ensure_eq!(stored["ok"], true);
    ensure_eq!(stored["size"], f.bytes.len());
    let key = stored["key"].as_str().ok_or("no key")?.to_owned();
    let prefix = format!("battle_data/{dataset}/port_table/");
    ensure!(key.starts_with(&prefix) && key.ends_with(".parquet"), "key {key}");
    let stamp = &key[prefix.len()..prefix.len() + 14];
    ensure!(stamp.bytes().all(|b| b.is_ascii_digit()) && key.as_bytes()[prefix.len() + 14] == b'-', "key {key}");
    let metric_id = stored["metricId"].as_str().ok_or("no metricId")?.to_owned();

    // R2 holds exactly the bytes.
    ensure_eq!(r2_get(&key)?.as_deref(), Some(f.bytes.as_slice()), "R2 object");

    // D1: the fragment row and the dataset, owned by the uploader and marked.
    let rows = d1(&format!("SELECT * FROM battle_files WHERE key = {}", sql_text(&key)))?;
    ensure_eq!(rows.len(), 1);
    let row = &rows[0];
    ensure_eq!(row["dataset_id"], dataset.as_str());
    ensure_eq!(row["table_name"], "port_table");
    ensure_eq!(row["period_tag"], "2025-11-05");
    ensure_eq!(row["size"], f.bytes.len());
    ensure_eq!(row["content_hash"], fusou_core::upload::ContentHash::of(&f.bytes).as_str());
    ensure_eq!(row["uploaded_by"], user.as_str());
    let offsets: Value = serde_json::from_str(row["table_offsets"].as_str().ok_or("offsets")?).map_err(|e| e.to_string())?;
    ensure_eq!(offsets, serde_json::to_value(&f.offsets).unwrap());
    // Marked for compaction, unless compaction (running beside this test) has already taken it.
    let ds = d1(&format!(
        "SELECT owner_id, compaction_needed, (SELECT count(*) FROM battle_files WHERE dataset_id = datasets.id AND compacted_at IS NULL) AS pending FROM datasets WHERE id = {}",
        sql_text(&dataset)
    ))?;
    ensure_eq!(ds.len(), 1);
    ensure_eq!(ds[0]["owner_id"], user.as_str());
    ensure_eq!(ds[0]["compaction_needed"], ds[0]["pending"], "marked exactly while work is pending: {ds:?}");

    // Supabase: the dataset and a queued metrics row with the message's id.
    let metrics = pg_json(
        &[],
        &format!(
            "SELECT status::text, priority::text, table_name, period_tag, dataset_id FROM public.processing_metrics WHERE id = '{metric_id}'"
        ),
    )?;
    ensure_eq!(metrics.as_array().map(Vec::len), Some(1), "{metrics}");
    ensure_eq!(
        json!({ "priority": metrics[0]["priority"], "table_name": metrics[0]["table_name"], "period_tag": metrics[0]["period_tag"], "dataset_id": metrics[0]["dataset_id"] }),
        json!({ "priority": "realtime", "table_name": "port_table", "period_tag": "2025-11-05", "dataset_id": dataset })
    );
    // Queued by the upload; later states are the compaction's, running beside this test.
    // (or skipped: a scheduled run, requested by a test beside this one, took the fragment first).
    ensure!(["queued", "running", "success", "skipped"].contains(&metrics[0]["status"].as_str().unwrap_or("")), "{metrics}");
    // The dataset's row, marked until a compaction (running beside this test) has taken it.
    let owner = pg_json(&[], &format!("SELECT owner_id::text, compaction_needed FROM public.datasets WHERE id = {}", sql_text(&dataset)))?;
    ensure_eq!(owner[0]["owner_id"], json!(user), "{owner}");
    if owner[0]["compaction_needed"] != json!(true) {
        let status = pg_json(&[], &format!("SELECT status::text FROM public.processing_metrics WHERE id = '{metric_id}'"))?;
        ensure!(
            ["success", "skipped"].contains(&status[0]["status"].as_str().unwrap_or("")),
            "unmarked before compaction: {owner} {status}"
        );
    }

    // The queue: the message as the consumer received it.
    let message = wait_for_message(&metric_id, 90)?;
    ensure_eq!(message["datasetId"], dataset.as_str());
    ensure_eq!(message["priority"], "realtime");
    ensure_eq!(message["table"], "port_table");
    ensure_eq!(message["periodTag"], "2025-11-05");
    ensure!(message["triggeredAt"].is_string(), "{message}");
    ensure!(message.get("bucketKey").is_none(), "{message}");

    // The route answers without the /api prefix too.
    let g = small_fragment(12);
    let (status, answer) =
        handshake_at(&format!("{}/battle-data/upload", stack().url), &token, &client_handshake(&dataset, "2025-11-05", &g))?;
    ensure_eq!(status, 200, "{answer}");
    let url = answer["uploadUrl"].as_str().ok_or("no uploadUrl")?;
    ensure!(url.starts_with(&format!("{}/battle-data/upload?token=", stack().url)), "{url}");
    let (status, stored) = send_bytes(url, &token, g.bytes.clone())?;
    ensure_eq!(status, 200, "{stored}");
    Ok(())
}

fn duplicate_upload() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let f = small_fragment(21);
    upload(&token, &dataset, "2025-11-06", &f)?;
    let (status, body) = handshake_at(&upload_url(), &token, &client_handshake(&dataset, "2025-11-06", &f))?;
    ensure_eq!(status, 409, "phase 1: {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.contains("already")), "{body}");
    let rows = d1(&format!("SELECT count(*) AS n FROM battle_files WHERE dataset_id = {}", sql_text(&dataset)))?;
    ensure_eq!(rows[0]["n"], 1);
    Ok(())
}

/// A multipart body with text fields and one file.
pub(crate) fn multipart(fields: &[(&str, &str)], file: Option<(&str, Vec<u8>)>) -> reqwest::blocking::multipart::Form {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some((name, bytes)) = file {
        form = form.part("file", reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()));
    }
    form
}

fn direct_upload() -> TestResult {
    let (user, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let f = small_fragment(31);
    let segment = f.segments.iter().find(|s| s.table.as_str() == "battle").ok_or("battle")?;
    let (status, stored) = send(stack().http.post(format!("{}/compact/upload", stack().url)).bearer_auth(&token).multipart(multipart(
        &[("datasetId", &dataset), ("tableId", "battle"), ("periodTag", "2025-11-07")],
        Some(("whatever.bin", segment.bytes.clone())),
    )))?;
    ensure_eq!(status, 200, "{stored}");
    let key = stored["key"].as_str().ok_or("key")?;
    ensure!(key.starts_with(&format!("battle_data/{dataset}/battle/")), "{key}");
    ensure_eq!(r2_get(key)?.as_deref(), Some(segment.bytes.as_slice()));
    let rows = d1(&format!("SELECT table_name, period_tag, table_offsets, uploaded_by FROM battle_files WHERE key = {}", sql_text(key)))?;
    ensure_eq!(rows.len(), 1);
    ensure_eq!(rows[0]["uploaded_by"], user.as_str());
    let offsets: Value = serde_json::from_str(rows[0]["table_offsets"].as_str().ok_or("offsets")?).map_err(|e| e.to_string())?;
    ensure_eq!(
        offsets,
        json!([{ "table_name": "battle", "start_byte": 0, "byte_length": segment.bytes.len(), "format": "parquet", "num_rows": segment.batch.num_rows() }])
    );
    let metric_id = stored["metricId"].as_str().ok_or("metricId")?;
    let message = wait_for_message(metric_id, 90)?;
    ensure_eq!((message["table"].as_str(), message["periodTag"].as_str()), (Some("battle"), Some("2025-11-07")));
    Ok(())
}

fn owner_routes() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let (_, stranger) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let f = small_fragment(41);
    upload(&token, &dataset, "2025-11-08", &f)?;

    // The upload's metrics row is written after its answer (waitUntil): wait for its run to show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = send(stack().http.get(format!("{}/api/battle-data/datasets/{dataset}", stack().url)).bearer_auth(&token))?;
        let upload_run = body["runs"].as_array().is_some_and(|runs| runs.iter().any(|r| r["priority"] == "realtime"));
        if status != 200 || upload_run || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    ensure_eq!(status, 200, "{body}");
    // Compaction may already have taken the fragment: it is pending or compacted, never both.
    let pending = body["pending"]["fragments"].as_u64().ok_or("pending")?;
    let compacted = body["compacted"]["files"].as_u64().ok_or("compacted")?;
    ensure!((pending == 1 && compacted == 0) || (pending == 0 && compacted > 0), "{body}");
    if pending == 1 {
        ensure_eq!(body["pending"]["bytes"], f.bytes.len());
    }
    // The upload's run; a scheduled one may stand beside it (another test triggers the schedule).
    let runs = body["runs"].as_array().ok_or("runs")?;
    ensure!(runs.iter().filter(|r| r["priority"] == "realtime").count() == 1, "{body}");
    ensure!(runs.iter().all(|r| r["priority"] == "realtime" || r["priority"] == "scheduled"), "{body}");
    // A stranger's reads answer as for a dataset that does not exist: nothing tells them apart.
    let missing = unique_dataset();
    for route in ["", "/outputs", "/outputs/download?key=x"] {
        let (status, theirs) =
            send(stack().http.get(format!("{}/battle-data/datasets/{dataset}{route}", stack().url)).bearer_auth(&stranger))?;
        let (none_status, none) =
            send(stack().http.get(format!("{}/battle-data/datasets/{missing}{route}", stack().url)).bearer_auth(&stranger))?;
        ensure_eq!((status, none_status), (404, 404), "{route}: {theirs} / {none}");
        ensure_eq!(
            theirs["error"].as_str().map(|e| e.replace(&dataset, "ID")),
            none["error"].as_str().map(|e| e.replace(&missing, "ID")),
            "{route}"
        );
    }
    let (status, body) = send(stack().http.get(format!("{}/battle-data/datasets/{dataset}/outputs", stack().url)).bearer_auth(&token))?;
    // None yet, or (compaction ran beside this test) exactly this upload's rows.
    ensure_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().ok_or("outputs")?;
    let rows: u64 = outputs.iter().filter_map(|o| o["row_count"].as_u64()).sum();
    let uploaded: u64 = f.segments.iter().map(|s| s.batch.num_rows() as u64).sum();
    ensure!(outputs.is_empty() || rows == uploaded, "{rows} rows compacted of {uploaded}: {body}");

    let (status, body) =
        send(stack().http.post(format!("{}/sanitize-state", stack().url)).bearer_auth(&token).json(&json!({ "datasetId": dataset })))?;
    ensure_eq!(status, 200, "{body}");
    ensure!(body["pendingFragments"] == 1 || body["pendingFragments"] == 0, "{body}");
    ensure_eq!(body["compaction"]["enqueued"], true);
    let metric_id = body["compaction"]["metricId"].as_str().ok_or("metricId")?;
    let message = wait_for_message(metric_id, 90)?;
    ensure_eq!(message["priority"], "manual");
    let metrics = pg_json(&[], &format!("SELECT priority::text FROM public.processing_metrics WHERE id = '{metric_id}'"))?;
    ensure_eq!(metrics, json!([{ "priority": "manual" }]));
    Ok(())
}

fn trigger_scheduled() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    upload(&token, &dataset, "2025-11-09", &small_fragment(51))?;
    // Compaction may already have taken the upload: make the dataset due again for the schedule.
    d1(&format!(
        "UPDATE datasets SET compaction_needed = 1, lease_run_id = NULL, lease_expires_at = NULL WHERE id = {}",
        sql_text(&dataset)
    ))?;
    let (status, report) = send(stack().http.post(format!("{}/api/trigger-scheduled", stack().url)).bearer_auth(&stack().operator_secret))?;
    ensure_eq!(status, 200, "{report}");
    ensure!(report["enqueued"].as_u64().is_some_and(|n| n >= 1), "{report}");
    ensure_eq!(report["failed"], 0);
    // Our dataset got a scheduled request with its own metrics row.
    let rows = pg_json(
        &[],
        &format!("SELECT id::text FROM public.processing_metrics WHERE dataset_id = {} AND priority = 'scheduled'", sql_text(&dataset)),
    )?;
    let id = rows[0]["id"].as_str().ok_or("a scheduled metrics row")?;
    let message = wait_for_message(id, 90)?;
    ensure_eq!(message["priority"], "scheduled");
    ensure_eq!(message["datasetId"], dataset.as_str());
    Ok(())
}

fn racing_phase_2() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..3).map(|i| small_fragment(1700 + i)).collect();
    for f in &fragments {
        let (status, answer) = handshake_at(&upload_url(), &token, &client_handshake(&dataset, "2025-11-11", f))?;
        ensure_eq!(status, 200, "{answer}");
        let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?.to_owned();
        // A client retrying after a timeout sends the same body to the same URL: here eight at once.
        let answers: Vec<Result<(u16, Value), String>> = std::thread::scope(|scope| {
            let sent: Vec<_> = (0..8).map(|_| scope.spawn(|| send_bytes(&url, &token, f.bytes.clone()))).collect();
            sent.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
        let stored: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
        ensure_eq!(stored.len(), 1, "one request stores the bytes: {answers:?}");
        ensure!(answers.iter().all(|(s, _)| *s == 200 || *s == 409), "the others are told it is there: {answers:?}");
        let key = stored[0]["key"].as_str().ok_or("key")?;
        // The object the row points at is still there, whole.
        ensure!(r2_get(key)?.as_deref() == Some(f.bytes.as_slice()), "{key} is gone or changed");
    }
    wait_until_compacted(&dataset, &token, 150)?;
    let (_, mut got) = compacted_rows(&dataset, &token)?;
    ensure_same_rows(&mut got, &fragments, &[])?;
    Ok(())
}

fn chunked_body() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let f = small_fragment(1750);
    let (status, answer) = handshake_at(&upload_url(), &token, &client_handshake(&dataset, "2025-11-11", &f))?;
    ensure_eq!(status, 200, "{answer}");
    let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?;
    // No Content-Length: the service counts the body as it streams, and takes it whole.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(f.bytes.clone()));
    let (status, stored) = send(stack().http.post(url).bearer_auth(&token).header("content-type", "application/octet-stream").body(body))?;
    ensure_eq!(status, 200, "{stored}");
    let key = stored["key"].as_str().ok_or("key")?;
    ensure!(r2_get(key)?.as_deref() == Some(f.bytes.as_slice()), "{key}");
    Ok(())
}
