//! The planner (SPEC §5): from the verified manifests, the fleet state, the quarantines and
//! `now`, decide what to open, which waves advance, what to dispatch and what holds.
//! Deterministic: rollouts by id, hosts by hostname, so equal inputs give equal outputs in
//! equal order.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use shared::log::{self, LogEntry};
use shared::manifest::Selector;
use shared::policy::{Freeze, Suspension};
use shared::state::{AdvancedBy, Gate, Halt, HostState, RolloutState};
use shared::{Channel, Closure, Hostname, RolloutId};

use crate::effect::{Effect, Log};
use crate::fleet::{FastMap, HostFacts, Placement, VerifiedFleet, WaveSpec};
use crate::host::{Dispatch, HostRecord};
use crate::records::{Brief, Records};
use crate::rollout::{Rollout, RolloutInput, wave_complete};
use crate::state::{FleetState, ManifestSet, Quarantines};
use crate::window::Window;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanAction {
    OpenRollout {
        rollout_id: RolloutId,
    },
    AdvanceWave {
        rollout_id: RolloutId,
        to: u32,
    },
    QueueDispatch {
        host: Hostname,
        rollout_id: RolloutId,
        target_closure: Closure,
        soak_seconds: u64,
    },
    Hold {
        host: Hostname,
        rollout_id: RolloutId,
        gate: Gate,
        reason: Arc<str>,
        until: Option<DateTime<Utc>>,
    },
    /// A dispatch the agent has not picked up yet, of a host a freeze, a suspension or a
    /// closed maintenance window now holds: taken back (the next pass holds the host).
    Withdraw {
        host: Hostname,
        rollout_id: RolloutId,
    },
}

/// Heartbeat interval while a host has work (SPEC §6); a stuck host silent for three of
/// them stops counting against budgets.
pub const ACTIVE_HEARTBEAT_SECONDS: i64 = 5;

/// Applies one planner action to `state`. Holds that did not change produce no effect, so a waiting
/// fleet does not flood the event log.
pub fn apply(state: &mut FleetState, set: &ManifestSet, action: &PlanAction, now: DateTime<Utc>) -> Vec<Effect> {
    match action {
        PlanAction::OpenRollout { rollout_id } => state.open_rollout(set, rollout_id, now),
        PlanAction::AdvanceWave { rollout_id, to } => state
            .apply_rollout_input(
                &set.fleet,
                rollout_id,
                &RolloutInput::AdvanceWave { to: *to, by: AdvancedBy::Auto, force: false },
                now,
            )
            .unwrap_or_default(),
        PlanAction::QueueDispatch { host, rollout_id, soak_seconds, target_closure } => {
            let queued = state.records.get_mut(rollout_id).and_then(|r| {
                r.update(host, |record| {
                    record.dispatch = Some(Dispatch { queued_at: now, soak_seconds: *soak_seconds });
                    record.waiting_on = None;
                    record.last_progress_at = now;
                    record.channel.clone()
                })
            });
            let Some(channel) = queued else { return vec![] };
            vec![Effect::Log(Log {
                rollout_id: Some(rollout_id.clone()),
                host: Some(host.clone()),
                channel: Some(channel),
                entry: LogEntry::DispatchQueued(log::DispatchQueued {
                    target_closure: target_closure.clone(),
                    soak_seconds: *soak_seconds,
                }),
            })]
        }
        PlanAction::Hold { host, rollout_id, gate, reason, until } => {
            let held = state.records.get_mut(rollout_id).and_then(|r| {
                r.update(host, |record| {
                    if record.waiting_on.as_ref().is_some_and(|w| w.gate == *gate && w.reason == *reason) {
                        return None;
                    }
                    record.waiting_on = Some(shared::state::WaitingOn {
                        gate: *gate,
                        reason: reason.clone(),
                        since: now,
                        until: *until,
                    });
                    Some(record.channel.clone())
                })
            });
            let Some(channel) = held.flatten() else { return vec![] };
            vec![Effect::Log(Log {
                rollout_id: Some(rollout_id.clone()),
                host: Some(host.clone()),
                channel: Some(channel),
                entry: LogEntry::HostHeld(log::HostHeld { gate: *gate, reason: reason.to_string(), until: *until }),
            })]
        }
        PlanAction::Withdraw { host, rollout_id } => {
            let withdrawn = state.records.get_mut(rollout_id).and_then(|r| {
                r.update(host, |record| {
                    let withdrawn = record.state == HostState::Pending && record.dispatch.take().is_some();
                    if withdrawn {
                        record.last_progress_at = now;
                    }
                    withdrawn
                })
            });
            if withdrawn != Some(true) {
                return vec![];
            }
            vec![Effect::WithdrawDispatch { rollout_id: rollout_id.clone(), host: host.clone() }]
        }
    }
}

