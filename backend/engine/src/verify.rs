//! Verification of signed inputs (SPEC §2): Ed25519 strict verification over the RFC 8785
//! (JCS) canonical form of the received JSON, trust key slots, freshness, and the
//! consistency rules of the fleet document and rollout manifests.
//!
//! The verifier re-canonicalises what it received, so whitespace and key order in transit do
//! not matter; a change to any value does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use shared::ErrorCode;
use shared::manifest::{FleetDocument, RolloutManifest, SignedArtifact, TrustConfig};
use shared::{Hostname, RolloutId};

use crate::crypto::{canonicalize, decode_public_key, sha256_hex};
use crate::fleet::{self, VerifiedFleet};

/// The schema version of trust configurations and rollout manifests.
pub const SCHEMA_VERSION: u64 = 1;
/// The newest manifest schema version this build understands (2 adds the change summaries
/// of SPEC §18, `closures`; a manifest of version 1 is still accepted, without them).
pub const MANIFEST_SCHEMA_VERSION: u64 = 2;
/// The newest fleet schema version this build understands (2 adds the policies of SPEC
/// §17; a fleet of version 1 is still accepted, without them).
pub const FLEET_SCHEMA_VERSION: u64 = crate::fleet::POLICIES_SCHEMA_VERSION as u64;
/// Clock slack allowed on both sides of the freshness window (SPEC §2.5).
pub const CLOCK_SLACK: Duration = Duration::seconds(60);
/// Longest freshness window `trust.json` may set: a window is what keeps an old artifact from
/// being replayed, and one longer than a year protects nothing.
pub const MAX_FRESHNESS_WINDOW_MINUTES: i64 = 366 * 24 * 60;

/// Every named verification outcome of SPEC §2.5. `code()` is the wire name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no trust roots are configured: nothing can be verified")]
    NoTrustRoots,
    #[error("malformed artifact: {0}")]
    Malformed(String),
    #[error("the signature does not verify with any trusted CI release key")]
    BadSignature,
    #[error(
        "unsupported schemaVersion {0} (this build understands {SCHEMA_VERSION}, for fleets 1–{FLEET_SCHEMA_VERSION}, for manifests 1–{MANIFEST_SCHEMA_VERSION})"
    )]
    UnsupportedSchema(String),
    #[error("the document has no meta.signedAt")]
    NotSigned,
    #[error("signed at {signed_at}, before the trust configuration's rejectBefore {reject_before}")]
    RejectedBefore { signed_at: DateTime<Utc>, reject_before: DateTime<Utc> },
    #[error("signed at {signed_at}, older than the freshness window of {window_minutes} minutes (now {now})")]
    Stale { signed_at: DateTime<Utc>, now: DateTime<Utc>, window_minutes: u64 },
    #[error("signed at {signed_at}, more than 60 s in the future (now {now})")]
    FutureDated { signed_at: DateTime<Utc>, now: DateTime<Utc> },
    #[error("inconsistent: {0}")]
    Inconsistent(String),
}

impl VerifyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            VerifyError::NoTrustRoots => ErrorCode::NoTrustRoots,
            VerifyError::Malformed(_) => ErrorCode::Malformed,
            VerifyError::BadSignature => ErrorCode::BadSignature,
            VerifyError::UnsupportedSchema(_) => ErrorCode::UnsupportedSchema,
            VerifyError::NotSigned => ErrorCode::NotSigned,
            VerifyError::RejectedBefore { .. } => ErrorCode::RejectedBefore,
            VerifyError::Stale { .. } => ErrorCode::Stale,
            VerifyError::FutureDated { .. } => ErrorCode::FutureDated,
            VerifyError::Inconsistent(_) => ErrorCode::Inconsistent,
        }
    }
}

/// Whether to apply the freshness checks: yes at ingestion; no when re-verifying the
/// persisted set after a restart (signature and consistency only, SPEC §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Check,
    Skip,
}

/// The CI release keys from `trust.json`, decoded.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    current: VerifyingKey,
    previous: Option<VerifyingKey>,
    successor: Option<VerifyingKey>,
    retire_at: Option<DateTime<Utc>>,
    reject_before: Option<DateTime<Utc>>,
    window: Duration,
    window_minutes: u64,
}

