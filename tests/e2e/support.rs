//! What every end-to-end test needs: the stack's addresses and keys, an HTTP client, users.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

pub(crate) type TestResult = Result<(), String>;
pub(crate) type Test = fn() -> TestResult;

pub(crate) struct Stack {
    /// The upload Worker.
    pub url: String,
    pub supabase_url: String,
    pub service_key: String,
    pub publishable_key: String,
    /// The PostgreSQL behind the stand-in, as its owner.
    pub pg_url: String,
    pub upload_secret: String,
    pub operator_secret: String,
    /// The open tables' read-only key.
    pub lake_read_secret: String,
    /// The stack's state directory (wrangler's persisted R2/D1/queues, logs).
    pub state: String,
    pub root: String,
    pub http: Client,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the end-to-end tests through scripts/test.sh"))
}

pub(crate) fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack {
        url: var("FUSOU_URL"),
        supabase_url: var("SUPABASE_URL"),
        service_key: var("SUPABASE_SERVICE_KEY"),
        publishable_key: var("SUPABASE_PUBLISHABLE_KEY"),
        pg_url: var("FUSOU_PG_URL"),
        upload_secret: var("UPLOAD_TOKEN_SECRET"),
        operator_secret: var("OPERATOR_SECRET"),
        lake_read_secret: var("LAKE_READ_SECRET"),
        state: var("FUSOU_STATE"),
        root: var("FUSOU_ROOT"),
        http: Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("an HTTP client"),
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
pub(crate) fn pg_json(setup: &[&str], sql: &str) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&stack().pg_url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
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
///
/// A 503 that is not JSON comes from `wrangler dev`'s proxy, not from a Worker (whose errors are
/// all JSON): under load it drops a request now and then (workers-sdk#6517; it retries only GET
/// and HEAD itself). Such a request is sent once more, when its body can be.
pub(crate) fn send(req: RequestBuilder) -> Result<(u16, Value), String> {
    let again = req.try_clone();
    let (status, text) = status_and_text(req)?;
    let body = serde_json::from_str(&text).ok();
    match (status, body, again) {
        (503, None, Some(again)) => {
            eprintln!("wrangler dev dropped a request (503 {text:?}); sending it again");
            let (status, text) = status_and_text(again)?;
            Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        }
        (status, body, _) => Ok((status, body.unwrap_or(Value::Null))),
    }
}

fn status_and_text(req: RequestBuilder) -> Result<(u16, String), String> {
    let resp: Response = req.send().map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().map_err(|e| e.to_string())?))
}

/// A request to the Supabase REST API with the service key.
pub(crate) fn rest_as_service(method: reqwest::Method, path_and_query: &str) -> RequestBuilder {
    let s = stack();
    s.http
        .request(method, format!("{}/rest/v1/{path_and_query}", s.supabase_url))
        .header("apikey", &s.service_key)
        .bearer_auth(&s.service_key)
}

/// A request to the Supabase REST API as a signed-in user.
pub(crate) fn rest_as_user(token: &str, method: reqwest::Method, path_and_query: &str) -> RequestBuilder {
    let s = stack();
    s.http.request(method, format!("{}/rest/v1/{path_and_query}", s.supabase_url)).header("apikey", &s.publishable_key).bearer_auth(token)
}

/// A new user, signed in: `(user id, access token)`. `claims` are added to the token.
pub(crate) fn new_user(claims: Value) -> Result<(String, String), String> {
    sign_in(json!({ "claims": claims }))
}

/// Signs a user in through the stand-in's development endpoint (`sub`, `email`, `expires_in`,
/// `claims`): `(user id, access token)`.
pub(crate) fn sign_in(request: Value) -> Result<(String, String), String> {
    let s = stack();
    let (status, body) = send(
        s.http
            .post(format!("{}/auth/v1/dev/token", s.supabase_url))
            .header("apikey", &s.service_key)
            .bearer_auth(&s.service_key)
            .json(&request),
    )?;
    ensure_eq!(status, 200, "minting a token: {body}");
    let id = body["user"]["id"].as_str().ok_or("no user id")?.to_owned();
    let token = body["access_token"].as_str().ok_or("no access token")?.to_owned();
    Ok((id, token))
}

