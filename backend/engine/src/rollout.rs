//! The rollout state machine (SPEC §4). Pure: the records it looks at and `now` are inputs;
//! what must happen to records (withdraw a dispatch, excuse a host) comes out as effects.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::log::{self, LogEntry};
use shared::policy::Suspension;
use shared::state::{AdvancedBy, Halt};
use shared::state::{HostState, RolloutInputKind, RolloutState};
use shared::{Channel, Hostname, RolloutId};

use crate::effect::{Effect, Log};
use crate::fleet::{Placement, VerifiedFleet};
use crate::host::HostRecord;
use crate::records::Records;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    #[serde(rename = "rolloutId")]
    pub id: RolloutId,
    pub channel: Channel,
    pub state: RolloutState,
    pub current_wave: u32,
    pub approved_waves: BTreeSet<u32>,
    pub halt: Option<Halt>,
    /// Order in which rollouts were opened (the reducer's counter); newest wins per channel.
    pub opened_seq: u64,
    pub opened_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub superseded_by: Option<RolloutId>,
}

impl Rollout {
    pub fn open(id: RolloutId, channel: Channel, opened_seq: u64, now: DateTime<Utc>) -> Rollout {
        Rollout {
            id,
            channel,
            state: RolloutState::Active,
            current_wave: 0,
            approved_waves: BTreeSet::new(),
            halt: None,
            opened_seq,
            opened_at: now,
            completed_at: None,
            superseded_by: None,
        }
    }
}

/// Everything that can change a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutInput {
    /// A record of this rollout entered Failed.
    HostFailed {
        host: Hostname,
        reason: String,
    },
    Pause,
    Resume,
    ClearFailure,
    Approve {
        wave: u32,
    },
    /// Planner (`Auto`, one step when the current wave is complete) or operator promote.
    AdvanceWave {
        to: u32,
        by: AdvancedBy,
        force: bool,
    },
    /// Check whether every record is Converged or excused.
    Evaluate,
    /// A newer release of the same channel opened.
    Supersede {
        by: RolloutId,
    },
}

impl RolloutInput {
    pub fn kind(&self) -> RolloutInputKind {
        match self {
            RolloutInput::HostFailed { .. } => RolloutInputKind::HostFailed,
            RolloutInput::Pause => RolloutInputKind::Pause,
            RolloutInput::Resume => RolloutInputKind::Resume,
            RolloutInput::ClearFailure => RolloutInputKind::ClearFailure,
            RolloutInput::Approve { .. } => RolloutInputKind::ApproveWave,
            RolloutInput::AdvanceWave { .. } => RolloutInputKind::Promote,
            RolloutInput::Evaluate => RolloutInputKind::Evaluate,
            RolloutInput::Supersede { .. } => RolloutInputKind::Supersede,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("{input} does not apply to a rollout that is {state}")]
    IllegalForState { state: RolloutState, input: RolloutInputKind },
    #[error("{0}")]
    NotApplicable(String),
}

/// What the rollout machine sees of the rest of the world.
pub struct RolloutContext<'a> {
    pub fleet: &'a VerifiedFleet,
    /// Every record of this rollout.
    pub records: &'a Records,
    /// Hosts suspended by operators (SPEC §17): excused for waves and completion.
    pub suspended: &'a Suspended,
}

/// Suspended hosts, by hostname.
pub type Suspended = BTreeMap<Hostname, Suspension>;

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutTransition {
    pub rollout: Rollout,
    pub effects: Vec<Effect>,
}

fn log(rollout: &Rollout, entry: LogEntry) -> Effect {
    Effect::Log(Log { rollout_id: Some(rollout.id.clone()), host: None, channel: Some(rollout.channel.clone()), entry })
}

/// A wave of `channel` is complete when it has hosts in this rollout and every one of them is
/// Converged, Deferred, excused, suspended, or failed within the wave's failure budget (SPEC
/// §17; once its rollback, if its policy rolls back, is done). `None` when the wave has no
/// hosts (it never auto-advances). The records are read in hostname order, alongside the
/// fleet's facts (see [`ChannelFacts`](crate::fleet::ChannelFacts)).
pub fn wave_complete(
    fleet: &VerifiedFleet,
    channel: &Channel,
    wave: u32,
    records: &Records,
    suspended: impl Fn(u32) -> bool,
) -> Option<bool> {
    // Only a host that is not done can keep the wave open, so the placement is only needed
    // for those; done hosts are skipped on their brief.
    let facts = fleet.channel_facts(channel);
    let hosts = records.hostnames();
    let budget = fleet.waves(channel).get(wave as usize).and_then(|w| w.max_failures);
    let mut failed = false;
    for (i, (host, brief)) in hosts.iter().zip(records.briefs()).enumerate() {
        if brief.done_for_ordering() {
            continue;
        }
        // Placement and suspension both read the host's id from the fleet's facts.
        match facts.get_with_id(i, host) {
            Some((id, f)) if f.placement == Placement::Wave(wave) && !suspended(id) => {}
            _ => continue,
        }
        if budget.is_some() && brief.state.is_failure() && records.at(i).is_some_and(HostRecord::failure_settled) {
            failed = true;
            continue;
        }
        return Some(false);
    }
    if failed && !wave_failures(fleet, channel, wave, records.states()).within_budget() {
        return Some(false);
    }
    hosts.iter().enumerate().any(|(i, host)| facts.placement(i, host) == Placement::Wave(wave)).then_some(true)
}

