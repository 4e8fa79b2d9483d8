//! `GET /health`: whether this Worker can reach everything it depends on, and whether the
//! compaction Worker answers behind its service binding. 200 when all hold, 503 otherwise.

use serde::Deserialize;
use serde_json::{Value, json};
use worker::{Env, Request, Response, Result, RouteContext};

use fusou_edge::bindings;

use crate::http;

#[derive(Deserialize)]
struct Migration {
    name: String,
}

pub async fn handle(_req: Request, ctx: RouteContext<()>) -> Result<Response> {
    let env = &ctx.env;
    let checks = json!({
        "d1": outcome(d1_migrations(env).await),
        "r2": outcome(r2(env).await),
        "queue": outcome(env.queue(bindings::COMPACTION_QUEUE).map(|_| json!("bound"))),
        "compaction": outcome(compaction_worker(env).await),
    });
    let healthy = checks
        .as_object()
        .is_some_and(|c| c.values().all(|v| v["ok"] == true));
    http::json(
        if healthy { 200 } else { 503 },
        &json!({
            "service": "fusou-upload",
            "version": env!("CARGO_PKG_VERSION"),
            "ok": healthy,
            "checks": checks,
        }),
    )
}

fn outcome(result: Result<Value>) -> Value {
    match result {
        Ok(detail) => json!({ "ok": true, "detail": detail }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

/// The D1 migrations applied, in order: proves the database is bound and migrated.
async fn d1_migrations(env: &Env) -> Result<Value> {
    let rows = env
        .d1(bindings::BATTLE_INDEX_DB)?
        .prepare("SELECT name FROM d1_migrations ORDER BY id")
        .all()
        .await?
        .results::<Migration>()?;
    if rows.is_empty() {
        return Err("no D1 migrations applied".into());
    }
    Ok(json!(rows.into_iter().map(|m| m.name).collect::<Vec<_>>()))
}

async fn r2(env: &Env) -> Result<Value> {
    // A HEAD of a key that never exists: a round trip to the bucket that reads nothing.
    env.bucket(bindings::BATTLE_DATA_BUCKET)?
        .head("health/probe")
        .await?;
    Ok(json!("reachable"))
}

async fn compaction_worker(env: &Env) -> Result<Value> {
    let mut response = env
        .service(bindings::COMPACTION_SERVICE)?
        .fetch("https://fusou-compaction/health", None)
        .await?;
    let body: Value = response.json().await?;
    if response.status_code() != 200 {
        return Err(format!("compaction worker answered {}: {body}", response.status_code()).into());
    }
    Ok(body)
}
