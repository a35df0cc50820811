//! The ceilings Fleetwave's figures are judged against, measured on this machine the same way
//! as Fleetwave itself:
//! - SQLite on this disk with the control plane's pragmas: a record upsert plus an event-log
//!   append per event, one transaction per event and grouped (512 per transaction, the
//!   reducer's largest group), raw (rusqlite) and through sqlx;
//! - or, with `--db postgres://…`, the same writes on that PostgreSQL server (a database of
//!   the benchmark's own): one transaction per event, and grouped as rows (two statements an
//!   event) and as arrays (two statements a group, as Fleetwave's writer does);
//! - a bare axum route that only verifies an Ed25519-signed agent request and answers, driven
//!   by the same closed-loop heartbeat load as Fleetwave.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};

use super::load::{self, Rate};
use crate::sim::SimHost;

/// A realistic record body and log payload (the sizes the reducer writes: ~740 and ~1,100
/// bytes at 1,000 hosts).
fn row_bodies() -> (String, String) {
    let body = format!("{{\"state\":\"Soaking\",\"pad\":\"{}\"}}", "x".repeat(720));
    let payload = format!("{{\"event\":{{\"kind\":\"ProbeResult\"}},\"pad\":\"{}\"}}", "y".repeat(1_070));
    (body, payload)
}

/// Raw SQLite (the C library through rusqlite, prepared statements, no async hand-off):
/// events per second for `events` record upserts + log appends, `group` per transaction.
pub async fn raw_sqlite_rate(events: usize, group: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ceiling.db");
    crate::db::sqlite::open(&path, crate::db::BUSY_TIMEOUT).await?.close().await;
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut conn = crate::db::sqlite::connect(&path)?;
        conn.execute("INSERT INTO rollouts (rollout_id, channel, state, current_wave, opened_seq, body) VALUES ('c@1', 'c', 'Active', 0, 1, '{}')", [])?;
        let (body, payload) = row_bodies();
        let started = Instant::now();
        let mut written = 0;
        while written < events {
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO host_records (rollout_id, hostname, state, body) VALUES ('c@1', ?, 'Soaking', ?)
                     ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body",
                )?;
                let mut append = tx.prepare_cached(
                    "INSERT INTO event_log (ts, kind, rollout_id, host, channel, payload) VALUES (?, 'HostEvent', 'c@1', ?, 'c', ?)",
                )?;
                for _ in 0..group.min(events - written) {
                    let host = format!("h{:05}", written % 10_000);
                    upsert.execute(rusqlite::params![host, body])?;
                    append.execute(rusqlite::params![crate::db::store::ts(chrono::Utc::now()), host, payload])?;
                    written += 1;
                }
            }
            tx.commit()?;
        }
        Ok(events as f64 / started.elapsed().as_secs_f64())
    })
    .await?
}

/// The same through sqlx (the async driver of Fleetwave's reads, and of its writes before
/// issue 7): every statement is a round trip to sqlx's connection thread.
pub async fn sqlx_sqlite_rate(events: usize, group: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let pool = crate::db::sqlite::open(&dir.path().join("ceiling.db"), crate::db::BUSY_TIMEOUT).await?;
    sqlx::query("INSERT INTO rollouts (rollout_id, channel, state, current_wave, opened_seq, body) VALUES ('c@1', 'c', 'Active', 0, 1, '{}')")
        .execute(&pool)
        .await?;
    let (body, payload) = row_bodies();
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

/// How a PostgreSQL ceiling writes a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgGrouping {
    /// Two statements per event.
    Rows,
    /// Two statements per group: every row of a table in one `UNNEST`.
    Arrays,
}

