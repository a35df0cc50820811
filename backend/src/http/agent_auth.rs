//! Agent request signatures (SPEC §9.1). Every agent request carries the host's name, a unix
//! timestamp and an Ed25519 signature, by the host key from the verified fleet, over
//! `fleetwave-agent-v1\n{METHOD}\n{path and query}\n{timestamp}\n{sha256(body)}`.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signature;
use shared::Hostname;
use shared::agent::{HOST_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signing_string};

use super::extract::body_bytes;
use super::{ApiError, AppState};

/// How far an agent's clock may be off.
pub const MAX_SKEW_SECONDS: i64 = 60;

/// Signatures seen inside the skew window. A signature outside the window is refused for its
/// timestamp anyway, so entries older than twice the window are forgotten.
#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
}

#[derive(Default)]
struct ReplayInner {
    seen: HashSet<[u8; 64]>,
    order: VecDeque<(i64, [u8; 64])>,
}

impl ReplayCache {
    /// True the first time a signature is offered, false for a replay.
    fn first_use(&self, signature: [u8; 64], now: i64) -> bool {
        let Ok(mut inner) = self.inner.lock() else { return false };
        while let Some((at, sig)) = inner.order.front().copied() {
            if at >= now - 2 * MAX_SKEW_SECONDS {
                break;
            }
            inner.order.pop_front();
            inner.seen.remove(&sig);
        }
        if !inner.seen.insert(signature) {
            return false;
        }
        inner.order.push_back((now, signature));
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

fn unauthorized(code: &'static str, message: impl Into<String>) -> AgentAuthError {
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
        let body = body_bytes(req, state).await?;

        let host = host
            .and_then(|h| Hostname::parse(h).ok())
            .ok_or_else(|| unauthorized("unknown-host", "X-Fleetwave-Host is missing or not a hostname."))?;
        let key = fleet
            .pubkey(&host)
            .ok_or_else(|| unauthorized("unknown-host", format!("{host} is not a host of the verified fleet.")))?;
        let timestamp: i64 = timestamp
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| unauthorized("bad-timestamp", "X-Fleetwave-Timestamp must be unix seconds."))?;
        let now = chrono::Utc::now().timestamp();
        if (now - timestamp).abs() > MAX_SKEW_SECONDS {
            return Err(unauthorized(
                "skewed-timestamp",
                format!(
                    "The request timestamp is {}s off the control plane's clock (at most {MAX_SKEW_SECONDS}s).",
                    now - timestamp
                ),
            ));
        }
        let signature: [u8; 64] = signature
            .and_then(|s| B64.decode(s.trim()).ok())
            .and_then(|raw| raw.try_into().ok())
            .ok_or_else(|| unauthorized("bad-signature", "X-Fleetwave-Signature must be base64 of 64 bytes."))?;
        let digest_hex = engine::verify::sha256_hex(&body);
        let message = signing_string(&method, &path, timestamp, &digest_hex);
        if key.verify_strict(message.as_bytes(), &Signature::from_bytes(&signature)).is_err() {
            return Err(unauthorized("bad-signature", format!("The signature does not verify with {host}'s key.")));
        }
        if !state.replay.first_use(signature, now) {
            return Err(unauthorized("replayed-signature", "This signature was already used."));
        }
        Ok(SignedAgent { host, body })
    }
}
