//! The control plane's decisions without IO (SPEC §6): what each reducer input does to the
//! fleet state, and what must be written because of it.
//!
//! The reducer owns one [`Controller`] and drives it with its inputs; each call answers the
//! input and appends [`Write`]s (event-log rows carrying the record or rollout they changed,
//! presence rows) for the applier to commit. Time comes in as `now`. The engine's tests drive
//! the same controller through [`crate::testkit::Scenario`].
//!
//! - this module: agent events, manifest sets, and the writes;
//! - [`heartbeat`]: presence, recovery synthesis and what a heartbeat is answered;
//! - [`operator`]: operator actions and quarantines;
//! - [`plan`]: plan passes, their scope after hosts moved, stuck and offline detection.

mod heartbeat;
mod operator;
mod plan;
pub use plan::HOLDS_PER_PASS;

use shared::ErrorCode;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::agent::{EventOutcome, EventResponse};
use shared::api::ManifestSummary;
use shared::log::LogEntry;
use shared::policy::OperatorPolicies;
use shared::state::{HostEvent, HostState};
use shared::{Channel, Closure, Hostname, RolloutId};

use crate::effect::{Effect, Log};
use crate::fleet::VerifiedFleet;
use crate::host::{HostRecord, TransitionError};
use crate::rollout::Rollout;
use crate::state::{FleetState, HostEventError, ManifestSet, Quarantines};

pub use self::heartbeat::IDLE_HEARTBEAT_SECONDS;
pub use self::operator::Acted;

/// Why an input was not applied. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Does not apply (illegal transition, failed guard, wrong state, unknown id): 409.
    #[error("{message}")]
    Rejected { code: ErrorCode, message: String },
    /// The input is well-formed but breaks a limit or a rule of acceptance: 422.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// Not ready (no verified fleet yet), shutting down, or the write did not commit: 503.
    #[error("{0}")]
    Unavailable(String),
}

fn rejected(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::Rejected { code, message: message.into() }
}

/// Something the applier must persist.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Append an event-log row (boxed: it carries a whole record).
    Log(Box<LogRow>),
    /// The host's presence row (last heartbeat, current and booted closure) is due for a
    /// rewrite.
    Presence { host: Hostname, at: DateTime<Utc>, closure: Option<Closure>, booted: Option<Closure> },
    /// The operators' policies changed (freezes, suspensions): the stored document is
    /// replaced by this one.
    Policies(OperatorPolicies),
}

/// An event-log row before it has a seq. An entry about one record carries that record as it
/// was right after the change, one about a rollout that rollout: the log alone re-derives
/// every row (SPEC §8).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub ts: DateTime<Utc>,
    pub rollout_id: Option<RolloutId>,
    pub host: Option<Hostname>,
    pub channel: Option<Channel>,
    pub entry: LogEntry,
    pub record: Option<HostRecord>,
    pub rollout: Option<Rollout>,
}

/// What the database held, to start from.
#[derive(Debug, Default)]
pub struct Restored {
    pub set: Option<ManifestSet>,
    pub rollouts: Vec<Rollout>,
    pub records: Vec<HostRecord>,
    pub quarantines: Vec<(Channel, Closure)>,
    pub policies: OperatorPolicies,
    /// Host, last heartbeat, closure it reported.
    pub presence: Vec<(Hostname, DateTime<Utc>, Option<Closure>)>,
}

