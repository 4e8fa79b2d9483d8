//! The Supabase stand-in: PostgREST round trips through the real PostgreSQL, the gateway's key
//! checks, Auth's JWK set, and the row-level security of `supabase/migrations/`.

use fusou_auth::{AuthConfig, AuthError, issuer_for, verify_user_token};
use jsonwebtoken::jwk::JwkSet;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Test, TestResult, new_user, pg_json, rest_as_service, rest_as_user, send, sign_in, stack, unique_dataset};
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("supabase::postgrest_round_trip_reaches_postgresql", round_trip),
    ("supabase::postgrest_errors_have_postgrest_shape", error_shapes),
    ("supabase::bad_or_missing_api_keys_are_refused", bad_keys),
    ("supabase::minted_token_verifies_against_the_jwk_set", token_verifies),
    ("supabase::one_email_signs_in_one_user", one_email_one_user),
    ("supabase::rls_users_read_only_their_own_rows_over_rest", rls_over_rest),
    ("supabase::rls_policies_hold_in_postgresql_itself", rls_in_postgres),
];

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A dataset row owned by `owner`, written with the service key.
fn insert_dataset(owner: &str, id: &str) -> TestResult {
    let (status, body) = send(rest_as_service(Method::POST, "datasets").json(&json!({ "id": id, "owner_id": owner })))?;
    ensure_eq!(status, 201, "{body}");
    Ok(())
}

fn round_trip() -> TestResult {
    let (owner, _) = new_user(json!({}))?;
    let ds = unique_dataset();

    // Insert with return=representation: the row comes back with the database's defaults.
    let (status, body) = send(
        rest_as_service(Method::POST, "datasets")
            .header("prefer", "return=representation")
            .json(&json!({ "id": ds, "owner_id": owner, "file_count": 2 })),
    )?;
    ensure_eq!(status, 201, "{body}");
    ensure_eq!(body[0]["id"], ds.as_str());
    ensure_eq!(body[0]["compaction_needed"], false);
    ensure!(body[0]["created_at"].is_string(), "created_at default: {body}");

    // Two metrics rows, one of them upserted twice with merge-duplicates.
    let metric = uuid::Uuid::new_v4().to_string();
    for status_value in ["queued", "running"] {
        let (status, body) = send(
            rest_as_service(Method::POST, "processing_metrics?on_conflict=id")
                .header("prefer", "resolution=merge-duplicates,return=representation")
                .json(&json!([{ "id": metric, "dataset_id": ds, "priority": "realtime", "status": status_value, "input_bytes": 100 }])),
        )?;
        ensure_eq!(status, 201, "{body}");
        ensure_eq!(body[0]["status"], status_value);
    }
    let (status, _) = send(
        rest_as_service(Method::POST, "processing_metrics")
            .json(&json!({ "dataset_id": ds, "priority": "scheduled", "status": "success", "input_bytes": 5000 })),
    )?;
    ensure_eq!(status, 201);

    // Filters, order and limit are applied by PostgreSQL, with values cast to column types.
    let q = format!(
        "processing_metrics?select=id,status,input_bytes&dataset_id=eq.{ds}&input_bytes=gt.99&status=in.(running,success)&order=input_bytes.desc&limit=5"
    );
    let (status, rows) = send(rest_as_service(Method::GET, &q))?;
    ensure_eq!(status, 200, "{rows}");
    ensure_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    ensure_eq!(rows[0]["input_bytes"], 5000);
    ensure_eq!(rows[1]["id"], metric.as_str());
    ensure_eq!(rows[1].as_object().map(|o| o.len()), Some(3), "only the selected columns");
    let (_, rows) =
        send(rest_as_service(Method::GET, &format!("processing_metrics?dataset_id=eq.{ds}&finished_at=is.null&status=neq.running")))?;
    ensure_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");

    // PATCH with a filter, seen both through the API and in PostgreSQL directly.
    let (status, body) = send(
        rest_as_service(Method::PATCH, &format!("processing_metrics?id=eq.{metric}"))
            .header("prefer", "return=representation")
            .json(&json!({ "status": "success", "error_step": null, "output_rows": 7 })),
    )?;
    ensure_eq!(status, 200, "{body}");
    ensure_eq!(body[0]["output_rows"], 7);
    let in_pg = pg_json(&[], &format!("SELECT status::text, output_rows FROM public.processing_metrics WHERE id = '{metric}'"))?;
    ensure_eq!(in_pg, json!([{ "status": "success", "output_rows": 7 }]));

    // A singular read answers an object; DELETE removes (cascading to the metrics).
    let (status, obj) =
        send(rest_as_service(Method::GET, &format!("datasets?id=eq.{ds}")).header("accept", "application/vnd.pgrst.object+json"))?;
    ensure_eq!(status, 200, "{obj}");
    ensure_eq!(obj["file_count"], 2);
    let (status, _) = send(rest_as_service(Method::DELETE, &format!("datasets?id=eq.{ds}")))?;
    ensure_eq!(status, 204);
    let left = pg_json(&[], &format!("SELECT id FROM public.processing_metrics WHERE dataset_id = '{ds}'"))?;
    ensure_eq!(left, json!([]));
    Ok(())
}

