//! The host state machine (SPEC §3): one record per host per rollout.
//! `step` is pure: time comes in as `now` and in the event's own fields.

use shared::ErrorCode;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use shared::limits::MAX_PROBES;
use shared::log::{HostEventApplied, LogEntry};
use shared::manifest::HealthFailurePolicy;
use shared::state::{HostEvent, HostRolloutSnapshot, HostState, ProbeMode, ProbeStatus, WaitingOn};
use shared::{Channel, Closure, Hostname, RolloutId};

use crate::effect::{Effect, Log};

/// The state of one host inside one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub rollout_id: RolloutId,
    pub hostname: Hostname,
    pub channel: Channel,
    pub state: HostState,
    pub target_closure: Closure,
    pub current_closure_at_dispatch: Option<Closure>,
    pub current_closure: Option<Closure>,
    pub dispatch_acked_at: Option<DateTime<Utc>>,
    pub activation_started_at: Option<DateTime<Utc>>,
    pub activation_completed_at: Option<DateTime<Utc>>,
    pub soak_due_at: Option<DateTime<Utc>>,
    pub deferred_component: Option<String>,
    pub converged_at: Option<DateTime<Utc>>,
    pub reverted_to: Option<Closure>,
    pub probes: BTreeMap<String, ProbeRecord>,
    pub failure: Option<FailureInfo>,
    pub policy_applied: Option<HealthFailurePolicy>,
    pub last_event_seq: u64,
    /// When the record last moved (an accepted event or a queued dispatch); stuck detection.
    pub last_progress_at: DateTime<Utc>,
    /// The dispatch queued for this record and not yet acknowledged.
    pub dispatch: Option<Dispatch>,
    pub waiting_on: Option<WaitingOn>,
    pub excused: bool,
    pub stuck: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRecord {
    pub mode: ProbeMode,
    pub status: ProbeStatus,
    pub observed_at: DateTime<Utc>,
    pub last_pass_at: Option<DateTime<Utc>>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    pub reason: String,
    pub at: DateTime<Utc>,
    pub failing_probes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatch {
    pub queued_at: DateTime<Utc>,
    pub soak_seconds: u64,
}

/// Done for ordering: waves and host edges treat Converged and Deferred alike, and an excused
/// host as done.
pub fn done_for_ordering(state: HostState, excused: bool) -> bool {
    matches!(state, HostState::Converged | HostState::Deferred) || excused
}

impl HostRecord {
    /// A fresh Pending record, as opening a rollout creates it.
    pub fn pending(
        rollout_id: RolloutId,
        hostname: Hostname,
        channel: Channel,
        target_closure: Closure,
        now: DateTime<Utc>,
    ) -> HostRecord {
        HostRecord {
            rollout_id,
            hostname,
            channel,
            state: HostState::Pending,
            target_closure,
            current_closure_at_dispatch: None,
            current_closure: None,
            dispatch_acked_at: None,
            activation_started_at: None,
            activation_completed_at: None,
            soak_due_at: None,
            deferred_component: None,
            converged_at: None,
            reverted_to: None,
            probes: BTreeMap::new(),
            failure: None,
            policy_applied: None,
            last_event_seq: 0,
            last_progress_at: now,
            dispatch: None,
            waiting_on: None,
            excused: false,
            stuck: false,
        }
    }

    /// Every enforce-mode probe last reported `pass` (observe-mode probes never block).
    pub fn enforce_probes_pass(&self) -> bool {
        self.probes.values().all(|p| p.mode == ProbeMode::Observe || p.status == ProbeStatus::Pass)
    }

    /// Failed and staying so (its policy rolls nothing back), or rolled back: a failure that a
    /// failure budget can excuse. A Failed host whose agent is rolling back is not settled yet.
    pub fn failure_settled(&self) -> bool {
        match self.state {
            HostState::Reverted => true,
            HostState::Failed => self.policy_applied != Some(HealthFailurePolicy::RollbackAndHalt),
            _ => false,
        }
    }

    /// See [`done_for_ordering`].
    pub fn done_for_ordering(&self) -> bool {
        done_for_ordering(self.state, self.excused)
    }

    pub fn snapshot(&self) -> HostRolloutSnapshot {
        HostRolloutSnapshot {
            rollout_id: self.rollout_id.clone(),
            hostname: self.hostname.clone(),
            channel: self.channel.clone(),
            state: self.state,
            target_closure: self.target_closure.clone(),
            current_closure_at_dispatch: self.current_closure_at_dispatch.clone(),
            current_closure: self.current_closure.clone(),
            dispatch_acked_at: self.dispatch_acked_at,
            activation_started_at: self.activation_started_at,
            activation_completed_at: self.activation_completed_at,
            soak_due_at: self.soak_due_at,
            last_event_seq: self.last_event_seq,
            soak_seconds: None,
            on_health_failure: None,
        }
    }
}

/// What `step` needs of the rollout policy for this record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPolicy {
    /// Soak of the record's wave.
    pub soak: Duration,
    pub on_health_failure: HealthFailurePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// `seq <= lastEventSeq`: already applied; idempotent, not an error to the agent.
    #[error("event seq {seq} was already applied (last seq {last})")]
    Duplicate { seq: u64, last: u64 },
    #[error("{event} is not allowed in state {state}")]
    IllegalForState { state: HostState, event: &'static str },
    /// A guard failed; the record is unchanged.
    #[error("{0}")]
    Invariant(String),
    /// The event would grow the record past a limit (`shared::limits`); the record is unchanged.
    #[error("{0}")]
    TooMany(String),
}

impl TransitionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TransitionError::Duplicate { .. } => ErrorCode::Duplicate,
            TransitionError::IllegalForState { .. } => ErrorCode::IllegalForState,
            TransitionError::Invariant(_) => ErrorCode::Invariant,
            TransitionError::TooMany(_) => ErrorCode::LimitExceeded,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: HostRecord,
    pub effects: Vec<Effect>,
}

