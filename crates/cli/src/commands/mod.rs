//! One function per command.

pub(crate) mod compact;
pub(crate) mod freshness;
pub(crate) mod lake;
pub(crate) mod upload;
pub(crate) mod verify;

use std::path::Path;

use fusou_synth::{FragmentSpec, fragment, fragment_of_size};
use serde_json::{Value, json};

/// Where a generated fragment and its offsets are written.
pub(crate) fn fragment_paths(dir: &Path, n: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join(format!("{n:06}.bin")), dir.join(format!("{n:06}.offsets.json")))
}

/// What generated fragments look like.
pub(crate) enum Shape {
    /// As the client's: every table, 1 to `max_rows` rows each.
    Client { max_rows: u64 },
    /// About `bytes` each, shared by `tables` tables.
    Sized { bytes: u64, tables: usize },
}

pub(crate) fn generate(out: &Path, count: u64, seed: u64, shape: Shape, segments: bool) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let (mut bytes, mut rows) = (0u64, 0u64);
    for n in 0..count {
        let seed = seed.wrapping_add(n);
        let f = match shape {
            Shape::Client { max_rows } => fragment(&FragmentSpec { seed, rows: 1..=max_rows.max(1), include_empty_tables: false }),
            Shape::Sized { bytes, tables } => fragment_of_size(seed, tables, bytes),
        };
        let (bin, offsets) = fragment_paths(out, n);
        std::fs::write(&bin, &f.bytes).map_err(|e| format!("{}: {e}", bin.display()))?;
        std::fs::write(&offsets, f.table_offsets_string()).map_err(|e| format!("{}: {e}", offsets.display()))?;
        bytes += f.bytes.len() as u64;
        rows += f.total_rows();
        for s in f.segments.iter().filter(|_| segments) {
            let dir = out.join("segments").join(s.table.as_str());
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(format!("{n:06}.parquet"));
            std::fs::write(&path, &s.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    println!("wrote {count} fragments to {} ({bytes} bytes, {rows} rows)", out.display());
    Ok(())
}

pub(crate) async fn json_answer(resp: Result<reqwest::Response, reqwest::Error>, what: &str) -> Result<Value, String> {
    let resp = resp.map_err(|e| format!("{what}: cannot reach the service: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{what}: the service answered {status}: {}", body["error"].as_str().or(body["message"].as_str()).unwrap_or("")))
    }
}

fn is_local(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or("");
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// The local stand-in's secret key from `.local/secrets.env`, searched upwards from here.
fn local_service_key() -> Option<String> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(".local/secrets.env")) {
            return text.lines().find_map(|l| l.strip_prefix("SUPABASE_SERVICE_KEY=").map(str::to_owned));
        }
        if !dir.pop() {
            return None;
        }
    }
}

pub(crate) async fn token(supabase_url: &str, service_key: Option<String>, email: &str) -> Result<(), String> {
    if !is_local(supabase_url) {
        return Err(format!("{supabase_url} is not the local stand-in: sign in through your Supabase project instead"));
    }
    let key =
        service_key.or_else(local_service_key).ok_or("no SUPABASE_SERVICE_KEY: set it, or run from the repository after scripts/dev.sh")?;
    let resp = reqwest::Client::new()
        .post(format!("{}/auth/v1/dev/token", supabase_url.trim_end_matches('/')))
        .header("apikey", &key)
        .bearer_auth(&key)
        .json(&json!({ "email": email, "expires_in": 86_400 }))
        .send()
        .await;
    let body = json_answer(resp, "minting a token").await?;
    println!("{}", body["access_token"].as_str().ok_or("no access_token in the answer")?);
    Ok(())
}

pub(crate) async fn status(url: &str, dataset: &str, token: &str) -> Result<(), String> {
    let resp = reqwest::Client::new().get(format!("{url}/api/battle-data/datasets/{dataset}")).bearer_auth(token).send().await;
    let body = json_answer(resp, "status").await?;
    println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    Ok(())
}

async fn dataset_state(http: &reqwest::Client, url: &str, dataset: &str, token: &str) -> Result<Value, String> {
    json_answer(http.get(format!("{url}/api/battle-data/datasets/{dataset}")).bearer_auth(token).send().await, "status").await
}

