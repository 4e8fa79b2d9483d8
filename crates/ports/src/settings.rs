//! Deployment settings, read from a Worker's variables through a lookup function (so nothing
//! here touches `Env`), with defaults and clear errors.

/// A variable that holds no value its setting accepts.
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

/// Reads `true` or `false` from `name`, or `default` when it is unset or empty.
pub fn flag(get: &impl Fn(&str) -> Option<String>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(ConfigError { name, value: v, expected: "true or false" }),
    }
}
