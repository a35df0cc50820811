//! What happened, for people outside the dashboard (SPEC §18): the audit and the webhooks'
//! delivery state.
//!
//! `GET /api/v1/audit?from=&to=&actor=`: what people did — operator actions,
//! uploads, quarantines, freezes, suspensions — as JSON lines, oldest first, streamed page by
//! page from the log's partial index, so an export of a year costs the server one page of
//! memory at a time.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::ErrorCode;
use shared::limits::MAX_OPERATOR_NAME_BYTES;

use super::operator_auth::Viewer;
use super::{ApiError, AppState};
use crate::db::store;

/// Entries read per query while streaming.
const AUDIT_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries at or after this time (RFC 3339).
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    /// Entries before this time.
    #[serde(default)]
    to: Option<DateTime<Utc>>,
    /// Only what this operator did (`manifests-directory` for releases read from disk).
    #[serde(default)]
    actor: Option<String>,
}

#[utoipa::path(get, path = "/audit", tag = "operator", params(("from" = Option<String>, Query, description = "RFC 3339: entries at or after"), ("to" = Option<String>, Query, description = "RFC 3339: entries before"), ("actor" = Option<String>, Query, description = "Only this operator's")), responses((status = 200, description = "application/x-ndjson: one shared::api::AuditEntry per line, oldest first", content_type = "application/x-ndjson", body = shared::api::AuditEntry), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    _: Viewer,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    if q.actor.as_ref().is_some_and(|a| a.is_empty() || a.len() > MAX_OPERATOR_NAME_BYTES) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadQuery,
            format!("actor must be 1–{MAX_OPERATOR_NAME_BYTES} bytes."),
        ));
    }
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, "from must be before to."));
    }
    // The first page is read before answering, so that a database error is an error status
    // rather than a cut stream.
    let first = store::audit_page(&state.store, 0, q.from, q.to, AUDIT_PAGE).await.map_err(ApiError::internal)?;
    let pages = futures_util::stream::unfold(Some((first, state, q)), |next| async move {
        let (page, state, q) = next?;
        let full = page.len() as i64 == AUDIT_PAGE;
        let last = page.last().map(|e| e.seq);
        let mut text = String::new();
        for entry in page.iter().filter_map(|e| e.audit()) {
            if q.actor.as_ref().is_none_or(|a| *a == entry.actor) {
                text.push_str(&serde_json::to_string(&entry).unwrap_or_default());
                text.push('\n');
            }
        }
        let following = match (full, last) {
            (true, Some(after)) => match store::audit_page(&state.store, after, q.from, q.to, AUDIT_PAGE).await {
                Ok(page) => Some((page, state, q)),
                Err(err) => {
                    // The status is sent already: end the stream early and say so in the log.
                    tracing::error!(%err, after, "the audit stream stops: the database failed");
                    return Some((Err(std::io::Error::other(err.to_string())), None));
                }
            },
            _ => None,
        };
        Some((Ok::<_, std::io::Error>(Bytes::from(text)), following))
    });
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(pages)))
}

/// `GET /api/v1/webhooks`: each configured webhook and how its delivery stands (where its
/// cursor is, how far behind the log, failing since when and why).
#[utoipa::path(get, path = "/webhooks", tag = "operator", responses((status = 200, body = Vec<shared::api::WebhookView>), (status = 401, body = shared::ApiErrorBody)))]
pub async fn webhooks(
    State(state): State<AppState>,
    _: Viewer,
) -> Result<axum::Json<Vec<shared::api::WebhookView>>, ApiError> {
    let last = store::last_seq(&state.store).await.map_err(ApiError::internal)?;
    Ok(axum::Json(state.webhooks.views(last)))
}
