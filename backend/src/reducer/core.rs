//! The reducer's in-memory state and how each input changes it. Nothing here does IO: every
//! change is recorded in a [`Pending`] write set that the task commits in one transaction,
//! and answers are held back until that commit succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use engine::effect::Effect;
use engine::fleet::VerifiedFleet;
use engine::host::HostRecord;
use engine::planner::{PlanAction, evaluate_synth_gates, plan_rollouts};
use engine::rollout::{AdvancedBy, Rollout, RolloutInput};
use engine::state::{FleetState, HostEventError, ManifestSet, Quarantines};
use engine::verify::{Freshness, TrustRoots, verify_fleet, verify_manifest};
use serde::Serialize;
use serde_json::{Value, json};
use shared::agent::{DispatchOrder, EventOutcome, EventResponse, HeartbeatRequest, HeartbeatResponse};
use shared::manifest::SignedArtifact;
use shared::state::{Gate, HostEvent, HostState, RolloutState};
use shared::{Channel, Closure, Hostname, RolloutId};

use super::input::{ManifestSummary, ManifestUpdate, OperatorAction, OperatorOutcome, ReducerError};
use crate::db::store::{
    self, Batch, Loaded, LogEntry, LogRow, ManifestWrite, QuarantineChange, QuarantineRow, RecordRow,
};

/// Heartbeat interval while a host has work, and when it has none (SPEC §6).
pub const ACTIVE_HEARTBEAT_SECONDS: u64 = engine::planner::ACTIVE_HEARTBEAT_SECONDS as u64;
pub const IDLE_HEARTBEAT_SECONDS: u64 = 30;
/// Presence rows are rewritten at most this often for an unchanged host.
const PRESENCE_PERSIST_EVERY: i64 = 60;

/// The fleet the agent routes authenticate against; replaced when a new fleet verifies.
pub type SharedFleet = Arc<RwLock<Option<Arc<VerifiedFleet>>>>;

#[derive(Debug, Clone)]
struct Presence {
    at: DateTime<Utc>,
    closure: Option<Closure>,
    persisted_at: Option<DateTime<Utc>>,
    online: bool,
}

/// What one group of inputs changed, to be committed together.
#[derive(Default)]
pub struct Pending {
    rollouts: BTreeSet<RolloutId>,
    records: BTreeSet<(RolloutId, Hostname)>,
    opened: BTreeSet<RolloutId>,
    log: Vec<LogRow>,
    /// Each record as its last log row in this group carries it.
    logged_records: HashMap<(RolloutId, Hostname), HostRecord>,
    quarantines: Vec<QuarantineChange>,
    presence: BTreeSet<Hostname>,
    manifests: Option<ManifestWrite>,
    /// A plan pass over every rollout is due before commit (plan tick, manifests, operator
    /// actions, quarantines).
    pub replan: bool,
    /// Rollouts in which a host changed state: they (and what they can unblock) are planned
    /// before commit.
    moved: BTreeSet<RolloutId>,
}

impl Pending {
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Whether a plan pass is due before this group commits.
    pub fn plan_due(&self) -> bool {
        self.replan || !self.moved.is_empty()
    }
}

pub struct Core {
    trust: Option<TrustRoots>,
    /// Shared so that each input can hold it while changing the rest of the state; a new
    /// set replaces it whole. (Cloning the set itself per input cost milliseconds at 10k hosts.)
    set: Option<Arc<ManifestSet>>,
    fleet_artifact: Option<SignedArtifact>,
    manifest_artifacts: BTreeMap<RolloutId, SignedArtifact>,
    pub state: FleetState,
    quarantines: Quarantines,
    presence: HashMap<Hostname, Presence>,
    shared_fleet: SharedFleet,
    /// Which rollouts in memory have a record of each host; rebuilt (when `None`) after the
    /// set of rollouts in memory changed, so a heartbeat looks at its host's rollouts only
    /// instead of every open rollout.
    rollouts_of_host: Option<HashMap<Hostname, Vec<RolloutId>>>,
    /// Each rollout as last handed to the writer: a host event marks its rollout touched, but
    /// the row is only rewritten when the rollout itself changed (most events change only the
    /// record, and every rewritten row is another page in the transaction).
    written_rollouts: HashMap<RolloutId, Rollout>,
    /// Rollouts with a Pending host held by a disruption budget: a host moving anywhere can
    /// free their budget, so every pass looks at them.
    budget_held: BTreeSet<RolloutId>,
    /// Records whose newest state so far only the event log holds (see [`RecordRow`]), and
    /// when every record was last written.
    unwritten: BTreeSet<(RolloutId, Hostname)>,
    records_written_at: Option<DateTime<Utc>>,
}

/// Deferred records are written once this many are waiting, or this long after the last
/// time they all were (and before their rollout ends, and when the reducer stops).
const UNWRITTEN_AT_MOST: usize = 4096;
const WRITE_RECORDS_EVERY: Duration = Duration::seconds(2);

fn rejected(code: &'static str, message: impl Into<String>) -> ReducerError {
    ReducerError::Rejected { code, message: message.into() }
}