fn error_shapes() -> TestResult {
    let (owner, _) = new_user(json!({}))?;
    let ds = unique_dataset();
    insert_dataset(&owner, &ds)?;
    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (rest_as_service(Method::POST, "datasets").json(&json!({ "id": ds, "owner_id": owner })), 409, "23505"),
        (rest_as_service(Method::GET, "no_such_table"), 404, "PGRST205"),
        (rest_as_service(Method::GET, "datasets?select=nope"), 400, "PGRST204"),
        (rest_as_service(Method::GET, "datasets?id=like.x"), 400, "PGRST100"),
        (rest_as_service(Method::GET, "datasets?file_count=gt.many"), 400, "22P02"),
        (rest_as_service(Method::DELETE, "datasets"), 400, "21000"),
        (rest_as_service(Method::POST, "datasets").json(&json!({ "id": "x/../y", "owner_id": owner })), 400, "23514"),
        (
            rest_as_service(Method::GET, &format!("datasets?id=in.({ds},other)"))
                .header("accept", "application/vnd.pgrst.object+json")
                .query(&[("owner_id", format!("neq.{owner}"))]),
            406,
            "PGRST116",
        ),
    ];
    for (req, want_status, want_code) in cases {
        let (status, body) = send(req)?;
        ensure_eq!((status, body["code"].as_str()), (want_status, Some(want_code)), "{body}");
        ensure!(body["message"].is_string() && body.get("details").is_some() && body.get("hint").is_some(), "shape: {body}");
    }
    Ok(())
}

fn bad_keys() -> TestResult {
    let s = stack();
    let url = format!("{}/rest/v1/datasets", s.supabase_url);
    let (status, body) = send(s.http.get(&url))?;
    ensure_eq!((status, body["message"].as_str()), (401, Some("No API key found in request")));
    let (status, body) = send(s.http.get(&url).header("apikey", "sb_secret_wrong").bearer_auth("sb_secret_wrong"))?;
    ensure_eq!((status, body["message"].as_str()), (401, Some("Invalid API key")));
    // A valid publishable key with a forged service bearer is still only a bad JWT.
    let (status, body) = send(s.http.get(&url).header("apikey", &s.publishable_key).bearer_auth("sb_secret_wrong"))?;
    ensure_eq!((status, body["code"].as_str()), (401, Some("PGRST301")), "{body}");
    // The admin endpoint wants the secret key.
    let (status, _) = send(s.http.post(format!("{}/auth/v1/dev/token", s.supabase_url)).header("apikey", &s.publishable_key))?;
    ensure_eq!(status, 403);
    Ok(())
}

fn token_verifies() -> TestResult {
    let s = stack();
    let (status, jwks) = send(s.http.get(format!("{}/auth/v1/.well-known/jwks.json", s.supabase_url)))?;
    ensure_eq!(status, 200);
    ensure_eq!(jwks["keys"][0]["alg"], "ES256");
    let config = AuthConfig {
        issuer: issuer_for(&s.supabase_url),
        jwks: serde_json::from_value::<JwkSet>(jwks).map_err(|e| e.to_string())?,
        legacy_hs256_secret: None,
    };
    let (user, token) = new_user(json!({}))?;
    let verified = verify_user_token(&token, &config, now()).map_err(|e| e.to_string())?;
    ensure_eq!(verified.id.to_string(), user);

    let (_, wrong_issuer) = new_user(json!({ "iss": "https://elsewhere.supabase.co/auth/v1" }))?;
    ensure!(verify_user_token(&wrong_issuer, &config, now()).is_err(), "a foreign issuer verified");
    let (_, expired) = new_user(json!({ "exp": now() - 10 }))?;
    ensure_eq!(verify_user_token(&expired, &config, now()), Err(AuthError::Expired));
    Ok(())
}

/// The user id a development sign-in answers with.
fn user_of(request: Value) -> Result<String, String> {
    Ok(sign_in(request)?.0)
}

