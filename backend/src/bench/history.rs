//! `fleetwave bench history`: a fleet through days of releases in compressed time, to
//! measure how the database grows with and without retention (SPEC §16) and to leave a
//! database with a long history behind (for start-up figures).
//!
//! Everything runs in this process: the control plane (its reducer, writer and leader tasks,
//! no HTTP), and one real agent state machine ([`agent::machine`]) per host, driven as a
//! discrete-event simulation — the control plane's clock jumps to the next moment any agent
//! wakes, so a ten-minute soak costs no waiting. Agents talk to the reducer directly (what
//! the agent routes do after checking signatures); activations and probes succeed at once.
//! Each simulated day: the hosts' first heartbeats after the quiet hours, a new release of
//! every channel, driven until every host runs it and every rollout completed; then the
//! sealer's round (with retention), a checkpoint, and one line of figures.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent::machine::{Action, Agent, Found, Input, ProbeSchedule, SendError, Settings, Step, StepResult};
use anyhow::Context;
use chrono::{DateTime, Utc};
use shared::agent::{EventOutcome, HeartbeatResponse};
use shared::state::{ProbeMode, ProbeStatus};
use shared::{Closure, Hostname};

use crate::clock::Clock;
use crate::config::ServeConfig;
use crate::reducer::{ReducerError, ReducerHandle, ReducerInput};
use crate::sim::fleet::{LoadFleet, LoadShape};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Hosts in the fleet. Default: 10000.
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Hosts per channel (each channel a rollout of four waves per release). Default: 1000.
    #[arg(long, default_value_t = 1_000)]
    pub hosts_per_rollout: usize,
    /// Simulated days, one release of every channel each. Default: 30.
    #[arg(long, default_value_t = 30)]
    pub days: usize,
    /// Soak of every wave. Default: 2.
    #[arg(long, default_value_t = 2)]
    pub soak_minutes: u64,
    /// How often each host's health probe runs while it soaks. Default: 30.
    #[arg(long, default_value_t = 30)]
    pub probe_seconds: u64,
    /// Seal entries older than this many days, as `serve --log-retention-days` (the sealer's
    /// round once a simulated day). Default: no retention.
    #[arg(long)]
    pub log_retention_days: Option<u64>,
    /// Compact observations older than this many days. Default: no retention.
    #[arg(long)]
    pub observation_retention_days: Option<u64>,
    /// Retention applies from this day on (a database that grew without it, then turned
    /// on). That day's round runs while the day's release is under way, and the latency of
    /// every event during it is reported next to the rest of that release's. Default: 1.
    #[arg(long, default_value_t = 1)]
    pub retention_from_day: usize,
    /// Keep the database and the log archive in this directory. Default: a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// When each event was answered and how long it took (the reducer's round trip: queue,
/// apply, commit).
type Latencies = std::sync::Mutex<Vec<(Instant, Duration)>>;

/// A host: the agent machine and what its system runs.
struct Host {
    name: String,
    machine: Agent,
    actions: VecDeque<Action>,
    system: Closure,
}

impl Host {
    fn start(name: &str, initial: &str, probe_every: Duration, now: DateTime<Utc>) -> anyhow::Result<Host> {
        let probes =
            vec![ProbeSchedule { name: "http".into(), mode: ProbeMode::Enforce, interval: probe_every, fail_after: 3 }];
        let settings = Settings::new(Hostname::parse(name)?, probes, true, name.len() as u64);
        let system = Closure::parse(initial)?;
        let found =
            Found { intent: None, current: system.clone(), booted: Some(system.clone()), boot_id: "boot-0".into() };
        let (machine, actions) = Agent::start(settings, found, now);
        Ok(Host { name: name.to_owned(), machine, actions: actions.into(), system })
    }

    fn handle(&mut self, now: DateTime<Utc>, input: Input) {
        self.actions.extend(self.machine.handle(now, input));
    }
}

/// A request a host's agent sends.
enum Request {
    Heartbeat(shared::agent::HeartbeatRequest),
    Event(shared::agent::EventRequest),
}

fn send_error(err: ReducerError) -> SendError {
    match err {
        ReducerError::Rejected { message, .. } => SendError::Refused { status: 409, message },
        ReducerError::Invalid { message, .. } => SendError::Refused { status: 422, message },
        ReducerError::Unavailable(_) => SendError::Retry { after: None },
    }
}