/// A dataset id no other test uses.
pub(crate) fn unique_dataset() -> String {
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

/// Rows of a statement on the local D1. A read runs on its SQLite file (the one file of
/// wrangler's persisted D1 state), which is in WAL mode: a reader never blocks the Worker. A
/// write goes through the Worker's own D1 binding (`POST /compact/sql`, test stacks only): a
/// write from another process would make the Worker's writes at that moment fail with
/// SQLITE_BUSY, as `wrangler d1 execute` did (which also took seconds a statement).
pub(crate) fn d1(sql: &str) -> Result<Vec<Value>, String> {
    use rusqlite::types::ValueRef;
    let dir = format!("{}/wrangler/v3/d1/miniflare-D1DatabaseObject", stack().state);
    let file = std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sqlite") && p.file_stem().is_some_and(|s| s != "metadata"))
        .ok_or_else(|| format!("no D1 database in {dir}"))?;
    let conn = rusqlite::Connection::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let mut statement = conn.prepare(sql).map_err(|e| format!("{sql}: {e}"))?;
    if statement.column_count() == 0 {
        let (status, body) = send(operator(reqwest::Method::POST, "/compact/sql").json(&serde_json::json!({ "sql": sql })))?;
        return match (status, body["results"].as_array()) {
            (200, Some(rows)) => Ok(rows.clone()),
            _ => Err(format!("{sql}: {status} {body}")),
        };
    }
    let names: Vec<String> = statement.column_names().into_iter().map(str::to_owned).collect();
    let rows = statement
        .query_map([], |row| {
            let mut object = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let value = match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::from(n),
                    ValueRef::Real(x) => Value::from(x),
                    ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::from(b.to_vec()),
                };
                object.insert(name.clone(), value);
            }
            Ok(Value::Object(object))
        })
        .map_err(|e| format!("{sql}: {e}"))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| format!("{sql}: {e}"))
}

