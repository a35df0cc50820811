//! Bodies of the HTTP API (SPEC §9).

use serde::{Deserialize, Serialize};

/// `GET /api/v1/version`: what is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionInfo {
    /// Always `"fleetwave"`.
    pub name: String,
    /// The crate version of the control plane, e.g. `0.1.0`.
    pub version: String,
    /// Version of the wire API, e.g. `v1`.
    pub api: String,
}

/// Every error the API returns: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiErrorBody {
    pub error: ApiError,
}

/// A stable kebab-case `code` for programs and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// With `log-sealed`: the first seq the database still holds.
    #[serde(default, rename = "firstSeq", skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<i64>,
}

/// Every error code the API answers with (the `code` of [`ApiError`]), one definition: a
/// stable kebab-case name for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// No trust roots are configured: nothing can be verified.
    NoTrustRoots,
    /// A signed artifact is not well-formed.
    Malformed,
    /// A signature does not verify (artifact or agent request).
    BadSignature,
    /// The document's schemaVersion is not understood.
    UnsupportedSchema,
    /// The document has no meta.signedAt.
    NotSigned,
    /// Signed before the trust configuration's rejectBefore.
    RejectedBefore,
    /// Signed longer ago than the freshness window.
    Stale,
    /// Signed more than 60 s in the future.
    FutureDated,
    /// The fleet or a manifest breaks a consistency rule.
    Inconsistent,
    /// Signed before what is in force (SPEC §2.4).
    OlderThanCurrent,
    /// The event's seq was already applied.
    Duplicate,
    /// The event does not apply in the record's state.
    IllegalForState,
    /// A guard of the state machine failed.
    Invariant,
    /// A string, list or number is past its limit (shared::limits).
    LimitExceeded,
    /// The host has no open record in that rollout.
    UnknownRecord,
    /// The body names another host than the one that signed.
    WrongHost,
    /// The signing host is not in the verified fleet.
    UnknownHost,
    /// The request's timestamp is more than 60 s off.
    SkewedTimestamp,
    /// The request's timestamp is missing or not a number.
    BadTimestamp,
    /// This signature was already used.
    ReplayedSignature,
    /// No valid token or session.
    Unauthenticated,
    /// The operator's role does not allow this.
    Forbidden,
    /// A change authenticated by the session cookie came without `X-Fleetwave-Csrf: 1`.
    Csrf,
    /// There is no such rollout.
    UnknownRollout,
    /// There is no such channel.
    UnknownChannel,
    /// The action does not apply to the rollout as it is.
    NotApplicable,
    /// The closure is already quarantined on the channel.
    AlreadyQuarantined,
    /// The closure is not quarantined on the channel.
    NotQuarantined,
    /// A freeze of that name is already in force.
    AlreadyFrozen,
    /// No freeze of that name is in force (or it is the signed fleet's and only a new fleet
    /// lifts it).
    UnknownFreeze,
    /// The host is already suspended.
    AlreadySuspended,
    /// The host is not suspended.
    NotSuspended,
    /// No such route or resource.
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// A path parameter is not a valid name.
    BadId,
    /// The query string is not valid.
    BadQuery,
    /// Last-Event-ID is not an event-log seq.
    BadLastEventId,
    /// Last-Event-ID is beyond the log.
    AheadOfLog,
    /// The request body is larger than the route takes.
    BodyTooLarge,
    /// The request body stopped arriving.
    BodyTimeout,
    /// The request body could not be read.
    UnreadableBody,
    /// The JSON body does not have the expected shape.
    InvalidBody,
    /// The body is not JSON.
    MalformedJson,
    /// The body's content type is not taken.
    UnsupportedMediaType,
    /// Not ready: no verified fleet yet, shutting down or reloading.
    NotReady,
    /// The database did not answer.
    StorageUnavailable,
    /// The database's filesystem is nearly full.
    DiskFull,
    /// A write reached a replica that does not lead, and no leader is known to pass it to.
    NoLeader,
    /// The entries asked for were sealed into the archive and left the database (SPEC §16);
    /// `firstSeq` says where the log now begins.
    LogSealed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 49] = [
        ErrorCode::NoTrustRoots,
        ErrorCode::Malformed,
        ErrorCode::BadSignature,
        ErrorCode::UnsupportedSchema,
        ErrorCode::NotSigned,
        ErrorCode::RejectedBefore,
        ErrorCode::Stale,
        ErrorCode::FutureDated,
        ErrorCode::Inconsistent,
        ErrorCode::OlderThanCurrent,
        ErrorCode::Duplicate,
        ErrorCode::IllegalForState,
        ErrorCode::Invariant,
        ErrorCode::LimitExceeded,
        ErrorCode::UnknownRecord,
        ErrorCode::WrongHost,
        ErrorCode::UnknownHost,
        ErrorCode::SkewedTimestamp,
        ErrorCode::BadTimestamp,
        ErrorCode::ReplayedSignature,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::Csrf,
        ErrorCode::UnknownRollout,
        ErrorCode::UnknownChannel,
        ErrorCode::NotApplicable,
        ErrorCode::AlreadyQuarantined,
        ErrorCode::NotQuarantined,
        ErrorCode::AlreadyFrozen,
        ErrorCode::UnknownFreeze,
        ErrorCode::AlreadySuspended,
        ErrorCode::NotSuspended,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BadId,
        ErrorCode::BadQuery,
        ErrorCode::BadLastEventId,
        ErrorCode::AheadOfLog,
        ErrorCode::BodyTooLarge,
        ErrorCode::BodyTimeout,
        ErrorCode::UnreadableBody,
        ErrorCode::InvalidBody,
        ErrorCode::MalformedJson,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NotReady,
        ErrorCode::StorageUnavailable,
        ErrorCode::DiskFull,
        ErrorCode::NoLeader,
        ErrorCode::LogSealed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoTrustRoots => "no-trust-roots",
            ErrorCode::Malformed => "malformed",
            ErrorCode::BadSignature => "bad-signature",
            ErrorCode::UnsupportedSchema => "unsupported-schema",
            ErrorCode::NotSigned => "not-signed",
            ErrorCode::RejectedBefore => "rejected-before",
            ErrorCode::Stale => "stale",
            ErrorCode::FutureDated => "future-dated",
            ErrorCode::Inconsistent => "inconsistent",
            ErrorCode::OlderThanCurrent => "older-than-current",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::IllegalForState => "illegal-for-state",
            ErrorCode::Invariant => "invariant",
            ErrorCode::LimitExceeded => "limit-exceeded",
            ErrorCode::UnknownRecord => "unknown-record",
            ErrorCode::WrongHost => "wrong-host",
            ErrorCode::UnknownHost => "unknown-host",
            ErrorCode::SkewedTimestamp => "skewed-timestamp",
            ErrorCode::BadTimestamp => "bad-timestamp",
            ErrorCode::ReplayedSignature => "replayed-signature",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Csrf => "csrf",
            ErrorCode::UnknownRollout => "unknown-rollout",
            ErrorCode::UnknownChannel => "unknown-channel",
            ErrorCode::NotApplicable => "not-applicable",
            ErrorCode::AlreadyQuarantined => "already-quarantined",
            ErrorCode::NotQuarantined => "not-quarantined",
            ErrorCode::AlreadyFrozen => "already-frozen",
            ErrorCode::UnknownFreeze => "unknown-freeze",
            ErrorCode::AlreadySuspended => "already-suspended",
            ErrorCode::NotSuspended => "not-suspended",
            ErrorCode::NotFound => "not-found",
            ErrorCode::MethodNotAllowed => "method-not-allowed",
            ErrorCode::BadId => "bad-id",
            ErrorCode::BadQuery => "bad-query",
            ErrorCode::BadLastEventId => "bad-last-event-id",
            ErrorCode::AheadOfLog => "ahead-of-log",
            ErrorCode::BodyTooLarge => "body-too-large",
            ErrorCode::BodyTimeout => "body-timeout",
            ErrorCode::UnreadableBody => "unreadable-body",
            ErrorCode::InvalidBody => "invalid-body",
            ErrorCode::MalformedJson => "malformed-json",
            ErrorCode::UnsupportedMediaType => "unsupported-media-type",
            ErrorCode::NotReady => "not-ready",
            ErrorCode::StorageUnavailable => "storage-unavailable",
            ErrorCode::DiskFull => "disk-full",
            ErrorCode::NoLeader => "no-leader",
            ErrorCode::LogSealed => "log-sealed",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ApiErrorBody {
            error: ApiError { code: ErrorCode::NotFound, message: "No such route.".into(), first_seq: None },
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json, serde_json::json!({"error": {"code": "not-found", "message": "No such route."}}));
    }

    #[test]
    fn operator_actions_name_themselves_as_their_wire_tag() {
        let (r, c, x) = (
            RolloutId::parse("stable@a1").unwrap(),
            Channel::parse("stable").unwrap(),
            Closure::parse("/nix/store/x").unwrap(),
        );
        let all = [
            OperatorAction::ApproveWave { rollout_id: r.clone(), wave: 1 },
            OperatorAction::Promote { rollout_id: r.clone(), to_wave: 1, force: false },
            OperatorAction::Pause { rollout_id: r.clone() },
            OperatorAction::Resume { rollout_id: r.clone() },
            OperatorAction::ClearFailure { rollout_id: r },
            OperatorAction::Quarantine { channel: c.clone(), closure: x.clone() },
            OperatorAction::Release { channel: c, closure: x },
            OperatorAction::Freeze { name: None, selector: None, until: None },
            OperatorAction::Unfreeze { name: "f".into() },
            OperatorAction::SuspendHost { hostname: Hostname::parse("h1").unwrap() },
            OperatorAction::ResumeHost { hostname: Hostname::parse("h1").unwrap() },
        ];
        for action in all {
            let json = serde_json::to_value(&action).unwrap();
            assert_eq!(json["action"], action.name());
            assert_eq!(serde_json::from_value::<OperatorAction>(json).unwrap(), action);
        }
    }

    #[test]
    fn error_codes_name_themselves_as_on_the_wire_and_once() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(ErrorCode::ALL.iter().position(|c| c.as_str() == code.as_str()), Some(i), "{code} twice");
        }
    }

    #[test]
    fn version_info_is_camel_case_and_strict() {
        let v: VersionInfo = serde_json::from_str(r#"{"name":"fleetwave","version":"0.1.0","api":"v1"}"#).unwrap();
        assert_eq!(v.api, "v1");
        let unknown =
            serde_json::from_str::<VersionInfo>(r#"{"name":"fleetwave","version":"0.1.0","api":"v1","extra":1}"#);
        assert!(unknown.is_err(), "unknown fields must be rejected");
    }
}

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ids::{Channel, Closure, Hostname, RolloutId};
use crate::log::{Carried, LogEntry, LogKind};
use crate::manifest::Selector;
use crate::state::{Halt, HostState, RolloutState, WaitingOn};

/// One host inside a rollout, as the dashboard draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostCell {
    pub hostname: Hostname,
    pub state: HostState,
    pub target_closure: Closure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<WaitingOn>,
    pub stuck: bool,
    pub excused: bool,
    /// The host is suspended (SPEC §17): skipped by every rollout, excused for its waves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    pub last_event_seq: u64,
}