/// Whether `record` (of a host suspended or not) lets its rollout complete: Converged, excused,
/// suspended, or failed and settled (then its wave's failure budget decides, see `Evaluate`).
/// A rollout completes only once every record does.
pub fn lets_complete(record: &HostRecord, suspended: bool) -> bool {
    record.state == HostState::Converged || record.excused || suspended || record.failure_settled()
}

/// A wave's failures against its failure budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveFailures {
    /// Hosts of the wave in this rollout that are Failed or Reverted (excused or not).
    pub failed: u64,
    pub hosts: u64,
    /// How many may fail without halting; `None` without a budget.
    pub allowed: Option<u64>,
}

impl WaveFailures {
    pub fn within_budget(&self) -> bool {
        self.allowed.is_some_and(|allowed| self.failed <= allowed)
    }
}

/// Counts the failures of `wave` among a rollout's records (SPEC §17 failure budgets).
/// `records`: each record's hostname and state, in hostname order (see [`Records::states`]).
pub fn wave_failures<'r>(
    fleet: &VerifiedFleet,
    channel: &Channel,
    wave: u32,
    records: impl Iterator<Item = (&'r Hostname, HostState)>,
) -> WaveFailures {
    let facts = fleet.channel_facts(channel);
    let (mut failed, mut hosts) = (0u64, 0u64);
    for (i, (host, state)) in records.enumerate() {
        if facts.placement(i, host) == Placement::Wave(wave) {
            hosts += 1;
            failed += u64::from(state.is_failure());
        }
    }
    let allowed = fleet.waves(channel).get(wave as usize).and_then(|w| w.max_failures).map(|b| b.allowed(hosts));
    WaveFailures { failed, hosts, allowed }
}

/// The records of a rollout that failed within their wave's failure budget (and settled) and
/// are not excused yet: excused when their wave completes (or, in the last wave, the rollout).
fn tolerated_failures<'r>(
    fleet: &VerifiedFleet,
    channel: &Channel,
    records: &'r Records,
    only_wave: Option<u32>,
) -> Vec<&'r HostRecord> {
    let facts = fleet.channel_facts(channel);
    let mut within: BTreeMap<u32, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, (r, brief)) in records.values().zip(records.briefs()).enumerate() {
        if !brief.state.is_failure() || brief.excused || !r.failure_settled() {
            continue;
        }
        let Placement::Wave(wave) = facts.placement(i, &r.hostname) else { continue };
        if only_wave.is_some_and(|w| w != wave) {
            continue;
        }
        let ok = *within
            .entry(wave)
            .or_insert_with(|| wave_failures(fleet, channel, wave, records.states()).within_budget());
        if ok {
            out.push(r);
        }
    }
    out
}