#[derive(Debug, Clone)]
struct Presence {
    at: DateTime<Utc>,
    closure: Option<Closure>,
    /// Not restored at start: the first heartbeat after it writes the row again.
    booted: Option<Closure>,
    persisted_at: Option<DateTime<Utc>>,
    online: bool,
    /// The heartbeat interval its last answer asked for: it is offline only after three of
    /// them (a host told to come back in 30 s is not late after 15, whatever opened since).
    asked_seconds: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Controller {
    /// Shared so that each input can hold it while changing the rest of the state; a new
    /// set replaces it whole. (Cloning the set itself per input cost milliseconds at 10k hosts.)
    set: Option<Arc<ManifestSet>>,
    pub state: FleetState,
    pub quarantines: Quarantines,
    presence: HashMap<Hostname, Presence>,
    /// Which rollouts in memory have a record of each host; rebuilt (when `None`) after the
    /// set of rollouts in memory changed, so a heartbeat looks at its host's rollouts only
    /// instead of every open rollout.
    rollouts_of_host: Option<HashMap<Hostname, Vec<RolloutId>>>,
    /// Rollouts with a Pending host held by a disruption budget: a host moving anywhere can
    /// free their budget, so every pass looks at them.
    budget_held: BTreeSet<RolloutId>,
    /// A plan pass over every rollout is due (plan tick, manifests, operator actions,
    /// quarantines).
    replan: bool,
    /// Rollouts in which a host changed state since the last pass: they (and what they can
    /// unblock) are planned in the next one.
    moved: BTreeSet<RolloutId>,
    /// How many new holds one pass applies ([`plan::HOLDS_PER_PASS`]).
    holds_per_pass: plan::HoldsPerPass,
}

impl Controller {
    pub fn new(restored: Restored) -> Controller {
        let mut c = Controller { set: restored.set.map(Arc::new), ..Controller::default() };
        for rollout in restored.rollouts {
            c.state.rollouts.insert(rollout.id.clone(), rollout);
        }
        let mut records: BTreeMap<RolloutId, Vec<HostRecord>> = BTreeMap::new();
        for record in restored.records {
            records.entry(record.rollout_id.clone()).or_default().push(record);
        }
        c.state.records = records.into_iter().map(|(id, records)| (id, records.into_iter().collect())).collect();
        c.state.share_hold_reasons();
        c.quarantines.extend(restored.quarantines);
        c.state.policies = restored.policies;
        for (host, at, closure) in restored.presence {
            c.state.last_heartbeat.insert(host.clone(), at);
            c.presence.insert(
                host,
                Presence {
                    at,
                    closure,
                    booted: None,
                    persisted_at: Some(at),
                    online: true,
                    asked_seconds: heartbeat::IDLE_HEARTBEAT_SECONDS,
                },
            );
        }
        c.note_budget_holds();
        c
    }

    pub fn set(&self) -> Option<&Arc<ManifestSet>> {
        self.set.as_ref()
    }

    pub fn fleet(&self) -> Option<&Arc<VerifiedFleet>> {
        self.set.as_ref().map(|s| &s.fleet)
    }

    // ---- writes ----

    /// An entry about a record or a rollout: the row carries it as it is now.
    fn log(&self, now: DateTime<Utc>, log: Log, out: &mut Vec<Write>) {
        let (record, rollout) = match (&log.rollout_id, &log.host) {
            (Some(rollout), Some(host)) => (self.state.record(rollout, host).cloned(), None),
            (Some(rollout), None) => (None, self.state.rollouts.get(rollout).cloned()),
            _ => (None, None),
        };
        let Log { rollout_id, host, channel, entry } = log;
        out.push(Write::Log(Box::new(LogRow { ts: now, rollout_id, host, channel, entry, record, rollout })));
    }

    /// An entry that carries nothing (presence, quarantines, manifests, operator actions).
    fn note(
        now: DateTime<Utc>,
        rollout_id: Option<RolloutId>,
        host: Option<Hostname>,
        channel: Option<Channel>,
        entry: LogEntry,
        out: &mut Vec<Write>,
    ) {
        out.push(Write::Log(Box::new(LogRow {
            ts: now,
            rollout_id,
            host,
            channel,
            entry,
            record: None,
            rollout: None,
        })));
    }

