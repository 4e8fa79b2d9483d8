//! The two-phase battle-data upload, as the deployed FUSOU client performs it.
//!
//! Phase 1 (the handshake) declares what will be sent: [`Handshake::parse`] accepts exactly the
//! client's JSON, quirks included, and checks everything that can be checked before any byte
//! arrives. The answer carries an [`UploadGrant`]: a short-lived HS256 token signed with the
//! service's own secret that binds the user, the storage key, the hash, the size, the segments
//! and the period. Phase 2 sends the raw bytes; [`UploadGrant::check_body`] holds them to what
//! was declared.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use fusou_contract::fragment::{self, FragmentError, TableOffset};
use fusou_contract::ids::{DatasetId, IdError, PeriodTag, TableName};

/// The audience of upload grants, so that no other token of ours can pose as one.
const GRANT_AUDIENCE: &str = "fusou-upload";
/// Shortest accepted signing secret.
pub const MIN_SECRET_LEN: usize = 32;

/// The largest body any upload route may be configured to accept. The upload Worker holds a
/// body in its Wasm memory and hands a copy to R2, and one isolate (128 MB) serves several
/// requests at once; the compaction Worker holds a whole fragment while it merges it (see
/// `COMPACTION_MAX_RUN_BYTES`, 32 MiB: a larger fragment is quarantined unread).
pub const MAX_BODY_BYTES_CEILING: u64 = 32 << 20;

/// Limits and rules of the upload routes, configurable per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest fragment the two-phase upload accepts (413 above). The client's fragments are
    /// tens of kilobytes.
    pub max_fragment_bytes: u64,
    /// Largest file the one-step operator upload accepts (413 above).
    pub max_direct_bytes: u64,
    /// How long an upload grant stays valid.
    pub grant_ttl_secs: u64,
    /// Whether Supabase's anonymous sign-ins (`is_anonymous`) may upload (default: no, 403).
    pub allow_anonymous: bool,
    /// Most rows one upload may hold, all its segments together (413 above). A fragment is the
    /// battles since the client's last upload: hundreds of rows. Rows cost their columns when
    /// decoded however few bytes declare them, so this bounds what one upload costs compaction.
    pub max_rows: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self { max_fragment_bytes: 16 << 20, max_direct_bytes: 16 << 20, grant_ttl_secs: 120, allow_anonymous: false, max_rows: 1_000_000 }
    }
}

