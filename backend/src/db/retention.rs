//! Retention of the event log (SPEC §16) in the database: what is due, writing it to a
//! segment of the archive ([`super::archive`]), and deleting it afterwards in small
//! transactions so that the writer's commits go on in between. The leader's sealer
//! ([`crate::sealer`]) runs them in order, with the reducer logging `LogCompacted` or
//! `LogSealed` between the segment and the delete.
//!
//! - **Sealing**: entries are sealed through the newest seq older than
//!   `--log-retention-days`, before every open rollout's first entry (its log is its history,
//!   and replays of it must stay whole).
//! - **Compacting observations**: repeated probe results (`HostEvent`s marked `repeated`)
//!   and presence changes older than `--observation-retention-days` leave sooner: their
//!   records are carried whole by later entries, and the presence table keeps each host's.
//!
//! Both stop at or before the newest checkpoint (start-up and replay begin there) and the
//! records snapshot (the records view reads the log after it), and never take the newest
//! entry (the next one chains to it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use engine::chain::{GENESIS, Hash};
use shared::log::{LogCompacted, LogKind, LogSealed};
use shared::{Channel, RolloutId};

use super::archive::{ArchiveError, Header, SegmentKind, SegmentReader, SegmentWriter};
use super::{Store, chain, on_pool, store};

/// Entries sealed into one segment at most; a longer due range is sealed in several.
pub const SEGMENT_ENTRIES: i64 = 1_000_000;

/// Seqs deleted per transaction, and the pause after each: short transactions with room
/// between them for the writer's commits, which wait on SQLite's write lock behind each.
pub const PURGE_BATCH: i64 = 500;
const PURGE_PAUSE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct Retention {
    /// Entries older than this are sealed.
    pub log: chrono::Duration,
    /// Observations older than this are compacted.
    pub observations: chrono::Duration,
    /// Where segments are written.
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

/// Whether a stored entry is an observation compaction may take.
pub fn is_observation(kind: &str, payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Repeated {
        #[serde(default)]
        repeated: bool,
    }
    match kind.parse::<LogKind>() {
        Ok(LogKind::HostEvent) => serde_json::from_str::<Repeated>(payload).is_ok_and(|p| p.repeated),
        Ok(kind) => LogKind::OBSERVATIONS.contains(&kind),
        Err(_) => false,
    }
}

/// What bounds what may leave the database, read in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Where the next seal begins: after the newest seal (1 when nothing was sealed).
    pub first: i64,
    /// Where the next compaction begins: after the newest one, or the next seal's first.
    pub compact_from: i64,
    /// The first entry young enough to keep whole, and to keep as an observation.
    pub young: Option<i64>,
    pub young_observations: Option<i64>,
    /// The first entry of the oldest open rollout.
    pub open: Option<i64>,
    pub checkpoint: Option<i64>,
    pub snapshot: i64,
    pub last: i64,
}

impl Bounds {
    fn behind(&self, young: Option<i64>, with_checkpoint: bool) -> Option<i64> {
        let mut up_to = young.map_or(self.last - 1, |young| young - 1).min(self.snapshot).min(self.last - 1);
        if with_checkpoint {
            up_to = up_to.min(self.checkpoint?);
        }
        Some(up_to)
    }

    /// The range due for sealing: through the last entry before `young` and `open`, at
    /// most [`SEGMENT_ENTRIES`] (and, `with_checkpoint`, at or before the checkpoint).
    pub fn seal(&self, with_checkpoint: bool) -> Option<(i64, i64)> {
        let mut up_to = self.behind(self.young, with_checkpoint)?;
        if let Some(open) = self.open {
            up_to = up_to.min(open - 1);
        }
        up_to = up_to.min(self.first.saturating_add(SEGMENT_ENTRIES - 1));
        (up_to >= self.first).then_some((self.first, up_to))
    }

