//! Heartbeats (SPEC §6 Heartbeat): presence, recovery synthesis, what the agent is told, and
//! hosts going offline.

use chrono::{DateTime, Duration, Utc};
use shared::agent::{DispatchOrder, HeartbeatRequest, HeartbeatResponse};
use shared::log::{self, LogEntry};
use shared::state::{HostEvent, HostState};
use shared::{Closure, Hostname};

use super::{Controller, Presence, Write};
use crate::effect::{Effect, Log};
use crate::planner::{ACTIVE_HEARTBEAT_SECONDS, evaluate_synth_gates};
use crate::state::{FleetState, ManifestSet};

/// Heartbeat interval while a host has no work (SPEC §6); with work it is
/// [`ACTIVE_HEARTBEAT_SECONDS`], while its only work waits on a gate [`HELD_HEARTBEAT_SECONDS`].
pub const IDLE_HEARTBEAT_SECONDS: u64 = 30;
/// Heartbeat interval while a host's only open records are Pending and held by a gate (a
/// later wave, an approval, a budget): it learns of its dispatch within this long of the
/// gate lifting, and a 100,000-host rollout's waiting hosts do not offer the machine more
/// heartbeats than it can verify.
pub const HELD_HEARTBEAT_SECONDS: u64 = 15;
/// Presence rows are rewritten at most this often for an unchanged host.
const PRESENCE_PERSIST_EVERY: Duration = Duration::seconds(60);

/// The events recovery synthesis can infer, in the order it sends them.
#[derive(Clone, Copy)]
enum Inferred {
    DispatchAck,
    ActivationCompleted,
    Converged,
}

impl Inferred {
    fn event(self, seq: u64, current: &Closure, now: DateTime<Utc>) -> HostEvent {
        match self {
            Inferred::DispatchAck => HostEvent::DispatchAck { seq, current_closure: current.clone(), received_at: now },
            Inferred::ActivationCompleted => HostEvent::ActivationCompleted {
                seq,
                observed_closure: current.clone(),
                exit_code: 0,
                completed_at: now,
            },
            Inferred::Converged => HostEvent::Converged { seq, converged_at: now, current_closure: current.clone() },
        }
    }
}