/// One plan pass over every rollout.
pub fn plan_next(
    manifests: &ManifestSet,
    state: &FleetState,
    quarantines: &Quarantines,
    now: DateTime<Utc>,
) -> Vec<PlanAction> {
    plan_rollouts(manifests, state, quarantines, now, None)
}

/// A plan pass over the rollouts in `only` (every rollout when `None`). For the rollouts it
/// looks at, the answer equals [`plan_next`]'s: budgets are still counted across the whole
/// fleet (when some host gets that far). Rollouts to open are only looked for in a full pass:
/// what opens depends on the manifests and on which rollouts exist, and only a full pass (after
/// a manifest update) or opening itself changes those.
///
/// The caller decides what a pass may skip: a rollout whose records, rollout, predecessor
/// channels, quarantines and manifests did not change, and that has no host held by a budget,
/// would get no action — except where time alone changes an answer (a dispatch going stale,
/// a stuck host falling silent), which the periodic full pass picks up.
pub fn plan_rollouts(
    manifests: &ManifestSet,
    state: &FleetState,
    quarantines: &Quarantines,
    now: DateTime<Utc>,
    only: Option<&BTreeSet<RolloutId>>,
) -> Vec<PlanAction> {
    plan_pass(manifests, state, quarantines, now, only).actions
}

/// What one pass decided.
#[derive(Debug, Default)]
pub struct Pass {
    pub actions: Vec<PlanAction>,
    /// The rollouts it looked at with a Pending host that the disruption budget blocks: once
    /// the actions are applied, exactly those with a Pending host held by a budget (the pass
    /// saw every such host, so nobody walks the records again to find them).
    pub budget_held: BTreeSet<RolloutId>,
}

/// [`plan_rollouts`], with which rollouts a budget holds.
pub fn plan_pass(
    manifests: &ManifestSet,
    state: &FleetState,
    quarantines: &Quarantines,
    now: DateTime<Utc>,
    only: Option<&BTreeSet<RolloutId>>,
) -> Pass {
    let mut pass = Pass::default();
    let actions = &mut pass.actions;
    if only.is_none() {
        open_rollouts(manifests, state, actions);
    }

    let fleet = &manifests.fleet;
    let rollouts: Box<dyn Iterator<Item = (&RolloutId, &Rollout)>> = match only {
        None => Box::new(state.rollouts.iter()),
        Some(ids) => Box::new(ids.iter().filter_map(|id| state.rollouts.get_key_value(id))),
    };
    // Counted when the first host passes every other gate (most passes never get there).
    let mut in_flight: Option<Vec<u32>> = None;
    let policies = PassPolicies::new(fleet, state, now);
    for (id, rollout) in rollouts {
        if rollout.state.is_terminal() {
            continue;
        }
        let Some(records) = state.records.get(id) else {
            continue;
        };
        let mut current_wave = rollout.current_wave;
        let waves = fleet.waves(&rollout.channel);
        let rollout_policies = policies.for_channel(&rollout.channel);
        if rollout.state == RolloutState::Active
            && (current_wave as usize) + 1 < waves.len()
            && wave_complete(fleet, &rollout.channel, current_wave, records, |id| {
                rollout_policies.suspension(id).is_some()
            }) == Some(true)
        {
            current_wave += 1;
            actions.push(PlanAction::AdvanceWave { rollout_id: id.clone(), to: current_wave });
        }
        let gates = RolloutGates::new(manifests, state, quarantines, rollout_policies, rollout, records, current_wave);
        let mut reasons = Reasons::default();
        let channel_hosts = fleet.channel_facts(&rollout.channel);

        // Each record is first read from its brief and its hostname (dense arrays); the record
        // itself only when the host may get an action.
        let hostnames = records.hostnames();
        for (position, (record, brief)) in records.values().zip(records.briefs()).enumerate() {
            if brief.state != HostState::Pending {
                continue;
            }
            let hostname = &hostnames[position];
            if brief.dispatched {
                // Not picked up yet: a policy that now holds the host takes it back.
                let host_id = channel_hosts.get_with_id(position, hostname).map(|(id, _)| id);
                if let Some(block) = gates.policies.block(host_id, true) {
                    actions.push(PlanAction::Withdraw { host: hostname.clone(), rollout_id: id.clone() });
                    actions.push(block.hold(hostname, id, block.to_string().into()));
                }
                continue;
            }
            let found = channel_hosts.get_with_id(position, hostname);
            let facts = found.map(|(_, facts)| facts);
            let placement = facts.map_or(Placement::Unstaged, |f| f.placement);
            let budgets = facts.map_or(&[][..], |f| f.budgets.as_slice());
            let block = gates.first_block(record, found).or_else(|| {
                let in_flight = in_flight.get_or_insert_with(|| budgets_in_flight(manifests, state, now));
                let b = *budgets.iter().find(|&&b| in_flight[b] >= fleet.doc.disruption_budgets[b].max_in_flight)?;
                let budget = &fleet.doc.disruption_budgets[b];
                Some(Block::Budget { name: &budget.name, in_flight: in_flight[b], max: budget.max_in_flight })
            });
            if let Some(block) = block {
                if matches!(block, Block::Budget { .. }) && !pass.budget_held.contains(id) {
                    pass.budget_held.insert(id.clone());
                }
                // A hold that is already recorded changes nothing: no action (most held hosts
                // wait for a later wave, pass after pass).
                if let Some(reason) = reasons.new_hold(record, brief, &block) {
                    actions.push(block.hold(hostname, id, reason));
                }
                continue;
            }
            if let Some(in_flight) = in_flight.as_mut() {
                for &b in budgets {
                    in_flight[b] += 1;
                }
            }
            let soak_seconds = match placement {
                Placement::Wave(w) => waves.get(w as usize).map_or(0, |s| s.soak_seconds),
                Placement::Unstaged => 0,
            };
            actions.push(PlanAction::QueueDispatch {
                host: hostname.clone(),
                rollout_id: id.clone(),
                target_closure: record.target_closure.clone(),
                soak_seconds,
            });
        }
    }
    pass
}