/// The bytes of a local R2 object, or `None` when it does not exist.
pub(crate) fn r2_get(key: &str) -> Result<Option<Vec<u8>>, String> {
    let out = wrangler(&["r2", "object", "get", &format!("fusou-battle-data/{key}"), "--pipe"])?;
    if out.status.success() {
        Ok(Some(out.stdout))
    } else if String::from_utf8_lossy(&out.stderr).contains("does not exist") {
        Ok(None)
    } else {
        Err(format!("r2 get {key}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Writes a local R2 object.
pub(crate) fn r2_put(key: &str, bytes: &[u8]) -> TestResult {
    let file = std::env::temp_dir().join(format!("fusou-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
    let out = wrangler(&["r2", "object", "put", &format!("fusou-battle-data/{key}"), "--file", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    let out = out?;
    ensure!(out.status.success(), "r2 put {key}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The compaction queue messages the consumer has received so far, as it logged them.
pub(crate) fn consumer_messages() -> Result<Vec<Value>, String> {
    Ok(log_events("message.received")?.into_iter().map(|v| v["message"].clone()).collect())
}

/// Waits until the consumer has received the message with `metric_id`.
pub(crate) fn wait_for_message(metric_id: &str, seconds: u64) -> Result<Value, String> {
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
pub(crate) fn upload_url() -> String {
    format!("{}/api/battle-data/upload", stack().url)
}

/// The handshake exactly as the FUSOU client sends it: string-typed `file_size` and
/// `table_offsets`, `path` and `binary` included.
pub(crate) fn client_handshake(dataset_id: &str, period: &str, f: &fusou_synth::Fragment) -> Value {
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
pub(crate) fn handshake_at(url: &str, token: &str, body: &Value) -> Result<(u16, Value), String> {
    send(stack().http.post(url).bearer_auth(token).header("content-type", "application/json").body(body.to_string()))
}

/// Phase 2: the raw bytes to the handshake's upload URL.
pub(crate) fn send_bytes(upload_url: &str, token: &str, bytes: Vec<u8>) -> Result<(u16, Value), String> {
    send(stack().http.post(upload_url).bearer_auth(token).header("content-type", "application/octet-stream").body(bytes))
}

/// Both phases, as the client does them; both must answer 200. Answers phase 2's body.
pub(crate) fn upload(token: &str, dataset_id: &str, period: &str, f: &fusou_synth::Fragment) -> Result<Value, String> {
    let (status, answer) = handshake_at(&upload_url(), token, &client_handshake(dataset_id, period, f))?;
    ensure_eq!(status, 200, "handshake: {answer}");
    let url = answer["uploadUrl"].as_str().ok_or("no uploadUrl")?.to_owned();
    let (status, stored) = send_bytes(&url, token, f.bytes.clone())?;
    ensure_eq!(status, 200, "upload: {stored}");
    Ok(stored)
}

/// A fragment like the client's (all 32 tables, 1 to 8 rows each), generated from `seed`.
pub(crate) fn small_fragment(seed: u64) -> fusou_synth::Fragment {
    fusou_synth::fragment(&fusou_synth::FragmentSpec { seed, rows: 1..=8, include_empty_tables: false })
}

/// Each row as text, by column name, so rows compare by value whatever file they landed in.
pub(crate) use fusou_synth::rows_as_text as rows;

/// Waits, watching the owner's status route, until nothing of `dataset` is pending and no run
/// holds it.
pub(crate) fn wait_until_compacted(dataset: &str, token: &str, seconds: u64) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (status, state) = send(stack().http.get(format!("{}/api/battle-data/datasets/{dataset}", stack().url)).bearer_auth(token))?;
        ensure_eq!(status, 200, "{state}");
        if state["pending"]["fragments"] == 0 && state["compaction"]["inProgress"] == false {
            ensure_eq!(state["compaction"]["needed"], false, "{state}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{dataset} still pending after {seconds} s: {state}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Sends `req` and answers the response as it is.
pub(crate) fn fetch(req: RequestBuilder) -> Result<Response, String> {
    req.send().map_err(|e| e.to_string())
}

/// Rows as text (see [`rows`]) by table name.
pub(crate) type RowsByTable = BTreeMap<String, Vec<String>>;

/// Every output of `dataset`, listed and downloaded through the owner's routes, each checked
/// against its D1 row count: the listing, and every row by table.
pub(crate) fn compacted_rows(dataset: &str, token: &str) -> Result<(Vec<Value>, RowsByTable), String> {
    let s = stack();
    let resp = fetch(s.http.get(format!("{}/api/battle-data/datasets/{dataset}/outputs?limit=1000", s.url)).bearer_auth(token))?;
    let status = resp.status().as_u16();
    let listing: Value = resp.json().map_err(|e| e.to_string())?;
    ensure_eq!(status, 200, "{listing}");
    let outputs = listing["outputs"].as_array().ok_or("no outputs")?.clone();
    let mut got = RowsByTable::new();
    for o in &outputs {
        let key = o["key"].as_str().ok_or("key")?;
        let resp = fetch(
            s.http.get(format!("{}/api/battle-data/datasets/{dataset}/outputs/download", s.url)).query(&[("key", key)]).bearer_auth(token),
        )?;
        ensure_eq!(resp.status().as_u16(), 200, "download {key}");
        let file = Bytes::from(resp.bytes().map_err(|e| e.to_string())?.to_vec());
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format!("{key}: {e}"))?.build().map_err(|e| e.to_string())?;
        let table = o["table_name"].as_str().ok_or("table")?.to_owned();
        let mut count = 0;
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            count += batch.num_rows();
            // Each file says whose rows it holds and of which period, then the client's columns.
            let (described, uploaded) = self_described(&batch)?;
            ensure!(described.iter().all(|(p, d)| Some(p.as_str()) == o["period_tag"].as_str() && d == dataset), "{key}: {described:?}");
            got.entry(table.clone()).or_default().extend(rows(&uploaded));
        }
        ensure_eq!(Value::from(count), o["row_count"], "{key}: rows against D1's row_count");
    }
    Ok((outputs, got))
}

/// A compacted batch's (period, dataset) per row, and the batch without those two columns.
pub(crate) fn self_described(batch: &RecordBatch) -> Result<(Vec<(String, String)>, RecordBatch), String> {
    use arrow_array::cast::AsArray;
    let column = |name: &str| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>().cloned()).ok_or(format!("no {name} column"));
    let (period, dataset) = (column("period_tag")?, column("dataset_id")?);
    let described = period.iter().zip(dataset.iter()).map(|(p, d)| (p.unwrap_or("∅").to_owned(), d.unwrap_or("∅").to_owned())).collect();
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|&i| !["period_tag", "dataset_id"].contains(&batch.schema().field(i).name().as_str())).collect();
    Ok((described, batch.project(&keep).map_err(|e| e.to_string())?))
}

/// Checks that `got` holds exactly the rows of `fragments`, each once, by value; segments
/// named in `left_out` (fragment index, table) are expected to be missing.
pub(crate) fn ensure_same_rows(got: &mut RowsByTable, fragments: &[fusou_synth::Fragment], left_out: &[(usize, &str)]) -> TestResult {
    for table in fusou_synth::client_tables() {
        let mut expected: Vec<String> = fragments
            .iter()
            .enumerate()
            .filter(|(i, _)| !left_out.contains(&(*i, table.name.as_str())))
            .flat_map(|(_, f)| rows(&f.segments.iter().find(|s| s.table == table.name).unwrap().batch))
            .collect();
        let mut actual = got.remove(table.name.as_str()).unwrap_or_default();
        expected.sort();
        actual.sort();
        ensure_eq!(actual.len(), expected.len(), "{} rows", table.name);
        ensure!(actual == expected, "{}: compacted rows differ from the uploaded ones", table.name);
    }
    Ok(())
}

/// A request to an operator route, with the operator secret.
/// A request of a reader of the open tables, with the read-only key.
pub(crate) fn lake_reader(method: reqwest::Method, path: &str) -> RequestBuilder {
    let s = stack();
    s.http.request(method, format!("{}/api{path}", s.url)).bearer_auth(&s.lake_read_secret)
}

pub(crate) fn operator(method: reqwest::Method, path: &str) -> RequestBuilder {
    let s = stack();
    s.http.request(method, format!("{}/api{path}", s.url)).bearer_auth(&s.operator_secret)
}

/// The JSON log lines of the stack's Workers with event `event`.
pub(crate) fn log_events(event: &str) -> Result<Vec<Value>, String> {
    let log = std::fs::read_to_string(format!("{}/logs/wrangler.log", stack().state)).map_err(|e| e.to_string())?;
    Ok(log
        .lines()
        // wrangler colours error lines: the JSON ends at the last brace, before the reset code.
        .filter_map(|l| Some(&l[l.find("{\"level\"")?..=l.rfind('}')?]))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect())
}

/// The log lines of `event` that name `dataset`.
pub(crate) fn events_for(event: &str, dataset: &str) -> Result<Vec<Value>, String> {
    Ok(log_events(event)?.into_iter().filter(|v| v["datasetId"] == dataset).collect())
}

/// Waits until `count` log lines of `event` name `dataset`; answers them.
pub(crate) fn wait_for_events(event: &str, dataset: &str, count: usize, seconds: u64) -> Result<Vec<Value>, String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let seen = events_for(event, dataset)?;
        if seen.len() >= count {
            return Ok(seen);
        }
        ensure!(Instant::now() < deadline, "{} of {count} {event} events for {dataset} after {seconds} s", seen.len());
        std::thread::sleep(Duration::from_millis(500));
    }
}
