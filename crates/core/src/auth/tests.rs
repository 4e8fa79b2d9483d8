use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::signing::Es256Key;

const URL: &str = "http://127.0.0.1:54321";
const NOW: u64 = 1_800_000_000;
const USER: &str = "6f1c1c7e-3b8a-4c53-9a1f-2a4b5c6d7e8f";

fn claims() -> serde_json::Value {
    json!({
        "sub": USER,
        "iss": issuer_for(URL),
        "aud": "authenticated",
        "exp": NOW + 3600,
        "role": "authenticated",
        "email": "admiral@example.com",
    })
}

fn setup() -> (Es256Key, AuthConfig) {
    let key = Es256Key::generate("k1");
    let config = AuthConfig { issuer: issuer_for(URL), jwks: JwkSet { keys: vec![key.public_jwk()] }, legacy_hs256_secret: None };
    (key, config)
}

fn check(token: &str, config: &AuthConfig, expected: Result<(), AuthError>) {
    let got = verify_user_token(token, config, NOW).map(|_| ());
    assert_eq!(got, expected, "token {token}");
}

fn with(change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut c = claims();
    change(&mut c);
    c
}

#[test]
fn a_supabase_token_verifies() {
    let (key, config) = setup();
    let user = verify_user_token(&key.sign(&claims()).unwrap(), &config, NOW).unwrap();
    assert_eq!(user.id.to_string(), USER);
    assert_eq!(user.email.as_deref(), Some("admiral@example.com"));
    assert!(!user.anonymous);
}

#[test]
fn an_anonymous_sign_in_is_told_apart() {
    let (key, config) = setup();
    let token = key.sign(&with(|c| c["is_anonymous"] = json!(true))).unwrap();
    assert!(verify_user_token(&token, &config, NOW).unwrap().anonymous);
    let token = key.sign(&with(|c| c["is_anonymous"] = json!(false))).unwrap();
    assert!(!verify_user_token(&token, &config, NOW).unwrap().anonymous);
}

#[test]
fn audience_may_be_a_list() {
    let (key, config) = setup();
    let token = key.sign(&with(|c| c["aud"] = json!(["authenticated"]))).unwrap();
    check(&token, &config, Ok(()));
}

#[test]
fn claims_that_do_not_hold_are_refused() {
    let (key, config) = setup();
    let invalid = |c: serde_json::Value| {
        let got = verify_user_token(&key.sign(&c).unwrap(), &config, NOW);
        assert!(matches!(got, Err(AuthError::Invalid(_))), "{c}: {got:?}");
    };
    invalid(with(|c| c["iss"] = json!("https://evil.example/auth/v1")));
    invalid(with(|c| c["aud"] = json!("anon")));
    invalid(with(|c| {
        c.as_object_mut().unwrap().remove("exp");
    }));
    invalid(with(|c| {
        c.as_object_mut().unwrap().remove("sub");
    }));

    let expired = key.sign(&with(|c| c["exp"] = json!(NOW))).unwrap();
    check(&expired, &config, Err(AuthError::Expired));
    let not_a_user = key.sign(&with(|c| c["sub"] = json!("service"))).unwrap();
    check(&not_a_user, &config, Err(AuthError::BadSubject));
}

#[test]
fn a_key_outside_the_set_is_refused() {
    let (_, config) = setup();
    let stranger = Es256Key::generate("k1");
    let got = verify_user_token(&stranger.sign(&claims()).unwrap(), &config, NOW);
    assert!(matches!(got, Err(AuthError::Invalid(_))), "{got:?}");

    let unnamed = Es256Key::generate("k2");
    check(&unnamed.sign(&claims()).unwrap(), &config, Err(AuthError::UnknownKey(Some("k2".into()))));
}

#[test]
fn alg_none_is_refused() {
    let (_, config) = setup();
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(claims()));
    check(&token, &config, Err(AuthError::AlgorithmNotAccepted("none".into())));
}

#[test]
fn hs256_only_with_a_legacy_secret() {
    let (_, mut config) = setup();
    let token = jsonwebtoken::encode(&Header::default(), &claims(), &EncodingKey::from_secret(b"legacy-secret").unwrap()).unwrap();
    check(&token, &config, Err(AuthError::AlgorithmNotAccepted("HS256".into())));
    config.legacy_hs256_secret = Some("legacy-secret".into());
    check(&token, &config, Ok(()));
    config.legacy_hs256_secret = Some("another-secret".into());
    assert!(verify_user_token(&token, &config, NOW).is_err());
}

#[test]
fn an_hs256_token_cannot_pose_as_the_public_key() {
    // The classic confusion attack: HMAC keyed with the public key's bytes.
    let (key, mut config) = setup();
    let public = serde_json::to_string(&key.public_jwk()).unwrap();
    let token = jsonwebtoken::encode(
        &Header { kid: Some("k1".into()), ..Header::default() },
        &claims(),
        &EncodingKey::from_secret(public.as_bytes()).unwrap(),
    )
    .unwrap();
    check(&token, &config, Err(AuthError::AlgorithmNotAccepted("HS256".into())));
    config.legacy_hs256_secret = Some("the-real-secret".into());
    assert!(verify_user_token(&token, &config, NOW).is_err());
}

#[test]
fn bearer_headers() {
    assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
    assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
    for bad in [None, Some(""), Some("Basic abc"), Some("Bearer"), Some("Bearer  ")] {
        assert_eq!(bearer_token(bad), Err(AuthError::Missing), "{bad:?}");
    }
}

#[test]
fn urls() {
    assert_eq!(issuer_for("https://x.supabase.co/"), "https://x.supabase.co/auth/v1");
    assert_eq!(jwks_url_for("https://x.supabase.co"), "https://x.supabase.co/auth/v1/.well-known/jwks.json");
}
