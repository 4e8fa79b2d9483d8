//! The FUSOU upload service: the HTTP edge of the pipeline.
//!
//! One `fetch` entry point builds the route table; every route answers under `/` and `/api/`
//! (the FUSOU client's endpoint setting uses `/api/battle-data/upload`). Handlers are thin:
//! decisions live in `fusou-core`, I/O helpers in `fusou-edge`, and this crate maps results to
//! HTTP. The route table is also data ([`ROUTES`]), checked against `openapi.json` by a test.

mod auth;
mod context;
mod http;
mod pipeline;
mod routes;

use worker::{Context, Env, Request, Response, Result, Router, ScheduleContext, ScheduledEvent, event};

/// Declares every route once: registers it under `/` and `/api`, and lists it in [`ROUTES`].
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route as (method, path), paths in the router's `:param` syntax.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn router() -> Router<'static, ()> {
            let router = Router::new();
            $( let router = routes!(@register router, $method, $path, $handler); )*
            router
        }
    };
    (@register $r:expr, GET, $path:literal, $h:path) => {
        $r.get_async($path, $h).get_async(concat!("/api", $path), $h)
    };
    (@register $r:expr, POST, $path:literal, $h:path) => {
        $r.post_async($path, $h).post_async(concat!("/api", $path), $h)
    };
}

routes! {
    POST "/battle-data/upload" => routes::upload::handle,
    POST "/compact/upload" => routes::direct::handle,
    POST "/sanitize-state" => routes::sanitize::handle,
    POST "/trigger-scheduled" => routes::trigger::handle,
    POST "/compact/replay" => routes::operator::replay,
    POST "/compact/cleanup" => routes::operator::cleanup,
    GET "/battle-data/datasets/:id" => routes::datasets::show,
    GET "/battle-data/datasets/:id/outputs" => routes::datasets::outputs,
    GET "/battle-data/datasets/:id/outputs/download" => routes::datasets::download,
    GET "/health" => routes::health::handle,
    GET "/openapi.json" => routes::openapi::handle,
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    if req.method() == worker::Method::Options {
        return http::preflight();
    }
    let router = router()
        .or_else_any_method_async("/", |_, _| async { http::error(404, "no such route") })
        .or_else_any_method_async("/*path", |_, _| async { http::error(404, "no such route") });
    let response = match router.run(req, env).await {
        // The router answers a known path with another method in plain text: keep errors JSON.
        Ok(r) if r.status_code() == 405 => http::error(405, "method not allowed for this route")?,
        Ok(r) => r,
        Err(e) => http::respond("unhandled", Err(e.into()))?,
    };
    http::with_cors(response)
}

/// The schedule (see `[triggers]` in wrangler.toml) runs what `POST /trigger-scheduled` runs.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    console_error_panic_hook::set_once();
    let outcome = match context::Ctx::load(env) {
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
