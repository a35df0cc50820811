//! Checkpoints of the derived state (SPEC §16): every rollout, the records of the rollouts
//! not ended, the quarantines in force and the operators' policies at a log seq, with the
//! log's chain head there, stored as zstd-compressed JSON ([`Replayed`]).
//!
//! A checkpoint is read from the tables in one read snapshot — they are consistent with the
//! log at its last seq (every commit writes its log rows and rows together; the records view
//! covers the records written behind the log) — so taking one never pauses the reducer.
//! Replaying the entries after a checkpoint onto it gives the state replaying the whole log
//! gives ([`replay_from`]).

use chrono::{DateTime, Utc};
use engine::chain::Hash;

use super::replay::Replayed;
use super::store::{self, parse_ts};
use super::{Store, on_pool};

/// Checkpoints kept: the newest and the one before it.
const KEEP: i64 = 2;

/// zstd level: fast (a 50,000-record state is ~50 MB of JSON).
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("checkpoint at seq {seq}: {why}")]
    Body { seq: i64, why: String },
    #[error("{0}")]
    Chain(String),
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub head: Hash,
    pub state: Replayed,
}

/// A checkpoint's body being written: the JSON of a [`Replayed`], compressed as it is
/// written, records first and each as the tables hold its text — at 100,000 records the
/// records parsed and the JSON whole were each ~100 MB more for the server to hold.
struct Body {
    out: std::io::BufWriter<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    records: usize,
    failed: Option<String>,
}

/// The members of [`Replayed`] after its records, as it (de)serialises them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AfterRecords<'a> {
    rollouts: Vec<&'a engine::rollout::Rollout>,
    policies: &'a shared::policy::OperatorPolicies,
    quarantines: Vec<&'a store::QuarantineRow>,
}

impl Body {
    fn new() -> Result<Body, String> {
        let encoder = zstd::stream::write::Encoder::new(Vec::new(), LEVEL).map_err(|e| e.to_string())?;
        let mut body = Body { out: std::io::BufWriter::with_capacity(1 << 16, encoder), records: 0, failed: None };
        body.write(b"{\"records\":[");
        Ok(body)
    }

    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write as _;
        if self.failed.is_none()
            && let Err(err) = self.out.write_all(bytes)
        {
            self.failed = Some(err.to_string());
        }
    }

    /// One record, as the JSON text it is stored as.
    fn record(&mut self, json: &str) {
        if self.records > 0 {
            self.write(b",");
        }
        self.records += 1;
        self.write(json.as_bytes());
    }

    /// The rest of `state` (its records were written one by one); the compressed body.
    fn finish(mut self, state: &Replayed) -> Result<Vec<u8>, String> {
        let rest = AfterRecords {
            rollouts: state.rollouts.values().collect(),
            policies: &state.policies,
            quarantines: state.quarantines.values().collect(),
        };
        let rest = serde_json::to_string(&rest).map_err(|e| e.to_string())?;
        self.write(b"],");
        self.write(rest.strip_prefix('{').unwrap_or(&rest).as_bytes());
        if let Some(err) = self.failed {
            return Err(err);
        }
        let encoder = self.out.into_inner().map_err(|e| e.to_string())?;
        encoder.finish().map_err(|e| e.to_string())
    }
}

