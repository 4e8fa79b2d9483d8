//! Signature and claims of a Supabase user token (feature `jwt`).

/// A JWK set as Supabase serves it (the type the Workers cache).
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AUTHENTICATED_AUDIENCE, AuthError, AuthenticatedUser, install_crypto};

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
    pub sub: String,
    pub iss: String,
    pub aud: serde_json::Value,
    pub exp: u64,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Set by Supabase for users signed in anonymously (no email, no identity).
    #[serde(default)]
    pub is_anonymous: bool,
}

/// Verifies a user access token at time `now` (seconds since the Unix epoch).
pub fn verify_user_token(token: &str, config: &AuthConfig, now: u64) -> Result<AuthenticatedUser, AuthError> {
    install_crypto();
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        // `alg: none` and unknown algorithms fail here, before any key is looked at.
        jsonwebtoken::errors::ErrorKind::Json(_) => {
            AuthError::AlgorithmNotAccepted(algorithm_name(token).unwrap_or_else(|| "unknown".into()))
        }
        _ => AuthError::Malformed(e.to_string()),
    })?;

    let key = match header.alg {
        Algorithm::HS256 => match &config.legacy_hs256_secret {
            Some(secret) => DecodingKey::from_secret(secret.as_bytes()).map_err(|e| AuthError::Invalid(e.to_string()))?,
            None => return Err(AuthError::AlgorithmNotAccepted("HS256".into())),
        },
        Algorithm::ES256 | Algorithm::RS256 => {
            let jwk = find_key(&config.jwks, header.alg, header.kid.as_deref())?;
            DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(e.to_string()))?
        }
        other => return Err(AuthError::AlgorithmNotAccepted(format!("{other:?}"))),
    };

    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[AUTHENTICATED_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Expiry is checked below against the caller's clock, not the library's.
    validation.validate_exp = false;
    validation.validate_nbf = false;

    let claims = jsonwebtoken::decode::<UserClaims>(token, &key, &validation).map_err(|e| AuthError::Invalid(e.to_string()))?.claims;
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
