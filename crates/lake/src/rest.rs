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

/// The endpoints served besides `GET /v1/config`, as it advertises them, in the protocol's own
/// notation (`{prefix}` stands for the catalog's prefix; this one has none): reads only. A
/// client that reads this list never tries a write (PyIceberg checks it before each call).
pub const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
];

/// `GET /v1/config`: no defaults or overrides (clients keep their own settings), and the
/// endpoints served.
pub fn config() -> Value {
    json!({ "defaults": {}, "overrides": {}, "endpoints": ENDPOINTS })
}

/// The answer to a catalog request no read route serves (`path` after `/iceberg`): a reader's
/// metrics report is taken and dropped (204); any other write is refused in the protocol's
/// error model (403) before the client commits anything, since FUSOU's committer is the
/// tables' only writer; an unknown read is 404, another method (`HEAD` included) 405.
pub fn not_served(method: &str, path: &str) -> (u16, Option<Value>) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match method {
        "POST" if matches!(segments.as_slice(), ["v1", "namespaces", _, "tables", _, "metrics"]) => (204, None),
        "POST" | "PUT" | "DELETE" | "PATCH" => {
            (403, Some(error(403, "the open tables are read-only: FUSOU's committer is their only writer; nothing was changed")))
        }
        "GET" => (404, Some(error(404, &format!("no such catalog endpoint: {path}; served: {}", ENDPOINTS.join(", "))))),
        _ => (405, Some(error(405, &format!("{method} is not served by this catalog")))),
    }
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

    #[test]
    fn writes_are_refused_in_the_error_model_and_metrics_reports_taken() {
        for (method, path) in [
            ("POST", "/v1/namespaces"),
            ("POST", "/v1/namespaces/fusou/tables"),
            ("POST", "/v1/namespaces/fusou/tables/battle"),
            ("DELETE", "/v1/namespaces/fusou/tables/battle"),
            ("POST", "/v1/tables/rename"),
            ("POST", "/v1/transactions/commit"),
            ("POST", "/v1/namespaces/fusou/register"),
        ] {
            let (status, body) = not_served(method, path);
            assert_eq!(status, 403, "{method} {path}");
            assert_eq!(body.unwrap()["error"]["type"], "ForbiddenException", "{method} {path}");
        }
        assert_eq!(not_served("POST", "/v1/namespaces/fusou/tables/battle/metrics"), (204, None));
        assert_eq!(not_served("GET", "/v1/views").0, 404);
        let advertised = config()["endpoints"].as_array().unwrap().len();
        assert_eq!(advertised, ENDPOINTS.len());
    }
}
