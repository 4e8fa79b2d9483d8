//! `GET /health`. Anyone gets `{"ok": true}`: the Worker runs (no subrequest is made, so the
//! probe costs nothing and tells nothing). With the operator secret, it checks that this
//! Worker reaches everything it depends on and that the compaction Worker answers behind its
//! service binding, with the details: 200 when all hold, 503 otherwise.

use fusou_core::index;
use fusou_edge::remote::Service;
use serde_json::{Value, json};
use worker::{Request, Response, Result};

use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::router::Call;

pub(crate) async fn handle(req: Request, ctx: &Ctx, _call: &Call) -> std::result::Result<Response, ApiError> {
    if req.headers().get("authorization")?.is_none() {
        return Ok(http::json(200, &json!({ "ok": true }))?);
    }
    crate::auth::operator(&req, ctx)?;
    let checks = json!({
        "d1": outcome(d1_migrations(ctx).await),
        "r2": outcome(r2(ctx).await),
        "queue": outcome(ctx.queue().map(|_| json!("bound"))),
        "compaction": outcome(compaction_worker(ctx).await),
    });
    let healthy = checks.as_object().is_some_and(|c| c.values().all(|v| v["ok"] == true));
    Ok(http::json(
        if healthy { 200 } else { 503 },
        &json!({
            "service": "fusou-upload",
            "version": env!("CARGO_PKG_VERSION"),
            "ok": healthy,
            "checks": checks,
        }),
    )?)
}

fn outcome(result: Result<Value>) -> Value {
    match result {
        Ok(detail) => json!({ "ok": true, "detail": detail }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

/// The D1 migrations applied, in order: proves the database is bound and migrated.
async fn d1_migrations(ctx: &Ctx) -> Result<Value> {
    let rows: Vec<index::Migration> = ctx.db().map_err(|e| e.to_string())?.all(index::MIGRATIONS, &[]).await?;
    if rows.is_empty() {
        return Err("no D1 migrations applied".into());
    }
    Ok(json!(rows.into_iter().map(|m| m.name).collect::<Vec<_>>()))
}

async fn r2(ctx: &Ctx) -> Result<Value> {
    // A HEAD of a key that never exists: a round trip to the bucket that reads nothing.
    let bucket = ctx.bucket()?;
    ctx.remote.call(Service::R2, "a HEAD", bucket.head("health/probe")).await?;
    Ok(json!("reachable"))
}

async fn compaction_worker(ctx: &Ctx) -> Result<Value> {
    let service = ctx.compaction_service()?;
    let (status, body) = ctx
        .remote
        .call(Service::Worker, "its health check", async {
            let mut response = service.fetch("https://fusou-compaction/health", None).await?;
            Ok::<_, worker::Error>((response.status_code(), response.json::<Value>().await?))
        })
        .await?;
    if status != 200 {
        return Err(format!("compaction worker answered {status}: {body}").into());
    }
    Ok(body)
}
