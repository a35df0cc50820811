//! Several control-plane replicas on one PostgreSQL database (SPEC §15).
//!
//! Exactly one replica leads: it holds a PostgreSQL advisory lock on a session of its own
//! ([`election`]), has incremented the `leader` row's epoch, and runs the reducer, plan ticks
//! and the manifests poller; every reducer transaction checks the epoch first, so a deposed
//! leader cannot commit (`db::postgres`). Every replica serves the reads from the database
//! and the live feed from the log ([`tail`]: `NOTIFY` on each commit, `seq > last` after any
//! reconnect), and passes the writes it gets to the leader unchanged (`http::forward`, which
//! reads [`Cluster`] for where the leader is).
//!
//! A single process on SQLite is a cluster of one: it leads from the start, at epoch 0.

pub mod election;
pub mod tail;

use std::sync::RwLock;

use chrono::{DateTime, Utc};
use shared::api::{ClusterView, DatabaseKind, LeaderView, ReplicaRole, ReplicaView};

/// What this replica knows of itself and the cluster (updated by the election loop every
/// second). Read by `/readyz`, `GET /api/v1/cluster`, `/metrics` and the write forwarder.
pub struct Cluster {
    database: DatabaseKind,
    url: String,
    started_at: DateTime<Utc>,
    known: RwLock<Known>,
    /// This replica's role, for whoever waits for it to change.
    roles: tokio::sync::watch::Sender<ReplicaRole>,
}

#[derive(Clone)]
struct Known {
    role: ReplicaRole,
    epoch: i64,
    last_seen: DateTime<Utc>,
    leader: Option<LeaderView>,
    replicas: Vec<ReplicaView>,
}

impl Cluster {
    /// A replica reached at `url`, following until it wins an election.
    pub fn new(database: DatabaseKind, url: String, now: DateTime<Utc>) -> Cluster {
        Cluster {
            database,
            url,
            started_at: now,
            known: RwLock::new(Known {
                role: ReplicaRole::Follower,
                epoch: 0,
                last_seen: now,
                leader: None,
                replicas: Vec::new(),
            }),
            roles: tokio::sync::watch::Sender::new(ReplicaRole::Follower),
        }
    }

    /// The one replica of a SQLite database: it leads.
    pub fn single(url: String, now: DateTime<Utc>) -> Cluster {
        let cluster = Cluster::new(DatabaseKind::Sqlite, url, now);
        cluster.update(|k| {
            k.role = ReplicaRole::Leader;
            k.leader = Some(LeaderView { url: cluster.url.clone(), epoch: 0, since: now });
        });
        cluster.roles.send_replace(ReplicaRole::Leader);
        cluster
    }

    fn update(&self, change: impl FnOnce(&mut Known)) {
        if let Ok(mut known) = self.known.write() {
            change(&mut known);
        }
    }

    fn known(&self) -> Option<Known> {
        self.known.read().ok().map(|k| k.clone())
    }

    /// This replica's advertised URL (also its name).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Read on every request (the write forwarder): no copy of the rest.
    pub fn role(&self) -> ReplicaRole {
        self.known.read().map_or(ReplicaRole::Follower, |k| k.role)
    }

    /// The leader this replica knows of (itself when it leads); none during a takeover.
    pub fn leader(&self) -> Option<LeaderView> {
        self.known.read().ok().and_then(|k| k.leader.clone())
    }

    /// The leader to pass writes to: known, and not this replica.
    pub fn leader_elsewhere(&self) -> Option<LeaderView> {
        self.leader().filter(|l| l.url != self.url)
    }

    pub(crate) fn set_role(&self, role: ReplicaRole, epoch: i64) {
        self.update(|k| {
            k.role = role;
            k.epoch = epoch;
        });
        self.roles.send_if_modified(|current| std::mem::replace(current, role) != role);
    }

    /// Follows this replica's role (it leads once its reducer runs).
    pub fn roles(&self) -> tokio::sync::watch::Receiver<ReplicaRole> {
        self.roles.subscribe()
    }

    pub(crate) fn observe(&self, leader: Option<LeaderView>, replicas: Vec<ReplicaView>, now: DateTime<Utc>) {
        self.update(|k| {
            if let Some(l) = &leader {
                k.epoch = k.epoch.max(l.epoch);
            }
            k.leader = leader;
            k.replicas = replicas;
            k.last_seen = now;
        });
    }

    /// This replica as `GET /api/v1/cluster` shows it.
    pub fn this(&self) -> ReplicaView {
        let known = self.known();
        ReplicaView {
            url: self.url.clone(),
            role: known.as_ref().map_or(ReplicaRole::Follower, |k| k.role),
            epoch: known.as_ref().map_or(0, |k| k.epoch),
            started_at: self.started_at,
            last_seen: known.map_or(self.started_at, |k| k.last_seen),
        }
    }

    /// The answer of `GET /api/v1/cluster`.
    pub fn view(&self, now: DateTime<Utc>) -> ClusterView {
        let this = ReplicaView { last_seen: now, ..self.this() };
        let known = self.known();
        let mut replicas = known.as_ref().map(|k| k.replicas.clone()).unwrap_or_default();
        match replicas.iter_mut().find(|r| r.url == this.url) {
            Some(row) => *row = this.clone(),
            None => replicas.push(this.clone()),
        }
        replicas.sort_by(|a, b| a.url.cmp(&b.url));
        ClusterView { database: self.database, this, leader: known.and_then(|k| k.leader), replicas }
    }
}
