//! Stuck detection (visible in the API and in metrics), its effect on budgets, and the
//! Prometheus metrics.

use crate::common::spawn_app;
use engine::testkit::FleetBuilder;
use serde_json::json;
use shared::log::LogEntry;

fn fleet() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &["web"])
        .host("b", "stable", &["web"])
        .budget("web", json!({"tags": ["web"]}), 1)
}

#[tokio::test]
async fn a_silent_activating_host_is_flagged_stuck_and_stops_holding_the_budget() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    a.heartbeat(None, None).await;
    a.event("stable@a1", "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": app.clock.now()}))
        .await;
    assert_eq!(app.cell("stable@a1", "b").await["waitingOn"]["gate"], "budget");

    app.advance(29 * 60);
    app.tick().await;
    assert_eq!(app.cell("stable@a1", "a").await["stuck"], false);
    app.advance(60);
    app.tick().await;
    let cell = app.cell("stable@a1", "a").await;
    assert_eq!((cell["state"].as_str(), cell["stuck"].as_bool()), (Some("Activating"), Some(true)));
    assert!(app.log().await.iter().any(|e| matches!(e.entry, LogEntry::HostStuck(_)) && e.host_is("a")));
    // The rollouts list says it too, with the wave's counts (what the fleet page draws).
    let (_, list) = app.get("/api/v1/rollouts").await;
    assert_eq!(list[0]["stuck"], json!(["a"]), "{list}");
    assert_eq!(list[0]["waves"], json!([{"index": 0, "counts": {"Activating": 1, "Pending": 1}}]), "{list}");
    // a has not heartbeated for 30 minutes (> 3 × 5 s): it no longer counts against the budget.
    assert!(app.agent("b").heartbeat(None, None).await["dispatch"].is_object());
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("fleetwave_hosts_stuck 1"), "{metrics}");

    // Progress clears the flag.
    a.event(
        "stable@a1",
        "ActivationCompleted",
        json!({"observedClosure": "/nix/store/a-v1", "exitCode": 0, "completedAt": app.clock.now()}),
    )
    .await;
    assert_eq!(app.cell("stable@a1", "a").await["stuck"], false);
}

#[tokio::test]
async fn metrics_expose_inputs_queue_transactions_states_holds_and_feed_clients() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    app.agent("a").heartbeat(None, None).await;
    let _feed = app.http.get(app.url("/api/v1/feed")).bearer_auth(&app.viewer_token).send().await.unwrap();
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    for needle in [
        "fleetwave_reducer_inputs_total{kind=\"heartbeat\"} 1",
        "fleetwave_reducer_inputs_total{kind=\"manifest_set_updated\"} 1",
        "fleetwave_reducer_queue_depth 0",
        "fleetwave_reducer_transaction_seconds_bucket",
        "fleetwave_reducer_transaction_inputs_count",
        "fleetwave_hosts{state=\"Pending\"} 2",
        "fleetwave_holds{gate=\"budget\"} 1",
        "fleetwave_feed_clients 1",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
}
