//! The dashboard: Trunk's `dist/` served at `/`, with every unknown path answered by
//! `index.html` so the client-side router can take deep links (`/rollouts/x`, `/login?token=`).

use std::path::Path;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use tower_http::services::{ServeDir, ServeFile};

/// A router whose fallback serves `dist`, or, when it holds no `index.html`, a page that says
/// how to build it. Merged last into the main router, so API routes always win.
pub fn router(dist: &Path) -> Router<super::AppState> {
    let index = dist.join("index.html");
    if index.is_file() {
        Router::new().fallback_service(ServeDir::new(dist).fallback(ServeFile::new(index)))
    } else {
        tracing::warn!(dist = %dist.display(), "no dashboard build found; `/` will say how to build it");
        Router::new().fallback(not_built)
    }
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>Fleetwave</title><h1>The dashboard is not built</h1>\
             <p>Run <code>trunk build --release</code> at the repository root \
             (or <code>./scripts/demo</code>, which does it for you), or pass \
             <code>--dist</code> pointing at a build.</p>",
        ),
    )
}
