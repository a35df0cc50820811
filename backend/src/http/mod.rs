//! The HTTP surface: `/api/v1/*` (JSON), `/healthz`, `/readyz`, and the dashboard at `/`.

mod agent;
pub mod agent_auth;
mod dashboard;
mod error;
pub mod extract;
mod operator;
pub mod operator_auth;
mod session;
mod system;

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use std::sync::Arc;

use axum::routing::{get, post};
use engine::verify::TrustRoots;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;
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
    pub reducer: crate::reducer::ReducerHandle,
    /// The verified fleet agents authenticate against (written by the reducer).
    pub fleet: crate::reducer::SharedFleet,
    pub trust: crate::manifests::SharedTrust,
    pub feed: crate::feed::FeedHub,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub replay: Arc<agent_auth::ReplayCache>,
    pub clock: crate::clock::Clock,
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn trust_roots(&self) -> Option<Arc<TrustRoots>> {
        self.trust.read().ok().and_then(|t| t.clone())
    }
}

/// The whole router, with its middleware. `dist` is the dashboard build (Trunk's output).
pub fn router(state: AppState, dist: &Path) -> Router {
    let api = Router::new()
        .route("/version", get(system::version))
        .route("/agent/heartbeat", post(agent::heartbeat))
        .route("/agent/events", post(agent::events))
        .route("/agent/bootstrap", get(agent::bootstrap))
        .route("/session", post(session::create).get(session::whoami).delete(session::delete))
        .route("/manifests", post(operator::upload_manifests))
        .route("/fleet", get(operator::fleet))
        .route("/rollouts", get(operator::rollouts))
        .route("/rollouts/{id}", get(operator::rollout))
        .route("/rollouts/{id}/events", get(operator::rollout_events))
        .route("/rollouts/{id}/approve", post(operator::approve))
        .route("/rollouts/{id}/promote", post(operator::promote))
        .route("/rollouts/{id}/pause", post(operator::pause))
        .route("/rollouts/{id}/resume", post(operator::resume))
        .route("/rollouts/{id}/clear-failure", post(operator::clear_failure))
        .route("/quarantines", get(operator::quarantines).post(operator::quarantine))
        .route("/quarantines/release", post(operator::release))
        .route("/feed", get(operator::feed))
        .fallback(error::api_not_found)
        .method_not_allowed_fallback(error::method_not_allowed);

    // Layers, outermost first (ServiceBuilder reads top-down):
    // 1. give the request an id (keep the caller's `x-request-id` if it sent one),
    // 2. open a trace span carrying that id, so every log line of the request names it,
    // 3. copy the id onto the response so a user can quote it.
    // The span records the path only, never the query: `/login?token=…` must not reach logs.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID));

    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .merge(dashboard::router(dist))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware)
        .with_state(state)
}

/// Budget for a readiness check; a database that takes longer counts as down.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(2);
