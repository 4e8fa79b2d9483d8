//! The settings both Workers read, and the upload Worker's own, as types read through the
//! registry ([`fusou_ports::settings`]): defaults, limits and clear errors. The Worker passes
//! a lookup function, so this module never touches `Env`.

use subtle::ConstantTimeEq;

use crate::upload::{MAX_BODY_BYTES_CEILING, MIN_SECRET_LEN, UploadLimits};
pub use fusou_ports::settings::{ConfigError, Vars};

/// What both Workers read besides their own settings: where they run, the test stack's hooks,
/// and how long remote calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// `ENVIRONMENT = "production"`: the deployed configuration, where no test hook may be on.
    pub production: bool,
    /// `TEST_HOOKS = "on"` (test stacks only): crashes injected into compaction runs, clean-up
    /// ages chosen per request, queue messages sent unchecked, latency added to remote calls.
    pub test_hooks: bool,
    /// `REMOTE_TIMEOUT_MS`: Supabase and service-binding calls give up after this.
    pub remote_timeout_ms: u64,
    /// `BINDING_TIMEOUT_MS`: D1, R2 and queue calls give up after this (D1's own limit for one
    /// query by default).
    pub binding_timeout_ms: u64,
    /// `INJECT_LATENCY_MS` (test hooks only): added before every remote call, to show the
    /// round trips on a request's path as production's network would.
    pub injected_latency_ms: u64,
}

impl Platform {
    /// Reads `ENVIRONMENT`, `TEST_HOOKS`, `INJECT_LATENCY_MS`, `REMOTE_TIMEOUT_MS` and
    /// `BINDING_TIMEOUT_MS`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let test_hooks = match vars.text("TEST_HOOKS").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(v) => return Err(ConfigError { name: "TEST_HOOKS", value: v.to_owned(), expected: "on or off" }),
        };
        let production = vars.text("ENVIRONMENT").as_deref() == Some("production");
        if production && test_hooks {
            return Err(ConfigError { name: "TEST_HOOKS", value: "on".into(), expected: "off where ENVIRONMENT is production" });
        }
        let injected_latency_ms = vars.number("INJECT_LATENCY_MS")?;
        if injected_latency_ms > 0 && !test_hooks {
            return Err(ConfigError {
                name: "INJECT_LATENCY_MS",
                value: injected_latency_ms.to_string(),
                expected: "0 unless TEST_HOOKS is on",
            });
        }
        Ok(Self {
            production,
            test_hooks,
            remote_timeout_ms: vars.positive("REMOTE_TIMEOUT_MS")?,
            binding_timeout_ms: vars.positive("BINDING_TIMEOUT_MS")?,
            injected_latency_ms,
        })
    }
}

/// What both Workers read, in one place: the platform, the Supabase project, the operator
/// secret. Each Worker's context holds one and adds its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// Where the Worker runs and how long its calls may take.
    pub platform: Platform,
    /// `SUPABASE_URL`.
    pub supabase_url: String,
    /// `SUPABASE_SERVICE_KEY`.
    pub supabase_service_key: String,
    operator_secret: Option<String>,
}

/// Why a request may not use an operator route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorRefusal {
    /// The Worker has no usable operator secret: nobody is an operator.
    #[error(transparent)]
    Misconfigured(ConfigError),
    /// The request carries no bearer.
    #[error("the operator secret is required")]
    Missing,
    /// The request's bearer is not the operator secret.
    #[error("wrong operator secret")]
    Wrong,
}

impl Shared {
    /// Reads [`Platform`], `SUPABASE_URL`, `SUPABASE_SERVICE_KEY` and `OPERATOR_SECRET`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            platform: Platform::from_vars(vars)?,
            supabase_url: vars.required("SUPABASE_URL")?,
            supabase_service_key: vars.required("SUPABASE_SERVICE_KEY")?,
            operator_secret: vars.text("OPERATOR_SECRET"),
        })
    }

    /// The operator secret (which the upload Worker also presents to the compaction Worker),
    /// when it is set and at least [`MIN_SECRET_LEN`] long.
    pub fn operator_secret(&self) -> Result<&str, ConfigError> {
        match self.operator_secret.as_deref() {
            Some(s) if s.len() >= MIN_SECRET_LEN => Ok(s),
            _ => Err(ConfigError { name: "OPERATOR_SECRET", value: String::new(), expected: "set, at least 32 characters" }),
        }
    }

    /// Passes a request whose `Authorization` header is `Bearer <OPERATOR_SECRET>`, compared in
    /// constant time; a secret shorter than [`MIN_SECRET_LEN`] admits nobody.
    pub fn check_operator(&self, authorization: Option<&str>) -> Result<(), OperatorRefusal> {
        let secret = self.operator_secret().map_err(OperatorRefusal::Misconfigured)?;
        let token = fusou_auth::bearer_token(authorization).map_err(|_| OperatorRefusal::Missing)?;
        if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) { Ok(()) } else { Err(OperatorRefusal::Wrong) }
    }

    /// Passes a reader of the open tables: the operator, or a bearer of `lake_read_secret`
    /// (compared in constant time; one shorter than [`MIN_SECRET_LEN`] admits nobody). The read
    /// key opens nothing else.
    pub fn check_lake_reader(&self, authorization: Option<&str>, lake_read_secret: Option<&str>) -> Result<(), OperatorRefusal> {
        let refusal = match self.check_operator(authorization) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        let reader = lake_read_secret.filter(|s| s.len() >= MIN_SECRET_LEN);
        match (reader, fusou_auth::bearer_token(authorization)) {
            (Some(secret), Ok(token)) if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) => Ok(()),
            (Some(_), Ok(_)) => Err(OperatorRefusal::Wrong),
            _ => Err(refusal),
        }
    }
}

