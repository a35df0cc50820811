//! `fleetwave bench`: Fleetwave at fleet scale next to this machine's ceilings (issue 7).
//!
//! `bench run` measures, in one process tree on a temporary directory:
//! 1. the ceilings ([`ceilings`]): raw writes of the database in use (SQLite, or with `--db
//!    postgres://…` that PostgreSQL server) per event and grouped, and a bare axum route that
//!    only verifies a signed request;
//! 2. for each fleet size, `fleetwave serve` as a child process ([`server`]) on a fresh
//!    database (a SQLite file, or a database of its own on the PostgreSQL server, dropped
//!    afterwards) with a signed load fleet (one rollout per 100 hosts, four waves, soak long
//!    enough that wave 0 soaks through the run), 50 live-feed clients attached ([`feed`]), and
//!    two load phases with the same number of requests in flight as the ceiling:
//!    - heartbeats: closed-loop idle-agent heartbeats over every host ([`load`]);
//!    - events: the simulator at full speed (activations instant, heartbeats on the server's
//!      interval, probe results posted back to back while soaking), so the event path runs
//!      flat out while the rest of the fleet keeps heartbeating;
//! 3. a report: each figure, its ratio to its ceiling, the server's own reducer and planner
//!    histograms (from `/metrics`), its peak RSS, and the feed's fan-out.

mod ceilings;
mod feed;
mod history;
mod load;
mod search;
mod server;
mod steady;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use self::feed::{FanOut, FeedWatchers};
use self::load::Rate;
use self::server::{Histogram, Scrape, ServerProcess};
use crate::sim::fleet::{LoadFleet, LoadShape};
use crate::sim::{self, Behaviour};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The whole benchmark: ceilings, then Fleetwave at each fleet size, with ratios.
    Run(RunArgs),
    /// Only the ceilings (raw database writes, a bare signed HTTP route).
    Ceilings(CeilingArgs),
    /// A fleet through days of releases in compressed time: how the database grows, with
    /// and without retention (SPEC §16).
    History(history::HistoryArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// A PostgreSQL server to measure on instead of SQLite: a URL whose user may create
    /// databases (each measurement gets a database of its own, dropped afterwards).
    /// Default: SQLite in a temporary directory.
    #[arg(long, value_parser = parse_postgres)]
    pub db: Option<String>,
    /// Events written per database mode (one transaction per event writes at most 5,000).
    /// Default: 20000.
    #[arg(long = "ceiling-events", alias = "sqlite-events", default_value_t = 20_000)]
    pub ceiling_events: usize,
    /// Requests in flight, for the bare route and for Fleetwave. Default: 64.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds each HTTP load phase is measured. Default: 15.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Fleet sizes, comma-separated. Default: 1000,10000.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    pub sizes: Vec<usize>,
    /// Hosts per channel; each channel is one active rollout. Default: 100 (10,000 hosts make
    /// 100 rollouts).
    #[arg(long, default_value_t = 100)]
    pub hosts_per_rollout: usize,
    /// Live-feed clients connected to the server during the load phases. Default: 50.
    #[arg(long, default_value_t = 50)]
    pub feed_clients: usize,
    /// `load`: the ceilings, then closed-loop heartbeats and events at each size. `steady`: at
    /// each size one rollout of every host in ten waves driven to completion at real
    /// heartbeat intervals, the settled fleet idle, then a restart ([`steady`]).
    #[arg(long, value_enum, default_value_t = Profile::Load)]
    pub profile: Profile,
    /// `steady`: seconds the rollout may take to complete. Default: 1800.
    #[arg(long, default_value_t = 1800)]
    pub converge_deadline: u64,
    /// `steady`: seconds the settled fleet's heartbeats are measured. Default: 60.
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    #[command(flatten)]
    pub ceilings: CeilingArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Load,
    Steady,
}

const INITIAL: &str = "/nix/store/00000000000000000000000000000000-initial";

fn parse_postgres(url: &str) -> Result<String, String> {
    match crate::db::DbTarget::parse(url)? {
        crate::db::DbTarget::Postgres(url) => Ok(url),
        crate::db::DbTarget::Sqlite(_) => Err("--db takes a postgres:// URL (SQLite is the default)".into()),
    }
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Run(args) => run_all(args).await,
        BenchCommand::History(args) => history::run(args).await,
        BenchCommand::Ceilings(args) => {
            let fleet = LoadFleet::build(&shape(1_000, 100))?;
            println!("{}", measure_ceilings(&args, &fleet).await?.table());
            Ok(())
        }
    }
}