impl TrustRoots {
    /// Decodes the configuration; a key that does not decode is a `no-trust-roots` error for
    /// the current slot and a precise message for the others.
    pub fn from_config(config: &TrustConfig) -> Result<TrustRoots, VerifyError> {
        if u64::from(config.schema_version) != SCHEMA_VERSION {
            return Err(VerifyError::UnsupportedSchema(config.schema_version.to_string()));
        }
        let slots = &config.ci_release_key;
        let current = decode_public_key(&slots.current).map_err(|_| VerifyError::NoTrustRoots)?;
        let optional = |name: &str, key: &Option<String>| -> Result<Option<VerifyingKey>, VerifyError> {
            key.as_deref()
                .map(|k| decode_public_key(k).map_err(|e| VerifyError::Malformed(format!("ciReleaseKey.{name}: {e}"))))
                .transpose()
        };
        let window_minutes = config.freshness_window_minutes;
        let window = i64::try_from(window_minutes)
            .ok()
            .filter(|m| *m <= MAX_FRESHNESS_WINDOW_MINUTES)
            .and_then(Duration::try_minutes)
            .ok_or_else(|| {
                VerifyError::Malformed(format!(
                    "freshnessWindowMinutes is {window_minutes}; at most {MAX_FRESHNESS_WINDOW_MINUTES} (366 days)"
                ))
            })?;
        Ok(TrustRoots {
            current,
            previous: optional("previous", &slots.previous)?,
            successor: optional("successor", &slots.successor)?,
            retire_at: slots.retire_at,
            reject_before: slots.reject_before,
            window,
            window_minutes,
        })
    }

    /// The keys to try at `now`, in order. Previous and successor belong to a rotation
    /// window that closes at `retireAt` (when set); after it only the current key counts.
    fn keys_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &VerifyingKey> {
        let window_open = self.retire_at.is_none_or(|retire_at| now < retire_at);
        std::iter::once(&self.current)
            .chain([self.previous.as_ref(), self.successor.as_ref()].into_iter().flatten().filter(move |_| window_open))
    }
}

/// A document whose signature verified: its parsed JSON, canonical bytes and signing time.
#[derive(Debug, Clone)]
pub struct VerifiedDocument {
    pub value: Value,
    pub canonical: Vec<u8>,
    pub signed_at: DateTime<Utc>,
}

/// Checks an artifact's signature, schema, signing time and (optionally) freshness.
pub fn verify_artifact(
    trust: Option<&TrustRoots>,
    artifact: &SignedArtifact,
    now: DateTime<Utc>,
    freshness: Freshness,
) -> Result<VerifiedDocument, VerifyError> {
    let trust = trust.ok_or(VerifyError::NoTrustRoots)?;
    let bytes = B64
        .decode(artifact.artifact.trim())
        .map_err(|err| VerifyError::Malformed(format!("artifact is not standard base64: {err}")))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|err| VerifyError::Malformed(format!("artifact is not JSON: {err}")))?;
    let canonical = canonicalize(&value).map_err(VerifyError::Malformed)?;

    let signature = B64
        .decode(artifact.signature.trim())
        .ok()
        .and_then(|raw| Signature::from_slice(&raw).ok())
        .ok_or(VerifyError::BadSignature)?;
    if !trust.keys_at(now).any(|key| key.verify_strict(&canonical, &signature).is_ok()) {
        return Err(VerifyError::BadSignature);
    }

    match value.get("schemaVersion") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| (SCHEMA_VERSION..=FLEET_SCHEMA_VERSION).contains(&v)) => {}
        Some(other) => return Err(VerifyError::UnsupportedSchema(other.to_string())),
        None => return Err(VerifyError::UnsupportedSchema("(missing)".into())),
    }
    let signed_at = match value.get("meta").and_then(|meta| meta.get("signedAt")) {
        None | Some(Value::Null) => return Err(VerifyError::NotSigned),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|err| VerifyError::Malformed(format!("meta.signedAt `{s}` is not RFC 3339: {err}")))?
            .with_timezone(&Utc),
        Some(other) => {
            return Err(VerifyError::Malformed(format!("meta.signedAt must be a string, got {other}")));
        }
    };
    if let Some(reject_before) = trust.reject_before
        && signed_at < reject_before
    {
        return Err(VerifyError::RejectedBefore { signed_at, reject_before });
    }
    if freshness == Freshness::Check {
        if now - signed_at > trust.window.checked_add(&CLOCK_SLACK).unwrap_or(Duration::MAX) {
            return Err(VerifyError::Stale { signed_at, now, window_minutes: trust.window_minutes });
        }
        if signed_at - now > CLOCK_SLACK {
            return Err(VerifyError::FutureDated { signed_at, now });
        }
    }
    Ok(VerifiedDocument { value, canonical, signed_at })
}

