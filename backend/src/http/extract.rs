//! Body extraction with the API's errors: malformed JSON → 400 `malformed-json`, wrong types,
//! missing or unknown fields → 422 `invalid-body`, more than 1 MiB → 413 `body-too-large`.
//! Never a panic, never a 500.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// The raw body, size-limited, with the API's 413.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "The request body is larger than 1 MiB.")
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable-body",
                format!("The request body could not be read: {rejection}"),
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
                "invalid-body",
                "The request body must be a JSON object.",
            ),
            Err(err) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                format!("The request body is not valid JSON: {err}."),
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            format!("The request body does not fit this route: {err}."),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("The request body is not valid JSON: {err}."),
        ),
    })
}

/// `Json<T>` with the API's errors.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes, None).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body counts as `{}` (operator actions whose fields are
/// all optional, SPEC §9.2).
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes, Some("{}")).map(OptionalJsonBody)
    }
}
