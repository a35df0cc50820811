//! PostgreSQL (SPEC §15): the pool reads go through, and the leader's writer — one
//! connection on a task of its own that fences every transaction by the leader epoch.
//!
//! A group commit is a handful of statements whatever its size: each table's rows go in as
//! arrays (`UNNEST`), so a group of 512 events costs what one of 5 does in round trips. The
//! writer assigns seqs itself (the last seq + 1, read inside the fenced transaction): one
//! writer at a time commits, so seqs are contiguous and commit in seq order, and a follower
//! that reads `seq > last` after a `NOTIFY` never skips a row that commits later.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::mpsc;

use super::DbError;
use super::chain;
use super::store::{Batch, ManifestWrite, QuarantineChange, ts};
use super::writer::{Committed, FailureGate, Job, WriteError, to_json};
use shared::{Channel, Closure, Hostname, RolloutId};

/// The channel the leader's commits notify, with the last seq they wrote as the payload.
pub const LOG_CHANNEL: &str = "fleetwave_log";

/// How long any statement may run before the server cancels it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a transaction may sit idle before the server ends the session. The writer's
/// transactions hold the leader row (FOR SHARE) for milliseconds; one left open by a frozen
/// leader would hold up the next leader's epoch increment until this ends it.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);
/// How long getting a connection (from the pool, or a new one) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection settings every connection of the control plane uses: statement and lock
/// timeouts, a transaction left open is ended by the server, and TCP keep-alives so that a
/// peer that vanished is noticed in seconds, not hours.
pub fn connect_options(url: &str, busy_timeout: Duration) -> Result<PgConnectOptions, sqlx::Error> {
    let millis = |d: Duration| format!("{}ms", d.as_millis());
    Ok(url.parse::<PgConnectOptions>()?.application_name("fleetwave").options([
        ("statement_timeout", millis(STATEMENT_TIMEOUT)),
        ("lock_timeout", millis(busy_timeout)),
        ("idle_in_transaction_session_timeout", millis(IDLE_IN_TRANSACTION)),
        ("tcp_keepalives_idle", "5".to_owned()),
        ("tcp_keepalives_interval", "2".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ]))
}

/// Connects to `url` and brings its schema up to date (replicas starting together take
/// turns: sqlx holds an advisory lock while it migrates).
pub async fn open(url: &str, busy_timeout: Duration) -> Result<PgPool, DbError> {
    let target = super::DbTarget::Postgres(url.to_owned()).to_string();
    let options =
        connect_options(url, busy_timeout).map_err(|source| DbError::Open { target: target.clone(), source })?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Open { target: target.clone(), source })?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await.map_err(|source| DbError::Migrate { target, source })?;
    Ok(pool)
}

/// One connection with the control plane's settings.
pub async fn connect(url: &str, busy_timeout: Duration) -> Result<PgConnection, sqlx::Error> {
    let options = connect_options(url, busy_timeout)?;
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// Starts the writer of the leader of `epoch`: a thread of its own running a single-threaded
/// runtime, so that its commits are not queued behind the request handlers of a busy server
/// (as SQLite's writer thread is not). A connection that failed a commit is dropped and the
/// next commit opens a new one.
pub(super) async fn start_writer(
    url: &str,
    busy_timeout: Duration,
    epoch: i64,
) -> Result<mpsc::UnboundedSender<Job>, WriteError> {
    let (jobs, rx) = mpsc::unbounded_channel::<Job>();
    let (started, connected) = tokio::sync::oneshot::channel();
    let url = url.to_owned();
    std::thread::Builder::new()
        .name("fleetwave-pg-writer".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => return drop(started.send(Err(WriteError::Postgres(sqlx::Error::Io(err))))),
            };
            runtime.block_on(async move {
                // The connection belongs to this runtime's reactor: it is made here.
                match connect(&url, busy_timeout).await {
                    Ok(first) => {
                        let _ = started.send(Ok(()));
                        write_until_closed(Some(first), rx, &url, busy_timeout, epoch).await;
                    }
                    Err(err) => drop(started.send(Err(err.into()))),
                }
            });
        })
        .map_err(|_| WriteError::Stopped)?;
    connected.await.unwrap_or(Err(WriteError::Stopped))?;
    Ok(jobs)
}

async fn write_until_closed(
    mut conn: Option<PgConnection>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    url: &str,
    busy_timeout: Duration,
    epoch: i64,
) {
    let mut gate = FailureGate::default();
    while let Some(job) = rx.recv().await {
        match job {
            Job::Reset => gate.reset(),
            Job::Commit { batch, reply } => {
                let result = match gate.admit() {
                    Err(err) => Err(err),
                    Ok(()) => match conn.take() {
                        Some(c) => Ok(c),
                        None => connect(url, busy_timeout).await.map_err(WriteError::from),
                    }
                    .map(|c| conn.insert(c)),
                };
                let result = match result {
                    Ok(c) => commit(c, epoch, *batch).await,
                    Err(err) => Err(err),
                };
                if result.is_err() {
                    conn = None;
                }
                gate.record(&result);
                let _ = reply.send(result);
            }
        }
    }
}