impl HostCell {
    /// The cell as the dashboard shows it: what it waits on only while it is Pending (a record
    /// keeps its last hold until the next pass clears it).
    pub fn shown(mut self) -> HostCell {
        if self.state != HostState::Pending {
            self.waiting_on = None;
        }
        self
    }
}

/// A rollout's own state, as carried by feed entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutHeader {
    pub rollout_id: RolloutId,
    pub channel: Channel,
    pub state: RolloutState,
    pub current_wave: u32,
    pub approved_waves: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<Halt>,
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<RolloutId>,
}

/// `GET /api/v1/channels/{channel}/history`: the channel's rollouts, newest first; `next` is
/// the `before` of the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChannelHistory {
    pub channel: Channel,
    pub rollouts: Vec<RolloutHistory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<RolloutId>,
}

/// One rollout of a channel's history: how it ended, its waves' timings, who did what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutHistory {
    #[serde(flatten)]
    pub header: RolloutHeader,
    pub waves: Vec<WaveHistory>,
    /// Operators' actions on the rollout, oldest first.
    pub actions: Vec<ActionRecord>,
}

/// When a wave opened and completed, how long it took, and its approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WaveHistory {
    pub index: u32,
    pub soak_minutes: u64,
    pub requires_approval: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// When the rollout moved past it (or completed in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// From opening to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
    /// From the wave opening until it was approved (0 when approved before it opened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_wait_seconds: Option<u64>,
    /// Left by a promote that overrode its gates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// An operator's action, as the history lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub at: DateTime<Utc>,
    pub operator: String,
    /// In words ("approve-wave by ana: …").
    pub what: String,
}

