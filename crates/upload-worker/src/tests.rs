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
