//! Leader election on PostgreSQL (SPEC §15).
//!
//! Every second, a replica that does not lead tries `pg_try_advisory_lock` on a session of
//! its own. The winner increments the `leader` row's epoch (naming itself and its URL), loads
//! state and starts the leader's services: the reducer (whose writer fences each transaction
//! by that epoch), plan ticks, the manifests poller. While it leads it checks the session
//! every second (`SELECT epoch FROM leader`): an error, or an epoch that is no longer its
//! own, and it steps down at once. The session runs with `idle_session_timeout`, so a leader
//! that stops checking — a frozen process, a partition — loses the lock within [`LEASE`]
//! even though its socket stays open, and another replica takes over; its first commit after
//! waking up fails the epoch check. A leader whose process dies loses the lock with its
//! session, at once.
//!
//! Each round also writes this replica's row in `replicas` and reads the leader row and every
//! replica's row for `GET /api/v1/cluster` and `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shared::api::{LeaderView, ReplicaRole, ReplicaView};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::clock::Clock;
use crate::db::postgres;
use crate::db::store::{parse_ts, ts};
use crate::metrics::Metrics;
use crate::reducer::{ReducerHandle, ReducerSlot};
use crate::shutdown::Health;

/// The advisory lock whose holder leads (scoped to the database, so clusters on other
/// databases of one server do not contend).
pub const LEADER_LOCK: i64 = 0x4657_4c44; // "FWLD"
/// How often followers try for the lock, and the leader checks it still holds it.
pub const ROUND: Duration = Duration::from_secs(1);
/// A leader session quiet for this long is ended by the server, releasing the lock.
pub const LEASE: Duration = Duration::from_secs(5);
/// Budget of one check of the lock session.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a leader runs: its reducer, and the tasks that end when it steps down.
pub struct Running {
    pub reducer: ReducerHandle,
    pub tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// Starts the leader's services at an epoch; they stop when the token is cancelled.
pub type StartLeader =
    Arc<dyn Fn(i64, CancellationToken) -> Pin<Box<dyn Future<Output = anyhow::Result<Running>> + Send>> + Send + Sync>;

pub struct Election {
    pub pool: PgPool,
    /// The database URL (the lock session is a connection of its own).
    pub url: String,
    pub busy_timeout: Duration,
    pub cluster: Arc<Cluster>,
    pub slot: ReducerSlot,
    pub start: StartLeader,
    pub health: Health,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

struct Leading {
    epoch: i64,
    session: PgConnection,
    running: Running,
    token: CancellationToken,
}

/// Where a replica stands between rounds.
enum Standing {
    /// Not leading; the session it tries the lock on, kept open between rounds.
    Following(Option<PgConnection>),
    Leading(Leading),
}

/// Runs until `shutdown`; then steps down if it leads.
pub async fn run(election: Election, shutdown: CancellationToken) {
    let mut round = tokio::time::interval(ROUND);
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut standing = Standing::Following(None);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = round.tick() => {}
        }
        standing = match standing {
            Standing::Following(session) => election.try_to_lead(session, &shutdown).await,
            Standing::Leading(lead) => match election.keep_leading(lead).await {
                Some(lead) => Standing::Leading(lead),
                None => Standing::Following(None),
            },
        };
        let (role, epoch) = match &standing {
            Standing::Leading(lead) => (ReplicaRole::Leader, lead.epoch),
            Standing::Following(_) => (ReplicaRole::Follower, election.cluster.this().epoch),
        };
        election.cluster.set_role(role, epoch);
        if let Err(err) = election.report(role, epoch).await {
            tracing::warn!(%err, "cannot report this replica to the database");
        }
        if election.health.failure().is_some() {
            // Something the leader ran broke: ending here stops the process (see
            // `shutdown::supervise`).
            return;
        }
    }
    if let Standing::Leading(lead) = standing {
        election.step_down(lead, "the process is stopping").await;
    }
}

impl Election {
    /// One attempt to lead: the lock, then the epoch, then the services. Following if another
    /// replica leads, or if anything failed (the session is then dropped, releasing the lock).
    async fn try_to_lead(&self, session: Option<PgConnection>, shutdown: &CancellationToken) -> Standing {
        match self.attempt(session, shutdown).await {
            Ok(standing) => standing,
            Err(err) => {
                tracing::warn!(err = format!("{err:#}"), "election: this round failed");
                Standing::Following(None)
            }
        }
    }

