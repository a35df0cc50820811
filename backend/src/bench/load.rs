//! Closed-loop signed load: `clients` workers, each sending heartbeats for its share of the
//! hosts back to back (a request goes as soon as the previous answer came). The same driver
//! runs against Fleetwave and against the bare signed route, so the two figures compare.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::sim::client::AgentClient;
use crate::sim::{SimHost, percentile_ms};

/// Requests answered 2xx per second and their latency.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    pub ok: u64,
    pub failed: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Rate {
    pub fn from_samples(ok: u64, failed: u64, elapsed: Duration, mut latencies_us: Vec<u64>) -> Rate {
        latencies_us.sort_unstable();
        let (p50_ms, p99_ms) = (percentile_ms(&latencies_us, 0.5), percentile_ms(&latencies_us, 0.99));
        Rate { ok, failed, per_second: ok as f64 / elapsed.as_secs_f64().max(1e-9), p50_ms, p99_ms }
    }
}

/// Heartbeats from `hosts` against `url` for `duration` with `clients` requests in flight.
/// Each host reports its initial closure and no rollout (an idle agent's heartbeat).
pub async fn heartbeats(url: &str, hosts: &[SimHost], clients: usize, duration: Duration) -> Rate {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap_or_default();
    let clients = clients.clamp(1, hosts.len().max(1));
    let hosts: Arc<Vec<(AgentClient, String)>> = Arc::new(
        hosts
            .iter()
            .map(|h| (AgentClient::new(http.clone(), url, &h.hostname, h.key.clone()), h.initial_closure.clone()))
            .collect(),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let hosts = hosts.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
                let mut next = worker;
                while Instant::now() < deadline && !hosts.is_empty() {
                    let (client, closure) = &hosts[next % hosts.len()];
                    next += clients;
                    let body = json!({"hostname": client.host(), "currentClosure": closure, "at": chrono::Utc::now()});
                    // Any JSON answer counts (the bare ceiling route answers `{}`).
                    let (answer, took) =
                        client.post::<_, serde::de::IgnoredAny>(shared::agent::HEARTBEAT_PATH, &body).await;
                    if answer.is_ok() {
                        ok += 1;
                        latencies.push(took.as_micros() as u64);
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed, latencies)
            })
        })
        .collect();
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for worker in workers {
        if let Ok((o, f, l)) = worker.await {
            ok += o;
            failed += f;
            latencies.extend(l);
        }
    }
    Rate::from_samples(ok, failed, started.elapsed(), latencies)
}