/// The reasons of one rollout's blocks that do not depend on the host, each rendered once:
/// most held hosts of a rollout wait on the same few (later waves, an approval, a paused
/// rollout), and formatting the reason again for every host was a fifth of a full pass. Each
/// is the reason the rollout's held hosts share once the first of them matched it, so that the
/// next ones compare by pointer: reading every held host's reason from memory was a third of
/// a settled pass.
#[derive(Default)]
struct Reasons {
    rendered: Vec<(SharedBlock, Arc<str>)>,
}

/// A block that reads the same for every host of a rollout.
#[derive(PartialEq, Eq, Clone, Copy)]
enum SharedBlock {
    /// A freeze, by its index in the pass's [`PassPolicies::freezes`].
    Frozen(usize),
    /// A maintenance window, by its index in the fleet.
    Window(usize),
    Paused,
    Halted,
    ChannelEdge,
    Unstaged,
    LaterWave {
        wave: u32,
    },
    Approval {
        wave: u32,
    },
}

impl Reasons {
    /// The reason to hold `record` by `block` with, unless it already waits on `block` (same
    /// gate, same reason); checked without rendering the reason into a new string per host.
    fn new_hold(&mut self, record: &HostRecord, brief: &Brief, block: &Block<'_>) -> Option<Arc<str>> {
        let gate = block.gate();
        let waiting = || record.waiting_on.as_ref().filter(|w| w.gate == gate);
        let Some(key) = block.shared() else {
            let held = waiting().is_some_and(|waiting| match block {
                // Each suspended host is held pass after pass: compared without the formatting.
                Block::Suspended(suspension) => suspension_reads(suspension, &waiting.reason),
                _ => renders_as(block, &waiting.reason),
            });
            return (!held).then(|| block.to_string().into());
        };
        let index = match self.rendered.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.rendered.push((key, block.to_string().into()));
                self.rendered.len() - 1
            }
        };
        let shared = &mut self.rendered[index].1;
        // Most held hosts: the brief says the record holds this very reason.
        if brief.holds(gate, shared) {
            return None;
        }
        match waiting() {
            Some(w) if Arc::ptr_eq(&w.reason, shared) => None,
            Some(w) if w.reason == *shared => {
                *shared = w.reason.clone();
                None
            }
            _ => Some(shared.clone()),
        }
    }
}

/// How a suspended host's hold reads, before who suspended it and why.
const SUSPENDED_BY: &str = "the host is suspended by ";

/// Whether `reason` is the hold reason of `suspension` (what [`Block::Suspended`] displays).
fn suspension_reads(suspension: &Suspension, reason: &str) -> bool {
    let rest = reason.strip_prefix(SUSPENDED_BY).and_then(|r| r.strip_prefix(suspension.by.as_str()));
    rest.and_then(|r| r.strip_prefix(": ")) == Some(suspension.reason.as_str())
}

