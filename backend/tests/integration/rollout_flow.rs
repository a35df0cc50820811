//! A whole rollout over HTTP with signed agents: three waves with soak, an approval wave, a
//! host edge, a channel edge and a disruption budget, walking to Completed.

use crate::common::spawn_app;
use engine::testkit::FleetBuilder;
use serde_json::json;
use shared::log::LogEntry;
use shared::state::HostState;

fn fleet() -> FleetBuilder {
    FleetBuilder::new()
        .policy("fast", &[(0, false)], "halt", 30)
        .policy("careful", &[(10, false), (5, true), (0, false)], "rollback-and-halt", 30)
        .channel("canary", "fast")
        .channel("stable", "careful")
        .host("c1", "canary", &[])
        .host("db1", "stable", &["db"])
        .host("web1", "stable", &["web"])
        .host("web2", "stable", &["web"])
        .host("web3", "stable", &["web"])
        .host("api1", "stable", &["api"])
        .waves("stable", &[&["db1", "web1"], &["web2", "web3"], &["api1"]])
        .edge("db1", "web1")
        .channel_edge("canary", "stable")
        .budget("web", json!({"tags": ["web"]}), 1)
}

fn closure(host: &str) -> String {
    format!("/nix/store/{host}-v1")
}

#[tokio::test]
async fn three_waves_with_soak_approval_edges_and_budget_complete() {
    let app = spawn_app().await;
    let (status, summary) = app.upload(&fleet(), "a1").await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["rollouts"], json!(["canary@a1", "stable@a1"]));

    // Canary first; stable waits on the channel edge.
    assert_eq!(app.cell("stable@a1", "db1").await["waitingOn"]["gate"], "channel-edge");

    let c1 = app.agent("c1");
    let hb = c1.heartbeat(Some("/nix/store/old"), None).await;
    assert_eq!(hb["dispatch"]["rolloutId"], "canary@a1");
    assert_eq!(hb["nextHeartbeatSeconds"], 5);
    c1.activate("canary@a1", &closure("c1"), app.clock.now()).await;
    let (s, a) = c1.converge("canary@a1", &closure("c1"), app.clock.now()).await;
    assert_eq!((s, a["state"].as_str()), (200, Some("Converged")));
    assert_eq!(app.rollout("canary@a1").await["state"], "Completed");

    // Stable wave 0: db1 dispatches, web1 waits for db1 (host edge).
    app.tick().await;
    let db1 = app.agent("db1");
    let first = db1.heartbeat(Some("/nix/store/old"), None).await;
    let again = db1.heartbeat(Some("/nix/store/old"), None).await;
    assert_eq!(first["dispatch"], again["dispatch"], "the dispatch is repeated until acknowledged");
    assert_eq!(first["dispatch"]["soakSeconds"], 600);
    assert_eq!(first["dispatch"]["onHealthFailure"], "rollback-and-halt", "the channel's policy rides along");
    assert_eq!(app.cell("stable@a1", "web1").await["waitingOn"]["gate"], "host-edge");
    db1.activate("stable@a1", &closure("db1"), app.clock.now()).await;
    assert!(
        db1.heartbeat(Some(&closure("db1")), Some("stable@a1")).await["dispatch"].is_null(),
        "acknowledged: no dispatch"
    );
    let (s, early) = db1.converge("stable@a1", &closure("db1"), app.clock.now()).await;
    assert_eq!(s, 409, "converging before the soak ends is refused: {early}");
    app.advance(600);
    assert_eq!(db1.converge("stable@a1", &closure("db1"), app.clock.now()).await.0, 200);

    app.tick().await;
    let web1 = app.agent("web1");
    assert_eq!(web1.heartbeat(None, None).await["dispatch"]["targetClosure"], closure("web1"));
    web1.activate("stable@a1", &closure("web1"), app.clock.now()).await;
    app.advance(600);
    assert_eq!(web1.converge("stable@a1", &closure("web1"), app.clock.now()).await.0, 200);

    // Wave 1 needs approval.
    app.tick().await;
    let detail = app.rollout("stable@a1").await;
    assert_eq!(detail["currentWave"], 1);
    assert_eq!(app.cell("stable@a1", "web2").await["waitingOn"]["gate"], "approval");
    let (s, _) =
        app.post("/api/v1/rollouts/stable@a1/approve", json!({"wave": 1, "reason": "canary looks good"})).await;
    assert_eq!(s, 200);

    // Budget web = 1: web2 goes, web3 waits until web2 converges.
    let (web2, web3) = (app.agent("web2"), app.agent("web3"));
    assert!(web2.heartbeat(None, None).await["dispatch"].is_object());
    assert!(web3.heartbeat(None, None).await["dispatch"].is_null());
    assert_eq!(app.cell("stable@a1", "web3").await["waitingOn"]["gate"], "budget");
    web2.activate("stable@a1", &closure("web2"), app.clock.now()).await;
    app.advance(300);
    assert_eq!(web2.converge("stable@a1", &closure("web2"), app.clock.now()).await.0, 200);
    app.tick().await;
    web3.activate("stable@a1", &closure("web3"), app.clock.now()).await;
    app.advance(300);
    assert_eq!(web3.converge("stable@a1", &closure("web3"), app.clock.now()).await.0, 200);

    app.tick().await;
    let api1 = app.agent("api1");
    assert!(api1.heartbeat(None, None).await["dispatch"].is_object());
    api1.activate("stable@a1", &closure("api1"), app.clock.now()).await;
    assert_eq!(api1.converge("stable@a1", &closure("api1"), app.clock.now()).await.0, 200);

    let done = app.rollout("stable@a1").await;
    assert_eq!(done["state"], "Completed");
    assert_eq!(done["waves"][2]["convergedPercent"], 100.0);

    // The event log tells the story in order.
    let log = app.log().await;
    let story: Vec<String> = log
        .iter()
        .filter(|e| e.rollout_is("stable@a1"))
        .filter_map(|e| match &e.entry {
            LogEntry::HostEvent(h) if h.to == HostState::Converged => {
                Some(format!("converged {}", e.event.host.as_ref().unwrap()))
            }
            LogEntry::WaveAdvanced(w) => Some(format!("wave {}", w.to)),
            LogEntry::RolloutStateChanged(c) => Some(format!("state {}", c.to)),
            LogEntry::RolloutOpened(_) => Some("opened".into()),
            LogEntry::OperatorAction(a) => Some(format!("operator {}", a.action.name())),
            _ => None,
        })
        .collect();
    assert_eq!(
        story,
        [
            "opened",
            "converged db1",
            "converged web1",
            "wave 1",
            "operator approve-wave",
            "converged web2",
            "converged web3",
            "wave 2",
            "converged api1",
            "state Completed"
        ]
    );
    let seqs: Vec<i64> = log.iter().map(|e| e.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq strictly increasing");
}

