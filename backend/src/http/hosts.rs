//! `GET /api/v1/hosts`: find hosts by hostname prefix, channel, tag, state and closure.
//!
//! The verified fleet's hosts are an ordered map in memory: a prefix is a range of it and a
//! page continues after the last hostname (keyset), so a page costs its own hosts, not the
//! fleet's size. State and closure filters are one query each for the set of hosts that
//! match (records of the channels' current rollouts by state, heartbeats by closure); the
//! page's own heartbeats and states are read for its hosts only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use shared::api::{HostHit, HostQuery, HostSearchPage};
use shared::state::HostState;
use shared::{ErrorCode, Hostname, RolloutId};

use super::operator::ONLINE_WITHIN_SECONDS;
use super::operator_auth::Viewer;
use super::{ApiError, AppState};
use crate::db::store;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, message)
}

fn text<'a>(field: &str, value: &'a Option<String>) -> Result<Option<&'a str>, ApiError> {
    match value.as_deref() {
        Some(v) if v.is_empty() || v.len() > HostQuery::MAX_TEXT_BYTES => {
            Err(bad(format!("{field} must be 1–{} bytes.", HostQuery::MAX_TEXT_BYTES)))
        }
        other => Ok(other),
    }
}

#[utoipa::path(get, path = "/hosts", tag = "operator", params(
    ("q" = Option<String>, Query, description = "Hostname prefix"),
    ("channel" = Option<String>, Query, description = "Only this channel's hosts"),
    ("tag" = Option<String>, Query, description = "Only hosts with this tag"),
    ("state" = Option<String>, Query, description = "Only hosts in this state in their channel's current rollout"),
    ("closure" = Option<String>, Query, description = "Only hosts running a closure containing this text"),
    ("after" = Option<String>, Query, description = "The page continues after this hostname"),
    ("limit" = Option<u32>, Query, description = "1–500, default 50")),
    responses((status = 200, body = HostSearchPage), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    _: Viewer,
    query: Result<Query<HostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HostSearchPage>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(HostQuery::DEFAULT_LIMIT);
    if !(1..=HostQuery::MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit must be 1–{}.", HostQuery::MAX_LIMIT)));
    }
    let prefix = text("q", &q.q)?.map(str::to_ascii_lowercase);
    let channel = text("channel", &q.channel)?;
    let tag = text("tag", &q.tag)?;
    let closure = text("closure", &q.closure)?;
    let after = text("after", &q.after)?;
    let wanted_state = match text("state", &q.state)? {
        None => None,
        Some(s) => Some(HostState::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            bad(format!(
                "state {s:?} is not a host state ({}).",
                HostState::ALL.map(|k| k.as_str()).join(", ")
            ))
        })?),
    };

    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    let Some(fleet) = fleet else { return Ok(Json(HostSearchPage { hosts: vec![], next: None })) };
    let current = store::current_rollouts(&state.store).await.map_err(ApiError::internal)?;
    // The hosts a state or closure filter lets through, each one query.
    let in_state: Option<HashSet<String>> = match wanted_state {
        None => None,
        Some(wanted) => {
            let ids: Vec<&RolloutId> = current
                .iter()
                .filter(|(c, _)| channel.is_none_or(|want| want == c.as_str()))
                .map(|(_, id)| id)
                .collect();
            let rows = store::record_states_of(&state.store, &ids, &[], Some(wanted))
                .await
                .map_err(ApiError::internal)?;
            Some(rows.into_iter().map(|(_, host, _)| host).collect())
        }
    };
    let running: Option<HashSet<String>> = match closure {
        None => None,
        Some(text) => {
            Some(store::hosts_running(&state.store, text).await.map_err(ApiError::internal)?.into_iter().collect())
        }
    };

    // Walk the fleet in name order from the prefix (or the page's start).
    let start = match (after, prefix.as_deref()) {
        (Some(after), Some(prefix)) if after < prefix => Bound::Included(prefix),
        (Some(after), _) => Bound::Excluded(after),
        (None, Some(prefix)) => Bound::Included(prefix),
        (None, None) => Bound::Unbounded,
    };
    let mut found: Vec<(&Hostname, &shared::manifest::HostEntry)> = Vec::new();
    let mut next = None;
    for (name, host) in fleet.doc.hosts.range::<str, _>((start, Bound::Unbounded)) {
        if let Some(prefix) = &prefix
            && !name.as_str().starts_with(prefix.as_str())
        {
            break;
        }
        let keep = channel.is_none_or(|c| host.channel.as_str() == c)
            && tag.is_none_or(|t| host.tags.iter().any(|h| h == t))
            && in_state.as_ref().is_none_or(|set| set.contains(name.as_str()))
            && running.as_ref().is_none_or(|set| set.contains(name.as_str()));
        if !keep {
            continue;
        }
        if found.len() == limit as usize {
            next = found.last().map(|(n, _)| (*n).clone());
            break;
        }
        found.push((name, host));
    }

    // The page's own heartbeats and states.
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let presence: HashMap<String, (chrono::DateTime<chrono::Utc>, Option<String>)> =
        store::presence_of(&state.store, &names)
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|(h, at, c)| (h, (at, c)))
            .collect();
    let channels: HashSet<&str> = found.iter().map(|(_, h)| h.channel.as_str()).collect();
    let page_rollouts: Vec<&RolloutId> =
        current.iter().filter(|(c, _)| channels.contains(c.as_str())).map(|(_, id)| id).collect();
    let states: BTreeMap<(String, String), String> = store::record_states_of(&state.store, &page_rollouts, &names, None)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(rollout, host, state)| ((host, rollout), state))
        .collect();
    let suspended = store::policies(&state.store).await.map_err(ApiError::internal)?.suspended;
    let now = state.clock.now();
    let hosts = found
        .into_iter()
        .map(|(name, host)| {
            let seen = presence.get(name.as_str());
            let rollout = current.get(host.channel.as_str());
            let record_state = rollout
                .and_then(|id| states.get(&(name.to_string(), id.to_string())))
                .and_then(|s| HostState::ALL.into_iter().find(|k| k.as_str() == s));
            HostHit {
                hostname: name.clone(),
                channel: host.channel.clone(),
                tags: host.tags.clone(),
                online: seen.is_some_and(|(at, _)| (now - *at).num_seconds() <= ONLINE_WITHIN_SECONDS),
                current_closure: seen.and_then(|(_, c)| c.clone()).and_then(|c| shared::Closure::parse(c).ok()),
                rollout_id: record_state.and(rollout.cloned()),
                state: record_state,
                suspended: suspended.contains_key(name),
            }
        })
        .collect();
    Ok(Json(HostSearchPage { hosts, next }))
}