/// What the upload Worker reads besides [`Shared`] and the open tables' location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSettings {
    /// What an upload may be.
    pub limits: UploadLimits,
    /// `UPLOAD_TOKEN_SECRET`: signs upload grants (the grant refuses a short one).
    pub upload_secret: Option<String>,
    /// `SUPABASE_JWT_SECRET`: the legacy HS256 secret of older projects; unset refuses HS256.
    pub legacy_jwt_secret: Option<String>,
    /// `REALTIME_DELAY_SECONDS`: how long upload-triggered compactions wait in the queue, so
    /// that one run takes a burst.
    pub realtime_delay_secs: u32,
    /// `LAKE_READ_SECRET`: the open tables' read-only bearer, when set.
    pub lake_read_secret: Option<String>,
}

impl UploadSettings {
    /// Reads [`UploadLimits`], `UPLOAD_TOKEN_SECRET`, `SUPABASE_JWT_SECRET` and
    /// `REALTIME_DELAY_SECONDS`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            limits: UploadLimits::from_vars(vars)?,
            upload_secret: vars.text("UPLOAD_TOKEN_SECRET"),
            legacy_jwt_secret: vars.text("SUPABASE_JWT_SECRET"),
            realtime_delay_secs: vars.queue_delay_secs("REALTIME_DELAY_SECONDS")?,
            lake_read_secret: vars.text("LAKE_READ_SECRET"),
        })
    }
}

