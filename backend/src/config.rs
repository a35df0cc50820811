//! The control plane's configuration (`fleetwave serve` flags, each with a `FLEETWAVE_*`
//! environment twin), in a module of its own: the server, the HTTP layer and the demo read
//! it; it uses none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::db::DbTarget;

/// Configuration of `fleetwave serve`. Every flag has a `FLEETWAVE_*` environment twin.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address the HTTP server listens on. Default: 127.0.0.1:8080.
    #[arg(long, env = "FLEETWAVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where state is kept: a SQLite file (created if missing), or `postgres://…` for
    /// PostgreSQL, which any number of replicas can share (one leads, SPEC §15).
    /// Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: DbTarget,
    /// The URL other replicas reach this one at (writes that reach a follower are passed to
    /// the leader's). Default: http://{the address --listen bound}.
    #[arg(long, env = "FLEETWAVE_ADVERTISE_URL", value_parser = parse_public_url)]
    pub advertise_url: Option<String>,
    /// Directory of the built dashboard (Trunk's output), served at `/`. Default: ./dist.
    #[arg(long, env = "FLEETWAVE_DIST", default_value = "dist")]
    pub dist: PathBuf,
    /// Trust configuration (CI release keys, SPEC §2.2); required. Re-read on SIGHUP and on
    /// every manifest poll. Default: ./trust.json.
    #[arg(long, env = "FLEETWAVE_TRUST", default_value = "trust.json")]
    pub trust: Option<PathBuf>,
    /// Directory with fleet.json(.sig) and rollouts/*.json(.sig), polled for new releases.
    /// Default: none (manifests arrive by upload only).
    #[arg(long, env = "FLEETWAVE_MANIFESTS_DIR")]
    pub manifests_dir: Option<PathBuf>,
    /// Milliseconds between manifests-dir polls. Default: 30000.
    #[arg(long, env = "FLEETWAVE_MANIFESTS_POLL_MS", default_value_t = 30_000)]
    pub manifests_poll_ms: u64,
    /// Milliseconds between full plan passes (there is also one after every manifest update
    /// and operator action; after hosts move, what they can unblock is planned at once).
    /// Default: 15000.
    #[arg(long, env = "FLEETWAVE_PLAN_TICK_MS", default_value_t = 15_000)]
    pub plan_tick_ms: u64,
    /// Live-feed entries a client may fall behind by before it is disconnected (it then
    /// resumes with Last-Event-ID). Default: 4096.
    #[arg(long, env = "FLEETWAVE_FEED_CAPACITY", default_value_t = crate::feed::FEED_CAPACITY)]
    pub feed_capacity: usize,
    /// Milliseconds a database statement waits for a lock held by another process before it
    /// fails (the write is then answered 503 and state reloaded). Default: 5000.
    #[arg(long, env = "FLEETWAVE_DB_BUSY_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_busy_timeout_ms: u64,
    /// Seconds a client has to send a request's head (request line and headers); an idle
    /// keep-alive connection is closed after it too. Default: 10.
    #[arg(long, env = "FLEETWAVE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request is abandoned (408).
    /// Default: 10.
    #[arg(long, env = "FLEETWAVE_BODY_IDLE_TIMEOUT_SECS", default_value_t = 10)]
    pub body_idle_timeout_secs: u64,
    /// Seconds a request may take in all, body included, before it is answered 408 (the live
    /// feed answers at once and then streams). Default: 30.
    #[arg(long, env = "FLEETWAVE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Open connections at most, live feeds included; beyond it new connections wait in the
    /// kernel's backlog. Default: 1024.
    #[arg(long, env = "FLEETWAVE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Who may read /metrics: `public` (anyone who reaches the port, as scrapers expect) or
    /// `viewer` (a viewer's or operator's token, like the API's reads). Default: public.
    #[arg(long, env = "FLEETWAVE_METRICS_ACCESS", value_enum, default_value_t = MetricsAccess::Public)]
    pub metrics_access: MetricsAccess,
    /// The URL browsers use to reach the control plane, when it differs from --listen (a TLS
    /// proxy in front). With `https://…` the session cookie is marked `Secure`; so it is for a
    /// request that a proxy forwarded with `X-Forwarded-Proto: https`. Default: none.
    #[arg(long, env = "FLEETWAVE_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// /readyz fails while the database's filesystem has less free space than this many MiB
    /// (writes would soon fail; a balancer should send agents elsewhere). Default: 64.
    #[arg(long, env = "FLEETWAVE_MIN_FREE_DISK_MB", default_value_t = 64)]
    pub min_free_disk_mb: u64,
    /// A TOML file of `[[webhook]]`s (name, url, secret, kinds?, channels?, format?): each
    /// matching log entry is POSTed to each, signed (README, "Webhooks"). Default: none.
    #[arg(long, env = "FLEETWAVE_WEBHOOKS")]
    pub webhooks: Option<PathBuf>,
    /// The leader checkpoints the derived state (SPEC §16) once this many log entries were
    /// written since the last checkpoint. Default: 100000.
    #[arg(long, env = "FLEETWAVE_CHECKPOINT_EVERY_ENTRIES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every_entries: u64,
    /// …or once this many seconds passed since it, if anything was written. Default: 3600.
    #[arg(long, env = "FLEETWAVE_CHECKPOINT_EVERY_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every_secs: u64,
    /// Log entries older than this many days are sealed into the log archive and leave the
    /// database (SPEC §16; never an open rollout's, nor any after the newest checkpoint).
    /// Default: 365.
    #[arg(long, env = "FLEETWAVE_LOG_RETENTION_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub log_retention_days: u64,
    /// Repeated observations (probe results the same as the probe's last, presence changes)
    /// older than this many days are compacted into the log archive sooner (SPEC §16).
    /// Default: 7.
    #[arg(long, env = "FLEETWAVE_OBSERVATION_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub observation_retention_days: u64,
    /// Where sealed log segments are written (`log-{first}-{last}.jsonl.zst`). Default: the
    /// directory `log-archive` beside the SQLite file (in the working directory with
    /// PostgreSQL: give every replica the same shared directory).
    #[arg(long, env = "FLEETWAVE_LOG_ARCHIVE_DIR")]
    pub log_archive_dir: Option<PathBuf>,
    /// How often the leader looks for entries due for sealing, in seconds. Default: 3600.
    #[arg(long, env = "FLEETWAVE_SEAL_EVERY_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub seal_every_secs: u64,
}

