//! Where verified manifest sets come from: the upload route and the `--manifests-dir` poller
//! (and the layout that directory has, which `fleetwave release` writes). Verification is the
//! engine's; this module reads files and hands verified sets to the reducer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use engine::release::SignedRelease;
use engine::sign::Signed;
use engine::state::ManifestSet;
use engine::verify::{Freshness, TrustRoots, VerifyError, verify_fleet, verify_manifest};
use sha2::{Digest, Sha256};
use shared::manifest::SignedArtifact;
use shared::{ErrorCode, RolloutId};
use tokio_util::sync::CancellationToken;

use crate::reducer::{ManifestUpdate, ReducerHandle, ReducerInput};
use crate::trust::{SharedTrust, reload_trust};

/// Verifies an upload at `now` (freshness checked). A rejected upload changes nothing.
pub fn verify_upload(
    trust: &Option<Arc<TrustRoots>>,
    fleet: SignedArtifact,
    rollouts: Vec<SignedArtifact>,
    now: DateTime<Utc>,
) -> Result<ManifestUpdate, VerifyError> {
    verify_with_names(trust, fleet, rollouts.into_iter().map(|a| (None, a)).collect(), now)
}

fn verify_with_names(
    trust: &Option<Arc<TrustRoots>>,
    fleet_artifact: SignedArtifact,
    rollouts: Vec<(Option<RolloutId>, SignedArtifact)>,
    now: DateTime<Utc>,
) -> Result<ManifestUpdate, VerifyError> {
    let trust = trust.as_deref();
    let fleet = verify_fleet(trust, &fleet_artifact, now, Freshness::Check)?;
    let mut manifests = Vec::new();
    let mut artifacts: BTreeMap<RolloutId, SignedArtifact> = BTreeMap::new();
    for (filed_as, artifact) in rollouts {
        let m = verify_manifest(trust, &artifact, &fleet, filed_as.as_ref(), now, Freshness::Check)?;
        if artifacts.insert(m.id.clone(), artifact).is_some() {
            return Err(VerifyError::Inconsistent(format!("{} appears twice in the upload", m.id)));
        }
        manifests.push(m);
    }
    Ok(ManifestUpdate {
        set: ManifestSet::new(fleet, manifests),
        fleet_artifact,
        manifest_artifacts: artifacts.into_iter().collect(),
        uploaded_by: None,
    })
}

/// Writes a release in the layout the poller reads: `DIR/fleet.json` and
/// `DIR/rollouts/{id}.json`, each with its `.sig`.
pub fn write_release(dir: &Path, release: &SignedRelease) -> anyhow::Result<()> {
    let rollouts = dir.join("rollouts");
    std::fs::create_dir_all(&rollouts).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", rollouts.display()))?;
    write_signed(&dir.join("fleet.json"), &release.fleet)?;
    for (id, signed) in &release.manifests {
        write_signed(&rollouts.join(format!("{id}.json")), signed)?;
    }
    Ok(())
}

/// Writes `NAME` (canonical bytes) and `NAME.sig` (base64 signature).
pub fn write_signed(path: &Path, signed: &Signed) -> anyhow::Result<()> {
    std::fs::write(path, &signed.canonical).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut sig = path.as_os_str().to_owned();
    sig.push(".sig");
    let sig = PathBuf::from(sig);
    std::fs::write(&sig, format!("{}\n", signed.signature_b64()))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", sig.display()))
}

/// `NAME.json` + `NAME.json.sig` → the wire envelope.
fn read_signed(path: &Path) -> Result<SignedArtifact, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".sig");
    let sig = std::fs::read_to_string(&sig_path).map_err(|e| format!("{}: {e}", PathBuf::from(&sig_path).display()))?;
    Ok(SignedArtifact { artifact: B64.encode(bytes), signature: sig.trim().to_owned() })
}

