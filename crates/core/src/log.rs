//! One log convention for every route and consumer: a JSON object per line with `level`,
//! `event` and the context fields (route or queue, `datasetId`, `metricId`, …).
//!
//! Levels mean the same everywhere: `info` for normal progress (a queue send, a run finished),
//! `warn` for degraded service that lost nothing, `error` for a failure.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Formats one log line. `fields` should be a JSON object; anything else is kept under `detail`.
pub fn line(level: Level, event: &str, fields: Value) -> String {
    let mut out = Map::new();
    out.insert("level".into(), serde_json::to_value(level).expect("a level serializes"));
    out.insert("event".into(), Value::from(event));
    match fields {
        Value::Object(map) => out.extend(map),
        Value::Null => {}
        other => {
            out.insert("detail".into(), other);
        }
    }
    Value::Object(out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_flat_json_objects() {
        let l = line(Level::Warn, "queue.send_failed", json!({"datasetId": "ds", "metricId": null}));
        assert_eq!(l, r#"{"level":"warn","event":"queue.send_failed","datasetId":"ds","metricId":null}"#);
        assert_eq!(line(Level::Info, "x", json!(3)), r#"{"level":"info","event":"x","detail":3}"#);
    }
}