/// Whether `value` displays exactly as `expected`, compared piece by piece as it is formatted.
fn renders_as(value: &impl fmt::Display, expected: &str) -> bool {
    struct Compare<'a>(&'a str);
    impl fmt::Write for Compare<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let rest = self.0.strip_prefix(s).ok_or(fmt::Error)?;
            self.0 = rest;
            Ok(())
        }
    }
    let mut compare = Compare(expected);
    write!(compare, "{value}").is_ok() && compare.0.is_empty()
}

/// Why a Pending host may not be dispatched yet: its gate, and the reason shown to operators
/// (rendered only when it differs from the hold already recorded).
enum Block<'a> {
    Quarantined {
        closure: &'a Closure,
        channel: &'a Channel,
    },
    Frozen {
        index: usize,
        freeze: &'a Freeze,
    },
    Suspended(&'a Suspension),
    Window {
        index: usize,
        window: &'a Window,
        opens: Option<DateTime<Utc>>,
    },
    Paused,
    Halted(Option<&'a Halt>),
    ChannelEdge(&'a str),
    Unstaged,
    /// The host's wave is not current yet. (Not which wave is: a hold whose reason changed
    /// with every wave advance was rewritten for every later-wave host at each advance.)
    LaterWave {
        wave: u32,
    },
    Approval {
        wave: u32,
    },
    HostEdge {
        gating: &'a Hostname,
        state: HostState,
    },
    Budget {
        name: &'a str,
        in_flight: u32,
        max: u32,
    },
}

impl Block<'_> {
    /// The block as a key, if its reason is the same for every host of the rollout.
    fn shared(&self) -> Option<SharedBlock> {
        Some(match self {
            Block::Paused => SharedBlock::Paused,
            Block::Halted(_) => SharedBlock::Halted,
            Block::ChannelEdge(_) => SharedBlock::ChannelEdge,
            Block::Unstaged => SharedBlock::Unstaged,
            Block::LaterWave { wave } => SharedBlock::LaterWave { wave: *wave },
            Block::Approval { wave } => SharedBlock::Approval { wave: *wave },
            Block::Frozen { index, .. } => SharedBlock::Frozen(*index),
            Block::Window { index, .. } => SharedBlock::Window(*index),
            Block::Quarantined { .. } | Block::Suspended(_) | Block::HostEdge { .. } | Block::Budget { .. } => {
                return None;
            }
        })
    }

    /// The action holding `host` of rollout `id` by this block, for `reason` (how the block
    /// displays).
    fn hold(&self, host: &Hostname, id: &RolloutId, reason: Arc<str>) -> PlanAction {
        PlanAction::Hold { host: host.clone(), rollout_id: id.clone(), gate: self.gate(), reason, until: self.until() }
    }

    /// When the block lifts by itself, if it does.
    fn until(&self) -> Option<DateTime<Utc>> {
        match self {
            Block::Frozen { freeze, .. } => freeze.until,
            Block::Window { opens, .. } => *opens,
            _ => None,
        }
    }

    fn gate(&self) -> Gate {
        match self {
            Block::Quarantined { .. } => Gate::Quarantine,
            Block::Frozen { .. } => Gate::Freeze,
            Block::Suspended(_) => Gate::Suspended,
            Block::Window { .. } => Gate::Window,
            Block::Paused | Block::Halted(_) => Gate::RolloutState,
            Block::ChannelEdge(_) => Gate::ChannelEdge,
            Block::Unstaged | Block::LaterWave { .. } => Gate::Wave,
            Block::Approval { .. } => Gate::Approval,
            Block::HostEdge { .. } => Gate::HostEdge,
            Block::Budget { .. } => Gate::Budget,
        }
    }
}

impl fmt::Display for Block<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::Quarantined { closure, channel } => write!(f, "{closure} is quarantined on channel {channel}"),
            Block::Frozen { freeze, .. } => {
                write!(f, "frozen by {}: {}", freeze.name, freeze.reason)?;
                match (&freeze.by, freeze.until) {
                    (Some(by), Some(until)) => {
                        write!(f, " (set by {by}, until {})", until.format("%Y-%m-%d %H:%M UTC"))
                    }
                    (Some(by), None) => write!(f, " (set by {by}, until released)"),
                    (None, Some(until)) => write!(f, " (signed fleet, until {})", until.format("%Y-%m-%d %H:%M UTC")),
                    (None, None) => f.write_str(" (signed fleet)"),
                }
            }
            Block::Suspended(s) => write!(f, "{SUSPENDED_BY}{}: {}", s.by, s.reason),
            Block::Window { window, opens: Some(at), .. } => write!(
                f,
                "maintenance window {} opens {} {}",
                window.name,
                window.local_label(*at),
                window.timezone.name()
            ),
            Block::Window { window, opens: None, .. } => {
                write!(f, "maintenance window {} does not open in the next two weeks", window.name)
            }
            Block::Paused => f.write_str("the rollout is paused"),
            Block::Halted(None) => f.write_str("the rollout is halted"),
            Block::Halted(Some(h)) => write!(f, "the rollout is halted: {} failed ({})", h.host, h.reason),
            Block::ChannelEdge(reason) => f.write_str(reason),
            Block::Unstaged => f.write_str("unstaged"),
            Block::LaterWave { wave } => write!(f, "waiting for wave {wave}"),
            Block::Approval { wave } => write!(f, "wave {wave} requires approval"),
            Block::HostEdge { gating, state } => write!(f, "waiting for {gating} ({state})"),
            Block::Budget { name, in_flight, max } => write!(f, "budget {name}: {in_flight} of {max} in flight"),
        }
    }
}

