//! The fleet simulator: one lightweight task per host, each running the real agent's state
//! machine ([`agent::machine`], SPEC §14) with a simulated activator (realise, switch, stage
//! for the next boot and reboot, roll back, with realistic timing) and a simulated `http`
//! probe, over a signed HTTP client. Failure injection: activation failures, failing probes
//! (→ `Failed` and `RollbackComplete`), deferrals, agent restarts (the agent keeps only its
//! intent, and a switch it started finishes while it is down), and lost, duplicated and
//! reordered event posts.
//!
//! Deterministic for a seed: every host draws from its own ChaCha stream seeded by
//! (seed, hostname), so the same hosts make the same decisions in every run (wall-clock timing
//! still varies). Used for the demo, the end-to-end tests and as the load generator.

pub mod client;
pub mod fleet;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent::machine::{Action, Agent, Found, Input, Level, ProbeSchedule, SendError, Settings, Step, StepResult};
use chrono::Utc;
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use shared::agent::{EVENTS_PATH, EventOutcome, EventRequest, EventResponse, HEARTBEAT_PATH, HeartbeatResponse};
use shared::state::{HostEvent, ProbeMode, ProbeStatus};
use shared::{Closure, Hostname, RolloutId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::AgentClient;

/// Failure injection and pacing.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Multiplies activation, reboot and failure times (not soaks: the control plane checks
    /// those against event timestamps). 1.0 is realistic; demos and tests use less.
    pub time_scale: f64,
    /// Multiplies the heartbeat interval the control plane asks for. Default: `time_scale`.
    pub heartbeat_scale: Option<f64>,
    /// Time between health-probe reports while soaking. Default: the heartbeat interval.
    pub probe_interval: Option<Duration>,
    /// Most requests the whole simulated fleet has in flight at once (a load generator's
    /// connection budget); latency is counted from when a request may go. Default: no limit.
    pub max_in_flight: Option<usize>,
    pub activation_failure: f64,
    pub probe_failure: f64,
    pub deferral: f64,
    /// Chance per heartbeat that the agent restarts and forgets its in-memory state.
    pub restart: f64,
    pub lose_event: f64,
    pub duplicate_event: f64,
    pub reorder_event: f64,
    /// Closures containing this marker always fail their enforce probe.
    pub bad_closure_marker: Option<String>,
    /// Keep every (host, rollout, seq) answered `applied` in [`Stats::applied`] (tests that
    /// check each is in the log; off for load, where it would only cost memory).
    pub record_applied: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            time_scale: 1.0,
            heartbeat_scale: None,
            probe_interval: None,
            max_in_flight: None,
            activation_failure: 0.0,
            probe_failure: 0.0,
            deferral: 0.0,
            restart: 0.0,
            lose_event: 0.0,
            duplicate_event: 0.0,
            reorder_event: 0.0,
            bad_closure_marker: None,
            record_applied: false,
        }
    }
}

/// Counters and latencies, shared by all agents.
#[derive(Default)]
pub struct Stats {
    pub heartbeats: AtomicU64,
    pub events_applied: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_refused: AtomicU64,
    pub retries: AtomicU64,
    pub restarts: AtomicU64,
    pub converged: AtomicU64,
    pub failed: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<(bool, u64)>>,
    /// Every event answered `applied`, as (host, rollout, seq), with `record_applied`.
    pub applied: std::sync::Mutex<Vec<(String, String, u64)>>,
}

impl Stats {
    fn record(&self, heartbeat: bool, took: Duration) {
        if let Ok(mut l) = self.latencies_us.lock() {
            l.push((heartbeat, took.as_micros() as u64));
        }
    }

    /// Forgets the latencies so far (the start of a measurement window).
    pub fn clear_latencies(&self) {
        if let Ok(mut l) = self.latencies_us.lock() {
            l.clear();
        }
    }

    /// (p50, p99) in milliseconds of heartbeat (true) or event (false) requests.
    pub fn percentiles(&self, heartbeat: bool) -> Option<(f64, f64)> {
        let l = self.latencies_us.lock().ok()?;
        let mut v: Vec<u64> = l.iter().filter(|(h, _)| *h == heartbeat).map(|(_, us)| *us).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some((percentile_ms(&v, 0.5), percentile_ms(&v, 0.99)))
    }
}

/// The `q` quantile of sorted microsecond samples, in milliseconds (0 when empty).
pub fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    match sorted_us.len() {
        0 => 0.0,
        n => sorted_us[((n - 1) as f64 * q).round() as usize] as f64 / 1000.0,
    }
}

/// One host's agent.
#[derive(Clone)]
pub struct SimHost {
    pub hostname: String,
    pub key: SigningKey,
    /// What the host runs before any rollout.
    pub initial_closure: String,
}

