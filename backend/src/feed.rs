//! The live feed (SPEC §10): committed event-log entries fanned out to SSE clients.
//!
//! The reducer publishes each committed entry once on a bounded broadcast channel, already
//! rendered to its whole SSE frame (serialised once, shared by every client: with 50
//! dashboards open, rendering per client cost more than the rest of the server together,
//! and even copying the rendered JSON into an SSE event per client was measurable); a frame
//! carries the record as its cell and the rollout as its header (`sent_payload`), and a
//! client writes what is already published as one chunk (`FeedState::next_chunk`). A client
//! that resumes with `Last-Event-ID: n` subscribes first, then backfills entries after `n`
//! from the database, then follows the live channel skipping what the backfill already sent:
//! no gap, no duplicate. A client that falls more than the channel's capacity behind is cut
//! off (the broadcast reports the lag) so it reconnects and backfills; nothing is skipped
//! silently. A client that resumes from before the first entry the database still holds (the
//! rest were sealed into the archive, SPEC §16) gets an `event: reset` frame whose `id` is
//! the seq before that entry and whose data names it (`{"firstSeq": n}`): it reloads what it
//! shows, and the stream goes on from there.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use serde_json::value::RawValue;
use shared::api::{HostCell, LogEvent, RolloutHeader};

use crate::db::{Store, store};
use crate::metrics::Metrics;

/// Live entries a client may fall behind by before it is disconnected.
pub const FEED_CAPACITY: usize = 4096;
/// Rows read per backfill query.
const BACKFILL_PAGE: i64 = 500;
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Entries taken from the live channel at a time, and bytes sent as one chunk at most: a
/// client writes a committed group in one chunk instead of one per entry.
const CHUNK_ENTRIES: usize = 64;
const CHUNK_BYTES: usize = 64 * 1024;

/// A committed entry as clients receive it: its seq and its SSE frame
/// (`id: {seq}`, `event: {topic}`, `data: {json}`).
#[derive(Debug)]
pub struct FeedEntry {
    pub seq: i64,
    pub frame: Bytes,
}

impl FeedEntry {
    pub fn render(entry: &LogEvent) -> FeedEntry {
        // serde_json escapes line breaks inside strings, so the JSON is a single `data:` line.
        let json = match sent_payload(&entry.payload) {
            Some(payload) => serde_json::to_string(&LogEvent { payload, ..entry.clone() }),
            None => serde_json::to_string(entry),
        }
        .unwrap_or_else(|_| "{}".into());
        let frame = format!("id: {}\nevent: {}\ndata: {json}\n\n", entry.seq, entry.kind.topic().as_str());
        FeedEntry { seq: entry.seq, frame: Bytes::from(frame) }
    }
}

impl FeedEntry {
    /// The frame that tells a client its resume point was sealed out of the database: it
    /// reloads, and resumes before `first` (the frame's id).
    pub fn reset(first: i64) -> FeedEntry {
        let seq = first - 1;
        let frame = format!("id: {seq}\nevent: reset\ndata: {{\"firstSeq\":{first}}}\n\n");
        FeedEntry { seq, frame: Bytes::from(frame) }
    }
}

/// What a message carries of a stored payload: the entry's own fields as they were stored, the
/// record it changed as its cell ([`HostCell`]) and the rollout as its header
/// ([`RolloutHeader`]) — what the dashboard and `ctl watch` apply. The stored payload carries
/// the whole record, probes, timestamps and all (the log is what a restart reads records
/// back from); sent as it is, a host entry's frame was ~1.3 KB, more than half of it fields
/// no reader of the feed looks at, written to every client. `None`: the payload carries neither
/// (or is not an object this reads), and is sent as stored.
fn sent_payload(stored: &RawValue) -> Option<Box<RawValue>> {
    let Fields(fields) = serde_json::from_str(stored.get()).ok()?;
    if !fields.iter().any(|(key, _)| matches!(*key, "record" | "rollout")) {
        return None;
    }
    let mut out = String::with_capacity(stored.get().len());
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Keys were read borrowed, so they hold no escapes: quoted as they are.
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        match *key {
            "record" => {
                out.push_str(&serde_json::to_string(&serde_json::from_str::<HostCell>(value.get()).ok()?).ok()?)
            }
            "rollout" => {
                out.push_str(&serde_json::to_string(&serde_json::from_str::<RolloutHeader>(value.get()).ok()?).ok()?)
            }
            _ => out.push_str(value.get()),
        }
    }
    out.push('}');
    RawValue::from_string(out).ok()
}

