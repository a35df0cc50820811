//! SQLite: the pool reads go through, and the reducer's writer — one synchronous connection
//! (rusqlite) on a thread of its own.
//!
//! Each group commit is handed over once and answered once. Through sqlx, every statement of
//! a group was a round trip to sqlx's connection thread; at a few thousand events per second
//! those hand-offs cost more than SQLite's own work (BENCHMARKS.md, issue 7). Reads stay on
//! the sqlx pool; this connection is the only writer of rollout state.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;

use super::DbError;
use super::chain;
use super::store::{Batch, ManifestWrite, QuarantineChange, RECORDS_WRITTEN_THROUGH_LOG, signature_row, ts};
use super::writer::{Committed, FailureGate, Job, WriteError, to_json};
use shared::{Channel, Closure, Hostname, RolloutId};

/// Opens (creating if missing) the database at `path` and brings its schema up to date.
pub async fn open(path: &Path, busy_timeout: Duration) -> Result<SqlitePool, DbError> {
    let target = path.display().to_string();
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Open { target: target.clone(), source })?;
    sqlx::migrate!("../migrations/sqlite").run(&pool).await.map_err(|source| DbError::Migrate { target, source })?;
    Ok(pool)
}

/// Opens a connection with the control plane's settings (the schema must exist: [`open`] has
/// run the migrations).
pub fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    connect_with(path, super::BUSY_TIMEOUT)
}

fn connect_with(path: &Path, busy_timeout: Duration) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the writer thread on `path`: it takes jobs until every sender is dropped.
pub(super) fn start_writer(path: &Path, busy_timeout: Duration) -> Result<mpsc::UnboundedSender<Job>, WriteError> {
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
    let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
    let (alive, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("fleetwave-writer".into())
        .spawn(move || {
            let _alive = alive;
            let mut gate = FailureGate::default();
            let mut keys = KeysBehind::default();
            while let Some(job) = keys.next_job(&mut conn, &mut rx) {
                match job {
                    Job::Reset => gate.reset(),
                    Job::Commit { batch, reply } => {
                        let result = gate.admit().and_then(|()| commit(&mut conn, *batch));
                        gate.record(&result);
                        let written = result.as_ref().map_or(0, Vec::len);
                        let _ = reply.send(result);
                        keys.after_commit(&mut conn, written);
                    }
                }
            }
            keys.copy_all(&mut conn);
        })
        .map_err(|_| WriteError::Stopped)?;
    std::thread::Builder::new()
        .name("fleetwave-checkpoint".into())
        .spawn(move || checkpoint_until_stopped(&checkpoints, &stopped))
        .map_err(|_| WriteError::Stopped)?;
    Ok(jobs)
}

/// The log's keys not yet copied into `log_keys` (migration 0019): a round of copying starts
/// once this many rows are waiting, or [`KEYS_EVERY`] after the last round ended.
pub(super) const KEYS_BATCH: usize = 4096;
const KEYS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Rows a copy takes at a time: a commit that arrives while one runs waits for at most this
/// many rows' index updates (a whole batch at once held commits up for ~10 ms: BENCHMARKS.md).
const KEYS_SLICE: usize = 512;
/// Rows waiting at which slices are copied after every commit, the queue idle or not, so the
/// tail readers scan stays bounded while commits follow each other without pause.
const KEYS_BEHIND_AT_MOST: usize = 4 * KEYS_BATCH;

/// Copies the committed rows' keys into `log_keys` behind the log, in slices the writer takes
/// while no commit waits for it. A copy that fails leaves the rows in the tail readers scan,
/// and the next round (after as many rows again, or a second) takes them.
struct KeysBehind {
    waiting: usize,
    /// A round is under way: slices are copied whenever the queue is empty.
    due: bool,
    ended_at: std::time::Instant,
}

impl Default for KeysBehind {
    fn default() -> Self {
        // Rows left from before a start are taken by the first round.
        KeysBehind { waiting: 1, due: false, ended_at: std::time::Instant::now() }
    }
}

impl KeysBehind {
    /// The next job; while a round is under way and none is queued, copies slices until
    /// one comes or the round ends. `None` once every sender is gone.
    fn next_job(&mut self, conn: &mut Connection, rx: &mut mpsc::UnboundedReceiver<Job>) -> Option<Job> {
        while self.due {
            match rx.try_recv() {
                Ok(job) => return Some(job),
                Err(mpsc::error::TryRecvError::Empty) => self.copy_slice(conn),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
            }
        }
        rx.blocking_recv()
    }

    fn after_commit(&mut self, conn: &mut Connection, written: usize) {
        self.waiting += written;
        if self.waiting >= KEYS_BATCH || (self.waiting > 0 && self.ended_at.elapsed() >= KEYS_EVERY) {
            self.due = true;
        }
        while self.due && self.waiting >= KEYS_BEHIND_AT_MOST {
            self.copy_slice(conn);
        }
    }

    /// Copies the next [`KEYS_SLICE`] rows' keys; a shorter slice (or a failed one) ends the round.
    fn copy_slice(&mut self, conn: &mut Connection) {
        match conn.prepare_cached(COPY_KEYS_SLICE).and_then(|mut copy| copy.execute(params![KEYS_SLICE as i64])) {
            Ok(copied) if copied == KEYS_SLICE => self.waiting = self.waiting.saturating_sub(copied),
            Ok(_) => self.end_round(),
            Err(err) => {
                tracing::warn!(%err, "copying the log's keys failed; readers scan them in the tail until the next copy");
                self.end_round();
            }
        }
    }

    fn end_round(&mut self) {
        self.waiting = 0;
        self.due = false;
        self.ended_at = std::time::Instant::now();
    }

    /// Copies every key still waiting (as the writer stops).
    fn copy_all(&mut self, conn: &mut Connection) {
        if let Err(err) = conn.prepare_cached(COPY_KEYS).and_then(|mut copy| copy.execute([])) {
            tracing::warn!(%err, "copying the log's keys failed; the next start's readers scan them in the tail");
        }
        self.end_round();
    }
}

/// The statement that copies the keys of the log rows not in `log_keys` yet.
macro_rules! copy_keys {
    () => {
        "INSERT INTO log_keys (seq, rollout_id, host)
         SELECT seq, rollout_id, host FROM event_log WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM log_keys)"
    };
}