/// What a control-plane replica does (SPEC §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// Runs the reducer: every write ends here.
    Leader,
    /// Serves reads and the feed from the database, passes writes to the leader.
    Follower,
}

impl ReplicaRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaRole::Leader => "leader",
            ReplicaRole::Follower => "follower",
        }
    }
}

/// Which database the control plane keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// One process, one file.
    Sqlite,
    /// Any number of replicas.
    Postgres,
}

/// One replica as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// Its advertised URL, which also names it.
    pub url: String,
    pub role: ReplicaRole,
    /// The leader epoch it last saw.
    pub epoch: i64,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// The leader, as the leader row names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    pub url: String,
    pub epoch: i64,
    pub since: DateTime<Utc>,
}

/// `GET /api/v1/cluster`: the replica that answers, the leader it knows, and every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub database: DatabaseKind,
    /// The replica that answered.
    pub this: ReplicaView,
    /// None while no replica leads (a takeover is under way).
    pub leader: Option<LeaderView>,
    /// Every replica that ever ran against this database, by URL.
    pub replicas: Vec<ReplicaView>,
}

/// `GET /api/v1/rollouts` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    #[serde(flatten)]
    pub header: RolloutHeader,
    pub hosts: u64,
    pub counts: BTreeMap<HostState, u64>,
    pub converged_percent: f64,
    /// Per wave (and "unstaged"), counts by state: what the fleet page draws without fetching
    /// each rollout.
    #[serde(default)]
    pub waves: Vec<WaveCounts>,
    /// Hosts flagged stuck (SPEC §6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<Hostname>,
}