/// Every gate but the disruption budget for one Pending record, as heartbeat recovery
/// synthesis needs them (budgets do not apply: the host is already on the target). `None`
/// when nothing holds it.
pub fn evaluate_synth_gates(
    manifests: &ManifestSet,
    state: &FleetState,
    quarantines: &Quarantines,
    record: &HostRecord,
    now: DateTime<Utc>,
) -> Option<(Gate, String)> {
    let rollout = state.rollouts.get(&record.rollout_id)?;
    let records = state.records.get(&record.rollout_id)?;
    let policies = PassPolicies::new(&manifests.fleet, state, now);
    let rollout_policies = policies.for_channel(&rollout.channel);
    let gates =
        RolloutGates::new(manifests, state, quarantines, rollout_policies, rollout, records, rollout.current_wave);
    let block = gates.first_block(record, manifests.fleet.host_with_id(&record.hostname))?;
    Some((block.gate(), block.to_string()))
}

/// The policies of SPEC §17 as they stand at one pass's `now`: which freezes are in force and
/// which hosts they reach, which maintenance windows are closed (and when each opens), who is
/// suspended — grouped by channel, so that each rollout takes only what concerns its channel
/// ([`RolloutPolicies`]) and a rollout nothing concerns looks at none of it per host.
struct PassPolicies<'a> {
    fleet: &'a VerifiedFleet,
    /// Freezes in force, each with its reach.
    freezes: Vec<(Reach<'a>, &'a Freeze)>,
    /// Per fleet window: `None` while open, else when it next opens.
    windows: Vec<Option<Option<DateTime<Utc>>>>,
    any_window_closed: bool,
    /// Suspended hosts as (channel id, host id, suspension), sorted by channel and host (one
    /// allocation; each channel's a slice of it). Ids, not names: comparing names per host was
    /// a quarter of a pass.
    suspended: Vec<(u32, u32, &'a Suspension)>,
}

/// Which hosts a freeze in force reaches.
enum Reach<'a> {
    /// A fleet freeze, by its index: the fleet lists the fleet freezes covering each host.
    Fleet(u16),
    /// The whole fleet (no selector, or `all`).
    Everyone,
    /// An operator's selector: its channel, and the ids of the hosts its host list and tags
    /// pick, by channel id and sorted (worked out once per pass).
    Selector { channel: Option<&'a Channel>, hosts: FastMap<u32, Vec<u32>> },
}

impl<'a> Reach<'a> {
    fn of(fleet: &'a VerifiedFleet, freeze: &'a Freeze) -> Reach<'a> {
        let Some(selector) = &freeze.selector else { return Reach::Everyone };
        if selector.all == Some(true) {
            return Reach::Everyone;
        }
        let mut hosts: FastMap<u32, Vec<u32>> = FastMap::default();
        let mut add = |host: &'a Hostname| {
            if let Some((id, channel)) = fleet.host_ids(host) {
                hosts.entry(channel).or_default().push(id);
            }
        };
        selector.hosts.iter().flatten().for_each(&mut add);
        let by_tags = selector.tags.as_ref().is_some_and(|t| !t.is_empty())
            || selector.tags_any.as_ref().is_some_and(|t| !t.is_empty());
        if by_tags {
            // Tags need every host's entry: one walk of the fleet per pass, only while a
            // freeze by tags is in force.
            let tags_only = Selector { hosts: None, channel: None, all: None, ..selector.clone() };
            for (name, host) in &fleet.doc.hosts {
                if tags_only.matches(name, host) {
                    add(name);
                }
            }
        }
        for list in hosts.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        Reach::Selector { channel: selector.channel.as_ref(), hosts }
    }
}

