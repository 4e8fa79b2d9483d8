//! Deployment settings read from a Worker's variables, with defaults and clear errors.
//! The Worker passes a lookup function, so this module never touches `Env`.

use crate::upload::{MAX_BODY_BYTES_CEILING, UploadLimits};

pub use fusou_ports::settings::{ConfigError, flag, number};

/// What both Workers read besides their own settings: where they run, the test stack's hooks,
/// and how long remote calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// `ENVIRONMENT = "production"`: the deployed configuration, where no test hook may be on.
    pub production: bool,
    /// `TEST_HOOKS = "on"` (test stacks only): crashes injected into compaction runs, clean-up
    /// ages chosen per request, queue messages sent unchecked, latency added to remote calls.
    pub test_hooks: bool,
    /// `REMOTE_TIMEOUT_MS`: Supabase and service-binding calls give up after this (default 5 s).
    pub remote_timeout_ms: u64,
    /// `BINDING_TIMEOUT_MS`: D1, R2 and queue calls give up after this (default 30 s, D1's own
    /// limit for one query).
    pub binding_timeout_ms: u64,
    /// `INJECT_LATENCY_MS` (test hooks only): added before every remote call, to show the
    /// round trips on a request's path as production's network would.
    pub injected_latency_ms: u64,
}

impl Platform {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let environment = get("ENVIRONMENT").unwrap_or_default();
        let test_hooks = match get("TEST_HOOKS").as_deref().map(str::trim) {
            None | Some("") | Some("off") => false,
            Some("on") => true,
            Some(v) => return Err(ConfigError { name: "TEST_HOOKS", value: v.to_owned(), expected: "on or off" }),
        };
        let production = environment.trim() == "production";
        if production && test_hooks {
            return Err(ConfigError { name: "TEST_HOOKS", value: "on".into(), expected: "off where ENVIRONMENT is production" });
        }
        let injected_latency_ms = number(&get, "INJECT_LATENCY_MS", 0)?;
        if injected_latency_ms > 0 && !test_hooks {
            return Err(ConfigError {
                name: "INJECT_LATENCY_MS",
                value: injected_latency_ms.to_string(),
                expected: "0 unless TEST_HOOKS is on",
            });
        }
        let positive = |name: &'static str, default: u64| match number(&get, name, default)? {
            0 => Err(ConfigError { name, value: "0".into(), expected: "a positive number of milliseconds" }),
            n => Ok(n),
        };
        Ok(Self {
            production,
            test_hooks,
            remote_timeout_ms: positive("REMOTE_TIMEOUT_MS", 5_000)?,
            binding_timeout_ms: positive("BINDING_TIMEOUT_MS", 30_000)?,
            injected_latency_ms,
        })
    }
}

impl UploadLimits {
    /// `MAX_UPLOAD_BYTES`, `MAX_DIRECT_UPLOAD_BYTES`, `UPLOAD_TOKEN_TTL_SECONDS`,
    /// `ALLOW_ANONYMOUS_UPLOADS` and `MAX_UPLOAD_ROWS`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = UploadLimits::default();
        let body_limit = |name: &'static str, default: u64| match number(&get, name, default)? {
            n if (1..=MAX_BODY_BYTES_CEILING).contains(&n) => Ok(n),
            n => Err(ConfigError { name, value: n.to_string(), expected: "from 1 byte to 32 MiB (33554432), what a Worker can hold" }),
        };
        Ok(Self {
            max_fragment_bytes: body_limit("MAX_UPLOAD_BYTES", d.max_fragment_bytes)?,
            max_direct_bytes: body_limit("MAX_DIRECT_UPLOAD_BYTES", d.max_direct_bytes)?,
            grant_ttl_secs: number(&get, "UPLOAD_TOKEN_TTL_SECONDS", d.grant_ttl_secs)?,
            allow_anonymous: flag(&get, "ALLOW_ANONYMOUS_UPLOADS", d.allow_anonymous)?,
            max_rows: number(&get, "MAX_UPLOAD_ROWS", d.max_rows)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_test_hook_can_be_turned_on_in_production() {
        let p = Platform::from_vars(vars(&[])).unwrap();
        assert!(!p.test_hooks && !p.production);
        assert_eq!((p.remote_timeout_ms, p.binding_timeout_ms, p.injected_latency_ms), (5_000, 30_000, 0));
        let test = Platform::from_vars(vars(&[("TEST_HOOKS", "on"), ("INJECT_LATENCY_MS", "30")])).unwrap();
        assert_eq!((test.test_hooks, test.injected_latency_ms), (true, 30));

        let refused = |pairs: &[(&str, &str)]| Platform::from_vars(vars(pairs)).unwrap_err().name;
        assert_eq!(refused(&[("ENVIRONMENT", "production"), ("TEST_HOOKS", "on")]), "TEST_HOOKS");
        assert_eq!(refused(&[("ENVIRONMENT", "production"), ("INJECT_LATENCY_MS", "30")]), "INJECT_LATENCY_MS");
        assert_eq!(refused(&[("INJECT_LATENCY_MS", "30")]), "INJECT_LATENCY_MS", "latency only with the test hooks");
        assert_eq!(refused(&[("TEST_HOOKS", "yes")]), "TEST_HOOKS");
        assert_eq!(refused(&[("REMOTE_TIMEOUT_MS", "0")]), "REMOTE_TIMEOUT_MS", "a call that may never wait is no call");
        assert!(Platform::from_vars(vars(&[("ENVIRONMENT", "production")])).unwrap().production);
    }

    #[test]
    fn defaults_overrides_and_errors() {
        assert_eq!(UploadLimits::from_vars(|_| None).unwrap(), UploadLimits::default());
        let set = |name: &str| (name == "MAX_UPLOAD_BYTES").then(|| "1024".to_string());
        assert_eq!(UploadLimits::from_vars(set).unwrap().max_fragment_bytes, 1024);
        let bad = |name: &str| (name == "UPLOAD_TOKEN_TTL_SECONDS").then(|| "2m".to_string());
        assert_eq!(UploadLimits::from_vars(bad).unwrap_err().name, "UPLOAD_TOKEN_TTL_SECONDS");
        assert!(!UploadLimits::default().allow_anonymous, "anonymous sign-ins may not upload unless allowed");
        let huge = |name: &str| (name == "MAX_UPLOAD_BYTES").then(|| (64u64 << 20).to_string());
        assert_eq!(UploadLimits::from_vars(huge).unwrap_err().name, "MAX_UPLOAD_BYTES", "more than a Worker can hold");
        let allow = |name: &str| (name == "ALLOW_ANONYMOUS_UPLOADS").then(|| "true".to_string());
        assert!(UploadLimits::from_vars(allow).unwrap().allow_anonymous);
        let unclear = |name: &str| (name == "ALLOW_ANONYMOUS_UPLOADS").then(|| "yes".to_string());
        assert_eq!(UploadLimits::from_vars(unclear).unwrap_err().name, "ALLOW_ANONYMOUS_UPLOADS");
    }
}
