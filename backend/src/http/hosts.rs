//! `GET /api/v1/hosts`: find hosts by hostname prefix, channel, tag, state and closure.
//!
//! The verified fleet's hosts are an ordered map in memory: a prefix is a range of it, a page
//! continues after the last hostname (keyset), and channel and tag are checked on the way.
//! State (in the channel's current rollout) and running closure are asked of the database:
//! first for the next candidates a batch at a time, by primary key — a filter most hosts pass
//! fills the page in a batch or two — and after a few batches that did not fill it, once for
//! the set of hosts passing it (a filter few hosts pass: a small answer). Either way a page
//! costs a bounded number of queries (BENCHMARKS.md: at 100,000 hosts).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use shared::api::{HostHit, HostQuery, HostSearchPage};
use shared::state::HostState;
use shared::{ErrorCode, Hostname, RolloutId};

use super::operator::online;
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
        Some(s) => Some(HostState::from_name(s).ok_or_else(|| {
            bad(format!("state {s:?} is not a host state ({}).", HostState::ALL.map(|k| k.as_str()).join(", ")))
        })?),
    };

    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    let Some(fleet) = fleet else { return Ok(Json(HostSearchPage { hosts: vec![], next: None })) };
    let current = store::current_rollouts(&state.store).await.map_err(ApiError::internal)?;
    let filters = Filters { state: wanted_state, closure, current: &current, channel, hosts: &fleet.doc.hosts };

    // Walk the fleet in name order from the prefix (or the page's start), hosts the
    // in-memory filters let through.
    let start = match (after, prefix.as_deref()) {
        (Some(after), Some(prefix)) if after < prefix => Bound::Included(prefix),
        (Some(after), _) => Bound::Excluded(after),
        (None, Some(prefix)) => Bound::Included(prefix),
        (None, None) => Bound::Unbounded,
    };
    let mut candidates = fleet
        .doc
        .hosts
        .range::<str, _>((start, Bound::Unbounded))
        .take_while(|(name, _)| prefix.as_ref().is_none_or(|p| name.as_str().starts_with(p.as_str())))
        .filter(|(_, host)| {
            channel.is_none_or(|c| host.channel.as_str() == c) && tag.is_none_or(|t| host.tags.iter().any(|h| h == t))
        });
    // State and closure are asked of the database: for the next candidates a batch at a
    // time while that fills the page (a filter most hosts pass), then — for a filter few
    // hosts pass — once for the set of every host that passes it.
    let want = limit as usize + 1;
    let mut found: Vec<(&Hostname, &shared::manifest::HostEntry)> = Vec::new();
    let mut sets: Option<Sets> = None;
    let mut batches = 0;
    while found.len() < want {
        if !filters.any() {
            found.extend(candidates.by_ref().take(want - found.len()));
            break;
        }
        if sets.is_none() && batches == PROBE_BATCHES {
            sets = Some(filters.sets(&state.store).await?);
        }
        match &sets {
            Some(sets) => {
                found.extend(candidates.by_ref().filter(|(n, _)| sets.contains(n.as_str())).take(want - found.len()));
                break;
            }
            None => {
                let batch: Vec<_> = candidates.by_ref().take(PROBE_BATCH).collect();
                if batch.is_empty() {
                    break;
                }
                batches += 1;
                let pass = filters.passing(&state.store, &batch).await?;
                found.extend(batch.into_iter().filter(|(n, _)| pass.contains(n.as_str())));
            }
        }
    }
    let next = (found.len() > limit as usize).then(|| {
        found.truncate(limit as usize);
        found.last().map(|(n, _)| (*n).clone())
    });
    let next = next.flatten();

    // The page's own heartbeats and states.
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let presence: HashMap<String, store::PresenceRow> = store::presence_of(&state.store, &names)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|p| (p.host.to_string(), p))
        .collect();
    let channels: HashSet<&str> = found.iter().map(|(_, h)| h.channel.as_str()).collect();
    let page_rollouts: Vec<&RolloutId> =
        current.iter().filter(|(c, _)| channels.contains(c.as_str())).map(|(_, id)| id).collect();
    let states: BTreeMap<(String, String), HostState> =
        store::record_states_of(&state.store, &page_rollouts, &names, None)
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
            let record_state = rollout.and_then(|id| states.get(&(name.to_string(), id.to_string()))).copied();
            HostHit {
                hostname: name.clone(),
                channel: host.channel.clone(),
                tags: host.tags.clone(),
                online: seen.is_some_and(|p| online(now, p.at)),
                current_closure: seen.and_then(|p| p.closure.clone()),
                rollout_id: record_state.and(rollout.cloned()),
                state: record_state,
                suspended: suspended.contains_key(name),
            }
        })
        .collect();
    Ok(Json(HostSearchPage { hosts, next }))
}

