//! What every end-to-end test needs: the stack's addresses and keys, an HTTP client, users.

use std::sync::OnceLock;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

pub type TestResult = Result<(), String>;
pub type Test = fn() -> TestResult;

pub struct Stack {
    /// The upload Worker.
    pub url: String,
    pub supabase_url: String,
    pub service_key: String,
    pub publishable_key: String,
    /// The PostgreSQL behind the stand-in, as its owner.
    pub pg_url: String,
    pub http: Client,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through scripts/test.sh")
    })
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack {
        url: var("FUSOU_URL"),
        supabase_url: var("SUPABASE_URL"),
        service_key: var("SUPABASE_SERVICE_KEY"),
        publishable_key: var("SUPABASE_PUBLISHABLE_KEY"),
        pg_url: var("FUSOU_PG_URL"),
        http: Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("an HTTP client"),
    })
}

/// Fails a test with a message when `cond` does not hold.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Asserts equality, naming both sides and what was being checked.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {
        ensure_eq!($left, $right, "")
    };
    ($left:expr, $right:expr, $($ctx:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!(
                "{} == {} failed: {:?} != {:?} {}",
                stringify!($left), stringify!($right), l, r, format!($($ctx)+)
            ));
        }
    }};
}

/// Runs SQL on the PostgreSQL behind the stand-in, as its owner, in one transaction, after
/// `setup` statements (`SET ROLE …`).
pub fn pg_json(setup: &[&str], sql: &str) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&stack().pg_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        for s in setup {
            tx.batch_execute(s).await.map_err(|e| format!("{s}: {}", pg_message(&e)))?;
        }
        let wrapped = format!("SELECT coalesce(json_agg(_r), '[]')::text FROM ({sql}) _r");
        let row = tx.query_one(&wrapped, &[]).await.map_err(|e| format!("{sql}: {}", pg_message(&e)))?;
        let text: String = row.get(0);
        tx.rollback().await.map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    })
}

/// The server's own words for a database error (tokio-postgres displays only "db error").
fn pg_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// A response's status and JSON body (`Null` when the body is empty or not JSON).
pub fn send(req: RequestBuilder) -> Result<(u16, Value), String> {
    let resp: Response = req.send().map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A request to the Supabase REST API with the service key.
pub fn rest_as_service(method: reqwest::Method, path_and_query: &str) -> RequestBuilder {
    let s = stack();
    s.http
        .request(method, format!("{}/rest/v1/{path_and_query}", s.supabase_url))
        .header("apikey", &s.service_key)
        .bearer_auth(&s.service_key)
}

/// A request to the Supabase REST API as a signed-in user.
pub fn rest_as_user(token: &str, method: reqwest::Method, path_and_query: &str) -> RequestBuilder {
    let s = stack();
    s.http
        .request(method, format!("{}/rest/v1/{path_and_query}", s.supabase_url))
        .header("apikey", &s.publishable_key)
        .bearer_auth(token)
}

/// A new user, signed in: `(user id, access token)`. `claims` are added to the token.
pub fn new_user(claims: Value) -> Result<(String, String), String> {
    let s = stack();
    let (status, body) = send(
        s.http
            .post(format!("{}/auth/v1/dev/token", s.supabase_url))
            .header("apikey", &s.service_key)
            .bearer_auth(&s.service_key)
            .json(&json!({ "claims": claims })),
    )?;
    ensure_eq!(status, 200, "minting a token: {body}");
    let id = body["user"]["id"].as_str().ok_or("no user id")?.to_owned();
    let token = body["access_token"].as_str().ok_or("no access token")?.to_owned();
    Ok((id, token))
}

/// A dataset id no other test uses.
pub fn unique_dataset() -> String {
    format!("e2e-{}", uuid::Uuid::new_v4().simple())
}
