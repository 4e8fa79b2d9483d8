//! Who is calling: a Supabase user, verified against the project's JWK set (cached per isolate,
//! refetched when a token names a key the cache does not hold), or the operator. A token that
//! verified is kept per isolate until it expires, so that an upload's second phase, and the
//! client's next uploads, do not verify its signature again.

use std::cell::RefCell;

use fusou_auth::{
    AuthConfig, AuthError, AuthenticatedUser, JwkSet, TokenCache, accept_claims, bearer_token, issuer_for, jwks_url_for, read_token,
};
use fusou_core::config::OperatorRefusal;
use fusou_edge::remote::Service;
use worker::{Fetch, Request, Url};

use crate::context::Ctx;
use crate::crypto;
use crate::http::ApiError;

/// How long a fetched key set is trusted.
const JWKS_TTL_MS: u64 = 10 * 60 * 1000;
/// A token naming an unknown key refetches the set at most this often (key rotation).
const JWKS_REFRESH_MIN_MS: u64 = 30 * 1000;

struct Cached {
    url: String,
    set: JwkSet,
    fetched_ms: u64,
}

/// Bytes of verified tokens an isolate keeps (about 150 bytes each: some 7,000 users).
const VERIFIED_TOKENS_BYTES: usize = 1 << 20;

thread_local! {
    static JWKS: RefCell<Option<Cached>> = const { RefCell::new(None) };
    static VERIFIED: RefCell<TokenCache> = RefCell::new(TokenCache::new(VERIFIED_TOKENS_BYTES));
}

async fn fetch_jwks(ctx: &Ctx, url: &str) -> Result<JwkSet, ApiError> {
    let unavailable = |e: String| ApiError::new(503, format!("cannot fetch the token signing keys: {e}"));
    let url = Url::parse(url).map_err(|e| unavailable(e.to_string()))?;
    let fetch = async {
        let mut response = Fetch::Url(url.clone()).send().await?;
        if response.status_code() != 200 {
            return Err(worker::Error::RustError(format!("{url} answered {}", response.status_code())));
        }
        response.json::<JwkSet>().await
    };
    ctx.remote.call(Service::Supabase, "the token signing keys", fetch).await.map_err(|e| unavailable(e.to_string()))
}

/// The key set, from the cache unless it is stale (or `refresh` and old enough to refetch).
async fn jwks(ctx: &Ctx, refresh: bool) -> Result<JwkSet, ApiError> {
    let url = jwks_url_for(&ctx.supabase.url);
    let now = fusou_edge::now_ms();
    let cached = JWKS.with(|c| {
        c.borrow().as_ref().and_then(|c| {
            let age = now.saturating_sub(c.fetched_ms);
            let fresh = c.url == url && age < JWKS_TTL_MS && !(refresh && age >= JWKS_REFRESH_MIN_MS);
            fresh.then(|| c.set.clone())
        })
    });
    if let Some(set) = cached {
        return Ok(set);
    }
    let set = fetch_jwks(ctx, &url).await?;
    JWKS.with(|c| *c.borrow_mut() = Some(Cached { url, set: set.clone(), fetched_ms: now }));
    Ok(set)
}

/// The signed-in user of `req`, or 401 (503 when the keys cannot be fetched).
pub(crate) async fn user(req: &Request, ctx: &Ctx) -> Result<AuthenticatedUser, ApiError> {
    let header = req.headers().get("authorization")?;
    let token = bearer_token(header.as_deref())?;
    let now = fusou_edge::now_ms() / 1000;
    if let Some(user) = VERIFIED.with(|v| v.borrow().get(token, now).cloned()) {
        return Ok(user);
    }
    let config = |jwks| AuthConfig { issuer: issuer_for(&ctx.supabase.url), jwks, legacy_hs256_secret: ctx.legacy_jwt_secret.clone() };
    let user = match verify(token, &config(jwks(ctx, false).await?), now).await? {
        Err(AuthError::UnknownKey(_)) => verify(token, &config(jwks(ctx, true).await?), now).await??,
        other => other?,
    };
    VERIFIED.with(|v| v.borrow_mut().insert(token, user.clone(), now));
    Ok(user)
}

/// A user token checked as the core's `verify_user_token` does, its signature by WebCrypto:
/// the token's refusal inside, the platform's failure outside.
async fn verify(token: &str, config: &AuthConfig, now: u64) -> Result<Result<AuthenticatedUser, AuthError>, ApiError> {
    let read = match read_token(token, config) {
        Ok(read) => read,
        Err(refused) => return Ok(Err(refused)),
    };
    if !crypto::verify_signature(&read).await? {
        return Ok(Err(AuthError::Invalid("InvalidSignature".into())));
    }
    Ok(accept_claims(&read, config, now))
}

/// Passes only a request whose bearer is the operator secret (compared in constant time).
pub(crate) fn operator(req: &Request, ctx: &Ctx) -> Result<(), ApiError> {
    ctx.check_operator(req).map_err(refused)
}

/// Passes the open tables' readers: the operator, or a bearer of `LAKE_READ_SECRET`.
pub(crate) fn lake_reader(req: &Request, ctx: &Ctx) -> Result<(), ApiError> {
    ctx.check_lake_reader(req, ctx.lake_read_secret.as_deref()).map_err(refused)
}

fn refused(refusal: OperatorRefusal) -> ApiError {
    match refusal {
        OperatorRefusal::Misconfigured(e) => ApiError::misconfigured(e),
        OperatorRefusal::Missing => ApiError::new(401, refusal.to_string()),
        OperatorRefusal::Wrong => ApiError::forbidden(refusal.to_string()),
    }
}
