//! States, events and snapshots as they appear on the wire (SPEC §3, §4, §5, §9.1).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{Channel, Closure, Hostname, RolloutId};
use crate::manifest::HealthFailurePolicy;

/// The state of one host inside one rollout (SPEC §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HostState {
    Pending,
    Activating,
    Deferred,
    Soaking,
    Converged,
    Failed,
    Reverted,
}

impl HostState {
    pub const ALL: [HostState; 7] = [
        HostState::Pending,
        HostState::Activating,
        HostState::Deferred,
        HostState::Soaking,
        HostState::Converged,
        HostState::Failed,
        HostState::Reverted,
    ];

    /// Converged and Reverted never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, HostState::Converged | HostState::Reverted)
    }

    /// Failed, or rolled back after failing: what a failure budget counts.
    pub fn is_failure(self) -> bool {
        matches!(self, HostState::Failed | HostState::Reverted)
    }

    /// The state named `name` exactly as [`HostState::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Pending => "Pending",
            HostState::Activating => "Activating",
            HostState::Deferred => "Deferred",
            HostState::Soaking => "Soaking",
            HostState::Converged => "Converged",
            HostState::Failed => "Failed",
            HostState::Reverted => "Reverted",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a rollout (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RolloutState {
    Active,
    Paused,
    Halted,
    Completed,
    Superseded,
}

impl RolloutState {
    pub const ALL: [RolloutState; 5] = [
        RolloutState::Active,
        RolloutState::Paused,
        RolloutState::Halted,
        RolloutState::Completed,
        RolloutState::Superseded,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, RolloutState::Completed | RolloutState::Superseded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "Active",
            RolloutState::Paused => "Paused",
            RolloutState::Halted => "Halted",
            RolloutState::Completed => "Completed",
            RolloutState::Superseded => "Superseded",
        }
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which host halted a rollout, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Halt {
    pub host: Hostname,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Who moved a rollout to its next wave: the planner when the wave completed, or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AdvancedBy {
    Auto,
    Operator,
}

impl AdvancedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            AdvancedBy::Auto => "auto",
            AdvancedBy::Operator => "operator",
        }
    }
}

/// The kinds of input the rollout state machine takes (SPEC §4), as logged with a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RolloutInputKind {
    HostFailed,
    Pause,
    Resume,
    ClearFailure,
    ApproveWave,
    Promote,
    Evaluate,
    Supersede,
}

impl RolloutInputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutInputKind::HostFailed => "host-failed",
            RolloutInputKind::Pause => "pause",
            RolloutInputKind::Resume => "resume",
            RolloutInputKind::ClearFailure => "clear-failure",
            RolloutInputKind::ApproveWave => "approve-wave",
            RolloutInputKind::Promote => "promote",
            RolloutInputKind::Evaluate => "evaluate",
            RolloutInputKind::Supersede => "supersede",
        }
    }
}

impl fmt::Display for RolloutInputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gates that can hold a Pending host back, in the order they are checked (SPEC §5, §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    Quarantine,
    Freeze,
    Suspended,
    RolloutState,
    ChannelEdge,
    Wave,
    Approval,
    Window,
    HostEdge,
    Budget,
}

