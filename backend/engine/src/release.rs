//! Projecting a fleet document into one rollout manifest per channel (what `fleetwave
//! release` signs): every host with a `closure` goes into its channel's `hostSet`, sorted by
//! hostname, with its wave index and the fleet's hash.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::manifest::{FleetDocument, HostSetEntry, ManifestMeta, RolloutManifest};
use shared::{Channel, RolloutId};

use crate::fleet::{Placement, VerifiedFleet};
use crate::verify::SCHEMA_VERSION;

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
            },
        );
    }
    Ok(out)
}
