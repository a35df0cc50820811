//! The event log's entries (SPEC §8, §10): every kind, its typed payload and the feed topic it
//! is published under, declared once in [`log_kinds!`]'s invocation below. The engine emits
//! [`LogEntry`] values, the control plane stores them (the kind in the `kind` column, the
//! payload as JSON), replay and the feed read them back, and the dashboard matches on them.
//!
//! A stored payload is the entry's fields plus, for entries about one record or one rollout,
//! that record (`record`) or rollout (`rollout`) as it was right after the change: the log
//! alone re-derives every row ([`Carried`] reads them back; [`StoredPayload`] writes them).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::{ManifestSummary, OperatorAction};
use crate::ids::{Closure, Hostname, RolloutId};
use crate::policy::Freeze;
use crate::state::{AdvancedBy, Gate, Halt, HostEvent, HostState, RolloutInputKind, RolloutState};

/// The SSE `event:` name under which an entry is published (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FeedTopic {
    Host,
    Rollout,
    Hold,
    Quarantine,
    Operator,
    Manifest,
    Presence,
    Policy,
    /// The log itself: sealed segments (SPEC §16).
    Log,
}

impl FeedTopic {
    pub const ALL: [FeedTopic; 9] = [
        FeedTopic::Host,
        FeedTopic::Rollout,
        FeedTopic::Hold,
        FeedTopic::Quarantine,
        FeedTopic::Operator,
        FeedTopic::Manifest,
        FeedTopic::Presence,
        FeedTopic::Policy,
        FeedTopic::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedTopic::Host => "host",
            FeedTopic::Rollout => "rollout",
            FeedTopic::Hold => "hold",
            FeedTopic::Quarantine => "quarantine",
            FeedTopic::Operator => "operator",
            FeedTopic::Manifest => "manifest",
            FeedTopic::Presence => "presence",
            FeedTopic::Policy => "policy",
            FeedTopic::Log => "log",
        }
    }
}

/// Declares [`LogEntry`] (one variant per kind, holding its payload), [`LogKind`] (the kinds
/// alone) and the exhaustive conversions between kind names, payloads and topics: a kind's
/// name is written in this one place.
macro_rules! log_kinds {
    ($( $(#[$doc:meta])* $kind:ident($payload:ty) => $topic:ident, )*) => {
        /// One event-log entry: its kind and its typed payload.
        #[derive(Debug, Clone, PartialEq)]
        pub enum LogEntry {
            $( $(#[$doc])* $kind($payload), )*
        }

        /// The kind of a [`LogEntry`], as the `kind` column and the API's `kind` field name it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum LogKind {
            $( $kind, )*
        }

        impl LogKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [LogKind] = &[$(LogKind::$kind),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( LogKind::$kind => stringify!($kind), )*
                }
            }

            pub fn topic(self) -> FeedTopic {
                match self {
                    $( LogKind::$kind => FeedTopic::$topic, )*
                }
            }
        }

        impl LogEntry {
            pub fn kind(&self) -> LogKind {
                match self {
                    $( LogEntry::$kind(_) => LogKind::$kind, )*
                }
            }

            /// Reads the payload of an entry of `kind` (fields it does not know, such as the
            /// carried `record` and `rollout`, are skipped).
            pub fn from_payload<'de, D: Deserializer<'de>>(kind: LogKind, payload: D) -> Result<LogEntry, D::Error> {
                Ok(match kind {
                    $( LogKind::$kind => LogEntry::$kind(<$payload>::deserialize(payload)?), )*
                })
            }

            /// The payload's fields, to serialise (the kind is not among them).
            pub fn payload(&self) -> impl Serialize + '_ {
                PayloadOf(self)
            }
        }

        struct PayloadOf<'a>(&'a LogEntry);

        impl Serialize for PayloadOf<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    $( LogEntry::$kind(payload) => payload.serialize(serializer), )*
                }
            }
        }
    };
}

