//! The event log's hash chain in the database (SPEC §16; the chain itself is the engine's
//! pure [`engine::chain`]): the writer hashes each row it appends ([`hash_row`]) after the
//! log's newest row, in the same transaction; [`backfill`] hashes rows written before the
//! chain existed, once, before anything new is written; [`verify`] checks the whole log and
//! [`export`] writes a range of it as JSON lines that verify on their own.

use std::io::Write;

use engine::chain::{Break, Entry, GENESIS, Hash, Verifier};
use shared::log::LogKind;

use super::archive::{ArchiveError, Compacted, Line, SegmentFile, SegmentKind, SegmentReader};

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
    /// Entries whose hash was checked.
    pub entries: u64,
    /// First and last seq seen (none for an empty log).
    pub range: Option<(i64, i64)>,
    pub head: Hash,
    /// Segments of the archive read.
    pub segments: usize,
    /// Without an archive: the seq the database's check began after (the newest
    /// `LogSealed` entry's `upTo`; 0 when nothing was sealed), and the entries after a gap of
    /// compacted observations, taken on their stored hash.
    pub sealed_through: i64,
    pub anchored: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the log is broken: {0}")]
    Broken(#[from] Break),
    #[error("the log archive does not match the log: {0}")]
    Archive(String),
    #[error("{0}")]
    Compacted(String),
    #[error(transparent)]
    ArchiveFile(#[from] ArchiveError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The payloads of the entries of `kind` in the database, newest first, with their seqs
/// (at most `limit`).
async fn payloads_of(store: &Store, kind: LogKind, limit: i64) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let sql = newest_of_kind(kind);
    on_pool!(store, pool => sqlx::query_as(&sql).bind(limit).fetch_all(pool).await)
}

/// The newest `$1` entries of `kind`, newest first. The kind is written into the statement,
/// so the databases use the partial index `event_log_archive` for the archive's kinds.
pub fn newest_of_kind(kind: LogKind) -> String {
    format!("SELECT seq, payload FROM event_log WHERE kind = '{}' ORDER BY seq DESC LIMIT $1", kind.as_str())
}

/// The newest `LogSealed` entry: the seq it sealed through, that entry's chain hash, and
/// the segment.
pub async fn sealed_head(store: &Store) -> Result<Option<(i64, Hash, String)>, sqlx::Error> {
    let Some((seq, payload)) = payloads_of(store, LogKind::LogSealed, 1).await?.pop() else { return Ok(None) };
    let sealed: shared::log::LogSealed = serde_json::from_str(&payload).map_err(|e| decode(seq, &e.to_string()))?;
    let head =
        engine::chain::from_hex(&sealed.head_hash).ok_or_else(|| decode(seq, "its headHash is not 64 hex digits"))?;
    Ok(Some((sealed.up_to, head, sealed.file)))
}

/// The newest `limit` `LogCompacted` entries in the database, newest first.
pub async fn compactions(store: &Store, limit: i64) -> Result<Vec<shared::log::LogCompacted>, sqlx::Error> {
    payloads_of(store, LogKind::LogCompacted, limit)
        .await?
        .into_iter()
        .map(|(seq, payload)| serde_json::from_str(&payload).map_err(|e| decode(seq, &e.to_string())))
        .collect()
}

/// The ranges whose observations were compacted out of the database.
pub async fn compacted(store: &Store) -> Result<Compacted, sqlx::Error> {
    Ok(Compacted::new(compactions(store, i64::MAX).await?.into_iter().map(|c| (c.from, c.up_to)).collect()))
}

/// Without the archive, what was compacted cannot be checked, but it can be counted: each
/// compacted range still in the database must hold every entry but the ones compacted.
async fn check_compacted_counts(
    store: &Store,
    compactions: &[shared::log::LogCompacted],
    sealed_through: i64,
) -> Result<(), VerifyError> {
    for c in compactions.iter().filter(|c| c.from > sealed_through) {
        let present: i64 = on_pool!(store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM event_log WHERE seq >= $1 AND seq <= $2")
                .bind(c.from)
                .bind(c.up_to)
                .fetch_one(pool)
                .await?
        });
        let span = c.up_to.saturating_sub(c.from).saturating_add(1);
        let expected = span.saturating_sub(i64::try_from(c.entries).unwrap_or(i64::MAX));
        if present != expected {
            return Err(VerifyError::Compacted(format!(
                "entries {}–{}: {present} in the database and {} compacted, {} missing (fleetwave log verify --archive names them)",
                c.from,
                c.up_to,
                c.entries,
                expected.saturating_sub(present)
            )));
        }
    }
    Ok(())
}

