//! The FUSOU upload service: the HTTP edge of the pipeline.
//!
//! One `fetch` entry point builds the route table; every route answers under `/` and `/api/`
//! (the FUSOU client's endpoint setting uses `/api/battle-data/upload`). The handlers are thin:
//! decisions live in `fusou-core`, this crate reads bindings and maps results to HTTP.

mod bindings;
mod health;
mod http;

use worker::{Context, Env, Request, Response, Result, Router, event};

/// Registers `handler` for `GET` under both the bare and the `/api` prefix.
macro_rules! get_both {
    ($router:expr, $path:literal, $handler:expr) => {
        $router
            .get_async($path, $handler)
            .get_async(concat!("/api", $path), $handler)
    };
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    if req.method() == worker::Method::Options {
        return http::preflight();
    }
    let router = get_both!(Router::new(), "/health", health::handle)
        .or_else_any_method_async("/", |_, _| async { http::not_found() })
        .or_else_any_method_async("/*path", |_, _| async { http::not_found() });
    let response = match router.run(req, env).await {
        // The router answers a known path with another method in plain text: keep errors JSON.
        Ok(r) if r.status_code() == 405 => http::error(405, "method not allowed for this route")?,
        Ok(r) => r,
        Err(e) => http::internal(&e)?,
    };
    http::with_cors(response)
}
