//! The command line: `run --config FILE [--root DIR]`, `keygen --out PATH` and
//! `check --config FILE [--root DIR]`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use engine::sign::{decode_signing_key, encode_signing_key, public_key_b64};

use crate::config::{Config, ConfigError, Paths};

#[derive(Debug, Parser)]
#[command(name = "fleetwave-agent", version, about = "Follow a Fleetwave control plane on this NixOS host")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow the control plane: heartbeat, take dispatches, switch, soak, report, roll back.
    Run {
        #[arg(long, default_value = "/etc/fleetwave/agent.toml")]
        config: PathBuf,
        /// Take every absolute path but the Nix store under DIR (tests and staging).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Make this host's Ed25519 key: writes the secret to PATH (mode 0600) and prints the
    /// public key, which goes into fleet.json as the host's `pubkey`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Check the configuration (and the key it names) and print what the agent would do.
    Check {
        #[arg(long, default_value = "/etc/fleetwave/agent.toml")]
        config: PathBuf,
        /// Take every absolute path but the Nix store under DIR.
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run { config, root } => crate::run::run(&config, root.as_deref()),
        Command::Keygen { out, force } => keygen(&out, force),
        Command::Check { config, root } => check(&config, root.as_deref()).map(|report| print!("{report}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(out: &Path, force: bool) -> anyhow::Result<()> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(out)
        .with_context(|| format!("cannot create {} (use --force to replace an existing key)", out.display()))?;
    writeln!(file, "{}", encode_signing_key(&key))?;
    file.sync_all()?;
    println!("{}", public_key_b64(&key));
    eprintln!("wrote {}; put the public key above into fleet.json as this host's `pubkey`", out.display());
    Ok(())
}

/// Reads the host key the configuration names (under the root).
pub fn read_key(paths: &Paths) -> Result<SigningKey, ConfigError> {
    let problem = |p: String| ConfigError { field: "keyFile".into(), problem: p };
    let text = std::fs::read_to_string(&paths.key_file)
        .map_err(|e| problem(format!("cannot read {}: {e}", paths.key_file.display())))?;
    decode_signing_key(&text).map_err(|e| problem(format!("{}: {e}", paths.key_file.display())))
}

/// Checks `config` and its key; the report says what `run` would do.
pub fn check(config: &Path, root: Option<&Path>) -> anyhow::Result<String> {
    let config = Config::load(config)?;
    let paths = config.paths(root);
    let key = read_key(&paths)?;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("host {} follows {}", config.hostname, config.control_plane));
    line(format!("signs as {} (key {})", public_key_b64(&key), paths.key_file.display()));
    line(format!("keeps its intent and next event seq in {}", paths.state_dir.display()));
    line(format!(
        "switches profile {} and waits for {} (at most {} s)",
        paths.profile.display(),
        paths.current_system.display(),
        config.activation_timeout_seconds
    ));
    let switch = if config.switch_command.is_empty() {
        "directly".to_owned()
    } else {
        format!("through `{}`", config.switch_command.join(" "))
    };
    line(format!("runs TARGET/bin/switch-to-configuration {switch}"));
    line(format!(
        "realises closures from {} trusting {}",
        if config.substituters.is_empty() {
            "the configured Nix substituters".to_owned()
        } else {
            config.substituters.join(", ")
        },
        if config.trusted_public_keys.is_empty() {
            "Nix's own trusted keys".to_owned()
        } else {
            config.trusted_public_keys.join(", ")
        }
    ));
    line(format!("reboot: {:?}", config.reboot).to_lowercase());
    for p in &config.probes {
        line(format!(
            "probe {} ({:?}{}, {:?}): every {} s, timeout {} s, fails after {} in a row",
            p.name,
            p.kind,
            p.target.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
            p.mode,
            p.interval_seconds,
            p.timeout_seconds,
            p.fail_after
        ));
    }
    if config.probes.is_empty() {
        line("no probes: a soak passes on time alone".to_owned());
    }
    Ok(out)
}
