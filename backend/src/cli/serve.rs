//! `fleetwave serve`: the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::{server, shutdown};

/// Configuration of `fleetwave serve`. Every flag has a `FLEETWAVE_*` environment twin.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address the HTTP server listens on. Default: 127.0.0.1:8080.
    #[arg(long, env = "FLEETWAVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// SQLite database file, created if missing. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: PathBuf,
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
}

impl ServeConfig {
    /// A server on a free loopback port with `db`, serving `dist`, with no trust roots or
    /// manifests directory and the documented defaults otherwise (tests and the demo start
    /// from here and set what they need).
    pub fn local(db: PathBuf, dist: PathBuf) -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db,
            dist,
            trust: None,
            manifests_dir: None,
            manifests_poll_ms: 30_000,
            plan_tick_ms: 15_000,
            feed_capacity: crate::feed::FEED_CAPACITY,
        }
    }
}

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let result = serve(config).await;
    if let Err(err) = &result {
        tracing::error!("{err:#}");
    }
    result
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    tracing::info!(?config, "starting fleetwave serve");
    let token = CancellationToken::new();
    tokio::spawn(shutdown::cancel_on_signal(token.clone()));
    let app = server::App::build(&config, token).await?;
    tracing::info!(addr = %app.local_addr(), "listening; dashboard at http://{}/", app.local_addr());
    app.run().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