/// A simulated host: the agent's state machine ([`agent::machine`], the code that runs on
/// hosts) driven by a simulated activator, simulated probes, and a transport that can lose,
/// duplicate and reorder event posts.
struct SimAgent {
    client: AgentClient,
    rng: ChaCha8Rng,
    behaviour: Arc<Behaviour>,
    stats: Arc<Stats>,
    settings: Settings,
    machine: Agent,
    /// Actions not yet carried out (a restart drops them with the process that wanted them).
    actions: VecDeque<Action>,
    /// Inputs not yet fed to the machine.
    inputs: VecDeque<Input>,
    /// What `/run/current-system` points at.
    system: Closure,
    /// Staged for the next boot.
    staged: Option<Closure>,
    boot: u64,
    /// The activator step running, and when it ends.
    step: Option<(Instant, Step)>,
    /// A reboot under way, and when the host is back.
    reboot_at: Option<Instant>,
    /// A closure whose probe failed: it keeps failing.
    failing: Option<Closure>,
}

fn seeded(seed: u64, host: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(host.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

fn scaled(behaviour: &Behaviour, d: Duration) -> Duration {
    d.mul_f64(behaviour.time_scale.max(0.0))
}

const PROBE: &str = "http";

impl SimAgent {
    fn new(
        host: SimHost,
        client: AgentClient,
        seed: u64,
        behaviour: Arc<Behaviour>,
        stats: Arc<Stats>,
    ) -> anyhow::Result<SimAgent> {
        let mut rng = seeded(seed, &host.hostname);
        let heartbeat_scale = behaviour.heartbeat_scale.unwrap_or(behaviour.time_scale).max(0.0);
        // A probe every 5 s by default (the control plane's active heartbeat interval), scaled.
        let interval = behaviour.probe_interval.unwrap_or_else(|| Duration::from_secs(5).mul_f64(heartbeat_scale));
        let probes = vec![ProbeSchedule { name: PROBE.into(), mode: ProbeMode::Enforce, interval, fail_after: 3 }];
        let mut settings = Settings::new(Hostname::parse(host.hostname)?, probes, true, rng.r#gen());
        settings.heartbeat_scale = heartbeat_scale;
        settings.retry_first = scaled(&behaviour, Duration::from_secs(1)).max(Duration::from_millis(10));
        settings.retry_max = scaled(&behaviour, Duration::from_secs(60)).max(Duration::from_millis(100));
        let system = Closure::parse(host.initial_closure)?;
        let found =
            Found { intent: None, current: system.clone(), booted: Some(system.clone()), boot_id: "boot-0".into() };
        let (machine, actions) = Agent::start(settings.clone(), found, Utc::now());
        Ok(SimAgent {
            client,
            rng,
            behaviour,
            stats,
            settings,
            machine,
            actions: actions.into(),
            inputs: VecDeque::new(),
            system,
            staged: None,
            boot: 0,
            step: None,
            reboot_at: None,
            failing: None,
        })
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen_bool(p.min(1.0))
    }

    fn took(&mut self, millis: std::ops::Range<u64>) -> Duration {
        let d = Duration::from_millis(self.rng.gen_range(millis));
        scaled(&self.behaviour, d)
    }

    /// Carries out the pending actions and feeds their results back until both run dry (which
    /// may be never: probes every 0 s keep it busy) or `shutdown`.
    async fn drive(&mut self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            while let Some(action) = self.actions.pop_front() {
                self.perform(action).await;
            }
            let Some(input) = self.inputs.pop_front() else { return };
            self.actions = self.machine.handle(Utc::now(), input).into();
        }
    }

    async fn perform(&mut self, action: Action) {
        match action {
            // Between two inputs the machine's intent is always the one last persisted (it
            // flushes before returning), so a restart reads `machine.intent()` directly.
            Action::Persist => {}
            Action::SendHeartbeat(request) => {
                if self.chance(self.behaviour.restart) {
                    self.restart();
                    return;
                }
                let (result, took) = self.client.post::<_, HeartbeatResponse>(HEARTBEAT_PATH, &request).await;
                self.stats.record(true, took);
                let counter = if result.is_ok() { &self.stats.heartbeats } else { &self.stats.retries };
                counter.fetch_add(1, Ordering::Relaxed);
                self.inputs.push_back(Input::Heartbeat(result));
            }
            Action::SendEvent(request) => self.send_event(request).await,
            Action::Activate(step) => {
                let took = match step {
                    Step::Realise { .. } => self.took(500..1_500),
                    Step::Switch { .. } => self.took(500..2_500),
                    Step::Rollback { .. } => self.took(500..2_000),
                    Step::Reboot => Duration::ZERO,
                };
                self.step = Some((Instant::now() + took, step));
            }
            Action::RunProbe(name) => {
                let bad =
                    self.behaviour.bad_closure_marker.as_deref().is_some_and(|m| self.system.as_str().contains(m));
                let fails = bad
                    || self.failing.as_ref() == Some(&self.system)
                    || self.chance(self.behaviour.probe_failure / 4.0);
                if fails {
                    self.failing = Some(self.system.clone());
                }
                let (status, reason) = if fails {
                    (ProbeStatus::Fail, Some("GET /health: 502 Bad Gateway".to_owned()))
                } else {
                    (ProbeStatus::Pass, None)
                };
                self.inputs.push_back(Input::Probe { name, status, reason });
            }
            Action::Log(level, message) => {
                let host = self.client.host();
                match level {
                    Level::Info => tracing::debug!(%host, "{message}"),
                    Level::Warn | Level::Error => tracing::info!(%host, "{message}"),
                }
            }
        }
    }

    /// Posts an event with the configured losses, duplicates and reorders.
    async fn send_event(&mut self, request: EventRequest) {
        let (rollout_id, seq) = (request.rollout_id.clone(), request.event.seq());
        if self.chance(self.behaviour.lose_event) {
            // The post never arrived: to the agent, a timeout.
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.inputs.push_back(Input::Event { rollout_id, seq, result: Err(SendError::Retry { after: None }) });
            return;
        }
        if self.chance(self.behaviour.reorder_event)
            && let Some(next) = self.machine.unsent().nth(1).cloned()
        {
            // The next event overtakes this one (its answer is lost; the agent sends it again).
            let overtaking = EventRequest { event: next, ..request.clone() };
            let (answer, took) = self.client.post::<_, EventResponse>(EVENTS_PATH, &overtaking).await;
            self.stats.record(false, took);
            self.count(answer.as_ref().map(|r| r.outcome), &overtaking.rollout_id, &overtaking.event);
        }
        let copies = if self.chance(self.behaviour.duplicate_event) { 2 } else { 1 };
        for copy in 1..=copies {
            let (answer, took) = self.client.post::<_, EventResponse>(EVENTS_PATH, &request).await;
            self.stats.record(false, took);
            let result = answer.map(|r| r.outcome);
            self.count(result.as_ref().copied(), &request.rollout_id, &request.event);
            if copy == copies {
                self.inputs.push_back(Input::Event { rollout_id: rollout_id.clone(), seq, result });
            }
        }
    }

    /// Counts an answer to a post of `event` (a host converges or fails when its event is
    /// applied, whichever post carried it).
    fn count(&self, result: Result<EventOutcome, &SendError>, rollout_id: &RolloutId, event: &HostEvent) {
        let counter = match result {
            Ok(EventOutcome::Applied) => {
                if self.behaviour.record_applied
                    && let Ok(mut applied) = self.stats.applied.lock()
                {
                    applied.push((self.client.host().to_owned(), rollout_id.to_string(), event.seq()));
                }
                match event {
                    HostEvent::Converged { .. } => self.stats.converged.fetch_add(1, Ordering::Relaxed),
                    HostEvent::Failed { .. } | HostEvent::ActivationFailed { .. } => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => 0,
                };
                &self.stats.events_applied
            }
            Ok(EventOutcome::Duplicate) => &self.stats.events_duplicate,
            Err(SendError::Refused { .. }) => &self.stats.events_refused,
            Err(SendError::Retry { .. }) => &self.stats.retries,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The running activator step ends: its effect on the host, and its result to the agent.
    fn finish_step(&mut self, step: Step) {
        let result = match step {
            Step::Realise { .. } => StepResult::Realised,
            Step::Switch { target } => {
                if self.chance(self.behaviour.activation_failure) {
                    StepResult::SwitchFailed {
                        exit_code: 4,
                        stderr_tail: "switch-to-configuration: unit nginx.service failed to start".into(),
                    }
                } else if self.chance(self.behaviour.deferral) {
                    self.staged = Some(target);
                    StepResult::Staged { component: "kernel".into() }
                } else {
                    self.system = target.clone();
                    StepResult::Switched { observed: target, exit_code: 0 }
                }
            }
            Step::Rollback { to } => {
                self.system = to.clone();
                StepResult::RolledBack { observed: to, exit_code: 0, stderr_tail: String::new() }
            }
            Step::Reboot => {
                let back = self.took(5_000..15_000);
                self.reboot_at = Some(Instant::now() + back);
                return;
            }
        };
        self.inputs.push_back(Input::Activator(result));
    }

    /// The agent process restarts: it keeps only its intent. A switch it started runs on in its
    /// own unit and finishes while the agent is down.
    fn restart(&mut self) {
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        match self.step.take().map(|(_, step)| step) {
            Some(Step::Switch { target }) => self.system = target,
            Some(Step::Rollback { to }) => self.system = to,
            _ => {}
        }
        self.start_machine();
    }

    /// The host is back from a reboot: into the staged closure, with a new boot id.
    fn rebooted(&mut self) {
        self.reboot_at = None;
        self.step = None;
        self.boot += 1;
        if let Some(staged) = self.staged.take() {
            self.system = staged;
        }
        self.start_machine();
    }

    fn start_machine(&mut self) {
        let found = Found {
            intent: self.machine.intent().cloned(),
            current: self.system.clone(),
            booted: Some(self.system.clone()),
            boot_id: format!("boot-{}", self.boot),
        };
        let (machine, actions) = Agent::start(self.settings.clone(), found, Utc::now());
        self.machine = machine;
        self.actions = actions.into();
        self.inputs.clear();
    }

    async fn run(mut self, shutdown: CancellationToken) {
        // Spread the first heartbeats so a large fleet does not arrive all at once.
        let spread = Duration::from_secs(5).mul_f64(self.settings.heartbeat_scale * self.rng.gen_range(0.0..1.0));
        tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(spread) => {} }
        loop {
            self.drive(&shutdown).await;
            let wake = self.machine.next_wake().map(|at| {
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                Instant::now() + wait
            });
            let next = [wake, self.step.as_ref().map(|(at, _)| *at), self.reboot_at].into_iter().flatten().min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep => {}
            }
            let now = Instant::now();
            if self.reboot_at.is_some_and(|at| at <= now) {
                self.rebooted();
                continue;
            }
            if self.step.as_ref().is_some_and(|(at, _)| *at <= now)
                && let Some((_, step)) = self.step.take()
            {
                self.finish_step(step);
            }
            self.inputs.push_back(Input::Tick);
        }
    }
}

/// Runs `hosts` against the control plane at `urls` (each request to one of them at random)
/// until `shutdown`. Returns the shared stats immediately; the agents run as tasks.
pub fn spawn(
    urls: &[String],
    hosts: Vec<SimHost>,
    seed: u64,
    behaviour: Behaviour,
    shutdown: CancellationToken,
) -> (Arc<Stats>, Vec<tokio::task::JoinHandle<()>>) {
    let stats = Arc::new(Stats::default());
    let behaviour = Arc::new(behaviour);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap_or_default();
    let limit = behaviour.max_in_flight.map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
    let bases: Arc<[String]> = urls.iter().map(|u| u.trim_end_matches('/').to_owned()).collect();
    let tasks = hosts
        .into_iter()
        .filter_map(|h| {
            let client =
                AgentClient::across(http.clone(), bases.clone(), &h.hostname, h.key.clone()).limited(limit.clone());
            match SimAgent::new(h, client, seed, behaviour.clone(), stats.clone()) {
                Ok(agent) => Some(tokio::spawn(agent.run(shutdown.clone()))),
                Err(err) => {
                    tracing::warn!("a simulated host was left out: {err:#}");
                    None
                }
            }
        })
        .collect();
    (stats, tasks)
}

/// Keeps a printable summary of the stats.
pub fn summary(stats: &Stats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let hb = stats.heartbeats.load(Ordering::Relaxed);
    let ev = stats.events_applied.load(Ordering::Relaxed) + stats.events_duplicate.load(Ordering::Relaxed);
    let fmt = |p: Option<(f64, f64)>| p.map_or("-".into(), |(p50, p99)| format!("p50 {p50:.2} ms, p99 {p99:.2} ms"));
    format!(
        "{hb} heartbeats ({:.0}/s; {}), {ev} events ({:.0}/s; {}), {} refused, {} retries, {} restarts, {} converged, {} failed",
        hb as f64 / secs,
        fmt(stats.percentiles(true)),
        ev as f64 / secs,
        fmt(stats.percentiles(false)),
        stats.events_refused.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
        stats.restarts.load(Ordering::Relaxed),
        stats.converged.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_draws_the_same_decisions_for_the_same_seed() {
        let draws = |seed, host: &str| -> Vec<u32> {
            let mut rng = seeded(seed, host);
            (0..16).map(|_| rng.r#gen()).collect()
        };
        assert_eq!(draws(7, "web-01"), draws(7, "web-01"));
        assert_ne!(draws(7, "web-01"), draws(8, "web-01"));
        assert_ne!(draws(7, "web-01"), draws(7, "web-02"));
    }
}
