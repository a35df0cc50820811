//! The fleet simulator: one lightweight task per host, speaking exactly the agent protocol of
//! SPEC §9.1 (signed requests, heartbeats at the interval the server asks for, dispatch →
//! DispatchAck → ActivationStarted → ActivationCompleted → probe results → Converged after the
//! soak), with failure injection: activation failures, failing probes (→ `Failed` and, for
//! rollback agents, `RollbackComplete`), deferrals, agent restarts (the agent forgets its
//! state and rehydrates from the bootstrap snapshots), and lost, duplicated and reordered
//! event posts. It retries on 503 and never retries a 409.
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

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use self::client::{AgentClient, Answer};

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
    /// Roll back after a health failure (agents configured for `rollback-and-halt`).
    pub rollback: bool,
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
            rollback: true,
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

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Dispatch received; acknowledge and start switching.
    Acknowledging,
    Activating {
        until: tokio::time::Instant,
    },
    /// Staged for the next boot; "reboots" at `until`.
    Deferred {
        until: tokio::time::Instant,
    },
    Soaking {
        due: DateTime<Utc>,
        failing_since: Option<tokio::time::Instant>,
    },
    /// Health failed; roll back (or just stop, without rollback).
    RollingBack,
    Done,
}

struct Job {
    rollout_id: String,
    target: String,
    soak_seconds: u64,
    previous: String,
    next_seq: u64,
    stage: Stage,
    /// Every event of this job, by seq, for `replayFrom`.
    sent: Vec<Value>,
    outbox: VecDeque<Value>,
}

struct Agent {
    client: AgentClient,
    rng: ChaCha8Rng,
    behaviour: Arc<Behaviour>,
    stats: Arc<Stats>,
    current: String,
    job: Option<Job>,
    /// Heartbeat interval: what the control plane asked for, times `heartbeat_scale`.
    interval: Duration,
    last_heartbeat: Option<tokio::time::Instant>,
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

fn heartbeat_scaled(behaviour: &Behaviour, d: Duration) -> Duration {
    d.mul_f64(behaviour.heartbeat_scale.unwrap_or(behaviour.time_scale).max(0.0))
}

impl Agent {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen_bool(p.min(1.0))
    }

    fn push(&mut self, mut event: Value) {
        let Some(job) = &mut self.job else { return };
        event["seq"] = json!(job.next_seq);
        job.next_seq += 1;
        job.sent.push(event.clone());
        job.outbox.push_back(event);
    }

