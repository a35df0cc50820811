//! The agent's configuration (`/etc/fleetwave/agent.toml`, SPEC §14): TOML with camelCase
//! keys. Everything is checked when it is loaded, and a bad value is an error that names its
//! field (`probes[1].timeoutSeconds: …`), so an agent never starts half-configured.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::Hostname;

/// How the switch runs by default: as a transient unit of its own, never attached to the
/// agent's stdio, so an agent that dies or restarts mid-switch cannot take the switch with it.
pub const DEFAULT_SWITCH_COMMAND: [&str; 5] =
    ["systemd-run", "--unit=fleetwave-switch", "--collect", "--service-type=exec", "--quiet"];

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into() }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    control_plane: String,
    hostname: String,
    key_file: PathBuf,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_profile")]
    profile: PathBuf,
    #[serde(default)]
    substituters: Vec<String>,
    #[serde(default)]
    trusted_public_keys: Vec<String>,
    #[serde(default = "default_switch_command")]
    switch_command: Vec<String>,
    #[serde(default = "default_activation_timeout")]
    activation_timeout_seconds: u64,
    #[serde(default)]
    probes: Vec<ProbeFile>,
    #[serde(default)]
    reboot: Reboot,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/fleetwave-agent")
}

fn default_profile() -> PathBuf {
    PathBuf::from("/nix/var/nix/profiles/system")
}

fn default_switch_command() -> Vec<String> {
    DEFAULT_SWITCH_COMMAND.iter().map(|s| (*s).to_owned()).collect()
}

fn default_activation_timeout() -> u64 {
    300
}

fn default_fail_after() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProbeFile {
    name: String,
    kind: ProbeKind,
    #[serde(default)]
    target: Option<String>,
    interval_seconds: u64,
    timeout_seconds: u64,
    mode: shared::state::ProbeMode,
    #[serde(default = "default_fail_after")]
    fail_after: u32,
}

/// What a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// `systemctl --failed` lists nothing.
    SystemdFailedUnits,
    /// An HTTP GET of `target` answers 2xx.
    Http,
    /// A TCP connection to `target` (`host:port`) opens.
    Tcp,
    /// The program `target` exits 0.
    Exec,
}

/// Whether the agent may reboot a host whose new closure needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reboot {
    /// Stage the closure for the next boot and report it deferred (the default).
    #[default]
    Never,
    /// Reboot into it.
    Allowed,
}

/// A checked probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub kind: ProbeKind,
    pub target: Option<String>,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub mode: shared::state::ProbeMode,
    pub fail_after: u32,
}

/// A checked configuration. Paths are as written; [`Config::paths`] places them under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub control_plane: String,
    pub hostname: Hostname,
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    pub profile: PathBuf,
    pub substituters: Vec<String>,
    pub trusted_public_keys: Vec<String>,
    pub switch_command: Vec<String>,
    pub activation_timeout_seconds: u64,
    pub probes: Vec<Probe>,
    pub reboot: Reboot,
}

/// Longest interval, timeout or activation the agent accepts (a day): anything longer is a
/// typo, and keeps every time sum far from overflow.
const MAX_SECONDS: u64 = 24 * 60 * 60;

fn seconds(field: String, value: u64) -> Result<u64, ConfigError> {
    if value == 0 || value > MAX_SECONDS {
        return Err(bad(field, format!("{value} is not between 1 and {MAX_SECONDS} seconds")));
    }
    Ok(value)
}

/// A TOML error as a [`ConfigError`] naming the field: the key toml names (unknown or missing
/// field), or the key on the line it points at, inside `probes[i]` when it is in the i-th
/// `[[probes]]` table.
fn toml_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_owned();
    let start = err.span().map_or(0, |s| s.start.min(text.len()));
    let before = &text[..start];
    let line_no = before.lines().count().max(1);
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.split_once(p).and_then(|(_, rest)| rest.split_once('`')).map(|(k, _)| k.to_owned()));
    let on_line = || {
        let line = text[before.rfind('\n').map_or(0, |i| i + 1)..].lines().next().unwrap_or("");
        line.split_once('=').map(|(k, _)| k.trim().to_owned()).filter(|k| !k.is_empty() && !k.starts_with('['))
    };
    let key = named.or_else(on_line).unwrap_or_else(|| "config".to_owned());
    let probes = before.matches("[[probes]]").count();
    // In TOML every key after a table header belongs to that table.
    let field = if probes > 0 && key != "config" { format!("probes[{}].{key}", probes - 1) } else { key };
    bad(field, format!("{message} (line {line_no})"))
}

fn absolute(field: &str, path: &Path) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(bad(field, format!("`{}` must be an absolute path", path.display())));
    }
    Ok(())
}

