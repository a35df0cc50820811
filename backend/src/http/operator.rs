//! Operator and dashboard routes (SPEC §9.2): reads for viewers, actions for operators, the
//! manifest upload and the live feed.

use shared::ErrorCode;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use shared::api::{
    ApproveBody, EventsPage, FleetChannel, FleetHost, FleetOverview, ManifestSummary, OperatorAction, OperatorOutcome,
    PromoteBody, QuarantineBody, QuarantineEntry, Quarantines, ReasonBody, RolloutDetail, RolloutSummary,
};
use shared::log::LogKind;
use shared::manifest::SignedArtifact;
use shared::policy::{FreezeBody, Freezes, ReleaseFreezeBody, SuspendBody};
use shared::{Closure, RolloutId};

use super::extract::{JsonBody, MANIFESTS_BODY_BYTES, OptionalJsonBody};
use super::operator_auth::{Acting, Viewer};
use super::{ApiError, AppState};
use crate::db::{retention, store};
use crate::reducer::ReducerInput;
use crate::views;

/// How long a host may be silent and still count as online.
const ONLINE_WITHIN_SECONDS: i64 = 3 * engine::controller::IDLE_HEARTBEAT_SECONDS as i64;

/// Whether a host last heard from `at` counts as online `now`.
pub(super) fn online(now: chrono::DateTime<chrono::Utc>, at: chrono::DateTime<chrono::Utc>) -> bool {
    (now - at).num_seconds() <= ONLINE_WITHIN_SECONDS
}

fn rollout_id(raw: &str) -> Result<RolloutId, ApiError> {
    RolloutId::parse(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadId, e.to_string()))
}

/// `GET /api/v1/fleet`
#[utoipa::path(get, path = "/fleet", tag = "operator", responses((status = 200, body = shared::api::FleetOverview), (status = 401, body = shared::ApiErrorBody)))]
pub async fn fleet(State(state): State<AppState>, _: Viewer) -> Result<Json<FleetOverview>, ApiError> {
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    let Some(fleet) = fleet else {
        return Ok(Json(FleetOverview { fleet_hash: None, channels: vec![], hosts: vec![] }));
    };
    let presence: BTreeMap<String, (chrono::DateTime<chrono::Utc>, Option<String>)> = store::presence(&state.store)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(h, at, c)| (h, (at, c)))
        .collect();
    let mut current = store::current_rollouts(&state.store).await.map_err(ApiError::internal)?;
    let mut suspended = store::policies(&state.store).await.map_err(ApiError::internal)?.suspended;
    let now = state.clock.now();
    let channels = fleet
        .doc
        .channels
        .iter()
        .map(|(name, c)| FleetChannel {
            name: name.clone(),
            rollout_policy: c.rollout_policy.clone(),
            hosts: fleet.doc.hosts.values().filter(|h| &h.channel == name).count() as u64,
            current_rollout: current.remove(name.as_str()),
        })
        .collect();
    let hosts = fleet
        .doc
        .hosts
        .iter()
        .map(|(name, h)| {
            let seen = presence.get(name.as_str());
            FleetHost {
                hostname: name.clone(),
                channel: h.channel.clone(),
                tags: h.tags.clone(),
                current_closure: seen.and_then(|(_, c)| c.clone()).and_then(|c| Closure::parse(c).ok()),
                last_heartbeat_at: seen.map(|(at, _)| *at),
                online: seen.is_some_and(|(at, _)| online(now, *at)),
                suspended: suspended.remove(name),
            }
        })
        .collect();
    Ok(Json(FleetOverview { fleet_hash: Some(fleet.hash.clone()), channels, hosts }))
}

