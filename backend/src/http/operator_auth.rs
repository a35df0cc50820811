//! Operator authentication (SPEC §9.2): `Authorization: Bearer <token>` or the session cookie
//! from `POST /session`. Mutating requests authenticated by cookie must also send
//! `X-Fleetwave-Csrf: 1` (a header a cross-site form cannot set). Roles: viewers read,
//! operators act.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use shared::ErrorCode;

use super::{ApiError, AppState};
use crate::db::auth::{self, Operator, Role};

pub const SESSION_COOKIE: &str = "fw_session";
pub const CSRF_HEADER: &str = "x-fleetwave-csrf";

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        },
    )
}

/// Someone signed in, any role.
pub struct Viewer(pub Operator);

/// Someone signed in with the `operator` role.
pub struct Acting(pub Operator);

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Operator, ApiError> {
    let db_error = |err: sqlx::Error| {
        tracing::error!(%err, "cannot read operators");
        ApiError::unavailable("The operator database is not answering.")
    };
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "Authorization must be `Bearer <token>`.",
            )
        })?;
        return auth::operator_by_token(&state.store, &auth::token_hash(token.trim()))
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, "The token is not valid.")
            });
    }
    if let Some(session) = cookie(parts, SESSION_COOKIE) {
        let operator = auth::operator_by_session(&state.store, &auth::token_hash(&session), chrono::Utc::now())
            .await
            .map_err(db_error)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthenticated,
                    "The session has expired; sign in again.",
                )
            })?;
        let mutating = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if mutating && parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Csrf,
                "Changes made with a session cookie must send `X-Fleetwave-Csrf: 1`.",
            ));
        }
        return Ok(operator);
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        "Sign in: send a Bearer token or the session cookie.",
    ))
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(Viewer)
    }
}

impl FromRequestParts<AppState> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let operator = authenticate(parts, state).await?;
        if operator.role != Role::Operator {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!("{} is a viewer; this needs the operator role.", operator.name),
            ));
        }
        Ok(Acting(operator))
    }
}

/// The session cookie for `token` (HttpOnly, SameSite=Strict).
pub fn session_cookie(token: &str, max_age_seconds: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_seconds}{secure}")
}

/// Whether the browser reached us over https: `--public-url https://…`, or a proxy in front
/// that says so (`X-Forwarded-Proto: https`; a client that sends it itself only makes its own
/// cookie stricter).
pub fn over_https(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    state.https
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().is_some_and(|first| first.trim().eq_ignore_ascii_case("https")))
}

/// The value of the session cookie, when the request has one.
pub fn session_of(parts: &Parts) -> Option<String> {
    cookie(parts, SESSION_COOKIE)
}