impl<'a> PassPolicies<'a> {
    fn new(fleet: &'a VerifiedFleet, state: &'a FleetState, now: DateTime<Utc>) -> PassPolicies<'a> {
        let fleet_freezes =
            fleet.freezes.iter().enumerate().filter(|(_, f)| f.in_force(now)).map(|(i, f)| (Reach::Fleet(i as u16), f));
        let operator_freezes =
            state.policies.freezes.iter().filter(|f| f.in_force(now)).map(|f| (Reach::of(fleet, f), f));
        let freezes: Vec<_> = fleet_freezes.chain(operator_freezes).collect();
        let windows: Vec<_> = fleet.windows.iter().map(|w| (!w.is_open(now)).then(|| w.next_open(now))).collect();
        let any_window_closed = windows.iter().any(Option::is_some);
        let mut suspended: Vec<_> = (state.policies.suspended.iter())
            .filter_map(|(host, suspension)| fleet.host_ids(host).map(|(id, channel)| (channel, id, suspension)))
            .collect();
        suspended.sort_unstable_by_key(|&(channel, id, _)| (channel, id));
        PassPolicies { fleet, freezes, windows, any_window_closed, suspended }
    }

    /// What concerns the hosts of `channel`.
    fn for_channel(&'a self, channel: &Channel) -> RolloutPolicies<'a> {
        let id = self.fleet.channel_id(channel);
        let freezes = self
            .freezes
            .iter()
            .enumerate()
            .filter_map(|(index, (reach, freeze))| {
                let reach = match reach {
                    Reach::Everyone => ChannelReach::All,
                    Reach::Fleet(i) => {
                        id.filter(|id| self.fleet.freeze_covers_channel(*i as usize, *id))?;
                        ChannelReach::Fleet(*i)
                    }
                    Reach::Selector { channel: Some(c), .. } if *c == channel => ChannelReach::All,
                    Reach::Selector { hosts, .. } => ChannelReach::Hosts(hosts.get(&id?)?),
                };
                Some((index, reach, *freeze))
            })
            .collect();
        let suspended = id.map_or(&[][..], |id| {
            let start = self.suspended.partition_point(|&(c, _, _)| c < id);
            let end = start + self.suspended[start..].partition_point(|&(c, _, _)| c == id);
            &self.suspended[start..end]
        });
        RolloutPolicies { pass: self, freezes, suspended }
    }

    /// A host covered by windows waits while all of them are closed, for the one that opens
    /// first.
    fn window<'s>(&'s self, id: Option<u32>) -> Option<Block<'s>> {
        if !self.any_window_closed {
            return None;
        }
        let own = self.fleet.host_windows(id?);
        let mut first: Option<(usize, Option<DateTime<Utc>>)> = None;
        for &i in own {
            let opens = *self.windows.get(i as usize)?;
            let opens = opens?; // open now: not held
            if first.is_none_or(|(_, at)| opens.is_some() && (at.is_none() || opens < at)) {
                first = Some((i as usize, opens));
            }
        }
        let (index, opens) = first?;
        Some(Block::Window { index, window: &self.fleet.windows[index], opens })
    }
}

/// How a freeze in force reaches the hosts of one channel.
enum ChannelReach<'a> {
    All,
    /// A fleet freeze: the fleet's list of the host's freezes says.
    Fleet(u16),
    /// The hosts of these ids (sorted).
    Hosts(&'a [u32]),
}

/// The freezes and suspensions that concern one rollout's channel.
struct RolloutPolicies<'a> {
    pass: &'a PassPolicies<'a>,
    /// (index among the pass's freezes, reach, freeze)
    freezes: Vec<(usize, ChannelReach<'a>, &'a Freeze)>,
    /// The channel's slice of [`PassPolicies::suspended`].
    suspended: &'a [(u32, u32, &'a Suspension)],
}