/// After hosts move, the pass covers only the rollouts they can affect; what they unblock
/// elsewhere must still happen in the same commit, before any plan tick.
#[tokio::test]
async fn a_completed_channel_and_a_freed_budget_unblock_other_rollouts_at_once() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let c1 = app.agent("c1");
    c1.activate("canary@a1", &closure("c1"), app.clock.now()).await;
    assert_eq!(app.cell("stable@a1", "db1").await["waitingOn"]["gate"], "channel-edge");
    assert_eq!(c1.converge("canary@a1", &closure("c1"), app.clock.now()).await.0, 200);
    // No tick: canary completed in this commit, and stable's first host is dispatched in it.
    assert_eq!(app.rollout("canary@a1").await["state"], "Completed");
    assert_eq!(app.agent("db1").heartbeat(None, None).await["dispatch"]["rolloutId"], "stable@a1");

    // Two channels share a budget of one: blue's host takes it, green's waits; when blue's
    // host converges, green's is dispatched in the same commit.
    let shared = FleetBuilder::new()
        .policy("fast", &[(0, false)], "halt", 30)
        .channel("blue", "fast")
        .channel("green", "fast")
        .host("b1", "blue", &["web"])
        .host("g1", "green", &["web"])
        .budget("web", json!({"tags": ["web"]}), 1);
    let app = spawn_app().await;
    app.upload(&shared, "a1").await;
    let (b1, g1) = (app.agent("b1"), app.agent("g1"));
    assert_eq!(app.cell("green@a1", "g1").await["waitingOn"]["gate"], "budget");
    b1.activate("blue@a1", &closure("b1"), app.clock.now()).await;
    assert!(g1.heartbeat(None, None).await["dispatch"].is_null());
    assert_eq!(b1.converge("blue@a1", &closure("b1"), app.clock.now()).await.0, 200);
    assert_eq!(g1.heartbeat(None, None).await["dispatch"]["rolloutId"], "green@a1");
}