/// Runs every host's actions (activations and probes at once, requests to the reducer all
/// together, so it groups them) until no host has one left; then, unless `done`, moves the
/// clock to the next wake-up and wakes those hosts. Stops with an error past `deadline`.
async fn drive(
    hosts: &mut [Host],
    reducer: &ReducerHandle,
    clock: &Clock,
    deadline: DateTime<Utc>,
    latencies: &Latencies,
    done: impl Fn(&[Host]) -> bool,
) -> anyhow::Result<()> {
    loop {
        let now = clock.now();
        let mut requests = Vec::new();
        for (i, host) in hosts.iter_mut().enumerate() {
            while let Some(action) = host.actions.pop_front() {
                match action {
                    Action::Persist | Action::Log(..) => {}
                    Action::SendHeartbeat(request) => requests.push((i, Request::Heartbeat(request))),
                    Action::SendEvent(request) => requests.push((i, Request::Event(request))),
                    Action::Activate(step) => {
                        let result = match step {
                            Step::Realise { .. } => StepResult::Realised,
                            Step::Switch { target } => {
                                host.system = target.clone();
                                StepResult::Switched { observed: target, exit_code: 0 }
                            }
                            Step::Rollback { to } => {
                                host.system = to.clone();
                                StepResult::RolledBack { observed: to, exit_code: 0, stderr_tail: String::new() }
                            }
                            Step::Reboot => StepResult::RebootFailed { message: "no reboots in this bench".into() },
                        };
                        host.handle(now, Input::Activator(result));
                    }
                    Action::RunProbe(name) => {
                        host.handle(now, Input::Probe { name, status: ProbeStatus::Pass, reason: None })
                    }
                }
            }
        }
        if !requests.is_empty() {
            let answers = futures_util::future::join_all(requests.into_iter().map(|(i, request)| async move {
                let input = match request {
                    Request::Heartbeat(heartbeat) => {
                        let answer: Result<HeartbeatResponse, _> =
                            reducer.ask(|reply| ReducerInput::Heartbeat { heartbeat, reply }).await;
                        Input::Heartbeat(answer.map_err(send_error))
                    }
                    Request::Event(request) => {
                        let (rollout_id, seq) = (request.rollout_id.clone(), request.event.seq());
                        let sent = Instant::now();
                        let answer = reducer
                            .ask(|reply| ReducerInput::HostEvent {
                                host: request.hostname,
                                rollout_id: request.rollout_id,
                                event: request.event,
                                reply,
                            })
                            .await;
                        if let Ok(mut latencies) = latencies.lock() {
                            latencies.push((Instant::now(), sent.elapsed()));
                        }
                        let result: Result<EventOutcome, SendError> = answer.map(|a| a.outcome).map_err(send_error);
                        Input::Event { rollout_id, seq, result }
                    }
                };
                (i, input)
            }))
            .await;
            let now = clock.now();
            for (i, input) in answers {
                hosts[i].handle(now, input);
            }
            continue;
        }
        if done(hosts) {
            return Ok(());
        }
        let next = hosts.iter().filter_map(|h| h.machine.next_wake()).min().context("no agent will wake again")?;
        anyhow::ensure!(next <= deadline, "the simulated fleet did not finish by {deadline}");
        if next > now {
            clock.advance(next - now);
            // The periodic plan pass, at every moment something happens.
            reducer.ask(|reply| ReducerInput::PlanTick { reply: Some(reply) }).await?;
        }
        let now = clock.now();
        for host in hosts.iter_mut() {
            if host.machine.next_wake().is_some_and(|at| at <= now) {
                host.handle(now, Input::Tick);
            }
        }
    }
}