fn decode(body: &[u8]) -> Result<Replayed, String> {
    let json = zstd::stream::decode_all(body).map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// Takes a checkpoint of the committed state at the log's last seq, unless the log is empty
/// or the newest checkpoint is already there; keeps the newest [`KEEP`]. Returns its seq.
pub async fn take(store: &Store, now: DateTime<Utc>) -> Result<Option<i64>, CheckpointError> {
    let newest: Option<i64> = on_pool!(store, pool => {
        sqlx::query_scalar("SELECT MAX(seq) FROM checkpoints").fetch_one(pool).await?
    });
    let last = store::last_seq(store).await?;
    if last <= newest.unwrap_or(0) {
        return Ok(None);
    }
    // Named by the last seq seen so far (the snapshot read next may end a little later).
    let mut body = Body::new().map_err(|why| CheckpointError::Body { seq: last, why })?;
    let (head, state) = super::replay::read_tables(store, &mut |json, _| body.record(json)).await?;
    let Some(head) = head else { return Ok(None) };
    let (seq, head) = super::chain::stored_head(Some(head)).map_err(CheckpointError::Chain)?;
    let body = body.finish(&state).map_err(|why| CheckpointError::Body { seq, why })?;
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO checkpoints (seq, at, hash, body) VALUES ($1, $2, $3, $4) ON CONFLICT (seq) DO NOTHING")
            .bind(seq)
            .bind(store::ts(now))
            .bind(head.as_slice())
            .bind(&body)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM checkpoints WHERE seq NOT IN (SELECT seq FROM checkpoints ORDER BY seq DESC LIMIT $1)")
            .bind(KEEP)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(Some(seq))
}

/// The newest checkpoint, if any.
pub async fn newest(store: &Store) -> Result<Option<Checkpoint>, CheckpointError> {
    let row: Option<(i64, String, Vec<u8>, Vec<u8>)> = on_pool!(store, pool => {
        sqlx::query_as("SELECT seq, at, hash, body FROM checkpoints ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?
    });
    let Some((seq, at, hash, body)) = row else { return Ok(None) };
    let head = Hash::try_from(hash.as_slice())
        .map_err(|_| CheckpointError::Body { seq, why: "its chain head is not 32 bytes".into() })?;
    let state = decode(&body).map_err(|why| CheckpointError::Body { seq, why })?;
    Ok(Some(Checkpoint { seq, at: parse_ts(&at)?, head, state }))
}

/// The state at the log's end: `checkpoint` with every entry after it replayed onto it,
/// records of ended rollouts forgotten.
pub async fn replay_from(store: &Store, checkpoint: Checkpoint) -> Result<Replayed, CheckpointError> {
    let mut state = checkpoint.state;
    let mut after = checkpoint.seq;
    loop {
        let entries = store::log_after(store, after, 5_000).await?;
        let Some(last) = entries.last().map(|e| e.seq) else { break };
        for e in &entries {
            state.apply(e).map_err(|why| CheckpointError::Body { seq: checkpoint.seq, why })?;
        }
        after = last;
    }
    state.prune();
    Ok(state)
}

/// When the leader checkpoints: after this many entries, or this long, since the last one.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    pub entries: u64,
    pub interval: std::time::Duration,
}

/// The leader's checkpointer: looks every minute (or every interval, if shorter) and takes a
/// checkpoint when one is due. A failure is logged and tried again at the next look; the loop
/// ends only with `token`.
pub async fn run(store: Store, every: Every, clock: crate::clock::Clock, token: tokio_util::sync::CancellationToken) {
    let look = every.interval.min(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(look) => {}
        }
        match due(&store, every, clock.now()).await {
            Ok(false) => {}
            Ok(true) => match take(&store, clock.now()).await {
                Ok(Some(seq)) => tracing::info!(seq, "checkpoint taken"),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "cannot take a checkpoint; trying again later"),
            },
            Err(err) => tracing::warn!(%err, "cannot tell whether a checkpoint is due; trying again later"),
        }
    }
}

/// Whether a checkpoint is due at `now`.
async fn due(store: &Store, every: Every, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let last = store::last_seq(store).await?;
    let newest: Option<(i64, String)> = on_pool!(store, pool => {
        sqlx::query_as("SELECT seq, at FROM checkpoints ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?
    });
    let Some((seq, at)) = newest else { return Ok(last > 0) };
    let since = u64::try_from(last.saturating_sub(seq)).unwrap_or(0);
    let age = now.signed_duration_since(parse_ts(&at)?).to_std().unwrap_or_default();
    Ok(since >= every.entries || (since > 0 && age >= every.interval))
}