/// Why an upload was refused, with the HTTP status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{what} is {size} bytes, more than the {max} allowed")]
    TooLarge { what: &'static str, size: u64, max: u64 },
    #[error("{0}")]
    BadFragment(#[from] FragmentError),
    #[error("upload token is invalid: {0}")]
    BadGrant(String),
    #[error("upload token has expired: start the upload again")]
    GrantExpired,
    #[error("upload token was issued to another user")]
    ForeignGrant,
    #[error("the upload service is misconfigured: {0}")]
    Misconfigured(&'static str),
    #[error("anonymous sign-ins may not upload here: sign in with an account")]
    Anonymous,
    #[error("the fragment holds {rows} rows, more than the {max} one upload may hold")]
    TooManyRows { rows: u64, max: u64 },
}

impl UploadError {
    pub fn status(&self) -> u16 {
        match self {
            UploadError::BadRequest(_) | UploadError::BadFragment(_) => 400,
            UploadError::TooLarge { .. } | UploadError::TooManyRows { .. } => 413,
            UploadError::BadGrant(_) | UploadError::GrantExpired => 401,
            UploadError::ForeignGrant | UploadError::Anonymous => 403,
            UploadError::Misconfigured(_) => 500,
        }
    }
}

impl From<IdError> for UploadError {
    fn from(e: IdError) -> Self {
        UploadError::BadRequest(e.to_string())
    }
}

/// Who may upload: every signed-in user, and an anonymous sign-in only where allowed.
pub fn check_uploader(user: &fusou_auth::AuthenticatedUser, limits: &UploadLimits) -> Result<(), UploadError> {
    if user.anonymous && !limits.allow_anonymous {
        return Err(UploadError::Anonymous);
    }
    Ok(())
}

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

impl ContentHash {
    pub fn parse(raw: &str) -> Result<Self, UploadError> {
        if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(UploadError::BadRequest("content_hash must be 64 lowercase hex digits (SHA-256)".into()))
        }
    }

    /// The SHA-256 of `bytes`, computed here (natively, or in Wasm).
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// A SHA-256 digest computed elsewhere (the Worker asks the platform's WebCrypto, several
    /// times faster than the same digest in Wasm: `scripts/bench-upload.sh`).
    pub fn from_digest(digest: &[u8]) -> Result<Self, UploadError> {
        if digest.len() == 32 { Ok(Self(hex::encode(digest))) } else { Err(UploadError::Misconfigured("a SHA-256 digest is 32 bytes")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes of the digest (for checksums such as R2's `sha256`).
    pub fn to_bytes(&self) -> Vec<u8> {
        hex::decode(&self.0).expect("a ContentHash is 64 hex digits")
    }
}

impl TryFrom<String> for ContentHash {
    type Error = UploadError;
    fn try_from(v: String) -> Result<Self, UploadError> {
        Self::parse(&v)
    }
}

impl From<ContentHash> for String {
    fn from(v: ContentHash) -> String {
        v.0
    }
}

/// `file_size` arrives as a JSON string of decimal digits from the client; a number is accepted too.
fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let bad = |v: &serde_json::Value| serde::de::Error::custom(format!("file_size {v} is not a whole number of bytes"));
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| bad(&serde_json::Value::Number(n.clone()))),
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(serde::de::Error::custom)
        }
        other => Err(bad(&other)),
    }
}

/// The handshake body exactly as the client sends it. `path` and `binary` are sent and ignored.
#[derive(Deserialize)]
struct RawHandshake {
    dataset_id: String,
    table: String,
    kc_period_tag: String,
    #[serde(deserialize_with = "deserialize_size")]
    file_size: u64,
    #[serde(deserialize_with = "fragment::deserialize_offsets")]
    table_offsets: Vec<TableOffset>,
    content_hash: String,
}

/// A validated phase-1 declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub dataset_id: DatasetId,
    pub table: TableName,
    pub period_tag: PeriodTag,
    pub file_size: u64,
    pub offsets: Vec<TableOffset>,
    pub content_hash: ContentHash,
}

impl Handshake {
    pub fn parse(body: &[u8], limits: &UploadLimits) -> Result<Self, UploadError> {
        let raw: RawHandshake = serde_json::from_slice(body).map_err(|e| UploadError::BadRequest(format!("invalid handshake: {e}")))?;
        let handshake = Handshake {
            dataset_id: DatasetId::parse(&raw.dataset_id)?,
            table: TableName::parse(&raw.table)?,
            period_tag: PeriodTag::parse(&raw.kc_period_tag)?,
            file_size: raw.file_size,
            offsets: raw.table_offsets,
            content_hash: ContentHash::parse(&raw.content_hash)?,
        };
        if handshake.file_size == 0 {
            return Err(UploadError::BadRequest("file_size must be greater than 0".into()));
        }
        if handshake.file_size > limits.max_fragment_bytes {
            return Err(UploadError::TooLarge { what: "file_size", size: handshake.file_size, max: limits.max_fragment_bytes });
        }
        fragment::validate_offsets(&handshake.offsets, handshake.file_size)?;
        Ok(handshake)
    }
}

/// Where a fragment is stored: `battle_data/{dataset}/{table}/{YYYYMMDDHHmmss}-{uuid}.parquet`,
/// built from validated parts only.
pub fn fragment_key(dataset: &DatasetId, table: &TableName, at: DateTime<Utc>, id: Uuid) -> String {
    format!("battle_data/{dataset}/{table}/{}-{id}.parquet", at.format("%Y%m%d%H%M%S"))
}

