//! The live feed (SPEC §10): committed event-log entries fanned out to SSE clients.
//!
//! The reducer publishes each committed entry once on a bounded broadcast channel, already
//! rendered to its whole SSE frame (serialised once, shared by every client: with 50
//! dashboards open, rendering per client cost more than the rest of the server together,
//! and even copying the rendered JSON into an SSE event per client was measurable). A client
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

use shared::api::LogEvent;

use crate::db::{Store, store};
use crate::metrics::Metrics;

/// Live entries a client may fall behind by before it is disconnected.
pub const FEED_CAPACITY: usize = 4096;
/// Rows read per backfill query.
const BACKFILL_PAGE: i64 = 500;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
        let json = serde_json::to_string(entry).unwrap_or_else(|_| "{}".into());
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
            if let Some(entry) = st.buffer.pop_front() {
                st.last_sent = entry.seq;
                // Each client sends the shared frame: a reference count, not a copy.
                return Some((Ok::<_, Infallible>(entry.frame.clone()), st));
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
                        Ok(entry) if entry.seq <= st.last_sent => {}
                        Ok(entry) => st.buffer.push_back(entry),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::info!(
                                missed,
                                last_sent = st.last_sent,
                                "feed client fell behind; disconnecting it so it resumes"
                            );
                            st.metrics.feed_disconnects.inc();
                            st.phase = Phase::Done;
                        }
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

    async fn next_frame(body: &mut Body) -> Bytes {
        body.frame().await.expect("the stream ended").expect("infallible").into_data().expect("a data frame")
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_a_keep_alive_comment_and_entries_as_their_shared_frames() {
        let hub = FeedHub::new(16);
        // Never touched: a stream without Last-Event-ID does not backfill.
        let store = Store::Sqlite(sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap());
        let response =
            stream(hub.clone(), store, None, CancellationToken::new(), Arc::new(Metrics::default())).into_response();
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        let mut body = response.into_body();

        // Nothing committed for the keep-alive interval (the paused clock jumps to it).
        let started = tokio::time::Instant::now();
        assert_eq!(&next_frame(&mut body).await[..], b":\n\n");
        assert!(started.elapsed() >= KEEP_ALIVE);

        let entry = LogEvent {
            seq: 7,
            ts: chrono::Utc::now(),
            kind: shared::log::LogKind::HostEvent,
            rollout_id: Some(shared::RolloutId::parse("stable@a1").unwrap()),
            host: Some(shared::Hostname::parse("a").unwrap()),
            channel: None,
            payload: store::payload(&serde_json::json!({ "note": "two\nlines" })),
        };
        hub.publish(std::slice::from_ref(&entry));
        let frame = next_frame(&mut body).await;
        let text = std::str::from_utf8(&frame).unwrap();
        let data = text.strip_prefix("id: 7\nevent: host\ndata: ").and_then(|t| t.strip_suffix("\n\n")).unwrap();
        assert!(!data.contains('\n'), "the JSON must be one data line: {text}");
        let sent: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!((sent["seq"].as_i64(), sent["payload"]["note"].as_str()), (Some(7), Some("two\nlines")));
    }
}