/// Copies the keys of every log row not in `log_keys` yet.
pub(super) const COPY_KEYS: &str = copy_keys!();

/// Copies the keys of the next `?` log rows not in `log_keys` yet.
const COPY_KEYS_SLICE: &str = concat!(copy_keys!(), " ORDER BY seq LIMIT ?");

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
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Passive checkpoints (they never block the writer or readers) until the writer thread
/// ends, then a last one that also empties the WAL file.
fn checkpoint_until_stopped(conn: &Connection, stopped: &std::sync::mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| {
        if let Err(err) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(%err, "WAL checkpoint failed; the next one retries");
        }
    };
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        checkpoint("PASSIVE");
    }
    checkpoint("TRUNCATE");
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
    if let Some(body) = &batch.policies {
        tx.prepare_cached(
            "INSERT INTO policies (id, body) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )?
        .execute(params![body])?;
    }
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO host_presence (hostname, last_heartbeat_at, current_closure, booted_closure) VALUES (?, ?, ?, ?)
             ON CONFLICT (hostname) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at,
               current_closure = excluded.current_closure, booted_closure = excluded.booted_closure",
        )?;
        for p in &batch.presence {
            upsert.execute(params![
                p.host.as_str(),
                ts(p.at),
                p.closure.as_ref().map(Closure::as_str),
                p.booted.as_ref().map(Closure::as_str)
            ])?;
        }
    }
    if !batch.signatures.is_empty() {
        let (keys, expires) = signature_row(&batch.signatures);
        tx.prepare_cached("INSERT INTO agent_signatures (expires_at, keys) VALUES (?, ?)")?
            .execute(params![expires, keys])?;
    }
    if let Some(before) = batch.signatures_expire_before {
        tx.prepare_cached("DELETE FROM agent_signatures WHERE expires_at < ?")?.execute(params![before])?;
    }
    let mut entries = Vec::with_capacity(batch.log.len());
    {
        // Each row chains to the one before it (SPEC §16): the head is read in this
        // transaction, so it is the committed one whatever failed before.
        let (mut seq, mut prev) = if batch.log.is_empty() {
            (0, engine::chain::GENESIS)
        } else {
            let newest = tx.query_row(chain::HEAD, [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            chain::stored_head(newest).map_err(WriteError::Chain)?
        };
        let mut insert = tx.prepare_cached(
            "INSERT INTO event_log (seq, ts, kind, rollout_id, host, channel, payload, record_state, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for row in batch.log {
            seq += 1;
            let at = ts(row.ts);
            prev = chain::hash_row(&row, seq, &at, &prev).map_err(WriteError::Chain)?;
            insert.execute(params![
                seq,
                at,
                row.kind.as_str(),
                row.rollout_id.as_ref().map(RolloutId::as_str),
                row.host.as_ref().map(Hostname::as_str),
                row.channel.as_ref().map(Channel::as_str),
                row.payload.get(),
                row.record_state.map(shared::state::HostState::as_str),
                prev.as_slice()
            ])?;
            entries.push(row.committed(seq));
        }
    }
    if batch.records_through {
        tx.prepare_cached(RECORDS_WRITTEN_THROUGH_LOG)?.execute([])?;
    }
    tx.commit()?;
    Ok(entries)
}
