//! The dashboard: Trunk's `dist/` served at `/`, with every unknown path answered by
//! `index.html` so the client-side router can take deep links (`/rollouts/x`, `/login?token=`).
//! Trunk names its files by their content's hash (`frontend-<hash>_bg.wasm`): browsers keep
//! those for good, and revalidate everything else — `index.html` names the build's files, so an
//! old copy of it after an upgrade would ask for files that are gone.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use axum::Router;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use tower_http::services::{ServeDir, ServeFile};

/// A router whose fallback serves `dist`, or, when it holds no `index.html`, a page that says
/// how to build it. Merged last into the main router, so API routes always win.
pub fn router<S: Clone + Send + Sync + 'static>(dist: &Path) -> Router<S> {
    let index = dist.join("index.html");
    if index.is_file() {
        Router::new()
            .fallback_service(ServeDir::new(dist).fallback(ServeFile::new(index)))
            .layer(axum::middleware::from_fn(cache_policy))
    } else {
        tracing::warn!(dist = %dist.display(), "no dashboard build found; `/` will say how to build it");
        Router::new().fallback(not_built)
    }
}

/// Trunk's content-hashed files: kept for a year and never revalidated.
const KEEP: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Everything else the dashboard serves: revalidated on every load.
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

async fn cache_policy(request: Request, next: Next) -> Response {
    let hashed = content_hashed(request.uri().path());
    let mut response = next.run(request).await;
    // A hashed name that is not (or no longer) there is answered by `index.html`: not kept.
    let html = response.headers().get(CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    let keep = hashed && response.status().is_success() && !html;
    response.headers_mut().insert(CACHE_CONTROL, if keep { KEEP } else { REVALIDATE });
    response
}

/// Whether the path's file is named as Trunk names a build's files: `<name>-<16 hex digits>`,
/// then `_bg` for the WebAssembly, then the extension.
fn content_hashed(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or_default();
    let Some((stem, _extension)) = file.rsplit_once('.') else { return false };
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(name, hash)| {
        !name.is_empty() && hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
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
    fn files_named_by_their_content_hash_are_told_apart_from_the_rest() {
        for hashed in
            ["/frontend-7055f4717ce0636c.js", "/frontend-7055f4717ce0636c_bg.wasm", "/style-6ecfa732c508770e.css"]
        {
            assert!(content_hashed(hashed), "{hashed}");
        }
        for other in [
            "/",
            "/index.html",
            "/rollouts/stable@a1",
            "/frontend.js",
            "/frontend-7055F4717CE0636C.js",
            "/x-7055f4717ce0636.js",
            "/-7055f4717ce0636c.js",
            "/frontend-7055f4717ce0636c",
        ] {
            assert!(!content_hashed(other), "{other}");
        }
    }

    #[tokio::test]
    async fn hashed_files_are_kept_and_the_page_and_unknown_paths_are_revalidated() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<html></html>").unwrap();
        std::fs::write(dir.path().join("frontend-7055f4717ce0636c.js"), "export {}").unwrap();
        let app = router::<()>(dir.path());
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
                let response = app.oneshot(request).await.unwrap();
                (response.status(), response.headers().get(CACHE_CONTROL).cloned())
            }
        };
        assert_eq!(get("/frontend-7055f4717ce0636c.js").await, (StatusCode::OK, Some(KEEP)));
        assert_eq!(get("/").await, (StatusCode::OK, Some(REVALIDATE)));
        assert_eq!(get("/rollouts/stable@a1").await, (StatusCode::OK, Some(REVALIDATE)));
        // An old build's file, gone since: answered by the page, which must not be kept.
        assert_eq!(get("/frontend-0000000000000000.js").await, (StatusCode::OK, Some(REVALIDATE)));
    }

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
