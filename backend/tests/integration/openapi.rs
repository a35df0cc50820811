//! The OpenAPI document is generated from the handlers and lists every route the server has.

use crate::common::spawn_app;
use serde_json::Value;

const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/version"),
    ("get", "/api/v1/cluster"),
    ("get", "/api/v1/openapi.json"),
    ("post", shared::agent::HEARTBEAT_PATH),
    ("post", shared::agent::EVENTS_PATH),
    ("get", "/api/v1/agent/bootstrap"),
    ("post", "/api/v1/session"),
    ("get", "/api/v1/session"),
    ("delete", "/api/v1/session"),
    ("post", "/api/v1/manifests"),
    ("get", "/api/v1/fleet"),
    ("get", "/api/v1/rollouts"),
    ("get", "/api/v1/channels/{channel}/history"),
    ("get", "/api/v1/hosts"),
    ("get", "/api/v1/hosts/{hostname}"),
    ("get", "/api/v1/rollouts/{id}"),
    ("get", "/api/v1/rollouts/{id}/events"),
    ("get", "/api/v1/rollouts/{id}/changes"),
    ("post", "/api/v1/rollouts/{id}/approve"),
    ("post", "/api/v1/rollouts/{id}/promote"),
    ("post", "/api/v1/rollouts/{id}/pause"),
    ("post", "/api/v1/rollouts/{id}/resume"),
    ("post", "/api/v1/rollouts/{id}/clear-failure"),
    ("get", "/api/v1/quarantines"),
    ("post", "/api/v1/quarantines"),
    ("post", "/api/v1/quarantines/release"),
    ("get", "/api/v1/freezes"),
    ("post", "/api/v1/freezes"),
    ("post", "/api/v1/freezes/release"),
    ("post", "/api/v1/hosts/{hostname}/suspend"),
    ("post", "/api/v1/hosts/{hostname}/resume"),
    ("get", "/api/v1/feed"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/webhooks"),
];

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_the_server_answers() {
    let app = spawn_app().await;
    let doc: Value = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1, got {}", doc["openapi"]);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);

    // And every documented route is served (not the 404/405 fallbacks).
    for (method, path) in ROUTES {
        let url = app.url(&path.replace("{id}", "stable@a1").replace("{hostname}", "a"));
        let r = app.http.request(method.to_uppercase().parse().unwrap(), url).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let unrouted = body["error"]["code"] == "method-not-allowed"
            || body["error"]["message"].as_str().is_some_and(|m| m.starts_with("There is no API route"));
        assert!(!unrouted, "{method} {path} is documented but not served: {status} {body}");
    }
    // Schemas of the wire types are in the document.
    for schema in ["HeartbeatRequest", "HostEvent", "RolloutDetail", "ApiErrorBody", "HostRolloutSnapshot"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
    let event = doc["components"]["schemas"]["HostEvent"].to_string();
    assert!(event.contains("observedClosure") && event.contains("\"kind\""), "wire names in the event schema: {event}");
}
