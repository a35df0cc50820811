//! Liveness, readiness and version.

use axum::Json;
use axum::extract::State;

use super::{ApiError, AppState, READY_TIMEOUT};

/// `GET /api/v1/version`
pub async fn version() -> Json<shared::VersionInfo> {
    Json(shared::VersionInfo {
        name: "fleetwave".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api: "v1".into(),
    })
}

/// `GET /healthz`: the process is up and serving HTTP.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 only when the database answers.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, crate::db::ping(&state.pool)).await {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(err)) => {
            tracing::warn!(%err, "readiness: database ping failed");
            Err(ApiError::unavailable("The database is not answering."))
        }
        Err(_) => Err(ApiError::unavailable(
            "The database did not answer in time.",
        )),
    }
}
