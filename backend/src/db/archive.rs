//! The log archive (SPEC §16): segments of the event log in one directory, zstd-compressed
//! JSON lines, each line an entry as `fleetwave log export` writes it (the entry and its
//! chain `hash`) after a header line `{"fleetwaveLogSegment": 1, "kind", "first", "last"}`:
//!
//! - `log-{first}-{last}.jsonl.zst`, a sealed segment: every entry of the range still in the
//!   database when it was sealed (the observations compacted before are in their own
//!   segments), its header with `prevHash`, the chain hash of the entry before `first` (64
//!   zeros for the log's first segment). Its last line's hash is the head `LogSealed` records.
//! - `observations-{first}-{last}.jsonl.zst`: the observations (repeated probe results,
//!   presence changes) compacted out of that range (`LogCompacted`).
//!
//! Together with the database they hold every entry once, so they verify as one chain
//! ([`super::chain::verify`]).
//!
//! A segment is written to a hidden temporary name, synced, and renamed into place: a file
//! with the segment name is whole.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use engine::chain::{Entry, Hash, Verifier, from_hex, hex};
use serde_json::{Map, Value};

/// The format the header names.
const FORMAT: u64 = 1;

/// zstd level of segments: JSON lines compress ~10x at 3, at ~100 MB/s on one core.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}: {why}")]
    Bad { file: String, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_owned(), source }
}

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SegmentKind {
    /// A sealed range of the log.
    Log,
    /// The observations compacted out of a range.
    Observations,
}

impl SegmentKind {
    fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Log => "log",
            SegmentKind::Observations => "observations",
        }
    }
}

/// The name of the segment of `kind` holding `first..=last`.
pub fn segment_name(kind: SegmentKind, first: i64, last: i64) -> String {
    format!("{}-{first}-{last}.jsonl.zst", kind.as_str())
}

/// The kind and range a segment's name says it holds.
fn parse_name(name: &str) -> Option<(SegmentKind, i64, i64)> {
    let stem = name.strip_suffix(".jsonl.zst")?;
    let (kind, range) = [SegmentKind::Log, SegmentKind::Observations]
        .into_iter()
        .find_map(|kind| Some((kind, stem.strip_prefix(kind.as_str())?.strip_prefix('-')?)))?;
    let (first, last) = range.split_once('-')?;
    Some((kind, first.parse().ok()?, last.parse().ok()?))
}

/// A segment in the archive directory, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub kind: SegmentKind,
    pub first: i64,
    pub last: i64,
    pub path: PathBuf,
}

impl SegmentFile {
    pub fn name(&self) -> String {
        segment_name(self.kind, self.first, self.last)
    }
}

/// The segments in `dir`, by kind, oldest first (an absent directory holds none).
pub fn list(dir: &Path) -> Result<Vec<SegmentFile>, ArchiveError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io(dir)(err)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        if let Some((kind, first, last)) = name.to_str().and_then(parse_name) {
            out.push(SegmentFile { kind, first, last, path: entry.path() });
        }
    }
    out.sort_by_key(|s| (s.kind, s.first, s.last));
    Ok(out)
}

/// One entry as a segment or an export line holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub rollout_id: Option<String>,
    pub host: Option<String>,
    pub channel: Option<String>,
    /// The payload's JSON text.
    pub payload: String,
    pub hash: Option<Hash>,
}

