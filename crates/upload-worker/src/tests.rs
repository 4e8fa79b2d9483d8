//! Native tests of what this crate decides without the platform: the route table and its
//! documentation agree.

use std::collections::BTreeSet;

use super::ROUTES;

/// `/battle-data/datasets/:id` → `/battle-data/datasets/{id}`.
fn openapi_path(router_path: &str) -> String {
    router_path.split('/').map(|seg| seg.strip_prefix(':').map_or(seg.to_owned(), |p| format!("{{{p}}}"))).collect::<Vec<_>>().join("/")
}

#[test]
fn openapi_documents_exactly_the_routes() {
    let doc: serde_json::Value = serde_json::from_str(super::routes::openapi::DOCUMENT).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), openapi_path(p))).collect();
    assert_eq!(documented, routed);
}

#[test]
fn lake_objects_answer_one_byte_range() {
    use worker::Range;

    use crate::routes::lake::{byte_range, resolved};
    assert!(matches!(byte_range("bytes=0-99"), Some(Range::OffsetWithLength { offset: 0, length: 100 })));
    assert!(matches!(byte_range("bytes=100-"), Some(Range::OffsetToEnd { offset: 100 })));
    assert!(matches!(byte_range("bytes=-8"), Some(Range::Suffix { suffix: 8 })));
    // Positions past 2^53 - 1 (JavaScript's exact integers), and sums that would overflow.
    for refused in [
        "bytes=9-3",
        "bytes=-0",
        "items=0-1",
        "bytes=a-b",
        "bytes=0-1,5-9",
        "bytes=0-18446744073709551615",
        "bytes=9007199254740992-",
        "bytes=-9007199254740992",
        "bytes=0-99999999999999999999",
    ] {
        assert!(byte_range(refused).is_none(), "{refused}");
    }
    assert_eq!(resolved(&Range::Suffix { suffix: 8 }, 100), (92, 8));
    assert_eq!(resolved(&Range::OffsetWithLength { offset: 90, length: 100 }, 100), (90, 10));
    assert_eq!(resolved(&Range::OffsetToEnd { offset: 100 }, 100), (100, 0));
}

#[test]
fn a_failure_answers_an_incident_not_its_cause() {
    use crate::http::public_failure;
    let answer = public_failure(500, "abc123");
    assert!(answer.contains("abc123") && answer.contains("internal error"), "{answer}");
    assert!(!answer.to_lowercase().contains("d1") && !answer.contains("SQL"), "{answer}");
    assert!(public_failure(503, "x").contains("try again later"));
}

/// The routes of docs/reference.md's route table: each backticked `METHOD /path` of its first
/// column, and each further backticked `/path` of a row under that row's method.
fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reference.md")).unwrap();
    let table = doc.split_once("| route | who | what |").expect("the route table").1;
    let mut routes = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let first = row.trim_start_matches('|').split(" | ").next().unwrap_or_default();
        let mut method = "";
        for quoted in first.split('`').skip(1).step_by(2) {
            let path = match quoted.split_once(' ') {
                Some((m, p)) => {
                    method = m;
                    p
                }
                None => quoted,
            };
            // A query string documents parameters, not another route.
            routes.insert((method.to_owned(), path.split('?').next().unwrap_or_default().to_owned()));
        }
    }
    routes
}

#[test]
fn the_reference_documents_exactly_the_routes() {
    let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), openapi_path(p))).collect();
    assert_eq!(documented_routes(), routed, "docs/reference.md's route table");
}
