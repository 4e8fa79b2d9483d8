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
    pub upload_secret: String,
    pub operator_secret: String,
    /// The stack's state directory (wrangler's persisted R2/D1/queues, logs).
    pub state: String,
    pub root: String,
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
        upload_secret: var("UPLOAD_TOKEN_SECRET"),
        operator_secret: var("OPERATOR_SECRET"),
        state: var("FUSOU_STATE"),
        root: var("FUSOU_ROOT"),
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
    ($left:expr, $right:expr, $($ctx:tt)+) => {
        // A `match`, as in `assert_eq!`, keeps temporaries alive for the comparison.
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err(format!(
                        "{} == {} failed: {:?} != {:?} {}",
                        stringify!($left), stringify!($right), l, r, format!($($ctx)+)
                    ));
                }
            }
        }
    };
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

/// Runs a wrangler command against the stack's persisted local state.
fn wrangler(args: &[&str]) -> Result<std::process::Output, String> {
    let s = stack();
    std::process::Command::new("wrangler")
        .args(args)
        .args(["--local", "--persist-to", &format!("{}/wrangler", s.state), "-c", "wrangler.toml"])
        .current_dir(&s.root)
        .output()
        .map_err(|e| format!("wrangler: {e}"))
}

/// Rows of a query on the local D1, read with wrangler's own CLI. The Worker writes the same
/// SQLite file from another process, so a busy database is retried a few times.
pub fn d1(sql: &str) -> Result<Vec<Value>, String> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500 * attempt));
        }
        let out = wrangler(&["d1", "execute", "fusou-battle-index", "--json", "--command", sql])?;
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Value>(&text).ok().and_then(|v| v[0]["results"].as_array().cloned()) {
            Some(rows) => return Ok(rows),
            None => last = format!("d1: {text} {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
    Err(last)
}

/// The bytes of a local R2 object, or `None` when it does not exist.
pub fn r2_get(key: &str) -> Result<Option<Vec<u8>>, String> {
    let out = wrangler(&["r2", "object", "get", &format!("fusou-battle-data/{key}"), "--pipe"])?;
    if out.status.success() {
        Ok(Some(out.stdout))
    } else if String::from_utf8_lossy(&out.stderr).contains("does not exist") {
        Ok(None)
    } else {
        Err(format!("r2 get {key}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The compaction queue messages the consumer has received so far, as it logged them.
pub fn consumer_messages() -> Result<Vec<Value>, String> {
    let log = std::fs::read_to_string(format!("{}/logs/wrangler.log", stack().state)).map_err(|e| e.to_string())?;
    Ok(log
        .lines()
        .filter_map(|l| l.find("{\"level\"").map(|i| &l[i..]))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "message.received")
        .map(|v| v["message"].clone())
        .collect())
}

/// Waits until the consumer has received the message with `metric_id`.
pub fn wait_for_message(metric_id: &str, seconds: u64) -> Result<Value, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(m) = consumer_messages()?.into_iter().find(|m| m["metricId"] == metric_id) {
            return Ok(m);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no queue message with metricId {metric_id} within {seconds}s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The upload route as the client's endpoint setting names it.
pub fn upload_url() -> String {
    format!("{}/api/battle-data/upload", stack().url)
}

/// The handshake exactly as the FUSOU client sends it: string-typed `file_size` and
/// `table_offsets`, `path` and `binary` included.
pub fn client_handshake(dataset_id: &str, period: &str, f: &fusou_core::synth::Fragment) -> Value {
    json!({
        "path": format!("{period}-port-7-3.bin"),
        "binary": true,
        "dataset_id": dataset_id,
        "table": "port_table",
        "kc_period_tag": period,
        "file_size": f.bytes.len().to_string(),
        "table_offsets": f.table_offsets_string(),
        "content_hash": fusou_core::upload::ContentHash::of(&f.bytes).as_str(),
    })
}

/// Phase 1: the handshake, at `url`.
pub fn handshake_at(url: &str, token: &str, body: &Value) -> Result<(u16, Value), String> {
    send(stack().http.post(url).bearer_auth(token).header("content-type", "application/json").body(body.to_string()))
}

/// Phase 2: the raw bytes to the handshake's upload URL.
pub fn send_bytes(upload_url: &str, token: &str, bytes: Vec<u8>) -> Result<(u16, Value), String> {
    send(stack().http.post(upload_url).bearer_auth(token).header("content-type", "application/octet-stream").body(bytes))
}

/// Both phases, as the client does them; both must answer 200. Answers phase 2's body.
pub fn upload(token: &str, dataset_id: &str, period: &str, f: &fusou_core::synth::Fragment) -> Result<Value, String> {
    let (status, answer) = handshake_at(&upload_url(), token, &client_handshake(dataset_id, period, f))?;
    ensure_eq!(status, 200, "handshake: {answer}");
    let url = answer["uploadUrl"].as_str().ok_or("no uploadUrl")?.to_owned();
    let (status, stored) = send_bytes(&url, token, f.bytes.clone())?;
    ensure_eq!(status, 200, "upload: {stored}");
    Ok(stored)
}

/// A fragment like the client's (all 32 tables, 1 to 8 rows each), generated from `seed`.
pub fn small_fragment(seed: u64) -> fusou_core::synth::Fragment {
    fusou_core::synth::fragment(&fusou_core::synth::FragmentSpec { seed, rows: 1..=8, include_empty_tables: false })
}