/// Applies one agent event to a record (SPEC §3.3).
pub fn step(
    record: &HostRecord,
    event: &HostEvent,
    now: DateTime<Utc>,
    policy: &StepPolicy,
) -> Result<Transition, TransitionError> {
    use HostState as S;
    let seq = event.seq();
    if seq <= record.last_event_seq {
        return Err(TransitionError::Duplicate { seq, last: record.last_event_seq });
    }
    let illegal = || TransitionError::IllegalForState { state: record.state, event: event.kind() };
    let mut next = record.clone();
    let mut extra = Vec::new();
    // A probe result that says what the probe said last time (an observation retention may
    // compact, SPEC §16).
    let mut repeated = false;

    match (record.state, event) {
        (S::Pending, HostEvent::DispatchAck { current_closure, received_at, .. }) => {
            next.state = S::Activating;
            next.current_closure_at_dispatch = Some(current_closure.clone());
            next.current_closure = Some(current_closure.clone());
            next.dispatch_acked_at = Some(*received_at);
            next.dispatch = None;
            next.waiting_on = None;
        }
        (S::Activating, HostEvent::ActivationStarted { started_at, .. }) => {
            next.activation_started_at = Some(*started_at);
        }
        (
            S::Activating | S::Deferred,
            HostEvent::ActivationCompleted { observed_closure, exit_code, completed_at, .. },
        ) => {
            next.current_closure = Some(observed_closure.clone());
            next.activation_completed_at = Some(*completed_at);
            let problem = if *exit_code != 0 {
                Some(format!("activation exited with code {exit_code}"))
            } else if observed_closure != &record.target_closure {
                Some(format!("activation ended on {observed_closure}, not the target {}", record.target_closure))
            } else {
                None
            };
            match problem {
                Some(reason) => {
                    next.state = S::Failed;
                    next.policy_applied = Some(policy.on_health_failure);
                    next.failure = Some(FailureInfo { reason, at: *completed_at, failing_probes: vec![] });
                }
                None => {
                    // The time comes from the agent: a sum beyond chrono's range is refused,
                    // never a panic (chrono's `+` panics on overflow).
                    let due = completed_at.checked_add_signed(policy.soak).ok_or_else(|| {
                        TransitionError::Invariant(format!(
                            "completedAt {completed_at} plus the wave's soak is beyond the supported time range"
                        ))
                    })?;
                    next.state = S::Soaking;
                    next.probes.clear();
                    next.soak_due_at = Some(due);
                }
            }
        }
        (S::Activating, HostEvent::ActivationDeferred { component, .. }) => {
            next.state = S::Deferred;
            next.deferred_component = Some(component.clone());
        }
        (S::Activating | S::Deferred, HostEvent::ActivationFailed { exit_code, stderr_tail, failed_at, .. }) => {
            next.state = S::Failed;
            next.policy_applied = Some(policy.on_health_failure);
            let tail = stderr_tail.trim();
            let reason = if tail.is_empty() {
                format!("activation failed with exit code {exit_code}")
            } else {
                format!("activation failed with exit code {exit_code}: {tail}")
            };
            next.failure = Some(FailureInfo { reason, at: *failed_at, failing_probes: vec![] });
        }
        (S::Soaking, HostEvent::ProbeResult { probe, mode, status, observed_at, reason, .. }) => {
            let previous = record.probes.get(probe);
            repeated = previous.is_some_and(|p| p.status == *status && p.mode == *mode);
            if previous.is_none() && record.probes.len() >= MAX_PROBES {
                return Err(TransitionError::TooMany(format!(
                    "{} already reports {MAX_PROBES} probes in this rollout; `{probe}` would be one more",
                    record.hostname
                )));
            }
            let (last_pass_at, first_failed_at) = match status {
                ProbeStatus::Pass => (Some(*observed_at), None),
                ProbeStatus::Fail => (
                    previous.and_then(|p| p.last_pass_at),
                    previous.and_then(|p| p.first_failed_at).or(Some(*observed_at)),
                ),
            };
            next.probes.insert(
                probe.clone(),
                ProbeRecord {
                    mode: *mode,
                    status: *status,
                    observed_at: *observed_at,
                    last_pass_at,
                    first_failed_at,
                    reason: reason.clone(),
                },
            );
        }
        (S::Soaking, HostEvent::Failed { failed_at, failing_probes, policy_applied, .. }) => {
            next.state = S::Failed;
            next.policy_applied = Some(*policy_applied);
            let reason = if failing_probes.is_empty() {
                "health checks failed".to_owned()
            } else {
                format!("probes failing: {}", failing_probes.join(", "))
            };
            next.failure = Some(FailureInfo { reason, at: *failed_at, failing_probes: failing_probes.clone() });
        }
        (S::Soaking, HostEvent::Converged { converged_at, current_closure, .. }) => {
            if current_closure != &record.target_closure
                || record.current_closure.as_ref() != Some(&record.target_closure)
            {
                return Err(TransitionError::Invariant(format!(
                    "cannot converge on {current_closure}: the target is {}",
                    record.target_closure
                )));
            }
            match record.soak_due_at {
                Some(due) if *converged_at >= due => {}
                Some(due) => {
                    return Err(TransitionError::Invariant(format!(
                        "soak runs until {due}; convergedAt {converged_at} is before it"
                    )));
                }
                None => return Err(TransitionError::Invariant("no soak was started".into())),
            }
            let failing: Vec<&str> = record
                .probes
                .iter()
                .filter(|(_, p)| p.mode == ProbeMode::Enforce && p.status == ProbeStatus::Fail)
                .map(|(name, _)| name.as_str())
                .collect();
            if !failing.is_empty() {
                return Err(TransitionError::Invariant(format!("enforce probes failing: {}", failing.join(", "))));
            }
            next.state = S::Converged;
            next.converged_at = Some(*converged_at);
        }
        (S::Failed, HostEvent::RollbackComplete { reverted_to, .. }) => {
            next.state = S::Reverted;
            next.current_closure = Some(reverted_to.clone());
            next.reverted_to = Some(reverted_to.clone());
            extra.push(Effect::Quarantine {
                channel: record.channel.clone(),
                closure: record.target_closure.clone(),
                reason: format!("{} rolled back from it in {}", record.hostname, record.rollout_id),
            });
        }
        _ => return Err(illegal()),
    }

    next.last_event_seq = seq;
    next.last_progress_at = now;
    next.stuck = false;

    let mut effects = Vec::with_capacity(2 + extra.len());
    effects.push(Effect::Log(Log {
        rollout_id: Some(record.rollout_id.clone()),
        host: Some(record.hostname.clone()),
        channel: Some(record.channel.clone()),
        entry: LogEntry::HostEvent(HostEventApplied {
            event: event.clone(),
            from: record.state,
            to: next.state,
            synthesized: false,
            repeated,
        }),
    }));
    if next.state != record.state {
        effects.push(Effect::HostStateChanged {
            rollout_id: record.rollout_id.clone(),
            host: record.hostname.clone(),
            from: record.state,
            to: next.state,
        });
    }
    effects.extend(extra);
    Ok(Transition { record: next, effects })
}
