//! Live-feed watchers: `n` SSE clients on `/api/v1/feed`, as many dashboards would be. Each
//! counts the entries it receives and how long after commit they arrived. They share the
//! machine with the server, so they read the stream as cheaply as possible: split into lines,
//! count the `data:` lines, and parse the commit time of every 16th.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::sim::percentile_ms;

pub struct FeedWatchers {
    received: Vec<Arc<AtomicU64>>,
    connected: Arc<AtomicUsize>,
    /// Commit-to-client delay of every 16th entry per client, in microseconds.
    delays_us: Arc<std::sync::Mutex<Vec<u64>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone, Default)]
pub struct FanOut {
    pub clients: usize,
    pub connected_at_end: usize,
    /// Entries received by the client that got the fewest / the most.
    pub fewest: u64,
    pub most: u64,
    pub deliveries_per_second: f64,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
}

/// The `ts` field of an entry's JSON, without parsing the rest.
fn committed_at(data: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let rest = &data[data.find("\"ts\":\"")? + 6..];
    rest[..rest.find('"')?].parse().ok()
}

impl FeedWatchers {
    pub async fn connect(url: &str, token: &str, n: usize) -> anyhow::Result<FeedWatchers> {
        let http = reqwest::Client::new();
        let connected = Arc::new(AtomicUsize::new(0));
        let delays_us = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let mut received = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let response =
                http.get(format!("{url}/api/v1/feed")).bearer_auth(token).send().await?.error_for_status()?;
            let count = Arc::new(AtomicU64::new(0));
            received.push(count.clone());
            let (connected, delays_us, stop) = (connected.clone(), delays_us.clone(), stop.clone());
            connected.fetch_add(1, Ordering::Relaxed);
            tasks.push(tokio::spawn(async move {
                let mut chunks = response.bytes_stream();
                let mut partial: Vec<u8> = Vec::new();
                loop {
                    let chunk = tokio::select! {
                        () = stop.cancelled() => return,
                        chunk = chunks.next() => chunk,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    partial.extend_from_slice(&chunk);
                    let Some(end) = partial.iter().rposition(|&b| b == b'\n') else { continue };
                    for line in partial[..end].split(|&b| b == b'\n') {
                        let Some(data) = line.strip_prefix(b"data:") else { continue };
                        let n = count.fetch_add(1, Ordering::Relaxed);
                        if n.is_multiple_of(16)
                            && let Some(at) = std::str::from_utf8(data).ok().and_then(committed_at)
                            && let Ok(delay) = (chrono::Utc::now() - at).to_std()
                            && let Ok(mut d) = delays_us.lock()
                        {
                            d.push(delay.as_micros() as u64);
                        }
                    }
                    partial.drain(..=end);
                }
                // The server closed the stream (cut off for lagging, or stopped).
                connected.fetch_sub(1, Ordering::Relaxed);
            }));
        }
        Ok(FeedWatchers { received, connected, delays_us, stop, tasks })
    }

    /// What the clients saw since they connected, over `seconds`.
    pub fn fan_out(&self, seconds: f64) -> FanOut {
        let counts: Vec<u64> = self.received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        let mut delays = self.delays_us.lock().map(|d| d.clone()).unwrap_or_default();
        delays.sort_unstable();
        FanOut {
            clients: counts.len(),
            connected_at_end: self.connected.load(Ordering::Relaxed),
            fewest: counts.iter().copied().min().unwrap_or(0),
            most: counts.iter().copied().max().unwrap_or(0),
            deliveries_per_second: counts.iter().sum::<u64>() as f64 / seconds.max(1e-9),
            delay_p50_ms: percentile_ms(&delays, 0.5),
            delay_p99_ms: percentile_ms(&delays, 0.99),
        }
    }

    pub async fn close(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
