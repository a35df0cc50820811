//! The HTTP surface: `/api/v1/*` (JSON), `/healthz`, `/readyz`, and the dashboard at `/`.

mod agent;
pub mod agent_auth;
mod audit;
pub mod conn;
mod dashboard;
mod error;
pub mod extract;
pub mod forward;
mod history;
mod hosts;
mod operator;
pub mod operator_auth;
mod session;
pub mod system;

use crate::config::HttpLimits;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::http::header::{
    ACCEPT_ENCODING, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use std::sync::Arc;

use axum::routing::get;
use engine::verify::TrustRoots;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach. One `Arc`: extractors take the state by value, so every
/// request clones it, and one reference count is cheaper than one per part (the per-part
/// clones and drops were ~1 % of the server's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: crate::db::Store,
    /// The reducer, where it runs: always in a single process, on the leader of a cluster.
    pub reducer: crate::reducer::ReducerSlot,
    /// This replica and the cluster it knows (a cluster of one on SQLite).
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Passes writes that reach a follower to the leader.
    pub forwarder: reqwest::Client,
    /// The verified fleet agents authenticate against (written by the reducer).
    pub fleet: crate::reducer::SharedFleet,
    pub trust: crate::trust::SharedTrust,
    pub feed: crate::feed::FeedHub,
    /// The configured webhooks and how their deliveries stand.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub replay: Arc<crate::signatures::ReplayCache>,
    pub clock: crate::clock::Clock,
    /// Set when a vital task failed: `/readyz` answers 503.
    pub health: crate::shutdown::Health,
    /// Who may read `/metrics`.
    pub metrics_access: crate::config::MetricsAccess,
    /// Browsers reach the control plane over https (`--public-url https://…`): session
    /// cookies are `Secure`.
    pub https: bool,
    /// The SQLite file, and the free space its filesystem must keep for `/readyz` (a
    /// PostgreSQL server watches its own disk).
    pub db_path: Option<std::path::PathBuf>,
    pub min_free_disk_bytes: u64,
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn trust_roots(&self) -> Option<Arc<TrustRoots>> {
        self.trust.read().ok().and_then(|t| t.clone())
    }
}

/// The whole router, with its middleware. `dist` is the dashboard build (Trunk's output).
pub fn router(state: AppState, dist: &Path, limits: HttpLimits) -> Router {
    let csp = HeaderValue::from_str(&dashboard::content_security_policy(dist))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    let (api, root, spec) = routes();
    let spec = Arc::new(spec);
    let api = api
        .route("/openapi.json", get(move || std::future::ready(axum::Json(spec.as_ref().clone()))))
        .fallback(error::api_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // On a follower, writes go to the leader before anything else looks at them.
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward::writes_to_leader));

    // Layers, outermost first (ServiceBuilder reads top-down):
    // 1. give the request an id (keep the caller's `x-request-id` if it sent one),
    // 2. open a trace span carrying that id, so every log line of the request names it,
    // 3. copy the id onto the response so a user can quote it,
    // 4. the browser-hardening headers on every response: no MIME sniffing, no referrer (a
    //    login link carries a token in its query), no framing, and the dashboard's CSP
    //    (`dashboard::content_security_policy`),
    // 5. answer 408 when a request takes longer than `request_timeout` in all (reading its
    //    body included: handlers read bodies inside their future),
    // 6. and when its body goes quiet for `body_idle_timeout`;
    // 7. gzip answers for clients that accept it, at the fastest level (a 100,000-host
    //    rollout's answer is ~21 MB of JSON, the dashboard's WebAssembly ~1.8 MB) — but not the
    //    live feed (each frame must leave when it is published: tower-http's default predicate
    //    leaves `text/event-stream` alone, and answers under 32 bytes), and not agents' answers
    //    (a few hundred bytes each, on the path whose CPU is the fleet's event rate; the
    //    agent's client asks for gzip). Not zstd: Chromium took ~0.3 s longer to decode the
    //    100,000-host rollout's answer from zstd than from gzip (BENCHMARKS.md).
    // The span records the path only, never the query: `/login?token=…` must not reach logs.
    // Body sizes are limited per route by the extractors (`extract`), before reading.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetResponseHeaderLayer::overriding(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(CONTENT_SECURITY_POLICY, csp))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(RequestBodyTimeoutLayer::new(limits.body_idle_timeout))
        .map_request(agents_answered_plain)
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest));

    Router::new().nest("/api/v1", api).merge(root).merge(dashboard::router(dist)).layer(middleware).with_state(state)
}

/// Agent routes are answered uncompressed whatever the agent accepts (see [`router`]).
fn agents_answered_plain<B>(mut request: Request<B>) -> Request<B> {
    if request.uri().path().starts_with(shared::agent::ROUTES) {
        request.headers_mut().remove(ACCEPT_ENCODING);
    }
    request
}

/// The OpenAPI document's frame; paths and schemas come from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Fleetwave control plane", description = "Agent, operator and dashboard API (SPEC §9)."),
    tags((name = "agent", description = "Signed agent requests"), (name = "operator", description = "Reads for viewers, actions for operators"), (name = "session"), (name = "system"))
)]
struct ApiDoc;

/// Every route, registered together with its OpenAPI description so that none can be
/// served undocumented: the `/api/v1` router, the root router (`/healthz`, `/readyz`,
/// `/metrics`) and the document (with `/api/v1` paths prefixed).
pub fn routes() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let api = OpenApiRouter::new()
        .routes(routes!(system::version))
        .routes(routes!(system::cluster))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::events))
        .routes(routes!(agent::bootstrap))
        .routes(routes!(session::create, session::whoami, session::delete))
        .routes(routes!(operator::upload_manifests))
        .routes(routes!(operator::fleet))
        .routes(routes!(operator::rollouts))
        .routes(routes!(history::channel_history))
        .routes(routes!(hosts::search))
        .routes(routes!(operator::host))
        .routes(routes!(operator::rollout))
        .routes(routes!(operator::rollout_events))
        .routes(routes!(operator::rollout_changes))
        .routes(routes!(operator::approve))
        .routes(routes!(operator::promote))
        .routes(routes!(operator::pause))
        .routes(routes!(operator::resume))
        .routes(routes!(operator::clear_failure))
        .routes(routes!(operator::quarantines, operator::quarantine))
        .routes(routes!(operator::release))
        .routes(routes!(operator::freezes, operator::freeze))
        .routes(routes!(operator::unfreeze))
        .routes(routes!(operator::suspend))
        .routes(routes!(operator::resume_host))
        .routes(routes!(operator::feed))
        .routes(routes!(audit::audit))
        .routes(routes!(audit::webhooks));
    let root = OpenApiRouter::new()
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics));
    let (api, api_doc) = api.split_for_parts();
    let (root, root_doc) = root.split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(root_doc);
    doc = doc.nest("/api/v1", api_doc);
    doc.paths.paths.insert(
        "/api/v1/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .tag("system")
                .response("200", utoipa::openapi::Response::new("This document (OpenAPI 3.1)")),
        ),
    );
    (api, root, doc)
}

/// Budget for a readiness check; a database that takes longer counts as down.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(2);
