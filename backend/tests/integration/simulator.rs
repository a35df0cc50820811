//! The simulator speaks the real agent protocol: a fleet converges through it, also with
//! agent restarts and lost, duplicated and reordered event posts; `fleetwave simulate` runs
//! as a separate process and reports its figures.

use std::time::Duration;

use crate::common::spawn_with;
use backend::sim::{self, Behaviour, SimHost};
use engine::testkit::{FleetBuilder, host_key};
use tokio_util::sync::CancellationToken;

const N: usize = 12;

fn fleet() -> FleetBuilder {
    let mut b =
        FleetBuilder::new().policy("p", &[(0, false), (0, false)], "rollback-and-halt", 30).channel("stable", "p");
    let names: Vec<String> = (0..N).map(|i| format!("h{i:02}")).collect();
    for n in &names {
        b = b.host(n, "stable", &["web"]);
    }
    let (w0, w1): (Vec<&str>, Vec<&str>) =
        (names[..4].iter().map(String::as_str).collect(), names[4..].iter().map(String::as_str).collect());
    b.waves("stable", &[&w0, &w1]).budget("web", serde_json::json!({"tags": ["web"]}), 5)
}

fn hosts() -> Vec<SimHost> {
    (0..N)
        .map(|i| format!("h{i:02}"))
        .map(|h| SimHost { key: host_key(&h), hostname: h, initial_closure: "/nix/store/old".into() })
        .collect()
}

async fn completes(app: &crate::common::TestApp, limit: Duration) -> bool {
    let mut feed = app.state.feed.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if app.rollout("stable@a1").await["state"] == "Completed" {
            return true;
        }
        if tokio::time::timeout_at(deadline, feed.recv()).await.is_err() {
            return false;
        }
    }
}

#[tokio::test]
async fn a_simulated_fleet_converges_through_the_agent_protocol() {
    let app = spawn_with(crate::common::Options { plan_tick_ms: 100, ..Default::default() }, None).await;
    app.upload(&fleet(), "a1").await;
    let stop = CancellationToken::new();
    let behaviour = Behaviour { time_scale: 0.02, ..Behaviour::default() };
    let (stats, tasks) = sim::spawn(std::slice::from_ref(&app.base), hosts(), 1, behaviour, stop.clone());
    assert!(completes(&app, Duration::from_secs(30)).await, "the rollout did not complete");
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let summary = sim::summary(&stats, Duration::from_secs(1));
    assert_eq!(stats.converged.load(std::sync::atomic::Ordering::Relaxed), N as u64, "{summary}");
    assert_eq!(stats.events_refused.load(std::sync::atomic::Ordering::Relaxed), 0, "{summary}");
    // The log shows the protocol: ack, started, completed, probes, converged.
    let kinds: Vec<String> = app
        .log()
        .await
        .iter()
        .filter(|e| e.host_is("h00"))
        .filter_map(|e| e.host_event().map(|h| h.event.kind().to_owned()))
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("DispatchAck"));
    assert!(kinds.contains(&"ActivationStarted".into()) && kinds.contains(&"ProbeResult".into()));
    assert_eq!(kinds.last().map(String::as_str), Some("Converged"));
}

#[tokio::test]
async fn restarts_and_lost_duplicated_or_reordered_posts_still_converge() {
    let app = spawn_with(crate::common::Options { plan_tick_ms: 100, ..Default::default() }, None).await;
    app.upload(&fleet(), "a1").await;
    let stop = CancellationToken::new();
    let behaviour = Behaviour {
        time_scale: 0.02,
        restart: 0.1,
        lose_event: 0.2,
        duplicate_event: 0.3,
        reorder_event: 0.2,
        deferral: 0.2,
        ..Behaviour::default()
    };
    let (stats, tasks) = sim::spawn(std::slice::from_ref(&app.base), hosts(), 3, behaviour, stop.clone());
    let done = completes(&app, Duration::from_secs(45)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let summary = sim::summary(&stats, Duration::from_secs(1));
    assert!(done, "the rollout did not complete under chaos: {summary}");
    let dupes = stats.events_duplicate.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dupes > 0, "duplicates were sent and answered `duplicate`: {summary}");
    assert!(stats.restarts.load(std::sync::atomic::Ordering::Relaxed) > 0, "{summary}");
}

#[tokio::test]
async fn simulate_runs_as_a_separate_process_and_reports_throughput_and_latency() {
    let app = spawn_with(crate::common::Options { plan_tick_ms: 100, ..Default::default() }, None).await;
    app.upload(&fleet(), "a1").await;
    let keys = tempfile::tempdir().unwrap();
    for i in 0..N {
        let h = format!("h{i:02}");
        std::fs::write(keys.path().join(format!("{h}.key")), engine::sign::encode_signing_key(&host_key(&h))).unwrap();
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args([
            "simulate",
            "--url",
            &app.base,
            "--seed",
            "5",
            "--time-scale",
            "0.02",
            "--duration-secs",
            "8",
            "--fleet-keys",
        ])
        .arg(keys.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(
        summary.contains("heartbeats (") && summary.contains("/s; p50") && summary.contains("12 converged"),
        "{summary}"
    );
    assert_eq!(app.rollout("stable@a1").await["state"], "Completed");
}
