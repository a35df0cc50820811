//! The event log's hash chain in the database (SPEC §16; the chain itself is the engine's
//! pure [`engine::chain`]): the writer hashes each row it appends ([`hash_row`]) after the
//! log's newest row, in the same transaction; [`backfill`] hashes rows written before the
//! chain existed, once, before anything new is written; [`verify`] checks the whole log and
//! [`export`] writes a range of it as JSON lines that verify on their own.

use std::io::Write;

use engine::chain::{Break, Entry, GENESIS, Hash, Verifier};

use super::store::LogRow;
use super::{Store, on_pool};

/// A stored row as the chain reads it: seq, ts, kind, rollout, host, channel, payload, hash.
type Row = (i64, String, String, Option<String>, Option<String>, Option<String>, String, Option<Vec<u8>>);

const ROW_COLUMNS: &str = "seq, ts, kind, rollout_id, host, channel, payload, hash";

/// Rows read at a time.
const PAGE: i64 = 5_000;

fn entry(row: &Row) -> Entry<'_> {
    Entry {
        seq: row.0,
        ts: &row.1,
        kind: &row.2,
        rollout_id: row.3.as_deref(),
        host: row.4.as_deref(),
        channel: row.5.as_deref(),
        payload: &row.6,
    }
}

/// The hash of `row`, appended as entry `seq` at `ts` (its stored text) after `prev`.
pub fn hash_row(row: &LogRow, seq: i64, ts: &str, prev: &Hash) -> Result<Hash, String> {
    Entry {
        seq,
        ts,
        kind: row.kind.as_str(),
        rollout_id: row.rollout_id.as_ref().map(|r| r.as_str()),
        host: row.host.as_ref().map(|h| h.as_str()),
        channel: row.channel.as_ref().map(|c| c.as_str()),
        payload: row.payload.get(),
    }
    .hash(prev)
    .map_err(|why| format!("cannot hash log entry {seq}: {why}"))
}

/// The hash a stored row carries, as the next row's `prev`: 32 bytes, or the genesis
/// before the first row. A row without one (written before the chain, not yet hashed) is
/// an error: nothing may be chained after it.
pub fn stored_head(newest: Option<(i64, Option<Vec<u8>>)>) -> Result<(i64, Hash), String> {
    match newest {
        None => Ok((0, GENESIS)),
        Some((seq, Some(hash))) => {
            let hash: Hash = hash.try_into().map_err(|_| format!("log entry {seq}'s stored hash is not 32 bytes"))?;
            Ok((seq, hash))
        }
        Some((seq, None)) => Err(format!("log entry {seq} has no hash: the log was not hashed at start-up")),
    }
}

/// The statement reading the newest row's seq and hash (the chain's head).
pub const HEAD: &str = "SELECT seq, hash FROM event_log ORDER BY seq DESC LIMIT 1";

async fn rows_after(store: &Store, after: i64, to: i64) -> Result<Vec<Row>, sqlx::Error> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM event_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3");
    on_pool!(store, pool => sqlx::query_as(&sql).bind(after).bind(to).bind(PAGE).fetch_all(pool).await)
}

/// Hashes the rows written before the chain existed (a log from before migration 0015 /
/// postgres 0009), in seq order, a page per transaction; rows already hashed are taken as
/// they are. Returns how many rows it hashed. Costs one query when the newest row is hashed
/// (every start after the first).
pub async fn backfill(store: &Store) -> Result<u64, sqlx::Error> {
    let newest: Option<(i64, Option<Vec<u8>>)> =
        on_pool!(store, pool => sqlx::query_as(HEAD).fetch_optional(pool).await)?;
    let Some((last, None)) = newest else { return Ok(0) };
    tracing::info!(through = last, "hashing the event log's entries written before its hash chain");
    let mut prev = GENESIS;
    let mut after = 0;
    let mut hashed = 0;
    loop {
        let rows = rows_after(store, after, last).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        let mut updates = Vec::new();
        for row in &rows {
            prev = match &row.7 {
                Some(stored) => {
                    stored.as_slice().try_into().map_err(|_| decode(row.0, "a stored hash is not 32 bytes"))?
                }
                None => {
                    let hash = entry(row).hash(&prev).map_err(|why| decode(row.0, &why))?;
                    updates.push((row.0, hash));
                    hash
                }
            };
        }
        if !updates.is_empty() {
            hashed += updates.len() as u64;
            on_pool!(store, pool => {
                let mut tx = pool.begin().await?;
                for (seq, hash) in &updates {
                    sqlx::query("UPDATE event_log SET hash = $1 WHERE seq = $2")
                        .bind(hash.as_slice())
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
        }
        after = end;
    }
    tracing::info!(hashed, "event log hashed");
    Ok(hashed)
}

fn decode(seq: i64, why: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("log entry {seq}: {why}").into())
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// First and last seq checked (none for an empty log).
    pub range: Option<(i64, i64)>,
    pub head: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the log is broken: {0}")]
    Broken(#[from] Break),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Checks the whole log's chain from its first entry, a page at a time, and names the first
/// entry that breaks it.
pub async fn verify(store: &Store) -> Result<Verified, VerifyError> {
    let mut verifier = Verifier::from_genesis();
    let mut first = None;
    let mut after = 0;
    loop {
        let rows = rows_after(store, after, i64::MAX).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        for row in &rows {
            verifier.check(&entry(row), row.7.as_deref())?;
            first.get_or_insert(row.0);
        }
        after = end;
    }
    Ok(Verified { entries: verifier.checked(), range: first.map(|f| (f, after)), head: verifier.head() })
}

/// Writes entries `from..=to` as JSON lines (each entry as [`Entry::to_value`] with its
/// `hash` in hex): line `n`'s hash is SHA-256 over line `n − 1`'s and line `n` without its
/// hash, canonicalised. Returns how many lines it wrote.
pub async fn export(store: &Store, from: i64, to: i64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut after = from.saturating_sub(1);
    let mut lines = 0;
    loop {
        let rows = rows_after(store, after, to).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        for row in &rows {
            let mut value = entry(row).to_value().map_err(|why| anyhow::anyhow!("log entry {}: {why}", row.0))?;
            let hash = row.7.as_deref().and_then(|h| Hash::try_from(h).ok());
            if let (Some(object), Some(hash)) = (value.as_object_mut(), hash) {
                object.insert("hash".into(), engine::chain::hex(&hash).into());
            }
            serde_json::to_writer(&mut *out, &value)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        after = end;
    }
    out.flush()?;
    Ok(lines)
}