log_kinds! {
    /// An agent's event (or one synthesised from a heartbeat) applied to its record.
    HostEvent(HostEventApplied) => Host,
    /// The planner queued a dispatch; the host picks it up with its next heartbeat.
    DispatchQueued(DispatchQueued) => Host,
    /// An unacknowledged dispatch was taken back (pause, halt, supersede, quarantine).
    DispatchWithdrawn(NoDetail) => Host,
    /// The record no longer blocks waves or completion (clear-failure).
    HostExcused(NoDetail) => Host,
    /// The record made no progress for the channel's `stuckAfterMinutes`.
    HostStuck(StuckChange) => Host,
    /// A stuck record moved again, or left the states that can be stuck.
    HostUnstuck(StuckChange) => Host,
    /// A Pending host is held by a gate (logged when the gate or its reason changes).
    HostHeld(HostHeld) => Hold,
    /// A rollout opened, with the Pending records it created.
    RolloutOpened(RolloutOpened) => Rollout,
    RolloutStateChanged(RolloutStateChanged) => Rollout,
    WaveAdvanced(WaveAdvanced) => Rollout,
    WaveApproved(WaveApproved) => Rollout,
    QuarantineAdded(QuarantineChange) => Quarantine,
    QuarantineReleased(QuarantineChange) => Quarantine,
    /// A verified fleet and manifest set came into force.
    ManifestSetUpdated(ManifestSummary) => Manifest,
    OperatorAction(OperatorActed) => Operator,
    HostOnline(HostOnline) => Presence,
    HostOffline(HostOffline) => Presence,
    /// A freeze came into force (an operator's stop-the-line; the fleet's own are in the
    /// signed document).
    FreezeStarted(Box<Freeze>) => Policy,
    /// An operator released a freeze.
    FreezeReleased(FreezeReleased) => Policy,
    /// An operator took a host out of every rollout.
    HostSuspended(SuspensionChange) => Policy,
    HostResumed(SuspensionChange) => Policy,
    /// A host of a wave with a failure budget failed and the budget held: the rollout goes on.
    FailureWithinBudget(FailureWithinBudget) => Rollout,
    /// The entries through `upTo` were exported to a sealed segment and leave the database
    /// (retention, SPEC §16).
    LogSealed(LogSealed) => Log,
    /// The observations (repeated probe results, presence changes) among entries
    /// `from..=upTo` were exported to `file` and deleted from the database (SPEC §16).
    LogCompacted(LogCompacted) => Log,
}

impl fmt::Display for LogKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown kind name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown log entry kind {:?}", self.0)
    }
}

impl std::error::Error for UnknownKind {}

impl std::str::FromStr for LogKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<LogKind, UnknownKind> {
        LogKind::ALL.iter().copied().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl Serialize for LogKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<LogKind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEventApplied {
    pub event: HostEvent,
    pub from: HostState,
    pub to: HostState,
    /// The control plane inferred the event from a heartbeat (SPEC §6 recovery synthesis).
    #[serde(default, skip_serializing_if = "is_false")]
    pub synthesized: bool,
    /// A probe result the same as the probe's last one: an observation that
    /// `--observation-retention-days` compacts out of the log (SPEC §16).
    #[serde(default, skip_serializing_if = "is_false")]
    pub repeated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchQueued {
    pub target_closure: Closure,
    pub soak_seconds: u64,
}

/// The payload of kinds whose record (carried alongside) says everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoDetail {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StuckChange {
    pub state: HostState,
    /// Since when the record made no progress (`None` when it left the states that can be
    /// stuck).
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostHeld {
    pub gate: Gate,
    pub reason: String,
    /// When the gate lifts by itself, if it does (see [`crate::state::WaitingOn::until`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreezeReleased {
    pub name: String,
    pub by: String,
    pub reason: String,
}

/// A host suspended or resumed (the entry's `host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuspensionChange {
    pub by: String,
    pub reason: String,
}

/// The entry's host failed in `wave`; `failures` of the wave's `max` are now used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureWithinBudget {
    pub wave: u32,
    pub failures: u64,
    pub max: u64,
    pub reason: String,
}

/// Entries `from..=upTo` were written to `file` (in the archive directory), whose last
/// entry's chain hash is `headHash` (hex); they are deleted from the database after this
/// entry commits. `entries` counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSealed {
    pub from: i64,
    pub up_to: i64,
    pub entries: u64,
    pub head_hash: String,
    pub file: String,
}