impl Line {
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            seq: self.seq,
            ts: &self.ts,
            kind: &self.kind,
            rollout_id: self.rollout_id.as_deref(),
            host: self.host.as_deref(),
            channel: self.channel.as_deref(),
            payload: &self.payload,
        }
    }

    /// The line as written: the entry's object with its `hash`.
    pub fn render(entry: &Entry<'_>, hash: Option<&Hash>) -> Result<String, String> {
        let mut value = entry.to_value()?;
        if let (Some(object), Some(hash)) = (value.as_object_mut(), hash) {
            object.insert("hash".into(), hex(hash).into());
        }
        serde_json::to_string(&value).map_err(|e| e.to_string())
    }

    pub fn parse(text: &str) -> Result<Line, String> {
        let value: Map<String, Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        let string = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let seq = value.get("seq").and_then(Value::as_i64).ok_or("no seq")?;
        Ok(Line {
            seq,
            ts: string("ts").ok_or_else(|| format!("entry {seq} has no ts"))?,
            kind: string("kind").ok_or_else(|| format!("entry {seq} has no kind"))?,
            rollout_id: string("rolloutId"),
            host: string("host"),
            channel: string("channel"),
            payload: value.get("payload").ok_or_else(|| format!("entry {seq} has no payload"))?.to_string(),
            hash: match string("hash") {
                Some(text) => Some(from_hex(&text).ok_or_else(|| format!("entry {seq}'s hash is not 64 hex digits"))?),
                None => None,
            },
        })
    }
}

/// A segment's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: SegmentKind,
    pub first: i64,
    pub last: i64,
    /// A sealed segment's: the chain hash of the entry before `first`.
    pub prev: Option<Hash>,
}

impl Header {
    fn render(&self) -> String {
        let mut value = serde_json::json!({
            "fleetwaveLogSegment": FORMAT,
            "kind": self.kind.as_str(),
            "first": self.first,
            "last": self.last,
        });
        if let (Some(prev), Some(object)) = (&self.prev, value.as_object_mut()) {
            object.insert("prevHash".into(), hex(prev).into());
        }
        value.to_string()
    }

    fn parse(text: &str) -> Result<Header, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("its header is not JSON: {e}"))?;
        if value.get("fleetwaveLogSegment").and_then(Value::as_u64) != Some(FORMAT) {
            return Err(format!("its header is not a format-{FORMAT} log segment's"));
        }
        let kind = match value.get("kind").and_then(Value::as_str) {
            Some("log") => SegmentKind::Log,
            Some("observations") => SegmentKind::Observations,
            other => return Err(format!("its header's kind {other:?} is not log or observations")),
        };
        let seq = |key: &str| value.get(key).and_then(Value::as_i64).ok_or_else(|| format!("its header has no {key}"));
        let prev = match value.get("prevHash") {
            None => None,
            Some(text) => Some(text.as_str().and_then(from_hex).ok_or("its header's prevHash is not 64 hex digits")?),
        };
        if kind == SegmentKind::Log && prev.is_none() {
            return Err("its header has no prevHash".into());
        }
        Ok(Header { kind, first: seq("first")?, last: seq("last")?, prev })
    }
}

/// Ranges of the log whose observations were compacted out of the database (from the
/// `LogCompacted` entries): an entry missing inside one is not a break.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted(Vec<(i64, i64)>);

impl Compacted {
    /// From `(from, up_to)` ranges in any order; touching ranges are joined.
    pub fn new(mut ranges: Vec<(i64, i64)>) -> Compacted {
        ranges.sort_unstable();
        let mut joined: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for (from, up_to) in ranges {
            match joined.last_mut() {
                Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(up_to),
                _ => joined.push((from, up_to)),
            }
        }
        Compacted(joined)
    }

    /// Whether every seq of `from..=up_to` lies in a compacted range.
    pub fn covers(&self, from: i64, up_to: i64) -> bool {
        let i = self.0.partition_point(|(_, end)| *end < from);
        self.0.get(i).is_some_and(|(start, end)| *start <= from && up_to <= *end)
    }
}

/// Writes a segment: entries are added in seq order, a sealed segment's checked against the
/// chain as they come (nothing broken is sealed; a gap is allowed only where observations
/// were compacted), an observations segment's taken with their stored hashes;
/// [`SegmentWriter::finish`] syncs it and renames it into place.
pub struct SegmentWriter {
    header: Header,
    dir: PathBuf,
    partial: PathBuf,
    out: zstd::stream::write::Encoder<'static, BufWriter<std::fs::File>>,
    verifier: Verifier,
    compacted: Compacted,
    entries: u64,
    name: String,
}