/// One wave's counts in a [`RolloutSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WaveCounts {
    /// `None` for hosts in no wave of a waved channel ("unstaged").
    pub index: Option<u32>,
    pub counts: BTreeMap<HostState, u64>,
}

/// One wave column of the rollout page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WaveView {
    /// `None` for hosts in no wave of a waved channel ("unstaged").
    pub index: Option<u32>,
    pub soak_minutes: u64,
    pub requires_approval: bool,
    pub approved: bool,
    pub hosts: Vec<HostCell>,
    pub counts: BTreeMap<HostState, u64>,
    pub converged_percent: f64,
    /// The wave's failure budget (SPEC §17), when its policy sets `maxFailures`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<FailureBudgetUse>,
}

/// How much of a wave's failure budget is used: "1 of 2 failures used".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FailureBudgetUse {
    /// Hosts of the wave that failed (Failed or Reverted).
    pub used: u64,
    /// How many may fail without halting the rollout.
    pub max: u64,
}

/// `GET /api/v1/rollouts/{id}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutDetail {
    #[serde(flatten)]
    pub header: RolloutHeader,
    pub waves: Vec<WaveView>,
    /// The event-log seq this answer reflects; pass it as `Last-Event-ID` to the feed.
    pub as_of: i64,
    /// The seq of the rollout's first log entry: where a replay of its timeline starts.
    #[serde(default)]
    pub first_seq: i64,
    /// Set when the start of the rollout's log was sealed into the log archive (SPEC §16):
    /// the seq the database's log now begins at. Its timeline cannot be replayed then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_before: Option<i64>,
    /// Set on a replay (`?at=`): when the rollout's last entry up to `asOf` was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<DateTime<Utc>>,
    /// Set once retention replaced the ended rollout's host records by their tally (SPEC
    /// §16): each wave has its counts and no hosts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hosts_tallied: bool,
}

