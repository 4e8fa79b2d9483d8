//! Deployment settings read from a Worker's variables, with defaults and clear errors.
//! The Worker passes a lookup function, so this module never touches `Env`.

use crate::upload::UploadLimits;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variable {name} = {value:?} is not {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Reads a whole number from `name`, or `default` when it is unset or empty.
pub fn number(get: &impl Fn(&str) -> Option<String>, name: &'static str, default: u64) -> Result<u64, ConfigError> {
    match get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError { name, value: v, expected: "a whole number" }),
    }
}

impl UploadLimits {
    /// `MAX_UPLOAD_BYTES`, `MAX_DIRECT_UPLOAD_BYTES` and `UPLOAD_TOKEN_TTL_SECONDS`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = UploadLimits::default();
        Ok(Self {
            max_fragment_bytes: number(&get, "MAX_UPLOAD_BYTES", d.max_fragment_bytes)?,
            max_direct_bytes: number(&get, "MAX_DIRECT_UPLOAD_BYTES", d.max_direct_bytes)?,
            grant_ttl_secs: number(&get, "UPLOAD_TOKEN_TTL_SECONDS", d.grant_ttl_secs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_errors() {
        assert_eq!(UploadLimits::from_vars(|_| None).unwrap(), UploadLimits::default());
        let set = |name: &str| (name == "MAX_UPLOAD_BYTES").then(|| "1024".to_string());
        assert_eq!(UploadLimits::from_vars(set).unwrap().max_fragment_bytes, 1024);
        let bad = |name: &str| (name == "UPLOAD_TOKEN_TTL_SECONDS").then(|| "2m".to_string());
        assert_eq!(UploadLimits::from_vars(bad).unwrap_err().name, "UPLOAD_TOKEN_TTL_SECONDS");
    }
}