impl Config {
    /// Parses and checks the text of a configuration file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|err| toml_error(text, &err))?;
        let control_plane = file.control_plane.trim_end_matches('/').to_owned();
        let host_part = control_plane.strip_prefix("https://").or_else(|| control_plane.strip_prefix("http://"));
        if host_part.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(bad("controlPlane", format!("`{}` is not an http:// or https:// URL", file.control_plane)));
        }
        let hostname = Hostname::parse(file.hostname).map_err(|e| bad("hostname", e.to_string()))?;
        absolute("keyFile", &file.key_file)?;
        absolute("stateDir", &file.state_dir)?;
        absolute("profile", &file.profile)?;
        for (i, s) in file.substituters.iter().enumerate() {
            if s.trim().is_empty() || s.contains(char::is_whitespace) {
                return Err(bad(format!("substituters[{i}]"), format!("`{s}` is not a store URL")));
            }
        }
        for (i, k) in file.trusted_public_keys.iter().enumerate() {
            // Nix's format: `name:base64-of-the-key`.
            if k.split_once(':').is_none_or(|(name, key)| name.is_empty() || key.is_empty()) {
                return Err(bad(format!("trustedPublicKeys[{i}]"), format!("`{k}` is not `name:key`")));
            }
        }
        if let Some((i, _)) = file.switch_command.iter().enumerate().find(|(_, a)| a.is_empty()) {
            return Err(bad(format!("switchCommand[{i}]"), "an empty argument"));
        }
        let activation_timeout_seconds = seconds("activationTimeoutSeconds".into(), file.activation_timeout_seconds)?;
        let mut probes: Vec<Probe> = Vec::with_capacity(file.probes.len());
        for (i, p) in file.probes.into_iter().enumerate() {
            let field = |name: &str| format!("probes[{i}].{name}");
            if p.name.is_empty() || p.name.len() > shared::limits::MAX_PROBE_NAME_BYTES {
                return Err(bad(field("name"), format!("must be 1–{} bytes", shared::limits::MAX_PROBE_NAME_BYTES)));
            }
            if probes.iter().any(|q| q.name == p.name) {
                return Err(bad(field("name"), format!("`{}` is the name of an earlier probe", p.name)));
            }
            let target = p.target.filter(|t| !t.trim().is_empty());
            match (p.kind, &target) {
                (ProbeKind::SystemdFailedUnits, Some(_)) => {
                    return Err(bad(field("target"), "a systemd-failed-units probe has no target"));
                }
                (ProbeKind::Http, Some(t)) if !(t.starts_with("http://") || t.starts_with("https://")) => {
                    return Err(bad(field("target"), format!("`{t}` is not an http:// or https:// URL")));
                }
                (ProbeKind::Tcp, Some(t))
                    if t.rsplit_once(':').is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err()) =>
                {
                    return Err(bad(field("target"), format!("`{t}` is not host:port")));
                }
                (ProbeKind::Http | ProbeKind::Tcp | ProbeKind::Exec, None) => {
                    return Err(bad(field("target"), "this kind of probe needs a target"));
                }
                _ => {}
            }
            let interval_seconds = seconds(field("intervalSeconds"), p.interval_seconds)?;
            let timeout_seconds = seconds(field("timeoutSeconds"), p.timeout_seconds)?;
            if timeout_seconds > interval_seconds {
                return Err(bad(field("timeoutSeconds"), "must not be longer than intervalSeconds"));
            }
            if p.fail_after == 0 {
                return Err(bad(field("failAfter"), "must be at least 1"));
            }
            probes.push(Probe {
                name: p.name,
                kind: p.kind,
                target,
                interval_seconds,
                timeout_seconds,
                mode: p.mode,
                fail_after: p.fail_after,
            });
        }
        if probes.len() > shared::limits::MAX_PROBES {
            return Err(bad("probes", format!("at most {} probes", shared::limits::MAX_PROBES)));
        }
        Ok(Config {
            control_plane,
            hostname,
            key_file: file.key_file,
            state_dir: file.state_dir,
            profile: file.profile,
            substituters: file.substituters,
            trusted_public_keys: file.trusted_public_keys,
            switch_command: file.switch_command,
            activation_timeout_seconds,
            probes,
            reboot: file.reboot,
        })
    }

    /// Reads and checks the configuration file at `path` (read as given, never under a root).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// The paths the agent reads and writes, under `root` when one is given (tests and
    /// staging: every absolute path but the Nix store moves under it).
    pub fn paths(&self, root: Option<&Path>) -> Paths {
        let place = |path: &Path| match root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        };
        Paths {
            key_file: place(&self.key_file),
            state_dir: place(&self.state_dir),
            profile: place(&self.profile),
            current_system: place(Path::new("/run/current-system")),
            booted_system: place(Path::new("/run/booted-system")),
            boot_id: place(Path::new("/proc/sys/kernel/random/boot_id")),
        }
    }
}

/// Where the agent reads and writes, after `--root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
    pub boot_id: PathBuf,
}
