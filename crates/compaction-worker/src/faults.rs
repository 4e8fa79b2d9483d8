//! Fault injection for the end-to-end tests. Only when the variable `FAULT_INJECTION` is `on`
//! (no deployed config sets it; the test stack does), a row of the D1 table
//! `fault_injections (dataset_id, step)`, which only the tests create, makes the next run of
//! that dataset stop right after that step, as an invocation that crashed there would. Each row
//! is used once.

use fusou_core::ids::DatasetId;
use fusou_edge::d1;
use worker::{D1Database, Env};

fn enabled(env: &Env) -> bool {
    env.var("FAULT_INJECTION").is_ok_and(|v| v.to_string() == "on")
}

#[derive(serde::Deserialize)]
struct Fault {
    step: String,
}

/// The step after which this run of `dataset` must stop, if a fault is armed.
pub async fn armed(env: &Env, db: &D1Database, dataset: &DatasetId) -> Option<String> {
    if !enabled(env) {
        return None;
    }
    let sql = "SELECT step FROM fault_injections WHERE dataset_id = ?1 ORDER BY step LIMIT 1";
    // No table: no fault.
    let fault: Option<Fault> = d1::first(db, sql, &[dataset.as_str().into()]).await.ok().flatten();
    fault.map(|f| f.step)
}

/// Uses up the fault that fired.
pub async fn fired(db: &D1Database, dataset: &DatasetId, step: &str) {
    let sql = "DELETE FROM fault_injections WHERE dataset_id = ?1 AND step = ?2";
    let _ = d1::run(db, sql, &[dataset.as_str().into(), step.into()]).await;
}