/// Polls the dataset's state once a second until nothing is pending and no run holds it.
pub(crate) async fn wait(url: &str, dataset: &str, token: &str, compact: bool, timeout_secs: u64) -> Result<(), String> {
    let http = reqwest::Client::new();
    if compact {
        let resp = http.post(format!("{url}/api/sanitize-state")).bearer_auth(token).json(&json!({ "datasetId": dataset })).send().await;
        json_answer(resp, "requesting a compaction").await?;
    }
    let started = std::time::Instant::now();
    loop {
        let state = dataset_state(&http, url, dataset, token).await?;
        let pending = state["pending"]["fragments"].as_u64().ok_or("no pending count in the dataset's state")?;
        if pending == 0 && state["compaction"]["inProgress"] == false {
            eprintln!("{dataset}: nothing pending after {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if started.elapsed().as_secs() >= timeout_secs {
            return Err(format!("{dataset}: {pending} fragments still pending after {timeout_secs} s"));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Prints the dataset's recent runs: their metrics rows, newest first.
pub(crate) async fn runs(url: &str, dataset: &str, token: &str, json: bool) -> Result<(), String> {
    let state = dataset_state(&reqwest::Client::new(), url, dataset, token).await?;
    let runs = state["runs"].as_array().ok_or("the runs are not available (Supabase did not answer)")?;
    for run in runs {
        if json {
            println!("{run}");
            continue;
        }
        let number = |key: &str| run[key].as_u64().map_or("-".to_owned(), |n| n.to_string());
        println!(
            "{:<10} {:<9} {:>6} fragments {:>10} bytes in {:>6} files {:>10} bytes out {:>7} ms  {}",
            run["status"].as_str().unwrap_or("?"),
            run["priority"].as_str().unwrap_or("?"),
            number("input_fragments"),
            number("input_bytes"),
            number("output_files"),
            number("output_bytes"),
            run["step_durations_ms"]["total"].as_u64().map_or("-".to_owned(), |n| n.to_string()),
            run["error_message"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// Pages through a dataset's compacted outputs and downloads each one, handing `each` the
/// output as the listing describes it and its bytes.
pub(crate) async fn each_output(
    http: &reqwest::Client,
    url: &str,
    dataset: &str,
    token: &str,
    mut each: impl FnMut(&Value, bytes::Bytes) -> Result<(), String>,
) -> Result<(), String> {
    let mut after = String::new();
    loop {
        let resp = http
            .get(format!("{url}/api/battle-data/datasets/{dataset}/outputs"))
            .query(&[("limit", "1000"), ("after", after.as_str())])
            .bearer_auth(token)
            .send()
            .await;
        let page = json_answer(resp, "listing outputs").await?;
        for output in page["outputs"].as_array().into_iter().flatten() {
            let key = output["key"].as_str().ok_or("an output without a key")?;
            let data = http
                .get(format!("{url}/api/battle-data/datasets/{dataset}/outputs/download"))
                .query(&[("key", key)])
                .bearer_auth(token)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("downloading {key}: {e}"))?
                .bytes()
                .await
                .map_err(|e| format!("downloading {key}: {e}"))?;
            each(output, data)?;
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return Ok(()),
        }
    }
}

pub(crate) async fn fetch(url: &str, dataset: &str, token: &str, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let (mut files, mut bytes) = (0u64, 0u64);
    each_output(&reqwest::Client::new(), url, dataset, token, |output, data| {
        let key = output["key"].as_str().unwrap_or_default();
        let local = out.join(key.replace('/', "__"));
        std::fs::write(&local, &data).map_err(|e| format!("{}: {e}", local.display()))?;
        files += 1;
        bytes += data.len() as u64;
        Ok(())
    })
    .await?;
    println!("fetched {files} files ({bytes} bytes) into {}", out.display());
    Ok(())
}

pub(crate) async fn trigger(url: &str, operator_secret: &str) -> Result<(), String> {
    let resp = reqwest::Client::new().post(format!("{url}/api/trigger-scheduled")).bearer_auth(operator_secret).send().await;
    let body = json_answer(resp, "trigger").await?;
    println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    Ok(())
}