impl UploadLimits {
    /// `MAX_UPLOAD_BYTES`, `MAX_DIRECT_UPLOAD_BYTES`, `UPLOAD_TOKEN_TTL_SECONDS`,
    /// `ALLOW_ANONYMOUS_UPLOADS` and `MAX_UPLOAD_ROWS`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let body_limit = |name: &'static str| match vars.number(name)? {
            n if (1..=MAX_BODY_BYTES_CEILING).contains(&n) => Ok(n),
            n => Err(ConfigError { name, value: n.to_string(), expected: "from 1 byte to 32 MiB (33554432), what a Worker can hold" }),
        };
        Ok(Self {
            max_fragment_bytes: body_limit("MAX_UPLOAD_BYTES")?,
            max_direct_bytes: body_limit("MAX_DIRECT_UPLOAD_BYTES")?,
            grant_ttl_secs: vars.number("UPLOAD_TOKEN_TTL_SECONDS")?,
            allow_anonymous: vars.flag("ALLOW_ANONYMOUS_UPLOADS")?,
            max_rows: vars.number("MAX_UPLOAD_ROWS")?,
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

    fn platform(pairs: &[(&str, &str)]) -> Result<Platform, ConfigError> {
        Platform::from_vars(&Vars::new(&vars(pairs)))
    }

    fn limits(get: impl Fn(&str) -> Option<String>) -> Result<UploadLimits, ConfigError> {
        UploadLimits::from_vars(&Vars::new(&get))
    }

    #[test]
    fn no_test_hook_can_be_turned_on_in_production() {
        let p = platform(&[]).unwrap();
        assert!(!p.test_hooks && !p.production);
        assert_eq!((p.remote_timeout_ms, p.binding_timeout_ms, p.injected_latency_ms), (5_000, 30_000, 0));
        let test = platform(&[("TEST_HOOKS", "on"), ("INJECT_LATENCY_MS", "30")]).unwrap();
        assert_eq!((test.test_hooks, test.injected_latency_ms), (true, 30));

        let refused = |pairs: &[(&str, &str)]| platform(pairs).unwrap_err().name;
        assert_eq!(refused(&[("ENVIRONMENT", "production"), ("TEST_HOOKS", "on")]), "TEST_HOOKS");
        assert_eq!(refused(&[("ENVIRONMENT", "production"), ("INJECT_LATENCY_MS", "30")]), "INJECT_LATENCY_MS");
        assert_eq!(refused(&[("INJECT_LATENCY_MS", "30")]), "INJECT_LATENCY_MS", "latency only with the test hooks");
        assert_eq!(refused(&[("TEST_HOOKS", "yes")]), "TEST_HOOKS");
        assert_eq!(refused(&[("REMOTE_TIMEOUT_MS", "0")]), "REMOTE_TIMEOUT_MS", "a call that may never wait is no call");
        assert!(platform(&[("ENVIRONMENT", "production")]).unwrap().production);
    }

    #[test]
    fn the_operator_is_whoever_bears_the_secret_and_nobody_without_one() {
        let secret = "s".repeat(32);
        let base = [("SUPABASE_URL", "http://sb"), ("SUPABASE_SERVICE_KEY", "k")];
        let shared = |extra: &[(&str, &str)]| Shared::from_vars(&Vars::new(&vars(&[&base[..], extra].concat()))).unwrap();
        let with = shared(&[("OPERATOR_SECRET", &secret)]);
        assert_eq!(with.check_operator(Some(&format!("Bearer {secret}"))), Ok(()));
        assert_eq!(with.check_operator(Some("Bearer nope")), Err(OperatorRefusal::Wrong));
        assert_eq!(with.check_operator(None), Err(OperatorRefusal::Missing));
        let short = shared(&[("OPERATOR_SECRET", "short")]);
        assert!(matches!(short.check_operator(Some("Bearer short")), Err(OperatorRefusal::Misconfigured(_))));
        assert!(matches!(shared(&[]).check_operator(Some("Bearer ")), Err(OperatorRefusal::Misconfigured(_))));
        assert_eq!(Shared::from_vars(&Vars::new(&vars(&[]))).unwrap_err().name, "SUPABASE_URL");
    }

    #[test]
    fn the_lake_read_key_opens_the_tables_only() {
        let (operator, reader) = ("o".repeat(32), "r".repeat(32));
        let pairs = [("SUPABASE_URL", "http://sb"), ("SUPABASE_SERVICE_KEY", "k"), ("OPERATOR_SECRET", operator.as_str())];
        let shared = Shared::from_vars(&Vars::new(&vars(&pairs))).unwrap();
        let bearer = |s: &str| format!("Bearer {s}");
        assert_eq!(shared.check_lake_reader(Some(&bearer(&reader)), Some(&reader)), Ok(()));
        assert_eq!(shared.check_lake_reader(Some(&bearer(&operator)), Some(&reader)), Ok(()), "the operator reads too");
        assert_eq!(shared.check_lake_reader(Some(&bearer(&operator)), None), Ok(()));
        assert_eq!(shared.check_operator(Some(&bearer(&reader))), Err(OperatorRefusal::Wrong), "the read key is no operator");
        assert_eq!(shared.check_lake_reader(Some(&bearer("nope")), Some(&reader)), Err(OperatorRefusal::Wrong));
        assert_eq!(shared.check_lake_reader(None, Some(&reader)), Err(OperatorRefusal::Missing));
        let short = "s".repeat(8);
        assert_eq!(shared.check_lake_reader(Some(&bearer(&short)), Some(&short)), Err(OperatorRefusal::Wrong), "a short key admits nobody");
    }

    #[test]
    fn defaults_overrides_and_errors() {
        assert_eq!(limits(|_| None).unwrap(), UploadLimits::default());
        let set = |name: &str| (name == "MAX_UPLOAD_BYTES").then(|| "1024".to_string());
        assert_eq!(limits(set).unwrap().max_fragment_bytes, 1024);
        let bad = |name: &str| (name == "UPLOAD_TOKEN_TTL_SECONDS").then(|| "2m".to_string());
        assert_eq!(limits(bad).unwrap_err().name, "UPLOAD_TOKEN_TTL_SECONDS");
        assert!(!UploadLimits::default().allow_anonymous, "anonymous sign-ins may not upload unless allowed");
        let huge = |name: &str| (name == "MAX_UPLOAD_BYTES").then(|| (64u64 << 20).to_string());
        assert_eq!(limits(huge).unwrap_err().name, "MAX_UPLOAD_BYTES", "more than a Worker can hold");
        let allow = |name: &str| (name == "ALLOW_ANONYMOUS_UPLOADS").then(|| "true".to_string());
        assert!(limits(allow).unwrap().allow_anonymous);
        let unclear = |name: &str| (name == "ALLOW_ANONYMOUS_UPLOADS").then(|| "yes".to_string());
        assert_eq!(limits(unclear).unwrap_err().name, "ALLOW_ANONYMOUS_UPLOADS");
    }
}
