//! The control plane under test: `fleetwave serve` as a child process of the benchmark (so its
//! memory is its own) on a temporary database, fed a load fleet through `--manifests-dir`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::db::auth::{new_token, token_hash};
use crate::db::{self, auth::Role};
use crate::sim::fleet::LoadFleet;

pub struct ServerProcess {
    child: tokio::process::Child,
    /// The PostgreSQL database of its own, if the run is on PostgreSQL (dropped after it).
    _database: Option<crate::db::postgres::Scratch>,
    pid: u32,
    pub url: String,
    /// A viewer's bearer token (for the live feed).
    pub viewer_token: String,
    pub log: PathBuf,
    /// How it was started (a restart starts it the same way).
    dir: PathBuf,
    target: db::DbTarget,
    port: u16,
}

/// A `/metrics` scrape: sample name with labels → value.
#[derive(Debug, Clone, Default)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(name, value)| value.parse().ok().map(|v| (name.to_owned(), v)))
            .collect();
        Scrape(samples)
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Sum of every sample of a family (`fleetwave_hosts{state=…}` over all states).
    pub fn sum_of(&self, family: &str) -> f64 {
        self.0.iter().filter(|(k, _)| k.strip_prefix(family).is_some_and(|r| r.starts_with('{'))).map(|(_, v)| v).sum()
    }

    /// A histogram observed between `before` and `self`: (count, mean, bucket bounds at or
    /// above the median and the 99th percentile).
    pub fn histogram_since(&self, before: &Scrape, name: &str) -> Histogram {
        let delta = |key: &str| self.get(key) - before.get(key);
        let count = delta(&format!("{name}_count"));
        let sum = delta(&format!("{name}_sum"));
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .keys()
            .filter_map(|k| {
                let le = k.strip_prefix(&format!("{name}_bucket{{le=\""))?.strip_suffix("\"}")?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((bound, delta(k)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at_most = |q: f64| buckets.iter().find(|(_, n)| *n >= q * count).map_or(f64::NAN, |(bound, _)| *bound);
        Histogram {
            count,
            mean: if count > 0.0 { sum / count } else { 0.0 },
            p50_at_most: at_most(0.5),
            p99_at_most: at_most(0.99),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Histogram {
    pub count: f64,
    pub mean: f64,
    pub p50_at_most: f64,
    pub p99_at_most: f64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    /// Writes `fleet` into `dir`, adds a viewer to a fresh database (a SQLite file in `dir`,
    /// or a database of its own on the PostgreSQL `server`) and starts `fleetwave serve` on
    /// it; returns once every rollout of the fleet is open.
    pub async fn start(dir: &Path, fleet: &LoadFleet, server: Option<&str>) -> anyhow::Result<ServerProcess> {
        fleet.write(dir, false)?;
        let database = match server {
            Some(server) => Some(db::postgres::Scratch::create(server, "fleetwave_bench").await?),
            None => None,
        };
        let target = match &database {
            Some(scratch) => db::DbTarget::Postgres(scratch.url.clone()),
            None => db::DbTarget::Sqlite(dir.join("fleetwave.db")),
        };
        let pool = db::open(&target).await?;
        let viewer_token = new_token();
        db::auth::add_operator(&pool, "bench", Role::Viewer, &token_hash(&viewer_token), chrono::Utc::now()).await?;
        pool.close().await;

        let port = free_port()?;
        let log = dir.join("server.log");
        let child = spawn(dir, &target, port, &log)?;
        let pid = child.id().context("the server exited at once")?;
        let server = ServerProcess {
            child,
            _database: database,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            viewer_token,
            log,
            dir: dir.to_owned(),
            target,
            port,
        };
        let hosts = fleet.hosts.len() as f64;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(scrape) = server.metrics().await
                && scrape.sum_of("fleetwave_hosts") >= hosts
            {
                return Ok(server);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the server did not open the fleet's rollouts in 300 s; see {}",
                server.log.display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kills the server and starts it again on the same database and port; returns once it
    /// answers `/readyz` (its state loaded and the stored fleet and manifests re-verified),
    /// with how long that took from the start.
    pub async fn restart(mut self) -> anyhow::Result<(ServerProcess, Duration)> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let started = Instant::now();
        self.child = spawn(&self.dir, &self.target, self.port, &self.log)?;
        self.pid = self.child.id().context("the server exited at once")?;
        let ready = format!("{}/readyz", self.url);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = started + Duration::from_secs(300);
        loop {
            if http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok((self, started.elapsed()));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the restarted server was not ready in 300 s; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU time the server has used (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command (which may hold spaces) and its closing parenthesis:
        // utime and stime are the 12th and 13th of them.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        let per_second = rustix::param::clock_ticks_per_second().max(1);
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }

    pub async fn metrics(&self) -> anyhow::Result<Scrape> {
        let text = reqwest::get(format!("{}/metrics", self.url)).await?.error_for_status()?.text().await?;
        Ok(Scrape::parse(&text))
    }

    /// (peak, current) resident set size in MiB, from /proc.
    pub fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `fleetwave serve` on `target` at `port`, its manifests from `dir/release`, logging to `log`.
fn spawn(dir: &Path, target: &db::DbTarget, port: u16, log: &Path) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("cannot find the fleetwave binary")?;
    tokio::process::Command::new(exe)
        .args(["--log-format", "json", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--db")
        .arg(target.as_arg())
        .arg("--dist")
        .arg(dir.join("no-dashboard"))
        .arg("--trust")
        .arg(dir.join("trust.json"))
        .arg("--manifests-dir")
        .arg(dir.join("release"))
        .args(["--manifests-poll-ms", "500"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start fleetwave serve")
}
