//! Building and running the control plane. [`App::build`] opens the database, reads the trust
//! roots, binds the listener and starts the leader's services — at once on SQLite (a cluster
//! of one), or whenever this replica wins the election on PostgreSQL (SPEC §15), where every
//! replica also follows the log for its live feed; [`App::run`] serves until the shutdown
//! token fires. Tests run the real server on port 0.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::election::{self, Election, Running, StartLeader};
use crate::cluster::{Cluster, tail};
use crate::config::ServeConfig;
use crate::db::{DbTarget, Store, writer::Writer};
use crate::feed::FeedHub;
use crate::http::{self, AppState};
use crate::manifests;
use crate::metrics::Metrics;
use crate::reducer::{self, ReducerConfig, ReducerSlot, SharedFleet};
use crate::trust::{self, SharedTrust};
use crate::{db, shutdown, webhooks};

/// How long in-flight requests get to finish after shutdown was requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A control plane that is bound, has its database open and its reducer running (or, a
/// follower, is trying to lead).
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    router: axum::Router,
    limits: crate::config::HttpLimits,
    state: AppState,
    /// Supervisors of the vital tasks.
    tasks: Vec<JoinHandle<()>>,
    health: shutdown::Health,
    shutdown: CancellationToken,
}

/// What the leader's services are started from, at each election won.
#[derive(Clone)]
struct LeaderContext {
    target: DbTarget,
    busy_timeout: Duration,
    store: Store,
    trust: SharedTrust,
    trust_path: Option<std::path::PathBuf>,
    fleet: SharedFleet,
    /// Where the reducer publishes what it commits: a single process only (a cluster's
    /// replicas all read their feed from the log).
    feed: Option<FeedHub>,
    metrics: Arc<Metrics>,
    signatures: Arc<crate::signatures::ReplayCache>,
    plan_tick: Duration,
    manifests_dir: Option<std::path::PathBuf>,
    manifests_poll: Duration,
    checkpoints: crate::db::checkpoint::Every,
    retention: crate::db::retention::Retention,
    clock: Clock,
    /// The webhooks and the feed whose entries wake their deliverers.
    webhooks: Arc<webhooks::Webhooks>,
    wake: FeedHub,
}