/// One ordered source of entries: a run of segment files, or the database's rows.
enum Source<'a> {
    Segments { files: std::vec::IntoIter<SegmentFile>, open: Option<Box<(String, SegmentReader)>> },
    Rows { store: &'a Store, after: i64, page: std::collections::VecDeque<Row> },
}

impl Source<'_> {
    /// The next entry and the segment it came from (none: the database).
    async fn next(&mut self) -> Result<Option<(Line, Option<String>)>, VerifyError> {
        match self {
            Source::Segments { files, open } => loop {
                if let Some(segment) = open
                    && let Some(line) = segment.1.next_line()?
                {
                    return Ok(Some((line, Some(segment.0.clone()))));
                }
                let Some(file) = files.next() else { return Ok(None) };
                *open = Some(Box::new((file.name(), SegmentReader::open(&file)?)));
            },
            Source::Rows { store, after, page } => {
                if page.is_empty() {
                    page.extend(rows_after(store, *after, i64::MAX).await?);
                }
                let Some(row) = page.pop_front() else { return Ok(None) };
                *after = row.0;
                let line = Line {
                    seq: row.0,
                    ts: row.1,
                    kind: row.2,
                    rollout_id: row.3,
                    host: row.4,
                    channel: row.5,
                    payload: row.6,
                    hash: row.7.as_deref().and_then(|h| Hash::try_from(h).ok()),
                };
                Ok(Some((line, None)))
            }
        }
    }
}

/// What the archive's files say about themselves, checked as verification passes the
/// `LogSealed` and `LogCompacted` entries that name them.
#[derive(Default)]
struct Files {
    listed: std::collections::BTreeMap<String, SegmentFile>,
    /// Lines read per file, and each sealed segment's last hash.
    lines: std::collections::BTreeMap<String, u64>,
    heads: std::collections::BTreeMap<String, Hash>,
}

impl Files {
    fn entry_named(&self, seq: i64, file: &str) -> Result<&SegmentFile, VerifyError> {
        self.listed
            .get(file)
            .ok_or_else(|| VerifyError::Archive(format!("entry {seq} names {file}, which the archive does not hold")))
    }

    fn check(&self, line: &Line) -> Result<(), VerifyError> {
        let unreadable = |e: serde_json::Error| VerifyError::Archive(format!("entry {} cannot be read: {e}", line.seq));
        let differs =
            |what: String| VerifyError::Archive(format!("entry {} says {what}, which its file does not", line.seq));
        if line.kind == LogKind::LogSealed.as_str() {
            let sealed: shared::log::LogSealed = serde_json::from_str(&line.payload).map_err(unreadable)?;
            let file = self.entry_named(line.seq, &sealed.file)?;
            let head = self.heads.get(&sealed.file).map(engine::chain::hex);
            if (file.first, file.last, head.as_deref()) != (sealed.from, sealed.up_to, Some(sealed.head_hash.as_str()))
            {
                return Err(differs(format!(
                    "{} holds {}–{} ending at {}",
                    sealed.file, sealed.from, sealed.up_to, sealed.head_hash
                )));
            }
        } else if line.kind == LogKind::LogCompacted.as_str() {
            let compacted: shared::log::LogCompacted = serde_json::from_str(&line.payload).map_err(unreadable)?;
            let Some(name) = &compacted.file else { return Ok(()) };
            let file = self.entry_named(line.seq, name)?;
            let lines = self.lines.get(name).copied().unwrap_or(0);
            if (file.first, file.last, lines) != (compacted.from, compacted.up_to, compacted.entries) {
                return Err(differs(format!(
                    "{name} holds {} observations of {}–{}",
                    compacted.entries, compacted.from, compacted.up_to
                )));
            }
        }
        Ok(())
    }
}

