//! `POST /api/v1/session {token}` trades a token for a session cookie; `GET` says who is
//! signed in; `DELETE` signs out. The session token is random and stored hashed.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::ErrorCode;
use shared::api::{SessionRequest, Whoami};

use super::extract::{JsonBody, SESSION_BODY_BYTES};
use super::operator_auth::{Viewer, over_https, session_cookie, session_of};
use super::{ApiError, AppState};
use crate::db::auth;
use crate::db::auth::{new_token, token_hash};

const SESSION_HOURS: i64 = 12;

#[utoipa::path(post, path = "/session", tag = "session", request_body = shared::api::SessionRequest, responses((status = 200, description = "Signed in; sets the HttpOnly session cookie", body = shared::api::Whoami), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 415, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<SessionRequest, SESSION_BODY_BYTES>,
) -> Result<Response, ApiError> {
    // Only a JSON request: a cross-site form (`text/plain`, no preflight) must not be able to
    // sign a browser in under the attacker's token (login CSRF).
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "Send the token as JSON (Content-Type: application/json).",
        ));
    }
    let operator = auth::operator_by_token(&state.store, &token_hash(body.token.trim()))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, "That token is not valid.")
        })?;
    let session = new_token();
    let now = chrono::Utc::now();
    auth::create_session(
        &state.store,
        &token_hash(&session),
        operator.id,
        now,
        now.checked_add_signed(chrono::Duration::hours(SESSION_HOURS))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
    )
    .await
    .map_err(ApiError::internal)?;
    let whoami = Whoami { name: operator.name, role: operator.role.as_str().to_owned() };
    let cookie = session_cookie(&session, SESSION_HOURS * 3600, over_https(&state, &headers));
    Ok(([(header::SET_COOKIE, cookie)], Json(whoami)).into_response())
}

#[utoipa::path(get, path = "/session", tag = "session", responses((status = 200, body = shared::api::Whoami), (status = 401, body = shared::ApiErrorBody)))]
pub async fn whoami(Viewer(op): Viewer) -> Json<Whoami> {
    Json(Whoami { name: op.name, role: op.role.as_str().to_owned() })
}

/// The raw session cookie, for signing out.
pub struct SessionCookie(Option<String>);

impl FromRequestParts<AppState> for SessionCookie {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(SessionCookie(session_of(parts)))
    }
}

#[utoipa::path(delete, path = "/session", tag = "session", responses((status = 204, description = "Signed out")))]
pub async fn delete(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    SessionCookie(cookie): SessionCookie,
) -> Result<Response, ApiError> {
    if let Some(token) = cookie {
        auth::delete_session(&state.store, &token_hash(&token)).await.map_err(ApiError::internal)?;
    }
    Ok(([(header::SET_COOKIE, session_cookie("", 0, over_https(&state, &headers)))], StatusCode::NO_CONTENT)
        .into_response())
}
