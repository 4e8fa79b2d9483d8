//! Bad input across the routes: each case must get its precise status with a JSON error, and
//! leave nothing behind in R2, D1, Supabase or the queue.
//!
//! The cases run in order inside one test, because the queue can only be checked for absence
//! after a sentinel message, sent once every case has run, has reached the consumer.

use base64::Engine as _;
use fusou_auth::signing::Es256Key;
use fusou_core::upload::{ContentHash, Handshake, UploadGrant, UploadLimits};
use fusou_synth::Fragment;
use serde_json::{Value, json};

use crate::support::*;
use crate::tests_upload::multipart;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[("bad_input::every_case_is_refused_and_writes_nothing", suite)];

/// Two users, and a dataset of Alice's holding one fragment.
struct Fixture {
    alice: String,
    alice_token: String,
    bob_token: String,
    alice_dataset: String,
    /// The URL Alice used to upload the fragment (its token, replayed, must be refused).
    used_upload_url: String,
    /// The fragment already stored, and one more for phase-2 cases.
    stored: Fragment,
    fresh: Fragment,
}

/// What a case did: its answer, the datasets that must stay unknown everywhere, and R2 keys
/// that must not exist.
struct Attempt {
    status: u16,
    body: Value,
    datasets: Vec<String>,
    keys: Vec<String>,
}

impl Attempt {
    fn of((status, body): (u16, Value), datasets: Vec<String>) -> Self {
        Self { status, body, datasets, keys: vec![] }
    }
}