/// The observations among entries `from..=upTo` (`entries` of them) were written to `file`
/// in the archive directory, each with its chain hash, and are deleted from the database
/// after this entry commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogCompacted {
    pub from: i64,
    pub up_to: i64,
    pub entries: u64,
    /// None when the range held no observation: the entry then only moves the compaction on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl LogKind {
    /// Kinds that are observations whole: presence changes (the presence table keeps each
    /// host's last). Host events are observations when `repeated`.
    pub const OBSERVATIONS: [LogKind; 2] = [LogKind::HostOnline, LogKind::HostOffline];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutOpened {
    pub hosts: u64,
    pub signed_at: DateTime<Utc>,
    /// Makes the log self-sufficient: replaying it recreates these Pending records.
    pub host_set: Vec<OpenedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenedHost {
    pub hostname: Hostname,
    pub target_closure: Closure,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStateChanged {
    pub from: RolloutState,
    pub to: RolloutState,
    pub input: RolloutInputKind,
    pub halt: Option<Halt>,
    pub superseded_by: Option<RolloutId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveAdvanced {
    pub from: u32,
    pub to: u32,
    pub by: AdvancedBy,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveApproved {
    pub wave: u32,
}

/// A quarantine added (its reason) or released (the release's reason, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineChange {
    pub closure: Closure,
    pub reason: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorActed {
    pub action: OperatorAction,
    pub operator: String,
    pub reason: Option<String>,
    /// A promote with `force`: the wave gate was overridden.
    #[serde(rename = "override")]
    pub forced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostOnline {
    pub current_closure: Option<Closure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostOffline {
    pub last_heartbeat_at: DateTime<Utc>,
}

/// What a stored payload carries besides the entry's fields: the record (`R`) or rollout
/// (`O`) right after the change. The control plane reads its own types back; the dashboard
/// reads the parts it draws.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(bound(deserialize = "R: Deserialize<'de>, O: Deserialize<'de>"))]
pub struct Carried<R, O> {
    #[serde(default = "none")]
    pub record: Option<R>,
    #[serde(default = "none")]
    pub rollout: Option<O>,
}

fn none<T>() -> Option<T> {
    None
}

/// A payload as it is stored: the entry's fields, then the record or rollout it carries.
pub struct StoredPayload<'a, R, O> {
    pub entry: &'a LogEntry,
    pub record: Option<&'a R>,
    pub rollout: Option<&'a O>,
}

impl<R: Serialize, O: Serialize> Serialize for StoredPayload<'_, R, O> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a, R, O> {
            #[serde(flatten)]
            payload: PayloadOf<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            record: Option<&'a R>,
            #[serde(skip_serializing_if = "Option::is_none")]
            rollout: Option<&'a O>,
        }
        Flat { payload: PayloadOf(self.entry), record: self.record, rollout: self.rollout }.serialize(serializer)
    }
}

impl LogKind {
    /// The kinds that record what a person did (SPEC §18's audit): operator actions, uploads,
    /// quarantines, freezes and suspensions. The database's partial index `event_log_audit`
    /// lists the same kinds in the same order (a test compares them).
    pub const AUDITED: [LogKind; 8] = [
        LogKind::OperatorAction,
        LogKind::ManifestSetUpdated,
        LogKind::QuarantineAdded,
        LogKind::QuarantineReleased,
        LogKind::FreezeStarted,
        LogKind::FreezeReleased,
        LogKind::HostSuspended,
        LogKind::HostResumed,
    ];

    /// The kinds a rollout's history is built from (its waves' progress and who acted). The
    /// database's partial index `event_log_progress` lists the same kinds in the same order.
    pub const PROGRESS: [LogKind; 4] =
        [LogKind::WaveAdvanced, LogKind::WaveApproved, LogKind::OperatorAction, LogKind::RolloutStateChanged];
}

impl LogEntry {
    /// Who did what the entry records, for the kinds in [`LogKind::AUDITED`].
    pub fn actor(&self) -> Option<String> {
        Some(match self {
            LogEntry::OperatorAction(a) => a.operator.clone(),
            LogEntry::ManifestSetUpdated(m) => {
                m.uploaded_by.clone().unwrap_or_else(|| crate::api::MANIFESTS_DIRECTORY.to_owned())
            }
            LogEntry::QuarantineAdded(q) | LogEntry::QuarantineReleased(q) => q.by.clone(),
            LogEntry::FreezeStarted(f) => f.by.clone()?,
            LogEntry::FreezeReleased(f) => f.by.clone(),
            LogEntry::HostSuspended(s) | LogEntry::HostResumed(s) => s.by.clone(),
            _ => return None,
        })
    }

    /// The entry in one line of words, as the dashboard and `fleetwave ctl` show it; one arm
    /// per kind, so a new kind does not compile until it says what it means.
    pub fn describe(&self) -> String {
        match self {
            LogEntry::HostEvent(e) => {
                let synth = if e.synthesized { " (inferred from a heartbeat)" } else { "" };
                let moved = if e.from == e.to { e.to.to_string() } else { format!("{} → {}", e.from, e.to) };
                format!("{}{synth} · {moved}", e.event.summary())
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
            LogEntry::ManifestSetUpdated(m) => format!(
                "manifest set in force: {} rollouts{}",
                m.rollouts.len(),
                m.uploaded_by.as_deref().map(|b| format!(" (uploaded by {b})")).unwrap_or_default()
            ),
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
                format!(
                    "failed within wave {}'s budget ({} of {} failures used): {}",
                    f.wave, f.failures, f.max, f.reason
                )
            }
            LogEntry::LogCompacted(c) => format!(
                "{} observations among log entries {}–{} compacted into the archive{}",
                c.entries,
                c.from,
                c.up_to,
                c.file.as_deref().map(|f| format!(" ({f})")).unwrap_or_default()
            ),
            LogEntry::LogSealed(s) => {
                format!(
                    "log entries {}–{} sealed into the archive ({}); the database keeps the rest",
                    s.from, s.up_to, s.file
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids::Closure;

    #[test]
    fn every_kind_is_named_once_and_parses_back() {
        for (i, kind) in LogKind::ALL.iter().enumerate() {
            assert_eq!(kind.as_str().parse::<LogKind>(), Ok(*kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(LogKind::ALL.iter().position(|k| k.as_str() == kind.as_str()), Some(i), "{kind} named twice");
        }
        assert!("Exploded".parse::<LogKind>().is_err());
        assert!(serde_json::from_str::<LogKind>("\"Exploded\"").is_err());
        // Every topic has kinds published under it.
        for topic in FeedTopic::ALL {
            assert!(LogKind::ALL.iter().any(|k| k.topic() == topic), "{topic:?}");
        }
    }

    #[test]
    fn a_stored_payload_is_the_fields_and_what_it_carries_and_reads_back() {
        let entry = LogEntry::HostHeld(HostHeld { gate: Gate::Wave, reason: "later".into(), until: None });
        let record = json!({"hostname": "a", "state": "Pending"});
        let stored =
            serde_json::to_value(StoredPayload::<_, ()> { entry: &entry, record: Some(&record), rollout: None })
                .unwrap();
        assert_eq!(stored, json!({"gate": "wave", "reason": "later", "record": record}));
        let text = stored.to_string();
        let back = LogEntry::from_payload(LogKind::HostHeld, &mut serde_json::Deserializer::from_str(&text)).unwrap();
        assert_eq!(back, entry);
        let carried: Carried<serde_json::Value, serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!((carried.record, carried.rollout), (Some(record), None));
        // A payload of another kind does not read as this one.
        assert!(LogEntry::from_payload(LogKind::WaveApproved, &mut serde_json::Deserializer::from_str(&text)).is_err());
    }

    #[test]
    fn synthesized_is_written_only_when_true() {
        let event = HostEvent::ActivationStarted { seq: 1, started_at: chrono::DateTime::UNIX_EPOCH };
        let mut applied = HostEventApplied {
            event,
            from: HostState::Pending,
            to: HostState::Activating,
            synthesized: false,
            repeated: false,
        };
        assert!(serde_json::to_value(&applied).unwrap().get("synthesized").is_none());
        applied.synthesized = true;
        assert_eq!(serde_json::to_value(&applied).unwrap()["synthesized"], true);
        let closure = Closure::parse("/nix/store/x").unwrap();
        let queued = LogEntry::DispatchQueued(DispatchQueued { target_closure: closure, soak_seconds: 5 });
        assert_eq!(queued.kind(), LogKind::DispatchQueued);
        assert_eq!(queued.kind().topic(), FeedTopic::Host);
    }
}