    /// The range due for compacting observations.
    pub fn compact(&self, with_checkpoint: bool) -> Option<(i64, i64)> {
        let up_to = self
            .behind(self.young_observations, with_checkpoint)?
            .min(self.compact_from.saturating_add(SEGMENT_ENTRIES - 1));
        (up_to >= self.compact_from).then_some((self.compact_from, up_to))
    }
}

/// The bounds of what may leave the database at `now`.
pub async fn bounds(store: &Store, retention: &Retention, now: DateTime<Utc>) -> Result<Bounds, sqlx::Error> {
    let cutoff = |keep: chrono::Duration| store::ts(now.checked_sub_signed(keep).unwrap_or(DateTime::<Utc>::MIN_UTC));
    let first = log_begins(store).await?;
    let compact_from =
        chain::compactions(store, 1).await?.first().map_or(first, |c| c.up_to.saturating_add(1)).max(first);
    // Walks from where the seal or the compaction goes on to the first entry young enough
    // to keep (what lies before was archived already).
    let young_sql = "SELECT seq FROM event_log WHERE seq >= $2 AND ts >= $1 ORDER BY seq LIMIT 1";
    // The first entry of the open rollout that opened first.
    let open_sql = format!(
        "SELECT MIN((SELECT MIN(seq) FROM ({}) AS first)) FROM rollouts r WHERE r.state NOT IN ('Completed', 'Superseded')",
        store::keyed_seqs(store::LogKey::Rollout, "r.rollout_id", "true", store::LogEnd::Oldest, "1")
    );
    on_pool!(store, pool => async {
        let mut tx = pool.begin().await?;
        if store.dialect() == super::Dialect::Postgres {
            sqlx::query(store::SNAPSHOT).execute(&mut *tx).await?;
        }
        let young: Option<i64> =
            sqlx::query_scalar(young_sql).bind(cutoff(retention.log)).bind(first).fetch_optional(&mut *tx).await?;
        let young_observations: Option<i64> =
            sqlx::query_scalar(young_sql)
                .bind(cutoff(retention.observations))
                .bind(compact_from)
                .fetch_optional(&mut *tx)
                .await?;
        let open: Option<i64> = sqlx::query_scalar(&open_sql).fetch_one(&mut *tx).await?;
        let checkpoint: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM checkpoints").fetch_one(&mut *tx).await?;
        let snapshot: i64 = sqlx::query_scalar("SELECT seq FROM record_snapshot").fetch_one(&mut *tx).await?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Bounds { first, compact_from, young, young_observations, open, checkpoint, snapshot, last })
    }
    .await)
}

/// The newest entry the database holds at or before `seq` (a seal ends on one).
pub async fn present_at_or_before(store: &Store, seq: i64) -> Result<Option<i64>, sqlx::Error> {
    on_pool!(store, pool => {
        sqlx::query_scalar("SELECT MAX(seq) FROM event_log WHERE seq <= $1").bind(seq).fetch_one(pool).await
    })
}

/// Writes the database's entries `first..=up_to` to a sealed segment in `dir`, checking their
/// chain from the hash before `first` (across gaps of compacted observations). Returns the
/// `LogSealed` entry that records it. `up_to` must be an entry the database holds.
pub async fn write_segment(store: &Store, dir: &Path, first: i64, up_to: i64) -> Result<LogSealed, RetentionError> {
    let prev = hash_before(store, first).await?;
    let header = Header { kind: SegmentKind::Log, first, last: up_to, prev: Some(prev) };
    let mut writer = SegmentWriter::create(dir, header, chain::compacted(store).await?)?;
    let mut after = first - 1;
    loop {
        let rows = chain::rows_after(store, after, up_to).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        for row in &rows {
            writer.push(&chain::entry(row), row.7.as_deref())?;
        }
        after = end;
    }
    let (file, head, entries) = writer.finish()?;
    Ok(LogSealed { from: first, up_to, entries, head_hash: engine::chain::hex(&head), file })
}

