//! The closed set of inputs the reducer accepts (SPEC §6) and their answers. Everything that
//! can change rollout state is one of these.

use engine::state::ManifestSet;
use shared::agent::{EventResponse, HeartbeatRequest, HeartbeatResponse};
use shared::api::{ManifestSummary, OperatorAction, OperatorOutcome};
use shared::manifest::SignedArtifact;
use shared::state::HostEvent;
use shared::{Hostname, RolloutId};
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
    /// The sealer exported entries to the archive: log it (SPEC §16). Answered after the
    /// entry committed; only then are the entries deleted.
    Archived {
        entry: Archived,
        reply: Reply<()>,
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
            ReducerInput::Archived { .. } => "archived",
            ReducerInput::RefreshGauges { .. } => "refresh_gauges",
        }
    }
}

/// What the sealer archived.
#[derive(Debug, Clone)]
pub enum Archived {
    Sealed(shared::log::LogSealed),
    Compacted(shared::log::LogCompacted),
}

impl Archived {
    pub fn entry(self) -> shared::log::LogEntry {
        match self {
            Archived::Sealed(sealed) => shared::log::LogEntry::LogSealed(sealed),
            Archived::Compacted(compacted) => shared::log::LogEntry::LogCompacted(compacted),
        }
    }
}

/// A verified manifest set with the raw artifacts to persist.
pub struct ManifestUpdate {
    pub set: ManifestSet,
    pub fleet_artifact: SignedArtifact,
    pub manifest_artifacts: Vec<(RolloutId, SignedArtifact)>,
    /// The operator who uploaded it (`None`: the manifests directory).
    pub uploaded_by: Option<String>,
}

/// Why an input was not applied (the controller's refusals, and the reducer's own: shutting
/// down, reloading, a write that did not commit, all `Unavailable`).
pub use engine::controller::Refusal as ReducerError;
