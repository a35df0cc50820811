//! Health, readiness, version, API 404s and the dashboard's SPA fallback, through the router.

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use backend::config::ServeConfig;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Fixture {
    router: axum::Router,
    store: backend::db::Store,
    _shutdown: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

async fn fixture(with_dashboard: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    if with_dashboard {
        std::fs::write(dist.join("index.html"), "<!doctype html><title>Fleetwave</title>").unwrap();
        std::fs::write(dist.join("assets/app.js"), "console.log(1)").unwrap();
    }
    let config = ServeConfig::local(dir.path().join("fleetwave.db"), Path::new(&dist).to_path_buf());
    let shutdown = CancellationToken::new();
    let app = backend::server::App::build(&config, shutdown.clone()).await.unwrap();
    Fixture { router: app.router(), store: app.state().store.clone(), _shutdown: shutdown.drop_guard(), _dir: dir }
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn version_names_the_crate_version_and_api() {
    let f = fixture(true).await;
    let (status, _, body) = get(&f.router, "/api/v1/version").await;
    assert_eq!(status, StatusCode::OK);
    let info: shared::VersionInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(info.name, "fleetwave");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.api, "v1");
}

#[tokio::test]
async fn health_and_readiness_answer_when_the_database_is_up() {
    let f = fixture(true).await;
    assert_eq!(get(&f.router, "/healthz").await.0, StatusCode::OK);
    let (status, _, body) = get(&f.router, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
}

#[tokio::test]
async fn readiness_fails_with_a_clear_error_when_the_database_is_closed() {
    let f = fixture(true).await;
    f.store.close().await;
    let router = f.router.clone();
    let (status, _, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error: shared::ApiErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(error.error.code, shared::ErrorCode::NotReady);
}

#[tokio::test]
async fn unknown_api_routes_answer_json_not_the_dashboard() {
    let f = fixture(true).await;
    let (status, headers, body) = get(&f.router, "/api/v1/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let error: shared::ApiErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(error.error.code, shared::ErrorCode::NotFound);
    assert!(error.error.message.contains("/api/v1/no-such-thing"));
}

#[tokio::test]
async fn dashboard_deep_links_fall_back_to_index_html() {
    let f = fixture(true).await;
    for path in ["/", "/rollouts", "/rollouts/stable@abc123", "/login?token=secret"] {
        let (status, headers, body) = get(&f.router, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        assert!(body.contains("<title>Fleetwave</title>"), "{path}");
    }
    let (status, _, body) = get(&f.router, "/assets/app.js").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
}

#[tokio::test]
async fn a_missing_dashboard_build_says_how_to_build_it() {
    let f = fixture(false).await;
    let (status, _, body) = get(&f.router, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("trunk build --release"));
    // The API keeps working without a dashboard.
    assert_eq!(get(&f.router, "/api/v1/version").await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let f = fixture(true).await;
    let (_, headers, _) = get(&f.router, "/healthz").await;
    let generated = headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID, got {generated}");

    let response = f
        .router
        .clone()
        .oneshot(Request::get("/healthz").header("x-request-id", "caller-42").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "caller-42");
}

#[tokio::test]
async fn the_dashboard_cannot_be_used_to_read_files_outside_dist() {
    let f = fixture(true).await;
    for path in [
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/../../../../etc/passwd",
    ] {
        let (_, _, body) = get(&f.router, path).await;
        assert!(!body.contains("root:"), "{path} leaked a file");
    }
}
