//! The trust configuration (`trust.json`, SPEC §2.2) and the trust roots in force, which
//! uploads, the manifests poller and the reducer's re-verification read.

use std::path::Path;
use std::sync::{Arc, RwLock};

use engine::verify::TrustRoots;
use shared::manifest::TrustConfig;

/// The trust roots in force; replaced when `trust.json` changes (SIGHUP or manifest poll).
pub type SharedTrust = Arc<RwLock<Option<Arc<TrustRoots>>>>;

/// Reads and decodes `trust.json`.
pub fn read_trust(path: &Path) -> anyhow::Result<TrustRoots> {
    parse_trust(path, &read_trust_bytes(path)?)
}

fn read_trust_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the trust configuration {}: {e}. Fleetwave verifies every manifest against CI release keys; \
             create trust.json (SPEC §2.2) or pass --trust PATH",
            path.display()
        )
    })
}

/// Decodes the bytes of `trust.json` (`path` names it in errors).
fn parse_trust(path: &Path, bytes: &[u8]) -> anyhow::Result<TrustRoots> {
    let config: TrustConfig = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid trust configuration: {e}", path.display()))?;
    TrustRoots::from_config(&config).map_err(|e| anyhow::anyhow!("{}: {e} ({})", path.display(), e.code()))
}

/// Re-reads `trust.json`; keeps the old roots (and logs) when the new file is bad. Returns the
/// bytes it read (empty when it could not read any), so a caller that tracks the file's
/// content does not read it a second time.
pub fn reload_trust(path: &Path, trust: &SharedTrust) -> Vec<u8> {
    let bytes = read_trust_bytes(path);
    match bytes.as_deref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|b| parse_trust(path, b)) {
        Ok(roots) => {
            if let Ok(mut slot) = trust.write() {
                *slot = Some(Arc::new(roots));
            }
        }
        Err(err) => tracing::error!("{err:#}; keeping the trust roots in force"),
    }
    bytes.unwrap_or_default()
}