/// Raw PostgreSQL (sqlx on one connection, as Fleetwave's writer): events per second for
/// `events` record upserts + log appends, `group` per transaction, on a database of its own
/// on `server`.
pub async fn raw_postgres_rate(server: &str, events: usize, group: usize, grouping: PgGrouping) -> anyhow::Result<f64> {
    use sqlx::Connection as _;
    let scratch = crate::db::postgres::Scratch::create(server, "fleetwave_ceiling").await?;
    crate::db::postgres::open(&scratch.url, crate::db::BUSY_TIMEOUT).await?.close().await;
    let mut conn = crate::db::postgres::connect(&scratch.url, crate::db::BUSY_TIMEOUT).await?;
    sqlx::query("INSERT INTO rollouts (rollout_id, channel, state, current_wave, opened_seq, body) VALUES ('c@1', 'c', 'Active', 0, 1, '{}')")
        .execute(&mut conn)
        .await?;
    let (body, payload) = row_bodies();
    let upsert = "INSERT INTO host_records (rollout_id, hostname, state, body) VALUES ('c@1', $1, 'Soaking', $2)
                  ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body";
    let append = "INSERT INTO event_log (seq, ts, kind, rollout_id, host, channel, payload, epoch) VALUES ($1, $2, 'HostEvent', 'c@1', $3, 'c', $4, 1)";
    let started = Instant::now();
    let mut written = 0;
    while written < events {
        let n = group.min(events - written);
        let hosts: Vec<String> = (written..written + n).map(|i| format!("h{:05}", i % 10_000)).collect();
        let mut tx = conn.begin().await?;
        match grouping {
            PgGrouping::Rows => {
                for (i, host) in hosts.iter().enumerate() {
                    sqlx::query(upsert).bind(host).bind(&body).execute(&mut *tx).await?;
                    let ts = crate::db::store::ts(chrono::Utc::now());
                    sqlx::query(append)
                        .bind((written + i + 1) as i64)
                        .bind(ts)
                        .bind(host)
                        .bind(&payload)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            PgGrouping::Arrays => {
                sqlx::query(
                    "INSERT INTO host_records (rollout_id, hostname, state, body)
                     SELECT 'c@1', h, 'Soaking', b FROM UNNEST($1::text[], $2::text[]) AS r (h, b)
                     ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body",
                )
                .bind(&hosts)
                .bind(vec![body.as_str(); n])
                .execute(&mut *tx)
                .await?;
                let seqs: Vec<i64> = (written + 1..=written + n).map(|s| s as i64).collect();
                let ts = crate::db::store::ts(chrono::Utc::now());
                sqlx::query(
                    "INSERT INTO event_log (seq, ts, kind, rollout_id, host, channel, payload, epoch)
                     SELECT s, $2, 'HostEvent', 'c@1', h, 'c', p, 1 FROM UNNEST($1::int8[], $3::text[], $4::text[]) AS r (s, h, p)",
                )
                .bind(seqs)
                .bind(ts)
                .bind(&hosts)
                .bind(vec![payload.as_str(); n])
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        written += n;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let _ = conn.close().await;
    drop(scratch);
    Ok(rate)
}

type Keys = Arc<HashMap<String, VerifyingKey>>;

/// The bare route: look up the host's key, verify the signature over the same string agents
/// sign, answer `{}`.
async fn verify_only(State(keys): State<Keys>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(key) = keys.get(header(shared::agent::HOST_HEADER)) else {
        return (StatusCode::UNAUTHORIZED, "{}");
    };
    let digest = engine::crypto::sha256_hex(&body);
    let ts: i64 = header(shared::agent::TIMESTAMP_HEADER).parse().unwrap_or(0);
    let message = shared::agent::signing_string("POST", shared::agent::HEARTBEAT_PATH, ts, &digest);
    let Some(sig) = B64.decode(header(shared::agent::SIGNATURE_HEADER)).ok().and_then(|s| <[u8; 64]>::try_from(s).ok())
    else {
        return (StatusCode::UNAUTHORIZED, "{}");
    };
    match key.verify_strict(message.as_bytes(), &Signature::from_bytes(&sig)) {
        Ok(()) => (StatusCode::OK, "{}"),
        Err(_) => (StatusCode::UNAUTHORIZED, "{}"),
    }
}

/// Heartbeats per second the bare signed route answers for `hosts` with `clients` in flight.
pub async fn http_rate(hosts: &[SimHost], clients: usize, duration: Duration) -> anyhow::Result<Rate> {
    let keys: Keys = Arc::new(hosts.iter().map(|h| (h.hostname.clone(), h.key.verifying_key())).collect());
    let router = Router::new().route(shared::agent::HEARTBEAT_PATH, post(verify_only)).with_state(keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let rate = load::heartbeats(&format!("http://{addr}"), hosts, clients, duration).await;
    server.abort();
    Ok(rate)
}