impl<'a> RolloutPolicies<'a> {
    /// The freeze, suspension or (with `windows`) closed window that holds the host the fleet
    /// describes as `facts`, in gate order (the window comes later in the order than the
    /// others).
    fn block<'s>(&'s self, id: Option<u32>, windows: bool) -> Option<Block<'s>> {
        // A host the fleet does not name (a record left from an older fleet) has no id: only
        // freezes of the whole fleet or channel reach it.
        if !self.freezes.is_empty() {
            let own = id.map_or(&[][..], |id| self.pass.fleet.host_freezes(id));
            let frozen = self.freezes.iter().find(|(_, reach, _)| match reach {
                ChannelReach::All => true,
                ChannelReach::Fleet(i) => own.contains(i),
                ChannelReach::Hosts(hosts) => id.is_some_and(|id| hosts.binary_search(&id).is_ok()),
            });
            if let Some(&(index, _, freeze)) = frozen {
                return Some(Block::Frozen { index, freeze });
            }
        }
        if let Some(suspension) = id.and_then(|id| self.suspension(id)) {
            return Some(Block::Suspended(suspension));
        }
        if windows { self.pass.window(id) } else { None }
    }

    /// The suspension of host `id` of this channel, if it is suspended.
    fn suspension(&self, id: u32) -> Option<&'a Suspension> {
        if self.suspended.is_empty() {
            return None;
        }
        let i = self.suspended.binary_search_by_key(&id, |&(_, host, _)| host).ok()?;
        Some(self.suspended[i].2)
    }
}

/// What the gates need to know about one rollout, looked up once per rollout, not per host.
struct RolloutGates<'a> {
    policies: RolloutPolicies<'a>,
    rollout: &'a Rollout,
    records: &'a Records,
    /// The waves of the rollout's channel.
    waves: &'a [WaveSpec],
    current_wave: u32,
    channel_block: Option<String>,
    /// The closures quarantined on the rollout's channel (few).
    quarantined: Vec<&'a Closure>,
}

impl<'a> RolloutGates<'a> {
    fn new(
        manifests: &'a ManifestSet,
        state: &FleetState,
        quarantines: &'a Quarantines,
        policies: RolloutPolicies<'a>,
        rollout: &'a Rollout,
        records: &'a Records,
        current_wave: u32,
    ) -> RolloutGates<'a> {
        let channel = &rollout.channel;
        RolloutGates {
            policies,
            rollout,
            records,
            waves: manifests.fleet.waves(channel),
            current_wave,
            channel_block: channel_edge_block(manifests, state, channel),
            quarantined: quarantines.iter().filter(|(c, _)| c == channel).map(|(_, closure)| closure).collect(),
        }
    }

    /// Every gate but the budget, in order, for a record whose host the fleet describes as
    /// `found` (its id and facts; `None`: a host the fleet does not name); the first that
    /// blocks wins.
    fn first_block<'s>(&'s self, record: &'s HostRecord, found: Option<(u32, &'s HostFacts)>) -> Option<Block<'s>> {
        let (id, facts) = (found.map(|(id, _)| id), found.map(|(_, facts)| facts));
        let placement = facts.map_or(Placement::Unstaged, |f| f.placement);
        let gating = facts.map_or(&[][..], |f| f.gating.as_slice());
        if self.quarantined.contains(&&record.target_closure) {
            return Some(Block::Quarantined { closure: &record.target_closure, channel: &record.channel });
        }
        if let Some(block) = self.policies.block(id, false) {
            return Some(block);
        }
        match self.rollout.state {
            RolloutState::Paused => return Some(Block::Paused),
            RolloutState::Halted => return Some(Block::Halted(self.rollout.halt.as_ref())),
            _ => {}
        }
        if let Some(reason) = &self.channel_block {
            return Some(Block::ChannelEdge(reason));
        }
        let wave = match placement {
            Placement::Unstaged => return Some(Block::Unstaged),
            Placement::Wave(w) if w > self.current_wave => {
                return Some(Block::LaterWave { wave: w });
            }
            Placement::Wave(w) => w,
        };
        let spec = self.waves.get(wave as usize);
        if spec.is_some_and(|s| s.requires_approval) && !self.rollout.approved_waves.contains(&wave) {
            return Some(Block::Approval { wave });
        }
        if let Some(block) = self.policies.pass.window(id) {
            return Some(block);
        }
        for host in gating {
            if let Some(other) = self.records.get(host)
                && !other.done_for_ordering()
            {
                return Some(Block::HostEdge { gating: host, state: other.state });
            }
        }
        None
    }
}

/// Why `channel` may not dispatch because of a predecessor channel, if it may not: a
/// predecessor with a verified manifest whose rollout is not Completed (or has no rollout).
fn channel_edge_block(manifests: &ManifestSet, state: &FleetState, channel: &Channel) -> Option<String> {
    for predecessor in manifests.fleet.predecessors(channel) {
        let Some(newest) = manifests.newest_for(predecessor) else {
            continue;
        };
        let rollout = state.rollouts.get(&newest.id).or_else(|| {
            // A manifest identical to the channel's current rollout opens nothing; that
            // rollout stands for it.
            state.current_rollout(predecessor).filter(|current| manifests.same_host_set(&current.id, &newest.id))
        });
        match rollout {
            Some(r) if r.state == RolloutState::Completed => {}
            Some(r) => {
                return Some(format!("waiting for channel {predecessor}: {} is {}", r.id, r.state));
            }
            None => {
                return Some(format!("waiting for channel {predecessor}: {} has not opened", newest.id));
            }
        }
    }
    None
}