/// A JSON object's fields in order, each value as its text.
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<&'de str, &'de RawValue>()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The comment a quiet stream sends so that proxies keep the connection open.
const KEEP_ALIVE_FRAME: &[u8] = b":\n\n";

#[derive(Clone)]
pub struct FeedHub {
    tx: broadcast::Sender<Arc<FeedEntry>>,
    /// The last seq published: what the webhooks' deliverers wait on (they read the entries
    /// from the log, so nothing is rendered for them).
    committed: tokio::sync::watch::Sender<i64>,
}

impl Default for FeedHub {
    fn default() -> Self {
        Self::new(FEED_CAPACITY)
    }
}

impl FeedHub {
    pub fn new(capacity: usize) -> FeedHub {
        FeedHub { tx: broadcast::channel(capacity).0, committed: tokio::sync::watch::Sender::new(0) }
    }

    /// Called by the reducer after each commit, in seq order.
    pub fn publish(&self, entries: &[LogEvent]) {
        if let Some(last) = entries.last() {
            self.committed.send_replace(last.seq);
        }
        if self.tx.receiver_count() == 0 {
            return; // Nobody is watching: nothing to render.
        }
        for entry in entries {
            let _ = self.tx.send(Arc::new(FeedEntry::render(entry)));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEntry>> {
        self.tx.subscribe()
    }

    /// Changes after each publish (its value: the last seq published).
    pub fn committed(&self) -> tokio::sync::watch::Receiver<i64> {
        self.committed.subscribe()
    }
}

enum Phase {
    /// A resume not yet checked against what retention left.
    Resume {
        after: i64,
    },
    Backfill {
        after: i64,
    },
    Live,
    Done,
}

struct FeedState {
    store: Store,
    rx: broadcast::Receiver<Arc<FeedEntry>>,
    last_sent: i64,
    buffer: std::collections::VecDeque<Arc<FeedEntry>>,
    phase: Phase,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Drop for FeedState {
    fn drop(&mut self) {
        self.metrics.feed_clients.dec();
    }
}

impl FeedState {
    /// Queues a live entry unless the backfill already has it.
    fn queue(&mut self, entry: Arc<FeedEntry>) {
        if entry.seq > self.buffer.back().map_or(self.last_sent, |e| e.seq) {
            self.buffer.push_back(entry);
        }
    }

    /// Takes what is already published without waiting (nor arming the keep-alive timer), so
    /// that a group the reducer committed together leaves in one chunk.
    fn take_published(&mut self) {
        while self.buffer.len() < CHUNK_ENTRIES {
            match self.rx.try_recv() {
                Ok(entry) => self.queue(entry),
                Err(broadcast::error::TryRecvError::Empty) => return,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => return self.cut_off(missed),
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.phase = Phase::Done;
                    return;
                }
            }
        }
    }

    /// Ends the stream of a client that fell behind (after what is queued): it resumes from
    /// the last entry it got.
    fn cut_off(&mut self, missed: u64) {
        tracing::info!(missed, last_sent = self.last_sent, "feed client fell behind; disconnecting it so it resumes");
        self.metrics.feed_disconnects.inc();
        self.phase = Phase::Done;
    }

    /// The queued frames as one chunk (at most [`CHUNK_BYTES`] unless one frame is larger). A
    /// single frame is sent as the shared buffer itself: a reference count, not a copy.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let first = self.buffer.pop_front()?;
        self.last_sent = first.seq;
        if self.buffer.is_empty() {
            return Some(first.frame.clone());
        }
        let queued = self.buffer.iter().map(|e| e.frame.len()).sum::<usize>();
        let mut chunk = Vec::with_capacity((first.frame.len() + queued).min(CHUNK_BYTES));
        chunk.extend_from_slice(&first.frame);
        while let Some(next) = self.buffer.front()
            && chunk.len() + next.frame.len() <= CHUNK_BYTES
        {
            chunk.extend_from_slice(&next.frame);
            self.last_sent = next.seq;
            self.buffer.pop_front();
        }
        Some(Bytes::from(chunk))
    }
}

/// The SSE response for one client. `resume_after` is its `Last-Event-ID`, if any.
pub fn stream(
    hub: FeedHub,
    store: Store,
    resume_after: Option<i64>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> impl IntoResponse {
    // Subscribe before backfilling so nothing committed in between is missed.
    let rx = hub.subscribe();
    metrics.feed_clients.inc();
    let phase = match resume_after {
        Some(after) => Phase::Resume { after },
        None => Phase::Live,
    };
    let state = FeedState {
        store,
        rx,
        last_sent: resume_after.unwrap_or(i64::MIN),
        buffer: Default::default(),
        phase,
        shutdown,
        metrics,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if matches!(st.phase, Phase::Live) {
                st.take_published();
            }
            if let Some(chunk) = st.next_chunk() {
                return Some((Ok::<_, Infallible>(chunk), st));
            }
            match st.phase {
                Phase::Done => return None,
                Phase::Resume { after } => {
                    match crate::db::retention::sealed_before(&st.store, after.saturating_add(1)).await {
                        Ok(None) => st.phase = Phase::Backfill { after },
                        Ok(Some(first)) => {
                            st.buffer.push_back(Arc::new(FeedEntry::reset(first)));
                            st.phase = Phase::Backfill { after: first - 1 };
                        }
                        Err(err) => {
                            tracing::warn!(%err, "feed resume failed; closing the stream so the client retries");
                            st.phase = Phase::Done;
                        }
                    }
                }
                Phase::Backfill { after } => match store::log_after(&st.store, after, BACKFILL_PAGE).await {
                    Ok(rows) if rows.is_empty() => st.phase = Phase::Live,
                    Ok(rows) => {
                        let last = rows.last().map_or(after, |r| r.seq);
                        st.buffer.extend(rows.iter().map(|r| Arc::new(FeedEntry::render(r))));
                        st.phase = Phase::Backfill { after: last };
                    }
                    Err(err) => {
                        tracing::warn!(%err, "feed backfill failed; closing the stream so the client retries");
                        st.phase = Phase::Done;
                    }
                },
                Phase::Live => {
                    let next = tokio::select! {
                        () = st.shutdown.cancelled() => { st.phase = Phase::Done; continue; }
                        () = tokio::time::sleep(KEEP_ALIVE) => {
                            return Some((Ok(Bytes::from_static(KEEP_ALIVE_FRAME)), st));
                        }
                        next = st.rx.recv() => next,
                    };
                    match next {
                        Ok(entry) => st.queue(entry),
                        Err(broadcast::error::RecvError::Lagged(missed)) => st.cut_off(missed),
                        Err(broadcast::error::RecvError::Closed) => st.phase = Phase::Done,
                    }
                }
            }
        }
    });
    ([(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")], Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn host_entry(seq: i64, payload: store::Payload) -> LogEvent {
        LogEvent {
            seq,
            ts: chrono::Utc::now(),
            kind: shared::log::LogKind::HostEvent,
            rollout_id: Some(shared::RolloutId::parse("stable@a1").unwrap()),
            host: Some(shared::Hostname::parse("a").unwrap()),
            channel: None,
            payload,
        }
    }

    /// The `data` of one frame, as a client reads it.
    fn sent(frame: &[u8]) -> LogEvent {
        let text = std::str::from_utf8(frame).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        serde_json::from_str(data).unwrap()
    }

    /// A client's stream without `Last-Event-ID`: live entries only.
    fn live_stream(hub: &FeedHub) -> axum::response::Response {
        // Never touched: a stream without Last-Event-ID does not backfill.
        let store = Store::Sqlite(sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap());
        stream(hub.clone(), store, None, CancellationToken::new(), Arc::new(Metrics::default())).into_response()
    }

    async fn next_frame(body: &mut Body) -> Bytes {
        body.frame().await.expect("the stream ended").expect("infallible").into_data().expect("a data frame")
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_a_keep_alive_comment_and_entries_as_their_shared_frames() {
        let hub = FeedHub::new(16);
        let response = live_stream(&hub);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        let mut body = response.into_body();

        // Nothing committed for the keep-alive interval (the paused clock jumps to it).
        let started = tokio::time::Instant::now();
        assert_eq!(&next_frame(&mut body).await[..], b":\n\n");
        assert!(started.elapsed() >= KEEP_ALIVE);

        let entry = host_entry(7, store::payload(&serde_json::json!({ "note": "two\nlines" })));
        hub.publish(std::slice::from_ref(&entry));
        let frame = next_frame(&mut body).await;
        let text = std::str::from_utf8(&frame).unwrap();
        let data = text.strip_prefix("id: 7\nevent: host\ndata: ").and_then(|t| t.strip_suffix("\n\n")).unwrap();
        assert!(!data.contains('\n'), "the JSON must be one data line: {text}");
        let sent: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!((sent["seq"].as_i64(), sent["payload"]["note"].as_str()), (Some(7), Some("two\nlines")));
    }

    #[test]
    fn a_message_carries_the_entry_with_the_cell_and_header_its_readers_apply() {
        use shared::log::{DispatchQueued, LogEntry, StoredPayload};
        let now = chrono::Utc::now();
        let id = shared::RolloutId::parse("stable@a1").unwrap();
        let closure = shared::Closure::parse("/nix/store/68150cfc45bd62a7a166bb670b0a71ae-nixos-system-db").unwrap();
        let mut record = engine::host::HostRecord::pending(
            id.clone(),
            shared::Hostname::parse("a").unwrap(),
            shared::Channel::parse("stable").unwrap(),
            closure.clone(),
            now,
        );
        record.last_event_seq = 4;
        record.waiting_on = None;
        let rollout = engine::rollout::Rollout::open(id, shared::Channel::parse("stable").unwrap(), 1, now);
        let entry = LogEntry::DispatchQueued(DispatchQueued { target_closure: closure, soak_seconds: 60 });
        let stored = LogEvent {
            kind: entry.kind(),
            ..host_entry(
                9,
                store::payload(&StoredPayload { entry: &entry, record: Some(&record), rollout: Some(&rollout) }),
            )
        };

        let message = sent(&FeedEntry::render(&stored).frame);
        assert!(message.payload.get().len() < stored.payload.get().len() / 2, "{}", message.payload.get());
        for dropped in ["probes", "lastProgressAt", "currentClosureAtDispatch", "dispatch\"", "openedSeq"] {
            assert!(!message.payload.get().contains(dropped), "{dropped} sent: {}", message.payload.get());
        }
        // The entry itself, the cell and the header read the same as from the stored payload.
        assert_eq!(message.entry().unwrap(), entry);
        let read = |e: &LogEvent| e.carried::<HostCell, RolloutHeader>().unwrap();
        let (from_message, from_stored) = (read(&message), read(&stored));
        assert!(from_message.record.is_some() && from_message.rollout.is_some());
        assert_eq!(from_message, from_stored);
        assert_eq!((message.seq, message.kind, &message.rollout_id), (9, stored.kind, &stored.rollout_id));

        // A payload that carries neither goes as it was stored.
        let plain = host_entry(10, store::payload(&serde_json::json!({ "reason": "r" })));
        assert_eq!(sent(&FeedEntry::render(&plain).frame).payload.get(), plain.payload.get());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_published_together_leave_in_one_chunk_and_a_lagging_client_gets_what_it_had_then_the_end() {
        let hub = FeedHub::new(4);
        let mut body = live_stream(&hub).into_body();

        let group: Vec<LogEvent> = (1..=3).map(|seq| host_entry(seq, store::payload(&serde_json::json!({})))).collect();
        hub.publish(&group);
        let chunk = next_frame(&mut body).await;
        let text = std::str::from_utf8(&chunk).unwrap();
        let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
        assert_eq!(ids, ["1", "2", "3"], "{text}");
        assert_eq!(text.matches("\n\n").count(), 3, "{text}");

        // Six more than the channel holds: the client is cut off, after nothing it missed.
        let burst: Vec<LogEvent> =
            (4..=10).map(|seq| host_entry(seq, store::payload(&serde_json::json!({})))).collect();
        hub.publish(&burst);
        assert!(body.frame().await.is_none(), "a client that lagged must be disconnected");
    }
}
