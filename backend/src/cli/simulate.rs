//! `fleetwave simulate`: simulated agents against a running control plane.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::sim::fleet::{LoadFleet, LoadShape};
use crate::sim::{self, Behaviour, SimHost};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The control plane, e.g. http://127.0.0.1:8080. Repeat it for several replicas: each
    /// request goes to one of them at random.
    #[arg(long = "url", required_unless_present = "provision")]
    pub urls: Vec<String>,
    /// Directory of host keys, one `HOSTNAME.key` per host (as `fleetwave keygen` writes).
    #[arg(long, required_unless_present = "provision")]
    pub fleet_keys: Option<PathBuf>,
    /// Instead of simulating: write a signed load-test fleet of `--hosts` hosts to this
    /// directory (CI key, trust.json, release/ for `serve --manifests-dir`, hosts/*.key for
    /// `--fleet-keys`) and print the commands that use it.
    #[arg(long)]
    pub provision: Option<PathBuf>,
    /// With --provision: channels to spread the hosts over (each a rollout). Default: 10.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// How many hosts to simulate (the first N key files by name). Default: all.
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Seed of the agents' decisions. Default: 1.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pace: 1.0 is real agent timing; smaller is faster. Default: 1.0.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Multiplies the heartbeat interval the control plane asks for. Default: --time-scale.
    #[arg(long)]
    pub heartbeat_scale: Option<f64>,
    /// Milliseconds between probe reports while soaking. Default: the heartbeat interval.
    #[arg(long)]
    pub probe_interval_ms: Option<u64>,
    /// Most requests in flight across all simulated hosts. Default: no limit.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
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
    if let Some(dir) = &args.provision {
        let shape = LoadShape {
            hosts: args.hosts.unwrap_or(1000),
            channels: args.channels.max(1),
            soak_minutes: 0,
            waves: 4,
            seed: args.seed,
            initial_closure: args.initial_closure.clone(),
        };
        return provision(dir, &shape);
    }
    let (false, Some(fleet_keys)) = (args.urls.is_empty(), args.fleet_keys.clone()) else {
        anyhow::bail!("--url and --fleet-keys are required to simulate");
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fleet_keys)
        .with_context(|| format!("cannot read {}", fleet_keys.display()))?
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
    anyhow::ensure!(!hosts.is_empty(), "no *.key files in {}", fleet_keys.display());
    let behaviour = Behaviour {
        time_scale: args.time_scale,
        heartbeat_scale: args.heartbeat_scale,
        probe_interval: args.probe_interval_ms.map(Duration::from_millis),
        max_in_flight: args.max_in_flight,
        activation_failure: args.activation_failure_rate,
        probe_failure: args.probe_failure_rate,
        deferral: args.deferral_rate,
        restart: args.restart_rate,
        lose_event: args.loss_rate,
        duplicate_event: args.duplicate_rate,
        reorder_event: args.reorder_rate,
        bad_closure_marker: args.bad_closure_marker,
        record_applied: false,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    let started = Instant::now();
    let count = hosts.len();
    let (stats, tasks) = sim::spawn(&args.urls, hosts, args.seed, behaviour, shutdown.clone());
    eprintln!("simulating {count} hosts against {}", args.urls.join(", "));
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

/// Writes a load-test fleet (see [`LoadFleet`]) and prints the commands that use it.
fn provision(dir: &std::path::Path, shape: &LoadShape) -> anyhow::Result<()> {
    LoadFleet::build(shape)?.write(dir, true)?;
    let d = dir.display();
    println!("wrote a {}-host fleet over {} channels to {d}", shape.hosts, shape.channels);
    println!("  fleetwave serve --trust {d}/trust.json --manifests-dir {d}/release --manifests-poll-ms 1000");
    println!(
        "  fleetwave simulate --url http://127.0.0.1:8080 --fleet-keys {d}/hosts --initial-closure {} --duration-secs 60",
        shape.initial_closure
    );
    Ok(())
}