/// `GET /api/v1/rollouts`, newest first.
#[utoipa::path(get, path = "/hosts/{hostname}", tag = "operator", params(("hostname" = String, Path)), responses((status = 200, body = shared::api::HostDetail), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 404, body = shared::ApiErrorBody)))]
/// `GET /api/v1/hosts/{hostname}`: the host, its records across rollouts, its recent events.
pub async fn host(
    State(state): State<AppState>,
    _: Viewer,
    Path(name): Path<String>,
) -> Result<Json<shared::api::HostDetail>, ApiError> {
    let hostname = hostname(name)?;
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    let entry = fleet
        .as_ref()
        .and_then(|f| f.doc.hosts.get(&hostname).cloned())
        .ok_or_else(|| ApiError::not_found(format!("{hostname} is not a host of the verified fleet.")))?;
    let seen = store::presence_of(&state.store, &[hostname.as_str()]).await.map_err(ApiError::internal)?.pop();
    let now = state.clock.now();
    let suspension = store::policies(&state.store).await.map_err(ApiError::internal)?.suspended.remove(&hostname);
    let host = FleetHost {
        hostname: hostname.clone(),
        channel: entry.channel,
        tags: entry.tags,
        current_closure: seen.as_ref().and_then(|p| p.closure.clone()),
        last_heartbeat_at: seen.as_ref().map(|p| p.at),
        online: seen.as_ref().is_some_and(|p| online(now, p.at)),
        suspended: suspension.clone(),
    };
    let records = store::records_of_host(&state.store, &hostname)
        .await
        .map_err(ApiError::internal)?
        .iter()
        .map(|r| shared::api::HostRecordView {
            rollout_id: r.rollout_id.clone(),
            cell: views::host_cell(r, suspension.is_some()),
        })
        .collect();
    let events = store::host_log(&state.store, &hostname, 100).await.map_err(ApiError::internal)?;
    let booted_closure = seen.and_then(|p| p.booted);
    Ok(Json(shared::api::HostDetail { host, booted_closure, records, events }))
}

/// `?limit=` (1–1000, default 200) and `?before=` (a rollout id: the page continues after it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    before: Option<String>,
}

const PAGE_DEFAULT: i64 = 200;
const PAGE_MAX: i64 = 1000;

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadQuery,
            format!("limit must be between 1 and {PAGE_MAX}."),
        ));
    }
    Ok(limit)
}

/// `GET /api/v1/rollouts`: newest first, a page at a time.
#[utoipa::path(get, path = "/rollouts", tag = "operator", params(("limit" = Option<i64>, Query, description = "1–1000, default 200"), ("before" = Option<String>, Query, description = "Continue after this rollout id (the last of the previous page)")), responses((status = 200, body = Vec<shared::api::RolloutSummary>), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody)))]
pub async fn rollouts(
    State(state): State<AppState>,
    _: Viewer,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<RolloutSummary>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let limit = page_limit(q.limit)?;
    let before = q.before.as_deref().map(rollout_id).transpose()?;
    let rows = store::rollout_rows(&state.store, None, before.as_ref(), limit)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, "before names no rollout."))?;
    let ids: Vec<RolloutId> = rows.iter().map(|r| r.id.clone()).collect();
    let (mut tallies, states) = store::rollout_hosts(&state.store, &ids).await.map_err(ApiError::internal)?;
    let mut records: BTreeMap<String, Vec<store::RecordState>> = BTreeMap::new();
    for record in states {
        records.entry(record.rollout_id.clone()).or_default().push(record);
    }
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    Ok(Json(
        rows.iter()
            .map(|r| {
                let tally = tallies.remove(r.id.as_str()).unwrap_or_else(|| {
                    views::tally(&r.channel, &records.remove(r.id.as_str()).unwrap_or_default(), fleet.as_deref())
                });
                views::rollout_summary(r, tally)
            })
            .collect(),
    ))
}

/// `?at=SEQ`: the rollout as it was when the log ended at that seq.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtQuery {
    #[serde(default)]
    at: Option<i64>,
}

/// Entries read per query while replaying a rollout's log.
const REPLAY_PAGE: i64 = 2000;

/// `GET /api/v1/rollouts/{id}` (`?at=SEQ`: replayed from its log up to that seq — the
/// dashboard's timeline).
#[utoipa::path(get, path = "/rollouts/{id}", tag = "operator", params(("id" = String, Path, description = "{channel}@{ref}"), ("at" = Option<i64>, Query, description = "The rollout as it was at this event-log seq (replayed from its log)")), responses((status = 200, body = shared::api::RolloutDetail), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 404, body = shared::ApiErrorBody)))]
pub async fn rollout(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<String>,
    query: Result<Query<AtQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    let id = rollout_id(&id)?;
    let Query(AtQuery { at }) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    if let Some(at) = at {
        if at < 0 {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, "at must be a seq (0 or more)."));
        }
        return Ok(Json(replay_rollout(&state, &id, at, fleet.as_deref()).await?));
    }
    let start = store::rollout_start(&state.store, &id).await.map_err(ApiError::internal)?;
    let rows = store::rollout_detail::<shared::api::HostCell>(&state.store, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("There is no rollout {id}.")))?;
    let mut detail = match &rows.tally {
        Some(tally) => views::tallied_detail(&rows.rollout, tally, fleet.as_deref(), rows.as_of),
        None => {
            let suspended = store::policies(&state.store).await.map_err(ApiError::internal)?.suspended;
            views::rollout_detail(&rows.rollout, rows.records, fleet.as_deref(), &suspended, rows.as_of)
        }
    };
    detail.first_seq = start.as_ref().map_or(0, |(seq, _)| *seq);
    detail.sealed_before = sealed_start(&state, start).await?;
    Ok(Json(detail))
}

