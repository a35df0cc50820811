//! Building and running the control plane. [`App::build`] opens the database, reads the trust
//! roots, starts the reducer (and the manifests poller), and binds the listener; [`App::run`]
//! serves until the shutdown token fires. Tests run the real server on port 0.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use sqlx::SqlitePool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::ServeConfig;
use crate::feed::FeedHub;
use crate::http::{self, AppState};
use crate::manifests;
use crate::metrics::Metrics;
use crate::reducer::{self, ReducerConfig};
use crate::trust::{self, SharedTrust};
use crate::{db, shutdown};

/// How long in-flight requests get to finish after shutdown was requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A control plane that is bound, has its database open and its reducer running.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    pool: SqlitePool,
    router: axum::Router,
    limits: crate::config::HttpLimits,
    state: AppState,
    /// Supervisors of the vital tasks (the reducer first).
    tasks: Vec<JoinHandle<()>>,
    health: shutdown::Health,
    shutdown: CancellationToken,
}

impl App {
    /// Everything ends when `shutdown` is cancelled.
    pub async fn build(config: &ServeConfig, shutdown: CancellationToken) -> anyhow::Result<App> {
        Self::build_with_clock(config, shutdown, Clock::default()).await
    }

    /// Like [`App::build`] with a clock that tests can move.
    pub async fn build_with_clock(
        config: &ServeConfig,
        shutdown: CancellationToken,
        clock: Clock,
    ) -> anyhow::Result<App> {
        let trust: SharedTrust = Arc::new(RwLock::new(match &config.trust {
            Some(path) => Some(Arc::new(trust::read_trust(path)?)),
            None => None,
        }));
        let busy_timeout = Duration::from_millis(config.db_busy_timeout_ms);
        let pool = db::open_with(&config.db, busy_timeout).await?;
        let metrics = Arc::new(Metrics::new());
        let health = shutdown::Health::default();
        let feed = FeedHub::new(config.feed_capacity.max(1));
        let fleet = Arc::new(RwLock::new(None));
        let writer = crate::db::writer::Writer::open_with(&config.db, busy_timeout)
            .with_context(|| format!("cannot open {} for writing", config.db.display()))?;
        let (reducer, reducer_task) = reducer::spawn(
            reducer::Storage { pool: pool.clone(), writer },
            trust.clone(),
            fleet.clone(),
            feed.clone(),
            metrics.clone(),
            ReducerConfig { plan_tick: Duration::from_millis(config.plan_tick_ms.max(1)), clock: clock.clone() },
            shutdown.clone(),
        )
        .await
        .context("cannot load the control-plane state")?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let state = AppState::new(http::Shared {
            pool: pool.clone(),
            reducer: reducer.clone(),
            fleet,
            trust: trust.clone(),
            feed,
            metrics,
            replay: Default::default(),
            clock,
            health: health.clone(),
            metrics_access: config.metrics_access,
            https: config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
            db_path: config.db.clone(),
            min_free_disk_bytes: config.min_free_disk_mb.saturating_mul(1024 * 1024),
            shutdown: shutdown.clone(),
        });
        let limits = config.http_limits();
        let router = http::router(state.clone(), &config.dist, limits);
        let vital = |name, task| shutdown::supervise(name, task, health.clone(), shutdown.clone());
        let mut tasks = vec![vital("reducer", reducer_task)];
        if let (Some(dir), Some(trust_path)) = (&config.manifests_dir, &config.trust) {
            tasks.push(vital(
                "manifests poller",
                tokio::spawn(manifests::poll_dir(
                    dir.clone(),
                    trust_path.clone(),
                    trust.clone(),
                    reducer.clone(),
                    Duration::from_millis(config.manifests_poll_ms.max(1)),
                    state.clock.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        if let Some(trust_path) = config.trust.clone() {
            tasks.push(vital(
                "SIGHUP listener",
                tokio::spawn(shutdown::on_sighup(shutdown.clone(), move || {
                    trust::reload_trust(&trust_path, &trust);
                })),
            ));
        }
        Ok(App { listener, local_addr, pool, router, limits, state, tasks, health, shutdown })
    }

    /// The address actually bound (differs from the configured one when it named port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The router, for tests that call it without a socket.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token is cancelled; then lets requests drain (at most
    /// [`DRAIN_TIMEOUT`]), waits for the reducer to finish its transaction, closes the pool.
    /// A vital task that failed (see [`shutdown::Health`]) also stops it, and makes it return
    /// that failure (a non-zero exit).
    pub async fn run(self) -> anyhow::Result<()> {
        let App { listener, pool, router, limits, tasks, health, shutdown, .. } = self;
        http::conn::serve(listener, router, limits, shutdown.clone(), DRAIN_TIMEOUT).await;
        // Every vital task ends on the token.
        shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        pool.close().await;
        match health.failure() {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(()),
        }
    }
}
