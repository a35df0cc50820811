//! Body extraction with the API's errors: malformed JSON → 400 `malformed-json`, wrong types,
//! missing or unknown fields → 422 `invalid-body`, a body over its route's limit → 413
//! `body-too-large` (checked against `Content-Length` before anything is read), a body that
//! stalls → 408 `body-timeout`. Never a panic, never a 500.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use serde::de::DeserializeOwned;
use shared::ErrorCode;

use super::ApiError;

/// Bodies of operator actions and the other small JSON routes.
pub const ACTION_BODY_BYTES: usize = 64 * 1024;
/// Agent bodies (the largest event, a failed activation with its stderr tail and closures,
/// is under 20 KiB; `shared::limits`).
pub const AGENT_BODY_BYTES: usize = 64 * 1024;
/// `POST /session`: a token, from anyone.
pub const SESSION_BODY_BYTES: usize = 4 * 1024;
/// `POST /manifests`: a signed fleet and its manifests, base64-encoded (a 10,000-host fleet
/// with its rollouts is ~6 MiB; this leaves room for ~100,000). Operators only, and checked
/// after their token.
pub const MANIFESTS_BODY_BYTES: usize = 64 * 1024 * 1024;

fn too_large(limit: usize) -> ApiError {
    let size =
        if limit >= 1024 * 1024 { format!("{} MiB", limit / (1024 * 1024)) } else { format!("{} KiB", limit / 1024) };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BodyTooLarge,
        format!("The request body is larger than {size}."),
    )
}

/// The raw body, at most `limit` bytes, with the API's 413 (and 408 when it stalls past the
/// router's body timeout).
pub async fn body_bytes(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|err| {
        let source = err.into_inner();
        if source.is::<http_body_util::LengthLimitError>() {
            too_large(limit)
        } else if source.is::<tower_http::timeout::TimeoutError>() {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::BodyTimeout, "The request body stopped arriving.")
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnreadableBody,
                format!("The request body could not be read: {source}"),
            )
        }
    })
}

/// Parses JSON with the API's error codes. `empty_as` is used for an empty body, for routes
/// whose fields are all optional.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], empty_as: Option<&str>) -> Result<T, ApiError> {
    let bytes = match (bytes.iter().all(u8::is_ascii_whitespace), empty_as) {
        (true, Some(default)) => default.as_bytes(),
        _ => bytes,
    };
    // Every body of this API is an object; serde would also take a struct from an array.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidBody,
                "The request body must be a JSON object.",
            ),
            Err(err) => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                format!("The request body is not valid JSON: {err}."),
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            format!("The request body does not fit this route: {err}."),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("The request body is not valid JSON: {err}."),
        ),
    })
}

/// `Json<T>` with the API's errors; the body may be at most `LIMIT` bytes.
pub struct JsonBody<T, const LIMIT: usize = ACTION_BODY_BYTES>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, LIMIT).await?;
        parse_json(&bytes, None).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body counts as `{}` (operator actions whose fields are
/// all optional, SPEC §9.2).
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, ACTION_BODY_BYTES).await?;
        parse_json(&bytes, Some("{}")).map(OptionalJsonBody)
    }
}
