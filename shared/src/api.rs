//! Bodies of the HTTP API (SPEC §9).

use serde::{Deserialize, Serialize};

/// `GET /api/v1/version`: what is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionInfo {
    /// Always `"fleetwave"`.
    pub name: String,
    /// The crate version of the control plane, e.g. `0.1.0`.
    pub version: String,
    /// Version of the wire API, e.g. `v1`.
    pub api: String,
}

/// Every error the API returns: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiErrorBody {
    pub error: ApiError,
}

/// A stable kebab-case `code` for programs and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ApiErrorBody { error: ApiError { code: "not-found".into(), message: "No such route.".into() } };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json, serde_json::json!({"error": {"code": "not-found", "message": "No such route."}}));
    }

    #[test]
    fn version_info_is_camel_case_and_strict() {
        let v: VersionInfo = serde_json::from_str(r#"{"name":"fleetwave","version":"0.1.0","api":"v1"}"#).unwrap();
        assert_eq!(v.api, "v1");
        let unknown =
            serde_json::from_str::<VersionInfo>(r#"{"name":"fleetwave","version":"0.1.0","api":"v1","extra":1}"#);
        assert!(unknown.is_err(), "unknown fields must be rejected");
    }
}

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ids::{Channel, Closure, Hostname, RolloutId};
use crate::state::{HostState, RolloutState, WaitingOn};

/// One host inside a rollout, as the dashboard draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostCell {
    pub hostname: Hostname,
    pub state: HostState,
    pub target_closure: Closure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<WaitingOn>,
    pub stuck: bool,
    pub excused: bool,
    pub last_event_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HaltInfo {
    pub host: Hostname,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A rollout's own state, as carried by feed entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutHeader {
    pub rollout_id: RolloutId,
    pub channel: Channel,
    pub state: RolloutState,
    pub current_wave: u32,
    pub approved_waves: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<HaltInfo>,
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<RolloutId>,
}

/// `GET /api/v1/rollouts` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    #[serde(flatten)]
    pub header: RolloutHeader,
    pub hosts: u64,
    pub counts: BTreeMap<HostState, u64>,
    pub converged_percent: f64,
}

/// One wave column of the rollout page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WaveView {
    /// `None` for hosts in no wave of a waved channel ("unstaged").
    pub index: Option<u32>,
    pub soak_minutes: u64,
    pub requires_approval: bool,
    pub approved: bool,
    pub hosts: Vec<HostCell>,
    pub counts: BTreeMap<HostState, u64>,
    pub converged_percent: f64,
}

/// `GET /api/v1/rollouts/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutDetail {
    #[serde(flatten)]
    pub header: RolloutHeader,
    pub waves: Vec<WaveView>,
    /// The event-log seq this answer reflects; pass it as `Last-Event-ID` to the feed.
    pub as_of: i64,
}

/// `GET /api/v1/rollouts/{id}/events` and the feed's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    pub events: Vec<LogEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    pub channel: Channel,
    pub closure: Closure,
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<String>,
}

/// `GET /api/v1/quarantines`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Quarantines {
    pub active: Vec<QuarantineEntry>,
    pub released: Vec<QuarantineEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetHost {
    pub hostname: Hostname,
    pub channel: Channel,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetChannel {
    pub name: Channel,
    pub rollout_policy: String,
    pub hosts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_rollout: Option<RolloutId>,
}

/// `GET /api/v1/fleet`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetOverview {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_hash: Option<String>,
    pub channels: Vec<FleetChannel>,
    pub hosts: Vec<FleetHost>,
}

/// `POST /api/v1/session` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub token: String,
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Whoami {
    pub name: String,
    pub role: String,
}

/// One record of a host, with the rollout it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostRecordView {
    pub rollout_id: RolloutId,
    #[serde(flatten)]
    pub cell: HostCell,
}

/// `GET /api/v1/hosts/{hostname}`: a host, its records across rollouts, its recent events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostDetail {
    pub host: FleetHost,
    pub records: Vec<HostRecordView>,
    pub events: Vec<LogEvent>,
}
