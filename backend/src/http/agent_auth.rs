//! Agent request signatures (SPEC §9.1). Every agent request carries the host's name, a unix
//! timestamp and an Ed25519 signature, by the host key from the verified fleet, over
//! `fleetwave-agent-v1\n{METHOD}\n{path and query}\n{timestamp}\n{sha256(body)}`.

use shared::ErrorCode;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use engine::verify::{AgentRequestError, agent_signature, agent_timestamp};
use shared::Hostname;
use shared::agent::{HOST_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use super::extract::{AGENT_BODY_BYTES, body_bytes};
use super::{ApiError, AppState};

pub use shared::agent::MAX_SKEW_SECONDS;

/// Signatures seen while their request could still be accepted: a request signed at `t` is
/// refused for its timestamp after `t + MAX_SKEW_SECONDS`, so that is when its signature is
/// forgotten. A signature is remembered by its first 16 bytes (part of R, which the signer
/// derives from a hash; a different valid signature sharing them has a 2^-128 chance) — at
/// thousands of requests per second the cache is a large share of the server's memory, and
/// this keeps it near 40 bytes per request.
#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
}

#[derive(Default)]
struct ReplayInner {
    seen: HashSet<u128>,
    /// Keys by the second after which their request can no longer be accepted.
    expiry: BTreeMap<i64, Vec<u128>>,
}

impl ReplayCache {
    /// True the first time a signature is offered, false for a replay. `signed_at` is the
    /// request's (already checked) timestamp.
    fn first_use(&self, signature: &[u8; 64], signed_at: i64, now: i64) -> bool {
        let Ok(mut inner) = self.inner.lock() else { return false };
        while let Some(entry) = inner.expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for key in entry.remove() {
                inner.seen.remove(&key);
            }
        }
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&signature[..16]);
        let key = u128::from_le_bytes(prefix);
        if !inner.seen.insert(key) {
            return false;
        }
        inner.expiry.entry(signed_at + MAX_SKEW_SECONDS).or_default().push(key);
        true
    }
}

/// An authenticated agent request: the signing host and the body it signed.
pub struct SignedAgent {
    pub host: Hostname,
    pub body: Bytes,
}

pub enum AgentAuthError {
    NotReady,
    Api(ApiError),
}

impl IntoResponse for AgentAuthError {
    fn into_response(self) -> Response {
        match self {
            AgentAuthError::NotReady => {
                let mut response =
                    ApiError::unavailable("No verified fleet yet; agents cannot be authenticated.").into_response();
                response.headers_mut().insert(RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
                response
            }
            AgentAuthError::Api(err) => err.into_response(),
        }
    }
}

impl From<ApiError> for AgentAuthError {
    fn from(err: ApiError) -> Self {
        AgentAuthError::Api(err)
    }
}

fn unauthorized(code: ErrorCode, message: impl Into<String>) -> AgentAuthError {
    AgentAuthError::Api(ApiError::new(StatusCode::UNAUTHORIZED, code, message))
}

impl FromRequest<AppState> for SignedAgent {
    type Rejection = AgentAuthError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(fleet) = state.fleet.read().ok().and_then(|f| f.clone()) else {
            return Err(AgentAuthError::NotReady);
        };
        let (method, path, host, timestamp, signature) = {
            let path = req
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| req.uri().clone(), |o| o.0.clone())
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            (
                req.method().as_str().to_owned(),
                path,
                header(HOST_HEADER),
                header(TIMESTAMP_HEADER),
                header(SIGNATURE_HEADER),
            )
        };
        // Who claims to send it and when are checked before the body is read: an unknown host
        // or a stale timestamp costs the server no buffer.
        let host = host
            .and_then(|h| Hostname::parse(h).ok())
            .ok_or_else(|| unauthorized(ErrorCode::UnknownHost, "X-Fleetwave-Host is missing or not a hostname."))?;
        let key = fleet.pubkey(&host).ok_or_else(|| {
            unauthorized(ErrorCode::UnknownHost, format!("{host} is not a host of the verified fleet."))
        })?;
        let now = chrono::Utc::now().timestamp();
        let timestamp = agent_timestamp(timestamp.as_deref(), now, MAX_SKEW_SECONDS).map_err(|err| match err {
            AgentRequestError::SkewedTimestamp { .. } => unauthorized(ErrorCode::SkewedTimestamp, format!("{err}.")),
            _ => unauthorized(ErrorCode::BadTimestamp, format!("{err}.")),
        })?;
        let body = body_bytes(req, AGENT_BODY_BYTES).await?;
        let signature =
            agent_signature(key, &method, &path, timestamp, signature.as_deref(), &body).map_err(|err| {
                let message = match err {
                    AgentRequestError::BadSignature => format!("The signature does not verify with {host}'s key."),
                    other => format!("{other}."),
                };
                unauthorized(ErrorCode::BadSignature, message)
            })?;
        if !state.replay.first_use(&signature, timestamp, now) {
            return Err(unauthorized(ErrorCode::ReplayedSignature, "This signature was already used."));
        }
        Ok(SignedAgent { host, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_refused_again_until_its_request_could_no_longer_be_accepted() {
        let cache = ReplayCache::default();
        let (a, b) = ([1u8; 64], [2u8; 64]);
        assert!(cache.first_use(&a, 1_000, 1_000));
        assert!(!cache.first_use(&a, 1_000, 1_000), "the same signature twice");
        assert!(cache.first_use(&b, 1_000, 1_000), "another signature");
        // Signed at 1,000: acceptable (by timestamp) until 1,060, so remembered until then.
        assert!(!cache.first_use(&a, 1_000, 1_000 + MAX_SKEW_SECONDS));
        // Later the timestamp check refuses it anyway; the cache has let it go.
        assert!(cache.first_use(&a, 1_000, 1_001 + MAX_SKEW_SECONDS));
        let sizes = cache.inner.lock().map(|inner| (inner.seen.len(), inner.expiry.len()));
        assert!(matches!(sizes, Ok((1, 1))), "expired entries are gone: {sizes:?}");
    }
}