fn shape(hosts: usize, hosts_per_rollout: usize) -> LoadShape {
    LoadShape {
        hosts,
        channels: hosts.div_ceil(hosts_per_rollout.max(1)),
        soak_minutes: 60,
        waves: 4,
        seed: 1,
        initial_closure: INITIAL.into(),
    }
}

/// Raw writes of the database in use: a record upsert and a log append per event.
enum StorageCeilings {
    Sqlite { raw_single: f64, raw_grouped: f64, sqlx_single: f64, sqlx_grouped: f64 },
    Postgres { single: f64, rows: f64, arrays: f64 },
}

struct Ceilings {
    storage: StorageCeilings,
    http: Rate,
    clients: usize,
}

impl Ceilings {
    /// The grouped-write ceiling events are judged against (PostgreSQL: the faster grouping).
    fn grouped(&self) -> (f64, &'static str) {
        match self.storage {
            StorageCeilings::Sqlite { raw_grouped, .. } => (raw_grouped, "raw SQLite grouped"),
            StorageCeilings::Postgres { rows, arrays, .. } => (rows.max(arrays), "raw PostgreSQL grouped"),
        }
    }

    fn table(&self) -> String {
        let storage = match self.storage {
            StorageCeilings::Sqlite { raw_single, raw_grouped, sqlx_single, sqlx_grouped } => format!(
                "| SQLite (raw, rusqlite): record upsert + event-log append, WAL, synchronous=NORMAL, one transaction per event | {} events/s |\n\
                 | same, 512 events per transaction | {} events/s |\n\
                 | same writes through sqlx, one transaction per event | {} events/s |\n\
                 | same writes through sqlx, 512 events per transaction | {} events/s |\n",
                thousands(raw_single),
                thousands(raw_grouped),
                thousands(sqlx_single),
                thousands(sqlx_grouped),
            ),
            StorageCeilings::Postgres { single, rows, arrays } => format!(
                "| PostgreSQL (raw, sqlx on one connection): record upsert + event-log append, one transaction per event | {} events/s |\n\
                 | same, 512 events per transaction, two statements per event | {} events/s |\n\
                 | same, 512 events per transaction, two statements per transaction (UNNEST arrays) | {} events/s |\n",
                thousands(single),
                thousands(rows),
                thousands(arrays),
            ),
        };
        format!(
            "| ceiling | figure |\n|---|---|\n{storage}\
             | bare axum route verifying an Ed25519-signed heartbeat, {} in flight | {} requests/s, p50 {:.2} ms, p99 {:.2} ms |",
            self.clients,
            thousands(self.http.per_second),
            self.http.p50_ms,
            self.http.p99_ms
        )
    }
}

async fn measure_ceilings(args: &CeilingArgs, fleet: &LoadFleet) -> anyhow::Result<Ceilings> {
    let (single, grouped) = (args.ceiling_events.min(5_000), args.ceiling_events);
    let storage = match &args.db {
        None => {
            eprintln!("ceilings: SQLite …");
            StorageCeilings::Sqlite {
                raw_single: ceilings::raw_sqlite_rate(single, 1).await?,
                raw_grouped: ceilings::raw_sqlite_rate(grouped, 512).await?,
                sqlx_single: ceilings::sqlx_sqlite_rate(single, 1).await?,
                sqlx_grouped: ceilings::sqlx_sqlite_rate(grouped, 512).await?,
            }
        }
        Some(server) => {
            use ceilings::PgGrouping::{Arrays, Rows};
            eprintln!("ceilings: PostgreSQL …");
            StorageCeilings::Postgres {
                single: ceilings::raw_postgres_rate(server, single, 1, Rows).await?,
                rows: ceilings::raw_postgres_rate(server, grouped, 512, Rows).await?,
                arrays: ceilings::raw_postgres_rate(server, grouped, 512, Arrays).await?,
            }
        }
    };
    eprintln!("ceilings: bare signed route, {} s …", args.seconds);
    let http = ceilings::http_rate(&fleet.hosts, args.clients, Duration::from_secs(args.seconds)).await?;
    Ok(Ceilings { storage, http, clients: args.clients })
}

/// The server's reducer over one phase, from its `/metrics` histograms.
struct ReducerFigures {
    tx_inputs: Histogram,
    tx_seconds: Histogram,
    plan: Histogram,
    plan_moved: Histogram,
    /// Share of the phase the reducer spent applying groups (its commits overlap).
    busy: f64,
}

