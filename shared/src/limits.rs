//! What the control plane accepts from agents, in numbers: every string and list an agent
//! sends has a length limit, every counter and time a range. Checked when a body is parsed
//! (`422 limit-exceeded` beyond them), so nothing larger reaches the reducer, the database or
//! the dashboard. ARCHITECTURE.md lists them with the server's other limits.

use chrono::{DateTime, Datelike, Utc};

use crate::agent::{EventRequest, HeartbeatRequest};
use crate::state::HostEvent;

/// Largest event `seq` (and heartbeat `lastEventSeq`): 2^53 − 1, the largest integer every
/// JSON reader (the dashboard's JavaScript among them) holds exactly, and far from `u64`
/// overflow when the control plane numbers the events it synthesises after it.
pub const MAX_SEQ: u64 = (1 << 53) - 1;
/// A probe's name (`ProbeResult.probe`, each of `Failed.failingProbes`).
pub const MAX_PROBE_NAME_BYTES: usize = 128;
/// Distinct probes a record keeps results of, and names in `Failed.failingProbes`.
pub const MAX_PROBES: usize = 64;
/// `ActivationFailed.stderrTail`: a tail, not a log.
pub const MAX_STDERR_TAIL_BYTES: usize = 8 * 1024;
/// `ProbeResult.reason`.
pub const MAX_REASON_BYTES: usize = 1024;
/// A manifest's change summary (SPEC §18): package changes listed per closure, and the bytes
/// of a package name or version list.
pub const MAX_PACKAGE_CHANGES: usize = 10_000;
pub const MAX_PACKAGE_TEXT_BYTES: usize = 256;
/// An operator's (or viewer's) name.
pub const MAX_OPERATOR_NAME_BYTES: usize = 64;
/// `ActivationDeferred.component` (e.g. `kernel`, `initrd`).
pub const MAX_COMPONENT_BYTES: usize = 256;
/// Times agents send are RFC 3339 with four-digit years, from the Unix epoch on.
pub const EARLIEST_YEAR: i32 = 1970;
pub const LATEST_YEAR: i32 = 9999;

/// Which limit a body breaks, in a sentence that names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError(pub String);

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitError {}

fn text(field: &str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError(format!("{field} is {} bytes long; at most {max} are accepted", value.len())));
    }
    Ok(())
}

fn probe_name(field: &str, value: &str) -> Result<(), LimitError> {
    if value.is_empty() {
        return Err(LimitError(format!("{field} must not be empty")));
    }
    text(field, value, MAX_PROBE_NAME_BYTES)
}

fn time(field: &str, at: &DateTime<Utc>) -> Result<(), LimitError> {
    if !(EARLIEST_YEAR..=LATEST_YEAR).contains(&at.year()) {
        return Err(LimitError(format!(
            "{field} {at} is outside the years {EARLIEST_YEAR}–{LATEST_YEAR} that are accepted"
        )));
    }
    Ok(())
}

fn seq(field: &str, value: u64) -> Result<(), LimitError> {
    if value > MAX_SEQ {
        return Err(LimitError(format!("{field} is {value}; at most {MAX_SEQ} is accepted")));
    }
    Ok(())
}

impl HostEvent {
    /// Checks every field against the limits above.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        seq("event.seq", self.seq())?;
        match self {
            HostEvent::DispatchAck { received_at, .. } => time("event.receivedAt", received_at),
            HostEvent::ActivationStarted { started_at, .. } => time("event.startedAt", started_at),
            HostEvent::ActivationCompleted { completed_at, .. } => time("event.completedAt", completed_at),
            HostEvent::ActivationDeferred { component, deferred_at, .. } => {
                text("event.component", component, MAX_COMPONENT_BYTES)?;
                time("event.deferredAt", deferred_at)
            }
            HostEvent::ActivationFailed { stderr_tail, failed_at, .. } => {
                text("event.stderrTail", stderr_tail, MAX_STDERR_TAIL_BYTES)?;
                time("event.failedAt", failed_at)
            }
            HostEvent::ProbeResult { probe, observed_at, reason, .. } => {
                probe_name("event.probe", probe)?;
                if let Some(reason) = reason {
                    text("event.reason", reason, MAX_REASON_BYTES)?;
                }
                time("event.observedAt", observed_at)
            }
            HostEvent::Failed { failed_at, failing_probes, .. } => {
                if failing_probes.len() > MAX_PROBES {
                    return Err(LimitError(format!(
                        "event.failingProbes names {} probes; at most {MAX_PROBES} are accepted",
                        failing_probes.len()
                    )));
                }
                for name in failing_probes {
                    probe_name("event.failingProbes[]", name)?;
                }
                time("event.failedAt", failed_at)
            }
            HostEvent::RollbackComplete { completed_at, .. } => time("event.completedAt", completed_at),
            HostEvent::Converged { converged_at, .. } => time("event.convergedAt", converged_at),
        }
    }
}