/// Count, p50 and p99 of event latencies.
fn summary(sample: &[(Instant, Duration)]) -> String {
    let mut us: Vec<u64> = sample.iter().map(|(_, d)| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)).collect();
    us.sort_unstable();
    format!(
        "{} events, p50 {:.1} ms, p99 {:.1} ms",
        us.len(),
        crate::sim::percentile_ms(&us, 0.50),
        crate::sim::percentile_ms(&us, 0.99)
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let temporary;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temporary = tempfile::tempdir()?;
            temporary.path().to_owned()
        }
    };
    let shape = LoadShape {
        hosts: args.hosts,
        channels: args.hosts.div_ceil(args.hosts_per_rollout.max(1)),
        soak_minutes: args.soak_minutes,
        waves: 4,
        seed: 1,
        initial_closure: super::INITIAL.into(),
    };
    let fleet = LoadFleet::build(&shape)?;
    std::fs::write(dir.join("trust.json"), serde_json::to_vec(&fleet.trust)?)?;
    let db = dir.join("fleetwave.db");
    let never = 3_600_000;
    let config = ServeConfig {
        trust: Some(dir.join("trust.json")),
        plan_tick_ms: never * 1000,
        checkpoint_every_secs: never,
        seal_every_secs: never,
        log_retention_days: args.log_retention_days.unwrap_or(36_500),
        observation_retention_days: args.observation_retention_days.unwrap_or(36_500),
        log_archive_dir: Some(dir.join("log-archive")),
        ..ServeConfig::local(db.clone(), dir.join("no-dist"))
    };
    let retention = config.retention();
    let retains = args.log_retention_days.is_some() || args.observation_retention_days.is_some();
    let clock = Clock::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = crate::server::App::build_with_clock(&config, shutdown.clone(), clock.clone()).await?;
    let state = app.state().clone();
    let reducer = state.reducer.get().context("the reducer runs")?;
    let probe_every = Duration::from_secs(args.probe_seconds.max(1));
    let mut hosts = fleet
        .hosts
        .iter()
        .map(|h| Host::start(&h.hostname, &h.initial_closure, probe_every, clock.now()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "history: {} hosts, {} channels, {} days, soak {} min × 4 waves, probes every {} s, retention: log {}, observations {}; in {}",
        args.hosts,
        shape.channels,
        args.days,
        args.soak_minutes,
        args.probe_seconds,
        args.log_retention_days.map_or("none".into(), |d| format!("{d} days")),
        args.observation_retention_days.map_or("none".into(), |d| format!("{d} days")),
        dir.display()
    );
    println!(
        "| day | entries written | entries in the database | database file + WAL | of it in use | archive | wall time |"
    );
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let latencies = Latencies::default();
    // The previous day's release's event latencies.
    let mut previous: Option<String> = None;
    let mut day_start = clock.now();
    for day in 1..=args.days {
        // The first heartbeats after the quiet hours.
        let now = clock.now();
        for host in hosts.iter_mut() {
            host.handle(now, Input::Tick);
        }
        drive(&mut hosts, &reducer, &clock, day_start + chrono::Duration::hours(20), &latencies, |_| true).await?;
        let release = fleet.release(day, clock.now())?;
        let rollouts = release.manifests.iter().map(|(_, s)| s.artifact()).collect();
        let update =
            crate::manifests::verify_upload(&state.trust_roots(), release.fleet.artifact(), rollouts, clock.now())
                .map_err(|e| anyhow::anyhow!("release {day} does not verify: {e}"))?;
        reducer.ask(|reply| ReducerInput::ManifestSetUpdated { update: Box::new(update), reply: Some(reply) }).await?;
        let targets: Vec<String> = hosts.iter().map(|h| fleet.closure_of(&h.name, Some(day))).collect();
        let converged = |hosts: &[Host]| hosts.iter().zip(&targets).all(|(h, t)| h.system.as_str() == t);
        // The first round with retention runs during the release.
        let during = (retains && day == args.retention_from_day).then(|| {
            let (store, reducer, retention, fleet, now) =
                (state.store.clone(), reducer.clone(), retention.clone(), state.fleet.clone(), clock.now());
            tokio::spawn(async move {
                let started = Instant::now();
                let archived = crate::sealer::seal_due(&store, &reducer, &retention, &fleet, now).await;
                (started, Instant::now(), archived)
            })
        });
        if let Ok(mut latencies) = latencies.lock() {
            latencies.clear();
        }
        drive(&mut hosts, &reducer, &clock, day_start + chrono::Duration::hours(20), &latencies, converged).await?;
        if let Some(round) = during {
            let (from, to, archived) = round.await?;
            let archived = archived?;
            let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
            let inside: Vec<_> = latencies.iter().filter(|(at, _)| *at >= from && *at <= to).copied().collect();
            eprintln!(
                "retention's first round on day {day}: {} archive entries in {:.1} s; events during it: {}; the day before's release, without it: {}",
                archived.len(),
                (to - from).as_secs_f64(),
                summary(&inside),
                previous.as_deref().unwrap_or("none"),
            );
        }
        previous = Some(summary(&latencies.lock().map(|l| l.clone()).unwrap_or_default()));
        // The last wave completes at a plan pass after its soak; the hosts heartbeat meanwhile.
        let until = clock.now() + chrono::Duration::minutes(i64::try_from(args.soak_minutes).unwrap_or(0) + 1);
        drive(&mut hosts, &reducer, &clock, until + chrono::Duration::hours(1), &latencies, |_| clock.now() >= until)
            .await?;
        if retains && day >= args.retention_from_day {
            crate::sealer::seal_due(&state.store, &reducer, &retention, &state.fleet, clock.now()).await?;
        }
        crate::db::checkpoint::take(&state.store, clock.now()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let written = crate::db::store::last_seq(&state.store).await?;
        let kept: i64 = crate::db::on_pool!(&state.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM event_log").fetch_one(pool).await?
        });
        let (pages, free, page_size): (i64, i64, i64) = crate::db::on_pool!(&state.store, pool => {
            let pages = sqlx::query_scalar("PRAGMA page_count").fetch_one(pool).await?;
            let free = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(pool).await?;
            let size = sqlx::query_scalar("PRAGMA page_size").fetch_one(pool).await?;
            (pages, free, size)
        });
        let file =
            [db.clone(), db.with_extension("db-wal")].iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
        let in_use = u64::try_from((pages - free) * page_size).unwrap_or(0);
        println!(
            "| {day} | {written} | {kept} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} s |",
            mib(file),
            mib(in_use),
            mib(dir_bytes(&dir.join("log-archive"))),
            started.elapsed().as_secs_f64()
        );
        // The rest of the day passes quietly.
        day_start += chrono::Duration::days(1);
        let now = clock.now();
        if day_start > now {
            clock.advance(day_start - now);
        }
    }
    shutdown.cancel();
    drop(app);
    Ok(())
}