impl ReducerFigures {
    fn between(before: &Scrape, after: &Scrape, seconds: f64) -> ReducerFigures {
        let turn = after.histogram_since(before, "fleetwave_reducer_turn_seconds");
        ReducerFigures {
            tx_inputs: after.histogram_since(before, "fleetwave_reducer_transaction_inputs"),
            tx_seconds: after.histogram_since(before, "fleetwave_reducer_transaction_seconds"),
            plan: after.histogram_since(before, "fleetwave_plan_seconds"),
            plan_moved: after.histogram_since(before, "fleetwave_plan_moved_seconds"),
            busy: turn.count * turn.mean / seconds.max(1e-9),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} tx, {:.1} inputs each (p99 ≤ {}), commit {} (p99 ≤ {}); plan passes: {} full, {} after hosts moved (mean {}); applying {:.0} % of the time",
            self.tx_inputs.count,
            self.tx_inputs.mean,
            self.tx_inputs.p99_at_most,
            ms(self.tx_seconds.mean),
            ms(self.tx_seconds.p99_at_most),
            self.plan.count,
            self.plan_moved.count,
            ms(self.plan_moved.mean),
            self.busy * 100.0
        )
    }
}

/// Everything measured at one fleet size.
struct SizeReport {
    hosts: usize,
    rollouts: usize,
    startup: Duration,
    heartbeats: Rate,
    heartbeat_reducer: ReducerFigures,
    /// The simulator at full speed, nobody watching the feed.
    events: EventsWindow,
    /// The same with the feed clients connected.
    watched: EventsWindow,
    fan_out: FanOut,
    /// Plan passes over the whole run (the warm-up moves every wave-0 host through dispatch,
    /// acknowledgement, activation and into its soak, so most passes happen there): full
    /// passes, and passes over the rollouts hosts moved in.
    plan: Histogram,
    plan_moved: Histogram,
    lagging_disconnects: f64,
    peak_rss_mib: f64,
    /// The peak once every rollout was open (verifying and indexing the fleet).
    startup_peak_mib: f64,
    /// Resident at the end of the run.
    end_rss_mib: f64,
    /// `GET /api/v1/hosts`, once the simulator stopped.
    search: Vec<search::SearchLatency>,
}

/// One measurement window of the events phase.
struct EventsWindow {
    events: Rate,
    /// Heartbeats the simulated fleet sent meanwhile.
    heartbeats: Rate,
    reducer: ReducerFigures,
}

/// Measures what the running simulator achieves over `length`.
async fn events_window(server: &ServerProcess, stats: &sim::Stats, length: Duration) -> anyhow::Result<EventsWindow> {
    let counts = || {
        (
            stats.heartbeats.load(Ordering::Relaxed),
            stats.events_applied.load(Ordering::Relaxed) + stats.events_duplicate.load(Ordering::Relaxed),
            stats.events_refused.load(Ordering::Relaxed) + stats.retries.load(Ordering::Relaxed),
        )
    };
    let before = server.metrics().await?;
    let (hb0, ev0, bad0) = counts();
    stats.clear_latencies();
    let started = Instant::now();
    tokio::time::sleep(length).await;
    let (hb1, ev1, bad1) = counts();
    let secs = started.elapsed().as_secs_f64();
    let after = server.metrics().await?;
    let (ep50, ep99) = stats.percentiles(false).unwrap_or_default();
    let (hp50, hp99) = stats.percentiles(true).unwrap_or_default();
    let rate = |ok: u64, failed: u64, (p50_ms, p99_ms): (f64, f64)| Rate {
        ok,
        failed,
        per_second: ok as f64 / secs,
        p50_ms,
        p99_ms,
    };
    Ok(EventsWindow {
        events: rate(ev1 - ev0, bad1 - bad0, (ep50, ep99)),
        heartbeats: rate(hb1 - hb0, 0, (hp50, hp99)),
        reducer: ReducerFigures::between(&before, &after, secs),
    })
}

async fn run_all(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.sizes.is_empty() && args.sizes.iter().all(|&n| n >= 4),
        "--sizes must be 4 or more hosts each"
    );
    let started = Instant::now();
    if args.profile == Profile::Steady {
        let mut reports = Vec::new();
        for &hosts in &args.sizes {
            eprintln!("building and signing a {hosts}-host fleet …");
            reports.push(steady::measure(&args, &LoadFleet::build(&steady::shape(hosts))?).await?);
        }
        println!("{}", steady::report(&args, &reports, started.elapsed()));
        return Ok(());
    }
    let mut fleets = Vec::new();
    for &hosts in &args.sizes {
        eprintln!("building and signing a {hosts}-host fleet …");
        fleets.push(LoadFleet::build(&shape(hosts, args.hosts_per_rollout))?);
    }
    let ceilings = measure_ceilings(&args.ceilings, &fleets[0]).await?;
    let mut reports = Vec::new();
    for fleet in &fleets {
        reports.push(measure_size(&args, fleet).await?);
    }
    println!("{}", report(&args, &ceilings, &reports, started.elapsed()));
    Ok(())
}

