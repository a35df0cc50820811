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
pub(super) type Row = (i64, String, String, Option<String>, Option<String>, Option<String>, String, Option<Vec<u8>>);

const ROW_COLUMNS: &str = "seq, ts, kind, rollout_id, host, channel, payload, hash";

/// Rows read at a time.
const PAGE: i64 = 5_000;

pub(super) fn entry(row: &Row) -> Entry<'_> {
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

/// Rows `after < seq <= to`, a page of them, oldest first.
pub(super) async fn rows_after(store: &Store, after: i64, to: i64) -> Result<Vec<Row>, sqlx::Error> {
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
    /// Segments of the archive checked, and the seq the live log's check began after when
    /// no archive was given (the newest `LogSealed` entry's `upTo`; 0 when nothing was sealed).
    pub segments: usize,
    pub sealed_through: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the log is broken: {0}")]
    Broken(#[from] Break),
    #[error("the log archive does not match the log: {0}")]
    Archive(String),
    #[error(transparent)]
    ArchiveFile(#[from] super::archive::ArchiveError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The newest `LogSealed` entry: the seq it sealed through and that entry's chain hash.
pub async fn sealed_head(store: &Store) -> Result<Option<(i64, Hash, String)>, sqlx::Error> {
    let row: Option<(i64, String)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT seq, payload FROM event_log WHERE kind = 'LogSealed' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await)?;
    let Some((seq, payload)) = row else { return Ok(None) };
    let sealed: shared::log::LogSealed = serde_json::from_str(&payload).map_err(|e| decode(seq, &e.to_string()))?;
    let head =
        engine::chain::from_hex(&sealed.head_hash).ok_or_else(|| decode(seq, "its headHash is not 64 hex digits"))?;
    Ok(Some((sealed.up_to, head, sealed.file)))
}

/// What a `LogSealed` entry says, checked against the segment it names as verification passes
/// it (the segment was checked before: it holds earlier entries).
fn check_sealed(
    line: &Entry<'_>,
    segments: &std::collections::BTreeMap<String, (i64, Hash)>,
) -> Result<(), VerifyError> {
    let sealed: shared::log::LogSealed = serde_json::from_str(line.payload)
        .map_err(|e| VerifyError::Archive(format!("entry {} (LogSealed) cannot be read: {e}", line.seq)))?;
    match segments.get(&sealed.file) {
        Some((last, head)) if *last == sealed.up_to && engine::chain::hex(head) == sealed.head_hash => Ok(()),
        Some(_) => Err(VerifyError::Archive(format!(
            "entry {} says {} ends at seq {} with head {}, which the segment does not",
            line.seq, sealed.file, sealed.up_to, sealed.head_hash
        ))),
        None => Err(VerifyError::Archive(format!(
            "entry {} sealed entries into {}, which the archive does not hold",
            line.seq, sealed.file
        ))),
    }
}

/// Checks the log's chain and names the first entry that breaks it. With `archive` (the
/// directory of sealed segments): from seq 1 through every segment and on through the live
/// log, as one chain, each `LogSealed` entry checked against the segment it names. Without:
/// the live log from the newest seal's head (from genesis if nothing was sealed).
pub async fn verify(store: &Store, archive: Option<&std::path::Path>) -> Result<Verified, VerifyError> {
    let mut verifier = Verifier::from_genesis();
    let mut first = None;
    let mut checked_segments = std::collections::BTreeMap::new();
    let mut sealed_through = 0;
    match archive {
        Some(dir) => {
            for segment in super::archive::list(dir)? {
                let mut reader = super::archive::SegmentReader::open(&segment)?;
                if reader.header.prev != verifier.head() || Some(reader.header.first) != verifier.next_seq() {
                    let expected = verifier.next_seq().unwrap_or(i64::MAX);
                    return Err(if reader.header.first > expected {
                        Break::Missing { seq: expected }.into()
                    } else {
                        VerifyError::Archive(format!(
                            "{} does not follow the entries before it (expected seq {expected} after head {})",
                            segment.name(),
                            engine::chain::hex(&verifier.head())
                        ))
                    });
                }
                while let Some(line) = reader.next_line()? {
                    verifier.check(&line.entry(), line.hash.as_ref().map(|h| h.as_slice()))?;
                    first.get_or_insert(line.seq);
                    if line.kind == shared::log::LogKind::LogSealed.as_str() {
                        check_sealed(&line.entry(), &checked_segments)?;
                    }
                }
                if verifier.next_seq() != segment.last.checked_add(1) {
                    return Err(VerifyError::Archive(format!("{} ends before seq {}", segment.name(), segment.last)));
                }
                checked_segments.insert(segment.name(), (segment.last, verifier.head()));
            }
        }
        None => {
            if let Some((up_to, head, _)) = sealed_head(store).await? {
                verifier = Verifier::after(up_to, head);
                sealed_through = up_to;
            }
        }
    }
    // Rows already sealed but not yet deleted (a purge under way) are the archive's.
    let mut after = verifier.next_seq().map_or(i64::MAX, |next| next - 1);
    loop {
        let rows = rows_after(store, after, i64::MAX).await?;
        let Some(end) = rows.last().map(|r| r.0) else { break };
        for row in &rows {
            verifier.check(&entry(row), row.7.as_deref())?;
            first.get_or_insert(row.0);
            if archive.is_some() && row.2 == shared::log::LogKind::LogSealed.as_str() {
                check_sealed(&entry(row), &checked_segments)?;
            }
        }
        after = end;
    }
    let last = verifier.next_seq().map(|next| next - 1);
    Ok(Verified {
        entries: verifier.checked(),
        range: first.zip(last),
        head: verifier.head(),
        segments: checked_segments.len(),
        sealed_through,
    })
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
            let hash = row.7.as_deref().and_then(|h| Hash::try_from(h).ok());
            let line = super::archive::Line::render(&entry(row), hash.as_ref())
                .map_err(|why| anyhow::anyhow!("log entry {}: {why}", row.0))?;
            writeln!(out, "{line}")?;
            lines += 1;
        }
        after = end;
    }
    out.flush()?;
    Ok(lines)
}