/// Reads `DIR/fleet.json` and `DIR/rollouts/*.json` with their signatures.
fn read_dir(dir: &Path) -> Result<(SignedArtifact, Vec<(RolloutId, SignedArtifact)>), String> {
    let fleet = read_signed(&dir.join("fleet.json"))?;
    let mut rollouts = Vec::new();
    let rollout_dir = dir.join("rollouts");
    if rollout_dir.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&rollout_dir)
            .map_err(|e| format!("{}: {e}", rollout_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for path in entries {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let id = RolloutId::parse(stem).map_err(|e| format!("{}: {e}", path.display()))?;
            rollouts.push((id, read_signed(&path)?));
        }
    }
    Ok((fleet, rollouts))
}

/// Name, length and modification time of every file `read_dir` would read: a poll that finds
/// these unchanged skips reading (a 10,000-host fleet is megabytes to read, encode and hash).
type Stamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn dir_stamp(dir: &Path) -> Stamp {
    let mut paths = vec![dir.join("fleet.json"), dir.join("fleet.json.sig")];
    if let Ok(entries) = std::fs::read_dir(dir.join("rollouts")) {
        paths.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

fn fingerprint(fleet: &SignedArtifact, rollouts: &[(RolloutId, SignedArtifact)]) -> Vec<u8> {
    let mut h = Sha256::new();
    for a in std::iter::once(fleet).chain(rollouts.iter().map(|(_, a)| a)) {
        h.update(a.artifact.as_bytes());
        h.update(a.signature.as_bytes());
    }
    h.finalize().to_vec()
}

/// Polls `dir` every `every`: when its content or `trust.json` changed since the last set that
/// verified, verifies it and sends the set to the reducer. A set that does not verify is
/// logged with its outcome (once per content and trust) and changes nothing; it is verified
/// again on every poll, so content rejected as `future-dated` is taken once it is due and a
/// set rejected for an unknown key once `trust.json` names it. Files whose names, sizes and
/// times are unchanged are not read again after a set verified.
pub async fn poll_dir(
    dir: PathBuf,
    trust_path: PathBuf,
    trust: SharedTrust,
    reducer: ReducerHandle,
    every: Duration,
    clock: crate::clock::Clock,
    shutdown: CancellationToken,
) {
    // (files' stamp, content fingerprint, trust.json's bytes) of the last set handed over.
    let mut verified: Option<(Stamp, Vec<u8>, Vec<u8>)> = None;
    // What was last logged as rejected, so a rejected set is not logged on every poll.
    let mut rejected: Option<(Vec<u8>, Vec<u8>, ErrorCode)> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let trust_bytes = reload_trust(&trust_path, &trust);
        let stamp = dir_stamp(&dir);
        if verified.as_ref().is_some_and(|(s, _, t)| s == &stamp && t == &trust_bytes) {
            continue;
        }
        let (fleet, rollouts) = match read_dir(&dir) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), %err, "manifests dir not readable");
                continue;
            }
        };
        let print = fingerprint(&fleet, &rollouts);
        if let Some((_, p, t)) = &verified
            && p == &print
            && t == &trust_bytes
        {
            // Touched but unchanged: remember the new stamp, nothing to verify.
            verified = Some((stamp, print, trust_bytes));
            continue;
        }
        let current = trust.read().ok().and_then(|t| t.clone());
        let named = rollouts.into_iter().map(|(id, a)| (Some(id), a)).collect();
        match verify_with_names(&current, fleet, named, clock.now()) {
            Ok(update) => {
                tracing::info!(dir = %dir.display(), fleet_hash = %update.set.fleet.hash, "manifests dir verified");
                match reducer.submit(ReducerInput::ManifestSetUpdated { update: Box::new(update), reply: None }).await {
                    Ok(()) => {
                        verified = Some((stamp, print, trust_bytes));
                        rejected = None;
                    }
                    Err(err) => tracing::warn!(%err, "cannot hand the manifest set to the reducer"),
                }
            }
            Err(err) => {
                let code = err.code();
                let seen = rejected.as_ref().is_some_and(|(p, t, c)| p == &print && t == &trust_bytes && c == &code);
                if !seen {
                    tracing::error!(dir = %dir.display(), error = ?err, "manifests dir rejected; the last verified set stays in force, and it is verified again on every poll");
                    rejected = Some((print, trust_bytes, code));
                }
            }
        }
    }
}