/// What phase 2 may store: signed in phase 1, checked in phase 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadGrant {
    /// The user the grant was issued to.
    pub sub: Uuid,
    pub key: String,
    pub dataset: DatasetId,
    pub table: TableName,
    pub period: PeriodTag,
    pub hash: ContentHash,
    pub size: u64,
    pub offsets: Vec<TableOffset>,
    pub iat: u64,
    pub exp: u64,
    aud: String,
}

fn check_secret(secret: &str) -> Result<&[u8], UploadError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(UploadError::Misconfigured("UPLOAD_TOKEN_SECRET is missing or shorter than 32 characters"));
    }
    Ok(secret.as_bytes())
}

impl UploadGrant {
    /// The grant for `handshake` by `user`, stored under `key`, valid from `now` for the TTL.
    pub fn new(handshake: &Handshake, user: Uuid, key: String, now: u64, limits: &UploadLimits) -> Self {
        Self {
            sub: user,
            key,
            dataset: handshake.dataset_id.clone(),
            table: handshake.table.clone(),
            period: handshake.period_tag.clone(),
            hash: handshake.content_hash.clone(),
            size: handshake.file_size,
            offsets: handshake.offsets.clone(),
            iat: now,
            exp: now + limits.grant_ttl_secs,
            aud: GRANT_AUDIENCE.into(),
        }
    }
}

/// Upload grants are HS256 tokens signed with `UPLOAD_TOKEN_SECRET`.
impl UploadGrant {
    pub fn sign(&self, secret: &str) -> Result<String, UploadError> {
        fusou_auth::install_crypto();
        let key =
            EncodingKey::from_secret(check_secret(secret)?).map_err(|_| UploadError::Misconfigured("UPLOAD_TOKEN_SECRET is unusable"))?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), self, &key)
            .map_err(|_| UploadError::Misconfigured("cannot sign upload tokens"))
    }

    /// Verifies a grant presented at `now` by `user`.
    pub fn verify(token: &str, secret: &str, user: Uuid, now: u64) -> Result<Self, UploadError> {
        fusou_auth::install_crypto();
        let key =
            DecodingKey::from_secret(check_secret(secret)?).map_err(|_| UploadError::Misconfigured("UPLOAD_TOKEN_SECRET is unusable"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[GRANT_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_exp = false;
        let grant = jsonwebtoken::decode::<UploadGrant>(token, &key, &validation).map_err(|e| UploadError::BadGrant(e.to_string()))?.claims;
        if grant.exp <= now {
            return Err(UploadError::GrantExpired);
        }
        if grant.sub != user {
            return Err(UploadError::ForeignGrant);
        }
        Ok(grant)
    }
}

impl UploadGrant {
    /// Holds the phase-2 body to the declaration: its length, its SHA-256, and every declared
    /// segment a readable Parquet file. Returns the declared offsets, each with the row count
    /// its footer gives: older clients do not send it, and compaction's scan relies on it.
    /// `digest` is the body's SHA-256 as the caller computed it ([`ContentHash::of`], or the
    /// platform's); it is compared with the declared one.
    pub fn check_body(&self, body: &Bytes, digest: &ContentHash, limits: &UploadLimits) -> Result<Vec<TableOffset>, UploadError> {
        if body.len() as u64 != self.size {
            return Err(UploadError::BadRequest(format!("body is {} bytes but {} were declared", body.len(), self.size)));
        }
        if *digest != self.hash {
            return Err(UploadError::BadRequest("body does not match the declared content_hash".into()));
        }
        let segments = fragment::inspect_fragment(&self.offsets, body)?;
        let rows = segments.iter().map(|s| s.num_rows).sum::<u64>();
        if rows > limits.max_rows {
            return Err(UploadError::TooManyRows { rows, max: limits.max_rows });
        }
        Ok(self.offsets.iter().zip(segments).map(|(o, s)| TableOffset { num_rows: Some(s.num_rows), ..o.clone() }).collect())
    }
}

#[cfg(test)]
mod tests;