    /// Carries out what the state machines asked for: log rows, quarantines requested by
    /// rollbacks, and a plan of the rollouts whose hosts moved.
    fn absorb(&mut self, now: DateTime<Utc>, effects: Vec<Effect>, out: &mut Vec<Write>) {
        for effect in effects {
            match effect {
                Effect::Log(log) => self.log(now, log, out),
                // A host that moved can unblock waves, host edges and budgets, or halt a
                // rollout: plan again before this group commits.
                Effect::HostStateChanged { rollout_id, .. } => {
                    self.moved.insert(rollout_id);
                }
                Effect::Quarantine { channel, closure, reason } => {
                    self.add_quarantine(now, channel, closure, reason, "fleetwave".into(), out);
                }
                Effect::WithdrawDispatch { rollout_id, host } => {
                    self.log_record_change(now, LogEntry::DispatchWithdrawn(Default::default()), rollout_id, host, out)
                }
                Effect::Excuse { rollout_id, host } => {
                    self.log_record_change(now, LogEntry::HostExcused(Default::default()), rollout_id, host, out)
                }
            }
        }
    }

    /// A record changed without an event of its own (withdrawn dispatch, excused): one log row
    /// carrying the record, like every other change.
    fn log_record_change(
        &self,
        now: DateTime<Utc>,
        entry: LogEntry,
        rollout_id: RolloutId,
        host: Hostname,
        out: &mut Vec<Write>,
    ) {
        let channel = self.state.record(&rollout_id, &host).map(|r| r.channel.clone());
        self.log(now, Log { rollout_id: Some(rollout_id), host: Some(host), channel, entry }, out);
    }

    // ---- inputs ----

    /// An agent's event for one of its records (SPEC §6 HostEvent).
    pub fn host_event(
        &mut self,
        now: DateTime<Utc>,
        host: &Hostname,
        rollout_id: &RolloutId,
        event: &HostEvent,
        out: &mut Vec<Write>,
    ) -> Result<EventResponse, Refusal> {
        let Some(set) = self.set.clone() else {
            return Err(Refusal::Unavailable("No verified fleet yet.".into()));
        };
        let state_now = |c: &Controller| c.state.record(rollout_id, host).map_or(HostState::Pending, |r| r.state);
        match self.state.apply_host_event(&set.fleet, rollout_id, host, event, now) {
            Ok(effects) => {
                self.absorb(now, effects, out);
                Ok(EventResponse { outcome: EventOutcome::Applied, state: state_now(self) })
            }
            Err(HostEventError::Transition(TransitionError::Duplicate { .. })) => {
                Ok(EventResponse { outcome: EventOutcome::Duplicate, state: state_now(self) })
            }
            Err(HostEventError::UnknownRecord { .. }) => {
                Err(rejected(ErrorCode::UnknownRecord, format!("{host} has no open record in rollout {rollout_id}.")))
            }
            Err(HostEventError::Transition(err @ TransitionError::TooMany(_))) => {
                Err(Refusal::Invalid { code: err.code(), message: err.to_string() })
            }
            Err(HostEventError::Transition(err)) => Err(rejected(err.code(), err.to_string())),
        }
    }

