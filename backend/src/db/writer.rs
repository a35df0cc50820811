//! The reducer's writer: one synchronous SQLite connection (rusqlite) on a thread of its own.
//!
//! Each group commit is handed over once and answered once. Through sqlx, every statement of
//! a group was a round trip to sqlx's connection thread; at a few thousand events per second
//! those hand-offs cost more than SQLite's own work (BENCHMARKS.md, issue 7). Reads stay on
//! the sqlx pool; this connection is the only writer of rollout state.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, params};
use serde::Serialize;
use tokio::sync::oneshot;

use super::store::{Batch, ManifestWrite, QuarantineChange, RECORDS_WRITTEN_THROUGH_LOG, ts};
use shared::api::LogEvent;
use shared::{Channel, Closure, Hostname, RolloutId};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode a row: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the writer thread stopped")]
    Stopped,
    #[error("an earlier commit failed; this batch was built on it and is not written")]
    AfterFailure,
}

/// What a commit answers: the committed log entries with their seqs.
pub type Committed = Result<Vec<LogEvent>, WriteError>;

enum Job {
    Commit {
        batch: Box<Batch>,
        reply: oneshot::Sender<Committed>,
    },
    /// The reducer reloaded its memory from the database after a failed commit: batches
    /// from now on are built on committed state again.
    Reset,
}

/// Hands batches to the writer thread. The thread ends when the last `Writer` is dropped.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Opens a connection with the control plane's settings (the schema must exist: `db::open`
/// has run the migrations).
pub fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    connect_with(path, super::BUSY_TIMEOUT)
}

