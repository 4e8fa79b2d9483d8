//! The FUSOU upload service: the HTTP edge of the pipeline.
//!
//! One `fetch` entry point matches the route table ([`ROUTES`], also checked against
//! `openapi.json` by a test); every route answers under `/` and `/api/` (the FUSOU client's
//! endpoint setting uses `/api/battle-data/upload`). The Worker's settings and bindings are read
//! once per request ([`context::Ctx`]); each handler gets them with the matched route and
//! answers `Result<Response, ApiError>`, which `http::respond` turns into the answer and its log
//! line, with the request's own execution time in a `Server-Timing: cpu;dur=<ms>` header (see
//! `fusou_core::measure::Busy`: under `wrangler dev` it is the Worker's CPU time; deployed, the
//! clock stands still while code runs and it reads about 0). Decisions live in `fusou-core`,
//! I/O helpers in `fusou-edge`.

mod auth;
mod context;
mod crypto;
mod http;
mod pipeline;
mod rate;
mod router;
mod routes;

use fusou_core::measure::Busy;
use fusou_edge::WorkerClock;
use worker::{Context, Env, Request, Response, Result, ScheduleContext, ScheduledEvent, event};

use crate::context::Ctx;
use crate::http::ApiError;
use crate::router::{Call, Matched};

/// Declares every route once: the table [`ROUTES`] and the dispatch to its handler.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route as (method, path), paths with `:param` segments.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        async fn dispatch(req: Request, ctx: &Ctx, method: &str, call: &Call) -> std::result::Result<Response, ApiError> {
            match (method, call.route) {
                $( (stringify!($method), $path) => $handler(req, ctx, call).await, )*
                _ => Err(ApiError::not_found("no such route")),
            }
        }
    };
}

routes! {
    POST "/battle-data/upload" => routes::upload::handle,
    POST "/compact/upload" => routes::direct::handle,
    POST "/sanitize-state" => routes::sanitize::handle,
    POST "/trigger-scheduled" => routes::trigger::handle,
    POST "/compact/replay" => routes::operator::replay,
    POST "/compact/cleanup" => routes::operator::cleanup,
    GET "/compact/status" => routes::operator::status,
    POST "/compact/sql" => routes::operator::sql,
    GET "/battle-data/datasets/:id" => routes::datasets::show,
    GET "/battle-data/datasets/:id/outputs" => routes::datasets::outputs,
    GET "/battle-data/datasets/:id/outputs/download" => routes::datasets::download,
    GET "/iceberg/v1/config" => routes::lake::config,
    GET "/iceberg/v1/namespaces" => routes::lake::namespaces,
    GET "/iceberg/v1/namespaces/:namespace" => routes::lake::show_namespace,
    GET "/iceberg/v1/namespaces/:namespace/tables" => routes::lake::tables,
    GET "/iceberg/v1/namespaces/:namespace/tables/:table" => routes::lake::load_table,
    GET "/lake/object" => routes::lake::get_object,
    GET "/health" => routes::health::handle,
    GET "/openapi.json" => routes::openapi::handle,
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, context: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let method = req.method().to_string();
    if method == "OPTIONS" {
        return http::preflight();
    }
    let path = req.path();
    let response = match router::find(ROUTES, &method, &path) {
        // The catalog answers what it does not serve in its own protocol: writes refused.
        Matched::NotFound | Matched::WrongMethod if let Some(catalog) = router::under(&path, "/iceberg") => {
            match fusou_lake::rest::not_served(&method, catalog) {
                (status, Some(body)) => http::json(status, &body)?,
                (status, None) => Response::empty()?.with_status(status),
            }
        }
        Matched::NotFound => http::error(404, "no such route")?,
        Matched::WrongMethod => http::error(405, "method not allowed for this route")?,
        Matched::Route(call) => {
            let handle = async {
                match Ctx::load(env, Some(context)) {
                    Ok(ctx) => (dispatch(req, &ctx, &method, &call).await, Some(ctx.meter.operations())),
                    Err(e) => (Err(e), None),
                }
            };
            // The request's own execution time, without its waits on R2, D1 and the rest.
            let ((outcome, operations), busy_ms) = Busy::new(handle, &WorkerClock).await;
            // What it will be billed for (the compaction message it may send after answering
            // is 3 queue operations more).
            if let Some(operations) = operations.filter(|o| o.subrequests > 0) {
                fusou_edge::log::info("request.operations", serde_json::json!({ "route": call.route, "operations": operations }));
            }
            let mut response = http::respond(call.route, outcome)?;
            response.headers_mut().set("server-timing", &format!("cpu;dur={busy_ms}"))?;
            response
        }
    };
    http::with_cors(response)
}

/// The schedule (see `[triggers]` in wrangler.toml) runs what `POST /trigger-scheduled` runs.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_error_panic_hook::set_once();
    let outcome = match Ctx::load(env, None) {
        Ok(ctx) => routes::trigger::enqueue_due(&ctx, "cron").await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(report) => fusou_edge::log::info("cron.triggered", serde_json::json!({ "route": "cron", "report": report })),
        Err(e) => fusou_edge::log::error("cron.failed", serde_json::json!({ "route": "cron", "error": e.message })),
    }
}

#[cfg(test)]
mod tests;
