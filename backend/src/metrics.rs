//! Prometheus metrics (`GET /metrics`): inputs handled by kind, reducer queue depth,
//! transaction latency and size, plan-pass time, hosts by state, holds by gate, feed clients.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Buckets for the reducer's in-memory work (plan passes, turns): 100 µs to 250 ms.
const SHORT_SECONDS: [f64; 11] = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
/// Plan passes: finer around SPEC §13's 10 ms (10,000 hosts) and 20 ms (100,000 hosts) targets.
const PLAN_SECONDS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.1, 0.25];

pub struct Metrics {
    registry: Registry,
    pub inputs: Family<Labels, Counter>,
    pub queue_depth: Gauge,
    pub tx_seconds: Histogram,
    pub tx_inputs: Histogram,
    pub plan_seconds: Histogram,
    pub plan_moved_seconds: Histogram,
    pub turn_seconds: Histogram,
    pub hosts_by_state: Family<Labels, Gauge>,
    pub holds_by_gate: Family<Labels, Gauge>,
    pub feed_clients: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub feed_disconnects: Counter<u64, AtomicU64>,
    pub stuck: Gauge,
    /// Times this replica became the leader.
    pub leader_changes: Counter<u64, AtomicU64>,
    /// 1 for this replica's role (`leader`, `follower`), 0 for the other.
    pub role: Family<Labels, Gauge>,
    /// The leader epoch this replica last saw (its own while it leads).
    pub epoch: Gauge,
    /// Every replica's last report (unix seconds) and epoch, by URL and role.
    pub replica_last_seen: Family<Labels, Gauge>,
    pub replica_epoch: Family<Labels, Gauge>,
    /// Webhooks (SPEC §18), by webhook name: entries delivered, failed attempts, the last seq
    /// delivered or passed over, and 1 while the entry after it keeps failing.
    pub webhook_delivered: Family<Labels, Counter>,
    pub webhook_failures: Family<Labels, Counter>,
    pub webhook_cursor: Family<Labels, Gauge>,
    pub webhook_failing: Family<Labels, Gauge>,
    /// When the record gauges were last refreshed for a scrape.
    gauges_refreshed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The record gauges are recounted at most this often, however often `/metrics` is scraped.
pub const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// True when the caller should refresh the record gauges now: at most once per
    /// [`GAUGES_EVERY`] across all scrapes (concurrent ones included).
    pub fn claim_gauge_refresh(&self, now: std::time::Instant) -> bool {
        let Ok(mut last) = self.gauges_refreshed_at.lock() else { return false };
        if last.is_some_and(|at| now.saturating_duration_since(at) < GAUGES_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fleetwave");
        let inputs = Family::<Labels, Counter>::default();
        let queue_depth = Gauge::default();
        let tx_seconds = Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]);
        let tx_inputs = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let plan_seconds = Histogram::new(PLAN_SECONDS);
        let plan_moved_seconds = Histogram::new(PLAN_SECONDS);
        let turn_seconds = Histogram::new(SHORT_SECONDS);
        let hosts_by_state = Family::<Labels, Gauge>::default();
        let holds_by_gate = Family::<Labels, Gauge>::default();
        let feed_clients = Gauge::default();
        let feed_disconnects = Counter::default();
        let stuck = Gauge::default();
        let leader_changes = Counter::default();
        let role = Family::<Labels, Gauge>::default();
        let epoch = Gauge::default();
        let replica_last_seen = Family::<Labels, Gauge>::default();
        let replica_epoch = Family::<Labels, Gauge>::default();
        registry.register(
            "cluster_leader_elections_won",
            "Times this replica became the leader",
            leader_changes.clone(),
        );
        registry.register("cluster_role", "1 for this replica's role (leader or follower)", role.clone());
        registry.register("cluster_epoch", "The leader epoch this replica last saw", epoch.clone());
        registry.register(
            "cluster_replica_last_seen_seconds",
            "When each replica last reported itself (unix seconds), by URL and role",
            replica_last_seen.clone(),
        );
        registry.register(
            "cluster_replica_epoch",
            "The leader epoch each replica last saw, by URL",
            replica_epoch.clone(),
        );
        registry.register("reducer_inputs", "Reducer inputs handled, by kind", inputs.clone());
        registry.register("reducer_queue_depth", "Inputs waiting for the reducer", queue_depth.clone());
        registry.register(
            "reducer_transaction_seconds",
            "From handing a group's writes to the writer to its commit (waiting behind the group before included)",
            tx_seconds.clone(),
        );
        registry.register(
            "reducer_transaction_inputs",
            "Inputs committed per transaction (group commit)",
            tx_inputs.clone(),
        );
        registry.register(
            "plan_seconds",
            "Time of one full plan pass (every open rollout, stuck hosts, presence)",
            plan_seconds.clone(),
        );
        registry.register(
            "plan_moved_seconds",
            "Time of one plan pass after hosts moved (the rollouts they moved in and those they can unblock)",
            plan_moved_seconds.clone(),
        );
        registry.register(
            "reducer_turn_seconds",
            "One reducer turn: a group applied and planned in memory and handed to the writer",
            turn_seconds.clone(),
        );
        registry.register("hosts", "Records of open rollouts, by state", hosts_by_state.clone());
        registry.register("holds", "Pending records held, by gate", holds_by_gate.clone());
        registry.register("feed_clients", "Connected live-feed clients", feed_clients.clone());
        registry.register(
            "feed_lagging_disconnects",
            "Feed clients cut off for falling behind",
            feed_disconnects.clone(),
        );
        registry.register("hosts_stuck", "Records flagged stuck (no progress for stuckAfterMinutes)", stuck.clone());
        let webhook_delivered = Family::<Labels, Counter>::default();
        let webhook_failures = Family::<Labels, Counter>::default();
        let webhook_cursor = Family::<Labels, Gauge>::default();
        let webhook_failing = Family::<Labels, Gauge>::default();
        registry.register("webhook_delivered", "Log entries delivered, by webhook", webhook_delivered.clone());
        registry.register("webhook_failed_attempts", "Failed delivery attempts, by webhook", webhook_failures.clone());
        registry.register(
            "webhook_cursor",
            "The last log seq delivered or passed over, by webhook",
            webhook_cursor.clone(),
        );
        registry.register("webhook_failing", "1 while the webhook's next entry keeps failing", webhook_failing.clone());
        Metrics {
            registry,
            inputs,
            queue_depth,
            tx_seconds,
            tx_inputs,
            plan_seconds,
            plan_moved_seconds,
            turn_seconds,
            hosts_by_state,
            holds_by_gate,
            feed_clients,
            feed_disconnects,
            stuck,
            leader_changes,
            role,
            epoch,
            replica_last_seen,
            replica_epoch,
            webhook_delivered,
            webhook_failures,
            webhook_cursor,
            webhook_failing,
            gauges_refreshed_at: std::sync::Mutex::new(None),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::error!(%err, "cannot encode metrics");
        }
        out
    }

    /// The cluster as this replica last saw it (SPEC §15).
    pub fn observe_cluster(&self, role: shared::api::ReplicaRole, epoch: i64, replicas: &[shared::api::ReplicaView]) {
        use shared::api::ReplicaRole;
        for r in [ReplicaRole::Leader, ReplicaRole::Follower] {
            self.role.get_or_create(&Self::label("role", r.as_str())).set(i64::from(r == role));
        }
        self.epoch.set(epoch);
        self.replica_last_seen.clear();
        self.replica_epoch.clear();
        for r in replicas {
            let labels = vec![("replica".to_owned(), r.url.clone()), ("role".to_owned(), r.role.as_str().to_owned())];
            self.replica_last_seen.get_or_create(&labels).set(r.last_seen.timestamp());
            self.replica_epoch.get_or_create(&Self::label("replica", &r.url)).set(r.epoch);
        }
    }

    pub fn label(key: &str, value: &str) -> Labels {
        vec![(key.to_owned(), value.to_owned())]
    }
}
