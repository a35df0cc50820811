//! `fleetwave simulate`: simulated agents against a running control plane.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::sim::{self, Behaviour, SimHost};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The control plane, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Directory of host keys, one `HOSTNAME.key` per host (as `fleetwave keygen` writes).
    #[arg(long)]
    pub fleet_keys: PathBuf,
    /// How many hosts to simulate (the first N key files by name). Default: all.
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Seed of the agents' decisions. Default: 1.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pace: 1.0 is real agent timing; smaller is faster. Default: 1.0.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Chance that an activation fails. Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub activation_failure_rate: f64,
    /// Chance that health probes fail during a soak. Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub probe_failure_rate: f64,
    /// Chance that an activation is deferred to the next boot. Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub deferral_rate: f64,
    /// Chance per heartbeat that an agent restarts. Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub restart_rate: f64,
    /// Chance that an event post is lost / duplicated / reordered. Default: 0.
    #[arg(long, default_value_t = 0.0)]
    pub loss_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub reorder_rate: f64,
    /// Closures containing this string always fail their health probe.
    #[arg(long)]
    pub bad_closure_marker: Option<String>,
    /// Initial closure of every host. Default: /nix/store/0-initial.
    #[arg(long, default_value = "/nix/store/00000000000000000000000000000000-initial")]
    pub initial_closure: String,
    /// Stop after this many seconds and print a summary. Default: run until Ctrl-C.
    #[arg(long)]
    pub duration_secs: Option<u64>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.fleet_keys)
        .with_context(|| format!("cannot read {}", args.fleet_keys.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    files.sort();
    let mut hosts = Vec::new();
    for path in files.into_iter().take(args.hosts.unwrap_or(usize::MAX)) {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let key = crate::cli::signing::read_key(&path)?;
        hosts.push(SimHost { hostname: name, key, initial_closure: args.initial_closure.clone() });
    }
    anyhow::ensure!(!hosts.is_empty(), "no *.key files in {}", args.fleet_keys.display());
    let behaviour = Behaviour {
        time_scale: args.time_scale,
        activation_failure: args.activation_failure_rate,
        probe_failure: args.probe_failure_rate,
        deferral: args.deferral_rate,
        restart: args.restart_rate,
        lose_event: args.loss_rate,
        duplicate_event: args.duplicate_rate,
        reorder_event: args.reorder_rate,
        bad_closure_marker: args.bad_closure_marker,
        rollback: true,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    let started = Instant::now();
    let count = hosts.len();
    let (stats, tasks) = sim::spawn(&args.url, hosts, args.seed, behaviour, shutdown.clone());
    eprintln!("simulating {count} hosts against {}", args.url);
    if let Some(secs) = args.duration_secs {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs(secs)) => shutdown.cancel(),
        }
    } else {
        shutdown.cancelled().await;
    }
    for task in tasks {
        let _ = task.await;
    }
    println!("{}", sim::summary(&stats, started.elapsed()));
    Ok(())
}
