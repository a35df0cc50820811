//! `fleetwave-agent run`: the real driver of the state machine. HTTP requests go out inline
//! (bounded by their timeouts); activator steps and probes run on threads of their own and come
//! back as inputs over a channel, so heartbeats keep going during a long switch. The intent is
//! written (atomically) wherever the machine says `Persist`, before anything after it.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::activator::Activator;
use crate::cli::read_key;
use crate::config::{Config, Probe};
use crate::intent;
use crate::machine::{Action, Agent, Found, Input, Level, ProbeSchedule, Settings};
use crate::probes;
use crate::transport::Transport;

/// The longest the agent sleeps without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The machine's settings from the configuration.
pub fn settings(config: &Config, jitter_seed: u64) -> Settings {
    let probes = config
        .probes
        .iter()
        .map(|p| ProbeSchedule {
            name: p.name.clone(),
            mode: p.mode,
            interval: Duration::from_secs(p.interval_seconds),
            fail_after: p.fail_after,
        })
        .collect();
    Settings::new(config.hostname.clone(), probes, config.reboot == crate::config::Reboot::Allowed, jitter_seed)
}

/// Journald reads a `<N>` prefix on stderr as the line's priority.
fn log(level: Level, message: &str) {
    let priority = match level {
        Level::Info => 6,
        Level::Warn => 4,
        Level::Error => 3,
    };
    eprintln!("<{priority}>{message}");
}

/// Runs the agent until it is killed. Returns only on a fault it cannot go on with (the intent
/// cannot be written, the host key cannot be read).
pub fn run(config_path: &Path, root: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let paths = config.paths(root);
    let key = read_key(&paths)?;
    let found_intent = intent::load(&paths.state_dir)?;
    let activator = Arc::new(Activator::new(&config, &paths));
    let current = activator
        .current()
        .with_context(|| format!("cannot read {} (is this a NixOS host?)", paths.current_system.display()))?;
    let boot_id = std::fs::read_to_string(&paths.boot_id).map(|s| s.trim().to_owned()).unwrap_or_default();
    let mut seed = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    let settings = settings(&config, u64::from_le_bytes(seed));
    log(
        Level::Info,
        &format!("fleetwave-agent {} for {} at {}", env!("CARGO_PKG_VERSION"), config.hostname, config.control_plane),
    );

    let mut transport = Transport::new(&config.control_plane, config.hostname.as_str(), key);
    let (tx, rx) = mpsc::channel::<Input>();
    let booted = activator.booted();
    let found = Found { intent: found_intent, current, booted, boot_id };
    let (mut machine, first) = Agent::start(settings, found, Utc::now());
    let mut actions: VecDeque<Action> = first.into();
    let mut inputs: VecDeque<Input> = VecDeque::new();
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Persist => {
                    if let Some(job) = machine.intent() {
                        intent::save(&paths.state_dir, job).context("cannot persist the intent")?;
                    }
                }
                Action::SendHeartbeat(request) => inputs.push_back(Input::Heartbeat(transport.heartbeat(&request))),
                Action::SendEvent(request) => {
                    let (rollout_id, seq) = (request.rollout_id.clone(), request.event.seq());
                    let result = transport.event(&request).map(|r| r.outcome);
                    inputs.push_back(Input::Event { rollout_id, seq, result });
                }
                Action::Activate(step) => {
                    log(Level::Info, &format!("activator: {step:?}"));
                    let (activator, tx) = (activator.clone(), tx.clone());
                    std::thread::spawn(move || {
                        let _ = tx.send(Input::Activator(activator.run(&step)));
                    });
                }
                Action::RunProbe(name) => {
                    let Some(probe) = config.probes.iter().find(|p| p.name == name).cloned() else { continue };
                    spawn_probe(probe, transport.http().clone(), tx.clone());
                }
                Action::Log(level, message) => log(level, &message),
            }
        }
        if let Some(input) = inputs.pop_front() {
            actions = machine.handle(Utc::now(), input).into();
            continue;
        }
        let wait = machine
            .next_wake()
            .map_or(MAX_SLEEP, |at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .min(MAX_SLEEP);
        let input = match rx.recv_timeout(wait) {
            Ok(input) => input,
            Err(mpsc::RecvTimeoutError::Timeout) => Input::Tick,
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the agent's input channel closed"),
        };
        actions = machine.handle(Utc::now(), input).into();
    }
}

fn spawn_probe(probe: Probe, http: ureq::Agent, tx: mpsc::Sender<Input>) {
    std::thread::spawn(move || {
        let verdict = probes::run(&probe, &http);
        let _ = tx.send(Input::Probe { name: probe.name, status: verdict.status, reason: verdict.reason });
    });
}