fn parse_public_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.chars().any(char::is_whitespace) => Ok(url.to_owned()),
        _ => Err(format!("`{url}` is not an http:// or https:// URL")),
    }
}

impl ServeConfig {
    /// A server on a free loopback port with `db`, serving `dist`, with no trust roots or
    /// manifests directory and the documented defaults otherwise (tests and the demo start
    /// from here and set what they need).
    pub fn local(db: impl Into<DbTarget>, dist: PathBuf) -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db: db.into(),
            advertise_url: None,
            dist,
            trust: None,
            manifests_dir: None,
            manifests_poll_ms: 30_000,
            plan_tick_ms: 15_000,
            feed_capacity: crate::feed::FEED_CAPACITY,
            db_busy_timeout_ms: 5_000,
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 1024,
            metrics_access: MetricsAccess::Public,
            public_url: None,
            min_free_disk_mb: 64,
            webhooks: None,
            checkpoint_every_entries: 100_000,
            checkpoint_every_secs: 3600,
            log_retention_days: 365,
            observation_retention_days: 7,
            log_archive_dir: None,
            seal_every_secs: 3600,
        }
    }

    /// Where sealed log segments go (`--log-archive-dir`, or its default).
    pub fn log_archive_dir(&self) -> PathBuf {
        if let Some(dir) = &self.log_archive_dir {
            return dir.clone();
        }
        match self.db.sqlite_path().and_then(std::path::Path::parent) {
            Some(parent) => parent.join("log-archive"),
            None => PathBuf::from("log-archive"),
        }
    }

    /// The sealer's settings.
    pub fn retention(&self) -> crate::db::retention::Retention {
        crate::db::retention::Retention {
            log: chrono::Duration::days(i64::try_from(self.log_retention_days).unwrap_or(36_500)),
            observations: chrono::Duration::days(i64::try_from(self.observation_retention_days).unwrap_or(36_500)),
            dir: self.log_archive_dir(),
            every: Duration::from_secs(self.seal_every_secs.max(1)),
        }
    }

    /// The HTTP limits these settings ask for (zero timeouts and limits count as one).
    pub fn http_limits(&self) -> HttpLimits {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        HttpLimits {
            header_read_timeout: secs(self.header_read_timeout_secs),
            body_idle_timeout: secs(self.body_idle_timeout_secs),
            request_timeout: secs(self.request_timeout_secs),
            max_connections: self.max_connections.max(1),
        }
    }
}

/// Timeouts and the connection limit (`fleetwave serve --header-read-timeout-secs` and its
/// siblings; ARCHITECTURE.md lists them with the server's other limits).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head must arrive within this long; idle keep-alive connections close after it.
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long is abandoned (408 `body-timeout`).
    pub body_idle_timeout: Duration,
    /// A request must be answered within this long (408 otherwise); the live feed answers at
    /// once and then streams, so it is not cut by it.
    pub request_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Who may read `/metrics` (`fleetwave serve --metrics-access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MetricsAccess {
    /// Anyone who reaches the port, as Prometheus scrapers usually expect (the default; put
    /// the port behind the network's own controls).
    #[default]
    Public,
    /// Only with a viewer's (or operator's) token, as for the API's reads.
    Viewer,
}