impl Controller {
    pub fn heartbeat(&mut self, now: DateTime<Utc>, hb: &HeartbeatRequest, out: &mut Vec<Write>) -> HeartbeatResponse {
        let host = &hb.hostname;
        self.note_presence(now, host, hb.current_closure.clone(), hb.booted_closure.clone(), out);

        if let (Some(set), Some(current)) = (self.set.clone(), &hb.current_closure) {
            self.synthesise(now, &set, hb, current, out);
        }

        let replay_from = match (&hb.rollout_id, hb.last_event_seq) {
            (Some(rollout), Some(agent_seq)) => {
                self.state.record(rollout, host).map(|r| r.last_event_seq).filter(|ours| agent_seq > *ours)
            }
            _ => None,
        };
        let open = self.open_records_of(host);
        let fleet = self.set.as_ref().map(|set| &*set.fleet);
        let bootstrap = if hb.rollout_id.is_none() {
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
                on_health_failure: fleet?.on_health_failure(&record.channel),
            })
        });
        let next_heartbeat_seconds = open
            .iter()
            .filter_map(|(id, _)| self.state.record(id, host))
            .map(|record| match record.state {
                HostState::Activating | HostState::Deferred | HostState::Soaking => ACTIVE_HEARTBEAT_SECONDS as u64,
                HostState::Pending if record.dispatch.is_some() => ACTIVE_HEARTBEAT_SECONDS as u64,
                HostState::Pending if record.waiting_on.is_some() => HELD_HEARTBEAT_SECONDS,
                _ => IDLE_HEARTBEAT_SECONDS,
            })
            .min()
            .unwrap_or(IDLE_HEARTBEAT_SECONDS);
        if let Some(presence) = self.presence.get_mut(host) {
            presence.asked_seconds = next_heartbeat_seconds;
        }
        HeartbeatResponse { received_at: now, replay_from, bootstrap, dispatch, next_heartbeat_seconds }
    }

    fn note_presence(
        &mut self,
        now: DateTime<Utc>,
        host: &Hostname,
        closure: Option<Closure>,
        booted: Option<Closure>,
        out: &mut Vec<Write>,
    ) {
        self.state.last_heartbeat.insert(host.clone(), now);
        let entry = self.presence.entry(host.clone()).or_insert(Presence {
            at: now,
            closure: None,
            booted: None,
            persisted_at: None,
            online: false,
            asked_seconds: IDLE_HEARTBEAT_SECONDS,
        });
        let came_online = !entry.online;
        let changed = entry.closure != closure || entry.booted != booted;
        entry.at = now;
        entry.closure = closure.clone();
        entry.booted = booted.clone();
        entry.online = true;
        let stale = entry.persisted_at.is_none_or(|p| now - p >= PRESENCE_PERSIST_EVERY);
        if came_online || changed || stale {
            entry.persisted_at = Some(now);
            out.push(Write::Presence { host: host.clone(), at: now, closure: closure.clone(), booted });
        }
        if came_online {
            let entry = LogEntry::HostOnline(log::HostOnline { current_closure: closure });
            Self::note(now, None, Some(host.clone()), None, entry, out);
        }
    }

    /// Recovery synthesis (SPEC §6 Heartbeat step 2): a host reporting its target closure for
    /// a record the control plane still sees before that is moved on as if the agent had
    /// reported it (entries marked `synthesized`).
    fn synthesise(
        &mut self,
        now: DateTime<Utc>,
        set: &ManifestSet,
        hb: &HeartbeatRequest,
        current: &Closure,
        out: &mut Vec<Write>,
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
            let inferred: &[Inferred] = match state {
                HostState::Activating | HostState::Deferred => &[Inferred::ActivationCompleted],
                HostState::Pending => {
                    if evaluate_synth_gates(set, &self.state, &self.quarantines, record, now).is_some() {
                        continue;
                    }
                    &[Inferred::DispatchAck, Inferred::ActivationCompleted]
                }
                HostState::Soaking
                    if no_rollout_named
                        && record.soak_due_at.is_some_and(|due| due <= now)
                        && record.enforce_probes_pass() =>
                {
                    &[Inferred::Converged]
                }
                _ => continue,
            };
            for (i, inferred) in inferred.iter().enumerate() {
                // Agents' seqs are bounded at parse time (`shared::limits::MAX_SEQ`); a record
                // loaded from an older database may still carry a larger one: stop, never wrap.
                let Some(next) = seq.checked_add(1 + i as u64).filter(|s| *s <= shared::limits::MAX_SEQ) else {
                    break;
                };
                let event = inferred.event(next, current, now);
                let Ok(mut effects) = self.state.apply_host_event(&set.fleet, &rollout_id, host, &event, now) else {
                    break;
                };
                for effect in &mut effects {
                    if let Effect::Log(Log { entry: LogEntry::HostEvent(applied), .. }) = effect {
                        applied.synthesized = true;
                    }
                }
                self.absorb(now, effects, out);
            }
        }
    }

    /// Hosts silent for three of the heartbeat intervals their last answers asked for go
    /// offline.
    pub(super) fn mark_offline(&mut self, now: DateTime<Utc>, out: &mut Vec<Write>) {
        let mut gone = Vec::new();
        for (host, p) in self.presence.iter_mut() {
            let asked = i64::try_from(p.asked_seconds).unwrap_or(i64::MAX);
            let limit = Duration::try_seconds(asked.saturating_mul(3)).unwrap_or(Duration::MAX);
            if p.online && now - p.at > limit {
                p.online = false;
                gone.push((host.clone(), p.at));
            }
        }
        gone.sort();
        for (host, last) in gone {
            let entry = LogEntry::HostOffline(log::HostOffline { last_heartbeat_at: last });
            Self::note(now, None, Some(host), None, entry, out);
        }
    }
}
