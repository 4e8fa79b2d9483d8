//! The stack itself: both Workers answer, D1 is migrated, routes and errors have their shape.

use reqwest::Method;

use crate::support::{Test, TestResult, operator, send, stack};
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("stack::health_sees_d1_r2_queue_and_the_compaction_worker", health_sees_everything),
    ("stack::every_route_answers_under_api_too", api_prefix),
    ("stack::unknown_routes_and_methods_are_json_errors", unknown_routes),
    ("stack::cors_preflight_is_204", cors_preflight),
];

/// The D1 migrations the repository holds, in order. The checkout is found when the test runs
/// (cargo sets `CARGO_MANIFEST_DIR` then too): a shared target directory may hold a binary
/// built from another checkout of the same sources.
fn migration_files() -> Vec<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let mut names: Vec<String> = std::fs::read_dir(format!("{manifest}/../../migrations"))
        .expect("the migrations directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

fn health_sees_everything() -> TestResult {
    // Without the operator secret: only that the Worker runs, nothing about what it reaches.
    let (status, body) = send(stack().http.get(format!("{}/health", stack().url)))?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body, serde_json::json!({ "ok": true }));
    let (status, body) = send(stack().http.get(format!("{}/health", stack().url)).bearer_auth("not-the-secret"))?;
    ensure_eq!(status, 403, "{body}");
    let (status, body) = send(operator(Method::GET, "/health"))?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body["ok"], true);
    let checks = &body["checks"];
    for name in ["d1", "r2", "queue", "compaction"] {
        ensure_eq!(checks[name]["ok"], true, "check {name}: {body}");
    }
    let applied: Vec<String> = serde_json::from_value(checks["d1"]["detail"].clone()).map_err(|e| e.to_string())?;
    ensure_eq!(applied, migration_files(), "D1 migrations applied");
    // The compaction Worker answered itself, through the service binding, and sees the same D1.
    ensure_eq!(checks["compaction"]["detail"]["service"], "fusou-compaction");
    ensure_eq!(checks["compaction"]["detail"]["d1Migrations"], migration_files().len());
    Ok(())
}

fn api_prefix() -> TestResult {
    for path in ["/health", "/api/health"] {
        let s = stack();
        let (status, body) = send(s.http.get(format!("{}{path}", s.url)).bearer_auth(&s.operator_secret))?;
        ensure_eq!(status, 200, "{path}: {body}");
        ensure_eq!(body["service"], "fusou-upload", "{path}");
    }
    Ok(())
}

fn unknown_routes() -> TestResult {
    for (method, path, expected) in
        [(Method::GET, "/", 404), (Method::GET, "/nope", 404), (Method::POST, "/api/nope/deeper", 404), (Method::DELETE, "/health", 405)]
    {
        let resp = stack().http.request(method.clone(), format!("{}{path}", stack().url)).send().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: serde_json::Value = resp.json().map_err(|e| format!("{method} {path}: not JSON: {e}"))?;
        ensure_eq!(status, expected, "{method} {path}");
        ensure!(content_type.starts_with("application/json"), "{method} {path}: {content_type}");
        ensure!(body["error"].is_string(), "{method} {path}: {body}");
    }
    Ok(())
}

fn cors_preflight() -> TestResult {
    let resp = stack()
        .http
        .request(Method::OPTIONS, format!("{}/api/battle-data/upload", stack().url))
        .header("origin", "https://example.org")
        .header("access-control-request-method", "POST")
        .send()
        .map_err(|e| e.to_string())?;
    ensure_eq!(resp.status().as_u16(), 204);
    let h = resp.headers();
    ensure_eq!(h.get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("*"));
    let allowed = h.get("access-control-allow-headers").and_then(|v| v.to_str().ok()).unwrap_or("");
    ensure!(allowed.contains("authorization") && allowed.contains("content-type"), "allow-headers: {allowed}");
    Ok(())
}
