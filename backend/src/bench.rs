//! `fleetwave bench ceilings`: what this machine can do at most for the two things the
//! control plane does per input, measured the same way as the control plane itself, so its
//! figures can be read as a share of the ceiling (issue 7):
//! - SQLite on this disk, same pragmas: a record upsert plus an event-log append per event,
//!   one transaction per event and grouped (512 per transaction, like the reducer's group
//!   commit at most);
//! - a bare axum route that only verifies an Ed25519-signed agent request and answers,
//!   driven by the simulator's signed HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::sim::client::{AgentClient, Answer};

#[derive(Debug, clap::Args)]
pub struct CeilingArgs {
    /// Events written per SQLite mode. Default: 20000.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Concurrent HTTP clients against the bare route. Default: 64.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of HTTP load. Default: 10.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// Events per second for `events` record upserts + log appends, `group` per transaction.
async fn sqlite_rate(events: usize, group: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let pool = crate::db::open(&dir.path().join("ceiling.db")).await?;
    sqlx::query("INSERT INTO rollouts (rollout_id, channel, state, current_wave, opened_seq, body) VALUES ('c@1', 'c', 'Active', 0, 1, '{}')")
        .execute(&pool)
        .await?;
    // A realistic record body and log payload (the sizes the reducer writes).
    let body = format!("{{\"state\":\"Soaking\",\"pad\":\"{}\"}}", "x".repeat(600));
    let payload = format!("{{\"event\":{{\"kind\":\"ProbeResult\"}},\"pad\":\"{}\"}}", "y".repeat(700));
    let started = Instant::now();
    let mut written = 0;
    while written < events {
        let mut tx = pool.begin().await?;
        for _ in 0..group.min(events - written) {
            let host = format!("h{:05}", written % 10_000);
            sqlx::query(
                "INSERT INTO host_records (rollout_id, hostname, state, body) VALUES ('c@1', ?, 'Soaking', ?)
                 ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body",
            )
            .bind(&host)
            .bind(&body)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO event_log (ts, kind, rollout_id, host, channel, payload) VALUES (?, 'HostEvent', 'c@1', ?, 'c', ?)")
                .bind(crate::db::store::ts(chrono::Utc::now()))
                .bind(&host)
                .bind(&payload)
                .execute(&mut *tx)
                .await?;
            written += 1;
        }
        tx.commit().await?;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// The bare route: verify the signature over the same string agents sign, answer `{}`.
async fn verify_only(key: Arc<VerifyingKey>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let digest = engine::verify::sha256_hex(&body);
    let ts: i64 = header(shared::agent::TIMESTAMP_HEADER).parse().unwrap_or(0);
    let message = shared::agent::signing_string("POST", "/api/v1/agent/heartbeat", ts, &digest);
    let Some(sig) = B64.decode(header(shared::agent::SIGNATURE_HEADER)).ok().and_then(|s| <[u8; 64]>::try_from(s).ok())
    else {
        return StatusCode::UNAUTHORIZED;
    };
    match key.verify_strict(message.as_bytes(), &Signature::from_bytes(&sig)) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

/// Requests per second and (p50, p99) ms of the bare signed route.
async fn http_rate(clients: usize, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let key = SigningKey::from_bytes(&[5u8; 32]);
    let verifying = Arc::new(key.verifying_key());
    let router = Router::new().route(
        "/api/v1/agent/heartbeat",
        post(move |headers: HeaderMap, body: Bytes| verify_only(verifying.clone(), headers, body)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = AgentClient::new(http.clone(), &format!("http://{addr}"), &format!("h{i}"), key.clone());
        let (stop, ok, latencies) = (stop.clone(), ok.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = serde_json::json!({"hostname": client.host(), "at": chrono::Utc::now(), "n": n});
                let (answer, took) = client.send(reqwest::Method::POST, "/api/v1/agent/heartbeat", Some(&body)).await;
                if matches!(answer, Answer::Ok(_)) {
                    ok.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut l) = latencies.lock() {
                        l.push(took.as_micros() as u64);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let at = |q: f64| l.get(((l.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0) as f64 / 1000.0;
    Ok((ok.load(Ordering::Relaxed) as f64 / elapsed, at(0.5), at(0.99)))
}

pub async fn ceilings(args: CeilingArgs) -> anyhow::Result<()> {
    let single = sqlite_rate(args.events.min(5_000), 1).await?;
    let grouped = sqlite_rate(args.events, 512).await?;
    println!("sqlite ceiling (record upsert + log append, WAL, synchronous=NORMAL):");
    println!("  one transaction per event: {single:.0} events/s");
    println!("  512 events per transaction: {grouped:.0} events/s");
    let (rate, p50, p99) = http_rate(args.clients, args.seconds).await?;
    println!("http ceiling (bare axum route verifying an Ed25519-signed request, {} clients):", args.clients);
    println!("  {rate:.0} requests/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    Ok(())
}
