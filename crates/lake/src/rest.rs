//! The Iceberg REST catalog's answers (the subset readers need: config, namespaces, tables,
//! load table), as values. The upload Worker serves them under `/iceberg/v1/` from the tables'
//! pointers in D1 and their metadata files in R2.

use serde_json::{Value, json};

/// The one namespace: every battle table is `fusou.<table>`.
pub const NAMESPACE: &str = "fusou";

/// Where readers find the bucket's keys (`LAKE_LOCATION`, without a trailing `/`): `s3://<bucket>`
/// in production (R2's S3 API), a directory mirroring the bucket on a local machine (`file://…`).
pub fn lake_root(vars: &fusou_core::config::Vars<'_>) -> Result<String, fusou_core::config::ConfigError> {
    match vars.text("LAKE_LOCATION") {
        None => Ok(DEFAULT_ROOT.to_owned()),
        Some(v) if v.contains("://") && !v.ends_with("://") => Ok(v.trim_end_matches('/').to_owned()),
        Some(v) => Err(fusou_core::config::ConfigError { name: "LAKE_LOCATION", value: v, expected: "a URI such as s3://<bucket>" }),
    }
}

/// The production bucket, through R2's S3 API.
pub const DEFAULT_ROOT: &str = "s3://fusou-battle-data";

/// `GET /v1/config`: no defaults or overrides (clients keep their own settings).
pub fn config() -> Value {
    json!({ "defaults": {}, "overrides": {} })
}

/// `GET /v1/namespaces` (no parent: the one namespace; any parent: none below it).
pub fn namespaces(parent: Option<&str>) -> Value {
    match parent {
        None => json!({ "namespaces": [[NAMESPACE]] }),
        Some(_) => json!({ "namespaces": [] }),
    }
}

/// Whether `namespace` (a path segment: levels joined by the unit separator) is ours.
pub fn is_ours(namespace: &str) -> bool {
    namespace == NAMESPACE
}

/// `GET /v1/namespaces/{namespace}`.
pub fn namespace() -> Value {
    json!({ "namespace": [NAMESPACE], "properties": {} })
}

/// `GET /v1/namespaces/{namespace}/tables`.
pub fn tables<'a>(names: impl IntoIterator<Item = &'a str>) -> Value {
    let identifiers: Vec<Value> = names.into_iter().map(|n| json!({ "namespace": [NAMESPACE], "name": n })).collect();
    json!({ "identifiers": identifiers })
}

/// `GET /v1/namespaces/{namespace}/tables/{table}`: the metadata file's location and contents.
pub fn load_table(metadata_location: &str, metadata: Value) -> Value {
    json!({ "metadata-location": metadata_location, "metadata": metadata, "config": {} })
}

/// The protocol's error model.
pub fn error(code: u16, message: &str) -> Value {
    let kind = match code {
        400 => "BadRequestException",
        401 => "NotAuthorizedException",
        403 => "ForbiddenException",
        404 => "NoSuchTableException",
        405 => "MethodNotAllowedException",
        503 => "ServiceUnavailableException",
        _ => "ServerErrorException",
    };
    json!({ "error": { "message": message, "type": kind, "code": code } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_the_protocols_shapes() {
        assert_eq!(namespaces(None)["namespaces"][0][0], "fusou");
        assert_eq!(tables(["battle", "cells"])["identifiers"][1], json!({ "namespace": ["fusou"], "name": "cells" }));
        let loaded = load_table("s3://b/lake/fusou/battle/metadata/00001-x.metadata.json", json!({ "format-version": 2 }));
        assert_eq!(loaded["metadata"]["format-version"], 2);
        assert!(loaded["metadata-location"].as_str().unwrap().ends_with(".metadata.json"));
        assert_eq!(error(404, "no such table")["error"]["type"], "NoSuchTableException");
        assert!(is_ours("fusou") && !is_ours("fusou\u{1f}x"));
    }
}