/// `OpenRollout` for the newest manifest of each channel that has no rollout yet, unless its
/// hostSet equals that of the channel's current rollout.
fn open_rollouts(manifests: &ManifestSet, state: &FleetState, actions: &mut Vec<PlanAction>) {
    let mut opens: Vec<&RolloutId> = Vec::new();
    for channel in manifests.fleet.doc.channels.keys() {
        let Some(newest) = manifests.newest_for(channel) else {
            continue;
        };
        if state.rollouts.contains_key(&newest.id) {
            continue;
        }
        if let Some(current) = state.current_rollout(channel)
            && manifests.same_host_set(&current.id, &newest.id)
        {
            continue;
        }
        opens.push(&newest.id);
    }
    opens.sort();
    actions.extend(opens.into_iter().map(|id| PlanAction::OpenRollout { rollout_id: id.clone() }));
}

/// Why the manifest `id` opens no rollout, in words for the operator who uploaded it; `None`
/// when it opens one (or opened one already). Mirrors [`open_rollouts`].
pub fn why_not_opening(manifests: &ManifestSet, state: &FleetState, id: &RolloutId) -> Option<String> {
    let manifest = manifests.get(id)?;
    let channel = &manifest.manifest.channel;
    if state.rollouts.contains_key(id) {
        return None;
    }
    match manifests.newest_for(channel) {
        Some(newest) if &newest.id != id => {
            return Some(format!("{id} opens nothing: {} is the newest release of {channel}", newest.id));
        }
        _ => {}
    }
    let current = state.current_rollout(channel)?;
    manifests
        .same_host_set(&current.id, id)
        .then(|| format!("{id} opens nothing: its hosts and closures are those of {}, which is in force", current.id))
}

/// In-flight hosts per budget (index into `disruptionBudgets`) at the start of a pass:
/// Activating, Soaking, and Pending with a dispatch younger than `stuckAfterMinutes`, across
/// every rollout that is not terminal. A stuck host whose heartbeat is older than three
/// heartbeat intervals no longer counts (SPEC §6).
fn budgets_in_flight(manifests: &ManifestSet, state: &FleetState, now: DateTime<Utc>) -> Vec<u32> {
    let fleet = &manifests.fleet;
    let mut counts = vec![0u32; fleet.doc.disruption_budgets.len()];
    if counts.is_empty() {
        return counts;
    }
    let silent_after = Duration::seconds(3 * ACTIVE_HEARTBEAT_SECONDS);
    for (id, rollout) in &state.rollouts {
        if rollout.state.is_terminal() {
            continue;
        }
        let Some(records) = state.records.get(id) else {
            continue;
        };
        let stuck_after = fleet.stuck_after(&rollout.channel);
        let channel_hosts = fleet.channel_facts(&rollout.channel);
        for (position, (record, brief)) in records.values().zip(records.briefs()).enumerate() {
            let counts_now = match brief.state {
                HostState::Activating | HostState::Soaking => true,
                HostState::Pending if brief.dispatched => {
                    record.dispatch.is_some_and(|d| now - d.queued_at < stuck_after)
                }
                _ => false,
            };
            if !counts_now {
                continue;
            }
            let hostname = &records.hostnames()[position];
            if brief.stuck && state.last_heartbeat.get(hostname).is_none_or(|at| now - *at > silent_after) {
                continue;
            }
            for &b in channel_hosts.get(position, hostname).map_or(&[][..], |f| f.budgets.as_slice()) {
                counts[b] += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspended_hold_is_compared_as_it_displays() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let s = Suspension { reason: "disk: replacement".into(), by: "bob".into(), at };
        let shown = Block::Suspended(&s).to_string();
        assert_eq!(shown, "the host is suspended by bob: disk: replacement");
        assert!(suspension_reads(&s, &shown));
        for other in [
            "the host is suspended by bob: disk: replacement ",
            "the host is suspended by bob: disk",
            "the host is suspended by bo: disk: replacement",
            "the host is suspended by alice: disk: replacement",
            "",
        ] {
            assert!(!suspension_reads(&s, other), "{other}");
        }
        let by_other = Suspension { by: "bob: disk".into(), reason: "replacement".into(), at };
        assert!(suspension_reads(&by_other, &shown), "the same words by another split read the same");
    }
}