/// A committed event-log entry: a row of `GET /api/v1/rollouts/{id}/events` and the feed's
/// `data`. The payload is kept as the JSON text it was stored as (the server sends it on
/// without re-rendering it); [`LogEvent::entry`] reads it as the typed entry and
/// [`LogEvent::carried`] the record or rollout it carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub kind: LogKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<RolloutId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Hostname>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Box<serde_json::value::RawValue>,
}

impl LogEvent {
    /// The typed entry.
    pub fn entry(&self) -> Result<LogEntry, serde_json::Error> {
        LogEntry::from_payload(self.kind, &mut serde_json::Deserializer::from_str(self.payload.get()))
    }

    /// What the entry is about: its rollout and host, as far as it has them ("stable@a1 web-01").
    pub fn about(&self) -> String {
        let parts = [self.rollout_id.as_ref().map(RolloutId::as_str), self.host.as_ref().map(Hostname::as_str)];
        parts.into_iter().flatten().collect::<Vec<_>>().join(" ")
    }

    /// The entry in one line of words ([`LogEntry::describe`]); one whose payload cannot be
    /// read says so.
    pub fn describe(&self) -> String {
        match self.entry() {
            Ok(entry) => entry.describe(),
            Err(err) => format!("{} (unreadable: {err})", self.kind),
        }
    }

    /// The record (`R`) or rollout (`O`) the entry carries, as the caller's view of them.
    pub fn carried<R: serde::de::DeserializeOwned, O: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Carried<R, O>, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    pub events: Vec<LogEvent>,
}

/// One line of `GET /api/v1/audit` (JSON lines): an entry of the event log that records what
/// a person did ([`crate::log::LogKind::AUDITED`]), who did it, and the entry in words.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// The operator; `manifests-directory` for a release read from the server's directory.
    pub actor: String,
    /// The entry in words.
    pub what: String,
    /// The log entry itself.
    pub entry: LogEvent,
}

/// `GET /api/v1/webhooks`: one webhook and how its delivery stands (SPEC §18).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub name: String,
    /// Without credentials or query.
    pub url: String,
    /// `json` or `slack`.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<LogKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<Channel>>,
    /// The last log seq delivered (or passed over as not wanted).
    pub cursor: i64,
    /// Log entries after the cursor (wanted or not).
    pub behind: i64,
    /// Deliveries since the server started.
    pub delivered: u64,
    pub failed_attempts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// While the entry after the cursor keeps failing: since when, and the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /api/v1/rollouts/{id}/changes`: what the rollout changes on its hosts, per target
/// closure (SPEC §18), as its signed manifest says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutChanges {
    pub targets: Vec<TargetChanges>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TargetChanges {
    pub closure: Closure,
    /// Hosts of the rollout going to it.
    pub hosts: u64,
    /// None: the release carries no summary for it ("no diff available").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<crate::manifest::ClosureChanges>,
}

/// Who an audited entry names as having done it.
pub const MANIFESTS_DIRECTORY: &str = "manifests-directory";

impl LogEvent {
    /// The audit line of this entry, if it is one a person did.
    pub fn audit(&self) -> Option<AuditEntry> {
        let entry = self.entry().ok()?;
        let actor = entry.actor()?;
        Some(AuditEntry { actor, what: entry.describe(), entry: self.clone() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    pub channel: Channel,
    pub closure: Closure,
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<String>,
}

/// `GET /api/v1/quarantines`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Quarantines {
    pub active: Vec<QuarantineEntry>,
    pub released: Vec<QuarantineEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetHost {
    pub hostname: Hostname,
    pub channel: Channel,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub online: bool,
    /// Set while the host is suspended (SPEC §17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<crate::policy::Suspension>,
}

/// One host found by `GET /api/v1/hosts`: where it is, what it runs, and its state in its
/// channel's current rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostHit {
    pub hostname: Hostname,
    pub channel: Channel,
    pub tags: Vec<String>,
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<Closure>,
    /// The channel's current rollout, when the host has a record in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<RolloutId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
}

/// A page of hosts in name order; `next` is the `after` of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostSearchPage {
    pub hosts: Vec<HostHit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Hostname>,
}

/// What `GET /api/v1/hosts` filters by, as the query string carries it (every filter must
/// hold). Also what the dashboard's search box reads from words such as
/// `web- tag:eu state:Failed channel:stable closure:nginx` ([`HostQuery::from_words`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostQuery {
    /// Hostname prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A host state (`Failed`, …) in the channel's current rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Text the closure the host runs contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure: Option<String>,
    /// The page continues after this hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl HostQuery {
    /// Hosts per page unless `limit` says otherwise, and the most a page holds.
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;
    /// The longest filter text accepted.
    pub const MAX_TEXT_BYTES: usize = 256;