fn connect_with(path: &Path, busy_timeout: std::time::Duration) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Writer {
    pub fn open(path: &Path) -> Result<Writer, WriteError> {
        Self::open_with(path, super::BUSY_TIMEOUT)
    }

    /// [`Writer::open`] with another busy timeout.
    pub fn open_with(path: &Path, busy_timeout: std::time::Duration) -> Result<Writer, WriteError> {
        let mut conn = connect_with(path, busy_timeout)?;
        // Checkpoints (copying the WAL into the database file, with fsyncs) mostly happen on a
        // thread of their own, not after a commit the reducer waits for. That thread cannot
        // finish a checkpoint while commits keep coming, and only a finished one lets the WAL
        // start over, so the writer still checkpoints itself once the WAL passes
        // `WAL_LIMIT_PAGES` (by then little is left to copy) and the file is cut back to
        // `WAL_KEEP_BYTES` when it restarts. (Without this the WAL grew by ~100 MB/s under
        // sustained load.)
        conn.pragma_update(None, "wal_autocheckpoint", WAL_LIMIT_PAGES)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        // Host records and the log's indexes are updated at random places; with SQLite's
        // default 2 MiB cache those pages were read back from the OS (pread was 3 % of the
        // server's CPU under load).
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        let checkpoints = connect_with(path, busy_timeout)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (alive, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("fleetwave-writer".into())
            .spawn(move || {
                let _alive = alive;
                // After a failed commit every batch queued behind it was built on the changes
                // that were not written: refuse them until the reducer has reloaded.
                let mut failed = false;
                for job in rx {
                    match job {
                        Job::Reset => failed = false,
                        Job::Commit { batch, reply } => {
                            let result = if failed { Err(WriteError::AfterFailure) } else { commit(&mut conn, *batch) };
                            failed |= result.is_err();
                            let _ = reply.send(result);
                        }
                    }
                }
            })
            .map_err(|_| WriteError::Stopped)?;
        std::thread::Builder::new()
            .name("fleetwave-checkpoint".into())
            .spawn(move || checkpoint_until_stopped(&checkpoints, &stopped))
            .map_err(|_| WriteError::Stopped)?;
        Ok(Writer { jobs })
    }

    /// Queues `batch` to be written in one transaction, after every batch queued before it;
    /// the receiver gets the committed log entries with their seqs.
    pub fn submit(&self, batch: Batch) -> oneshot::Receiver<Committed> {
        let (reply, answer) = oneshot::channel();
        // If the thread is gone the reply is dropped and the receiver reports it.
        let _ = self.jobs.send(Job::Commit { batch: Box::new(batch), reply });
        answer
    }

    /// Writes `batch` and waits for the outcome.
    pub async fn commit(&self, batch: Batch) -> Committed {
        self.submit(batch).await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Accept batches again after a failed commit (the caller has reloaded its memory).
    pub fn reset(&self) {
        let _ = self.jobs.send(Job::Reset);
    }
}

/// The writer's page cache (KiB).
const CACHE_KIB: i64 = 16 * 1024;

/// WAL pages (4 KiB) after which the writer checkpoints itself: 256 MiB. That checkpoint
/// stalls every commit behind it for the fsyncs (~10 ms on this machine's disk, in the
/// kernel's writeback throttling); at 32 MiB it came every half second under sustained
/// events, and event p99 was 25–31 ms against 16–17 ms now (BENCHMARKS.md).
const WAL_LIMIT_PAGES: i64 = 65_536;
/// Size the WAL file is truncated to when it restarts.
const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;

/// How often the WAL is copied into the database file while the writer runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Passive checkpoints (they never block the writer or readers) until the writer thread
/// ends, then a last one that also empties the WAL file.
fn checkpoint_until_stopped(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| {
        if let Err(err) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(%err, "WAL checkpoint failed; the next one retries");
        }
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        checkpoint("PASSIVE");
    }
    checkpoint("TRUNCATE");
}

fn to_json<T: Serialize>(v: &T) -> Result<String, WriteError> {
    Ok(serde_json::to_string(v)?)
}

fn commit(conn: &mut Connection, batch: Batch) -> Committed {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let tx = conn.transaction()?;
    if let Some(ManifestWrite { fleet, fleet_hash, manifests, at }) = &batch.manifests {
        tx.prepare_cached(
            "INSERT INTO manifest_fleet (id, artifact, fleet_hash, received_at) VALUES (1, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET artifact = excluded.artifact, fleet_hash = excluded.fleet_hash, received_at = excluded.received_at",
        )?
        .execute(params![to_json(fleet)?, fleet_hash, ts(*at)])?;
        tx.execute("DELETE FROM manifest_rollouts", [])?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO manifest_rollouts (rollout_id, artifact, received_at, accepted) VALUES (?, ?, ?, ?)",
        )?;
        // In acceptance order: the position is what breaks a tie of signing times.
        for (position, (id, artifact)) in manifests.iter().enumerate() {
            insert.execute(params![id.as_str(), to_json(artifact)?, ts(*at), position as i64])?;
        }
    }
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO rollouts (rollout_id, channel, state, current_wave, opened_seq, body) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (rollout_id) DO UPDATE SET state = excluded.state, current_wave = excluded.current_wave, body = excluded.body",
        )?;
        for r in &batch.rollouts {
            let values = (r.id.as_str(), r.channel.as_str(), r.state.as_str(), i64::from(r.current_wave));
            upsert.execute(params![values.0, values.1, values.2, values.3, r.opened_seq as i64, to_json(r)?])?;
        }
    }
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO host_records (rollout_id, hostname, state, body) VALUES (?, ?, ?, ?)
             ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body",
        )?;
        for r in &batch.records {
            upsert.execute(params![r.rollout_id.as_str(), r.hostname.as_str(), r.state, r.body.get()])?;
        }
    }
    for change in &batch.quarantines {
        match change {
            QuarantineChange::Add(q) => {
                tx.prepare_cached(
                    "INSERT INTO quarantines (channel, closure, reason, by_whom, at) VALUES (?, ?, ?, ?, ?)",
                )?
                .execute(params![q.channel.as_str(), q.closure.as_str(), q.reason, q.by, ts(q.at)])?;
            }
            QuarantineChange::Release { channel, closure, by, reason, at } => {
                tx.prepare_cached(
                    "UPDATE quarantines SET released_at = ?, released_by = ?, release_reason = ?
                     WHERE channel = ? AND closure = ? AND released_at IS NULL",
                )?
                .execute(params![ts(*at), by, reason, channel.as_str(), closure.as_str()])?;
            }
        }
    }
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO host_presence (hostname, last_heartbeat_at, current_closure) VALUES (?, ?, ?)
             ON CONFLICT (hostname) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at, current_closure = excluded.current_closure",
        )?;
        for (host, at, closure) in &batch.presence {
            upsert.execute(params![host.as_str(), ts(*at), closure.as_ref().map(Closure::as_str)])?;
        }
    }
    let mut entries = Vec::with_capacity(batch.log.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO event_log (ts, kind, rollout_id, host, channel, payload) VALUES (?, ?, ?, ?, ?, ?)",
        )?;
        for row in batch.log {
            insert.execute(params![
                ts(row.ts),
                row.kind.as_str(),
                row.rollout_id.as_ref().map(RolloutId::as_str),
                row.host.as_ref().map(Hostname::as_str),
                row.channel.as_ref().map(Channel::as_str),
                row.payload.get()
            ])?;
            entries.push(LogEvent {
                seq: tx.last_insert_rowid(),
                ts: row.ts,
                kind: row.kind,
                rollout_id: row.rollout_id,
                host: row.host,
                channel: row.channel,
                payload: row.payload,
            });
        }
    }
    if batch.records_through {
        tx.prepare_cached(RECORDS_WRITTEN_THROUGH_LOG)?.execute([])?;
    }
    tx.commit()?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use shared::log::{LogEntry, WaveApproved};

    use super::*;
    use crate::db::store::{LogRow, log_after};

    fn entry(i: usize) -> LogEntry {
        LogEntry::WaveApproved(WaveApproved { wave: i as u32 })
    }

    fn row(i: usize) -> LogRow {
        let entry = entry(i);
        LogRow {
            ts: Utc::now(),
            kind: entry.kind(),
            rollout_id: None,
            host: None,
            channel: None,
            payload: crate::db::store::payload(&entry.payload()),
        }
    }

    async fn fresh() -> (tempfile::TempDir, sqlx::SqlitePool, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pool = crate::db::open(&path).await.unwrap();
        let writer = Writer::open(&path).unwrap();
        (dir, pool, writer)
    }

    #[tokio::test]
    async fn a_batch_answers_the_seqs_its_rows_were_stored_under() {
        let (_dir, pool, writer) = fresh().await;
        let first = writer.commit(Batch { log: (0..3).map(row).collect(), ..Default::default() }).await.unwrap();
        let second = writer.commit(Batch { log: (3..600).map(row).collect(), ..Default::default() }).await.unwrap();
        let answered: Vec<LogEvent> = first.into_iter().chain(second).collect();
        assert_eq!(answered.len(), 600);
        let key = |e: &LogEvent| (e.seq, e.payload.get().to_owned());
        let stored: Vec<_> = log_after(&pool, 0, 10_000).await.unwrap().iter().map(key).collect();
        assert!(answered.iter().map(key).eq(stored), "the answered seqs differ from the stored ones");
        for (i, event) in answered.iter().enumerate() {
            assert_eq!(event.entry().unwrap(), entry(i), "row {i} came back under seq {}", event.seq);
        }
    }

    #[tokio::test]
    async fn a_failing_batch_writes_nothing_nor_anything_queued_behind_it_until_reset() {
        let (_dir, pool, writer) = fresh().await;
        let log = vec![row(0)];
        // A record of a rollout that does not exist breaks the foreign key after the log row
        // was queued: the whole transaction must roll back.
        let record = engine::host::HostRecord::pending(
            RolloutId::parse("nope@1").unwrap(),
            Hostname::parse("h").unwrap(),
            Channel::parse("nope").unwrap(),
            Closure::parse("/nix/store/00000000000000000000000000000000-x").unwrap(),
            Utc::now(),
        );
        let records = vec![crate::db::store::RecordRow::new(&record)];
        let failing = writer.submit(Batch { log, records, ..Default::default() });
        // Queued behind the failing batch (built on its changes): refused, not written.
        let behind = writer.submit(Batch { log: vec![row(1)], ..Default::default() });
        assert!(matches!(failing.await.unwrap(), Err(WriteError::Sqlite(_))));
        assert!(matches!(behind.await.unwrap(), Err(WriteError::AfterFailure)));
        assert!(log_after(&pool, 0, 10).await.unwrap().is_empty());
        // After a reset (the reducer reloaded), batches are written again.
        writer.reset();
        let written = writer.commit(Batch { log: vec![row(2)], ..Default::default() }).await.unwrap();
        assert_eq!(log_after(&pool, 0, 10).await.unwrap().len(), written.len());
    }
}
