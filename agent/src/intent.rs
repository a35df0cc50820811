//! The agent's durable memory (SPEC §14): the job it is working on and the next event seq,
//! written atomically (a temporary file, fsync, rename over the old one, fsync of the
//! directory) before the request that uses them is sent. A crash at any point leaves either
//! the old file or the new one, never a torn one; a restart therefore never reuses a seq the
//! control plane may have seen, and can resend every event after a `replayFrom`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::manifest::HealthFailurePolicy;
use shared::state::HostEvent;
use shared::{Closure, RolloutId};

/// The file name inside the state directory.
pub const INTENT_FILE: &str = "intent.json";

/// What the agent set out to do, and how far it got in telling the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Intent {
    pub rollout_id: RolloutId,
    pub target_closure: Closure,
    /// What `/run/current-system` pointed at when the dispatch came: the rollback target.
    pub previous_closure: Closure,
    /// The boot the switch started in (a different one after a reboot).
    pub boot_id: String,
    /// Soak of the target's wave, from the dispatch (unknown for a job taken from the control
    /// plane's record after the intent was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
    /// What to do when the target fails (the channel's policy, from the dispatch).
    pub on_health_failure: HealthFailurePolicy,
    /// How far the job got.
    pub stage: Stage,
    /// When the soak ends (set when the activation completed, or learnt from the control
    /// plane's snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_due_at: Option<DateTime<Utc>>,
    /// The seq the next event will carry; every lower one may already have been sent.
    pub next_seq: u64,
    /// Every event of this job, oldest first, to resend after a `replayFrom`.
    pub events: Vec<HostEvent>,
}

/// Where a job stands. A restart resumes from here (SPEC §14 step 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Realising the target in the Nix store.
    Fetching,
    /// Profile set, switch running (or about to).
    Switching,
    /// Staged for the next boot: the running kernel, initrd or modules differ.
    Deferred,
    /// Switched; probes run until the soak is over.
    Soaking,
    /// Going back to the previous closure.
    RollingBack,
    /// Nothing more to do for this job.
    Done(Outcome),
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Converged,
    /// Rolled back to the previous closure.
    Reverted,
    /// Failed under the `halt` policy: the host stays as it is for an operator to look at.
    Halted,
    /// The rollback itself failed (every attempt): the host needs an operator.
    RollbackFailed,
}

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an intent this agent wrote: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IntentError + '_ {
    move |source| IntentError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IntentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself is durable only once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// Saves the intent in `state_dir`.
pub fn save(state_dir: &Path, intent: &Intent) -> Result<(), IntentError> {
    let path = state_dir.join(INTENT_FILE);
    let bytes =
        serde_json::to_vec_pretty(intent).map_err(|source| IntentError::Corrupt { path: path.clone(), source })?;
    write_atomically(&path, &bytes)
}

/// The intent found in `state_dir` at start, if there is one.
pub fn load(state_dir: &Path) -> Result<Option<Intent>, IntentError> {
    let path = state_dir.join(INTENT_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(IntentError::Io { path, source: err }),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|source| IntentError::Corrupt { path, source })
}

/// Forgets the job (it is over): the next dispatch starts afresh.
pub fn clear(state_dir: &Path) -> Result<(), IntentError> {
    let path = state_dir.join(INTENT_FILE);
    match fs::remove_file(&path) {
        Ok(()) => File::open(state_dir).and_then(|d| d.sync_all()).map_err(io(state_dir)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(IntentError::Io { path, source: err }),
    }
}