/// The seq the database's log begins at, if the start of a rollout's log (`start`: its first
/// entry still there) was sealed into the archive: its `RolloutOpened` is gone.
async fn sealed_start(state: &AppState, start: Option<(i64, LogKind)>) -> Result<Option<i64>, ApiError> {
    if matches!(start, Some((_, LogKind::RolloutOpened))) {
        return Ok(None);
    }
    let begins = retention::log_begins(&state.store).await.map_err(ApiError::internal)?;
    Ok((begins > 1).then_some(begins))
}

/// The rollout and its records replayed from its log entries up to `at`, a page at a time.
/// (Suspensions belong to no rollout's log and are not replayed: none is shown.)
async fn replay_rollout(
    state: &AppState,
    id: &RolloutId,
    at: i64,
    fleet: Option<&engine::fleet::VerifiedFleet>,
) -> Result<RolloutDetail, ApiError> {
    // A replay needs the rollout's whole log.
    let start = store::rollout_start(&state.store, id).await.map_err(ApiError::internal)?;
    if let Some(first) = sealed_start(state, start).await? {
        return Err(ApiError::sealed(first));
    }
    let mut replayed = crate::db::replay::Replayed::default();
    let (mut after, mut first, mut last) = (0, None, None);
    'pages: loop {
        let page = store::rollout_log(&state.store, id, after, REPLAY_PAGE).await.map_err(ApiError::internal)?;
        for e in &page {
            if e.seq > at {
                break 'pages;
            }
            replayed.apply(e).map_err(|err| {
                tracing::error!(%err, "a stored log entry cannot be replayed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::StorageUnavailable,
                    format!("The rollout's log cannot be replayed: {err}"),
                )
            })?;
            first = first.or(Some(e.seq));
            last = Some((e.seq, e.ts));
        }
        match page.last() {
            Some(e) if page.len() as i64 == REPLAY_PAGE => after = e.seq,
            _ => break,
        }
    }
    let rollout =
        replayed.rollouts.get(id).ok_or_else(|| ApiError::not_found(format!("{id} had not opened by seq {at}.")))?;
    let cells: Vec<_> = replayed
        .records
        .iter()
        .filter(|((r, _), _)| r == id)
        .map(|(_, record)| views::host_cell(record, false))
        .collect();
    let mut detail = views::rollout_detail(rollout, cells, fleet, &Default::default(), at);
    detail.replayed_at = last.map(|(_, ts)| ts);
    detail.first_seq = first.unwrap_or(0);
    if let Some((seq, _)) = last {
        detail.as_of = seq;
    }
    Ok(detail)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/v1/rollouts/{id}/events?after=&limit=` (oldest first from `after`) or
/// `?before=&limit=` (the newest entries before `before`, oldest first: the dashboard loads
/// the newest up to a snapshot's `asOf` and pages backwards).
#[utoipa::path(get, path = "/rollouts/{id}/events", tag = "operator", params(("id" = String, Path), ("after" = Option<i64>, Query, description = "Entries with seq > after"), ("before" = Option<i64>, Query, description = "The newest entries with seq < before (not with after)"), ("limit" = Option<i64>, Query, description = "1–1000, default 200")), responses((status = 200, body = shared::api::EventsPage), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 404, body = shared::ApiErrorBody), (status = 410, description = "Entries after `after` were sealed out of the database (code log-sealed, firstSeq: where the log now begins)", body = shared::ApiErrorBody)))]
pub async fn rollout_events(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let id = rollout_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let limit = page_limit(q.limit)?;
    // As for `GET /rollouts/{id}`: an empty page would say the rollout exists.
    if !store::rollout_exists(&state.store, &id).await.map_err(ApiError::internal)? {
        return Err(ApiError::not_found(format!("There is no rollout {id}.")));
    }
    let events = match (q.after, q.before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, "Give after or before, not both."));
        }
        (_, Some(before)) => store::rollout_log_before(&state.store, &id, before, limit).await,
        (Some(after), None) => {
            // Entries after `after` that the database no longer holds: not a silent gap.
            if let Some(first) =
                retention::sealed_before(&state.store, after.saturating_add(1)).await.map_err(ApiError::internal)?
            {
                return Err(ApiError::sealed(first));
            }
            store::rollout_log(&state.store, &id, after, limit).await
        }
        (None, None) => store::rollout_log(&state.store, &id, 0, limit).await,
    }
    .map_err(ApiError::internal)?;
    Ok(Json(EventsPage { events }))
}

/// `GET /api/v1/rollouts/{id}/changes`: each target closure of the rollout, its hosts, and
/// what its signed manifest says changes in it (what the approve and promote dialogs show).
#[utoipa::path(get, path = "/rollouts/{id}/changes", tag = "operator", params(("id" = String, Path)), responses((status = 200, body = shared::api::RolloutChanges), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 404, body = shared::ApiErrorBody)))]
pub async fn rollout_changes(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<String>,
) -> Result<Json<shared::api::RolloutChanges>, ApiError> {
    use base64::Engine as _;
    let id = rollout_id(&id)?;
    let Some(artifact) = store::manifest_artifact(&state.store, &id).await.map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!("No manifest of {id} is in force.")));
    };
    // Stored only after it verified: one that does not read back is a broken database.
    let unreadable =
        |err: String| ApiError::internal(sqlx::Error::Decode(format!("stored manifest of {id}: {err}").into()));
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(&artifact.artifact).map_err(|e| unreadable(e.to_string()))?;
    let manifest: shared::manifest::RolloutManifest =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    let mut hosts: BTreeMap<Closure, u64> = BTreeMap::new();
    for entry in &manifest.host_set {
        *hosts.entry(entry.target_closure.clone()).or_default() += 1;
    }
    let mut summaries = manifest.closures.unwrap_or_default();
    let targets = hosts
        .into_iter()
        .map(|(closure, hosts)| {
            let changes = summaries.remove(&closure);
            shared::api::TargetChanges { closure, hosts, changes }
        })
        .collect();
    Ok(Json(shared::api::RolloutChanges { targets }))
}

/// `GET /api/v1/quarantines`
/// `?limit=`: how many released quarantines (newest first; 1–1000, default 200). Every active
/// one is always listed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantinesQuery {
    #[serde(default)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/quarantines", tag = "operator", params(("limit" = Option<i64>, Query, description = "Released quarantines listed, newest first: 1–1000, default 200")), responses((status = 200, body = shared::api::Quarantines), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody)))]
pub async fn quarantines(
    State(state): State<AppState>,
    _: Viewer,
    query: Result<Query<QuarantinesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Quarantines>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let rows = store::quarantines(&state.store, page_limit(q.limit)?).await.map_err(ApiError::internal)?;
    let (mut active, mut released) = (Vec::new(), Vec::new());
    for q in rows {
        let entry = QuarantineEntry {
            channel: q.channel,
            closure: q.closure,
            reason: q.reason,
            by: q.by,
            at: q.at,
            released_by: q.released_by,
            released_at: q.released_at,
            release_reason: q.release_reason,
        };
        if entry.released_at.is_some() { released.push(entry) } else { active.push(entry) }
    }
    Ok(Json(Quarantines { active, released }))
}

/// `POST /api/v1/manifests`: verify, then hand the set to the reducer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestUpload {
    fleet: SignedArtifact,
    #[serde(default)]
    rollouts: Vec<SignedArtifact>,
}

#[utoipa::path(post, path = "/manifests", tag = "operator", request_body = ManifestUpload, responses((status = 200, body = ManifestSummary), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, description = "error.code is the verification outcome", body = shared::ApiErrorBody)))]
pub async fn upload_manifests(
    State(state): State<AppState>,
    Acting(op): Acting,
    JsonBody(upload): JsonBody<ManifestUpload, MANIFESTS_BODY_BYTES>,
) -> Result<Json<ManifestSummary>, ApiError> {
    let mut update =
        crate::manifests::verify_upload(&state.trust_roots(), upload.fleet, upload.rollouts, state.clock.now())
            .map_err(ApiError::verification)?;
    update.uploaded_by = Some(op.name.clone());
    tracing::info!(operator = %op.name, fleet_hash = %update.set.fleet.hash, "manifest upload verified");
    let summary = state
        .reducer
        .ask(|reply| ReducerInput::ManifestSetUpdated { update: Box::new(update), reply: Some(reply) })
        .await?;
    Ok(Json(summary))
}

async fn act(
    state: &AppState,
    op: Acting,
    action: OperatorAction,
    reason: Option<String>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let by = op.0.name;
    Ok(Json(state.reducer.ask(|reply| ReducerInput::Operator { action, by, reason, reply }).await?))
}

#[utoipa::path(post, path = "/rollouts/{id}/approve", tag = "operator", params(("id" = String, Path)), request_body = ApproveBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    op: Acting,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ApproveBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let rollout_id = rollout_id(&id)?;
    act(&state, op, OperatorAction::ApproveWave { rollout_id, wave: body.wave }, body.reason).await
}

#[utoipa::path(post, path = "/rollouts/{id}/promote", tag = "operator", params(("id" = String, Path)), request_body = PromoteBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn promote(
    State(state): State<AppState>,
    op: Acting,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PromoteBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let rollout_id = rollout_id(&id)?;
    act(&state, op, OperatorAction::Promote { rollout_id, to_wave: body.to_wave, force: body.force }, body.reason).await
}

#[utoipa::path(post, path = "/rollouts/{id}/pause", tag = "operator", params(("id" = String, Path)), request_body(content = Option<ReasonBody>, description = "May be empty"), responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    op: Acting,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let rollout_id = rollout_id(&id)?;
    act(&state, op, OperatorAction::Pause { rollout_id }, body.reason).await
}

#[utoipa::path(post, path = "/rollouts/{id}/resume", tag = "operator", params(("id" = String, Path)), request_body(content = Option<ReasonBody>, description = "May be empty"), responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    op: Acting,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let rollout_id = rollout_id(&id)?;
    act(&state, op, OperatorAction::Resume { rollout_id }, body.reason).await
}

#[utoipa::path(post, path = "/rollouts/{id}/clear-failure", tag = "operator", params(("id" = String, Path)), request_body(content = Option<ReasonBody>, description = "May be empty"), responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn clear_failure(
    State(state): State<AppState>,
    op: Acting,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let rollout_id = rollout_id(&id)?;
    act(&state, op, OperatorAction::ClearFailure { rollout_id }, body.reason).await
}

#[utoipa::path(post, path = "/quarantines", tag = "operator", request_body = QuarantineBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn quarantine(
    State(state): State<AppState>,
    op: Acting,
    JsonBody(body): JsonBody<QuarantineBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    act(&state, op, OperatorAction::Quarantine { channel: body.channel, closure: body.closure }, body.reason).await
}

#[utoipa::path(post, path = "/quarantines/release", tag = "operator", request_body = QuarantineBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn release(
    State(state): State<AppState>,
    op: Acting,
    JsonBody(body): JsonBody<QuarantineBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    act(&state, op, OperatorAction::Release { channel: body.channel, closure: body.closure }, body.reason).await
}

/// `GET /api/v1/freezes`: every freeze in force now, the signed fleet's and the operators'.
#[utoipa::path(get, path = "/freezes", tag = "operator", responses((status = 200, body = shared::policy::Freezes), (status = 401, body = shared::ApiErrorBody)))]
pub async fn freezes(State(state): State<AppState>, _: Viewer) -> Result<Json<Freezes>, ApiError> {
    let now = state.clock.now();
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    let operators = store::policies(&state.store).await.map_err(ApiError::internal)?.freezes;
    let active =
        fleet.iter().flat_map(|f| f.freezes.iter().cloned()).chain(operators).filter(|f| f.in_force(now)).collect();
    Ok(Json(Freezes { active }))
}

/// Freeze bodies may carry a selector with many hosts.
const FREEZE_BODY_BYTES: usize = 256 * 1024;

/// `POST /api/v1/freezes`: stop the line (SPEC §17). Answers the freeze's name.
#[utoipa::path(post, path = "/freezes", tag = "operator", request_body = FreezeBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn freeze(
    State(state): State<AppState>,
    op: Acting,
    JsonBody(body): JsonBody<FreezeBody, FREEZE_BODY_BYTES>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    let action = OperatorAction::Freeze { name: body.name, selector: body.selector, until: body.until };
    act(&state, op, action, Some(body.reason)).await
}

/// `POST /api/v1/freezes/release`
#[utoipa::path(post, path = "/freezes/release", tag = "operator", request_body = ReleaseFreezeBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn unfreeze(
    State(state): State<AppState>,
    op: Acting,
    JsonBody(body): JsonBody<ReleaseFreezeBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    act(&state, op, OperatorAction::Unfreeze { name: body.name }, Some(body.reason)).await
}

fn hostname(raw: String) -> Result<shared::Hostname, ApiError> {
    shared::Hostname::parse(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadId, e.to_string()))
}

/// `POST /api/v1/hosts/{hostname}/suspend`: the host is skipped by every rollout until resumed.
#[utoipa::path(post, path = "/hosts/{hostname}/suspend", tag = "operator", params(("hostname" = String, Path)), request_body = SuspendBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn suspend(
    State(state): State<AppState>,
    op: Acting,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SuspendBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    act(&state, op, OperatorAction::SuspendHost { hostname: hostname(name)? }, Some(body.reason)).await
}

/// `POST /api/v1/hosts/{hostname}/resume`
#[utoipa::path(post, path = "/hosts/{hostname}/resume", tag = "operator", params(("hostname" = String, Path)), request_body = SuspendBody, responses((status = 200, body = OperatorOutcome), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody)))]
pub async fn resume_host(
    State(state): State<AppState>,
    op: Acting,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SuspendBody>,
) -> Result<Json<OperatorOutcome>, ApiError> {
    act(&state, op, OperatorAction::ResumeHost { hostname: hostname(name)? }, Some(body.reason)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FeedQuery {
    /// Resume after this seq when no `Last-Event-ID` header is sent (a browser's EventSource
    /// cannot set headers on its first connection; its reconnects send the header).
    #[serde(default)]
    last_event_id: Option<i64>,
}

/// `GET /api/v1/feed`: SSE; `Last-Event-ID: n` (or `?lastEventId=n`) resumes after entry n.
/// One message of the live feed as an SSE parser sees it (the OpenAPI description of the
/// `text/event-stream` body). Frames are rendered straight to bytes in `feed.rs`; this type
/// only documents them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FeedMessage {
    /// The event-log seq.
    id: String,
    /// `host`, `rollout`, `hold`, `quarantine`, `operator`, `manifest` or `presence`.
    event: String,
    /// A `LogEvent` as JSON; a record it carries is sent as its `HostCell`, a rollout as its
    /// `RolloutHeader` (the event log's own rows carry them whole).
    data: String,
}

#[utoipa::path(get, path = "/feed", tag = "operator", params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event-log seq"), ("lastEventId" = Option<i64>, Query, description = "Same, for the first connection of a browser EventSource")), responses((status = 200, description = "text/event-stream; id = event-log seq, event = host|rollout|hold|quarantine|operator|manifest|presence, data = one shared::api::LogEvent as JSON (its record as a HostCell, its rollout as a RolloutHeader)", content_type = "text/event-stream", body = FeedMessage), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody)))]
pub async fn feed(
    State(state): State<AppState>,
    _: Viewer,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let resume = match headers.get("last-event-id") {
        None => match query.last_event_id {
            Some(n) if n < 0 => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadQuery,
                    "lastEventId must be an event-log seq.",
                ));
            }
            other => other,
        },
        Some(v) => {
            Some(v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadLastEventId,
                    "Last-Event-ID must be an event-log seq.",
                )
            })?)
        }
    };
    if let Some(after) = resume {
        // A seq the log has not reached yet was never sent to anyone: waiting for it would
        // starve the client silently.
        let last = crate::db::store::last_seq(&state.store).await.map_err(ApiError::internal)?;
        if after > last {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::AheadOfLog,
                format!("Last-Event-ID {after} is beyond the event log's last seq {last}; reconnect without it."),
            ));
        }
    }
    Ok(crate::feed::stream(
        state.feed.clone(),
        state.store.clone(),
        resume,
        state.shutdown.clone(),
        state.metrics.clone(),
    ))
}
