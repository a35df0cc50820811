//! `GET /api/v1/channels/{channel}/history?before=&limit=`: a channel's rollouts newest first,
//! each with how it ended, its waves' timings and approvals, and who did what
//! ([`crate::history`]), ten at a time by default.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use shared::api::ChannelHistory;
use shared::{Channel, ErrorCode, RolloutId};

use super::operator_auth::Viewer;
use super::{ApiError, AppState};
use crate::db::store;

const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, message)
}

#[utoipa::path(get, path = "/channels/{channel}/history", tag = "operator", params(("channel" = String, Path), ("before" = Option<String>, Query, description = "The page continues with rollouts opened before this one"), ("limit" = Option<i64>, Query, description = "1–50, default 10")), responses((status = 200, body = ChannelHistory), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 404, body = shared::ApiErrorBody)))]
pub async fn channel_history(
    State(state): State<AppState>,
    _: Viewer,
    Path(channel): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChannelHistory>, ApiError> {
    let channel =
        Channel::parse(channel).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadId, e.to_string()))?;
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit must be 1–{MAX_LIMIT}.")));
    }
    let before = q
        .before
        .map(RolloutId::parse)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadId, e.to_string()))?;
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    let known = fleet.as_ref().is_some_and(|f| f.doc.channels.contains_key(&channel));
    let rows = store::rollout_rows(&state.store, Some(&channel), before.as_ref(), limit + 1)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| bad(format!("before names no rollout of {channel}.")))?;
    if !known && rows.is_empty() {
        return Err(ApiError::not_found(format!("{channel} is no channel of the fleet and has no rollouts.")));
    }
    let next = (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].id.clone());
    let specs = fleet.as_ref().map(|f| f.waves(&channel).to_vec()).unwrap_or_default();
    let mut rollouts = Vec::new();
    for rollout in rows.iter().take(limit as usize) {
        let entries = store::rollout_progress(&state.store, &rollout.id).await.map_err(ApiError::internal)?;
        rollouts.push(crate::history::rollout_history(crate::views::rollout_header(rollout), &specs, &entries));
    }
    Ok(Json(ChannelHistory { channel, rollouts, next }))
}