    /// Reads a search box: `key:value` words for channel, tag, state and closure, any other
    /// word a hostname prefix (the last one wins). State names are matched without regard to
    /// case (`state:failed`).
    pub fn from_words(text: &str) -> HostQuery {
        let mut query = HostQuery::default();
        for word in text.split_whitespace() {
            let (slot, value) = match word.split_once(':') {
                Some(("channel", v)) => (&mut query.channel, v),
                Some(("tag", v)) => (&mut query.tag, v),
                Some(("state", v)) => (&mut query.state, v),
                Some(("closure", v)) => (&mut query.closure, v),
                _ => (&mut query.q, word),
            };
            if !value.is_empty() {
                *slot = Some(value.to_owned());
            }
        }
        if let Some(state) = &query.state
            && let Some(known) = HostState::ALL.iter().find(|s| s.as_str().eq_ignore_ascii_case(state))
        {
            query.state = Some(known.as_str().to_owned());
        }
        query
    }

    /// The query string (`q=web-&state=Failed`), values percent-encoded.
    pub fn to_query_string(&self) -> String {
        let pairs = [
            ("q", self.q.as_deref()),
            ("channel", self.channel.as_deref()),
            ("tag", self.tag.as_deref()),
            ("state", self.state.as_deref()),
            ("closure", self.closure.as_deref()),
            ("after", self.after.as_deref()),
        ];
        let mut parts: Vec<String> =
            pairs.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(v)))).collect();
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        parts.join("&")
    }

    /// No filter at all.
    pub fn is_empty(&self) -> bool {
        self.q.is_none()
            && self.channel.is_none()
            && self.tag.is_none()
            && self.state.is_none()
            && self.closure.is_none()
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetChannel {
    pub name: Channel,
    pub rollout_policy: String,
    pub hosts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_rollout: Option<RolloutId>,
}

/// `GET /api/v1/fleet`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetOverview {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_hash: Option<String>,
    pub channels: Vec<FleetChannel>,
    pub hosts: Vec<FleetHost>,
}

/// `POST /api/v1/session` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub token: String,
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Whoami {
    pub name: String,
    pub role: String,
}

/// One record of a host, with the rollout it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostRecordView {
    pub rollout_id: RolloutId,
    #[serde(flatten)]
    pub cell: HostCell,
}

/// `GET /api/v1/hosts/{hostname}`: a host, its records across rollouts, its recent events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostDetail {
    pub host: FleetHost,
    /// What the host booted, as its last heartbeat said (agents before issue 20 do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_closure: Option<Closure>,
    pub records: Vec<HostRecordView>,
    pub events: Vec<LogEvent>,
}

/// `POST /api/v1/manifests`: what came into force (also logged as `ManifestSetUpdated`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    pub fleet_hash: String,
    pub hosts: u64,
    pub channels: u64,
    pub rollouts: Vec<RolloutId>,
    /// For each accepted manifest of the upload that opens no rollout, why (an identical
    /// hostSet, or a newer release of its channel in force).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opens_nothing: Vec<String>,
    /// The operator who uploaded it; none when it was read from the manifests directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_by: Option<String>,
}