impl LeaderContext {
    /// Loads state and starts the reducer (its writer fencing by `epoch` on PostgreSQL) and
    /// the manifests poller; they stop when `token` is cancelled.
    async fn start(self, epoch: i64, token: CancellationToken) -> anyhow::Result<Running> {
        webhooks::start_cursors(&self.store, &self.webhooks, self.clock.now())
            .await
            .context("cannot set the new webhooks' cursors")?;
        let writer = Writer::open(&self.target, self.busy_timeout, epoch)
            .await
            .with_context(|| format!("cannot open {} for writing", self.target))?;
        let (reducer, reducer_task) = reducer::spawn(
            reducer::Storage { store: self.store.clone(), writer },
            self.trust.clone(),
            self.fleet.clone(),
            self.feed.clone(),
            self.metrics.clone(),
            ReducerConfig { plan_tick: self.plan_tick, clock: self.clock.clone(), signatures: self.signatures.clone() },
            token.clone(),
        )
        .await
        .context("cannot load the control-plane state")?;
        let mut tasks = vec![("reducer", reducer_task)];
        tasks.push((
            "checkpointer",
            tokio::spawn(crate::db::checkpoint::run(
                self.store.clone(),
                self.checkpoints,
                self.clock.clone(),
                token.clone(),
            )),
        ));
        tasks.push((
            "log sealer",
            tokio::spawn(crate::sealer::run(
                self.store.clone(),
                reducer.clone(),
                self.retention.clone(),
                self.fleet.clone(),
                self.clock.clone(),
                token.clone(),
            )),
        ));
        for index in 0..self.webhooks.hooks.len() {
            let deliverer = webhooks::Deliverer {
                store: self.store.clone(),
                webhooks: self.webhooks.clone(),
                index,
                wake: self.wake.clone(),
                metrics: self.metrics.clone(),
                clock: self.clock.clone(),
            };
            tasks.push(("webhook deliverer", tokio::spawn(webhooks::run(deliverer, token.clone()))));
        }
        if let (Some(dir), Some(trust_path)) = (self.manifests_dir, self.trust_path) {
            tasks.push((
                "manifests poller",
                tokio::spawn(manifests::poll_dir(
                    dir,
                    trust_path,
                    self.trust,
                    reducer.clone(),
                    self.manifests_poll,
                    self.clock,
                    token,
                )),
            ));
        }
        Ok(Running { reducer, tasks })
    }
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
        let store = db::open_with(&config.db, busy_timeout).await?;
        let metrics = Arc::new(Metrics::new());
        let health = shutdown::Health::default();
        let feed = FeedHub::new(config.feed_capacity.max(1));
        let fleet: SharedFleet = Arc::new(RwLock::new(None));
        let slot = ReducerSlot::default();
        let signatures = Arc::new(crate::signatures::ReplayCache::default());
        let webhooks = webhooks::Webhooks::new(match &config.webhooks {
            Some(path) => webhooks::read(path)?,
            None => Vec::new(),
        });
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let url = config.advertise_url.clone().unwrap_or_else(|| format!("http://{local_addr}"));
        let leader = LeaderContext {
            target: config.db.clone(),
            busy_timeout,
            store: store.clone(),
            trust: trust.clone(),
            trust_path: config.trust.clone(),
            fleet: fleet.clone(),
            feed: None,
            metrics: metrics.clone(),
            signatures: signatures.clone(),
            plan_tick: Duration::from_millis(config.plan_tick_ms.max(1)),
            manifests_dir: config.manifests_dir.clone(),
            manifests_poll: Duration::from_millis(config.manifests_poll_ms.max(1)),
            checkpoints: crate::db::checkpoint::Every {
                entries: config.checkpoint_every_entries.max(1),
                interval: Duration::from_secs(config.checkpoint_every_secs.max(1)),
            },
            retention: config.retention(),
            clock: clock.clone(),
            webhooks: webhooks.clone(),
            wake: feed.clone(),
        };
        let vital = |name, task| shutdown::supervise(name, task, health.clone(), shutdown.clone());
        let mut tasks = Vec::new();
        let cluster = match &store {
            Store::Sqlite(_) => {
                let cluster = Arc::new(Cluster::single(url, clock.now()));
                let running = LeaderContext { feed: Some(feed.clone()), ..leader }.start(0, shutdown.clone()).await?;
                slot.set(Some(running.reducer));
                tasks.extend(running.tasks.into_iter().map(|(name, task)| vital(name, task)));
                metrics.observe_cluster(shared::api::ReplicaRole::Leader, 0, &[cluster.this()]);
                cluster
            }
            Store::Postgres(pool) => {
                let cluster = Arc::new(Cluster::new(shared::api::DatabaseKind::Postgres, url, clock.now()));
                let DbTarget::Postgres(db_url) = &config.db else {
                    anyhow::bail!("a PostgreSQL store opened from a target that is not PostgreSQL");
                };
                let start: StartLeader = Arc::new(move |epoch, token| Box::pin(leader.clone().start(epoch, token)));
                let election = Election {
                    pool: pool.clone(),
                    url: db_url.clone(),
                    busy_timeout,
                    cluster: cluster.clone(),
                    slot: slot.clone(),
                    start,
                    health: health.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                };
                tasks.push(vital("election", tokio::spawn(election::run(election, shutdown.clone()))));
                let follow = tail::Tail {
                    pool: pool.clone(),
                    feed: feed.clone(),
                    fleet: fleet.clone(),
                    trust: trust.clone(),
                    clock: clock.clone(),
                };
                tasks.push(vital("feed tail", tokio::spawn(tail::run(follow, shutdown.clone()))));
                cluster
            }
        };
        let state = AppState::new(http::Shared {
            store: store.clone(),
            reducer: slot,
            cluster,
            forwarder: http::forward::client(),
            fleet,
            trust: trust.clone(),
            feed,
            metrics,
            replay: signatures,
            clock,
            health: health.clone(),
            metrics_access: config.metrics_access,
            https: config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
            db_path: config.db.sqlite_path().map(std::path::Path::to_path_buf),
            min_free_disk_bytes: config.min_free_disk_mb.saturating_mul(1024 * 1024),
            shutdown: shutdown.clone(),
            webhooks,
        });
        let limits = config.http_limits();
        let router = http::router(state.clone(), &config.dist, limits);
        if let Some(trust_path) = config.trust.clone() {
            tasks.push(vital(
                "SIGHUP listener",
                tokio::spawn(shutdown::on_sighup(shutdown.clone(), move || {
                    trust::reload_trust(&trust_path, &trust);
                })),
            ));
        }
        Ok(App { listener, local_addr, store, router, limits, state, tasks, health, shutdown })
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
    /// [`DRAIN_TIMEOUT`]), waits for the reducer to finish its transaction (and a leader to
    /// step down), closes the pool.
    /// A vital task that failed (see [`shutdown::Health`]) also stops it, and makes it return
    /// that failure (a non-zero exit).
    pub async fn run(self) -> anyhow::Result<()> {
        let App { listener, store, router, limits, tasks, health, shutdown, .. } = self;
        http::conn::serve(listener, router, limits, shutdown.clone(), DRAIN_TIMEOUT).await;
        // Every vital task ends on the token.
        shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        store.close().await;
        match health.failure() {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(()),
        }
    }
}
