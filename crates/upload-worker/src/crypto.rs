//! The platform's WebCrypto, where it does the upload's work faster than the same code in Wasm
//! (`scripts/bench-upload.sh`, "the upload's crypto": SHA-256 is 1.5 to 5 times faster there,
//! copying the body out of Wasm memory included, and ES256 and RS256 verification about 4 times),
//! and spares the bundle the P-256 and RSA code.

use std::cell::RefCell;
use std::collections::HashMap;

use fusou_auth::{Algorithm, AlgorithmParameters, Jwk, ReadToken, SigningKey};
use fusou_core::upload::ContentHash;
use worker::js_sys::{self, Object, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{CryptoKey, SubtleCrypto, WorkerGlobalScope};

use crate::http::ApiError;

/// The SHA-256 of `bytes`, by `crypto.subtle.digest`.
pub(crate) async fn sha256(bytes: &[u8]) -> Result<ContentHash, ApiError> {
    let failed = |e: JsValue| ApiError::new(500, format!("WebCrypto digest failed: {e:?}"));
    let promise = subtle().map_err(failed)?.digest_with_str_and_buffer_source("SHA-256", &Uint8Array::from(bytes)).map_err(failed)?;
    let digest = JsFuture::from(promise).await.map_err(failed)?;
    Ok(ContentHash::from_digest(&Uint8Array::new(&digest).to_vec())?)
}

/// Verifies a user token's signature (ES256, RS256, or HS256 with the legacy secret) with
/// `crypto.subtle.verify`. Each key is imported once per isolate: a token's key is looked up
/// by its algorithm and key material, so that a rotated key is a new entry.
pub(crate) async fn verify_signature(token: &ReadToken<'_, '_>) -> Result<bool, ApiError> {
    let failed = |e: JsValue| ApiError::new(500, format!("WebCrypto verify failed: {e:?}"));
    // The key material as WebCrypto imports it: a JWK's public members, or the raw secret.
    let (import, verify, format, material) = match (token.algorithm, token.key) {
        (Algorithm::ES256, SigningKey::Jwk(jwk)) => (
            object(&[("name", "ECDSA".into()), ("namedCurve", "P-256".into())]),
            object(&[("name", "ECDSA".into()), ("hash", "SHA-256".into())]),
            "jwk",
            public_jwk(jwk)?,
        ),
        (Algorithm::RS256, SigningKey::Jwk(jwk)) => (
            object(&[("name", "RSASSA-PKCS1-v1_5".into()), ("hash", "SHA-256".into())]),
            object(&[("name", "RSASSA-PKCS1-v1_5".into())]),
            "jwk",
            public_jwk(jwk)?,
        ),
        (Algorithm::HS256, SigningKey::Secret(secret)) => {
            (object(&[("name", "HMAC".into()), ("hash", "SHA-256".into())]), object(&[("name", "HMAC".into())]), "raw", secret.to_owned())
        }
        (algorithm, _) => return Err(ApiError::new(401, format!("token algorithm {algorithm:?} is not accepted"))),
    };
    let subtle = subtle().map_err(failed)?;
    let cache_key = format!("{:?} {material}", token.algorithm);
    let cached = KEYS.with(|keys| keys.borrow().get(&cache_key).cloned());
    let key = match cached {
        Some(key) => key,
        None => {
            let usages = js_sys::Array::of1(&"verify".into());
            let data: Object = match format {
                "jwk" => js_sys::JSON::parse(&material).map_err(failed)?.unchecked_into(),
                _ => Uint8Array::from(material.as_bytes()).into(),
            };
            let promise = subtle.import_key_with_object(format, &data, &import, false, &usages).map_err(failed)?;
            let key: CryptoKey = JsFuture::from(promise).await.map_err(failed)?.unchecked_into();
            KEYS.with(|keys| {
                let mut keys = keys.borrow_mut();
                // A handful of keys at most (a project's set, rotations); never more than this.
                if keys.len() >= 16 {
                    keys.clear();
                }
                keys.insert(cache_key, key.clone());
            });
            key
        }
    };
    let signature = token.signature()?;
    let promise =
        subtle.verify_with_object_and_u8_array_and_u8_array(&verify, &key, &signature, token.message.as_bytes()).map_err(failed)?;
    Ok(JsFuture::from(promise).await.map_err(failed)?.as_bool() == Some(true))
}

thread_local! {
    static KEYS: RefCell<HashMap<String, CryptoKey>> = RefCell::new(HashMap::new());
}

fn subtle() -> Result<SubtleCrypto, JsValue> {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    Ok(scope.crypto()?.subtle())
}

/// The public members of a JWK, and nothing WebCrypto could refuse (`use`, `key_ops`, `alg`).
fn public_jwk(jwk: &Jwk) -> Result<String, ApiError> {
    let value = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => serde_json::json!({ "kty": "EC", "crv": "P-256", "x": ec.x, "y": ec.y }),
        AlgorithmParameters::RSA(rsa) => serde_json::json!({ "kty": "RSA", "n": rsa.n, "e": rsa.e }),
        _ => return Err(ApiError::new(401, "the token's key is neither EC nor RSA")),
    };
    Ok(value.to_string())
}

fn object(members: &[(&str, JsValue)]) -> Object {
    let object = Object::new();
    for (name, value) in members {
        // Setting a property on a fresh plain object cannot fail.
        let _ = js_sys::Reflect::set(&object, &(*name).into(), value);
    }
    object
}
