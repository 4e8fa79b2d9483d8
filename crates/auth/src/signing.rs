//! An ES256 signing key in the manner of Supabase Auth: it mints user access tokens and
//! publishes its public half as a JWK. Only the local Supabase stand-in and tests use it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;

/// A P-256 private key with its key id.
pub struct Es256Key {
    kid: String,
    secret: p256::SecretKey,
    encoding: EncodingKey,
}

/// Why a key could not be read or a token signed; the message says which.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum SigningError {
    #[error("invalid PKCS#8 key: {0}")]
    Key(String),
    #[error("cannot sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

impl Es256Key {
    /// A fresh random key.
    pub fn generate(kid: impl Into<String>) -> Self {
        Self::from_secret(kid.into(), <p256::SecretKey as p256::elliptic_curve::Generate>::generate())
    }

    /// A key read from a PKCS#8 PEM document, as written by [`Es256Key::to_pkcs8_pem`].
    pub fn from_pkcs8_pem(kid: impl Into<String>, pem: &str) -> Result<Self, SigningError> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| SigningError::Key(e.to_string()))?;
        Ok(Self::from_secret(kid.into(), secret))
    }

    fn from_secret(kid: String, secret: p256::SecretKey) -> Self {
        let der = secret.to_pkcs8_der().expect("a P-256 key encodes as PKCS#8");
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        Self { kid, secret, encoding }
    }

    /// The key's id, as its JWK and the tokens it signs name it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as a PKCS#8 PEM document.
    pub fn to_pkcs8_pem(&self) -> String {
        self.secret.to_pkcs8_pem(LineEnding::LF).expect("a P-256 key encodes as PKCS#8").to_string()
    }

    /// The public key as Supabase publishes it: `kty=EC`, `crv=P-256`, `alg=ES256`, `use=sig`.
    pub fn public_jwk(&self) -> Jwk {
        let point = self.secret.public_key().to_sec1_bytes(); // 0x04 || x || y
        let (x, y) = point[1..].split_at(32);
        serde_json::from_value(serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "key_ops": ["verify"],
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }))
        .expect("a well-formed EC JWK")
    }

    /// Signs `claims` with this key, naming it in the header's `kid`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, SigningError> {
        crate::install_crypto();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}