impl EventRequest {
    pub fn check_limits(&self) -> Result<(), LimitError> {
        self.event.check_limits()
    }
}

impl HeartbeatRequest {
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if let Some(last) = self.last_event_seq {
            seq("lastEventSeq", last)?;
        }
        time("at", &self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> HostEvent {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn events_inside_the_limits_pass_and_each_limit_is_named_when_broken() {
        let ok = event(
            r#"{"kind":"ProbeResult","seq":9007199254740991,"probe":"http","mode":"enforce","status":"pass","observedAt":"2026-12-01T10:00:00Z"}"#,
        );
        assert_eq!(ok.check_limits(), Ok(()));
        let cases = [
            (
                r#"{"kind":"DispatchAck","seq":9007199254740992,"currentClosure":"/nix/store/a","receivedAt":"2026-12-01T10:00:00Z"}"#,
                "event.seq",
            ),
            (
                r#"{"kind":"ActivationCompleted","seq":1,"observedClosure":"/nix/store/a","exitCode":0,"completedAt":"+262142-12-31T23:59:59Z"}"#,
                "event.completedAt",
            ),
            (r#"{"kind":"ActivationStarted","seq":1,"startedAt":"1969-12-31T23:59:59Z"}"#, "event.startedAt"),
            (
                r#"{"kind":"ProbeResult","seq":1,"probe":"","mode":"enforce","status":"pass","observedAt":"2026-12-01T10:00:00Z"}"#,
                "event.probe",
            ),
        ];
        for (json, field) in cases {
            let err = event(json).check_limits().unwrap_err();
            assert!(err.0.starts_with(field), "{json}: {err}");
        }
        let long = |n: usize| "x".repeat(n);
        let probe = HostEvent::ProbeResult {
            seq: 1,
            probe: long(MAX_PROBE_NAME_BYTES + 1),
            mode: crate::state::ProbeMode::Enforce,
            status: crate::state::ProbeStatus::Pass,
            observed_at: ok_time(),
            reason: None,
        };
        assert!(probe.check_limits().unwrap_err().0.starts_with("event.probe"));
        let reason = HostEvent::ProbeResult {
            seq: 1,
            probe: "http".into(),
            mode: crate::state::ProbeMode::Enforce,
            status: crate::state::ProbeStatus::Fail,
            observed_at: ok_time(),
            reason: Some(long(MAX_REASON_BYTES + 1)),
        };
        assert!(reason.check_limits().unwrap_err().0.starts_with("event.reason"));
        let stderr = HostEvent::ActivationFailed {
            seq: 1,
            exit_code: 1,
            stderr_tail: long(MAX_STDERR_TAIL_BYTES + 1),
            failed_at: ok_time(),
        };
        assert!(stderr.check_limits().unwrap_err().0.starts_with("event.stderrTail"));
        let component =
            HostEvent::ActivationDeferred { seq: 1, component: long(MAX_COMPONENT_BYTES + 1), deferred_at: ok_time() };
        assert!(component.check_limits().unwrap_err().0.starts_with("event.component"));
        let failed = |probes: Vec<String>| HostEvent::Failed {
            seq: 1,
            failed_at: ok_time(),
            failing_probes: probes,
            policy_applied: crate::manifest::HealthFailurePolicy::Halt,
        };
        assert!(
            failed(vec!["p".into(); MAX_PROBES + 1]).check_limits().unwrap_err().0.starts_with("event.failingProbes")
        );
        assert!(failed(vec![long(MAX_PROBE_NAME_BYTES + 1)]).check_limits().is_err());
        assert_eq!(failed(vec!["p".into(); MAX_PROBES]).check_limits(), Ok(()));
    }

    fn ok_time() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }
}