fn typed<T: serde::de::DeserializeOwned>(doc: &VerifiedDocument, what: &str) -> Result<T, VerifyError> {
    serde_json::from_value(doc.value.clone())
        .map_err(|err| VerifyError::Malformed(format!("not a valid {what}: {err}")))
}

/// Verifies a signed fleet document and checks its consistency rules (SPEC §2.3).
pub fn verify_fleet(
    trust: Option<&TrustRoots>,
    artifact: &SignedArtifact,
    now: DateTime<Utc>,
    freshness: Freshness,
) -> Result<VerifiedFleet, VerifyError> {
    let doc = verify_artifact(trust, artifact, now, freshness)?;
    let fleet: FleetDocument = typed(&doc, "fleet document")?;
    fleet::index(fleet, sha256_hex(&doc.canonical), doc.signed_at).map_err(VerifyError::Inconsistent)
}

/// A rollout manifest that verified against the fleet it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    pub id: RolloutId,
    pub manifest: RolloutManifest,
    pub signed_at: DateTime<Utc>,
}

/// Verifies a signed rollout manifest against the verified fleet (SPEC §2.4). `filed_as` is
/// the id the manifest was filed under (its file name), when there is one.
pub fn verify_manifest(
    trust: Option<&TrustRoots>,
    artifact: &SignedArtifact,
    fleet: &VerifiedFleet,
    filed_as: Option<&RolloutId>,
    now: DateTime<Utc>,
    freshness: Freshness,
) -> Result<VerifiedManifest, VerifyError> {
    let doc = verify_artifact(trust, artifact, now, freshness)?;
    let manifest: RolloutManifest = typed(&doc, "rollout manifest")?;
    if !(SCHEMA_VERSION..=MANIFEST_SCHEMA_VERSION).contains(&u64::from(manifest.schema_version)) {
        return Err(VerifyError::UnsupportedSchema(manifest.schema_version.to_string()));
    }
    let id = RolloutId::new(&manifest.channel, &manifest.channel_ref)
        .map_err(|err| VerifyError::Inconsistent(format!("channelRef: {err}")))?;
    check_manifest(&manifest, &id, fleet, filed_as).map_err(VerifyError::Inconsistent)?;
    Ok(VerifiedManifest { id, manifest, signed_at: doc.signed_at })
}

fn check_manifest(
    manifest: &RolloutManifest,
    id: &RolloutId,
    fleet: &VerifiedFleet,
    filed_as: Option<&RolloutId>,
) -> Result<(), String> {
    if let Some(filed_as) = filed_as
        && filed_as != id
    {
        return Err(format!("filed as `{filed_as}` but its channel@channelRef is `{id}`"));
    }
    if manifest.fleet_hash != fleet.hash {
        return Err(format!(
            "fleetHash {} is not the hash of the verified fleet ({})",
            manifest.fleet_hash, fleet.hash
        ));
    }
    if !fleet.doc.channels.contains_key(&manifest.channel) {
        return Err(format!("channel: `{}` is not a channel of the fleet", manifest.channel));
    }
    let mut previous: Option<&Hostname> = None;
    for (i, entry) in manifest.host_set.iter().enumerate() {
        if let Some(prev) = previous
            && prev >= &entry.hostname
        {
            return Err(format!(
                "hostSet[{i}]: `{}` after `{prev}`: hostSet must be sorted by hostname without duplicates",
                entry.hostname
            ));
        }
        previous = Some(&entry.hostname);
        match fleet.doc.hosts.get(&entry.hostname) {
            None => {
                return Err(format!("hostSet[{i}]: `{}` is not a host of the fleet", entry.hostname));
            }
            Some(host) if host.channel != manifest.channel => {
                return Err(format!(
                    "hostSet[{i}]: `{}` is on channel `{}`, not `{}`",
                    entry.hostname, host.channel, manifest.channel
                ));
            }
            Some(_) => {}
        }
    }
    check_closures(manifest)
}

