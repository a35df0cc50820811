//! Agent request signatures (SPEC §9.1). Every agent request carries the host's name, a unix
//! timestamp and an Ed25519 signature, by the host key from the verified fleet, over
//! `fleetwave-agent-v1\n{METHOD}\n{path and query}\n{timestamp}\n{sha256(body)}`.

use shared::ErrorCode;

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

use crate::signatures::MAX_SKEW_SECONDS;

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
        let write = method != "GET" && method != "HEAD";
        if !state.replay.first_use(&signature, timestamp, now, write) {
            return Err(unauthorized(ErrorCode::ReplayedSignature, "This signature was already used."));
        }
        Ok(SignedAgent { host, body })
    }
}
