//! What CI does (`fleetwave release`): project a fleet document into one rollout manifest per
//! channel — every host with a `closure` goes into its channel's `hostSet`, sorted by
//! hostname, with its wave index and the fleet's hash — and sign the fleet and the manifests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::manifest::{ClosureChanges, FleetDocument, HostSetEntry, ManifestMeta, RolloutManifest};
use shared::{Channel, Closure, RolloutId};

use ed25519_dalek::SigningKey;
use serde_json::Value;

use crate::crypto::sha256_hex;
use crate::fleet::{Placement, VerifiedFleet};
use crate::sign::{Signed, sign_value};
use crate::verify::{MANIFEST_SCHEMA_VERSION, SCHEMA_VERSION};

/// The manifests of one release of `fleet`, one per channel that has at least one host with
/// a closure, keyed by rollout id. `channel_ref` is the release's commit (lower-case hex).
pub fn project(
    fleet: &VerifiedFleet,
    channel_ref: &str,
    signed_at: DateTime<Utc>,
) -> Result<BTreeMap<RolloutId, RolloutManifest>, String> {
    let doc: &FleetDocument = &fleet.doc;
    let mut by_channel: BTreeMap<&Channel, Vec<HostSetEntry>> = BTreeMap::new();
    // `doc.hosts` is a BTreeMap: iteration is already sorted by hostname.
    for (hostname, host) in &doc.hosts {
        let Some(closure) = &host.closure else {
            continue;
        };
        let wave = match fleet.placement(hostname) {
            Placement::Wave(w) => w,
            Placement::Unstaged => 0,
        };
        by_channel.entry(&host.channel).or_default().push(HostSetEntry {
            hostname: hostname.clone(),
            wave,
            target_closure: closure.clone(),
        });
    }
    let mut out = BTreeMap::new();
    for (channel, host_set) in by_channel {
        let id = RolloutId::new(channel, channel_ref).map_err(|e| e.to_string())?;
        out.insert(
            id,
            RolloutManifest {
                schema_version: SCHEMA_VERSION as u32,
                channel: channel.clone(),
                channel_ref: channel_ref.to_owned(),
                meta: ManifestMeta { signed_at: Some(signed_at) },
                fleet_hash: fleet.hash.clone(),
                host_set,
                closures: None,
            },
        );
    }
    Ok(out)
}

/// A signed release: the fleet document and the manifests of its channels.
#[derive(Debug, Clone)]
pub struct SignedRelease {
    pub fleet: Signed,
    pub fleet_hash: String,
    pub manifests: Vec<(RolloutId, Signed)>,
}

/// Signs the fleet document (its `meta.signedAt` set) and one manifest per channel. The fleet
/// must pass the consistency rules the control plane applies, so CI fails where the control
/// plane would refuse.
pub fn sign_release(key: &SigningKey, document: &Value) -> Result<SignedRelease, String> {
    sign_release_with_changes(key, document, &BTreeMap::new())
}

/// [`sign_release`] with change summaries (`fleetwave release --diff-from`): each manifest
/// carries those of its target closures, as schemaVersion 2 (a manifest without any stays 1).
pub fn sign_release_with_changes(
    key: &SigningKey,
    document: &Value,
    changes: &BTreeMap<Closure, ClosureChanges>,
) -> Result<SignedRelease, String> {
    let fleet_signed = sign_value(key, document)?;
    let typed: FleetDocument =
        serde_json::from_value(document.clone()).map_err(|e| format!("not a valid fleet document: {e}"))?;
    let commit = typed.meta.ci_commit.clone();
    if !shared::ids::is_commit(&commit) {
        return Err(format!("meta.ciCommit `{commit}` must be 1–64 lower-case hex digits: it becomes the release ref"));
    }
    let signed_at = typed.meta.signed_at.ok_or("meta.signedAt is missing")?;
    let fleet_hash = sha256_hex(&fleet_signed.canonical);
    let fleet = crate::fleet::index(typed, fleet_hash.clone(), signed_at)
        .map_err(|e| format!("the fleet document is inconsistent: {e}"))?;
    let mut manifests = Vec::new();
    for (id, mut manifest) in project(&fleet, &commit, signed_at)? {
        let own: BTreeMap<Closure, ClosureChanges> = manifest
            .host_set
            .iter()
            .filter_map(|e| changes.get(&e.target_closure).map(|c| (e.target_closure.clone(), c.clone())))
            .collect();
        if !own.is_empty() {
            manifest.schema_version = MANIFEST_SCHEMA_VERSION as u32;
            manifest.closures = Some(own);
        }
        let value = serde_json::to_value(&manifest).map_err(|e| format!("{id}: {e}"))?;
        manifests.push((id, sign_value(key, &value)?));
    }
    Ok(SignedRelease { fleet: fleet_signed, fleet_hash, manifests })
}