/// The change summaries (schemaVersion 2): each of a target closure of the hostSet, within
/// the limits of `shared::limits`.
fn check_closures(manifest: &RolloutManifest) -> Result<(), String> {
    use shared::limits::{MAX_PACKAGE_CHANGES, MAX_PACKAGE_TEXT_BYTES};
    let Some(closures) = &manifest.closures else { return Ok(()) };
    if u64::from(manifest.schema_version) < MANIFEST_SCHEMA_VERSION {
        return Err(format!("closures: needs schemaVersion {MANIFEST_SCHEMA_VERSION}"));
    }
    for (closure, summary) in closures {
        let at = format!("closures[{closure}]");
        if !manifest.host_set.iter().any(|e| &e.target_closure == closure) {
            return Err(format!("{at}: not a targetClosure of the hostSet"));
        }
        if summary.changes.len() > MAX_PACKAGE_CHANGES {
            return Err(format!("{at}.changes: more than {MAX_PACKAGE_CHANGES}"));
        }
        for (i, change) in summary.changes.iter().enumerate() {
            let texts = [Some(&change.package), change.from.as_ref(), change.to.as_ref()];
            if change.package.is_empty() || texts.iter().flatten().any(|t| t.len() > MAX_PACKAGE_TEXT_BYTES) {
                return Err(format!(
                    "{at}.changes[{i}]: package must be 1–{MAX_PACKAGE_TEXT_BYTES} bytes, versions at most that"
                ));
            }
            if change.from.is_none() && change.to.is_none() {
                return Err(format!("{at}.changes[{i}]: neither from nor to"));
            }
        }
    }
    Ok(())
}

/// Why an agent request's claim or signature is refused (SPEC §9.1); each is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentRequestError {
    #[error("X-Fleetwave-Timestamp must be unix seconds")]
    BadTimestamp,
    #[error("The request timestamp is {off} s off the control plane's clock (at most {max} s)")]
    SkewedTimestamp { off: i128, max: i64 },
    #[error("X-Fleetwave-Signature must be base64 of 64 bytes")]
    MalformedSignature,
    #[error("The signature does not verify with the host's key")]
    BadSignature,
}

/// The request's timestamp header, if it is unix seconds within `max_skew` of `now`. Any i64
/// is compared without overflow.
pub fn agent_timestamp(header: Option<&str>, now: i64, max_skew: i64) -> Result<i64, AgentRequestError> {
    let timestamp: i64 = header.and_then(|t| t.trim().parse().ok()).ok_or(AgentRequestError::BadTimestamp)?;
    if now.abs_diff(timestamp) > max_skew.unsigned_abs() {
        return Err(AgentRequestError::SkewedTimestamp { off: i128::from(now) - i128::from(timestamp), max: max_skew });
    }
    Ok(timestamp)
}

/// Verifies an agent request's signature header (strict Ed25519 over
/// `fleetwave-agent-v1\n{METHOD}\n{path and query}\n{timestamp}\n{sha256(body)}`) with the host's
/// key; returns the signature's bytes (for replay protection).
pub fn agent_signature(
    key: &VerifyingKey,
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    header: Option<&str>,
    body: &[u8],
) -> Result<[u8; 64], AgentRequestError> {
    let signature: [u8; 64] = header
        .and_then(|s| B64.decode(s.trim()).ok())
        .and_then(|raw| raw.try_into().ok())
        .ok_or(AgentRequestError::MalformedSignature)?;
    let message = shared::agent::signing_string(method, path_and_query, timestamp, &sha256_hex(body));
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| AgentRequestError::BadSignature)?;
    Ok(signature)
}