/// Candidates asked of the database at a time while a filter fills the page, and how many
/// such batches before asking for the whole set instead.
const PROBE_BATCH: usize = 256;
const PROBE_BATCHES: usize = 4;

/// The filters the database answers: state in the channel's current rollout, running closure.
struct Filters<'a> {
    state: Option<HostState>,
    closure: Option<&'a str>,
    current: &'a BTreeMap<String, RolloutId>,
    channel: Option<&'a str>,
    /// The fleet's hosts: which channel each is in now.
    hosts: &'a BTreeMap<Hostname, shared::manifest::HostEntry>,
}

/// Every host that passes each filter.
struct Sets {
    state: Option<HashSet<String>>,
    closure: Option<HashSet<String>>,
}

impl Sets {
    fn contains(&self, host: &str) -> bool {
        self.state.as_ref().is_none_or(|s| s.contains(host)) && self.closure.as_ref().is_none_or(|s| s.contains(host))
    }
}

impl Filters<'_> {
    fn any(&self) -> bool {
        self.state.is_some() || self.closure.is_some()
    }

    /// The current rollouts of the channels `channel` lets through (of all, with no filter).
    fn rollouts(&self, channel: impl Fn(&str) -> bool) -> Vec<&RolloutId> {
        self.current
            .iter()
            .filter(|(c, _)| self.channel.is_none_or(|want| want == c.as_str()) && channel(c))
            .map(|(_, id)| id)
            .collect()
    }

    /// Whether `rollout` is the current rollout of `host`'s channel. A host moved to another
    /// channel keeps its record in its old channel's rollout, which may still be current: a
    /// host's state is the one in its own channel's rollout, as the page shows it.
    fn own_rollout(&self, host: &str, rollout: &str) -> bool {
        self.hosts.get(host).and_then(|h| self.current.get(h.channel.as_str())).is_some_and(|id| id.as_str() == rollout)
    }

    /// Which of `batch` pass. Their state is asked of their own channels' rollouts only: with
    /// a thousand channels, a statement naming every current rollout cost more than the rows.
    async fn passing(
        &self,
        store: &crate::db::Store,
        batch: &[(&Hostname, &shared::manifest::HostEntry)],
    ) -> Result<HashSet<String>, ApiError> {
        let hosts: Vec<&str> = batch.iter().map(|(n, _)| n.as_str()).collect();
        let mut pass: HashSet<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        if let Some(wanted) = self.state {
            let channels: HashSet<&str> = batch.iter().map(|(_, h)| h.channel.as_str()).collect();
            let rollouts = self.rollouts(|c| channels.contains(c));
            let rows =
                store::record_states_of(store, &rollouts, &hosts, Some(wanted)).await.map_err(ApiError::internal)?;
            let in_state: HashSet<String> = rows
                .into_iter()
                .filter(|(rollout, host, _)| self.own_rollout(host, rollout))
                .map(|(_, host, _)| host)
                .collect();
            pass.retain(|h| in_state.contains(h));
        }
        if let Some(text) = self.closure {
            let rows = store::presence_of(store, &hosts).await.map_err(ApiError::internal)?;
            let running: HashSet<String> = rows
                .into_iter()
                .filter(|p| p.closure.as_ref().is_some_and(|c| c.as_str().contains(text)))
                .map(|p| p.host.to_string())
                .collect();
            pass.retain(|h| running.contains(h));
        }
        Ok(pass)
    }

    async fn sets(&self, store: &crate::db::Store) -> Result<Sets, ApiError> {
        let state = match self.state {
            None => None,
            Some(wanted) => {
                let rows = store::record_states_of(store, &self.rollouts(|_| true), &[], Some(wanted))
                    .await
                    .map_err(ApiError::internal)?;
                Some(
                    rows.into_iter()
                        .filter(|(rollout, host, _)| self.own_rollout(host, rollout))
                        .map(|(_, host, _)| host)
                        .collect(),
                )
            }
        };
        let closure = match self.closure {
            None => None,
            Some(text) => {
                Some(store::hosts_running(store, text).await.map_err(ApiError::internal)?.into_iter().collect())
            }
        };
        Ok(Sets { state, closure })
    }
}