/// Checks the log's chain and names the first entry that breaks it. With `archive` (the
/// directory of sealed and observation segments): every entry from seq 1, the segments'
/// and the database's merged in seq order, as one chain; each `LogSealed` and `LogCompacted`
/// entry checked against the file it names. Without: the database's entries from the newest
/// seal's head (from genesis if nothing was sealed), an entry after a gap of compacted
/// observations taken on its stored hash.
pub async fn verify(store: &Store, archive: Option<&std::path::Path>) -> Result<Verified, VerifyError> {
    let mut verifier = Verifier::from_genesis();
    let mut first = None;
    let mut files = Files::default();
    let mut sealed_through = 0;
    let mut sources = Vec::new();
    let mut compaction_entries = Vec::new();
    let compacted = match archive {
        Some(dir) => {
            let listed = super::archive::list(dir)?;
            let sealed_last = listed.iter().filter(|f| f.kind == SegmentKind::Log).map(|f| f.last).max().unwrap_or(0);
            for kind in [SegmentKind::Log, SegmentKind::Observations] {
                let of_kind: Vec<SegmentFile> = listed.iter().filter(|f| f.kind == kind).cloned().collect();
                sources.push(Source::Segments { files: of_kind.into_iter(), open: None });
            }
            files.listed = listed.into_iter().map(|f| (f.name(), f)).collect();
            // Rows already sealed but not yet deleted (a purge under way) are the archive's.
            sources.push(Source::Rows { store, after: sealed_last, page: Default::default() });
            Compacted::default()
        }
        None => {
            if let Some((up_to, head, _)) = sealed_head(store).await? {
                verifier = Verifier::after(up_to, head);
                sealed_through = up_to;
            }
            sources.push(Source::Rows { store, after: sealed_through, page: Default::default() });
            compaction_entries = compactions(store, i64::MAX).await?;
            Compacted::new(compaction_entries.iter().map(|c| (c.from, c.up_to)).collect())
        }
    };
    let mut heads: Vec<Option<(Line, Option<String>)>> = Vec::with_capacity(sources.len());
    for source in &mut sources {
        heads.push(source.next().await?);
    }
    while let Some(i) =
        (0..heads.len()).filter(|i| heads[*i].is_some()).min_by_key(|i| heads[*i].as_ref().map(|h| h.0.seq))
    {
        let Some((line, file)) = heads[i].take() else { break };
        heads[i] = sources[i].next().await?;
        // The same entry from two places (observations exported, their delete interrupted).
        for j in 0..heads.len() {
            if heads[j].as_ref().is_some_and(|h| h.0.seq == line.seq) {
                let (other, _) = heads[j].take().unwrap_or_else(|| unreachable!("checked just above"));
                if other != line {
                    return Err(VerifyError::Archive(format!(
                        "entry {} differs between the archive and the database",
                        line.seq
                    )));
                }
                heads[j] = sources[j].next().await?;
            }
        }
        let stored = line.hash.as_ref().map(|h| h.as_slice());
        let next = verifier.next_seq().unwrap_or(i64::MAX);
        if line.seq > next && compacted.covers(next, line.seq - 1) {
            verifier.anchor(line.seq, stored)?;
        } else {
            verifier.check(&line.entry(), stored)?;
        }
        first.get_or_insert(line.seq);
        if let Some(name) = file {
            *files.lines.entry(name.clone()).or_default() += 1;
            if files.listed.get(&name).is_some_and(|f| f.kind == SegmentKind::Log && f.last == line.seq) {
                files.heads.insert(name, verifier.head());
            }
        }
        if archive.is_some() {
            files.check(&line)?;
        }
    }
    if archive.is_none() {
        check_compacted_counts(store, &compaction_entries, sealed_through).await?;
    }
    let last = verifier.next_seq().map(|next| next - 1);
    Ok(Verified {
        entries: verifier.checked(),
        range: first.zip(last),
        head: verifier.head(),
        segments: files.listed.len(),
        sealed_through,
        anchored: verifier.anchored(),
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
