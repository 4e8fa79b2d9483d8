//! Signature and claims of a Supabase user token (feature `jwt`; verifying the signature here,
//! rather than with the platform's WebCrypto, is feature `jwt-verify`).

use jsonwebtoken::Algorithm;
#[cfg(feature = "verify")]
use jsonwebtoken::DecodingKey;
/// A JWK set as Supabase serves it (the type the Workers cache).
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg(feature = "verify")]
use super::install_crypto;
use super::{AUTHENTICATED_AUDIENCE, AuthError, AuthenticatedUser};

/// Where a token must come from and which keys may have signed it.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `<SUPABASE_URL>/auth/v1`, see [`super::issuer_for`].
    pub issuer: String,
    /// The project's public signing keys.
    pub jwks: JwkSet,
    /// The legacy HS256 JWT secret; `None` refuses every HS256 token.
    pub legacy_hs256_secret: Option<String>,
}

/// The claims of a Supabase access token that the services use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    /// The user's id (a UUID, checked by [`accept_claims`]).
    pub sub: String,
    /// The issuer: `<SUPABASE_URL>/auth/v1`.
    pub iss: String,
    /// The audience: `authenticated`, as a string or in a list.
    pub aud: serde_json::Value,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// The Postgres role the token grants.
    #[serde(default)]
    pub role: Option<String>,
    /// The user's email.
    #[serde(default)]
    pub email: Option<String>,
    /// Set by Supabase for users signed in anonymously (no email, no identity).
    #[serde(default)]
    pub is_anonymous: bool,
}

/// Verifies a user access token at time `now` (seconds since the Unix epoch), its signature
/// here (with the algorithms of `auth::crypto`).
#[cfg(feature = "verify")]
pub fn verify_user_token(token: &str, config: &AuthConfig, now: u64) -> Result<AuthenticatedUser, AuthError> {
    install_crypto();
    let read = read_token(token, config)?;
    let key = match &read.key {
        SigningKey::Secret(secret) => DecodingKey::from_secret(secret.as_bytes()),
        SigningKey::Jwk(jwk) => DecodingKey::from_jwk(jwk),
    }
    .map_err(|e| AuthError::Invalid(e.to_string()))?;
    let signature = read.signature_b64();
    match jsonwebtoken::crypto::verify(signature, read.message.as_bytes(), &key, read.algorithm) {
        Ok(true) => accept_claims(&read, config, now),
        Ok(false) => Err(AuthError::Invalid("InvalidSignature".into())),
        Err(e) => Err(AuthError::Invalid(e.to_string())),
    }
}

/// The key a token must have been signed with.
#[derive(Debug, Clone, Copy)]
pub enum SigningKey<'a> {
    /// The legacy HS256 secret.
    Secret(&'a str),
    /// A key of the project's JWK set (ES256 or RS256).
    Jwk(&'a Jwk),
}

/// A token whose header and key are known good, its signature not yet verified: the Worker
/// verifies it with the platform's WebCrypto, native code with [`verify_user_token`]; either
/// way [`accept_claims`] follows.
#[derive(Debug)]
pub struct ReadToken<'t, 'c> {
    /// The token's algorithm, which is its key's.
    pub algorithm: Algorithm,
    /// The key that must have signed it.
    pub key: SigningKey<'c>,
    /// `<header>.<payload>`, the bytes the signature covers.
    pub message: &'t str,
    token: &'t str,
}

impl ReadToken<'_, '_> {
    /// The signature as the token carries it (base64url).
    pub fn signature_b64(&self) -> &str {
        &self.token[self.message.len() + 1..]
    }

    /// The signature's bytes (for ES256, `r || s`, as WebCrypto takes it).
    pub fn signature(&self) -> Result<Vec<u8>, AuthError> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(self.signature_b64()).map_err(|e| AuthError::Malformed(e.to_string()))
    }
}

