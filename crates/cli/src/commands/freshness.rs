//! `load --freshness`: how long after the last upload's answer every uploaded row is in the
//! open tables, read as a reader reads them: each table's current snapshot's `total-records`,
//! through the Iceberg REST catalog, until it holds the rows before the load plus the rows the
//! load uploaded. Then the snapshots the load caused per table, and the compare-and-swap
//! attempts of each (`fusou.attempt` in its summary).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One table as the catalog answers it: its current snapshot's records, and every snapshot's
/// time and attempt.
#[derive(Debug, Default, Clone)]
pub(crate) struct TableState {
    pub records: i64,
    /// (timestamp ms, attempt) of each kept snapshot.
    pub snapshots: Vec<(i64, u32)>,
}

/// Every client table's state (a table not made yet is absent).
pub(crate) async fn tables(url: &str, key: &str) -> Result<BTreeMap<String, TableState>, String> {
    let http = reqwest::Client::new();
    let mut states = BTreeMap::new();
    for table in fusou_synth::client_tables() {
        let name = table.name.as_str();
        let resp = http
            .get(format!("{url}/api/iceberg/v1/namespaces/fusou/tables/{name}"))
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            return Err(format!("the catalog answered {} for table {name}", resp.status()));
        }
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        let metadata = &body["metadata"];
        let current = metadata["current-snapshot-id"].as_i64();
        let mut state = TableState::default();
        for s in metadata["snapshots"].as_array().into_iter().flatten() {
            let summary = &s["summary"];
            if s["snapshot-id"].as_i64() == current {
                state.records = summary["total-records"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            let attempt = summary["fusou.attempt"].as_str().and_then(|v| v.parse().ok()).unwrap_or(1);
            state.snapshots.push((s["timestamp-ms"].as_i64().unwrap_or(0), attempt));
        }
        states.insert(name.to_owned(), state);
    }
    Ok(states)
}

/// Waits until every table holds `before` plus `uploaded` rows, then prints the figures.
/// `since`: when the last upload answered; `started_ms`: when the load began (wall clock).
pub(crate) async fn measure(
    url: &str,
    key: &str,
    before: &BTreeMap<String, TableState>,
    uploaded: &BTreeMap<String, i64>,
    since: Instant,
    started_ms: i64,
    timeout: Duration,
) -> Result<(), String> {
    let expected = |table: &str| before.get(table).map_or(0, |s| s.records) + uploaded.get(table).copied().unwrap_or(0);
    let mut reached: BTreeMap<String, Duration> = BTreeMap::new();
    let mut last = BTreeMap::new();
    while reached.len() < uploaded.len() {
        if since.elapsed() > timeout {
            let missing: Vec<&String> = uploaded.keys().filter(|t| !reached.contains_key(*t)).collect();
            return Err(format!("after {timeout:?} these tables still lack rows: {missing:?}"));
        }
        last = tables(url, key).await?;
        for (table, state) in &last {
            if uploaded.contains_key(table) && !reached.contains_key(table) && state.records >= expected(table) {
                reached.insert(table.clone(), since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut times: Vec<Duration> = reached.values().copied().collect();
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64();
    println!(
        "freshness (last upload's answer → every row in its table, by total-records): p50 {:.1} s  max {:.1} s  over {} tables",
        at(0.5),
        at(1.0),
        times.len()
    );
    let mut added: Vec<usize> = Vec::new();
    let mut attempts: Vec<u32> = Vec::new();
    for state in last.values() {
        let new: Vec<&(i64, u32)> = state.snapshots.iter().filter(|(ts, _)| *ts >= started_ms).collect();
        added.push(new.len());
        attempts.extend(new.iter().map(|(_, a)| *a));
    }
    added.sort_unstable();
    let mean = attempts.iter().map(|a| *a as f64).sum::<f64>() / attempts.len().max(1) as f64;
    println!(
        "snapshots added per table: median {}  max {}; compare-and-swap attempts per snapshot: mean {mean:.2}  max {}",
        added.get(added.len() / 2).copied().unwrap_or(0),
        added.last().copied().unwrap_or(0),
        attempts.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}
