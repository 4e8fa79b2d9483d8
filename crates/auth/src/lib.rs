//! Verification of Supabase user access tokens.
//!
//! Supabase signs user tokens with an asymmetric key (ES256, sometimes RS256) whose public half
//! is served as a JWK set at `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`; older projects sign
//! with HS256 and the project's JWT secret. A token is accepted when its signature verifies with
//! a key of the set (HS256 only when a legacy secret is configured), its algorithm is the key's,
//! `iss` is `<SUPABASE_URL>/auth/v1`, `aud` is `authenticated`, `exp` is in the future and `sub`
//! is a UUID. `alg: none` and every other algorithm are refused.
//!
//! The caller passes the current time and the key set, so this module does no I/O and no clock
//! reads; the Worker caches the fetched set. Verifying an asymmetric signature here, in Rust
//! (`verify_user_token`), is feature `verify`, for native tools and tests: the upload Worker
//! verifies it with the platform's WebCrypto. Signing user tokens (feature `signing`, [`signing`])
//! is for the local Supabase stand-in and tests only.

mod crypto;
#[cfg(feature = "signing")]
pub mod signing;
mod verify;

/// Installs the signature algorithms this crate links as `jsonwebtoken`'s provider (idempotent);
/// called before any token is signed or verified.
pub use crypto::install as install_crypto;
/// The JWT types a verifier outside the core needs (the Worker's WebCrypto).
pub use jsonwebtoken::{
    Algorithm,
    jwk::{AlgorithmParameters, Jwk},
};
#[cfg(feature = "verify")]
pub use verify::verify_user_token;
pub use verify::{AuthConfig, JwkSet, ReadToken, SigningKey, UserClaims, accept_claims, read_token};

use uuid::Uuid;

/// The audience Supabase puts in every signed-in user's token.
pub const AUTHENTICATED_AUDIENCE: &str = "authenticated";

/// A caller whose token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user's id (the token's `sub`).
    pub id: Uuid,
    /// The user's email, when the token carries one.
    pub email: Option<String>,
    /// A Supabase anonymous sign-in (`is_anonymous`): whether it may upload is a setting.
    pub anonymous: bool,
    /// The token's `exp` (seconds since the Unix epoch).
    pub expires_at: u64,
}

/// Why a token was refused. Every variant is an authentication failure (HTTP 401), and its
/// message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted")]
    AlgorithmNotAccepted(String),
    #[error("no signing key matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("token signature or claims are invalid: {0}")]
    Invalid(String),
    #[error("token has expired")]
    Expired,
    #[error("token subject is not a user id")]
    BadSubject,
}

/// `<SUPABASE_URL>/auth/v1`, the issuer of the project's user tokens.
pub fn issuer_for(supabase_url: &str) -> String {
    format!("{}/auth/v1", supabase_url.trim_end_matches('/'))
}

/// `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`, where the project's public keys are served.
pub fn jwks_url_for(supabase_url: &str) -> String {
    format!("{}/.well-known/jwks.json", issuer_for(supabase_url))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!("the token is {} bytes, more than {MAX_TOKEN_BYTES}", token.len())));
    }
    Ok(token)
}

/// Longest bearer token read: Supabase access tokens are about 1 KB (more with large user
/// metadata); nothing longer is parsed, verified or cached.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// Tokens that verified, until they expire: a client's two upload phases (and its next uploads)
/// present one token, and its signature is verified once per isolate, not once per request.
/// Keyed by the token's SHA-256 (a token carries user metadata, and its length is the
/// sender's choice) and bounded in bytes: when full, expired entries go, and if that is not
/// enough, all of them (a cache is refilled by verifying, never wrong).
///
/// A token stays accepted until its `exp` even if its key leaves the JWK set meanwhile, as it
/// would for any verifier of stateless tokens; Supabase tokens live an hour by default.
#[derive(Debug)]
pub struct TokenCache {
    capacity_bytes: usize,
    used_bytes: usize,
    verified: std::collections::HashMap<[u8; 32], AuthenticatedUser>,
}

/// What one cached token costs besides its e-mail address: its digest, the user and the map's
/// own slot.
const CACHED_TOKEN_BYTES: usize = 128;

impl TokenCache {
    /// A cache holding at most about `capacity_bytes` of verified tokens.
    pub fn new(capacity_bytes: usize) -> Self {
        Self { capacity_bytes, used_bytes: 0, verified: std::collections::HashMap::new() }
    }

    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn cost(user: &AuthenticatedUser) -> usize {
        CACHED_TOKEN_BYTES + user.email.as_ref().map_or(0, String::len)
    }

    /// The user of a token that verified before and has not expired at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<&AuthenticatedUser> {
        self.verified.get(&Self::key(token)).filter(|user| user.expires_at > now)
    }

    /// Keeps `token`'s verified `user` until the token expires, making room by forgetting
    /// expired tokens first, then every token.
    pub fn insert(&mut self, token: &str, user: AuthenticatedUser, now: u64) {
        let cost = Self::cost(&user);
        if cost > self.capacity_bytes {
            return;
        }
        if self.used_bytes + cost > self.capacity_bytes {
            self.verified.retain(|_, user| user.expires_at > now);
            self.used_bytes = self.verified.values().map(Self::cost).sum();
            if self.used_bytes + cost > self.capacity_bytes {
                self.verified.clear();
                self.used_bytes = 0;
            }
        }
        if let Some(old) = self.verified.insert(Self::key(token), user) {
            self.used_bytes -= Self::cost(&old);
        }
        self.used_bytes += cost;
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }

    /// Bytes the cache accounts for (at most its capacity).
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

#[cfg(test)]
mod tests;