/// Reads a token's header: its algorithm is accepted and a key of `config` may have signed it.
/// `alg: none` and every algorithm but HS256 (with a legacy secret), ES256 and RS256 are refused.
pub fn read_token<'t, 'c>(token: &'t str, config: &'c AuthConfig) -> Result<ReadToken<'t, 'c>, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        // `alg: none` and unknown algorithms fail here, before any key is looked at.
        jsonwebtoken::errors::ErrorKind::Json(_) => {
            AuthError::AlgorithmNotAccepted(algorithm_name(token).unwrap_or_else(|| "unknown".into()))
        }
        _ => AuthError::Malformed(e.to_string()),
    })?;
    let key = match header.alg {
        Algorithm::HS256 => match &config.legacy_hs256_secret {
            Some(secret) => SigningKey::Secret(secret),
            None => return Err(AuthError::AlgorithmNotAccepted("HS256".into())),
        },
        Algorithm::ES256 | Algorithm::RS256 => SigningKey::Jwk(find_key(&config.jwks, header.alg, header.kid.as_deref())?),
        other => return Err(AuthError::AlgorithmNotAccepted(format!("{other:?}"))),
    };
    let message = token.rsplit_once('.').map(|(message, _)| message).ok_or_else(|| AuthError::Malformed("not a JWS".into()))?;
    if message.matches('.').count() != 1 {
        return Err(AuthError::Malformed("a JWS has three parts".into()));
    }
    Ok(ReadToken { algorithm: header.alg, key, message, token })
}

/// The user of a token whose signature verified: its claims must hold at `now`. `iss` is the
/// project's, `aud` is (or lists) `authenticated`, `exp` is in the future, `sub` is a UUID;
/// `exp`, `iss`, `aud` and `sub` are required.
pub fn accept_claims(read: &ReadToken, config: &AuthConfig, now: u64) -> Result<AuthenticatedUser, AuthError> {
    use base64::Engine as _;
    let payload = read.message.split_once('.').map(|(_, payload)| payload).unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let claims: UserClaims = serde_json::from_slice(&json).map_err(|e| AuthError::Invalid(format!("claims: {e}")))?;
    if claims.iss != config.issuer {
        return Err(AuthError::Invalid("InvalidIssuer".into()));
    }
    let audience_fits = match &claims.aud {
        serde_json::Value::String(aud) => aud == AUTHENTICATED_AUDIENCE,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a == AUTHENTICATED_AUDIENCE),
        _ => false,
    };
    if !audience_fits {
        return Err(AuthError::Invalid("InvalidAudience".into()));
    }
    if claims.exp <= now {
        return Err(AuthError::Expired);
    }
    let id = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::BadSubject)?;
    Ok(AuthenticatedUser { id, email: claims.email, anonymous: claims.is_anonymous, expires_at: claims.exp })
}

/// The key that signed a token: by `kid` when the token names one, otherwise the only key of
/// the right type. The key's declared algorithm, when it has one, must be the token's.
fn find_key<'a>(jwks: &'a JwkSet, alg: Algorithm, kid: Option<&str>) -> Result<&'a Jwk, AuthError> {
    let fits = |k: &&Jwk| {
        let type_fits = matches!(
            (&k.algorithm, alg),
            (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256) | (AlgorithmParameters::RSA(_), Algorithm::RS256)
        );
        let alg_fits = match k.common.key_algorithm {
            None => true,
            Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
            Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
            Some(_) => false,
        };
        type_fits && alg_fits
    };
    let unknown = || AuthError::UnknownKey(kid.map(str::to_owned));
    match kid {
        Some(kid) => {
            let key = jwks.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)).ok_or_else(unknown)?;
            if fits(&key) { Ok(key) } else { Err(AuthError::AlgorithmNotAccepted(format!("{alg:?} for key {kid}"))) }
        }
        None => {
            let mut candidates = jwks.keys.iter().filter(fits);
            match (candidates.next(), candidates.next()) {
                (Some(key), None) => Ok(key),
                _ => Err(unknown()),
            }
        }
    }
}

/// The `alg` a token's header claims, read without trusting it (for error messages).
fn algorithm_name(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(value.get("alg")?.as_str()?.to_owned())
}