impl Gate {
    /// In the order they are checked.
    pub const ALL: [Gate; 10] = [
        Gate::Quarantine,
        Gate::Freeze,
        Gate::Suspended,
        Gate::RolloutState,
        Gate::ChannelEdge,
        Gate::Wave,
        Gate::Approval,
        Gate::Window,
        Gate::HostEdge,
        Gate::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Quarantine => "quarantine",
            Gate::Freeze => "freeze",
            Gate::Suspended => "suspended",
            Gate::Window => "window",
            Gate::RolloutState => "rollout-state",
            Gate::ChannelEdge => "channel-edge",
            Gate::Wave => "wave",
            Gate::Approval => "approval",
            Gate::HostEdge => "host-edge",
            Gate::Budget => "budget",
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a Pending host is not being updated ("why is this host not updated").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitingOn {
    pub gate: Gate,
    /// Shared by the hosts a pass holds for the same reason (most held hosts of a rollout
    /// wait on one of a few): one allocation instead of one per host, and comparing a host's
    /// hold with the reason the pass found is then mostly a pointer comparison.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub reason: Arc<str>,
    pub since: DateTime<Utc>,
    /// When the gate is known to lift by itself (a maintenance window opening, a freeze
    /// running out): the dashboard shows how long that is from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Failures block convergence.
    Enforce,
    /// Reported only; never blocks.
    Observe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProbeStatus {
    Pass,
    Fail,
}

/// What an agent reports about one record: `{"kind": "<Name>", "seq": n, …}` (SPEC §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum HostEvent {
    #[serde(rename_all = "camelCase")]
    DispatchAck { seq: u64, current_closure: Closure, received_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    ActivationStarted { seq: u64, started_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    ActivationCompleted { seq: u64, observed_closure: Closure, exit_code: i32, completed_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    ActivationDeferred { seq: u64, component: String, deferred_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    ActivationFailed { seq: u64, exit_code: i32, stderr_tail: String, failed_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    ProbeResult {
        seq: u64,
        probe: String,
        mode: ProbeMode,
        status: ProbeStatus,
        observed_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Failed { seq: u64, failed_at: DateTime<Utc>, failing_probes: Vec<String>, policy_applied: HealthFailurePolicy },
    #[serde(rename_all = "camelCase")]
    RollbackComplete { seq: u64, reverted_to: Closure, completed_at: DateTime<Utc> },
    #[serde(rename_all = "camelCase")]
    Converged { seq: u64, converged_at: DateTime<Utc>, current_closure: Closure },
}

impl HostEvent {
    pub fn seq(&self) -> u64 {
        match self {
            HostEvent::DispatchAck { seq, .. }
            | HostEvent::ActivationStarted { seq, .. }
            | HostEvent::ActivationCompleted { seq, .. }
            | HostEvent::ActivationDeferred { seq, .. }
            | HostEvent::ActivationFailed { seq, .. }
            | HostEvent::ProbeResult { seq, .. }
            | HostEvent::Failed { seq, .. }
            | HostEvent::RollbackComplete { seq, .. }
            | HostEvent::Converged { seq, .. } => *seq,
        }
    }

    /// Every kind's wire name, in declaration order: tests go through all of them, so a new
    /// variant (which needs an arm in [`HostEvent::kind`]'s exhaustive match, indexing this
    /// list) is tested by every table that iterates it.
    pub const KINDS: [&'static str; 9] = [
        "DispatchAck",
        "ActivationStarted",
        "ActivationCompleted",
        "ActivationDeferred",
        "ActivationFailed",
        "ProbeResult",
        "Failed",
        "RollbackComplete",
        "Converged",
    ];

    pub fn kind(&self) -> &'static str {
        let index = match self {
            HostEvent::DispatchAck { .. } => 0,
            HostEvent::ActivationStarted { .. } => 1,
            HostEvent::ActivationCompleted { .. } => 2,
            HostEvent::ActivationDeferred { .. } => 3,
            HostEvent::ActivationFailed { .. } => 4,
            HostEvent::ProbeResult { .. } => 5,
            HostEvent::Failed { .. } => 6,
            HostEvent::RollbackComplete { .. } => 7,
            HostEvent::Converged { .. } => 8,
        };
        Self::KINDS[index]
    }

    /// What the agent reported, in words: the probe and its verdict, the exit code, the
    /// component that deferred, the closure reached (the stderr tail is [`Self::stderr_tail`]).
    pub fn summary(&self) -> String {
        match self {
            HostEvent::DispatchAck { current_closure, .. } => {
                format!("dispatch acknowledged, running {}", current_closure.short())
            }
            HostEvent::ActivationStarted { .. } => "activation started".into(),
            HostEvent::ActivationCompleted { observed_closure, exit_code, .. } => {
                format!("activation completed (exit code {exit_code}), running {}", observed_closure.short())
            }
            HostEvent::ActivationDeferred { component, .. } => format!("activation deferred by {component}"),
            HostEvent::ActivationFailed { exit_code, .. } => format!("activation failed with exit code {exit_code}"),
            HostEvent::ProbeResult { probe, mode, status, reason, .. } => {
                let verdict = match status {
                    ProbeStatus::Pass => "passed",
                    ProbeStatus::Fail => "failed",
                };
                let mode = match mode {
                    ProbeMode::Enforce => "",
                    ProbeMode::Observe => " (observe only)",
                };
                let reason = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                format!("probe {probe}{mode} {verdict}{reason}")
            }
            HostEvent::Failed { failing_probes, policy_applied, .. } => {
                let policy = match policy_applied {
                    crate::manifest::HealthFailurePolicy::Halt => "halt",
                    crate::manifest::HealthFailurePolicy::RollbackAndHalt => "roll back and halt",
                };
                if failing_probes.is_empty() {
                    format!("failed; policy: {policy}")
                } else {
                    format!("failed (probes {}); policy: {policy}", failing_probes.join(", "))
                }
            }
            HostEvent::RollbackComplete { reverted_to, .. } => format!("rolled back to {}", reverted_to.short()),
            HostEvent::Converged { current_closure, .. } => format!("converged on {}", current_closure.short()),
        }
    }

    /// The end of a failed activation's standard error, as the agent sent it.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            HostEvent::ActivationFailed { stderr_tail, .. } if !stderr_tail.is_empty() => Some(stderr_tail),
            _ => None,
        }
    }
}

/// One record as the agent needs it to resume (SPEC §9.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostRolloutSnapshot {
    pub rollout_id: RolloutId,
    pub hostname: Hostname,
    pub channel: Channel,
    pub state: HostState,
    pub target_closure: Closure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure_at_dispatch: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_acked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_due_at: Option<DateTime<Utc>>,
    pub last_event_seq: u64,
    /// The soak of the record's wave (in the heartbeat's `bootstrap`): what an agent that lost
    /// its intent needs to finish the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
    /// The channel's failure policy (in the heartbeat's `bootstrap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_health_failure: Option<HealthFailurePolicy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_in_the_list_parses_to_itself() {
        // The wire name of each listed kind is the serde tag of its variant.
        for (i, kind) in HostEvent::KINDS.iter().enumerate() {
            let parsed: Result<HostEvent, _> = serde_json::from_value(serde_json::json!({"kind": kind, "seq": 1}));
            let err = parsed.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!err.contains("unknown variant"), "{kind}: {err}");
            assert_eq!(HostEvent::KINDS.iter().position(|k| k == kind), Some(i), "listed once");
        }
    }

    #[test]
    fn an_event_says_what_the_agent_reported_in_words() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let nginx = Closure::parse(format!("/nix/store/{}-broken-nginx", "d".repeat(32))).unwrap();
        let probe = HostEvent::ProbeResult {
            seq: 4,
            probe: "http-health".into(),
            mode: ProbeMode::Enforce,
            status: ProbeStatus::Fail,
            observed_at: at,
            reason: Some("connection refused".into()),
        };
        assert_eq!(probe.summary(), "probe http-health failed: connection refused");
        let observe = HostEvent::ProbeResult {
            seq: 4,
            probe: "disk".into(),
            mode: ProbeMode::Observe,
            status: ProbeStatus::Pass,
            observed_at: at,
            reason: None,
        };
        assert_eq!(observe.summary(), "probe disk (observe only) passed");
        let failed = HostEvent::ActivationFailed {
            seq: 3,
            exit_code: 4,
            stderr_tail: "nginx.service failed\n".into(),
            failed_at: at,
        };
        assert_eq!(failed.summary(), "activation failed with exit code 4");
        assert_eq!(failed.stderr_tail(), Some("nginx.service failed\n"));
        let converged = HostEvent::Converged { seq: 9, converged_at: at, current_closure: nginx.clone() };
        assert_eq!(converged.summary(), "converged on …-broken-nginx");
        assert_eq!(converged.stderr_tail(), None);
        let deferred = HostEvent::ActivationDeferred { seq: 2, component: "kernel".into(), deferred_at: at };
        assert_eq!(deferred.summary(), "activation deferred by kernel");
        let halted = HostEvent::Failed {
            seq: 5,
            failed_at: at,
            failing_probes: vec!["http-health".into()],
            policy_applied: crate::manifest::HealthFailurePolicy::RollbackAndHalt,
        };
        assert_eq!(halted.summary(), "failed (probes http-health); policy: roll back and halt");
        // A path that is not a store path's shape is shown whole.
        assert_eq!(Closure::parse("/opt/system").unwrap().short(), "/opt/system");
    }

    #[test]
    fn events_are_flat_objects_tagged_by_kind() {
        let json = r#"{"kind":"ActivationCompleted","seq":3,"observedClosure":"/nix/store/a","exitCode":0,"completedAt":"2026-11-26T10:00:00Z"}"#;
        let event: HostEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.seq(), 3);
        assert_eq!(event.kind(), "ActivationCompleted");
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(json).unwrap());
    }

    #[test]
    fn events_with_unknown_fields_or_kinds_are_rejected() {
        let extra = r#"{"kind":"ActivationStarted","seq":1,"startedAt":"2026-11-26T10:00:00Z","x":1}"#;
        assert!(serde_json::from_str::<HostEvent>(extra).is_err());
        let unknown = r#"{"kind":"Exploded","seq":1}"#;
        assert!(serde_json::from_str::<HostEvent>(unknown).is_err());
    }

    #[test]
    fn rollout_input_kinds_name_themselves_as_serde_does() {
        use RolloutInputKind as K;
        for kind in
            [K::HostFailed, K::Pause, K::Resume, K::ClearFailure, K::ApproveWave, K::Promote, K::Evaluate, K::Supersede]
        {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for by in [AdvancedBy::Auto, AdvancedBy::Operator] {
            assert_eq!(serde_json::to_value(by).unwrap(), by.as_str());
        }
    }

    #[test]
    fn gate_wire_names_are_kebab_case() {
        assert_eq!(serde_json::to_string(&Gate::RolloutState).unwrap(), "\"rollout-state\"");
        assert_eq!(serde_json::to_string(&Gate::HostEdge).unwrap(), "\"host-edge\"");
        for gate in Gate::ALL {
            assert_eq!(serde_json::to_value(gate).unwrap(), gate.as_str());
        }
        assert_eq!(serde_json::to_string(&HealthFailurePolicy::RollbackAndHalt).unwrap(), "\"rollback-and-halt\"");
    }
}
