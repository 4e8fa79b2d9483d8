//! The HTTP surface: PostgREST under `/rest/v1/`, Auth's JWK set and a development token
//! endpoint under `/auth/v1/`, and `/health`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::{self, Pool};
use crate::error::ApiError;
use crate::keys::{Caller, Keys, now};
use crate::query::QueryParams;
use crate::schema::SchemaCache;
use crate::sql::{self, Resolution};

pub(crate) struct AppState {
    pub pool: Pool,
    pub schema: SchemaCache,
    pub keys: Keys,
    /// How the API the services call behaves: normally, or as a Supabase that hangs or is slow.
    pub fault: std::sync::RwLock<Fault>,
}

/// A simulated failure of the API the services call (REST and the key set), for tests:
/// `PUT /__fault` with the secret key. `/health`, the development sign-in and `/__fault` itself
/// are never affected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Fault {
    #[default]
    Normal,
    /// Accepts every request and never answers.
    Hang,
    /// Answers every request after `delayMs`.
    Slow {
        #[serde(rename = "delayMs")]
        delay_ms: u64,
    },
}

type Shared = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/auth/v1/.well-known/jwks.json", get(jwks))
        .route("/rest/v1/{table}", get(rest).post(rest).patch(rest).delete(rest))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), faulty));
    Router::new()
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
        .route("/auth/v1/dev/token", post(dev_token))
        .route("/__fault", axum::routing::put(set_fault))
        .merge(api)
        .fallback(|| async { ApiError::pgrst(404, "PGRST125", "Invalid path specified in request URL") })
        .with_state(state)
}

/// Applies the simulated fault, if any, before the request is served.
async fn faulty(State(state): Shared, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let fault = *state.fault.read().unwrap_or_else(|e| e.into_inner());
    match fault {
        Fault::Normal => {}
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Slow { delay_ms } => tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await,
    }
    next.run(req).await
}

async fn set_fault(State(state): Shared, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    state.keys.require_secret(header_str(&headers, "apikey"), header_str(&headers, "authorization"))?;
    let fault: Fault = serde_json::from_slice(&body).map_err(|e| ApiError::pgrst(400, "PGRST102", e.to_string()))?;
    *state.fault.write().unwrap_or_else(|e| e.into_inner()) = fault;
    println!("supabase-local: fault {fault:?}");
    Ok(Json(json!({ "fault": format!("{fault:?}") })).into_response())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    state.keys.caller(header_str(headers, "apikey"), header_str(headers, "authorization"))
}

async fn jwks(State(state): Shared) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=600")], Json(state.keys.jwks())).into_response()
}

/// What a development token should say; everything is optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: Option<Uuid>,
    email: Option<String>,
    /// Seconds from now; negative makes an already expired token.
    expires_in: Option<i64>,
    /// Claims to add or override (`iss`, `aud`, …), to test how services refuse bad tokens.
    claims: Option<serde_json::Map<String, Value>>,
}

/// Signs a user in without a password: makes (or keeps) the user in `auth.users` and answers
/// as Supabase's `/auth/v1/token` does. As in Supabase, an email names one user: signing in
/// with it again (without `sub`) gives the same user id, so a token minted later still owns the
/// datasets of an earlier one. Development only, and only with the secret key.
async fn dev_token(State(state): Shared, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    state.keys.require_secret(header_str(&headers, "apikey"), header_str(&headers, "authorization"))?;
    let req: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::pgrst(400, "PGRST102", e.to_string()))?
    };
    let expires_in = req.expires_in.unwrap_or(3600);
    let iat = now();
    let exp = iat.saturating_add_signed(expires_in);

    let pg = |e: tokio_postgres::Error| ApiError::from_postgres(&e, true);
    let mut client = state.pool.get().await;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT set_config('role', 'service_role', true)", &[]).await.map_err(pg)?;
    let known = match (&req.sub, &req.email) {
        (None, Some(email)) => {
            // Two first sign-ins with one email must not make two users.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[email]).await.map_err(pg)?;
            let row =
                tx.query_opt("SELECT id::text FROM auth.users WHERE email = $1 ORDER BY created_at LIMIT 1", &[email]).await.map_err(pg)?;
            // A uuid column's text always parses.
            row.and_then(|r| r.get::<_, String>(0).parse::<Uuid>().ok())
        }
        _ => None,
    };
    let id = req.sub.or(known).unwrap_or_else(Uuid::new_v4);
    let email = req.email.unwrap_or_else(|| format!("{}@fusou.local", &id.simple().to_string()[..8]));
    tx.execute("INSERT INTO auth.users (id, email) VALUES ($1::text::uuid, $2) ON CONFLICT (id) DO NOTHING", &[&id.to_string(), &email])
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    drop(client);

    let mut claims = json!({
        "iss": state.keys.issuer,
        "sub": id,
        "aud": "authenticated",
        "exp": exp,
        "iat": iat,
        "email": email,
        "role": "authenticated",
        "aal": "aal1",
        "session_id": Uuid::new_v4(),
        "is_anonymous": false,
    });
    if let (Some(extra), Some(map)) = (req.claims, claims.as_object_mut()) {
        map.extend(extra);
    }
    let token = state.keys.signing.sign(&claims).map_err(|e| ApiError::pgrst(500, "PGRST000", e.to_string()))?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "expires_at": exp,
        "user": { "id": id, "email": email, "aud": "authenticated", "role": "authenticated" },
    }))
    .into_response())
}

