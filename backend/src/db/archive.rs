//! The log archive (SPEC §16): sealed segments of the event log, each a file
//! `log-{first}-{last}.jsonl.zst` in one directory. A segment is zstd-compressed JSON lines:
//! a header `{"fleetwaveLogSegment": 1, "first", "last", "prevHash"}` (the chain hash of the
//! entry before `first`; 64 zeros for the log's first segment), then every entry `first..=last`
//! as `fleetwave log export` writes it (the entry and its `hash`). The last line's hash is the
//! chain head the `LogSealed` entry records, so the archive and the live log verify as one
//! chain ([`super::chain::verify`]).
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

/// The name of the segment holding `first..=last`.
pub fn segment_name(first: i64, last: i64) -> String {
    format!("log-{first}-{last}.jsonl.zst")
}

/// The range a segment's name says it holds.
fn parse_name(name: &str) -> Option<(i64, i64)> {
    let (first, last) = name.strip_prefix("log-")?.strip_suffix(".jsonl.zst")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// A segment in the archive directory, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub first: i64,
    pub last: i64,
    pub path: PathBuf,
}

impl SegmentFile {
    pub fn name(&self) -> String {
        segment_name(self.first, self.last)
    }
}

/// The segments in `dir`, oldest first (an absent directory holds none).
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
        if let Some((first, last)) = name.to_str().and_then(parse_name) {
            out.push(SegmentFile { first, last, path: entry.path() });
        }
    }
    out.sort_by_key(|s| (s.first, s.last));
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
    pub first: i64,
    pub last: i64,
    pub prev: Hash,
}

impl Header {
    fn render(&self) -> String {
        serde_json::json!({
            "fleetwaveLogSegment": FORMAT,
            "first": self.first,
            "last": self.last,
            "prevHash": hex(&self.prev),
        })
        .to_string()
    }

    fn parse(text: &str) -> Result<Header, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("its header is not JSON: {e}"))?;
        if value.get("fleetwaveLogSegment").and_then(Value::as_u64) != Some(FORMAT) {
            return Err(format!("its header is not a format-{FORMAT} log segment's"));
        }
        let seq = |key: &str| value.get(key).and_then(Value::as_i64).ok_or_else(|| format!("its header has no {key}"));
        let prev =
            value.get("prevHash").and_then(Value::as_str).and_then(from_hex).ok_or("its header has no prevHash")?;
        Ok(Header { first: seq("first")?, last: seq("last")?, prev })
    }
}

/// Writes a segment: entries are added in seq order and checked against the chain as they
/// come (nothing broken is sealed); [`SegmentWriter::finish`] syncs it and renames it into
/// place.
pub struct SegmentWriter {
    header: Header,
    dir: PathBuf,
    partial: PathBuf,
    out: zstd::stream::write::Encoder<'static, BufWriter<std::fs::File>>,
    verifier: Verifier,
    name: String,
}

impl SegmentWriter {
    pub fn create(dir: &Path, header: Header) -> Result<SegmentWriter, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = segment_name(header.first, header.last);
        let partial = dir.join(format!(".{name}.partial"));
        let file = std::fs::File::create(&partial).map_err(io(&partial))?;
        let mut out = zstd::stream::write::Encoder::new(BufWriter::new(file), LEVEL).map_err(io(&partial))?;
        writeln!(out, "{}", header.render()).map_err(io(&partial))?;
        let verifier = Verifier::after(header.first - 1, header.prev);
        Ok(SegmentWriter { header, dir: dir.to_owned(), partial, out, verifier, name })
    }

    /// The next entry and its stored hash.
    pub fn push(&mut self, entry: &Entry<'_>, stored: Option<&[u8]>) -> Result<(), ArchiveError> {
        let bad = |why: String| ArchiveError::Bad { file: self.name.clone(), why };
        self.verifier.check(entry, stored).map_err(|e| bad(format!("refusing to seal a broken log: {e}")))?;
        let line = Line::render(entry, Some(&self.verifier.head())).map_err(bad)?;
        writeln!(self.out, "{line}").map_err(io(&self.partial))
    }

    /// Completes the segment; its name and chain head. Every entry of its range must have
    /// been pushed.
    pub fn finish(self) -> Result<(String, Hash), ArchiveError> {
        let SegmentWriter { header, dir, partial, out, verifier, name } = self;
        if verifier.next_seq() != header.last.checked_add(1) {
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
        Ok((name, verifier.head()))
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
        if (header.first, header.last) != (segment.first, segment.last) {
            return Err(bad(format!("its header says it holds {}..={}", header.first, header.last)));
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
        let mut writer = SegmentWriter::create(dir.path(), Header { first: 2, last: 3, prev: hashes[0] }).unwrap();
        for (i, (seq, (ts, payload))) in rows.iter().enumerate().skip(1) {
            let e =
                Entry { seq: *seq, ts, kind: "HostEvent", rollout_id: None, host: Some("a"), channel: None, payload };
            writer.push(&e, Some(&hashes[i])).unwrap();
        }
        let (name, head) = writer.finish().unwrap();
        assert_eq!((name.as_str(), head), ("log-2-3.jsonl.zst", hashes[2]));

        let segments = list(dir.path()).unwrap();
        assert_eq!(segments.len(), 1, "no temporary file is left behind");
        let mut reader = SegmentReader::open(&segments[0]).unwrap();
        assert_eq!(reader.header, Header { first: 2, last: 3, prev: hashes[0] });
        let mut verifier = Verifier::after(1, reader.header.prev);
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
        let mut writer = SegmentWriter::create(dir.path(), Header { first: 1, last: 1, prev: GENESIS }).unwrap();
        let err = writer.push(&e, Some(&[7; 32])).unwrap_err();
        assert!(err.to_string().contains("entry 1 is not as it was written"), "{err}");

        let writer = SegmentWriter::create(dir.path(), Header { first: 1, last: 2, prev: GENESIS }).unwrap();
        let err = writer.finish().unwrap_err();
        assert!(err.to_string().contains("were not all there"), "{err}");
        assert!(list(dir.path()).unwrap().is_empty());
    }
}
