//! The live feed (SPEC §10): committed event-log entries fanned out to SSE clients.
//!
//! The reducer publishes each committed entry once on a bounded broadcast channel, already
//! rendered to its JSON (serialised once, shared by every client: with 50 dashboards open,
//! rendering per client cost more than the rest of the server together). A client
//! that resumes with `Last-Event-ID: n` subscribes first, then backfills entries after `n`
//! from the database, then follows the live channel skipping what the backfill already sent:
//! no gap, no duplicate. A client that falls more than the channel's capacity behind is cut
//! off (the broadcast reports the lag) so it reconnects and backfills; nothing is skipped
//! silently.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use sqlx::SqlitePool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::store::{self, LogEntry};
use crate::metrics::Metrics;

/// Live entries a client may fall behind by before it is disconnected.
pub const FEED_CAPACITY: usize = 4096;
/// Rows read per backfill query.
const BACKFILL_PAGE: i64 = 500;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// SSE `event:` name of a log entry kind.
pub fn category(kind: &str) -> &'static str {
    match kind {
        "HostEvent" | "DispatchQueued" | "DispatchWithdrawn" | "HostExcused" | "HostStuck" | "HostUnstuck" => "host",
        "RolloutOpened" | "RolloutStateChanged" | "WaveAdvanced" | "WaveApproved" => "rollout",
        "HostHeld" => "hold",
        "QuarantineAdded" | "QuarantineReleased" => "quarantine",
        "OperatorAction" => "operator",
        "ManifestSetUpdated" => "manifest",
        "HostOnline" | "HostOffline" => "presence",
        _ => "host",
    }
}

/// A committed entry as clients receive it: its seq, SSE event name and JSON.
#[derive(Debug)]
pub struct FeedEntry {
    pub seq: i64,
    pub category: &'static str,
    pub json: String,
}

impl FeedEntry {
    pub fn render(entry: &LogEntry) -> FeedEntry {
        FeedEntry {
            seq: entry.seq,
            category: category(&entry.kind),
            json: serde_json::to_string(entry).unwrap_or_else(|_| "{}".into()),
        }
    }
}

#[derive(Clone)]
pub struct FeedHub {
    tx: broadcast::Sender<Arc<FeedEntry>>,
}

impl Default for FeedHub {
    fn default() -> Self {
        Self::new(FEED_CAPACITY)
    }
}

impl FeedHub {
    pub fn new(capacity: usize) -> FeedHub {
        FeedHub { tx: broadcast::channel(capacity).0 }
    }

    /// Called by the reducer after each commit, in seq order.
    pub fn publish(&self, entries: &[LogEntry]) {
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
}

fn to_event(entry: &FeedEntry) -> Event {
    Event::default().id(entry.seq.to_string()).event(entry.category).data(&entry.json)
}

enum Phase {
    Backfill { after: i64 },
    Live,
    Done,
}

struct FeedState {
    pool: SqlitePool,
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
    pool: SqlitePool,
    resume_after: Option<i64>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before backfilling so nothing committed in between is missed.
    let rx = hub.subscribe();
    metrics.feed_clients.inc();
    let phase = match resume_after {
        Some(after) => Phase::Backfill { after },
        None => Phase::Live,
    };
    let state = FeedState {
        pool,
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
                return Some((Ok(to_event(&entry)), st));
            }
            match st.phase {
                Phase::Done => return None,
                Phase::Backfill { after } => match store::log_after(&st.pool, after, BACKFILL_PAGE).await {
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
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