    async fn attempt(&self, session: Option<PgConnection>, shutdown: &CancellationToken) -> anyhow::Result<Standing> {
        let mut session = match session {
            Some(session) => session,
            None => {
                let options = postgres::connect_options(&self.url, self.busy_timeout)?
                    .options([("idle_session_timeout", format!("{}ms", LEASE.as_millis()))]);
                tokio::time::timeout(postgres::CONNECT_TIMEOUT, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| anyhow::anyhow!("connecting timed out"))??
            }
        };
        let won: bool = tokio::time::timeout(
            CHECK_TIMEOUT,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut session),
        )
        .await
        .map_err(|_| anyhow::anyhow!("trying the lock timed out"))??;
        if !won {
            return Ok(Standing::Following(Some(session)));
        }
        // The increment waits for any transaction of the previous leader that holds the row
        // (each of them reads it FOR SHARE first); every one after it sees the new epoch.
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE leader SET epoch = epoch + 1, replica = $1, url = $1, since = $2 WHERE id = 1 RETURNING epoch",
        )
        .bind(self.cluster.url())
        .bind(ts(self.clock.now()))
        .fetch_one(&mut session)
        .await?;
        let token = shutdown.child_token();
        match (self.start)(epoch, token.clone()).await {
            Ok(running) => {
                self.slot.set(Some(running.reducer.clone()));
                self.metrics.leader_changes.inc();
                tracing::info!(epoch, url = self.cluster.url(), "this replica leads");
                Ok(Standing::Leading(Leading { epoch, session, running, token }))
            }
            Err(err) => {
                token.cancel();
                Err(err.context(format!("won the election at epoch {epoch} but cannot start leading")))
            }
        }
    }

    /// One check of a lead: still holding the session, still the epoch in the row, the
    /// services still running.
    async fn keep_leading(&self, mut lead: Leading) -> Option<Leading> {
        let check = sqlx::query_scalar::<_, i64>("SELECT epoch FROM leader WHERE id = 1").fetch_one(&mut lead.session);
        let why = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok(epoch)) if epoch == lead.epoch => None,
            Ok(Ok(epoch)) => Some(format!("the leader row is at epoch {epoch}")),
            Ok(Err(err)) => Some(format!("the lock session failed: {err}")),
            Err(_) => Some("the lock session did not answer in time".to_owned()),
        };
        if let Some(why) = why {
            self.step_down(lead, &why).await;
            return None;
        }
        if lead.running.reducer.is_deposed() {
            self.step_down(lead, "a commit was fenced").await;
            return None;
        }
        if let Some((name, _)) = lead.running.tasks.iter().find(|(_, task)| task.is_finished()) {
            // Not a lost election: something the leader runs broke. The process stops
            // (SPEC §6: it says so and exits) and another replica leads.
            let why = format!("the {name} stopped while this replica led");
            self.health.fail(why.clone());
            self.step_down(lead, &why).await;
            return None;
        }
        Some(lead)
    }

    async fn step_down(&self, lead: Leading, why: &str) {
        tracing::warn!(epoch = lead.epoch, why, "stepping down");
        self.slot.set(None);
        lead.token.cancel();
        for (name, task) in lead.running.tasks {
            if let Err(err) = task.await {
                tracing::error!(%err, task = name, "a leader task failed while stopping");
            }
        }
        // Ends the session: the lock, if it was still held, is free for the next leader.
        let _ = lead.session.close().await;
    }

    /// Reads the leader row; writes this replica's row (a follower's epoch is the leader's);
    /// reads everyone's.
    async fn report(&self, role: ReplicaRole, epoch: i64) -> Result<(), sqlx::Error> {
        let now = self.clock.now();
        // The row names the last leader; the lock says whether it still leads.
        let leader: (i64, String, String, bool) = sqlx::query_as(
            "SELECT epoch, url, since, EXISTS (
                 SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND classid = 0 AND objid::int8 = $1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
             FROM leader WHERE id = 1",
        )
        .bind(LEADER_LOCK)
        .fetch_one(&self.pool)
        .await?;
        let (leader_epoch, url, since, held) = leader;
        let leader = match (held, parse_ts(&since)) {
            (true, Ok(since)) if !url.is_empty() => Some(LeaderView { url, epoch: leader_epoch, since }),
            _ => None,
        };
        let epoch = match role {
            ReplicaRole::Leader => epoch,
            ReplicaRole::Follower => epoch.max(leader_epoch),
        };
        sqlx::query(
            "INSERT INTO replicas (name, url, role, epoch, started_at, last_seen) VALUES ($1, $1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, epoch = excluded.epoch,
                 started_at = excluded.started_at, last_seen = excluded.last_seen",
        )
        .bind(self.cluster.url())
        .bind(role.as_str())
        .bind(epoch)
        .bind(ts(self.cluster.this().started_at))
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        let rows: Vec<(String, String, i64, String, String)> =
            sqlx::query_as("SELECT url, role, epoch, started_at, last_seen FROM replicas ORDER BY url")
                .fetch_all(&self.pool)
                .await?;
        let replicas: Vec<ReplicaView> = rows
            .into_iter()
            .filter_map(|(url, role, epoch, started_at, last_seen)| {
                Some(ReplicaView {
                    url,
                    role: if role == ReplicaRole::Leader.as_str() {
                        ReplicaRole::Leader
                    } else {
                        ReplicaRole::Follower
                    },
                    epoch,
                    started_at: parse_ts(&started_at).ok()?,
                    last_seen: parse_ts(&last_seen).ok()?,
                })
            })
            .collect();
        self.metrics.observe_cluster(role, epoch, &replicas);
        self.cluster.set_role(role, epoch);
        self.cluster.observe(leader, replicas, now);
        Ok(())
    }
}
