//! Retention of the event log (SPEC §16) in the database: what is due for sealing, writing it
//! to a segment of the archive ([`super::archive`]), and deleting it afterwards, a batch per
//! transaction so that the writer's commits go on in between. The leader's sealer
//! ([`crate::sealer`]) runs them in order, with the reducer logging `LogSealed` between the
//! segment and the delete.
//!
//! Entries are sealed through the newest seq that is older than `--log-retention-days`, before
//! every open rollout's first entry (its log is its history, and replays of it must stay
//! whole), at or before the newest checkpoint (start-up and replay begin there) and at or
//! before the records snapshot (the records view reads the log after it).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use engine::chain::{GENESIS, Hash};
use shared::log::LogSealed;

use super::archive::{ArchiveError, Header, SegmentWriter};
use super::{Store, chain, on_pool, store};

/// Entries sealed into one segment at most; a longer due range is sealed in several.
pub const SEGMENT_ENTRIES: i64 = 1_000_000;

/// Rows deleted per transaction.
pub const PURGE_BATCH: i64 = 2_000;

#[derive(Debug, Clone)]
pub struct Retention {
    /// Entries older than this are sealed.
    pub log: chrono::Duration,
    /// Where sealed segments are written.
    pub dir: PathBuf,
    /// How often the sealer looks.
    pub every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What bounds the sealable range, read in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The first seq the database holds.
    pub first: Option<i64>,
    /// The first entry young enough to keep.
    pub young: Option<i64>,
    /// The first entry of the oldest open rollout.
    pub open: Option<i64>,
    pub checkpoint: Option<i64>,
    pub snapshot: i64,
    pub last: i64,
}

impl Bounds {
    /// The range due: through the last entry before `young` and `open`, at or before the
    /// snapshot and (`with_checkpoint`) the newest checkpoint, never the newest entry (the
    /// next one chains to it), at most [`SEGMENT_ENTRIES`].
    pub fn range(&self, with_checkpoint: bool) -> Option<(i64, i64)> {
        let first = self.first?;
        let mut up_to = self.young.map_or(self.last - 1, |young| young - 1).min(self.snapshot).min(self.last - 1);
        if let Some(open) = self.open {
            up_to = up_to.min(open - 1);
        }
        if with_checkpoint {
            up_to = up_to.min(self.checkpoint?);
        }
        up_to = up_to.min(first.saturating_add(SEGMENT_ENTRIES - 1));
        (up_to >= first).then_some((first, up_to))
    }
}

/// The bounds of what may be sealed at `now`.
pub async fn bounds(store: &Store, retention: &Retention, now: DateTime<Utc>) -> Result<Bounds, sqlx::Error> {
    let cutoff = now.checked_sub_signed(retention.log).unwrap_or(DateTime::<Utc>::MIN_UTC);
    on_pool!(store, pool => async {
        let mut tx = pool.begin().await?;
        if store.dialect() == super::Dialect::Postgres {
            sqlx::query(store::SNAPSHOT).execute(&mut *tx).await?;
        }
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM event_log").fetch_one(&mut *tx).await?;
        // Walks from the oldest entry to the first one young enough to keep.
        let young: Option<i64> = sqlx::query_scalar("SELECT seq FROM event_log WHERE ts >= $1 ORDER BY seq LIMIT 1")
            .bind(store::ts(cutoff))
            .fetch_optional(&mut *tx)
            .await?;
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT MIN((SELECT MIN(e.seq) FROM event_log e WHERE e.rollout_id = r.rollout_id))
             FROM rollouts r WHERE r.state NOT IN ('Completed', 'Superseded')",
        )
        .fetch_one(&mut *tx)
        .await?;
        let checkpoint: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM checkpoints").fetch_one(&mut *tx).await?;
        let snapshot: i64 = sqlx::query_scalar("SELECT seq FROM record_snapshot").fetch_one(&mut *tx).await?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Bounds { first, young, open, checkpoint, snapshot, last })
    }
    .await)
}

/// The range due for sealing at `now` behind the newest checkpoint: the log's first kept seq
/// through the last sealable one.
pub async fn due(store: &Store, retention: &Retention, now: DateTime<Utc>) -> Result<Option<(i64, i64)>, sqlx::Error> {
    Ok(bounds(store, retention, now).await?.range(true))
}

/// Writes entries `first..=up_to` to a segment in `dir`, checking their chain from the hash
/// before `first`. Returns the `LogSealed` entry that records it.
pub async fn write_segment(
    store: &Store,
    dir: &std::path::Path,
    first: i64,
    up_to: i64,
) -> Result<LogSealed, RetentionError> {
    let prev = hash_before(store, first).await?;
    let mut writer = SegmentWriter::create(dir, Header { first, last: up_to, prev })?;
    let mut after = first - 1;
    loop {
        let rows = chain::rows_after(store, after, up_to).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        for row in &rows {
            writer.push(&chain::entry(row), row.7.as_deref())?;
        }
        after = end;
    }
    let (file, head) = writer.finish()?;
    Ok(LogSealed {
        from: first,
        up_to,
        entries: u64::try_from(up_to - first + 1).unwrap_or(0),
        head_hash: engine::chain::hex(&head),
        file,
    })
}

/// The chain hash of the entry before `seq`: genesis before the first, the stored hash of a
/// row still here, or the head of the seal that took it.
async fn hash_before(store: &Store, seq: i64) -> Result<Hash, RetentionError> {
    if seq <= 1 {
        return Ok(GENESIS);
    }
    let stored: Option<Option<Vec<u8>>> = on_pool!(store, pool => {
        sqlx::query_scalar("SELECT hash FROM event_log WHERE seq = $1").bind(seq - 1).fetch_optional(pool).await?
    });
    if let Some(stored) = stored {
        return chain::stored_head(Some((seq - 1, stored))).map(|(_, hash)| hash).map_err(chain_error);
    }
    match chain::sealed_head(store).await? {
        Some((up_to, head, _)) if up_to == seq - 1 => Ok(head),
        _ => Err(chain_error(format!("entry {} is gone and no seal ends at it", seq - 1))),
    }
}

fn chain_error(why: String) -> RetentionError {
    RetentionError::Db(sqlx::Error::Decode(why.into()))
}

/// Deletes the rows through `up_to`, [`PURGE_BATCH`] per transaction, yielding between
/// them so the reducer's commits are not held up. Returns how many it deleted.
pub async fn purge(store: &Store, up_to: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let first: Option<i64> = on_pool!(store, pool => {
            sqlx::query_scalar("SELECT MIN(seq) FROM event_log").fetch_one(pool).await?
        });
        let Some(first) = first.filter(|f| *f <= up_to) else { return Ok(deleted) };
        let through = first.saturating_add(PURGE_BATCH - 1).min(up_to);
        let done = on_pool!(store, pool => {
            sqlx::query("DELETE FROM event_log WHERE seq <= $1").bind(through).execute(pool).await?.rows_affected()
        });
        deleted += done;
        tokio::task::yield_now().await;
    }
}

/// The first seq the database still holds (0 when the log is empty).
pub async fn first_kept(store: &Store) -> Result<i64, sqlx::Error> {
    on_pool!(store, pool => sqlx::query_scalar("SELECT COALESCE(MIN(seq), 0) FROM event_log").fetch_one(pool).await)
}

/// Whether entries before `seq` were sealed out of the database: the seq the log now
/// begins at, if so.
pub async fn sealed_before(store: &Store, seq: i64) -> Result<Option<i64>, sqlx::Error> {
    let first = first_kept(store).await?;
    Ok((first > 1 && seq < first).then_some(first))
}
