//! Who is calling: the API keys at the gateway, and the caller's database role and JWT claims.
//!
//! As in Supabase, every request carries an `apikey` header (the publishable or the secret
//! key). `Authorization: Bearer` then names the caller: the secret key runs as `service_role`
//! (which bypasses row-level security), a user's access token as `authenticated` with its
//! claims, and no bearer at all as the role of the `apikey`.

use fusou_auth::signing::Es256Key;
use fusou_auth::{AuthConfig, AuthError, bearer_token, verify_user_token};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use crate::error::ApiError;

pub(crate) struct Keys {
    pub publishable: String,
    pub secret: String,
    pub signing: Es256Key,
    pub issuer: String,
}

/// A caller the database will see: its role and the claims `auth.uid()` reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Caller {
    pub role: &'static str,
    pub claims: Value,
}

impl Caller {
    pub(crate) fn is_authenticated(&self) -> bool {
        self.role != "anon"
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the clock is after 1970").as_secs()
}

impl Keys {
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.signing.public_jwk()] }
    }

    fn auth_config(&self) -> AuthConfig {
        AuthConfig { issuer: self.issuer.clone(), jwks: self.jwks(), legacy_hs256_secret: None }
    }

    /// The gateway's check: a known API key must be present.
    fn api_key_role(&self, apikey: Option<&str>) -> Result<&'static str, ApiError> {
        match apikey {
            None => Err(ApiError::gateway("No API key found in request", "No `apikey` request header or url param was found.")),
            Some(k) if k == self.secret => Ok("service_role"),
            Some(k) if k == self.publishable => Ok("anon"),
            Some(_) => Err(ApiError::gateway("Invalid API key", "Double check your Supabase `anon` or `service_role` API key.")),
        }
    }

    pub(crate) fn caller(&self, apikey: Option<&str>, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let key_role = self.api_key_role(apikey)?;
        let token = match bearer_token(authorization) {
            Ok(t) => t,
            Err(_) if authorization.is_none() => {
                return Ok(Caller { role: key_role, claims: json!({ "role": key_role }) });
            }
            Err(e) => return Err(ApiError::pgrst(401, "PGRST301", e.to_string())),
        };
        if token == self.secret {
            return Ok(Caller { role: "service_role", claims: json!({ "role": "service_role" }) });
        }
        if token == self.publishable {
            return Ok(Caller { role: "anon", claims: json!({ "role": "anon" }) });
        }
        match verify_user_token(token, &self.auth_config(), now()) {
            Ok(_) => Ok(Caller { role: "authenticated", claims: payload(token)? }),
            Err(AuthError::Expired) => Err(ApiError::pgrst(401, "PGRST303", "JWT expired")),
            Err(e) => Err(ApiError::pgrst(401, "PGRST301", e.to_string())),
        }
    }

    /// Only the secret key may use the admin endpoints.
    pub(crate) fn require_secret(&self, apikey: Option<&str>, authorization: Option<&str>) -> Result<(), ApiError> {
        match self.caller(apikey, authorization)?.role {
            "service_role" => Ok(()),
            _ => Err(ApiError::pgrst(403, "42501", "this endpoint needs the secret (service) key")),
        }
    }
}

/// The claims of a token whose signature has already been verified.
fn payload(token: &str) -> Result<Value, ApiError> {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::pgrst(401, "PGRST301", "token payload is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            publishable: "sb_publishable_x".into(),
            secret: "sb_secret_y".into(),
            signing: Es256Key::generate("k"),
            issuer: "http://127.0.0.1:54321/auth/v1".into(),
        }
    }

    #[test]
    fn roles_follow_the_keys_and_the_bearer() {
        let k = keys();
        assert_eq!(k.caller(Some("sb_secret_y"), None).unwrap().role, "service_role");
        assert_eq!(k.caller(Some("sb_publishable_x"), None).unwrap().role, "anon");
        assert_eq!(k.caller(Some("sb_publishable_x"), Some("Bearer sb_secret_y")).unwrap().role, "service_role");
        let token = k
            .signing
            .sign(&json!({"sub": "6f1c1c7e-3b8a-4c53-9a1f-2a4b5c6d7e8f", "iss": k.issuer, "aud": "authenticated", "exp": now() + 60, "role": "authenticated"}))
            .unwrap();
        let user = k.caller(Some("sb_publishable_x"), Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(user.role, "authenticated");
        assert_eq!(user.claims["sub"], "6f1c1c7e-3b8a-4c53-9a1f-2a4b5c6d7e8f");
    }

    #[test]
    fn bad_keys_and_tokens_are_401() {
        let k = keys();
        for (apikey, auth) in [
            (None, None),
            (Some("wrong"), None),
            (Some("sb_publishable_x"), Some("Bearer not-a-jwt")),
            (Some("sb_publishable_x"), Some("Basic abc")),
        ] {
            assert_eq!(k.caller(apikey, auth).unwrap_err().status, 401, "{apikey:?} {auth:?}");
        }
        assert_eq!(k.require_secret(Some("sb_publishable_x"), None).unwrap_err().status, 403);
    }
}
