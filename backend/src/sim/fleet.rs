//! Load-test fleets: a signed release of `hosts` hosts spread over `channels` channels (one
//! rollout each, `waves` waves, a tag budget), with host keys derived from a seed so the same
//! fleet can be written once and simulated many times (`simulate --provision`, `bench run`).

use std::path::Path;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::Digest;

use super::SimHost;
use engine::release::{SignedRelease, sign_release};

/// A signed load fleet and the keys of its hosts.
pub struct LoadFleet {
    pub trust: Value,
    pub release: SignedRelease,
    pub hosts: Vec<SimHost>,
    ci: SigningKey,
    /// The fleet document the release was signed from.
    doc: Value,
}

/// What the fleet looks like.
#[derive(Debug, Clone)]
pub struct LoadShape {
    pub hosts: usize,
    pub channels: usize,
    /// Soak of every wave, in minutes (0: a wave completes as soon as its hosts converge).
    pub soak_minutes: u64,
    /// Waves of every channel (a channel's hosts are dealt over them in turn).
    pub waves: usize,
    pub seed: u64,
    /// What every host runs before the release.
    pub initial_closure: String,
}

/// A load host's closure in release `n`.
fn closure(channel: usize, tag: &str, n: Option<usize>) -> String {
    match n {
        None => format!("/nix/store/{channel:032x}-nixos-system-{tag}-load"),
        Some(n) => format!("/nix/store/{channel:032x}-nixos-system-{tag}-load-r{n}"),
    }
}

/// Host `i`'s name: sorted by name is sorted by index.
fn host_name(i: usize) -> String {
    format!("sim-{i:05}")
}

impl LoadFleet {
    pub fn build(shape: &LoadShape) -> anyhow::Result<LoadFleet> {
        let channels = shape.channels.max(1);
        let ci = SigningKey::generate(&mut rand_core::OsRng);
        let trust = json!({"schemaVersion": 1, "ciReleaseKey": {"current": engine::sign::public_key_b64(&ci)}, "freshnessWindowMinutes": 1440});
        let mut host_docs = serde_json::Map::new();
        let wave_count = shape.waves.max(1);
        let mut waves: Vec<Vec<Vec<String>>> = vec![vec![Vec::new(); wave_count]; channels];
        let mut hosts = Vec::with_capacity(shape.hosts);
        for i in 0..shape.hosts {
            let name = host_name(i);
            let seed_bytes: [u8; 32] = sha2::Sha256::digest(format!("{}:{name}", shape.seed).as_bytes()).into();
            let key = SigningKey::from_bytes(&seed_bytes);
            let channel = i % channels;
            waves[channel][(i / channels) % wave_count].push(name.clone());
            let tag = ["web", "db", "cache", "batch"][i % 4];
            host_docs.insert(
                name.clone(),
                json!({"channel": format!("ch{channel:03}"), "tags": [tag], "pubkey": engine::sign::public_key_b64(&key),
                "closure": closure(channel, tag, None)}),
            );
            hosts.push(SimHost { hostname: name, key, initial_closure: shape.initial_closure.clone() });
        }
        let channel_docs: serde_json::Map<String, Value> =
            (0..channels).map(|c| (format!("ch{c:03}"), json!({"rolloutPolicy": "load"}))).collect();
        let wave_docs: serde_json::Map<String, Value> = waves
            .iter()
            .enumerate()
            .map(|(c, w)| {
                let waves: Vec<Value> = w.iter().filter(|h| !h.is_empty()).map(|h| json!({"hosts": h})).collect();
                (format!("ch{c:03}"), json!(waves))
            })
            .collect();
        let soak = json!({"soakMinutes": shape.soak_minutes});
        let doc = json!({
            "schemaVersion": 1,
            "meta": {"ciCommit": "10ad", "signedAt": chrono::Utc::now().to_rfc3339()},
            "hosts": host_docs, "channels": channel_docs,
            "rolloutPolicies": {"load": {"waves": vec![soak; wave_count],
                                         "onHealthFailure": "rollback-and-halt", "stuckAfterMinutes": 30}},
            "waves": wave_docs,
            "disruptionBudgets": [{"name": "web", "selector": {"tags": ["web"]}, "maxInFlight": (shape.hosts / 4).max(1)}]
        });
        let release = sign_release(&ci, &doc).map_err(anyhow::Error::msg)?;
        Ok(LoadFleet { trust, release, hosts, ci, doc })
    }

    /// Release `n` (1, 2, …) of the fleet, signed at `signed_at`: every host gets a new
    /// closure ([`LoadFleet::closure_of`]), so every channel opens a rollout.
    pub fn release(&self, n: usize, signed_at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<SignedRelease> {
        let mut doc = self.doc.clone();
        doc["meta"] = json!({"ciCommit": format!("{n:08x}"), "signedAt": signed_at.to_rfc3339()});
        if let Some(hosts) = doc["hosts"].as_object_mut() {
            for (name, host) in hosts.iter_mut() {
                host["closure"] = json!(self.closure_of(name, Some(n)));
            }
        }
        sign_release(&self.ci, &doc).map_err(anyhow::Error::msg)
    }

    /// What `host` runs in release `n` (`None`: the first, [`LoadFleet::release`] field).
    pub fn closure_of(&self, host: &str, n: Option<usize>) -> String {
        let doc = &self.doc["hosts"][host];
        let channel = doc["channel"].as_str().and_then(|c| c.strip_prefix("ch")).and_then(|c| c.parse().ok());
        closure(channel.unwrap_or(0), doc["tags"][0].as_str().unwrap_or("web"), n)
    }

    /// Writes `trust.json`, `ci.key` and `release/` (for `serve --manifests-dir`) to `dir`,
    /// and with `keys` one `hosts/NAME.key` per host (for `simulate --fleet-keys`).
    pub fn write(&self, dir: &Path, keys: bool) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ci.key"), format!("{}\n", engine::sign::encode_signing_key(&self.ci)))?;
        std::fs::write(dir.join("trust.json"), serde_json::to_vec_pretty(&self.trust)?)?;
        crate::manifests::write_release(&dir.join("release"), &self.release)?;
        if keys {
            std::fs::create_dir_all(dir.join("hosts"))?;
            for host in &self.hosts {
                let path = dir.join("hosts").join(format!("{}.key", host.hostname));
                std::fs::write(path, engine::sign::encode_signing_key(&host.key))?;
            }
        }
        Ok(())
    }
}
