//! The reducer's writer: the only path by which rollout state reaches the database. Each group
//! commit is one [`Batch`], handed over once and answered once with the log entries it
//! stored; batches are written in the order they were submitted. SQLite's writer is a thread
//! with a connection of its own (`sqlite.rs`), PostgreSQL's a task with one connection that
//! fences every transaction by the leader epoch (`postgres.rs`).

use std::time::Duration;

use serde::Serialize;
use shared::api::LogEvent;
use tokio::sync::{mpsc, oneshot};

use super::DbTarget;
use super::store::Batch;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("cannot encode a row: {0}")]
    Encode(#[from] serde_json::Error),
    /// The log's hash chain cannot go on (an entry that cannot be hashed, or a newest
    /// entry without a hash).
    #[error("event log chain: {0}")]
    Chain(String),
    #[error("the writer stopped")]
    Stopped,
    #[error("an earlier commit failed; this batch was built on it and is not written")]
    AfterFailure,
    /// Another replica took the lead: this one's epoch is no longer the leader row's.
    #[error("fenced: this replica led in epoch {ours}, the leader row is at epoch {current}")]
    Fenced { ours: i64, current: i64 },
}

impl WriteError {
    /// This replica is no longer the leader: reloading will not help, stepping down will.
    pub fn is_fenced(&self) -> bool {
        matches!(self, WriteError::Fenced { .. })
    }
}

/// What a commit answers: the committed log entries with their seqs.
pub type Committed = Result<Vec<LogEvent>, WriteError>;

pub(super) enum Job {
    Commit {
        batch: Box<Batch>,
        reply: oneshot::Sender<Committed>,
    },
    /// The reducer reloaded its memory from the database after a failed commit: batches
    /// from now on are built on committed state again.
    Reset,
}

/// After a failed commit every batch queued behind it was built on the changes that were not
/// written: they are refused until the reducer has reloaded and said so ([`Job::Reset`]).
#[derive(Default)]
pub(super) struct FailureGate {
    failed: bool,
}

impl FailureGate {
    pub(super) fn admit(&self) -> Result<(), WriteError> {
        if self.failed { Err(WriteError::AfterFailure) } else { Ok(()) }
    }

    pub(super) fn record(&mut self, result: &Committed) {
        self.failed |= result.is_err();
    }

    pub(super) fn reset(&mut self) {
        self.failed = false;
    }
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Result<String, WriteError> {
    Ok(serde_json::to_string(v)?)
}

/// Hands batches to the writer. It stops when the last `Writer` is dropped.
pub struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// The writer of a SQLite file.
    pub fn sqlite(path: &std::path::Path, busy_timeout: Duration) -> Result<Writer, WriteError> {
        super::sqlite::start_writer(path, busy_timeout).map(|jobs| Writer { jobs })
    }

    /// The writer of the leader of `epoch` on PostgreSQL: each transaction commits only while
    /// the leader row still holds that epoch.
    pub async fn postgres(url: &str, busy_timeout: Duration, epoch: i64) -> Result<Writer, WriteError> {
        super::postgres::start_writer(url, busy_timeout, epoch).await.map(|jobs| Writer { jobs })
    }

    /// The writer for `target` in a process that is its only writer: SQLite, or PostgreSQL at
    /// the epoch the caller leads in.
    pub async fn open(target: &DbTarget, busy_timeout: Duration, epoch: i64) -> Result<Writer, WriteError> {
        match target {
            DbTarget::Sqlite(path) => Writer::sqlite(path, busy_timeout),
            DbTarget::Postgres(url) => Writer::postgres(url, busy_timeout, epoch).await,
        }
    }

    /// Queues `batch` to be written in one transaction, after every batch queued before it;
    /// the receiver gets the committed log entries with their seqs.
    pub fn submit(&self, batch: Batch) -> oneshot::Receiver<Committed> {
        let (reply, answer) = oneshot::channel();
        // If the writer is gone the reply is dropped and the receiver reports it.
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
