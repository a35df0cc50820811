//! The HTTP surface: `/api/v1/*` (JSON), `/healthz`, `/readyz`, and the dashboard at `/`.

mod dashboard;
mod error;
mod system;

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use sqlx::SqlitePool;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// Largest request body any route accepts (SPEC §9: larger bodies get 413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: SqlitePool,
}

impl AppState {
    pub fn new(pool: SqlitePool) -> Self {
        AppState { pool }
    }
}

/// The whole router, with its middleware. `dist` is the dashboard build (Trunk's output).
pub fn router(state: AppState, dist: &Path) -> Router {
    let api = Router::new()
        .route("/version", get(system::version))
        .fallback(error::api_not_found);

    // Layers, outermost first (ServiceBuilder reads top-down):
    // 1. give the request an id (keep the caller's `x-request-id` if it sent one),
    // 2. open a trace span carrying that id, so every log line of the request names it,
    // 3. copy the id onto the response so a user can quote it.
    // The span records the path only, never the query: `/login?token=…` must not reach logs.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID));

    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .merge(dashboard::router(dist))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware)
        .with_state(state)
}

/// Budget for a readiness check; a database that takes longer counts as down.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(2);