async fn measure_size(args: &RunArgs, fleet: &LoadFleet) -> anyhow::Result<SizeReport> {
    let hosts = fleet.hosts.len();
    let rollouts = fleet.release.manifests.len();
    let seconds = Duration::from_secs(args.ceilings.seconds);
    let clients = args.ceilings.clients;
    let dir = tempfile::tempdir()?;
    eprintln!("{hosts} hosts / {rollouts} rollouts: starting the server …");
    let started = Instant::now();
    let server = ServerProcess::start(dir.path(), fleet, args.ceilings.db.as_deref()).await?;
    let startup = started.elapsed();
    let (startup_peak_mib, _) = server.memory_mib();
    let first = server.metrics().await?;

    eprintln!("{hosts} hosts: heartbeats, {} s …", seconds.as_secs());
    let window = Instant::now();
    let heartbeats = load::heartbeats(&server.url, &fleet.hosts, clients, seconds).await;
    let heartbeat_reducer = ReducerFigures::between(&first, &server.metrics().await?, window.elapsed().as_secs_f64());

    eprintln!("{hosts} hosts: events (simulator at full speed), warming up …");
    let stop = CancellationToken::new();
    let behaviour = Behaviour {
        time_scale: 0.0,
        heartbeat_scale: Some(1.0),
        probe_interval: Some(Duration::ZERO),
        max_in_flight: Some(clients),
        ..Behaviour::default()
    };
    let (stats, tasks) = sim::spawn(std::slice::from_ref(&server.url), fleet.hosts.clone(), 1, behaviour, stop.clone());
    // Warm up until most of wave 0 soaks (every rollout's first wave is a quarter of it).
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < warm_deadline {
        let soaking = server.metrics().await.map(|m| m.get("fleetwave_hosts{state=\"Soaking\"}")).unwrap_or(0.0);
        if soaking >= 0.9 * (hosts / 4) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{hosts} hosts: events, {} s …", seconds.as_secs());
    let events = events_window(&server, &stats, seconds).await?;

    eprintln!("{hosts} hosts: events with {} feed clients, {} s …", args.feed_clients, seconds.as_secs());
    let watchers = FeedWatchers::connect(&server.url, &server.viewer_token, args.feed_clients).await?;
    let watched_start = Instant::now();
    let watched = events_window(&server, &stats, seconds).await?;
    let fan_out = watchers.fan_out(watched_start.elapsed().as_secs_f64());
    let last = server.metrics().await?;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    watchers.close().await;
    eprintln!("{hosts} hosts: host search …");
    let search = search::measure(&server.url, &server.viewer_token, hosts).await?;
    let (peak_rss_mib, end_rss_mib) = server.memory_mib();
    server.stop().await;
    Ok(SizeReport {
        hosts,
        rollouts,
        startup,
        heartbeats,
        heartbeat_reducer,
        events,
        watched,
        fan_out,
        plan: last.histogram_since(&first, "fleetwave_plan_seconds"),
        plan_moved: last.histogram_since(&first, "fleetwave_plan_moved_seconds"),
        lagging_disconnects: last.get("fleetwave_feed_lagging_disconnects_total")
            - first.get("fleetwave_feed_lagging_disconnects_total"),
        peak_rss_mib,
        startup_peak_mib,
        end_rss_mib,
        search,
    })
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1000.0)
}

