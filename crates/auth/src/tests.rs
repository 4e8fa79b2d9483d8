use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
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
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(claims()));
    check(&token, &config, Err(AuthError::AlgorithmNotAccepted("none".into())));
}

#[test]
fn hs256_only_with_a_legacy_secret() {
    let (_, mut config) = setup();
    let token = hs256(Header::default(), b"legacy-secret");
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
    let token = hs256(Header { kid: Some("k1".into()), ..Header::default() }, public.as_bytes());
    check(&token, &config, Err(AuthError::AlgorithmNotAccepted("HS256".into())));
    config.legacy_hs256_secret = Some("the-real-secret".into());
    assert!(verify_user_token(&token, &config, NOW).is_err());
}

/// An HS256 token of the usual claims (signed through the core's provider, as the Workers do).
fn hs256(header: Header, secret: &[u8]) -> String {
    install_crypto();
    jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// A Supabase project signing with RSA: a 2048-bit key's JWK and a token it signed (made with
/// `openssl genrsa` and `openssl dgst -sha256 -sign`, outside this code) for the usual claims.
fn rs256_fixture() -> (Jwk, String) {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("rs256_fixture.json")).unwrap();
    (serde_json::from_value(fixture["jwk"].clone()).unwrap(), fixture["token"].as_str().unwrap().to_owned())
}

#[test]
fn an_rs256_token_verifies_and_a_changed_one_does_not() {
    let (jwk, token) = rs256_fixture();
    let (es256, mut config) = setup();
    check(&token, &config, Err(AuthError::UnknownKey(Some("rsa-1".into()))));
    config.jwks.keys.push(jwk);
    let user = verify_user_token(&token, &config, NOW).unwrap();
    assert_eq!(user.id.to_string(), USER);
    // The ES256 key still verifies beside it.
    check(&es256.sign(&claims()).unwrap(), &config, Ok(()));

    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[17] ^= 1;
    let changed = format!("{message}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    assert!(matches!(verify_user_token(&changed, &config, NOW), Err(AuthError::Invalid(_))));
}

#[test]
fn the_provider_knows_three_algorithms() {
    install_crypto();
    let (jwk, _) = rs256_fixture();
    let rsa = DecodingKey::from_jwk(&jwk).unwrap();
    // RS256 is known; the RSA-PSS and longer-hash variants of the same key are not linked.
    assert!(!jsonwebtoken::crypto::verify("AAAA", b"message", &rsa, Algorithm::RS256).unwrap());
    for algorithm in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::ES384, Algorithm::EdDSA] {
        let got = jsonwebtoken::crypto::verify("AAAA", b"message", &rsa, algorithm);
        assert!(
            matches!(got.as_ref().map_err(|e| e.kind()), Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm)),
            "{algorithm:?}: {got:?}"
        );
    }
}

#[test]
fn verified_tokens_are_kept_until_they_expire_and_the_cache_stays_bounded() {
    let (key, config) = setup();
    let token = key.sign(&claims()).unwrap();
    let user = verify_user_token(&token, &config, NOW).unwrap();
    assert_eq!(user.expires_at, NOW + 3600);
    // Room for two entries of this user.
    let entry = 128 + user.email.as_ref().map_or(0, String::len);
    let mut cache = TokenCache::new(2 * entry);
    assert!(cache.get(&token, NOW).is_none());
    cache.insert(&token, user.clone(), NOW);
    assert_eq!(cache.get(&token, NOW), Some(&user));
    assert_eq!(cache.get(&token, NOW + 3600), None, "not at its expiry");
    assert_eq!(cache.get("another token", NOW), None);

    // Full: the expired go first; when none has expired, everything goes.
    let soon = AuthenticatedUser { expires_at: NOW + 10, ..user.clone() };
    cache.insert("second", soon, NOW);
    cache.insert("third", user.clone(), NOW + 20);
    assert_eq!((cache.len(), cache.get("second", NOW + 20)), (2, None));
    assert!(cache.get(&token, NOW + 20).is_some() && cache.get("third", NOW + 20).is_some());
    cache.insert("fourth", user.clone(), NOW + 20);
    assert_eq!(cache.len(), 1);
    assert!(cache.get("fourth", NOW + 20).is_some());
    assert_eq!(cache.used_bytes(), entry);

    // Bounded in bytes, not in entries: a user with a long address takes its room, and one that
    // could never fit is not kept at all.
    let long = AuthenticatedUser { email: Some("x".repeat(entry)), ..user.clone() };
    cache.insert("fifth", long.clone(), NOW + 20);
    assert!(cache.get("fifth", NOW + 20).is_some() && cache.get("fourth", NOW + 20).is_none());
    assert!(cache.used_bytes() <= 2 * entry);
    cache.insert("huge", AuthenticatedUser { email: Some("x".repeat(4 * entry)), ..user }, NOW + 20);
    assert!(cache.get("huge", NOW + 20).is_none() && cache.used_bytes() <= 2 * entry);
}

#[test]
fn bearer_headers() {
    assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
    assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
    for bad in [None, Some(""), Some("Basic abc"), Some("Bearer"), Some("Bearer  ")] {
        assert_eq!(bearer_token(bad), Err(AuthError::Missing), "{bad:?}");
    }
    // Tokens over 8 KiB are refused before anything reads them.
    let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    assert!(matches!(bearer_token(Some(&long)), Err(AuthError::Invalid(_))));
    let fits = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
    assert!(bearer_token(Some(&fits)).is_ok());
}

#[test]
fn urls() {
    assert_eq!(issuer_for("https://x.supabase.co/"), "https://x.supabase.co/auth/v1");
    assert_eq!(jwks_url_for("https://x.supabase.co"), "https://x.supabase.co/auth/v1/.well-known/jwks.json");
}