impl SegmentWriter {
    pub fn create(dir: &Path, header: Header, compacted: Compacted) -> Result<SegmentWriter, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = segment_name(header.kind, header.first, header.last);
        let partial = dir.join(format!(".{name}.partial"));
        let file = std::fs::File::create(&partial).map_err(io(&partial))?;
        let mut out = zstd::stream::write::Encoder::new(BufWriter::new(file), LEVEL).map_err(io(&partial))?;
        writeln!(out, "{}", header.render()).map_err(io(&partial))?;
        let verifier = Verifier::after(header.first - 1, header.prev.unwrap_or(engine::chain::GENESIS));
        Ok(SegmentWriter { header, dir: dir.to_owned(), partial, out, verifier, compacted, entries: 0, name })
    }

    /// The next entry and its stored hash.
    pub fn push(&mut self, entry: &Entry<'_>, stored: Option<&[u8]>) -> Result<(), ArchiveError> {
        let bad = |why: String| ArchiveError::Bad { file: self.name.clone(), why };
        if entry.seq < self.header.first || entry.seq > self.header.last {
            return Err(bad(format!("entry {} is outside the segment", entry.seq)));
        }
        let next = self.verifier.next_seq().unwrap_or(i64::MAX);
        let checked = match self.header.kind {
            SegmentKind::Observations => self.verifier.anchor(entry.seq, stored),
            SegmentKind::Log if entry.seq > next && self.compacted.covers(next, entry.seq - 1) => {
                self.verifier.anchor(entry.seq, stored)
            }
            SegmentKind::Log => self.verifier.check(entry, stored),
        };
        checked.map_err(|e| bad(format!("refusing to archive a broken log: {e}")))?;
        let line = Line::render(entry, Some(&self.verifier.head())).map_err(bad)?;
        self.entries += 1;
        writeln!(self.out, "{line}").map_err(io(&self.partial))
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Gives the segment up: nothing is left in the directory.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }

    /// Completes the segment; its name, the hash of its last entry and how many it holds. A
    /// sealed segment must hold every entry of its range but compacted ones, its last among
    /// them.
    pub fn finish(self) -> Result<(String, Hash, u64), ArchiveError> {
        let SegmentWriter { header, dir, partial, out, verifier, name, entries, .. } = self;
        if header.kind == SegmentKind::Log && verifier.next_seq() != header.last.checked_add(1) {
            let _ = std::fs::remove_file(&partial);
            return Err(ArchiveError::Bad {
                file: name,
                why: format!("entries {}..={} were not all there to seal", header.first, header.last),
            });
        }
        let file = out.finish().map_err(io(&partial))?.into_inner().map_err(|e| io(&partial)(e.into_error()))?;
        file.sync_all().map_err(io(&partial))?;
        let path = dir.join(&name);
        std::fs::rename(&partial, &path).map_err(io(&path))?;
        // The rename is durable once the directory is.
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        Ok((name, verifier.head(), entries))
    }
}

/// Reads a segment: its header, then its entries in order.
pub struct SegmentReader {
    pub header: Header,
    name: String,
    lines: std::io::Lines<BufReader<zstd::stream::read::Decoder<'static, BufReader<std::fs::File>>>>,
}

impl SegmentReader {
    pub fn open(segment: &SegmentFile) -> Result<SegmentReader, ArchiveError> {
        let name = segment.name();
        let file = std::fs::File::open(&segment.path).map_err(io(&segment.path))?;
        let decoder = zstd::stream::read::Decoder::new(file).map_err(io(&segment.path))?;
        let mut lines = BufReader::new(decoder).lines();
        let bad = |why: String| ArchiveError::Bad { file: name.clone(), why };
        let first = lines.next().ok_or_else(|| bad("it is empty".into()))?.map_err(io(&segment.path))?;
        let header = Header::parse(&first).map_err(bad)?;
        if (header.kind, header.first, header.last) != (segment.kind, segment.first, segment.last) {
            return Err(bad(format!("its header says it holds {:?} {}..={}", header.kind, header.first, header.last)));
        }
        Ok(SegmentReader { header, name, lines })
    }