fn report(args: &RunArgs, c: &Ceilings, sizes: &[SizeReport], took: Duration) -> String {
    let database = match &args.ceilings.db {
        Some(url) => format!("PostgreSQL at {}", crate::db::DbTarget::Postgres(url.clone())),
        None => "SQLite".to_owned(),
    };
    let mut out = format!(
        "fleetwave bench run on {database} — {} cores, {} requests in flight, {} feed clients, {} s per phase ({} s in all)\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.ceilings.clients,
        args.feed_clients,
        args.ceilings.seconds,
        took.as_secs()
    );
    out.push_str(&c.table());
    out.push_str("\n\n");
    let header: Vec<String> =
        sizes.iter().map(|s| format!("{} hosts / {} rollouts", thousands(s.hosts as f64), s.rollouts)).collect();
    out.push_str(&format!("| Fleetwave | {} |\n|---|{}\n", header.join(" | "), "---|".repeat(sizes.len())));
    let mut row = |name: &str, cell: &dyn Fn(&SizeReport) -> String| {
        let cells: Vec<String> = sizes.iter().map(cell).collect();
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    };
    let latency = |r: &Rate| format!("{:.2} / {:.2} ms", r.p50_ms, r.p99_ms);
    let (grouped, grouped_name) = c.grouped();
    let events = |r: &Rate| {
        let sqlx = match c.storage {
            StorageCeilings::Sqlite { sqlx_grouped, .. } => {
                format!(", {:.2} × sqlx grouped", r.per_second / sqlx_grouped)
            }
            StorageCeilings::Postgres { .. } => String::new(),
        };
        format!(
            "**{}** = {:.2} × {grouped_name}{sqlx}, {:.2} × route ceiling",
            thousands(r.per_second),
            r.per_second / grouped,
            r.per_second / c.http.per_second
        )
    };
    row("startup: fleet verified, rollouts open", &|s| format!("{:.1} s", s.startup.as_secs_f64()));
    row("heartbeats/s", &|s| {
        format!(
            "**{}** = {:.2} × route ceiling",
            thousands(s.heartbeats.per_second),
            s.heartbeats.per_second / c.http.per_second
        )
    });
    row("heartbeat latency p50 / p99", &|s| latency(&s.heartbeats));
    row("heartbeats answered 2xx / not", &|s| format!("{} / {}", s.heartbeats.ok, s.heartbeats.failed));
    row("reducer, heartbeat phase", &|s| s.heartbeat_reducer.describe());
    row("events/s durable", &|s| events(&s.events.events));
    row("event latency p50 / p99", &|s| latency(&s.events.events));
    row("events applied / refused or retried", &|s| format!("{} / {}", s.events.events.ok, s.events.events.failed));
    row("heartbeats/s alongside, p50 / p99", &|s| {
        format!("{} ({})", thousands(s.events.heartbeats.per_second), latency(&s.events.heartbeats))
    });
    row("reducer, events phase", &|s| s.events.reducer.describe());
    row("plan pass, full (whole run): passes, mean, p99 ≤", &|s| {
        format!("{}, {}, {}", s.plan.count, ms(s.plan.mean), ms(s.plan.p99_at_most))
    });
    row("plan pass after hosts moved (whole run): passes, mean, p99 ≤", &|s| {
        format!("{}, {}, {}", s.plan_moved.count, ms(s.plan_moved.mean), ms(s.plan_moved.p99_at_most))
    });
    row("backend peak RSS (peak after startup; resident at the end)", &|s| {
        format!("**{:.0} MiB** ({:.0}; {:.0} MiB)", s.peak_rss_mib, s.startup_peak_mib, s.end_rss_mib)
    });
    row(&format!("events/s with {} feed clients", args.feed_clients), &|s| events(&s.watched.events));
    row("event latency p50 / p99, feed clients connected", &|s| latency(&s.watched.events));
    row("feed fan-out", &|s| {
        let f = &s.fan_out;
        format!(
            "{}/{} connected, {}–{} entries each, {} deliveries/s",
            f.connected_at_end,
            f.clients,
            f.fewest,
            f.most,
            thousands(f.deliveries_per_second)
        )
    });
    row("feed delay commit → client p50 / p99", &|s| {
        format!("{:.1} / {:.1} ms", s.fan_out.delay_p50_ms, s.fan_out.delay_p99_ms)
    });
    row("feed clients cut off for lagging", &|s| s.lagging_disconnects.to_string());
    row("host search p50 / p99 (slowest of the queries below)", &|s| {
        let slowest = s.search.iter().max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        slowest.map(|q| format!("{:.1} / {:.1} ms (`{}`)", q.p50_ms, q.p99_ms, q.query)).unwrap_or_default()
    });
    row("growth: full plan pass per 1,000 hosts", &|s| {
        format!("{:.0} µs", s.plan.mean * 1e6 / (s.hosts as f64 / 1000.0))
    });
    row("growth: server time per heartbeat (1 / rate)", &|s| {
        format!("{:.0} µs", 1e6 / s.heartbeats.per_second.max(1e-9))
    });
    for size in sizes {
        out.push_str(&format!(
            "\nHost search at {} hosts (`GET /api/v1/hosts?…`, one request at a time, quiet server):\n\n| query | hosts on the page | p50 / p99 |\n|---|---|---|\n",
            thousands(size.hosts as f64)
        ));
        for q in &size.search {
            out.push_str(&format!("| `{}` | {} | {:.1} / {:.1} ms |\n", q.query, q.found, q.p50_ms, q.p99_ms));
        }
    }
    out
}
