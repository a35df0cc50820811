//! Effects: what the pure state machines ask for beyond their own state. The controller
//! ([`crate::controller`]) carries them out in memory and hands the applier what to persist.

use shared::log::LogEntry;
use shared::state::HostState;
use shared::{Channel, Closure, Hostname, RolloutId};

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append one entry to the event log.
    Log(Log),
    /// A record changed state; the rollout machine reacts (halt on Failed, completion).
    HostStateChanged { rollout_id: RolloutId, host: Hostname, from: HostState, to: HostState },
    /// Never dispatch `closure` to `channel` again until released (a host rolled back from it).
    Quarantine { channel: Channel, closure: Closure, reason: String },
    /// The unacknowledged dispatch of this record is withdrawn (pause or halt).
    WithdrawDispatch { rollout_id: RolloutId, host: Hostname },
    /// Mark this record excused: it no longer blocks waves or completion (clear-failure).
    Excuse { rollout_id: RolloutId, host: Hostname },
}

/// An event-log entry and what it is about, before it has a `seq` and `ts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub rollout_id: Option<RolloutId>,
    pub host: Option<Hostname>,
    pub channel: Option<Channel>,
    pub entry: LogEntry,
}
