//! Manifest upload: each verification outcome is answered with its code and changes nothing;
//! the verified set is persisted and re-verified after a restart.

use crate::common::{Options, spawn_app, spawn_with, upload_body};
use engine::testkit::FleetBuilder;
use serde_json::json;

fn fleet() -> FleetBuilder {
    FleetBuilder::new().policy("p", &[(0, false)], "halt", 30).channel("stable", "p").host("a", "stable", &[]).host(
        "b",
        "stable",
        &[],
    )
}

#[tokio::test]
async fn rejected_uploads_are_answered_with_their_outcome_and_change_nothing() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let good = upload_body(&fleet(), "a1", now);

    let mut bad_signature = good.clone();
    bad_signature["fleet"]["signature"] = good["rollouts"][0]["signature"].clone();
    let stale = upload_body(&fleet(), "a1", now - chrono::Duration::minutes(1440 + 2));
    let future = upload_body(&fleet(), "a1", now + chrono::Duration::minutes(5));
    let mut odd = fleet().host("c", "nightly", &[]).document();
    odd["meta"]["signedAt"] = json!(now.to_rfc3339());
    let inconsistent = json!({"fleet": engine::testkit::sign(&odd), "rollouts": []});
    let mut wrong_fleet = good.clone();
    wrong_fleet["rollouts"] = upload_body(&fleet().host("z", "stable", &[]), "a1", now)["rollouts"].clone();
    let mut twice = good.clone();
    twice["rollouts"] = json!([good["rollouts"][0], good["rollouts"][0]]);

    for (body, code) in [
        (bad_signature, "bad-signature"),
        (stale, "stale"),
        (future, "future-dated"),
        (inconsistent, "inconsistent"),
        (wrong_fleet, "inconsistent"),
        (twice, "inconsistent"),
    ] {
        let (status, answer) = app.post("/api/v1/manifests", body).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (422, Some(code)), "{answer}");
    }
    assert!(app.log().await.is_empty(), "nothing was recorded");
    let (_, overview) = app.get("/api/v1/fleet").await;
    assert!(overview["fleetHash"].is_null(), "no fleet is in force");

    assert_eq!(app.post("/api/v1/manifests", good).await.0, 200);
    // A later bad upload leaves the verified set in force.
    let stale = upload_body(&fleet().release_closures("stable", "v2"), "b2", now - chrono::Duration::days(3));
    assert_eq!(app.post("/api/v1/manifests", stale).await.0, 422);
    let (_, rollouts) = app.get("/api/v1/rollouts").await;
    assert_eq!(rollouts.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_verified_set_and_the_rollout_state_survive_a_restart() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    a.activate("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    let (_, before) = app.get("/api/v1/fleet").await;
    let dir = app.stop().await;

    let app = spawn_with(Options::default(), Some(dir)).await;
    let (_, after) = app.get("/api/v1/fleet").await;
    assert_eq!(after["fleetHash"], before["fleetHash"], "the persisted fleet was re-verified and is in force");
    // Agents authenticate against it at once, and the rollout carries on.
    let a = app.agent("a");
    let (s, snapshots) = a.signed("GET", "/api/v1/agent/bootstrap", &json!(null)).await;
    assert_eq!((s, snapshots[0]["state"].as_str()), (200, Some("Soaking")));
    let (s, answer) = a
        .signed(
            "POST",
            shared::agent::EVENTS_PATH,
            &json!({"hostname": "a", "rolloutId": "stable@a1",
        "event": {"kind": "Converged", "seq": 3, "convergedAt": app.clock.now(), "currentClosure": "/nix/store/a-v1"}}),
        )
        .await;
    assert_eq!((s, answer["state"].as_str()), (200, Some("Converged")));
    assert!(app.agent("b").heartbeat(None, None).await["dispatch"].is_object(), "b's dispatch is still outstanding");
}