/// `Prefer` header values that matter here.
struct Prefer {
    representation: bool,
    resolution: Resolution,
}

fn prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer { representation: false, resolution: Resolution::Error };
    for value in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',').map(str::trim) {
            match item {
                "return=representation" => p.representation = true,
                "resolution=merge-duplicates" => p.resolution = Resolution::Merge,
                "resolution=ignore-duplicates" => p.resolution = Resolution::Ignore,
                _ => {}
            }
        }
    }
    p
}

/// The body's rows and the columns they name (the `columns` parameter, or every key in order
/// of first appearance).
fn rows_and_columns(body: &[u8], q: &QueryParams, many: bool) -> Result<(Value, Vec<String>), ApiError> {
    let bad = |m: String| ApiError::pgrst(400, "PGRST102", m);
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("Empty or invalid json: {e}")))?;
    let objects: Vec<&serde_json::Map<String, Value>> = match &value {
        Value::Object(o) => vec![o],
        Value::Array(items) if many => {
            items.iter().map(|v| v.as_object().ok_or_else(|| bad("All object keys must match".into()))).collect::<Result<_, _>>()?
        }
        _ => return Err(bad("the body must be a JSON object".into())),
    };
    let columns = match &q.columns {
        Some(c) => c.clone(),
        None => {
            let mut cols: Vec<String> = Vec::new();
            for key in objects.iter().flat_map(|o| o.keys()) {
                if !cols.contains(key) {
                    cols.push(key.clone());
                }
            }
            cols
        }
    };
    let rows = match value {
        Value::Array(_) => value,
        single => Value::Array(vec![single]),
    };
    Ok((rows, columns))
}

async fn rest(
    State(state): Shared,
    method: Method,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let table = state.schema.table(&table)?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let q = QueryParams::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let singular = header_str(&headers, "accept").is_some_and(|a| a.contains("application/vnd.pgrst.object+json"));
    let prefer = prefer(&headers);

    let (stmt, status, with_body) = match method {
        Method::GET => (sql::select(table, &q)?, StatusCode::OK, true),
        Method::POST => {
            let (rows, columns) = rows_and_columns(&body, &q, true)?;
            let stmt = sql::insert(table, &q, &columns, rows.to_string(), prefer.resolution)?;
            (stmt, StatusCode::CREATED, prefer.representation)
        }
        Method::PATCH => {
            let (rows, columns) = rows_and_columns(&body, &q, false)?;
            let stmt = sql::update(table, &q, &columns, rows[0].to_string())?;
            let status = if prefer.representation { StatusCode::OK } else { StatusCode::NO_CONTENT };
            (stmt, status, prefer.representation)
        }
        Method::DELETE => {
            let status = if prefer.representation { StatusCode::OK } else { StatusCode::NO_CONTENT };
            (sql::delete(table, &q)?, status, prefer.representation)
        }
        _ => return Err(ApiError::pgrst(405, "PGRST117", format!("Unsupported HTTP method: {method}"))),
    };

    let rows = db::run(&state.pool, &caller, &stmt, singular).await?;
    let range = if rows.count == 0 { "*/*".to_string() } else { format!("0-{}/*", rows.count - 1) };
    if !with_body {
        return Ok((status, [(header::CONTENT_RANGE, range)]).into_response());
    }
    let body = if singular {
        let mut all: Vec<Value> = serde_json::from_str(&rows.json).unwrap_or_default();
        all.pop().unwrap_or(Value::Null).to_string()
    } else {
        rows.json
    };
    let content_type = if singular { "application/vnd.pgrst.object+json; charset=utf-8" } else { "application/json; charset=utf-8" };
    Ok((status, [(header::CONTENT_TYPE, content_type.to_string()), (header::CONTENT_RANGE, range)], body).into_response())
}
