//! Signed inputs (SPEC §2): the trust configuration, the fleet document, the per-channel
//! rollout manifest, and the detached-signature envelope they travel in.
//!
//! These are the typed forms of documents whose *canonical bytes* were verified; they are
//! never re-serialised for verification. Unknown fields are rejected: new fields come with a
//! new `schemaVersion` (fleet documents: 1, or 2 for the policies of SPEC §17 — freezes,
//! maintenance windows, failure budgets).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{Channel, Closure, Hostname};

/// `{ "artifact": <base64 of the JSON bytes>, "signature": <base64 Ed25519 signature> }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedArtifact {
    pub artifact: String,
    pub signature: String,
}

/// `trust.json` (SPEC §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustConfig {
    pub schema_version: u32,
    pub ci_release_key: KeySlots,
    pub freshness_window_minutes: u64,
}

/// CI release keys (standard base64 of the raw 32 bytes) and the rotation window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySlots {
    pub current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_before: Option<DateTime<Utc>>,
}

/// `fleet.json` (SPEC §2.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetDocument {
    pub schema_version: u32,
    pub meta: FleetMeta,
    pub hosts: BTreeMap<Hostname, HostEntry>,
    pub channels: BTreeMap<Channel, ChannelEntry>,
    pub rollout_policies: BTreeMap<String, RolloutPolicy>,
    #[serde(default)]
    pub waves: BTreeMap<Channel, Vec<FleetWave>>,
    #[serde(default)]
    pub edges: Vec<HostEdge>,
    #[serde(default)]
    pub channel_edges: Vec<ChannelEdge>,
    #[serde(default)]
    pub disruption_budgets: Vec<DisruptionBudget>,
    /// Signed change freezes (SPEC §17; schemaVersion 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<FleetFreeze>,
    /// Hosts covered by a window are dispatched only inside one (SPEC §17; schemaVersion 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_windows: Vec<MaintenanceWindow>,
}

/// A signed freeze: nothing new is dispatched to the hosts it selects from `from` until `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetFreeze {
    pub name: String,
    pub selector: Selector,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
}

/// A weekly maintenance window in a time zone: `days` are three-letter English day names
/// (`"Mon"` … `"Sun"`), `start` and `end` are `"HH:MM"` wall-clock times on those days
/// (`end` after `start`; `"24:00"` is the end of the day), `timezone` an IANA name. Checked
/// when the fleet is verified (the planner's `window` gate reads the parsed form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub name: String,
    pub selector: Selector,
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
    pub timezone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetMeta {
    pub signed_at: Option<DateTime<Utc>>,
    pub ci_commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEntry {
    pub channel: Channel,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure: Option<Closure>,
    /// Standard base64 of the host's raw 32-byte Ed25519 public key.
    pub pubkey: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelEntry {
    pub rollout_policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicy {
    #[serde(default)]
    pub waves: Vec<PolicyWave>,
    pub on_health_failure: HealthFailurePolicy,
    pub stuck_after_minutes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyWave {
    pub soak_minutes: u64,
    #[serde(default)]
    pub requires_approval: bool,
    /// How many hosts of the wave may fail without halting the rollout: a count or a
    /// percentage of the wave (`"10%"`, rounded down). SPEC §17; schemaVersion 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<MaxFailures>,
}

/// `maxFailures` as written: a count (`2`) or a percentage of the wave (`"10%"`). Anything
/// else is refused when the fleet is verified, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum MaxFailures {
    Count(i64),
    Text(String),
    /// Anything else (refused at verification, naming the field).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    Other(serde_json::Value),
}

/// What an agent does when enforce probes fail (SPEC §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HealthFailurePolicy {
    #[serde(rename = "halt")]
    Halt,
    #[serde(rename = "rollback-and-halt")]
    RollbackAndHalt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetWave {
    pub hosts: Vec<Hostname>,
}

/// `gates` must be Converged (or Deferred) before `gated` is dispatched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEdge {
    pub gates: Hostname,
    pub gated: Hostname,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `gated` channel waits for the `gates` channel's rollout to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelEdge {
    pub gates: Channel,
    pub gated: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisruptionBudget {
    pub name: String,
    pub selector: Selector,
    pub max_in_flight: u32,
}

/// OR of the rules that are set; an empty selector matches nothing (SPEC §2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<Hostname>>,
    /// Matches a host that has every one of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Matches a host that has any of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_any: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

impl Selector {
    pub fn matches(&self, hostname: &Hostname, host: &HostEntry) -> bool {
        let all = self.all == Some(true);
        let by_host = self.hosts.as_ref().is_some_and(|hosts| hosts.contains(hostname));
        let by_tags =
            self.tags.as_ref().is_some_and(|tags| !tags.is_empty() && tags.iter().all(|t| host.tags.contains(t)));
        let by_any = self.tags_any.as_ref().is_some_and(|tags| tags.iter().any(|t| host.tags.contains(t)));
        let by_channel = self.channel.as_ref() == Some(&host.channel);
        all || by_host || by_tags || by_any || by_channel
    }
}

/// `rollouts/{channel}@{ref}.json` (SPEC §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutManifest {
    pub schema_version: u32,
    pub channel: Channel,
    pub channel_ref: String,
    pub meta: ManifestMeta,
    pub fleet_hash: String,
    pub host_set: Vec<HostSetEntry>,
    /// What changes in each target closure against what its hosts ran before (SPEC §18;
    /// schemaVersion 2, written by `fleetwave release --diff-from`). A target closure not
    /// listed has no change summary ("no diff available").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closures: Option<BTreeMap<Closure, ClosureChanges>>,
}

/// What changes in one closure (`nix store diff-closures` from the closure its hosts ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClosureChanges {
    /// The closure's whole size (its references included), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The closure it was compared with, and that one's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Closure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_size_bytes: Option<u64>,
    /// One per package whose versions differ: added (no `from`), removed (no `to`), or
    /// changed.
    pub changes: Vec<PackageChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageChange {
    pub package: String,
    /// The versions before, as diff-closures lists them ("1.2, 1.3"; "" for a package
    /// without a version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// How much the package's share of the closure grew (negative: shrank), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_delta_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestMeta {
    pub signed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSetEntry {
    pub hostname: Hostname,
    /// Informational: the planner reads waves from the fleet document.
    pub wave: u32,
    pub target_closure: Closure,
}