/// Writes the observations among the database's entries `from..=up_to` to an observations
/// segment in `dir` (none when there are none). Returns the `LogCompacted` entry that
/// records it.
pub async fn write_observations(
    store: &Store,
    dir: &Path,
    from: i64,
    up_to: i64,
) -> Result<LogCompacted, RetentionError> {
    let header = Header { kind: SegmentKind::Observations, first: from, last: up_to, prev: None };
    let mut writer = SegmentWriter::create(dir, header, Default::default())?;
    let mut after = from - 1;
    loop {
        let rows = chain::rows_after(store, after, up_to).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        for row in rows.iter().filter(|r| is_observation(&r.2, &r.6)) {
            writer.push(&chain::entry(row), row.7.as_deref())?;
        }
        after = end;
    }
    if writer.entries() == 0 {
        writer.abandon();
        return Ok(LogCompacted { from, up_to, entries: 0, file: None });
    }
    let (file, _, entries) = writer.finish()?;
    Ok(LogCompacted { from, up_to, entries, file: Some(file) })
}

/// The chain hash of the entry before `seq`: genesis before the first, the head of the seal
/// that ends there, or the stored hash of a row still here.
async fn hash_before(store: &Store, seq: i64) -> Result<Hash, RetentionError> {
    if seq <= 1 {
        return Ok(GENESIS);
    }
    if let Some((up_to, head, _)) = chain::sealed_head(store).await?
        && up_to == seq - 1
    {
        return Ok(head);
    }
    let stored: Option<Option<Vec<u8>>> = on_pool!(store, pool => {
        sqlx::query_scalar("SELECT hash FROM event_log WHERE seq = $1").bind(seq - 1).fetch_optional(pool).await?
    });
    let stored = stored.ok_or_else(|| chain_error(format!("entry {} is gone and no seal ends at it", seq - 1)))?;
    chain::stored_head(Some((seq - 1, stored))).map(|(_, hash)| hash).map_err(chain_error)
}

fn chain_error(why: String) -> RetentionError {
    RetentionError::Db(sqlx::Error::Decode(why.into()))
}

/// Deletes the rows through `up_to`, [`PURGE_BATCH`] seqs per transaction with a pause
/// between them so the reducer's commits are not held up. Returns how many it deleted.
pub async fn purge(store: &Store, up_to: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let first = first_kept(store).await?;
        if first == 0 || first > up_to {
            return Ok(deleted);
        }
        let through = first.saturating_add(PURGE_BATCH - 1).min(up_to);
        deleted += on_pool!(store, pool => {
            sqlx::query("DELETE FROM event_log WHERE seq <= $1").bind(through).execute(pool).await?.rows_affected()
        });
        tokio::time::sleep(PURGE_PAUSE).await;
    }
}

/// Deletes the entries an observations segment holds (those still in the database), a batch
/// of seqs per transaction. Returns how many it deleted.
pub async fn purge_observations(store: &Store, dir: &Path, file: &str) -> Result<u64, RetentionError> {
    let segment = super::archive::list(dir)?
        .into_iter()
        .find(|s| s.name() == file)
        .ok_or_else(|| chain_error(format!("{file} is not in the archive {}", dir.display())))?;
    let mut seqs = Vec::new();
    let mut reader = SegmentReader::open(&segment)?;
    while let Some(line) = reader.next_line()? {
        seqs.push(line.seq);
    }
    let mut deleted = 0;
    for batch in seqs.chunks(PURGE_BATCH as usize) {
        let sql = format!("DELETE FROM event_log WHERE seq IN ({})", store::marks(1, batch.len()));
        deleted += on_pool!(store, pool => {
            let mut query = sqlx::query(&sql);
            for seq in batch {
                query = query.bind(seq);
            }
            query.execute(pool).await?.rows_affected()
        });
        tokio::time::sleep(PURGE_PAUSE).await;
    }
    Ok(deleted)
}

