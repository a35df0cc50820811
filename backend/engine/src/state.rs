//! The in-memory state the planner reads and the pure operations that change it. The reducer
//! owns one `FleetState`; every change here returns effects for the applier to persist.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::log::{self, LogEntry};
use shared::policy::OperatorPolicies;
use shared::state::HostState;
use shared::{Channel, Closure, Hostname, RolloutId};

use crate::effect::{Effect, Log};
use crate::fleet::Placement;
use crate::fleet::VerifiedFleet;
use crate::host::{HostRecord, StepPolicy, TransitionError, step};
use crate::records::{Brief, Records};

use crate::rollout::{self, Rollout, RolloutContext, RolloutError, RolloutInput};
use crate::verify::VerifiedManifest;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostEventError {
    #[error("host {host} has no record in rollout {rollout_id}")]
    UnknownRecord { rollout_id: RolloutId, host: Hostname },
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Quarantined (channel, closure) pairs.
pub type Quarantines = BTreeSet<(Channel, Closure)>;

/// The verified fleet and the verified rollout manifests filed against it.
#[derive(Debug, Clone)]
pub struct ManifestSet {
    /// Shared with whoever else needs the fleet (the control plane's request authentication):
    /// at 50,000 hosts a copy is tens of MiB.
    pub fleet: Arc<VerifiedFleet>,
    manifests: BTreeMap<RolloutId, VerifiedManifest>,
    /// Ids in the order the control plane accepted them (SPEC §2.4: between equal
    /// `signedAt`, the one accepted later is newer).
    accepted: Vec<RolloutId>,
    newest: BTreeMap<Channel, RolloutId>,
}

impl ManifestSet {
    /// `manifests` in the order they were accepted, earliest first. A later manifest with the
    /// id of an earlier one replaces its content and keeps its place.
    pub fn new(
        fleet: impl Into<Arc<VerifiedFleet>>,
        manifests: impl IntoIterator<Item = VerifiedManifest>,
    ) -> ManifestSet {
        let mut by_id: BTreeMap<RolloutId, VerifiedManifest> = BTreeMap::new();
        let mut accepted = Vec::new();
        for m in manifests {
            if !by_id.contains_key(&m.id) {
                accepted.push(m.id.clone());
            }
            by_id.insert(m.id.clone(), m);
        }
        // Newest by signing time, then by acceptance (a later position wins a tie): equal
        // inputs give an equal choice, and a release signed in the same second as the one
        // before it still replaces it.
        let mut newest: BTreeMap<Channel, (DateTime<Utc>, usize, RolloutId)> = BTreeMap::new();
        for (position, id) in accepted.iter().enumerate() {
            let Some(m) = by_id.get(id) else { continue };
            let key = (m.signed_at, position, id.clone());
            match newest.get(&m.manifest.channel) {
                Some(current) if (current.0, current.1) > (key.0, key.1) => {}
                _ => {
                    newest.insert(m.manifest.channel.clone(), key);
                }
            }
        }
        let newest = newest.into_iter().map(|(channel, (_, _, id))| (channel, id)).collect();
        ManifestSet { fleet: fleet.into(), manifests: by_id, accepted, newest }
    }

    /// The manifests in the order they were accepted, earliest first.
    pub fn in_acceptance_order(&self) -> impl Iterator<Item = &VerifiedManifest> {
        self.accepted.iter().filter_map(|id| self.manifests.get(id))
    }

    pub fn get(&self, id: &RolloutId) -> Option<&VerifiedManifest> {
        self.manifests.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &VerifiedManifest> {
        self.manifests.values()
    }

    /// The channel's newest manifest (by `meta.signedAt`).
    pub fn newest_for(&self, channel: &Channel) -> Option<&VerifiedManifest> {
        self.newest.get(channel).and_then(|id| self.manifests.get(id))
    }

    pub fn same_host_set(&self, a: &RolloutId, b: &RolloutId) -> bool {
        match (self.manifests.get(a), self.manifests.get(b)) {
            (Some(a), Some(b)) => a.manifest.host_set == b.manifest.host_set,
            _ => false,
        }
    }
}

/// Rollouts, their records, when each host last heartbeated, and the operators' policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetState {
    pub rollouts: BTreeMap<RolloutId, Rollout>,
    pub records: BTreeMap<RolloutId, Records>,
    pub last_heartbeat: HashMap<Hostname, DateTime<Utc>>,
    /// Operator freezes and suspended hosts (SPEC §17).
    pub policies: OperatorPolicies,
}

impl FleetState {
    /// Lets the records held for the same reason share one copy of it, as the pass that held
    /// them did (records read back from the database each come with their own): the planner
    /// then compares them by pointer (see `planner::Reasons`).
    pub fn share_hold_reasons(&mut self) {
        let mut seen: HashSet<Arc<str>> = HashSet::new();
        for records in self.records.values_mut() {
            records.update_each(
                |brief| brief.held.is_some(),
                |record| {
                    let Some(waiting) = record.waiting_on.as_mut() else { return };
                    match seen.get(&waiting.reason) {
                        Some(shared) => waiting.reason = shared.clone(),
                        None => {
                            seen.insert(waiting.reason.clone());
                        }
                    }
                },
            );
        }
    }

    /// The most recently opened rollout of `channel`, in any state.
    pub fn current_rollout(&self, channel: &Channel) -> Option<&Rollout> {
        self.rollouts.values().filter(|r| &r.channel == channel).max_by_key(|r| r.opened_seq)
    }

    pub fn record(&self, rollout: &RolloutId, host: &Hostname) -> Option<&HostRecord> {
        self.records.get(rollout)?.get(host)
    }

    fn next_open_seq(&self) -> u64 {
        self.rollouts.values().map(|r| r.opened_seq).max().map_or(1, |s| s + 1)
    }

    /// Runs one input through the rollout machine and applies the record-level effects it
    /// returns (withdrawn dispatches, excused hosts). The rest is returned for the applier.
    pub fn apply_rollout_input(
        &mut self,
        fleet: &VerifiedFleet,
        id: &RolloutId,
        input: &RolloutInput,
        now: DateTime<Utc>,
    ) -> Result<Vec<Effect>, RolloutError> {
        let rollout =
            self.rollouts.get(id).ok_or_else(|| RolloutError::NotApplicable(format!("there is no rollout {id}")))?;
        let empty = Records::default();
        let records = self.records.get(id).unwrap_or(&empty);
        let context = RolloutContext { fleet, records, suspended: &self.policies.suspended };
        let transition = rollout::apply(rollout, input, context, now)?;
        self.rollouts.insert(id.clone(), transition.rollout);
        Ok(self.apply_record_effects(transition.effects, now))
    }

    fn apply_record_effects(&mut self, effects: Vec<Effect>, now: DateTime<Utc>) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len());
        for effect in effects {
            match &effect {
                Effect::WithdrawDispatch { rollout_id, host } => {
                    self.records.get_mut(rollout_id).and_then(|r| {
                        r.update(host, |record| {
                            record.dispatch = None;
                            record.last_progress_at = now;
                        })
                    });
                }
                Effect::Excuse { rollout_id, host } => {
                    self.records.get_mut(rollout_id).and_then(|r| r.update(host, |record| record.excused = true));
                }
                _ => {}
            }
            out.push(effect);
        }
        out
    }

    /// The policy `step` needs for a record: its wave's soak and the channel's failure policy.
    pub fn step_policy(fleet: &VerifiedFleet, record: &HostRecord) -> StepPolicy {
        let soak_seconds = match fleet.placement(&record.hostname) {
            Placement::Wave(w) => fleet.waves(&record.channel).get(w as usize).map_or(0, |s| s.soak_seconds),
            Placement::Unstaged => 0,
        };
        StepPolicy {
            soak: i64::try_from(soak_seconds)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .unwrap_or(chrono::Duration::MAX),
            on_health_failure: fleet.on_health_failure(&record.channel),
        }
    }

    /// The wave of `host` in `rollout_id` and that wave's failures against its budget, when
    /// the host is in a wave whose policy sets `maxFailures`.
    pub fn failure_budget_use(
        &self,
        fleet: &VerifiedFleet,
        rollout_id: &RolloutId,
        host: &Hostname,
    ) -> Option<(u32, rollout::WaveFailures)> {
        let records = self.records.get(rollout_id)?;
        let channel = &records.get(host)?.channel;
        let Placement::Wave(wave) = fleet.placement(host) else { return None };
        fleet.waves(channel).get(wave as usize)?.max_failures?;
        Some((wave, rollout::wave_failures(fleet, channel, wave, records.states())))
    }

    /// A record as its agent sees it in `bootstrap`, with the wave's soak and the channel's
    /// policy from `fleet` (an agent that lost its intent finishes the job with them).
    pub fn agent_snapshot(fleet: Option<&VerifiedFleet>, record: &HostRecord) -> shared::state::HostRolloutSnapshot {
        let mut snapshot = record.snapshot();
        if let Some(fleet) = fleet {
            let policy = FleetState::step_policy(fleet, record);
            snapshot.soak_seconds = u64::try_from(policy.soak.num_seconds()).ok();
            snapshot.on_health_failure = Some(policy.on_health_failure);
        }
        snapshot
    }

    /// Applies one agent event to its record, then lets the rollout react: a host entering
    /// Failed halts it, and a rollout whose records are all Converged or excused completes.
    pub fn apply_host_event(
        &mut self,
        fleet: &VerifiedFleet,
        rollout_id: &RolloutId,
        host: &Hostname,
        event: &shared::state::HostEvent,
        now: DateTime<Utc>,
    ) -> Result<Vec<Effect>, HostEventError> {
        let unknown = || HostEventError::UnknownRecord { rollout_id: rollout_id.clone(), host: host.clone() };
        let record = self.records.get(rollout_id).and_then(|r| r.get(host)).ok_or_else(unknown)?;
        let transition = step(record, event, now, &Self::step_policy(fleet, record))?;
        let failed = transition.record.state == HostState::Failed && record.state != HostState::Failed;
        let reverted = transition.record.state == HostState::Reverted && record.state != HostState::Reverted;
        let reason = transition.record.failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default();
        let channel = record.channel.clone();
        // Only a record that now lets the rollout complete can complete it.
        let may_complete = rollout::lets_complete(&transition.record, self.policies.suspended.contains_key(host));
        self.records.get_mut(rollout_id).and_then(|r| r.update(host, |slot| *slot = transition.record));
        let mut effects = transition.effects;
        // A failure within its wave's budget (SPEC §17) does not halt the rollout, and its
        // rollback does not quarantine the closure (that would hold every host the budget
        // lets go on).
        let within_budget = (failed || reverted)
            .then(|| self.failure_budget_use(fleet, rollout_id, host))
            .flatten()
            .filter(|(_, failures)| failures.within_budget());
        if reverted && within_budget.is_some() {
            effects.retain(|e| !matches!(e, Effect::Quarantine { .. }));
        }
        if failed {
            match within_budget {
                Some((wave, failures)) => effects.push(Effect::Log(Log {
                    rollout_id: Some(rollout_id.clone()),
                    host: Some(host.clone()),
                    channel: Some(channel),
                    entry: LogEntry::FailureWithinBudget(log::FailureWithinBudget {
                        wave,
                        failures: failures.failed,
                        max: failures.allowed.unwrap_or(0),
                        reason,
                    }),
                })),
                None => {
                    let input = RolloutInput::HostFailed { host: host.clone(), reason };
                    effects.extend(self.apply_rollout_input(fleet, rollout_id, &input, now).unwrap_or_default());
                }
            }
        }
        if may_complete {
            effects
                .extend(self.apply_rollout_input(fleet, rollout_id, &RolloutInput::Evaluate, now).unwrap_or_default());
        }
        Ok(effects)
    }

    /// Withdraws every unacknowledged dispatch of `closure` to `channel` (it was just
    /// quarantined): the agent must not pick it up on its next heartbeat.
    pub fn withdraw_dispatches_of(&mut self, channel: &Channel, closure: &Closure, now: DateTime<Utc>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (id, rollout) in &self.rollouts {
            if rollout.state.is_terminal() || &rollout.channel != channel {
                continue;
            }
            let Some(records) = self.records.get_mut(id) else { continue };
            records.update_each(
                |brief| brief.state == HostState::Pending && brief.dispatched,
                |record| {
                    if &record.target_closure == closure {
                        record.dispatch = None;
                        record.last_progress_at = now;
                        effects
                            .push(Effect::WithdrawDispatch { rollout_id: id.clone(), host: record.hostname.clone() });
                    }
                },
            );
        }
        effects
    }

    /// Flags records that made no progress for `stuckAfterMinutes` (SPEC §6): Pending with a
    /// dispatch, Activating, or Soaking past its soak. Progress clears the flag (in `step`);
    /// so does leaving those states. Returns one log effect per record whose flag changed.
    pub fn detect_stuck(&mut self, fleet: &VerifiedFleet, now: DateTime<Utc>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (id, rollout) in &self.rollouts {
            if rollout.state.is_terminal() {
                continue;
            }
            let Some(records) = self.records.get_mut(id) else { continue };
            let stuck_after = fleet.stuck_after(&rollout.channel);
            let watched = |brief: &Brief| {
                brief.stuck
                    || matches!(brief.state, HostState::Activating | HostState::Soaking)
                    || (brief.state == HostState::Pending && brief.dispatched)
            };
            records.update_each(watched, |record| {
                let since = match record.state {
                    HostState::Pending if record.dispatch.is_some() => Some(record.last_progress_at),
                    HostState::Activating => Some(record.last_progress_at),
                    HostState::Soaking => {
                        Some(record.soak_due_at.map_or(record.last_progress_at, |due| due.max(record.last_progress_at)))
                    }
                    _ => None,
                };
                let stuck = since.is_some_and(|since| now - since >= stuck_after);
                if stuck != record.stuck {
                    record.stuck = stuck;
                    let change = log::StuckChange { state: record.state, since };
                    effects.push(Effect::Log(Log {
                        rollout_id: Some(id.clone()),
                        host: Some(record.hostname.clone()),
                        channel: Some(record.channel.clone()),
                        entry: if stuck { LogEntry::HostStuck(change) } else { LogEntry::HostUnstuck(change) },
                    }));
                }
            });
        }
        effects
    }

    /// Opens the rollout of a verified manifest: supersedes the channel's open rollout and
    /// creates one Pending record per `hostSet` entry.
    pub fn open_rollout(&mut self, set: &ManifestSet, id: &RolloutId, now: DateTime<Utc>) -> Vec<Effect> {
        let Some(manifest) = set.get(id) else {
            return vec![];
        };
        if self.rollouts.contains_key(id) {
            return vec![];
        }
        let channel = manifest.manifest.channel.clone();
        let mut effects = Vec::new();
        let open: Vec<RolloutId> = self
            .rollouts
            .values()
            .filter(|r| r.channel == channel && !r.state.is_terminal())
            .map(|r| r.id.clone())
            .collect();
        for old in open {
            if let Ok(more) =
                self.apply_rollout_input(&set.fleet, &old, &RolloutInput::Supersede { by: id.clone() }, now)
            {
                effects.extend(more);
            }
        }
        let rollout = Rollout::open(id.clone(), channel.clone(), self.next_open_seq(), now);
        let records: Records = manifest
            .manifest
            .host_set
            .iter()
            .map(|e| {
                HostRecord::pending(id.clone(), e.hostname.clone(), channel.clone(), e.target_closure.clone(), now)
            })
            .collect();
        let host_set = manifest
            .manifest
            .host_set
            .iter()
            .map(|e| log::OpenedHost { hostname: e.hostname.clone(), target_closure: e.target_closure.clone() })
            .collect();
        effects.push(Effect::Log(Log {
            rollout_id: Some(id.clone()),
            host: None,
            channel: Some(channel),
            entry: LogEntry::RolloutOpened(log::RolloutOpened {
                hosts: records.len() as u64,
                signed_at: manifest.signed_at,
                host_set,
            }),
        }));
        self.rollouts.insert(id.clone(), rollout);
        self.records.insert(id.clone(), records);
        effects
    }
}
