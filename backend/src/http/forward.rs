//! Writes that reach a follower go to the leader, unchanged (SPEC §15): agent events and
//! heartbeats, manifest uploads and operator actions. The leader authenticates them as if
//! they had come to it directly — an agent's signature covers the method, path, timestamp and
//! body, all passed on as they came, and the leader's replay cache sees every signed write —
//! and its answer (status, headers, body) goes back as it came. Sign-in and sign-out are
//! writes of the shared database that any replica makes itself.
//!
//! While no leader is known the answer is `503` with `Retry-After: 1`; so it is when the
//! leader cannot be reached (it may have just died: a follower takes over within seconds).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::ErrorCode;
use shared::api::ReplicaRole;

use super::{ApiError, AppState};

/// Marks a request a replica passed on: the receiver answers it or refuses it, never passes it
/// on again (two replicas that each think the other leads would bounce it forever).
pub const FORWARDED: HeaderName = HeaderName::from_static("x-fleetwave-forwarded");
/// How long connecting to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client that passes writes on: connect timeout here, the whole exchange bounded by the
/// request timeout the router already applies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Whether a request to `/api/v1{path}` changes state through the reducer.
fn is_write(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && path != "/api/v1/session"
}

/// 503 + `Retry-After: 1`.
pub fn no_leader(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoLeader, message.to_owned()).into_response();
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Middleware on `/api/v1`: answers writes on the leader, passes them on from a follower.
pub async fn writes_to_leader(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.cluster.role() == ReplicaRole::Leader {
        return next.run(request).await;
    }
    let uri = request.extensions().get::<OriginalUri>().map_or_else(|| request.uri().clone(), |o| o.0.clone());
    if !is_write(request.method(), uri.path()) {
        return next.run(request).await;
    }
    if request.headers().contains_key(&FORWARDED) {
        return no_leader("This replica does not lead either; the leader is changing. Try again.");
    }
    let Some(leader) = state.cluster.leader_elsewhere() else {
        return no_leader("No replica leads at the moment (a takeover is under way). Try again.");
    };
    let target = format!("{}{}", leader.url.trim_end_matches('/'), uri.path_and_query().map_or("", |p| p.as_str()));
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    for hop in [header::CONNECTION, header::HOST, header::TRANSFER_ENCODING, header::UPGRADE, header::TE] {
        headers.remove(hop);
    }
    headers.insert(FORWARDED, HeaderValue::from_static("1"));
    let sent = state
        .forwarder
        .request(parts.method, &target)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status().as_u16());
            if let Some(out) = response.headers_mut() {
                for (name, value) in answer.headers() {
                    if !matches!(*name, header::CONNECTION | header::TRANSFER_ENCODING | header::CONTENT_LENGTH) {
                        out.append(name.clone(), value.clone());
                    }
                }
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|_| no_leader("The leader's answer could not be passed back. Try again."))
        }
        Err(err) => {
            tracing::warn!(%err, leader = %leader.url, "cannot pass a write to the leader");
            no_leader("The leader did not answer (it may be changing). Try again.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_the_changing_methods_except_signing_in_and_out() {
        assert!(is_write(&Method::POST, "/api/v1/agent/events"));
        assert!(is_write(&Method::POST, "/api/v1/rollouts/web@1/approve"));
        assert!(is_write(&Method::DELETE, "/api/v1/quarantines/x"));
        assert!(!is_write(&Method::GET, "/api/v1/rollouts"));
        assert!(!is_write(&Method::POST, "/api/v1/session"));
        assert!(!is_write(&Method::DELETE, "/api/v1/session"));
    }
}