/// Applies one input (SPEC §4 table). `Completed` and `Superseded` are terminal.
pub fn apply(
    rollout: &Rollout,
    input: &RolloutInput,
    ctx: RolloutContext<'_>,
    now: DateTime<Utc>,
) -> Result<RolloutTransition, RolloutError> {
    use RolloutState as S;
    let illegal = || RolloutError::IllegalForState { state: rollout.state, input: input.kind() };
    if rollout.state.is_terminal() {
        return Err(illegal());
    }
    let mut next = rollout.clone();
    let mut effects = Vec::new();
    let withdraw = |effects: &mut Vec<Effect>| {
        for (host, brief) in ctx.records.hostnames().iter().zip(ctx.records.briefs()) {
            if brief.state == HostState::Pending && brief.dispatched {
                effects.push(Effect::WithdrawDispatch { rollout_id: rollout.id.clone(), host: host.clone() });
            }
        }
    };

    match input {
        RolloutInput::HostFailed { host, reason } => match rollout.state {
            S::Active | S::Paused => {
                next.state = S::Halted;
                next.halt = Some(Halt { host: host.clone(), reason: reason.clone(), at: now });
                withdraw(&mut effects);
            }
            // Already halted: the first failure keeps the record of why.
            S::Halted => {
                return Ok(RolloutTransition { rollout: next, effects });
            }
            _ => return Err(illegal()),
        },
        RolloutInput::Pause => {
            if rollout.state != S::Active {
                return Err(illegal());
            }
            next.state = S::Paused;
            withdraw(&mut effects);
        }
        RolloutInput::Resume => {
            if rollout.state != S::Paused {
                return Err(illegal());
            }
            next.state = S::Active;
        }
        RolloutInput::ClearFailure => {
            if rollout.state != S::Halted {
                return Err(illegal());
            }
            next.state = S::Active;
            next.halt = None;
            for (host, brief) in ctx.records.hostnames().iter().zip(ctx.records.briefs()) {
                if matches!(brief.state, HostState::Failed | HostState::Reverted) && !brief.excused {
                    effects.push(Effect::Excuse { rollout_id: rollout.id.clone(), host: host.clone() });
                }
            }
        }
        RolloutInput::Approve { wave } => {
            let spec = ctx
                .fleet
                .waves(&rollout.channel)
                .get(*wave as usize)
                .ok_or_else(|| RolloutError::NotApplicable(format!("{} has no wave {wave}", rollout.id)))?;
            if !spec.requires_approval {
                return Err(RolloutError::NotApplicable(format!("wave {wave} does not require approval")));
            }
            if !next.approved_waves.insert(*wave) {
                return Err(RolloutError::NotApplicable(format!("wave {wave} is already approved")));
            }
        }
        RolloutInput::AdvanceWave { to, by, force } => {
            let waves = ctx.fleet.waves(&rollout.channel).len() as u32;
            if *to <= rollout.current_wave {
                return Err(RolloutError::NotApplicable(format!(
                    "wave {to} is not after the current wave {}",
                    rollout.current_wave
                )));
            }
            if *to >= waves {
                return Err(RolloutError::NotApplicable(format!(
                    "{} has {waves} waves; there is no wave {to}",
                    rollout.id
                )));
            }
            if !force {
                if *to != rollout.current_wave + 1 {
                    return Err(RolloutError::NotApplicable(format!(
                        "without force a promote goes one wave at a time (to {})",
                        rollout.current_wave + 1
                    )));
                }
                let complete = wave_complete(ctx.fleet, &rollout.channel, rollout.current_wave, ctx.records, |id| {
                    ctx.fleet.host_name(id).is_some_and(|h| ctx.suspended.contains_key(h))
                });
                let allowed = match by {
                    AdvancedBy::Auto => complete == Some(true) && rollout.state == S::Active,
                    // An operator may move past an empty wave; that is what it waits for.
                    AdvancedBy::Operator => complete != Some(false),
                };
                if !allowed {
                    return Err(RolloutError::NotApplicable(format!(
                        "wave {} is not complete; promote with force to override",
                        rollout.current_wave
                    )));
                }
            }
            next.current_wave = *to;
            // The wave left behind is complete: its failures within budget are excused.
            for r in tolerated_failures(ctx.fleet, &rollout.channel, ctx.records, Some(rollout.current_wave)) {
                effects.push(Effect::Excuse { rollout_id: rollout.id.clone(), host: r.hostname.clone() });
            }
            effects.insert(
                0,
                log(
                    &next,
                    LogEntry::WaveAdvanced(log::WaveAdvanced {
                        from: rollout.current_wave,
                        to: *to,
                        by: *by,
                        force: *force,
                    }),
                ),
            );
            return Ok(RolloutTransition { rollout: next, effects });
        }
        RolloutInput::Evaluate => {
            if rollout.state != S::Active {
                return Ok(RolloutTransition { rollout: next, effects });
            }
            let suspended = |r: &HostRecord| !ctx.suspended.is_empty() && ctx.suspended.contains_key(&r.hostname);
            let mut failures = false;
            for (r, brief) in ctx.records.values().zip(ctx.records.briefs()) {
                // Most records: done by their brief alone, without reading the record.
                if brief.state == HostState::Converged || brief.excused {
                    continue;
                }
                let suspended = suspended(r);
                if !lets_complete(r, suspended) {
                    return Ok(RolloutTransition { rollout: next, effects });
                }
                failures |= !suspended;
            }
            if failures {
                let tolerated = tolerated_failures(ctx.fleet, &rollout.channel, ctx.records, None);
                let open = ctx.records.values().filter(|r| r.failure_settled() && !r.excused && !suspended(r)).count();
                if tolerated.len() != open {
                    return Ok(RolloutTransition { rollout: next, effects });
                }
                for r in tolerated {
                    effects.push(Effect::Excuse { rollout_id: rollout.id.clone(), host: r.hostname.clone() });
                }
            }
            next.state = S::Completed;
            next.completed_at = Some(now);
        }
        RolloutInput::Supersede { by } => {
            next.state = S::Superseded;
            next.superseded_by = Some(by.clone());
            withdraw(&mut effects);
        }
    }

    if next.state != rollout.state {
        effects.insert(
            0,
            log(
                &next,
                LogEntry::RolloutStateChanged(log::RolloutStateChanged {
                    from: rollout.state,
                    to: next.state,
                    input: input.kind(),
                    halt: next.halt.clone(),
                    superseded_by: next.superseded_by.clone(),
                }),
            ),
        );
    } else if let RolloutInput::Approve { wave } = input {
        effects.insert(0, log(&next, LogEntry::WaveApproved(log::WaveApproved { wave: *wave })));
    }
    Ok(RolloutTransition { rollout: next, effects })
}