    /// A verified fleet and manifests (an upload or the manifests directory). Refused with
    /// `older-than-current` (SPEC §2.4) when its fleet was signed before the fleet in force,
    /// or one of its manifests before the newest release of its channel in force: a replay of
    /// an old but still fresh artifact must not roll anything back. Between equal `signedAt`,
    /// the one accepted later wins. With the fleet in force, the upload adds to (or replaces)
    /// the manifests in force, after them in acceptance order; with a new fleet it is the
    /// whole new set.
    pub fn manifests(
        &mut self,
        now: DateTime<Utc>,
        set: ManifestSet,
        uploaded_by: Option<String>,
        out: &mut Vec<Write>,
    ) -> Result<ManifestSummary, Refusal> {
        let older = |message: String| Refusal::Invalid { code: ErrorCode::OlderThanCurrent, message };
        if let Some(current) = &self.set {
            if set.fleet.hash != current.fleet.hash && set.fleet.signed_at < current.fleet.signed_at {
                return Err(older(format!(
                    "The fleet was signed at {}, before the fleet in force ({}).",
                    set.fleet.signed_at, current.fleet.signed_at
                )));
            }
            for m in set.iter().filter(|m| current.get(&m.id).is_none()) {
                if let Some(newest) = current.newest_for(&m.manifest.channel)
                    && m.signed_at < newest.signed_at
                {
                    return Err(older(format!(
                        "{} was signed at {}, before {} ({}), the newest release of {} in force.",
                        m.id, m.signed_at, newest.id, newest.signed_at, m.manifest.channel
                    )));
                }
            }
        }
        let uploaded: Vec<RolloutId> = set.iter().map(|m| m.id.clone()).collect();
        let set = match &self.set {
            Some(old) if old.fleet.hash == set.fleet.hash => {
                let merged: Vec<_> = old.in_acceptance_order().chain(set.in_acceptance_order()).cloned().collect();
                ManifestSet::new(set.fleet.clone(), merged)
            }
            _ => set,
        };
        let opens_nothing =
            uploaded.iter().filter_map(|id| crate::planner::why_not_opening(&set, &self.state, id)).collect();
        let summary = ManifestSummary {
            fleet_hash: set.fleet.hash.clone(),
            hosts: set.fleet.doc.hosts.len() as u64,
            channels: set.fleet.doc.channels.len() as u64,
            rollouts: set.iter().map(|m| m.id.clone()).collect(),
            opens_nothing,
            uploaded_by,
        };
        self.set = Some(Arc::new(set));
        Self::note(now, None, None, None, LogEntry::ManifestSetUpdated(summary.clone()), out);
        self.replan = true;
        Ok(summary)
    }

    /// After a commit: records of terminal rollouts leave memory (the database keeps them).
    pub fn prune(&mut self) {
        let done: Vec<RolloutId> =
            self.state.rollouts.iter().filter(|(_, r)| r.state.is_terminal()).map(|(id, _)| id.clone()).collect();
        for id in done {
            if self.state.records.remove(&id).is_some() {
                self.rollouts_of_host = None;
            }
        }
    }

    /// Counts for metrics: records by state, Pending holds by gate, stuck records.
    pub fn gauges(&self) -> (BTreeMap<HostState, i64>, BTreeMap<shared::state::Gate, i64>, i64) {
        let mut stuck = 0;
        let mut by_state: BTreeMap<HostState, i64> = HostState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut by_gate = BTreeMap::new();
        for brief in self.state.records.values().flat_map(|records| records.briefs()) {
            *by_state.entry(brief.state).or_insert(0) += 1;
            stuck += i64::from(brief.stuck);
            if let Some(gate) = brief.held
                && brief.state == HostState::Pending
            {
                *by_gate.entry(gate).or_insert(0) += 1;
            }
        }
        (by_state, by_gate, stuck)
    }

    /// Non-terminal records of `host` in rollouts that are not terminal, by rollout id.
    fn open_records_of(&mut self, host: &Hostname) -> Vec<(RolloutId, HostState)> {
        let index = self.rollouts_of_host.get_or_insert_with(|| {
            let mut index: HashMap<Hostname, Vec<RolloutId>> = HashMap::new();
            for (id, records) in &self.state.records {
                for host in records.hostnames() {
                    index.entry(host.clone()).or_default().push(id.clone());
                }
            }
            index
        });
        let Some(ids) = index.get(host) else { return Vec::new() };
        ids.iter()
            .filter(|id| self.state.rollouts.get(*id).is_some_and(|r| !r.state.is_terminal()))
            .filter_map(|id| self.state.record(id, host).map(|r| (id.clone(), r.state)))
            .filter(|(_, state)| !state.is_terminal())
            .collect()
    }
}
