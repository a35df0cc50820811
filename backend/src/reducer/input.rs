//! The closed set of inputs the reducer accepts (SPEC §6) and their answers. Everything that
//! can change rollout state is one of these.

use engine::state::ManifestSet;
use serde::Serialize;
use shared::agent::{EventResponse, HeartbeatRequest, HeartbeatResponse};
use shared::manifest::SignedArtifact;
use shared::state::HostEvent;
use shared::{Channel, Closure, Hostname, RolloutId};
use tokio::sync::oneshot;

pub type Reply<T> = oneshot::Sender<Result<T, ReducerError>>;

pub enum ReducerInput {
    HostEvent {
        host: Hostname,
        rollout_id: RolloutId,
        event: HostEvent,
        reply: Reply<EventResponse>,
    },
    Heartbeat {
        heartbeat: HeartbeatRequest,
        reply: Reply<HeartbeatResponse>,
    },
    ManifestSetUpdated {
        update: Box<ManifestUpdate>,
        reply: Option<Reply<ManifestSummary>>,
    },
    /// A plan pass; the reply (if any) comes after it committed.
    PlanTick {
        reply: Option<Reply<()>>,
    },
    Operator {
        action: OperatorAction,
        by: String,
        reason: Option<String>,
        reply: Reply<OperatorOutcome>,
    },
    /// Refresh the gauges (records by state, holds by gate, stuck) for a `/metrics` scrape:
    /// they count every record, so they are computed when asked for, not after every group.
    RefreshGauges {
        reply: Reply<()>,
    },
}

impl ReducerInput {
    /// Label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReducerInput::HostEvent { .. } => "host_event",
            ReducerInput::Heartbeat { .. } => "heartbeat",
            ReducerInput::ManifestSetUpdated { .. } => "manifest_set_updated",
            ReducerInput::PlanTick { .. } => "plan_tick",
            ReducerInput::Operator { .. } => "operator",
            ReducerInput::RefreshGauges { .. } => "refresh_gauges",
        }
    }
}

/// A verified manifest set with the raw artifacts to persist.
pub struct ManifestUpdate {
    pub set: ManifestSet,
    pub fleet_artifact: SignedArtifact,
    pub manifest_artifacts: Vec<(RolloutId, SignedArtifact)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    pub fleet_hash: String,
    pub hosts: usize,
    pub channels: usize,
    pub rollouts: Vec<RolloutId>,
    /// For each accepted manifest of the upload that opens no rollout, why (an identical
    /// hostSet, or a newer release of its channel in force).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opens_nothing: Vec<String>,
}

/// Operator actions (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum OperatorAction {
    #[serde(rename_all = "camelCase")]
    ApproveWave {
        rollout_id: RolloutId,
        wave: u32,
    },
    #[serde(rename_all = "camelCase")]
    Promote {
        rollout_id: RolloutId,
        to_wave: u32,
        force: bool,
    },
    #[serde(rename_all = "camelCase")]
    Pause {
        rollout_id: RolloutId,
    },
    #[serde(rename_all = "camelCase")]
    Resume {
        rollout_id: RolloutId,
    },
    #[serde(rename_all = "camelCase")]
    ClearFailure {
        rollout_id: RolloutId,
    },
    Quarantine {
        channel: Channel,
        closure: Closure,
    },
    Release {
        channel: Channel,
        closure: Closure,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorOutcome {
    /// The event-log seq of the entry recording the action.
    pub seq: i64,
    pub message: String,
}

/// Why an input was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReducerError {
    /// Does not apply (illegal transition, failed guard, wrong state, unknown id): 409.
    #[error("{message}")]
    Rejected { code: &'static str, message: String },
    /// The input is well-formed but breaks a limit (`shared::limits`): 422.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The reducer is not running or is shutting down, or the write did not commit: 503.
    #[error("{0}")]
    Unavailable(String),
}