impl Core {
    /// Rebuilds memory from the database. The persisted manifest set is re-verified for
    /// signature and consistency (not freshness); if it no longer verifies, it is dropped
    /// with an error in the log and the control plane waits for a new upload.
    pub fn from_loaded(
        loaded: Loaded,
        trust: Option<TrustRoots>,
        shared_fleet: SharedFleet,
        now: DateTime<Utc>,
    ) -> Core {
        let mut core = Core {
            trust,
            set: None,
            fleet_artifact: None,
            manifest_artifacts: BTreeMap::new(),
            state: FleetState::default(),
            quarantines: Quarantines::new(),
            presence: HashMap::new(),
            shared_fleet,
            rollouts_of_host: None,
            written_rollouts: HashMap::new(),
            budget_held: BTreeSet::new(),
            unwritten: BTreeSet::new(),
            records_written_at: None,
        };
        if let Some(fleet_artifact) = loaded.fleet {
            match core.reverify(&fleet_artifact, &loaded.manifests, now) {
                Ok(set) => {
                    core.fleet_artifact = Some(fleet_artifact);
                    core.manifest_artifacts = loaded.manifests.into_iter().collect();
                    core.install_set(set);
                }
                Err(err) => {
                    tracing::error!(%err, "the persisted manifest set no longer verifies; waiting for a new upload")
                }
            }
        }
        for rollout in loaded.rollouts {
            core.written_rollouts.insert(rollout.id.clone(), rollout.clone());
            core.state.rollouts.insert(rollout.id.clone(), rollout);
        }
        for record in loaded.records {
            core.state.records.entry(record.rollout_id.clone()).or_default().insert(record.hostname.clone(), record);
        }
        for q in loaded.quarantines {
            core.quarantines.insert((q.channel, q.closure));
        }
        for (host, at, closure) in loaded.presence {
            core.state.last_heartbeat.insert(host.clone(), at);
            core.presence.insert(host, Presence { at, closure, persisted_at: Some(at), online: true });
        }
        core.note_budget_holds(None);
        core
    }

    fn reverify(
        &self,
        fleet: &SignedArtifact,
        manifests: &[(RolloutId, SignedArtifact)],
        now: DateTime<Utc>,
    ) -> Result<ManifestSet, String> {
        let trust = self.trust.as_ref();
        let verified = verify_fleet(trust, fleet, now, Freshness::Skip).map_err(|e| format!("fleet: {e}"))?;
        let mut out = Vec::new();
        for (id, artifact) in manifests {
            out.push(
                verify_manifest(trust, artifact, &verified, Some(id), now, Freshness::Skip)
                    .map_err(|e| format!("{id}: {e}"))?,
            );
        }
        Ok(ManifestSet::new(verified, out))
    }

    fn install_set(&mut self, set: ManifestSet) {
        if let Ok(mut shared) = self.shared_fleet.write() {
            *shared = Some(set.fleet.clone());
        }
        self.set = Some(Arc::new(set));
    }

    pub fn trust(&self) -> Option<&TrustRoots> {
        self.trust.as_ref()
    }

    pub fn current_fleet(&self) -> Option<&VerifiedFleet> {
        self.set.as_ref().map(|s| s.fleet.as_ref())
    }

    // ---- recording changes ----

