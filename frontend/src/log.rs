//! Event-log entries in words, one arm per kind: a new kind does not compile until the
//! dashboard says what it means.

use shared::api::LogEvent;
use shared::log::LogEntry;

/// One line for an entry; an entry whose payload cannot be read says so.
pub fn describe(event: &LogEvent) -> String {
    match event.entry() {
        Ok(entry) => describe_entry(&entry),
        Err(err) => format!("{} (unreadable: {err})", event.kind),
    }
}

fn describe_entry(entry: &LogEntry) -> String {
    match entry {
        LogEntry::HostEvent(e) => {
            let synth = if e.synthesized { " (from heartbeat)" } else { "" };
            format!("{}{synth}: {} → {}", e.event.kind(), e.from, e.to)
        }
        LogEntry::DispatchQueued(d) => format!("dispatch queued (soak {} s)", d.soak_seconds),
        LogEntry::DispatchWithdrawn(_) => "dispatch withdrawn".into(),
        LogEntry::HostExcused(_) => "excused from waves and completion".into(),
        LogEntry::HostStuck(s) => format!("stuck in {}", s.state),
        LogEntry::HostUnstuck(s) => format!("moving again ({})", s.state),
        LogEntry::HostHeld(h) => format!("held by {}: {}", h.gate, h.reason),
        LogEntry::RolloutOpened(o) => format!("rollout opened for {} hosts", o.hosts),
        LogEntry::RolloutStateChanged(c) => format!("rollout {} → {}", c.from, c.to),
        LogEntry::WaveAdvanced(w) => {
            format!("wave {} → {} ({}{})", w.from, w.to, w.by.as_str(), if w.force { ", forced" } else { "" })
        }
        LogEntry::WaveApproved(w) => format!("wave {} approved", w.wave),
        LogEntry::QuarantineAdded(q) => format!("{} quarantined by {}: {}", q.closure, q.by, q.reason),
        LogEntry::QuarantineReleased(q) => format!("{} released by {}", q.closure, q.by),
        LogEntry::ManifestSetUpdated(m) => format!("manifest set in force: {} rollouts", m.rollouts.len()),
        LogEntry::OperatorAction(a) => format!(
            "{} by {}{}",
            a.action.name(),
            a.operator,
            a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        LogEntry::HostOnline(_) => "online".into(),
        LogEntry::HostOffline(_) => "offline".into(),
        LogEntry::FreezeStarted(f) => format!(
            "freeze {} by {}: {}{}",
            f.name,
            f.by.as_deref().unwrap_or("the fleet"),
            f.reason,
            f.until.map(|u| format!(" (until {})", u.format("%Y-%m-%d %H:%M UTC"))).unwrap_or_default()
        ),
        LogEntry::FreezeReleased(f) => format!("freeze {} released by {}: {}", f.name, f.by, f.reason),
        LogEntry::HostSuspended(s) => format!("suspended by {}: {}", s.by, s.reason),
        LogEntry::HostResumed(s) => format!("resumed by {}: {}", s.by, s.reason),
        LogEntry::FailureWithinBudget(f) => {
            format!("failed within wave {}'s budget ({} of {} failures used): {}", f.wave, f.failures, f.max, f.reason)
        }
    }
}