/// The ended rollouts whose every entry was sealed (opened before the log's beginning, none
/// left in the database) and whose records are not tallied yet, oldest first, with their
/// channels: their records may be replaced by their tally.
pub async fn tally_due(store: &Store) -> Result<Vec<(RolloutId, Channel)>, sqlx::Error> {
    let begins = log_begins(store).await?;
    let sql = format!(
        "SELECT r.rollout_id, r.channel FROM rollouts r
         WHERE r.state IN ('Completed', 'Superseded') AND r.opened_seq < $1
           AND NOT EXISTS (SELECT 1 FROM rollout_tallies t WHERE t.rollout_id = r.rollout_id)
           AND NOT EXISTS ({})
         ORDER BY r.opened_seq",
        store::keyed_seqs(store::LogKey::Rollout, "r.rollout_id", "true", store::LogEnd::Oldest, "1")
    );
    let rows: Vec<(String, String)> = on_pool!(store, pool => {
        sqlx::query_as(&sql)
        .bind(begins)
        .fetch_all(pool)
        .await
    })?;
    rows.into_iter()
        .map(|(id, channel)| {
            Ok((RolloutId::parse(id).map_err(store::decode)?, Channel::parse(channel).map_err(store::decode)?))
        })
        .collect()
}

/// Stores a rollout's tally; its records are read through it from then on (and deleted by
/// [`purge_records`]).
pub async fn write_tally(store: &Store, id: &RolloutId, tally: &store::Tally) -> Result<(), sqlx::Error> {
    let body = serde_json::to_string(tally).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    on_pool!(store, pool => {
        sqlx::query("INSERT INTO rollout_tallies (rollout_id, body) VALUES ($1, $2)")
            .bind(id.as_str())
            .bind(body)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// The tallied rollouts whose records are still in the database (a purge a stop interrupted).
pub async fn tallied_with_records(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    on_pool!(store, pool => {
        sqlx::query_scalar(
            "SELECT t.rollout_id FROM rollout_tallies t
             WHERE EXISTS (SELECT 1 FROM host_records h WHERE h.rollout_id = t.rollout_id)",
        )
        .fetch_all(pool)
        .await
    })
}

/// Deletes a tallied rollout's records, [`PURGE_BATCH`] per transaction with a pause between
/// them. Returns how many it deleted.
pub async fn purge_records(store: &Store, id: &str) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let batch = on_pool!(store, pool => {
            sqlx::query(
                "DELETE FROM host_records WHERE rollout_id = $1 AND hostname IN
                 (SELECT hostname FROM host_records WHERE rollout_id = $1 ORDER BY hostname LIMIT $2)",
            )
            .bind(id)
            .bind(PURGE_BATCH)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if batch == 0 {
            return Ok(deleted);
        }
        deleted += batch;
        tokio::time::sleep(PURGE_PAUSE).await;
    }
}

/// The first seq the database still holds (0 when the log is empty).
pub async fn first_kept(store: &Store) -> Result<i64, sqlx::Error> {
    on_pool!(store, pool => sqlx::query_scalar("SELECT COALESCE(MIN(seq), 0) FROM event_log").fetch_one(pool).await)
}

/// Where the database's log begins: after the newest seal (1 when nothing was sealed).
/// Compacted observations leave gaps after it, not a later beginning.
pub async fn log_begins(store: &Store) -> Result<i64, sqlx::Error> {
    Ok(chain::sealed_head(store).await?.map_or(1, |(up_to, _, _)| up_to.saturating_add(1)))
}

/// Whether entries before `seq` were sealed out of the database: the seq the log now
/// begins at, if so.
pub async fn sealed_before(store: &Store, seq: i64) -> Result<Option<i64>, sqlx::Error> {
    let begins = log_begins(store).await?;
    Ok((begins > 1 && seq < begins).then_some(begins))
}
