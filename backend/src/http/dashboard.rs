//! The dashboard: Trunk's `dist/` served at `/`, with every unknown path answered by
//! `index.html` so the client-side router can take deep links (`/rollouts/x`, `/login?token=`).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

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

/// The Content-Security-Policy every response carries: the dashboard's own scripts and
/// styles, the inline module script Trunk writes into `index.html` (allowed by its hash, read
/// from the build at start), WebAssembly (`wasm-unsafe-eval`, not `unsafe-eval`), inline
/// `style` attributes (bar widths; no `<style>` elements from elsewhere), requests to its own
/// origin only, and never inside a frame.
pub fn content_security_policy(dist: &Path) -> String {
    let index = std::fs::read_to_string(dist.join("index.html")).unwrap_or_default();
    let hashes: String = inline_scripts(&index)
        .map(|script| format!(" 'sha256-{}'", B64.encode(Sha256::digest(script.as_bytes()))))
        .collect();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; style-src 'self'; \
         style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The text of each `<script>` element without a `src`.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (tag, body) = rest.split_once('>')?;
        if tag.contains("src=") {
            return None;
        }
        body.split_once("</script>").map(|(script, _)| script)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_allowed_by_their_hash_and_scripts_with_a_source_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let html = "<html><script type=\"module\">\nimport init from '/a.js';\n</script><script src=\"/b.js\"></script></html>";
        std::fs::write(dir.path().join("index.html"), html).unwrap();
        let csp = content_security_policy(dir.path());
        let expected = B64.encode(Sha256::digest(b"\nimport init from '/a.js';\n"));
        assert!(csp.contains(&format!("'sha256-{expected}'")), "{csp}");
        assert_eq!(csp.matches("'sha256-").count(), 1, "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}