fn one_email_one_user() -> TestResult {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let first = user_of(json!({ "email": email }))?;
    ensure_eq!(user_of(json!({ "email": email, "expires_in": 60 }))?, first, "the same email, signed in again");
    ensure!(user_of(json!({ "email": format!("other-{email}") }))? != first, "another email got the same user");
    let users = pg_json(&[], &format!("SELECT count(*) AS n FROM auth.users WHERE email = '{email}'"))?;
    ensure_eq!(users[0]["n"], 1, "{users}");
    // An explicit id is that user, whatever the email.
    let sub = uuid::Uuid::new_v4().to_string();
    ensure_eq!(user_of(json!({ "sub": sub, "email": email }))?, sub);
    Ok(())
}

fn ids(rows: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = rows.as_array().into_iter().flatten().filter_map(|r| r[key].as_str().map(String::from)).collect();
    v.sort();
    v
}

fn rls_over_rest() -> TestResult {
    let (alice, alice_token) = new_user(json!({}))?;
    let (bob, bob_token) = new_user(json!({}))?;
    let (ds_a, ds_b) = (unique_dataset(), unique_dataset());
    insert_dataset(&alice, &ds_a)?;
    insert_dataset(&bob, &ds_b)?;
    for ds in [&ds_a, &ds_b] {
        let (status, _) =
            send(rest_as_service(Method::POST, "processing_metrics").json(&json!({ "dataset_id": ds, "priority": "manual" })))?;
        ensure_eq!(status, 201);
    }
    let both = format!("in.({ds_a},{ds_b})");

    let (status, rows) = send(rest_as_user(&alice_token, Method::GET, &format!("datasets?id={both}")))?;
    ensure_eq!(status, 200, "{rows}");
    ensure_eq!(ids(&rows, "id"), vec![ds_a.clone()]);
    let (_, rows) = send(rest_as_user(&bob_token, Method::GET, &format!("processing_metrics?dataset_id={both}")))?;
    ensure_eq!(ids(&rows, "dataset_id"), vec![ds_b.clone()]);

    // Users cannot write, not even to their own dataset; anonymous callers cannot even read.
    let (status, body) =
        send(rest_as_user(&alice_token, Method::PATCH, &format!("datasets?id=eq.{ds_a}")).json(&json!({ "compaction_needed": true })))?;
    ensure_eq!((status, body["code"].as_str()), (403, Some("42501")), "{body}");
    let (status, _) =
        send(rest_as_user(&alice_token, Method::POST, "processing_metrics").json(&json!({ "dataset_id": ds_a, "priority": "manual" })))?;
    ensure_eq!(status, 403);
    let s = stack();
    let (status, body) = send(s.http.get(format!("{}/rest/v1/datasets", s.supabase_url)).header("apikey", &s.publishable_key))?;
    ensure_eq!((status, body["code"].as_str()), (401, Some("42501")), "{body}");
    Ok(())
}

fn rls_in_postgres() -> TestResult {
    let (alice, _) = new_user(json!({}))?;
    let (bob, _) = new_user(json!({}))?;
    let (ds_a, ds_b) = (unique_dataset(), unique_dataset());
    insert_dataset(&alice, &ds_a)?;
    insert_dataset(&bob, &ds_b)?;
    let claims = |sub: &str| format!("SELECT set_config('request.jwt.claims', '{{\"sub\":\"{sub}\",\"role\":\"authenticated\"}}', true)");
    let query = format!("SELECT id FROM public.datasets WHERE id IN ('{ds_a}', '{ds_b}')");

    let as_alice = pg_json(&["SET LOCAL ROLE authenticated", &claims(&alice)], &query)?;
    ensure_eq!(ids(&as_alice, "id"), vec![ds_a.clone()]);
    let as_service = pg_json(&["SET LOCAL ROLE service_role"], &query)?;
    ensure_eq!(ids(&as_service, "id").len(), 2);
    let as_anon = pg_json(&["SET LOCAL ROLE anon"], &query);
    ensure!(as_anon.as_ref().is_err_and(|e| e.contains("permission denied")), "anon read: {as_anon:?}");
    let write = pg_json(
        &[
            "SET LOCAL ROLE authenticated",
            &claims(&alice),
            &format!("UPDATE public.datasets SET compaction_needed = true WHERE id = '{ds_a}'"),
        ],
        "SELECT 1",
    );
    ensure!(write.as_ref().is_err_and(|e| e.contains("permission denied")), "authenticated write: {write:?}");
    Ok(())
}