    async fn heartbeat(&mut self) -> Option<Value> {
        let mut body = json!({ "hostname": self.client.host(), "currentClosure": self.current, "at": Utc::now() });
        if let Some(job) = &self.job
            && job.stage != Stage::Done
        {
            body["rolloutId"] = json!(job.rollout_id);
            body["lastEventSeq"] = json!(job.next_seq - 1);
        }
        let (answer, took) = self.client.send(reqwest::Method::POST, "/api/v1/agent/heartbeat", Some(&body)).await;
        self.stats.record(true, took);
        match answer {
            Answer::Ok(v) => {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            _ => {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A restarted agent knows only what the control plane tells it.
    fn rehydrate(&mut self, snapshots: &[Value]) {
        let Some(s) = snapshots.first() else { return };
        let state = s["state"].as_str().unwrap_or("");
        let target = s["targetClosure"].as_str().unwrap_or("").to_owned();
        let stage = match state {
            "Activating" => Stage::Activating { until: tokio::time::Instant::now() },
            "Deferred" => Stage::Deferred { until: tokio::time::Instant::now() },
            "Soaking" => Stage::Soaking {
                due: s["soakDueAt"].as_str().and_then(|d| d.parse().ok()).unwrap_or_else(Utc::now),
                failing_since: None,
            },
            "Failed" => Stage::RollingBack,
            _ => return, // Pending: the dispatch will come with the heartbeat answer.
        };
        self.job = Some(Job {
            rollout_id: s["rolloutId"].as_str().unwrap_or("").to_owned(),
            previous: s["currentClosureAtDispatch"].as_str().unwrap_or(&self.current).to_owned(),
            target,
            soak_seconds: 0,
            next_seq: s["lastEventSeq"].as_u64().unwrap_or(0) + 1,
            stage,
            sent: Vec::new(),
            outbox: VecDeque::new(),
        });
    }

    fn on_answer(&mut self, answer: &Value) {
        if let (Some(from), Some(job)) = (answer["replayFrom"].as_u64(), &mut self.job) {
            // The control plane lost events after `from`: queue them again, in order.
            let resend: Vec<Value> =
                job.sent.iter().filter(|e| e["seq"].as_u64().unwrap_or(0) > from).cloned().collect();
            job.outbox = resend.into();
        }
        if self.job.is_none()
            && let Some(snapshots) = answer["bootstrap"].as_array()
        {
            self.rehydrate(snapshots);
        }
        let dispatch = &answer["dispatch"];
        let new_rollout =
            dispatch["rolloutId"].as_str().filter(|id| self.job.as_ref().is_none_or(|j| j.rollout_id != *id));
        if let Some(id) = new_rollout {
            self.job = Some(Job {
                rollout_id: id.to_owned(),
                target: dispatch["targetClosure"].as_str().unwrap_or("").to_owned(),
                soak_seconds: dispatch["soakSeconds"].as_u64().unwrap_or(0),
                previous: self.current.clone(),
                next_seq: 1,
                stage: Stage::Acknowledging,
                sent: Vec::new(),
                outbox: VecDeque::new(),
            });
        }
        if let Some(n) = answer["nextHeartbeatSeconds"].as_u64() {
            self.interval = heartbeat_scaled(&self.behaviour, Duration::from_secs(n.max(1)));
        }
    }

    /// Moves the job along; queues the events that this produces.
    fn progress(&mut self) {
        let now = tokio::time::Instant::now();
        let Some(stage) = self.job.as_ref().map(|j| j.stage.clone()) else { return };
        let (target, soak) = match &self.job {
            Some(j) => (j.target.clone(), j.soak_seconds),
            None => return,
        };
        let bad = self.behaviour.bad_closure_marker.as_deref().is_some_and(|m| target.contains(m));
        match stage {
            Stage::Acknowledging => {
                let current = self.current.clone();
                self.push(json!({"kind": "DispatchAck", "currentClosure": current, "receivedAt": Utc::now()}));
                self.push(json!({"kind": "ActivationStarted", "startedAt": Utc::now()}));
                let took = scaled(&self.behaviour, Duration::from_millis(self.rng.gen_range(1_000..4_000)));
                self.set_stage(Stage::Activating { until: now + took });
            }
            Stage::Activating { until } | Stage::Deferred { until } if now >= until => {
                let deferring = matches!(stage, Stage::Activating { .. }) && self.chance(self.behaviour.deferral);
                if deferring {
                    self.push(json!({"kind": "ActivationDeferred", "component": "kernel", "deferredAt": Utc::now()}));
                    let reboot = scaled(&self.behaviour, Duration::from_secs(self.rng.gen_range(5..15)));
                    self.set_stage(Stage::Deferred { until: now + reboot });
                } else if self.chance(self.behaviour.activation_failure) {
                    self.push(json!({"kind": "ActivationFailed", "exitCode": 4, "stderrTail": "switch-to-configuration: unit nginx.service failed", "failedAt": Utc::now()}));
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.set_stage(Stage::RollingBack);
                } else {
                    let completed = Utc::now();
                    self.current = target.clone();
                    self.push(json!({"kind": "ActivationCompleted", "observedClosure": target, "exitCode": 0, "completedAt": completed}));
                    let due = completed + chrono::Duration::seconds(soak as i64);
                    self.set_stage(Stage::Soaking { due, failing_since: None });
                }
            }
            Stage::Soaking { due, failing_since } => {
                let failing = bad || failing_since.is_some() || self.chance(self.behaviour.probe_failure / 4.0);
                let status = if failing { "fail" } else { "pass" };
                let mut probe = json!({"kind": "ProbeResult", "probe": "http", "mode": "enforce", "status": status, "observedAt": Utc::now()});
                if failing {
                    probe["reason"] = json!("GET /health: 502 Bad Gateway");
                }
                self.push(probe);
                let failing_since = if failing { Some(failing_since.unwrap_or(now)) } else { None };
                let fail_after = scaled(&self.behaviour, Duration::from_secs(10));
                if let Some(since) = failing_since
                    && now.duration_since(since) >= fail_after
                {
                    let policy = if self.behaviour.rollback { "rollback-and-halt" } else { "halt" };
                    self.push(json!({"kind": "Failed", "failedAt": Utc::now(), "failingProbes": ["http"], "policyApplied": policy}));
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.set_stage(Stage::RollingBack);
                } else if failing_since.is_none() && Utc::now() >= due {
                    self.push(json!({"kind": "Converged", "convergedAt": Utc::now(), "currentClosure": target}));
                    self.stats.converged.fetch_add(1, Ordering::Relaxed);
                    self.set_stage(Stage::Done);
                } else {
                    self.set_stage(Stage::Soaking { due, failing_since });
                }
            }
            Stage::RollingBack => {
                if self.behaviour.rollback {
                    let previous = self.job.as_ref().map(|j| j.previous.clone()).unwrap_or_default();
                    self.current = previous.clone();
                    self.push(json!({"kind": "RollbackComplete", "revertedTo": previous, "completedAt": Utc::now()}));
                }
                self.set_stage(Stage::Done);
            }
            _ => {}
        }
    }

    fn set_stage(&mut self, stage: Stage) {
        if let Some(job) = &mut self.job {
            job.stage = stage;
        }
    }

    /// Posts queued events in order, with the configured losses, duplicates and reorders.
    async fn flush(&mut self) {
        let Some(rollout_id) = self.job.as_ref().map(|j| j.rollout_id.clone()) else { return };
        if self.chance(self.behaviour.reorder_event)
            && let Some(job) = &mut self.job
            && job.outbox.len() >= 2
        {
            job.outbox.swap(0, 1);
        }
        while let Some(event) = self.job.as_ref().and_then(|j| j.outbox.front().cloned()) {
            if self.chance(self.behaviour.lose_event) {
                // The post never arrived; the agent times out and tries again next round.
                return;
            }
            let body = json!({ "hostname": self.client.host(), "rolloutId": rollout_id, "event": event });
            let copies = if self.chance(self.behaviour.duplicate_event) { 2 } else { 1 };
            let mut outcome = None;
            for _ in 0..copies {
                let (answer, took) = self.client.send(reqwest::Method::POST, "/api/v1/agent/events", Some(&body)).await;
                self.stats.record(false, took);
                outcome = Some(answer);
            }
            match outcome {
                Some(Answer::Ok(v)) => {
                    let counter = if v["outcome"] == "duplicate" {
                        &self.stats.events_duplicate
                    } else {
                        &self.stats.events_applied
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Some(Answer::Refused(..)) => {
                    // 409 and other refusals are final: never retried.
                    self.stats.events_refused.fetch_add(1, Ordering::Relaxed);
                }
                Some(Answer::Retry) | None => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            if let Some(job) = &mut self.job {
                job.outbox.pop_front();
            }
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        // Spread the first heartbeats so a large fleet does not arrive all at once.
        let jitter = self.interval.mul_f64(self.rng.gen_range(0.0..1.0));
        tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(jitter) => {} }
        loop {
            if self.chance(self.behaviour.restart) {
                self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                self.job = None;
            }
            // Heartbeat on the interval the control plane asked for, and whenever the agent has
            // no job (that is how dispatches arrive); events go out as soon as they happen.
            let now = tokio::time::Instant::now();
            let due = self.job.is_none() || self.last_heartbeat.is_none_or(|at| now >= at + self.interval);
            if due {
                self.last_heartbeat = Some(now);
                if let Some(answer) = self.heartbeat().await {
                    self.on_answer(&answer);
                }
            }
            self.progress();
            self.flush().await;
            if self.job.as_ref().is_some_and(|j| j.stage == Stage::Done && j.outbox.is_empty()) {
                self.job = None;
            }
            // While switching, look again soon; while soaking, report probes on their interval;
            // otherwise heartbeat as asked.
            let wait = match self.job.as_ref().map(|j| &j.stage) {
                Some(Stage::Acknowledging | Stage::Activating { .. } | Stage::RollingBack) => {
                    self.interval.min(scaled(&self.behaviour, Duration::from_secs(1)))
                }
                Some(Stage::Soaking { .. }) => self.behaviour.probe_interval.unwrap_or(self.interval),
                _ => self.interval,
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Runs `hosts` against `url` until `shutdown`. Returns the shared stats immediately; the
/// agents run as tasks.
pub fn spawn(
    url: &str,
    hosts: Vec<SimHost>,
    seed: u64,
    behaviour: Behaviour,
    shutdown: CancellationToken,
) -> (Arc<Stats>, Vec<tokio::task::JoinHandle<()>>) {
    let stats = Arc::new(Stats::default());
    let behaviour = Arc::new(behaviour);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap_or_default();
    let limit = behaviour.max_in_flight.map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
    let tasks = hosts
        .into_iter()
        .map(|h| {
            let agent = Agent {
                client: AgentClient::new(http.clone(), url, &h.hostname, h.key).limited(limit.clone()),
                rng: seeded(seed, &h.hostname),
                behaviour: behaviour.clone(),
                stats: stats.clone(),
                current: h.initial_closure,
                job: None,
                interval: heartbeat_scaled(&behaviour, Duration::from_secs(5)),
                last_heartbeat: None,
            };
            tokio::spawn(agent.run(shutdown.clone()))
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
