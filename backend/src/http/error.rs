//! The one error type routes answer with: `{"error": {"code", "message"}}` (SPEC §9).
//! Internals (SQL text, IO errors) go to the log, never to the client.

use axum::Json;
use axum::extract::OriginalUri;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = shared::ApiErrorBody {
            error: shared::ApiError {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Unknown `/api/v1/*` routes answer JSON, not the dashboard's `index.html`.
/// `OriginalUri`, because the nested router only sees the path below `/api/v1`.
pub async fn api_not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!("There is no API route at {}.", uri.path()))
}
