//! Rollout policies an operator sets at run time (SPEC §17): freezes ("stop the line") and
//! suspended hosts, as the reducer holds them, the database stores them and the API shows
//! them. The signed fleet's own freezes and maintenance windows are in [`crate::manifest`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::Hostname;
use crate::manifest::Selector;

/// Longest freeze name an operator may choose (`[A-Za-z0-9._-]`).
pub const MAX_FREEZE_NAME_BYTES: usize = 64;
/// Most operator freezes in force at once.
pub const MAX_OPERATOR_FREEZES: usize = 100;
/// Most hosts in one freeze selector's `hosts` list (and tags in its tag lists).
pub const MAX_SELECTOR_ITEMS: usize = 10_000;
/// Longest reason of an operator action, in bytes.
pub const MAX_ACTION_REASON_BYTES: usize = 1024;

/// Where a freeze comes from: the signed fleet document, or an operator's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FreezeSource {
    Fleet,
    Operator,
}

/// A freeze: nothing new is dispatched to the hosts it covers while it is in force; hosts
/// already activating finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Freeze {
    pub name: String,
    pub source: FreezeSource,
    /// The hosts it covers; `None`: the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    pub from: DateTime<Utc>,
    /// `None`: until an operator releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
    /// The operator who froze (`None` for the fleet's own freezes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl Freeze {
    /// In force at `now`: started, and not yet over.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.from <= now && self.until.is_none_or(|until| now < until)
    }
}

/// Why and by whom a host is taken out of rollouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suspension {
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// The operator's policies in force: what the reducer holds, the database stores (one
/// document, replaced on each change) and start-up restores. The history is the event log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorPolicies {
    /// Operator freezes that have not been released (some may have run out: see
    /// [`Freeze::in_force`]), in the order they were set.
    #[serde(default)]
    pub freezes: Vec<Freeze>,
    #[serde(default)]
    pub suspended: BTreeMap<Hostname, Suspension>,
}

/// `GET /api/v1/freezes`: the freezes in force now, from the fleet and from operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Freezes {
    pub active: Vec<Freeze>,
}

/// `POST /api/v1/freezes`: a freeze of the hosts `selector` picks (the whole fleet without
/// one) until `until` (until released without one). Without a name the control plane
/// chooses one (answered in the outcome's `name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreezeBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
}

/// `POST /api/v1/freezes/release`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseFreezeBody {
    pub name: String,
    pub reason: String,
}

/// `POST /api/v1/hosts/{hostname}/suspend` and `/resume`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    pub reason: String,
}

/// Whether `name` may name an operator freeze: 1–64 bytes of `[A-Za-z0-9._-]`.
pub fn valid_freeze_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FREEZE_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freeze_is_in_force_from_its_start_until_its_end() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut freeze = Freeze {
            name: "f".into(),
            source: FreezeSource::Operator,
            selector: None,
            from: at("2026-12-01T10:00:00Z"),
            until: Some(at("2026-12-01T12:00:00Z")),
            reason: "r".into(),
            by: Some("alice".into()),
        };
        assert!(!freeze.in_force(at("2026-12-01T09:59:59Z")));
        assert!(freeze.in_force(at("2026-12-01T10:00:00Z")));
        assert!(freeze.in_force(at("2026-12-01T11:59:59Z")));
        assert!(!freeze.in_force(at("2026-12-01T12:00:00Z")));
        freeze.until = None;
        assert!(freeze.in_force(at("2099-01-01T00:00:00Z")));
    }

    #[test]
    fn freeze_names_are_short_and_plain() {
        assert!(valid_freeze_name("stop-the-line.2026_12"));
        assert!(!valid_freeze_name(""));
        assert!(!valid_freeze_name("a b"));
        assert!(!valid_freeze_name(&"x".repeat(MAX_FREEZE_NAME_BYTES + 1)));
    }
}
