//! Host search latency: `GET /api/v1/hosts` with each kind of filter, one request at a time
//! against the quiet server once the rollout phase has populated heartbeats and records
//! (each query asked once first, not counted).

use std::time::Instant;

use crate::sim::percentile_ms;

/// Requests per query.
const ROUNDS: usize = 20;

/// Latency of one query: its query string, hosts on its first page, p50 and p99.
#[derive(Debug, Clone)]
pub struct SearchLatency {
    pub query: String,
    pub found: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The queries an operator types, at fleet size `hosts` (named `sim-00000`… in name order).
fn queries(hosts: usize) -> Vec<String> {
    let middle = format!("sim-{:05}", hosts / 2);
    vec![
        // A hostname prefix: a range of the ordered map.
        format!("q={}", &middle[..middle.len() - 1]),
        // A page deep in the fleet.
        format!("after={middle}&limit=50"),
        "tag=cache".into(),
        // State sets: one that matches many hosts, one that matches none (every host walked).
        "state=Converged".into(),
        "state=Failed".into(),
        // Running closure: a scan of the heartbeats table.
        "closure=nixos-system-db".into(),
        "state=Pending&tag=batch&closure=initial".into(),
    ]
}

pub async fn measure(url: &str, token: &str, hosts: usize) -> anyhow::Result<Vec<SearchLatency>> {
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let mut out = Vec::new();
    for query in queries(hosts) {
        let mut samples = Vec::with_capacity(ROUNDS);
        let mut found = 0;
        // One request first, not counted: the connection, and the server's last writes of
        // the load phase before it.
        http.get(format!("{url}/api/v1/hosts?{query}")).bearer_auth(token).send().await?;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let answer = http.get(format!("{url}/api/v1/hosts?{query}")).bearer_auth(token).send().await?;
            anyhow::ensure!(answer.status().is_success(), "GET /api/v1/hosts?{query}: {}", answer.status());
            let page: shared::api::HostSearchPage = answer.json().await?;
            samples.push(started.elapsed().as_micros() as u64);
            found = page.hosts.len();
        }
        samples.sort_unstable();
        out.push(SearchLatency {
            query,
            found,
            p50_ms: percentile_ms(&samples, 0.5),
            p99_ms: percentile_ms(&samples, 0.99),
        });
    }
    Ok(out)
}
