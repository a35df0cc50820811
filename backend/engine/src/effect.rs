//! Effects: descriptions of IO that the pure functions return and the applier executes.

use serde_json::Value;
use shared::state::HostState;
use shared::{Channel, Closure, Hostname, RolloutId};

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append one row to the event log.
    Log(LogEntry),
    /// A record changed state; the rollout machine reacts (halt on Failed, completion).
    HostStateChanged { rollout_id: RolloutId, host: Hostname, from: HostState, to: HostState },
    /// Never dispatch `closure` to `channel` again until released (a host rolled back from it).
    Quarantine { channel: Channel, closure: Closure, reason: String },
    /// The unacknowledged dispatch of this record is withdrawn (pause or halt).
    WithdrawDispatch { rollout_id: RolloutId, host: Hostname },
    /// Mark this record excused: it no longer blocks waves or completion (clear-failure).
    Excuse { rollout_id: RolloutId, host: Hostname },
}

/// An event-log row before it has a `seq` and `ts` (the applier assigns both).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub kind: &'static str,
    pub rollout_id: Option<RolloutId>,
    pub host: Option<Hostname>,
    pub channel: Option<Channel>,
    pub payload: Value,
}
