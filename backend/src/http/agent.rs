//! Agent routes (SPEC §9.1): heartbeat, events, bootstrap. Each request is signed by its host
//! ([`SignedAgent`]); a body that names another host is refused with 403.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use shared::ErrorCode;
use shared::agent::{EventRequest, EventResponse, HeartbeatRequest, HeartbeatResponse};
use shared::state::HostRolloutSnapshot;

use super::agent_auth::SignedAgent;
use super::extract::parse_json;
use super::{ApiError, AppState};
use crate::reducer::ReducerInput;

fn same_host(signed: &SignedAgent, named: &shared::Hostname) -> Result<(), ApiError> {
    if &signed.host != named {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::WrongHost,
            format!("The request is signed by {} but its body names {named}.", signed.host),
        ));
    }
    Ok(())
}

/// A body that parses but breaks a limit of `shared::limits`.
fn limit_exceeded(err: shared::limits::LimitError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::LimitExceeded, format!("{err}."))
}

/// `POST /api/v1/agent/heartbeat`
#[utoipa::path(post, path = "/agent/heartbeat", tag = "agent", request_body = shared::agent::HeartbeatRequest, responses((status = 200, body = shared::agent::HeartbeatResponse), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody), (status = 503, body = shared::ApiErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    signed: SignedAgent,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let heartbeat: HeartbeatRequest = parse_json(&signed.body, None)?;
    same_host(&signed, &heartbeat.hostname)?;
    heartbeat.check_limits().map_err(limit_exceeded)?;
    let answer = state.reducer.ask(|reply| ReducerInput::Heartbeat { heartbeat, reply }).await?;
    Ok(Json(answer))
}

/// `POST /api/v1/agent/events`: `applied` only after the transaction committed.
#[utoipa::path(post, path = "/agent/events", tag = "agent", request_body = shared::agent::EventRequest, responses((status = 200, body = shared::agent::EventResponse), (status = 400, body = shared::ApiErrorBody), (status = 401, body = shared::ApiErrorBody), (status = 403, body = shared::ApiErrorBody), (status = 409, description = "Illegal transition, failed guard or unknown record", body = shared::ApiErrorBody), (status = 413, body = shared::ApiErrorBody), (status = 422, body = shared::ApiErrorBody), (status = 503, body = shared::ApiErrorBody)))]
pub async fn events(State(state): State<AppState>, signed: SignedAgent) -> Result<Json<EventResponse>, ApiError> {
    let request: EventRequest = parse_json(&signed.body, None)?;
    same_host(&signed, &request.hostname)?;
    request.check_limits().map_err(limit_exceeded)?;
    let EventRequest { hostname, rollout_id, event } = request;
    let answer =
        state.reducer.ask(|reply| ReducerInput::HostEvent { host: hostname, rollout_id, event, reply }).await?;
    Ok(Json(answer))
}

/// `GET /api/v1/agent/bootstrap`: the signing host's records in open rollouts, by rollout id.
#[utoipa::path(get, path = "/agent/bootstrap", tag = "agent", responses((status = 200, body = Vec<shared::state::HostRolloutSnapshot>), (status = 401, body = shared::ApiErrorBody), (status = 503, body = shared::ApiErrorBody)))]
pub async fn bootstrap(
    State(state): State<AppState>,
    signed: SignedAgent,
) -> Result<Json<Vec<HostRolloutSnapshot>>, ApiError> {
    let records =
        crate::db::store::open_records_of_host(&state.store, &signed.host).await.map_err(ApiError::internal)?;
    let fleet = state.fleet.read().ok().and_then(|f| f.clone());
    Ok(Json(records.iter().map(|r| engine::state::FleetState::agent_snapshot(fleet.as_deref(), r)).collect()))
}