    fn log(&mut self, pending: &mut Pending, now: DateTime<Utc>, entry: engine::effect::LogEntry) {
        // The record (or rollout) after the change rides along, rendered straight into the
        // payload's JSON: the text is stored, fed to clients and served as it is.
        #[derive(Serialize)]
        struct With<'a> {
            #[serde(flatten)]
            base: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            record: Option<&'a HostRecord>,
            #[serde(skip_serializing_if = "Option::is_none")]
            rollout: Option<&'a Rollout>,
        }
        let base = &entry.payload;
        let payload = if let (Some(rollout), Some(host)) = (&entry.rollout_id, &entry.host) {
            let key = (rollout.clone(), host.clone());
            pending.records.insert(key.clone());
            pending.rollouts.insert(rollout.clone());
            match self.state.record(rollout, host).filter(|_| base.is_object()) {
                Some(record) => {
                    pending.logged_records.insert(key, record.clone());
                    store::payload(&With { base, record: Some(record), rollout: None })
                }
                None => store::payload(base),
            }
        } else if let Some(rollout) = &entry.rollout_id {
            pending.rollouts.insert(rollout.clone());
            match self.state.rollouts.get(rollout).filter(|_| base.is_object()) {
                Some(r) => store::payload(&With { base, record: None, rollout: Some(r) }),
                None => store::payload(base),
            }
        } else {
            store::payload(base)
        };
        pending.log.push(LogRow {
            ts: now,
            kind: entry.kind,
            rollout_id: entry.rollout_id,
            host: entry.host,
            channel: entry.channel,
            payload,
        });
    }

    fn system_log(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        kind: &'static str,
        channel: Option<Channel>,
        payload: Value,
    ) {
        pending.log.push(LogRow {
            ts: now,
            kind,
            rollout_id: None,
            host: None,
            channel,
            payload: store::payload(&payload),
        });
    }

    /// Turns engine effects into writes; quarantines requested by rollbacks take effect here.
    fn absorb(&mut self, pending: &mut Pending, now: DateTime<Utc>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Log(entry) => self.log(pending, now, entry),
                // A host that moved can unblock waves, host edges and budgets, or halt a
                // rollout: plan again before this group commits.
                Effect::HostStateChanged { rollout_id, .. } => {
                    pending.moved.insert(rollout_id);
                }
                Effect::Quarantine { channel, closure, reason } => {
                    self.add_quarantine(pending, now, channel, closure, reason, "fleetwave".into());
                }
                Effect::WithdrawDispatch { rollout_id, host } => {
                    self.log_record_change(pending, now, "DispatchWithdrawn", rollout_id, host);
                }
                Effect::Excuse { rollout_id, host } => {
                    self.log_record_change(pending, now, "HostExcused", rollout_id, host)
                }
            }
        }
    }

    /// A record changed without an event of its own (withdrawn dispatch, excused): one log row
    /// carrying the record, like every other change.
    fn log_record_change(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        kind: &'static str,
        rollout_id: RolloutId,
        host: Hostname,
    ) {
        let channel = self.state.record(&rollout_id, &host).map(|r| r.channel.clone());
        let entry = engine::effect::LogEntry {
            kind,
            rollout_id: Some(rollout_id),
            host: Some(host),
            channel,
            payload: json!({}),
        };
        self.log(pending, now, entry);
    }

    fn add_quarantine(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        channel: Channel,
        closure: Closure,
        reason: String,
        by: String,
    ) -> bool {
        let key = (channel.clone(), closure.clone());
        if !self.quarantines.insert(key.clone()) {
            return false;
        }
        let row = QuarantineRow {
            channel: channel.clone(),
            closure: closure.clone(),
            reason: reason.clone(),
            by: by.clone(),
            at: now,
            released_at: None,
            released_by: None,
            release_reason: None,
        };
        pending.quarantines.push(QuarantineChange::Add(row));
        self.system_log(
            pending,
            now,
            "QuarantineAdded",
            Some(channel.clone()),
            json!({ "closure": closure, "reason": reason, "by": by }),
        );
        // Dispatches not yet picked up are withdrawn, and the Pending hosts of this closure are
        // held, in this same transaction.
        let withdrawn = self.state.withdraw_dispatches_of(&channel, &closure, now);
        self.absorb(pending, now, withdrawn);
        pending.replan = true;
        true
    }

    // ---- inputs ----

    pub fn host_event(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        host: &Hostname,
        rollout_id: &RolloutId,
        event: &HostEvent,
    ) -> Result<EventResponse, ReducerError> {
        let Some(set) = self.set.clone() else {
            return Err(ReducerError::Unavailable("No verified fleet yet.".into()));
        };
        let fleet = &set.fleet;
        match self.state.apply_host_event(fleet, rollout_id, host, event, now) {
            Ok(effects) => {
                self.absorb(pending, now, effects);
                let state = self.state.record(rollout_id, host).map_or(HostState::Pending, |r| r.state);
                Ok(EventResponse { outcome: EventOutcome::Applied, state })
            }
            Err(HostEventError::Transition(engine::host::TransitionError::Duplicate { .. })) => {
                let state = self.state.record(rollout_id, host).map_or(HostState::Pending, |r| r.state);
                Ok(EventResponse { outcome: EventOutcome::Duplicate, state })
            }
            Err(HostEventError::UnknownRecord { .. }) => {
                Err(rejected("unknown-record", format!("{host} has no open record in rollout {rollout_id}.")))
            }
            Err(HostEventError::Transition(err @ engine::host::TransitionError::TooMany(_))) => {
                Err(ReducerError::Invalid { code: err.code(), message: err.to_string() })
            }
            Err(HostEventError::Transition(err)) => Err(rejected(err.code(), err.to_string())),
        }
    }

    /// Non-terminal records of `host` in rollouts that are not terminal, by rollout id.
    fn open_records_of(&mut self, host: &Hostname) -> Vec<(RolloutId, HostState)> {
        let index = self.rollouts_of_host.get_or_insert_with(|| {
            let mut index: HashMap<Hostname, Vec<RolloutId>> = HashMap::new();
            for (id, records) in &self.state.records {
                for host in records.keys() {
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

    pub fn heartbeat(&mut self, pending: &mut Pending, now: DateTime<Utc>, hb: &HeartbeatRequest) -> HeartbeatResponse {
        let host = &hb.hostname;
        self.note_presence(pending, now, host, hb.current_closure.clone());

        if let (Some(set), Some(current)) = (self.set.clone(), &hb.current_closure) {
            self.synthesise(pending, now, &set, hb, current);
        }

        let replay_from = match (&hb.rollout_id, hb.last_event_seq) {
            (Some(rollout), Some(agent_seq)) => {
                self.state.record(rollout, host).map(|r| r.last_event_seq).filter(|ours| agent_seq > *ours)
            }
            _ => None,
        };
        let open = self.open_records_of(host);
        let bootstrap = if hb.rollout_id.is_none() {
            let fleet = self.set.as_ref().map(|set| &*set.fleet);
            open.iter()
                .filter_map(|(id, _)| self.state.record(id, host))
                .map(|record| FleetState::agent_snapshot(fleet, record))
                .collect()
        } else {
            Vec::new()
        };
        let dispatch = open.iter().find_map(|(id, _)| {
            let record = self.state.record(id, host)?;
            let d = record.dispatch.filter(|_| record.state == HostState::Pending)?;
            if self.quarantines.contains(&(record.channel.clone(), record.target_closure.clone())) {
                return None;
            }
            Some(DispatchOrder {
                rollout_id: id.clone(),
                target_closure: record.target_closure.clone(),
                soak_seconds: d.soak_seconds,
                on_health_failure: self.set.as_ref()?.fleet.on_health_failure(&record.channel),
            })
        });
        let busy = open.iter().any(|(_, state)| !state.is_terminal());
        HeartbeatResponse {
            received_at: now,
            replay_from,
            bootstrap,
            dispatch,
            next_heartbeat_seconds: if busy { ACTIVE_HEARTBEAT_SECONDS } else { IDLE_HEARTBEAT_SECONDS },
        }
    }

    fn note_presence(&mut self, pending: &mut Pending, now: DateTime<Utc>, host: &Hostname, closure: Option<Closure>) {
        self.state.last_heartbeat.insert(host.clone(), now);
        let entry = self.presence.entry(host.clone()).or_insert(Presence {
            at: now,
            closure: None,
            persisted_at: None,
            online: false,
        });
        let came_online = !entry.online;
        let closure_changed = entry.closure != closure;
        entry.at = now;
        entry.closure = closure.clone();
        entry.online = true;
        let stale = entry.persisted_at.is_none_or(|p| now - p >= Duration::seconds(PRESENCE_PERSIST_EVERY));
        if came_online || closure_changed || stale {
            entry.persisted_at = Some(now);
            pending.presence.insert(host.clone());
        }
        if came_online {
            pending.log.push(LogRow {
                ts: now,
                kind: "HostOnline",
                rollout_id: None,
                host: Some(host.clone()),
                channel: None,
                payload: store::payload(&json!({ "currentClosure": closure })),
            });
        }
    }

    /// Recovery synthesis (SPEC §6 Heartbeat step 2).
    fn synthesise(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        set: &ManifestSet,
        hb: &HeartbeatRequest,
        current: &Closure,
    ) {
        let host = &hb.hostname;
        let no_rollout_named = hb.rollout_id.is_none();
        for (rollout_id, state) in self.open_records_of(host) {
            let Some(record) = self.state.record(&rollout_id, host) else { continue };
            if &record.target_closure != current {
                continue;
            }
            // The agent has sent events of this record the control plane has not applied yet
            // (in flight, or to be replayed): synthesising would take seqs it already used.
            let in_flight = hb.rollout_id.as_ref() == Some(&rollout_id)
                && hb.last_event_seq.is_some_and(|agent| agent > record.last_event_seq);
            if in_flight {
                continue;
            }
            let seq = record.last_event_seq;
            let completed =
                json!({ "kind": "ActivationCompleted", "observedClosure": current, "exitCode": 0, "completedAt": now });
            let events: Vec<Value> = match state {
                HostState::Activating | HostState::Deferred => vec![completed],
                HostState::Pending => {
                    if evaluate_synth_gates(set, &self.state, &self.quarantines, record).is_some() {
                        continue;
                    }
                    vec![json!({ "kind": "DispatchAck", "currentClosure": current, "receivedAt": now }), completed]
                }
                HostState::Soaking
                    if no_rollout_named
                        && record.soak_due_at.is_some_and(|due| due <= now)
                        && record.enforce_probes_pass() =>
                {
                    vec![json!({ "kind": "Converged", "convergedAt": now, "currentClosure": current })]
                }
                _ => continue,
            };
            for (i, mut event) in events.into_iter().enumerate() {
                // Agents' seqs are bounded at parse time (`shared::limits::MAX_SEQ`); a record
                // loaded from an older database may still carry a larger one: stop, never wrap.
                let Some(next) = seq.checked_add(1 + i as u64).filter(|s| *s <= shared::limits::MAX_SEQ) else {
                    tracing::warn!(%host, %rollout_id, seq, "recovery synthesis stopped: the record's seq is at its limit");
                    break;
                };
                event["seq"] = json!(next);
                let Ok(event) = serde_json::from_value::<HostEvent>(event) else { break };
                match self.state.apply_host_event(&set.fleet, &rollout_id, host, &event, now) {
                    Ok(mut effects) => {
                        for effect in &mut effects {
                            if let Effect::Log(entry) = effect
                                && let Value::Object(map) = &mut entry.payload
                            {
                                map.insert("synthesized".into(), json!(true));
                            }
                        }
                        self.absorb(pending, now, effects);
                    }
                    Err(err) => {
                        tracing::debug!(%host, %rollout_id, %err, "recovery synthesis stopped");
                        break;
                    }
                }
            }
        }
    }

    /// A verified upload or manifests-dir set. Refused with `older-than-current` (SPEC §2.4)
    /// when its fleet was signed before the fleet in force, or one of its manifests before the
    /// newest release of its channel in force: a replay of an old but still fresh artifact
    /// must not roll anything back. Between equal `signedAt`, the one accepted later wins.
    pub fn manifests(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        update: ManifestUpdate,
    ) -> Result<ManifestSummary, ReducerError> {
        let ManifestUpdate { set, fleet_artifact, manifest_artifacts } = update;
        let older = |message: String| ReducerError::Invalid { code: "older-than-current", message };
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
        // Same fleet: the upload adds to (or replaces) the manifests already in force, after
        // them in acceptance order. A new fleet: the upload is the whole new set.
        let same_fleet = self.set.as_ref().is_some_and(|s| s.fleet.hash == set.fleet.hash);
        let set = match &self.set {
            Some(old) if same_fleet => {
                let merged: Vec<_> = old.in_acceptance_order().chain(set.in_acceptance_order()).cloned().collect();
                self.manifest_artifacts.extend(manifest_artifacts);
                ManifestSet::new(set.fleet.clone(), merged)
            }
            _ => {
                self.manifest_artifacts = manifest_artifacts.into_iter().collect();
                set
            }
        };
        let opens_nothing =
            uploaded.iter().filter_map(|id| engine::planner::why_not_opening(&set, &self.state, id)).collect();
        let summary = ManifestSummary {
            fleet_hash: set.fleet.hash.clone(),
            hosts: set.fleet.doc.hosts.len(),
            channels: set.fleet.doc.channels.len(),
            rollouts: set.iter().map(|m| m.id.clone()).collect(),
            opens_nothing,
        };
        pending.manifests = Some(ManifestWrite {
            fleet: fleet_artifact.clone(),
            fleet_hash: set.fleet.hash.clone(),
            manifests: set
                .in_acceptance_order()
                .filter_map(|m| self.manifest_artifacts.get(&m.id).map(|a| (m.id.clone(), a.clone())))
                .collect(),
            at: now,
        });
        self.fleet_artifact = Some(fleet_artifact);
        self.install_set(set);
        self.system_log(pending, now, "ManifestSetUpdated", None, json!(summary));
        pending.replan = true;
        Ok(summary)
    }

    pub fn operator(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        action: &OperatorAction,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(usize, String), ReducerError> {
        // As for agents (SPEC §9.1): no verified fleet yet is "not ready", 503.
        let Some(set) = self.set.clone() else {
            return Err(ReducerError::Unavailable("There is no verified fleet yet: upload one first.".into()));
        };
        let reason_text = reason.unwrap_or("").to_owned();
        let rollout_input = |a: &OperatorAction| -> Option<(RolloutId, RolloutInput)> {
            Some(match a {
                OperatorAction::ApproveWave { rollout_id, wave } => {
                    (rollout_id.clone(), RolloutInput::Approve { wave: *wave })
                }
                OperatorAction::Promote { rollout_id, to_wave, force } => (
                    rollout_id.clone(),
                    RolloutInput::AdvanceWave { to: *to_wave, by: AdvancedBy::Operator, force: *force },
                ),
                OperatorAction::Pause { rollout_id } => (rollout_id.clone(), RolloutInput::Pause),
                OperatorAction::Resume { rollout_id } => (rollout_id.clone(), RolloutInput::Resume),
                OperatorAction::ClearFailure { rollout_id } => (rollout_id.clone(), RolloutInput::ClearFailure),
                _ => return None,
            })
        };
        let (rollout_id, channel, message) = if let Some((id, input)) = rollout_input(action) {
            if !self.state.rollouts.contains_key(&id) {
                return Err(rejected("unknown-rollout", format!("There is no rollout {id}.")));
            }
            let effects = self
                .state
                .apply_rollout_input(&set.fleet, &id, &input, now)
                .map_err(|e| rejected("not-applicable", e.to_string()))?;
            self.absorb(pending, now, effects);
            let channel = self.state.rollouts.get(&id).map(|r| r.channel.clone());
            (Some(id.clone()), channel, format!("{} applied to {id}", input.name()))
        } else {
            match action {
                OperatorAction::Quarantine { channel, closure } => {
                    if !set.fleet.doc.channels.contains_key(channel) {
                        return Err(rejected("unknown-channel", format!("There is no channel {channel}.")));
                    }
                    let why = if reason_text.is_empty() { format!("quarantined by {by}") } else { reason_text.clone() };
                    if !self.add_quarantine(pending, now, channel.clone(), closure.clone(), why, by.to_owned()) {
                        return Err(rejected(
                            "already-quarantined",
                            format!("{closure} is already quarantined on {channel}."),
                        ));
                    }
                    (None, Some(channel.clone()), format!("{closure} quarantined on {channel}"))
                }
                OperatorAction::Release { channel, closure } => {
                    let key = (channel.clone(), closure.clone());
                    if !self.quarantines.remove(&key) {
                        return Err(rejected("not-quarantined", format!("{closure} is not quarantined on {channel}.")));
                    }
                    pending.quarantines.push(QuarantineChange::Release {
                        channel: channel.clone(),
                        closure: closure.clone(),
                        by: by.to_owned(),
                        reason: reason_text.clone(),
                        at: now,
                    });
                    self.system_log(
                        pending,
                        now,
                        "QuarantineReleased",
                        Some(channel.clone()),
                        json!({ "closure": closure, "by": by, "reason": reason_text }),
                    );
                    (None, Some(channel.clone()), format!("{closure} released on {channel}"))
                }
                _ => unreachable!("rollout actions are handled above"),
            }
        };
        let index = pending.log.len();
        let forced = matches!(action, OperatorAction::Promote { force: true, .. });
        pending.log.push(LogRow {
            ts: now,
            kind: "OperatorAction",
            rollout_id: rollout_id.clone(),
            host: None,
            channel,
            payload: store::payload(&json!({ "action": action, "operator": by, "reason": reason, "override": forced })),
        });
        if let Some(id) = rollout_id {
            pending.rollouts.insert(id);
        }
        pending.replan = true;
        Ok((index, message))
    }

    pub fn operator_outcome(entries: &[LogEntry], index: usize, message: String) -> OperatorOutcome {
        OperatorOutcome { seq: entries.get(index).map_or(0, |e| e.seq), message }
    }

    /// A plan pass: planner actions and completion checks, again at once when a rollout
    /// opened or completed (a successor channel may go on). After a plan tick, manifests,
    /// operator actions or quarantines it covers every rollout and also flags stuck hosts and
    /// takes silent hosts offline (both depend on time alone); when only hosts moved, it covers
    /// the rollouts they moved in and those they can unblock ([`Core::moved_scope`]), so its
    /// cost follows what changed, not the fleet's size. Returns whether it covered everything.
    pub fn plan(&mut self, pending: &mut Pending, now: DateTime<Utc>) -> bool {
        let Some(set) = self.set.clone() else { return pending.replan };
        let full = pending.replan;
        if full {
            let stuck = self.state.detect_stuck(&set.fleet, now);
            self.absorb(pending, now, stuck);
        }
        for _ in 0..4 {
            let scope = (!full).then(|| self.moved_scope(&set, pending));
            let actions = plan_rollouts(&set, &self.state, &self.quarantines, now, scope.as_ref());
            let mut again = false;
            for action in &actions {
                if let PlanAction::OpenRollout { rollout_id } = action {
                    again = true;
                    self.rollouts_of_host = None;
                    pending.opened.insert(rollout_id.clone());
                }
                let effects = self.state.apply_action(&set, action, now);
                self.absorb(pending, now, effects);
            }
            let active: Vec<RolloutId> = self
                .state
                .rollouts
                .iter()
                .filter(|(id, r)| r.state == RolloutState::Active && scope.as_ref().is_none_or(|s| s.contains(*id)))
                .map(|(id, _)| id.clone())
                .collect();
            for id in active {
                if let Ok(effects) = self.state.apply_rollout_input(&set.fleet, &id, &RolloutInput::Evaluate, now) {
                    again |= self.state.rollouts.get(&id).is_some_and(|r| r.state == RolloutState::Completed);
                    self.absorb(pending, now, effects);
                }
            }
            self.note_budget_holds(scope.as_ref());
            if !again {
                break;
            }
        }
        if full {
            self.mark_offline(pending, now);
        }
        full
    }

    /// What a pass after hosts moved must look at: the rollouts they moved in and rollouts
    /// opened in this group, every rollout with a host held by a budget (a host leaving
    /// Activating or Soaking frees budget anywhere), and the rollouts of channels gated by the
    /// channels of those rollouts (one may have completed). Nothing else can have an action:
    /// their records, gates and wave state did not change.
    fn moved_scope(&self, set: &ManifestSet, pending: &Pending) -> BTreeSet<RolloutId> {
        let mut scope: BTreeSet<RolloutId> = pending.moved.iter().chain(&pending.opened).cloned().collect();
        scope.extend(self.budget_held.iter().cloned());
        let channels: BTreeSet<&Channel> =
            scope.iter().filter_map(|id| self.state.rollouts.get(id)).map(|r| &r.channel).collect();
        let gated: Vec<&Channel> =
            set.fleet.doc.channel_edges.iter().filter(|e| channels.contains(&e.gates)).map(|e| &e.gated).collect();
        for channel in gated {
            if let Some(rollout) = self.state.current_rollout(channel) {
                scope.insert(rollout.id.clone());
            }
        }
        scope
    }

    /// Re-reads which of the rollouts in `scope` (every rollout when `None`) have a Pending host
    /// held by a budget.
    fn note_budget_holds(&mut self, scope: Option<&BTreeSet<RolloutId>>) {
        let ids: Vec<RolloutId> = match scope {
            Some(ids) => ids.iter().cloned().collect(),
            None => {
                self.budget_held.clear();
                self.state.records.keys().cloned().collect()
            }
        };
        for id in ids {
            let held = self.state.rollouts.get(&id).is_some_and(|r| !r.state.is_terminal())
                && self.state.records.get(&id).is_some_and(|records| {
                    records.values().any(|r| {
                        r.state == HostState::Pending
                            && r.dispatch.is_none()
                            && r.waiting_on.as_ref().is_some_and(|w| w.gate == Gate::Budget)
                    })
                });
            if held {
                self.budget_held.insert(id);
            } else {
                self.budget_held.remove(&id);
            }
        }
    }

    /// Hosts silent for three heartbeat intervals go offline (the active interval if the host
    /// has an open record, the idle one otherwise).
    fn mark_offline(&mut self, pending: &mut Pending, now: DateTime<Utc>) {
        let active = Duration::seconds(3 * ACTIVE_HEARTBEAT_SECONDS as i64);
        let idle = Duration::seconds(3 * IDLE_HEARTBEAT_SECONDS as i64);
        // Only hosts silent longer than the shorter limit can be going offline.
        let silent: Vec<Hostname> =
            self.presence.iter().filter(|(_, p)| p.online && now - p.at > active).map(|(h, _)| h.clone()).collect();
        let mut gone = Vec::new();
        for host in silent {
            let limit = if self.open_records_of(&host).is_empty() { idle } else { active };
            if let Some(p) = self.presence.get_mut(&host)
                && now - p.at > limit
            {
                p.online = false;
                gone.push((host, p.at));
            }
        }
        gone.sort();
        for (host, last) in gone {
            pending.log.push(LogRow {
                ts: now,
                kind: "HostOffline",
                rollout_id: None,
                host: Some(host),
                channel: None,
                payload: store::payload(&json!({ "lastHeartbeatAt": last })),
            });
        }
    }

    /// The rows to write for what `pending` touched, taken from memory as it is now.
    /// `stopping`: the last batch; every deferred record is written.
    pub fn batch(&mut self, pending: Pending, now: DateTime<Utc>, stopping: bool) -> Batch {
        let mut batch = Batch::default();
        let mut rollouts = pending.rollouts;
        rollouts.extend(pending.opened.iter().cloned());
        rollouts.extend(pending.records.iter().map(|(r, _)| r.clone()));
        for id in &rollouts {
            let Some(rollout) = self.state.rollouts.get(id) else { continue };
            if self.written_rollouts.get(id) != Some(rollout) {
                self.written_rollouts.insert(id.clone(), rollout.clone());
                batch.rollouts.push(rollout.clone());
            }
        }
        // A record whose last log row in this group carries it as it is now is written later
        // (the row is its state until then); one that changed after its row, or has none, now.
        let mut records: BTreeMap<(RolloutId, Hostname), RecordRow> = BTreeMap::new();
        let mut write_all = stopping || batch.rollouts.iter().any(|r| r.state.is_terminal());
        for key in pending.records {
            let Some(record) = self.state.record(&key.0, &key.1) else { continue };
            match pending.logged_records.get(&key) {
                Some(logged) if logged == record => {
                    self.unwritten.insert(key);
                }
                logged => {
                    // An older state of it is in the log's tail: only a full write puts the
                    // table ahead of the tail again.
                    write_all |= logged.is_some() || self.unwritten.contains(&key);
                    records.insert(key, RecordRow::new(record));
                }
            }
        }
        for id in &pending.opened {
            for (host, record) in self.state.records.get(id).into_iter().flatten() {
                let key = (id.clone(), host.clone());
                if !records.contains_key(&key) && !self.unwritten.contains(&key) {
                    records.insert(key, RecordRow::new(record));
                }
            }
        }
        let due = self.records_written_at.is_none_or(|at| now - at >= WRITE_RECORDS_EVERY);
        if write_all || self.unwritten.len() >= UNWRITTEN_AT_MOST || (due && !self.unwritten.is_empty()) {
            for key in std::mem::take(&mut self.unwritten) {
                if let Some(record) = self.state.record(&key.0, &key.1) {
                    records.insert(key, RecordRow::new(record));
                }
            }
            batch.records_through = true;
            self.records_written_at = Some(now);
        }
        batch.records = records.into_values().collect();
        batch.quarantines = pending.quarantines;
        batch.presence = pending
            .presence
            .into_iter()
            .filter_map(|h| self.presence.get(&h).map(|p| (h, p.at, p.closure.clone())))
            .collect();
        batch.manifests = pending.manifests;
        batch.log = pending.log;
        batch
    }

    /// After a commit: records of terminal rollouts leave memory (the DB keeps them).
    pub fn prune(&mut self) {
        let done: Vec<RolloutId> =
            self.state.rollouts.iter().filter(|(_, r)| r.state.is_terminal()).map(|(id, _)| id.clone()).collect();
        for id in done {
            if self.state.records.remove(&id).is_some() {
                self.rollouts_of_host = None;
            }
        }
    }

    /// Counts for metrics: records by state, holds by gate, stuck records.
    pub fn gauges(&self) -> (BTreeMap<&'static str, i64>, BTreeMap<&'static str, i64>, i64) {
        let mut stuck = 0;
        let mut by_state = BTreeMap::new();
        let mut by_gate = BTreeMap::new();
        for state in HostState::ALL {
            by_state.insert(state.as_str(), 0);
        }
        for records in self.state.records.values() {
            for r in records.values() {
                *by_state.entry(r.state.as_str()).or_insert(0) += 1;
                stuck += i64::from(r.stuck);
                if let Some(w) = &r.waiting_on
                    && r.state == HostState::Pending
                {
                    *by_gate.entry(w.gate.as_str()).or_insert(0) += 1;
                }
            }
        }
        (by_state, by_gate, stuck)
    }
}

#[cfg(test)]
mod tests {
    use engine::testkit::{FleetBuilder, sign, t0};
    use proptest::prelude::*;

    use super::*;

    fn extreme_time() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            Just(DateTime::<Utc>::MIN_UTC),
            Just(DateTime::<Utc>::MAX_UTC),
            (-100_000_000_000i64..100_000_000_000).prop_map(|s| t0() + Duration::seconds(s)),
            (0i64..3_000).prop_map(|s| t0() + Duration::seconds(s)),
        ]
    }

    fn extreme_seq() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(u64::MAX), Just(u64::MAX - 1), Just(shared::limits::MAX_SEQ), 0u64..6, any::<u64>()]
    }

    /// One input as a hostile host could make it, fields at their extremes.
    #[derive(Debug, Clone)]
    enum Input {
        Event { host: usize, event: HostEvent },
        Heartbeat { host: usize, at: DateTime<Utc>, on_target: bool, named: bool, last: Option<u64> },
        Tick(i64),
    }

    fn input() -> impl Strategy<Value = Input> {
        let closure = prop_oneof![Just("/nix/store/a-v1".to_owned()), Just("/nix/store/old".to_owned())]
            .prop_map(|c| Closure::parse(c).unwrap());
        let event = (0u8..9, extreme_seq(), extreme_time(), closure, any::<i32>(), ".{0,40}").prop_map(
            |(kind, seq, when, closure, code, text)| match kind {
                0 => HostEvent::DispatchAck { seq, current_closure: closure, received_at: when },
                1 => HostEvent::ActivationStarted { seq, started_at: when },
                2 => HostEvent::ActivationCompleted {
                    seq,
                    observed_closure: closure,
                    exit_code: code,
                    completed_at: when,
                },
                3 => HostEvent::ActivationDeferred { seq, component: text, deferred_at: when },
                4 => HostEvent::ActivationFailed { seq, exit_code: code, stderr_tail: text, failed_at: when },
                5 => HostEvent::ProbeResult {
                    seq,
                    probe: text,
                    mode: shared::state::ProbeMode::Enforce,
                    status: if code % 2 == 0 {
                        shared::state::ProbeStatus::Pass
                    } else {
                        shared::state::ProbeStatus::Fail
                    },
                    observed_at: when,
                    reason: None,
                },
                6 => HostEvent::Failed {
                    seq,
                    failed_at: when,
                    failing_probes: vec![text],
                    policy_applied: shared::manifest::HealthFailurePolicy::RollbackAndHalt,
                },
                7 => HostEvent::RollbackComplete { seq, reverted_to: closure, completed_at: when },
                _ => HostEvent::Converged { seq, converged_at: when, current_closure: closure },
            },
        );
        prop_oneof![
            (0usize..2, event).prop_map(|(host, event)| Input::Event { host, event }),
            (0usize..2, extreme_time(), any::<bool>(), any::<bool>(), prop::option::of(extreme_seq()))
                .prop_map(|(host, at, on_target, named, last)| Input::Heartbeat { host, at, on_target, named, last }),
            (0i64..900).prop_map(Input::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever hosts send, the reducer's core (events, heartbeats with recovery synthesis,
        /// plan passes, rendering the write set) does not panic.
        #[test]
        fn the_reducer_core_never_panics_on_extreme_agent_input(inputs in prop::collection::vec(input(), 1..40)) {
            let f = FleetBuilder::new()
                .policy("p", &[(1, false)], "rollback-and-halt", 30)
                .channel("stable", "p")
                .host("a", "stable", &[])
                .host("b", "stable", &[])
                .release_closures("stable", "v1")
                .waves("stable", &[&["a", "b"]]);
            let mut core = Core::from_loaded(Loaded::default(), None, SharedFleet::default(), t0());
            let update = ManifestUpdate { set: f.manifest_set("a1"), fleet_artifact: sign(&f.document()), manifest_artifacts: vec![] };
            let mut now = t0();
            let mut pending = Pending::default();
            core.manifests(&mut pending, now, update).unwrap();
            core.plan(&mut pending, now);
            core.batch(pending, now, false);
            let rollout = RolloutId::parse("stable@a1").unwrap();
            for input in inputs {
                let mut pending = Pending::default();
                match input {
                    Input::Event { host, event } => {
                        let host = Hostname::parse(["a", "b"][host]).unwrap();
                        let _ = core.host_event(&mut pending, now, &host, &rollout, &event);
                    }
                    Input::Heartbeat { host, at, on_target, named, last } => {
                        let name = ["a", "b"][host];
                        let closure = if on_target { format!("/nix/store/{name}-v1") } else { "/nix/store/old".into() };
                        let hb = HeartbeatRequest {
                            hostname: Hostname::parse(name).unwrap(),
                            current_closure: Some(Closure::parse(closure).unwrap()),
                            rollout_id: named.then(|| rollout.clone()),
                            last_event_seq: last,
                            at,
                        };
                        core.heartbeat(&mut pending, now, &hb);
                    }
                    Input::Tick(secs) => {
                        now += Duration::seconds(secs);
                        pending.replan = true;
                    }
                }
                if pending.plan_due() {
                    core.plan(&mut pending, now);
                }
                core.batch(pending, now, false);
                core.prune();
            }
        }
    }

    fn key(host: &str) -> (RolloutId, Hostname) {
        (RolloutId::parse("stable@a1").unwrap(), Hostname::parse(host).unwrap())
    }

    fn written(batch: &Batch) -> Vec<&str> {
        batch.records.iter().map(|r| r.hostname.as_str()).collect()
    }

    #[test]
    fn records_wait_behind_their_log_rows_unless_they_changed_after_them() {
        let f = FleetBuilder::new()
            .policy("p", &[(0, false)], "halt", 30)
            .channel("stable", "p")
            .host("a", "stable", &[])
            .host("b", "stable", &[])
            .waves("stable", &[&["a", "b"]]);
        let mut core = Core::from_loaded(Loaded::default(), None, SharedFleet::default(), t0());
        let update = ManifestUpdate {
            set: f.manifest_set("a1"),
            fleet_artifact: sign(&f.document()),
            manifest_artifacts: vec![],
        };
        let mut pending = Pending::default();
        core.manifests(&mut pending, t0(), update).unwrap();
        core.plan(&mut pending, t0());
        // The first group writes everything (nothing was written yet).
        let first = core.batch(pending, t0(), false);
        assert!(first.records_through);
        assert_eq!(written(&first), ["a", "b"]);

        // A change its log row carries: deferred while the interval runs.
        let mut pending = Pending::default();
        let (rollout, b) = key("b");
        core.log_record_change(&mut pending, t0(), "HostExcused", rollout, b);
        let second = core.batch(pending, t0(), false);
        assert!(!second.records_through && second.records.is_empty());

        // A record that changes after its row is written at once, and every deferred one
        // with it (the tail holds an older state of it than the table will).
        let mut pending = Pending::default();
        let (rollout, a) = key("a");
        core.log_record_change(&mut pending, t0(), "HostExcused", rollout.clone(), a.clone());
        core.state.records.get_mut(&rollout).and_then(|r| r.get_mut(&a)).unwrap().stuck = true;
        let third = core.batch(pending, t0(), false);
        assert!(third.records_through);
        assert_eq!(written(&third), ["a", "b"]);
        assert!(third.records[0].body.get().contains("\"stuck\":true"));
    }
}
