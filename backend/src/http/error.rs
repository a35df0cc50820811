//! The one error type routes answer with: `{"error": {"code", "message"}}` (SPEC §9).
//! Internals (SQL text, IO errors) go to the log, never to the client.

use axum::Json;
use axum::extract::OriginalUri;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::ErrorCode;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    first_seq: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), first_seq: None }
    }

    /// 410: what was asked for was sealed out of the database; the log now begins at `first`.
    pub fn sealed(first: i64) -> Self {
        let mut err = Self::new(
            StatusCode::GONE,
            ErrorCode::LogSealed,
            format!("Entries before seq {first} were sealed into the log archive; the database holds seq {first} on."),
        );
        err.first_seq = Some(first);
        err
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady, message)
    }

    /// A signed input that did not verify: 422 with the verification outcome as the code.
    pub fn verification(err: engine::verify::VerifyError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, err.code(), err.to_string())
    }

    /// A storage failure: logged in full, answered 503 without internals.
    pub fn internal(err: sqlx::Error) -> Self {
        tracing::error!(%err, "database error while answering a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            "The control plane's database did not answer; try again.",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<crate::reducer::ReducerError> for ApiError {
    fn from(err: crate::reducer::ReducerError) -> Self {
        match err {
            crate::reducer::ReducerError::Rejected { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            crate::reducer::ReducerError::Invalid { code, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            crate::reducer::ReducerError::Unavailable(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady, message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = shared::ApiErrorBody {
            error: shared::ApiError { code: self.code, message: self.message, first_seq: self.first_seq },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Unknown `/api/v1/*` routes answer JSON, not the dashboard's `index.html`.
/// `OriginalUri`, because the nested router only sees the path below `/api/v1`.
pub async fn api_not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!("There is no API route at {}.", uri.path()))
}

/// A known API path with the wrong method.
pub async fn method_not_allowed(OriginalUri(uri): OriginalUri, method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}.", uri.path()),
    )
}
