//! `bench run --profile steady`: SPEC §13's "beyond that" at one fleet size — one rollout of
//! every host in ten waves (no soak), driven to completion by the simulator at real heartbeat
//! intervals (5 s while a host has work, then the 30 s the server asks of a settled host),
//! then the settled fleet heartbeating while nothing moves, then a restart on the same
//! database (state loaded, the stored fleet and manifests re-verified).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::server::{Histogram, ServerProcess};
use super::{INITIAL, RunArgs, ms, thousands};
use crate::sim::fleet::{LoadFleet, LoadShape};
use crate::sim::{self, Behaviour};

/// Waves of the one rollout (SPEC §13).
pub const WAVES: usize = 10;

/// The settled fleet, every host in one channel of [`WAVES`] waves without soak.
pub fn shape(hosts: usize) -> LoadShape {
    LoadShape { hosts, channels: 1, soak_minutes: 0, waves: WAVES, seed: 1, initial_closure: INITIAL.into() }
}

/// Everything measured at one fleet size.
pub struct SteadyReport {
    hosts: usize,
    /// From spawning the server on a fresh database to its rollout open (the fleet verified
    /// from the manifests directory), and the peak resident memory then.
    open: Duration,
    open_peak_mib: f64,
    /// From the rollout open to every host converged (`None`: not within the deadline, with
    /// how many had).
    converge: Option<Duration>,
    converged: f64,
    events_applied: u64,
    events_per_second: f64,
    event_latency: Option<(f64, f64)>,
    heartbeats_per_second: f64,
    heartbeat_latency: Option<(f64, f64)>,
    plan: Histogram,
    plan_moved: Histogram,
    /// Peak resident memory up to convergence, and resident once converged.
    converge_peak_mib: f64,
    converged_rss_mib: f64,
    idle: Idle,
    /// From spawning the server again on the same database to `/readyz`, and its peak memory.
    restart: Duration,
    restart_peak_mib: f64,
}

/// The settled fleet heartbeating on the interval the server asks, nothing moving.
struct Idle {
    seconds: f64,
    heartbeats_per_second: f64,
    latency: Option<(f64, f64)>,
    /// Server CPU time over the window, as a share of one core.
    cpu_share: f64,
    rss_mib: f64,
}

pub async fn measure(args: &RunArgs, fleet: &LoadFleet) -> anyhow::Result<SteadyReport> {
    let hosts = fleet.hosts.len();
    let dir = tempfile::tempdir()?;
    eprintln!("{hosts} hosts, one rollout of {WAVES} waves: starting the server …");
    let started = Instant::now();
    let server = ServerProcess::start(dir.path(), fleet, args.ceilings.db.as_deref()).await?;
    let open = started.elapsed();
    let (open_peak_mib, _) = server.memory_mib();
    let first = server.metrics().await?;

    eprintln!("{hosts} hosts: driving the rollout to completion (deadline {} s) …", args.converge_deadline);
    let stop = CancellationToken::new();
    let behaviour = Behaviour {
        time_scale: 0.0,
        heartbeat_scale: Some(1.0),
        max_in_flight: Some(args.ceilings.clients),
        ..Behaviour::default()
    };
    let (stats, tasks) = sim::spawn(std::slice::from_ref(&server.url), fleet.hosts.clone(), 1, behaviour, stop.clone());
    let converging = Instant::now();
    let deadline = converging + Duration::from_secs(args.converge_deadline);
    let mut converged = 0.0;
    let converge = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(scrape) = server.metrics().await {
            converged = scrape.get("fleetwave_hosts{state=\"Converged\"}");
            // Once the last wave converged the rollout completes and leaves the gauge.
            let open_records = scrape.sum_of("fleetwave_hosts");
            if converged >= hosts as f64 || (open_records == 0.0 && stats.converged.load(ORDER) as usize >= hosts) {
                converged = hosts as f64;
                break Some(converging.elapsed());
            }
        }
        if Instant::now() >= deadline {
            break None;
        }
    };
    let took = converging.elapsed().as_secs_f64();
    let events_applied = stats.events_applied.load(ORDER);
    let heartbeats = stats.heartbeats.load(ORDER);
    let after = server.metrics().await?;
    let (converge_peak_mib, converged_rss_mib) = server.memory_mib();
    let event_latency = stats.percentiles(false);
    let heartbeat_latency = stats.percentiles(true);

    // A settled host is asked for its next heartbeat in 30 s: one interval for the whole
    // fleet to have heard that, then the window.
    eprintln!("{hosts} hosts: settling (one idle interval), then {} s idle …", args.idle_seconds);
    tokio::time::sleep(Duration::from_secs(engine::controller::IDLE_HEARTBEAT_SECONDS + 5)).await;
    stats.clear_latencies();
    let (cpu0, hb0, window) = (server.cpu_time(), stats.heartbeats.load(ORDER), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let seconds = window.elapsed().as_secs_f64();
    let idle = Idle {
        seconds,
        heartbeats_per_second: (stats.heartbeats.load(ORDER) - hb0) as f64 / seconds,
        latency: stats.percentiles(true),
        cpu_share: (server.cpu_time() - cpu0).as_secs_f64() / seconds,
        rss_mib: server.memory_mib().1,
    };
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }

    eprintln!("{hosts} hosts: restarting the server on its database …");
    let (server, restart) = server.restart().await?;
    let (restart_peak_mib, _) = server.memory_mib();
    server.stop().await;
    Ok(SteadyReport {
        hosts,
        open,
        open_peak_mib,
        converge,
        converged,
        events_applied,
        events_per_second: events_applied as f64 / took,
        event_latency,
        heartbeats_per_second: heartbeats as f64 / took,
        heartbeat_latency,
        plan: after.histogram_since(&first, "fleetwave_plan_seconds"),
        plan_moved: after.histogram_since(&first, "fleetwave_plan_moved_seconds"),
        converge_peak_mib,
        converged_rss_mib,
        idle,
        restart,
        restart_peak_mib,
    })
}

