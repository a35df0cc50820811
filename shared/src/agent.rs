//! Agent API bodies (SPEC §9.1).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{Closure, Hostname, RolloutId};
use crate::manifest::HealthFailurePolicy;
use crate::state::{HostEvent, HostRolloutSnapshot, HostState};

/// Where the agent API lives: every request under it is signed with the host's key (SPEC §9.1).
/// The server answers these uncompressed; the paths below are under it.
pub const ROUTES: &str = "/api/v1/agent/";
/// The agent's heartbeat, [`HeartbeatRequest`].
pub const HEARTBEAT_PATH: &str = "/api/v1/agent/heartbeat";
/// The agent's events, [`EventRequest`].
pub const EVENTS_PATH: &str = "/api/v1/agent/events";

/// `POST /api/v1/agent/heartbeat`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub hostname: Hostname,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    /// What the host booted (`/run/booted-system`): differs from the current closure when a
    /// switch left the kernel or initrd for the next boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_closure: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<RolloutId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_seq: Option<u64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatResponse {
    pub received_at: DateTime<Utc>,
    /// Resend every event of `rolloutId` after this seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_from: Option<u64>,
    pub bootstrap: Vec<HostRolloutSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<DispatchOrder>,
    pub next_heartbeat_seconds: u64,
}

/// What the host should switch to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DispatchOrder {
    pub rollout_id: RolloutId,
    pub target_closure: Closure,
    pub soak_seconds: u64,
    /// What the agent does when the host fails its health checks (the channel's policy): roll
    /// back to the previous closure, or only report.
    pub on_health_failure: HealthFailurePolicy,
}

/// `POST /api/v1/agent/events`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRequest {
    pub hostname: Hostname,
    pub rollout_id: RolloutId,
    pub event: HostEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventOutcome {
    Applied,
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventResponse {
    pub outcome: EventOutcome,
    pub state: HostState,
}

/// The string an agent signs (SPEC §9.1).
pub fn signing_string(method: &str, path_and_query: &str, timestamp: i64, body_sha256_hex: &str) -> String {
    format!("fleetwave-agent-v1\n{method}\n{path_and_query}\n{timestamp}\n{body_sha256_hex}")
}

/// How far an agent's signing timestamp may be off the control plane's clock (SPEC §9.1). A
/// signature is refused the second time while its timestamp is acceptable; Ed25519 is
/// deterministic, so an agent must never sign the same request twice with one timestamp (a
/// retry within the same second is signed with a later one).
pub const MAX_SKEW_SECONDS: i64 = 60;

pub const HOST_HEADER: &str = "x-fleetwave-host";
pub const TIMESTAMP_HEADER: &str = "x-fleetwave-timestamp";
pub const SIGNATURE_HEADER: &str = "x-fleetwave-signature";