    /// The next entry, or None at the end.
    pub fn next_line(&mut self) -> Result<Option<Line>, ArchiveError> {
        let bad = |why: String| ArchiveError::Bad { file: self.name.clone(), why };
        match self.lines.next() {
            None => Ok(None),
            Some(Err(err)) => Err(bad(err.to_string())),
            Some(Ok(text)) => Line::parse(&text).map(Some).map_err(bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::chain::GENESIS;

    use super::*;

    fn entry(seq: i64, payload: &str) -> (String, String) {
        (format!("2026-12-01T00:00:{:02}.000Z", seq % 60), payload.to_owned())
    }

    #[test]
    fn a_segment_reads_back_as_written_and_chains_from_its_prev_hash() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<_> = (1..=3).map(|seq| (seq, entry(seq, &format!("{{\"n\":{seq}}}")))).collect();
        let mut prev = GENESIS;
        let mut hashes = Vec::new();
        for (seq, (ts, payload)) in &rows {
            let e =
                Entry { seq: *seq, ts, kind: "HostEvent", rollout_id: None, host: Some("a"), channel: None, payload };
            prev = e.hash(&prev).unwrap();
            hashes.push(prev);
        }
        let header = Header { kind: SegmentKind::Log, first: 2, last: 3, prev: Some(hashes[0]) };
        let mut writer = SegmentWriter::create(dir.path(), header.clone(), Compacted::default()).unwrap();
        for (i, (seq, (ts, payload))) in rows.iter().enumerate().skip(1) {
            let e =
                Entry { seq: *seq, ts, kind: "HostEvent", rollout_id: None, host: Some("a"), channel: None, payload };
            writer.push(&e, Some(&hashes[i])).unwrap();
        }
        let (name, head, entries) = writer.finish().unwrap();
        assert_eq!((name.as_str(), head, entries), ("log-2-3.jsonl.zst", hashes[2], 2));

        let segments = list(dir.path()).unwrap();
        assert_eq!(segments.len(), 1, "no temporary file is left behind");
        let mut reader = SegmentReader::open(&segments[0]).unwrap();
        assert_eq!(reader.header, header);
        let mut verifier = Verifier::after(1, reader.header.prev.unwrap());
        while let Some(line) = reader.next_line().unwrap() {
            verifier.check(&line.entry(), line.hash.as_ref().map(|h| h.as_slice())).unwrap();
        }
        assert_eq!((verifier.checked(), verifier.head()), (2, hashes[2]));
    }

    #[test]
    fn a_broken_or_incomplete_range_is_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let (ts, payload) = entry(1, "{}");
        let e = Entry {
            seq: 1,
            ts: &ts,
            kind: "HostEvent",
            rollout_id: None,
            host: None,
            channel: None,
            payload: &payload,
        };
        let sealed = |last| Header { kind: SegmentKind::Log, first: 1, last, prev: Some(GENESIS) };
        let mut writer = SegmentWriter::create(dir.path(), sealed(1), Compacted::default()).unwrap();
        let err = writer.push(&e, Some(&[7; 32])).unwrap_err();
        assert!(err.to_string().contains("entry 1 is not as it was written"), "{err}");

        let writer = SegmentWriter::create(dir.path(), sealed(2), Compacted::default()).unwrap();
        let err = writer.finish().unwrap_err();
        assert!(err.to_string().contains("were not all there"), "{err}");
        assert!(list(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn compacted_ranges_join_and_cover_only_what_they_hold() {
        let compacted = Compacted::new(vec![(20, 30), (5, 10), (11, 12)]);
        assert!(compacted.covers(5, 12) && compacted.covers(7, 7) && compacted.covers(20, 30));
        assert!(!compacted.covers(12, 13) && !compacted.covers(4, 5) && !compacted.covers(31, 31));
        assert_eq!(parse_name("observations-3-9.jsonl.zst"), Some((SegmentKind::Observations, 3, 9)));
        assert_eq!(parse_name("log-3-9.jsonl.zst"), Some((SegmentKind::Log, 3, 9)));
        assert_eq!(parse_name(".log-3-9.jsonl.zst.partial"), None);
    }
}