/// Opens the transaction and reads the leader row's epoch and the log's last seq, with the
/// leader row share-locked until the transaction ends: a new leader's epoch increment waits
/// for this transaction, and this transaction sees any increment that committed before it.
/// (One round trip: the statements take no parameters.)
const BEGIN_FENCED: &str = "BEGIN; SELECT epoch, (SELECT seq FROM event_log ORDER BY seq DESC LIMIT 1),
     (SELECT hash FROM event_log ORDER BY seq DESC LIMIT 1) FROM leader WHERE id = 1 FOR SHARE";

/// Writes `batch` in one transaction, in as few round trips as the rows allow: the opening
/// with the fence, one statement per table that has rows (arrays), and the closing with the
/// snapshot and the notification. The transaction is opened and closed by hand (so that those
/// round trips carry more than `BEGIN` and `COMMIT`): on any error the caller drops the
/// connection, and the server rolls the transaction back.
async fn commit(conn: &mut PgConnection, epoch: i64, batch: Batch) -> Committed {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let fence = sqlx::Executor::fetch_all(&mut *conn, BEGIN_FENCED).await?;
    let row = fence.first().ok_or(sqlx::Error::RowNotFound)?;
    let (current, newest): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    if current != epoch {
        return Err(WriteError::Fenced { ours: epoch, current });
    }
    // Each row chains to the one before it (SPEC §16).
    let (last, mut prev) =
        chain::stored_head(newest.map(|seq| Ok::<_, sqlx::Error>((seq, row.try_get(2)?))).transpose()?)
            .map_err(WriteError::Chain)?;
    if let Some(ManifestWrite { fleet, fleet_hash, manifests, at }) = &batch.manifests {
        sqlx::query(
            "INSERT INTO manifest_fleet (id, artifact, fleet_hash, received_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET artifact = excluded.artifact, fleet_hash = excluded.fleet_hash, received_at = excluded.received_at",
        )
        .bind(to_json(fleet)?)
        .bind(fleet_hash)
        .bind(ts(*at))
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM manifest_rollouts").execute(&mut *conn).await?;
        let ids: Vec<&str> = manifests.iter().map(|(id, _)| id.as_str()).collect();
        let artifacts = manifests.iter().map(|(_, a)| to_json(a)).collect::<Result<Vec<_>, _>>()?;
        // In acceptance order: the position is what breaks a tie of signing times.
        let positions: Vec<i64> = (0..manifests.len() as i64).collect();
        sqlx::query(
            "INSERT INTO manifest_rollouts (rollout_id, artifact, received_at, accepted)
             SELECT id, artifact, $3, accepted FROM UNNEST($1::text[], $2::text[], $4::int8[]) AS m (id, artifact, accepted)",
        )
        .bind(ids)
        .bind(artifacts)
        .bind(ts(*at))
        .bind(positions)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.rollouts.is_empty() {
        let rs = &batch.rollouts;
        let bodies = rs.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
        sqlx::query(
            "INSERT INTO rollouts (rollout_id, channel, state, current_wave, opened_seq, body)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[])
             ON CONFLICT (rollout_id) DO UPDATE SET state = excluded.state, current_wave = excluded.current_wave, body = excluded.body",
        )
        .bind(rs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| i64::from(r.current_wave)).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.opened_seq as i64).collect::<Vec<_>>())
        .bind(bodies)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.records.is_empty() {
        let rs = &batch.records;
        sqlx::query(
            "INSERT INTO host_records (rollout_id, hostname, state, body)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body",
        )
        .bind(rs.iter().map(|r| r.rollout_id.as_str()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.hostname.as_str()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.state).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.body.get()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    for change in &batch.quarantines {
        match change {
            QuarantineChange::Add(q) => {
                sqlx::query(
                    "INSERT INTO quarantines (channel, closure, reason, by_whom, at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(q.channel.as_str())
                .bind(q.closure.as_str())
                .bind(&q.reason)
                .bind(&q.by)
                .bind(ts(q.at))
                .execute(&mut *conn)
                .await?;
            }
            QuarantineChange::Release { channel, closure, by, reason, at } => {
                sqlx::query(
                    "UPDATE quarantines SET released_at = $1, released_by = $2, release_reason = $3
                     WHERE channel = $4 AND closure = $5 AND released_at IS NULL",
                )
                .bind(ts(*at))
                .bind(by)
                .bind(reason)
                .bind(channel.as_str())
                .bind(closure.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    if let Some(body) = &batch.policies {
        sqlx::query(
            "INSERT INTO policies (id, body) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .bind(body)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.presence.is_empty() {
        let ps = &batch.presence;
        sqlx::query(
            "INSERT INTO host_presence (hostname, last_heartbeat_at, current_closure, booted_closure)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (hostname) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at,
               current_closure = excluded.current_closure, booted_closure = excluded.booted_closure",
        )
        .bind(ps.iter().map(|p| p.host.as_str()).collect::<Vec<_>>())
        .bind(ps.iter().map(|p| ts(p.at)).collect::<Vec<_>>())
        .bind(ps.iter().map(|p| p.closure.as_ref().map(Closure::as_str)).collect::<Vec<_>>())
        .bind(ps.iter().map(|p| p.booted.as_ref().map(Closure::as_str)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !batch.signatures.is_empty() {
        let (keys, expires) = super::store::signature_row(&batch.signatures);
        sqlx::query("INSERT INTO agent_signatures (expires_at, keys) VALUES ($1, $2)")
            .bind(expires)
            .bind(keys)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(before) = batch.signatures_expire_before {
        sqlx::query("DELETE FROM agent_signatures WHERE expires_at < $1").bind(before).execute(&mut *conn).await?;
    }
    let first = last + 1;
    let seqs: Vec<i64> = (first..first + batch.log.len() as i64).collect();
    let through = last + batch.log.len() as i64;
    if !batch.log.is_empty() {
        let log = &batch.log;
        let stamps: Vec<String> = log.iter().map(|r| ts(r.ts)).collect();
        let mut hashes = Vec::with_capacity(log.len());
        for ((row, seq), at) in log.iter().zip(&seqs).zip(&stamps) {
            prev = chain::hash_row(row, *seq, at, &prev).map_err(WriteError::Chain)?;
            hashes.push(prev.to_vec());
        }
        sqlx::query(
            "INSERT INTO event_log (seq, ts, kind, rollout_id, host, channel, payload, record_state, hash, epoch)
             SELECT *, $10 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[])",
        )
        .bind(&seqs)
        .bind(stamps)
        .bind(log.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(log.iter().map(|r| r.rollout_id.as_ref().map(RolloutId::as_str)).collect::<Vec<_>>())
        .bind(log.iter().map(|r| r.host.as_ref().map(Hostname::as_str)).collect::<Vec<_>>())
        .bind(log.iter().map(|r| r.channel.as_ref().map(Channel::as_str)).collect::<Vec<_>>())
        .bind(log.iter().map(|r| r.payload.get()).collect::<Vec<_>>())
        .bind(log.iter().map(|r| r.record_state.map(shared::state::HostState::as_str)).collect::<Vec<_>>())
        .bind(hashes)
        .bind(epoch)
        .execute(&mut *conn)
        .await?;
    }
    // The closing round trip. Its values are integers this function computed, written as
    // literals. The notification is delivered to every listening replica when (and only if)
    // the transaction commits.
    let mut closing = String::new();
    if batch.records_through {
        closing.push_str(&format!("UPDATE record_snapshot SET seq = {through}; "));
    }
    if !batch.log.is_empty() {
        closing.push_str(&format!("SELECT pg_notify('{LOG_CHANNEL}', '{through}'); "));
    }
    closing.push_str("COMMIT");
    sqlx::Executor::execute(&mut *conn, closing.as_str()).await?;
    Ok(batch.log.into_iter().zip(seqs).map(|(row, seq)| row.committed(seq)).collect())
}

/// A database of its own on a PostgreSQL server, created for a test or a benchmark run and
/// dropped (with `FORCE`: connections a killed process left behind do not keep it) when this
/// is dropped. `server` is a URL whose user may create databases.
pub struct Scratch {
    pub url: String,
    server: String,
    name: String,
}

impl Scratch {
    pub async fn create(server: &str, prefix: &str) -> anyhow::Result<Scratch> {
        use anyhow::Context as _;
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let mut url = reqwest::Url::parse(server).with_context(|| format!("{server} is not a URL"))?;
        url.set_path(&format!("/{name}"));
        let mut conn = connect(server, super::BUSY_TIMEOUT)
            .await
            .with_context(|| format!("cannot connect to {}", super::DbTarget::Postgres(server.to_owned())))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create the database {name}"))?;
        let _ = conn.close().await;
        Ok(Scratch { url: url.to_string(), server: server.to_owned(), name })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside a runtime, which cannot be blocked on: a thread of its own with
        // a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = connect(&server, super::BUSY_TIMEOUT).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            tracing::warn!(database = %self.name, "could not drop a scratch database");
        }
    }
}