const ORDER: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// The report: each figure next to its SPEC §13 target.
pub fn report(args: &RunArgs, sizes: &[SteadyReport], took: Duration) -> String {
    let mut out = format!(
        "fleetwave bench run --profile steady — {} cores, {} requests in flight at most, one rollout of {WAVES} waves without soak, {} s idle window ({} s in all)\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.ceilings.clients,
        args.idle_seconds,
        took.as_secs()
    );
    let header: Vec<String> = sizes.iter().map(|s| format!("{} hosts", thousands(s.hosts as f64))).collect();
    out.push_str(&format!(
        "| Fleetwave | {} | SPEC §13 (100k) |\n|---|{}---|\n",
        header.join(" | "),
        "---|".repeat(sizes.len())
    ));
    let mut row = |name: &str, cell: &dyn Fn(&SteadyReport) -> String, target: &str| {
        let cells: Vec<String> = sizes.iter().map(cell).collect();
        out.push_str(&format!("| {name} | {} | {target} |\n", cells.join(" | ")));
    };
    let latency = |l: Option<(f64, f64)>| l.map_or("–".into(), |(p50, p99)| format!("{p50:.1} / {p99:.1} ms"));
    row(
        "start-up on a fresh database: fleet verified, rollout open (peak RSS)",
        &|s| format!("{:.1} s ({:.0} MiB)", s.open.as_secs_f64(), s.open_peak_mib),
        "",
    );
    row(
        "rollout driven to completion",
        &|s| match s.converge {
            Some(t) => format!("**{:.0} s**", t.as_secs_f64()),
            None => format!("not within {} s ({} converged)", args.converge_deadline, thousands(s.converged)),
        },
        "completes",
    );
    row(
        "events applied, events/s over the rollout, p50 / p99",
        &|s| {
            format!(
                "{}, {}/s, {}",
                thousands(s.events_applied as f64),
                thousands(s.events_per_second),
                latency(s.event_latency)
            )
        },
        "",
    );
    row(
        "heartbeats/s over the rollout, p50 / p99",
        &|s| format!("{}/s, {}", thousands(s.heartbeats_per_second), latency(s.heartbeat_latency)),
        "",
    );
    let passes =
        |h: &Histogram| format!("{}, {} / **{}** / {}", h.count, ms(h.p50_at_most), ms(h.p99_at_most), ms(h.mean));
    row("plan pass, full: passes, p50 ≤ / p99 ≤ / mean", &|s| passes(&s.plan), "≤ 20 ms");
    row("plan pass after hosts moved: passes, p50 ≤ / p99 ≤ / mean", &|s| passes(&s.plan_moved), "≤ 20 ms");
    row(
        "memory: peak up to convergence; resident once converged",
        &|s| format!("**{:.0} MiB**; {:.0} MiB", s.converge_peak_mib, s.converged_rss_mib),
        "≤ 600 MiB",
    );
    row(
        "idle: heartbeats/s, p50 / p99",
        &|s| {
            format!(
                "{}/s over {:.0} s, {}",
                thousands(s.idle.heartbeats_per_second),
                s.idle.seconds,
                latency(s.idle.latency)
            )
        },
        "",
    );
    row("idle: server CPU, share of one core", &|s| format!("**{:.0} %**", s.idle.cpu_share * 100.0), "≤ 50 %");
    row("idle: resident memory", &|s| format!("{:.0} MiB", s.idle.rss_mib), "≤ 600 MiB");
    row(
        "restart on the database: to `/readyz` (load, re-verify); peak RSS",
        &|s| format!("**{:.1} s**; {:.0} MiB", s.restart.as_secs_f64(), s.restart_peak_mib),
        "≤ 10 s; ≤ 600 MiB",
    );
    out
}
