//! Liveness, readiness and version.

use crate::config::MetricsAccess;
use axum::Json;
use axum::extract::State;
use shared::ErrorCode;
use shared::api::ReplicaRole;

use super::operator_auth::Viewer;
use super::{ApiError, AppState, READY_TIMEOUT};

/// `GET /api/v1/version`
#[utoipa::path(get, path = "/version", tag = "system", responses((status = 200, body = shared::VersionInfo)))]
pub async fn version() -> Json<shared::VersionInfo> {
    Json(shared::VersionInfo { name: "fleetwave".into(), version: env!("CARGO_PKG_VERSION").into(), api: "v1".into() })
}

/// `GET /api/v1/cluster`: this replica, the leader it knows, every replica (SPEC §15).
#[utoipa::path(get, path = "/cluster", tag = "system", responses((status = 200, body = shared::api::ClusterView), (status = 401, body = shared::ApiErrorBody)))]
pub async fn cluster(State(state): State<AppState>, _viewer: Viewer) -> Json<shared::api::ClusterView> {
    Json(state.cluster.view(state.clock.now()))
}

/// `GET /healthz`: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "The process serves HTTP", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

const GAUGES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus / OpenMetrics text", content_type = "application/openmetrics-text", body = String), (status = 401, description = "With `--metrics-access viewer` and no token", body = shared::ApiErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    viewer: Result<Viewer, ApiError>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    if state.metrics_access == MetricsAccess::Viewer {
        viewer?;
    }
    // The record gauges are computed by the reducer on demand, at most once a second however
    // often anyone scrapes (each refresh is reducer work that counts every record); if it
    // cannot answer in time, the last values are served.
    if state.metrics.claim_gauge_refresh(std::time::Instant::now()) {
        let refresh = state.reducer.ask(|reply| crate::reducer::ReducerInput::RefreshGauges { reply });
        if !matches!(tokio::time::timeout(GAUGES_TIMEOUT, refresh).await, Ok(Ok(()))) {
            tracing::debug!("serving the last gauges: the reducer did not refresh them in time");
        }
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    ))
}

/// `GET /readyz`: 200 only when the database answers and writes can be taken: the reducer runs
/// here, or (a follower) a leader is known to pass them to.
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, description = "Database up; reducer running, or a leader known", body = String), (status = 503, body = shared::ApiErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if let Some(why) = state.health.failure() {
        return Err(ApiError::unavailable(format!("The control plane is failing and stopping: {why}.")));
    }
    match (state.cluster.role(), state.reducer.get()) {
        (ReplicaRole::Leader, Some(reducer)) => {
            if !reducer.is_running() {
                return Err(ApiError::unavailable("The reducer is not running."));
            }
            if reducer.is_reloading() {
                return Err(ApiError::unavailable("A write failed; state is being reloaded from the database."));
            }
        }
        (ReplicaRole::Leader, None) => return Err(ApiError::unavailable("This replica is starting to lead.")),
        (ReplicaRole::Follower, _) => {
            if state.cluster.leader_elsewhere().is_none() {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::NoLeader,
                    "No replica leads at the moment; writes cannot be taken.",
                ));
            }
        }
    }
    // `SELECT 1` answers on a full disk; the next commit would not.
    let free = state.db_path.as_deref().map(crate::db::free_bytes);
    match free.unwrap_or(Ok(u64::MAX)) {
        Ok(free) if free < state.min_free_disk_bytes => {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DiskFull,
                format!(
                    "The database's disk has {} MiB free, less than the {} MiB kept in reserve.",
                    free / (1024 * 1024),
                    state.min_free_disk_bytes / (1024 * 1024)
                ),
            ));
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "readiness: cannot read the database's free disk space"),
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(err)) => {
            tracing::warn!(%err, "readiness: database ping failed");
            Err(ApiError::unavailable("The database is not answering."))
        }
        Err(_) => Err(ApiError::unavailable("The database did not answer in time.")),
    }
}