/// Operator actions (SPEC §7), as the reducer takes them and the log records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum OperatorAction {
    #[serde(rename_all = "camelCase")]
    ApproveWave {
        rollout_id: RolloutId,
        wave: u32,
    },
    #[serde(rename_all = "camelCase")]
    Promote {
        rollout_id: RolloutId,
        to_wave: u32,
        force: bool,
    },
    #[serde(rename_all = "camelCase")]
    Pause {
        rollout_id: RolloutId,
    },
    #[serde(rename_all = "camelCase")]
    Resume {
        rollout_id: RolloutId,
    },
    #[serde(rename_all = "camelCase")]
    ClearFailure {
        rollout_id: RolloutId,
    },
    Quarantine {
        channel: Channel,
        closure: Closure,
    },
    Release {
        channel: Channel,
        closure: Closure,
    },
    /// Stop the line (SPEC §17): nothing new is dispatched to the hosts `selector` picks (the
    /// whole fleet without one) until `until` or until released. Without a name the control
    /// plane chooses one.
    Freeze {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<Selector>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
    Unfreeze {
        name: String,
    },
    /// Take a host out of every rollout until it is resumed.
    SuspendHost {
        hostname: Hostname,
    },
    ResumeHost {
        hostname: Hostname,
    },
}

impl OperatorAction {
    /// The action's name (the `action` tag on the wire).
    pub fn name(&self) -> &'static str {
        match self {
            OperatorAction::ApproveWave { .. } => "approve-wave",
            OperatorAction::Promote { .. } => "promote",
            OperatorAction::Pause { .. } => "pause",
            OperatorAction::Resume { .. } => "resume",
            OperatorAction::ClearFailure { .. } => "clear-failure",
            OperatorAction::Quarantine { .. } => "quarantine",
            OperatorAction::Release { .. } => "release",
            OperatorAction::Freeze { .. } => "freeze",
            OperatorAction::Unfreeze { .. } => "unfreeze",
            OperatorAction::SuspendHost { .. } => "suspend-host",
            OperatorAction::ResumeHost { .. } => "resume-host",
        }
    }

    /// The rollout the action is about (`None` for quarantines, freezes and suspensions).
    pub fn rollout_id(&self) -> Option<&RolloutId> {
        match self {
            OperatorAction::ApproveWave { rollout_id, .. }
            | OperatorAction::Promote { rollout_id, .. }
            | OperatorAction::Pause { rollout_id }
            | OperatorAction::Resume { rollout_id }
            | OperatorAction::ClearFailure { rollout_id } => Some(rollout_id),
            OperatorAction::Quarantine { .. }
            | OperatorAction::Release { .. }
            | OperatorAction::Freeze { .. }
            | OperatorAction::Unfreeze { .. }
            | OperatorAction::SuspendHost { .. }
            | OperatorAction::ResumeHost { .. } => None,
        }
    }
}

/// The body of `POST /rollouts/{id}/pause`, `/resume` and `/clear-failure` (may be empty):
/// every action may carry a reason, which the log records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /rollouts/{id}/approve`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    pub wave: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /rollouts/{id}/promote`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PromoteBody {
    pub to_wave: u32,
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /quarantines` and `POST /quarantines/release`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuarantineBody {
    pub channel: Channel,
    pub closure: Closure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to an operator action: the seq of the log entry recording it, and what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OperatorOutcome {
    pub seq: i64,
    pub message: String,
    /// The name of what the action created, where it names one (`POST /freezes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[cfg(test)]
mod host_query_tests {
    use super::*;

    #[test]
    fn a_search_box_reads_as_filters_and_the_rest_as_a_hostname_prefix() {
        let q = HostQuery::from_words("  edge- state:failed tag:eu channel:edge closure:broken-nginx ");
        assert_eq!(q.q.as_deref(), Some("edge-"));
        assert_eq!(q.state.as_deref(), Some("Failed"), "state names in any case");
        assert_eq!((q.tag.as_deref(), q.channel.as_deref()), (Some("eu"), Some("edge")));
        assert_eq!(q.closure.as_deref(), Some("broken-nginx"));
        assert_eq!(q.to_query_string(), "q=edge-&channel=edge&tag=eu&state=Failed&closure=broken-nginx");
        // An unknown state is passed on for the server to refuse; an empty value is no filter.
        let q = HostQuery::from_words("state:Sleepy tag:");
        assert_eq!((q.state.as_deref(), q.tag), (Some("Sleepy"), None));
        assert!(HostQuery::from_words("   ").is_empty());
        let odd = HostQuery { closure: Some("a b&c/é".into()), limit: Some(5), ..HostQuery::default() };
        assert_eq!(odd.to_query_string(), "closure=a%20b%26c%2F%C3%A9&limit=5");
    }
}
