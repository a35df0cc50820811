//! Where verified manifest sets come from: the upload route and the `--manifests-dir` poller,
//! plus the trust configuration they are verified against. Verification is the engine's;
//! this module reads files and hands verified sets to the reducer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use engine::state::ManifestSet;
use engine::verify::{Freshness, TrustRoots, VerifyError, verify_fleet, verify_manifest};
use sha2::{Digest, Sha256};
use shared::RolloutId;
use shared::manifest::{SignedArtifact, TrustConfig};
use tokio_util::sync::CancellationToken;

use crate::http::ApiError;
use crate::reducer::{ManifestUpdate, ReducerHandle, ReducerInput};

/// The trust roots in force; replaced when `trust.json` changes (SIGHUP or manifest poll).
pub type SharedTrust = Arc<RwLock<Option<Arc<TrustRoots>>>>;

/// Reads and decodes `trust.json`.
pub fn read_trust(path: &Path) -> anyhow::Result<TrustRoots> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the trust configuration {}: {e}. Fleetwave verifies every manifest against CI release keys; \
             create trust.json (SPEC §2.2) or pass --trust PATH",
            path.display()
        )
    })?;
    let config: TrustConfig = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid trust configuration: {e}", path.display()))?;
    TrustRoots::from_config(&config).map_err(|e| anyhow::anyhow!("{}: {e} ({})", path.display(), e.code()))
}

fn verify_error(err: VerifyError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.code(), err.to_string())
}

/// Verifies an upload at `now` (freshness checked). A rejected upload changes nothing.
pub fn verify_upload(
    trust: &Option<Arc<TrustRoots>>,
    fleet: SignedArtifact,
    rollouts: Vec<SignedArtifact>,
    now: DateTime<Utc>,
) -> Result<ManifestUpdate, ApiError> {
    verify_with_names(trust, fleet, rollouts.into_iter().map(|a| (None, a)).collect(), now)
}

fn verify_with_names(
    trust: &Option<Arc<TrustRoots>>,
    fleet_artifact: SignedArtifact,
    rollouts: Vec<(Option<RolloutId>, SignedArtifact)>,
    now: DateTime<Utc>,
) -> Result<ManifestUpdate, ApiError> {
    let trust = trust.as_deref();
    let fleet = verify_fleet(trust, &fleet_artifact, now, Freshness::Check).map_err(verify_error)?;
    let mut manifests = Vec::new();
    let mut artifacts: BTreeMap<RolloutId, SignedArtifact> = BTreeMap::new();
    for (filed_as, artifact) in rollouts {
        let m = verify_manifest(trust, &artifact, &fleet, filed_as.as_ref(), now, Freshness::Check)
            .map_err(verify_error)?;
        if artifacts.insert(m.id.clone(), artifact).is_some() {
            return Err(verify_error(VerifyError::Inconsistent(format!("{} appears twice in the upload", m.id))));
        }
        manifests.push(m);
    }
    Ok(ManifestUpdate {
        set: ManifestSet::new(fleet, manifests),
        fleet_artifact,
        manifest_artifacts: artifacts.into_iter().collect(),
    })
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
fn dir_stamp(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
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

/// Polls `dir` every `every` (files whose names, sizes and times are unchanged are not read
/// again): when its content changed, verifies it and sends the set to
/// the reducer; a set that does not verify is logged with its outcome and changes nothing.
/// Re-reads `trust.json` on each poll too.
pub async fn poll_dir(
    dir: PathBuf,
    trust_path: PathBuf,
    trust: SharedTrust,
    reducer: ReducerHandle,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last: Option<Vec<u8>> = None;
    let mut last_stamp = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        reload_trust(&trust_path, &trust);
        let stamp = dir_stamp(&dir);
        if last.is_some() && last_stamp.as_ref() == Some(&stamp) {
            continue;
        }
        let (fleet, rollouts) = match read_dir(&dir) {
            Ok(found) => {
                last_stamp = Some(stamp);
                found
            }
            Err(err) => {
                tracing::warn!(dir = %dir.display(), %err, "manifests dir not readable");
                continue;
            }
        };
        let print = fingerprint(&fleet, &rollouts);
        if last.as_ref() == Some(&print) {
            continue;
        }
        last = Some(print);
        let current = trust.read().ok().and_then(|t| t.clone());
        let named = rollouts.into_iter().map(|(id, a)| (Some(id), a)).collect();
        match verify_with_names(&current, fleet, named, Utc::now()) {
            Ok(update) => {
                tracing::info!(dir = %dir.display(), fleet_hash = %update.set.fleet.hash, "manifests dir verified");
                if let Err(err) =
                    reducer.submit(ReducerInput::ManifestSetUpdated { update: Box::new(update), reply: None }).await
                {
                    tracing::warn!(%err, "cannot hand the manifest set to the reducer");
                    last = None;
                }
            }
            Err(err) => {
                tracing::error!(dir = %dir.display(), error = ?err, "manifests dir rejected; the last verified set stays in force")
            }
        }
    }
}

/// Re-reads `trust.json`; keeps the old roots (and logs) when the new file is bad.
pub fn reload_trust(path: &Path, trust: &SharedTrust) {
    match read_trust(path) {
        Ok(roots) => {
            if let Ok(mut slot) = trust.write() {
                *slot = Some(Arc::new(roots));
            }
        }
        Err(err) => tracing::error!("{err:#}; keeping the trust roots in force"),
    }
}