type Case = (&'static str, u16, fn(&Fixture) -> Result<Attempt, String>);

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A phase-1 request for a fresh dataset with one field of the client's body changed.
fn handshake_with(fx: &Fixture, field: &str, value: Value) -> Result<Attempt, String> {
    let dataset = unique_dataset();
    let mut body = client_handshake(&dataset, "2025-11-10", &fx.fresh);
    if value.is_null() {
        body.as_object_mut().unwrap().remove(field);
    } else {
        body[field] = value;
    }
    let mut datasets = vec![dataset];
    if let Some(d) = body["dataset_id"].as_str() {
        datasets.push(d.to_owned());
    }
    Ok(Attempt::of(handshake_at(&upload_url(), &fx.alice_token, &body)?, datasets))
}

/// Phase 1 with a given bearer token for a fresh dataset.
fn handshake_as(fx: &Fixture, bearer: &str) -> Result<Attempt, String> {
    let dataset = unique_dataset();
    let body = client_handshake(&dataset, "2025-11-10", &fx.fresh);
    Ok(Attempt::of(handshake_at(&upload_url(), bearer, &body)?, vec![dataset]))
}

/// A good handshake for a fresh dataset, then `body` as phase 2, sent with `bearer`.
fn phase2(fx: &Fixture, handshake: Value, bearer: &str, body: Vec<u8>) -> Result<Attempt, String> {
    let dataset = handshake["dataset_id"].as_str().unwrap_or_default().to_owned();
    let (status, answer) = handshake_at(&upload_url(), &fx.alice_token, &handshake)?;
    ensure_eq!(status, 200, "the handshake before phase 2: {answer}");
    let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?.to_owned();
    let key = grant_of(&url)?.key;
    let mut attempt = Attempt::of(send_bytes(&url, bearer, body)?, vec![dataset]);
    attempt.keys.push(key);
    Ok(attempt)
}

/// The grant inside an upload URL, read with the service's secret.
fn grant_of(url: &str) -> Result<UploadGrant, String> {
    let token = url.split("token=").nth(1).ok_or("no token")?;
    let claims = token.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn fresh_handshake(fx: &Fixture, bytes_for_hash: &[u8]) -> Value {
    let mut h = client_handshake(&unique_dataset(), "2025-11-10", &fx.fresh);
    h["content_hash"] = json!(ContentHash::of(bytes_for_hash).as_str());
    h
}

fn direct(fx: &Fixture, bearer: &str, fields: &[(&str, &str)], file: Option<Vec<u8>>) -> Result<Attempt, String> {
    // Fresh datasets must stay unknown; Alice's exists already and is checked on its own.
    let datasets = fields.iter().filter(|(k, v)| *k == "datasetId" && *v != fx.alice_dataset).map(|(_, v)| v.to_string()).collect();
    let req = stack()
        .http
        .post(format!("{}/compact/upload", stack().url))
        .bearer_auth(bearer)
        .multipart(multipart(fields, file.map(|f| ("upload.parquet", f))));
    Ok(Attempt::of(send(req)?, datasets))
}

/// A body sent without a length (`Transfer-Encoding: chunked`), as a stream.
fn chunked(bytes: Vec<u8>) -> reqwest::blocking::Body {
    reqwest::blocking::Body::new(std::io::Cursor::new(bytes))
}

/// A client whose connection is not used again: a body refused before it was all read leaves
/// the rest of it on the connection, where the next request would find it.
fn unpooled() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().expect("an HTTP client")
}

fn battle_segment(fx: &Fixture) -> Vec<u8> {
    fx.fresh.segments.iter().find(|s| s.table.as_str() == "battle").map(|s| s.bytes.clone()).unwrap_or_default()
}

const CASES: &[Case] = &[
    // Phase 1: who is calling.
    ("handshake without a bearer token", 401, |fx| {
        let body = client_handshake(&unique_dataset(), "2025-11-10", &fx.fresh);
        Ok(Attempt::of(send(stack().http.post(upload_url()).json(&body))?, vec![]))
    }),
    ("handshake with alg none", 401, |fx| {
        let claims =
            json!({ "sub": fx.alice, "iss": format!("{}/auth/v1", stack().supabase_url), "aud": "authenticated", "exp": 4_000_000_000u64 });
        handshake_as(fx, &format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT" })), b64(&claims)))
    }),
    ("handshake with a token of another issuer", 401, |fx| {
        handshake_as(fx, &new_user(json!({ "iss": "https://evil.example/auth/v1" }))?.1)
    }),
    ("handshake with a token for another audience", 401, |fx| handshake_as(fx, &new_user(json!({ "aud": "anon" }))?.1)),
    ("handshake with an expired token", 401, |fx| handshake_as(fx, &new_user(json!({ "exp": 1_700_000_000u64 }))?.1)),
    ("handshake with a token signed by an unknown key", 401, |fx| {
        let stranger = Es256Key::generate("local-stranger");
        let claims =
            json!({ "sub": fx.alice, "iss": format!("{}/auth/v1", stack().supabase_url), "aud": "authenticated", "exp": 4_000_000_000u64 });
        handshake_as(fx, &stranger.sign(&claims).map_err(|e| e.to_string())?)
    }),
    ("handshake with a forged signature", 401, |fx| {
        let mut parts: Vec<String> = fx.alice_token.split('.').map(String::from).collect();
        parts[2] = parts[2].chars().rev().collect();
        handshake_as(fx, &parts.join("."))
    }),
    ("handshake whose signature decodes but does not verify", 401, |fx| {
        // One bit of a well-formed signature changed: only the signature check itself refuses it.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (message, signature) = fx.alice_token.rsplit_once('.').ok_or("a JWT")?;
        let mut bytes = b64.decode(signature).map_err(|e| e.to_string())?;
        bytes[10] ^= 1;
        handshake_as(fx, &format!("{message}.{}", b64.encode(bytes)))
    }),
    ("handshake with a bearer that is not a JWT", 401, |fx| handshake_as(fx, "not-a-jwt")),
    // Phase 1: what is declared.
    ("dataset_id climbing out of its prefix", 400, |fx| handshake_with(fx, "dataset_id", json!("../escape"))),
    ("dataset_id with a slash", 400, |fx| handshake_with(fx, "dataset_id", json!("a/b"))),
    ("dataset_id too long", 400, |fx| handshake_with(fx, "dataset_id", json!("d".repeat(129)))),
    ("table with a path", 400, |fx| handshake_with(fx, "table", json!("../../etc"))),
    ("table not a lowercase identifier", 400, |fx| handshake_with(fx, "table", json!("Port_Table"))),
    ("kc_period_tag with slashes", 400, |fx| handshake_with(fx, "kc_period_tag", json!("2025/11/05"))),
    ("content_hash not lowercase hex", 400, |fx| handshake_with(fx, "content_hash", json!("XYZ"))),
    ("file_size not a number", 400, |fx| handshake_with(fx, "file_size", json!("12kb"))),
    ("file_size zero", 400, |fx| handshake_with(fx, "file_size", json!("0"))),
    ("file_size above the limit", 413, |fx| handshake_with(fx, "file_size", json!(((64u64 << 20) + 1).to_string()))),
    ("segments that overlap", 400, |fx| {
        let mut offsets = fx.fresh.offsets.clone();
        offsets[1].start_byte = offsets[0].start_byte + 4;
        handshake_with(fx, "table_offsets", json!(serde_json::to_string(&offsets).unwrap()))
    }),
    ("a segment past the declared size", 400, |fx| handshake_with(fx, "file_size", json!((fx.fresh.bytes.len() - 1).to_string()))),
    ("table_offsets that is not JSON", 400, |fx| handshake_with(fx, "table_offsets", json!("[{oops"))),
    ("no content_hash", 400, |fx| handshake_with(fx, "content_hash", Value::Null)),
    ("a handshake body that is not JSON", 400, |fx| {
        Ok(Attempt::of(send(stack().http.post(upload_url()).bearer_auth(&fx.alice_token).body("{not json"))?, vec![]))
    }),
    ("an anonymous sign-in (not allowed to upload by default)", 403, |fx| {
        let attempt = handshake_as(fx, &new_user(json!({ "is_anonymous": true }))?.1)?;
        ensure!(attempt.body["error"].as_str().is_some_and(|e| e.contains("anonymous")), "says why: {}", attempt.body);
        Ok(attempt)
    }),
    ("a chunked handshake larger than any handshake", 413, |fx| {
        let dataset = unique_dataset();
        let mut body = client_handshake(&dataset, "2025-11-10", &fx.fresh);
        body["path"] = json!("x".repeat(300 * 1024));
        Ok(Attempt::of(
            send(unpooled().post(upload_url()).bearer_auth(&fx.alice_token).body(chunked(body.to_string().into_bytes())))?,
            vec![dataset],
        ))
    }),
    ("another user's dataset", 403, |fx| {
        let body = client_handshake(&fx.alice_dataset, "2025-11-10", &fx.fresh);
        Ok(Attempt::of(handshake_at(&upload_url(), &fx.bob_token, &body)?, vec![]))
    }),
    // Phase 2: the bytes against the declaration, and the upload token.
    ("a body whose hash differs", 400, |fx| {
        let mut bytes = fx.fresh.bytes.clone();
        bytes[100] ^= 0xFF;
        phase2(fx, fresh_handshake(fx, &fx.fresh.bytes), &fx.alice_token, bytes)
    }),
    ("a body shorter than declared", 400, |fx| {
        let bytes = fx.fresh.bytes[..fx.fresh.bytes.len() - 1].to_vec();
        phase2(fx, fresh_handshake(fx, &fx.fresh.bytes), &fx.alice_token, bytes)
    }),
    ("a body longer than declared", 400, |fx| {
        let mut bytes = fx.fresh.bytes.clone();
        bytes.push(0);
        phase2(fx, fresh_handshake(fx, &fx.fresh.bytes), &fx.alice_token, bytes)
    }),
    ("a chunked body longer than declared", 413, |fx| {
        let handshake = fresh_handshake(fx, &fx.fresh.bytes);
        let dataset = handshake["dataset_id"].as_str().unwrap_or_default().to_owned();
        let (status, answer) = handshake_at(&upload_url(), &fx.alice_token, &handshake)?;
        ensure_eq!(status, 200, "{answer}");
        let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?.to_owned();
        let mut bytes = fx.fresh.bytes.clone();
        bytes.extend(std::iter::repeat_n(0u8, 256 << 10));
        let req =
            unpooled().post(&url).bearer_auth(&fx.alice_token).header("content-type", "application/octet-stream").body(chunked(bytes));
        let mut attempt = Attempt::of(send(req)?, vec![dataset]);
        attempt.keys.push(grant_of(&url)?.key);
        Ok(attempt)
    }),
    ("a segment that is not Parquet", 400, |fx| {
        let mut bytes = fx.fresh.bytes.clone();
        let o = &fx.fresh.offsets[2];
        bytes[o.start_byte as usize..o.start_byte as usize + 4].copy_from_slice(b"CSV!");
        let attempt = phase2(fx, fresh_handshake(fx, &bytes), &fx.alice_token, bytes)?;
        ensure!(attempt.body["error"].as_str().is_some_and(|e| e.contains(o.table_name.as_str())), "names the table: {}", attempt.body);
        Ok(attempt)
    }),
    ("an expired upload token", 401, |fx| {
        let h =
            Handshake::parse(client_handshake(&unique_dataset(), "2025-11-10", &fx.fresh).to_string().as_bytes(), &UploadLimits::default())
                .map_err(|e| e.to_string())?;
        let alice = uuid::Uuid::parse_str(&fx.alice).unwrap();
        let key = format!("battle_data/{}/port_table/expired.parquet", h.dataset_id);
        let grant = UploadGrant::new(&h, alice, key.clone(), 1_700_000_000, &UploadLimits::default());
        let token = grant.sign(&stack().upload_secret).map_err(|e| e.to_string())?;
        let mut attempt = Attempt::of(
            send_bytes(&format!("{}?token={token}", upload_url()), &fx.alice_token, fx.fresh.bytes.clone())?,
            vec![h.dataset_id.to_string()],
        );
        attempt.keys.push(key);
        Ok(attempt)
    }),
    ("an upload token of another user", 403, |fx| {
        let h = client_handshake(&unique_dataset(), "2025-11-10", &fx.fresh);
        phase2(fx, h, &fx.bob_token, fx.fresh.bytes.clone())
    }),
    ("a tampered upload token", 401, |fx| {
        let h = client_handshake(&unique_dataset(), "2025-11-10", &fx.fresh);
        let (status, answer) = handshake_at(&upload_url(), &fx.alice_token, &h)?;
        ensure_eq!(status, 200);
        let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?;
        let mut grant = grant_of(url)?;
        grant.size += 1;
        let forged = format!(
            "{}?token={}.{}.{}",
            upload_url(),
            b64(&json!({"alg": "HS256", "typ": "JWT"})),
            b64(&serde_json::to_value(&grant).unwrap()),
            url.rsplit('.').next().unwrap_or_default()
        );
        let mut attempt =
            Attempt::of(send_bytes(&forged, &fx.alice_token, fx.fresh.bytes.clone())?, vec![h["dataset_id"].as_str().unwrap().into()]);
        attempt.keys.push(grant.key);
        Ok(attempt)
    }),
    ("a replayed upload token", 409, |fx| {
        let attempt = Attempt::of(send_bytes(&fx.used_upload_url, &fx.alice_token, fx.stored.bytes.clone())?, vec![]);
        Ok(attempt)
    }),
    ("phase 2 without a bearer token", 401, |fx| {
        let h = client_handshake(&unique_dataset(), "2025-11-10", &fx.fresh);
        let dataset = h["dataset_id"].as_str().unwrap().to_owned();
        let (_, answer) = handshake_at(&upload_url(), &fx.alice_token, &h)?;
        let url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?;
        Ok(Attempt::of(send(stack().http.post(url).body(fx.fresh.bytes.clone()))?, vec![dataset]))
    }),
    // The other routes.
    ("a trigger without the operator secret", 401, |_| {
        Ok(Attempt::of(send(stack().http.post(format!("{}/trigger-scheduled", stack().url)))?, vec![]))
    }),
    ("a trigger with a wrong operator secret", 403, |fx| {
        Ok(Attempt::of(send(stack().http.post(format!("{}/trigger-scheduled", stack().url)).bearer_auth(&fx.alice_token))?, vec![]))
    }),
    ("a direct upload that is not Parquet", 415, |fx| {
        let d = unique_dataset();
        direct(fx, &fx.alice_token, &[("datasetId", &d), ("tableId", "battle")], Some(b"PAR1 but not really, just text PAR1 nope".to_vec()))
    }),
    ("a direct upload without datasetId", 400, |fx| direct(fx, &fx.alice_token, &[("tableId", "battle")], Some(battle_segment(fx)))),
    ("a direct upload with a path for tableId", 400, |fx| {
        let d = unique_dataset();
        direct(fx, &fx.alice_token, &[("datasetId", &d), ("tableId", "../battle")], Some(battle_segment(fx)))
    }),
    ("a direct upload to another user's dataset", 403, |fx| {
        direct(fx, &fx.bob_token, &[("datasetId", &fx.alice_dataset), ("tableId", "battle")], Some(battle_segment(fx)))
    }),
    ("a direct upload by an anonymous sign-in", 403, |fx| {
        let d = unique_dataset();
        direct(fx, &new_user(json!({ "is_anonymous": true }))?.1, &[("datasetId", &d), ("tableId", "battle")], Some(battle_segment(fx)))
    }),
    ("a direct upload that is not multipart", 415, |fx| {
        Ok(Attempt::of(
            send(stack().http.post(format!("{}/compact/upload", stack().url)).bearer_auth(&fx.alice_token).json(&json!({})))?,
            vec![],
        ))
    }),
    ("a repair of an unknown dataset", 404, |fx| {
        let d = unique_dataset();
        let req =
            stack().http.post(format!("{}/sanitize-state", stack().url)).bearer_auth(&fx.alice_token).json(&json!({ "datasetId": d }));
        Ok(Attempt::of(send(req)?, vec![d]))
    }),
    ("a repair of another user's dataset (answered as for none)", 404, |fx| {
        let req = stack()
            .http
            .post(format!("{}/sanitize-state", stack().url))
            .bearer_auth(&fx.bob_token)
            .json(&json!({ "datasetId": fx.alice_dataset }));
        Ok(Attempt::of(send(req)?, vec![]))
    }),
    ("a repair without datasetId", 400, |fx| {
        let req =
            stack().http.post(format!("{}/sanitize-state", stack().url)).bearer_auth(&fx.alice_token).json(&json!({ "dataset": "x" }));
        Ok(Attempt::of(send(req)?, vec![]))
    }),
    ("a dataset id with a dot in a read route", 400, |fx| {
        Ok(Attempt::of(send(stack().http.get(format!("{}/battle-data/datasets/a.b", stack().url)).bearer_auth(&fx.alice_token))?, vec![]))
    }),
    ("a download of a key outside the dataset", 404, |fx| {
        let url = format!(
            "{}/battle-data/datasets/{}/outputs/download?key=battle_data/{}/port_table/x.parquet",
            stack().url,
            fx.alice_dataset,
            fx.alice_dataset
        );
        Ok(Attempt::of(send(stack().http.get(url).bearer_auth(&fx.alice_token))?, vec![]))
    }),
];

fn in_list(ids: &[String]) -> String {
    ids.iter().map(|d| format!("'{}'", d.replace('\'', "''"))).collect::<Vec<_>>().join(",")
}

fn suite() -> TestResult {
    let (alice, alice_token) = new_user(json!({}))?;
    let (_, bob_token) = new_user(json!({}))?;
    let alice_dataset = unique_dataset();
    let stored = small_fragment(61);
    let (status, answer) = handshake_at(&upload_url(), &alice_token, &client_handshake(&alice_dataset, "2025-11-10", &stored))?;
    ensure_eq!(status, 200, "{answer}");
    let used_upload_url = answer["uploadUrl"].as_str().ok_or("uploadUrl")?.to_owned();
    let (status, first) = send_bytes(&used_upload_url, &alice_token, stored.bytes.clone())?;
    ensure_eq!(status, 200, "{first}");
    let first_metric = first["metricId"].as_str().ok_or("metricId")?.to_owned();
    let fx = Fixture { alice, alice_token, bob_token, alice_dataset, used_upload_url, stored, fresh: small_fragment(62) };

    // Every case: its status and a JSON error, then what it must not have written.
    let mut failures = Vec::new();
    let mut untouched: Vec<(String, &str)> = Vec::new();
    for (name, expected, case) in CASES {
        match case(&fx) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(a) => {
                if a.status != *expected || !a.body["error"].is_string() {
                    failures.push(format!("{name}: expected {expected} with a JSON error, got {} {}", a.status, a.body));
                }
                for key in &a.keys {
                    if r2_get(key)?.is_some() {
                        failures.push(format!("{name}: R2 object {key} was written"));
                    }
                }
                untouched.extend(a.datasets.into_iter().map(|d| (d, *name)));
            }
        }
    }
    ensure!(CASES.len() >= 30, "at least 30 cases");

    // D1 and Supabase know none of the case datasets; Alice's still holds one fragment and one
    // realtime metrics row (scheduled rows may come from the schedule test running beside).
    let ids: Vec<String> = untouched.iter().map(|(d, _)| d.clone()).collect();
    let name_of = |d: &str| untouched.iter().find(|(x, _)| x == d).map_or("?", |(_, n)| *n);
    for row in d1(&format!(
        "SELECT dataset_id AS id FROM battle_files WHERE dataset_id IN ({0}) UNION ALL SELECT id FROM datasets WHERE id IN ({0})",
        in_list(&ids)
    ))? {
        let id = row["id"].as_str().unwrap_or_default();
        failures.push(format!("{}: D1 holds dataset {id}", name_of(id)));
    }
    for row in pg_json(&[], &format!("SELECT dataset_id AS id FROM public.processing_metrics WHERE dataset_id IN ({0}) UNION ALL SELECT id FROM public.datasets WHERE id IN ({0})", in_list(&ids)))?.as_array().into_iter().flatten() {
        let id = row["id"].as_str().unwrap_or_default();
        failures.push(format!("{}: Supabase holds dataset {id}", name_of(id)));
    }
    let alice_ds = [fx.alice_dataset.clone()];
    ensure_eq!(
        d1(&format!("SELECT count(*) AS n FROM battle_files WHERE dataset_id IN ({})", in_list(&alice_ds)))?[0]["n"],
        1,
        "Alice's fragments"
    );
    let metrics = pg_json(
        &[],
        &format!("SELECT id::text FROM public.processing_metrics WHERE dataset_id IN ({}) AND priority <> 'scheduled'", in_list(&alice_ds)),
    )?;
    ensure_eq!(metrics, json!([{ "id": first_metric }]), "Alice's metrics rows");

    // The queue: send a sentinel after every case; once it has arrived, no case's message can
    // still be on its way, and none may have come.
    let sentinel_dataset = unique_dataset();
    let sentinel = upload(&fx.alice_token, &sentinel_dataset, "2025-11-10", &small_fragment(63))?;
    wait_for_message(sentinel["metricId"].as_str().ok_or("metricId")?, 120)?;
    for m in consumer_messages()? {
        let d = m["datasetId"].as_str().unwrap_or_default();
        if ids.iter().any(|x| x == d) {
            failures.push(format!("{}: a queue message for {d} reached the consumer", name_of(d)));
        }
        if d == fx.alice_dataset && m["priority"] != "scheduled" && m["metricId"] != first_metric.as_str() {
            failures.push(format!("a queue message for Alice's dataset came from a refused request: {m}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {} cases failed:\n  {}", failures.len(), CASES.len(), failures.join("\n  ")))
    }
}
