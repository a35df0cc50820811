//! `GET /api/v1/rollouts/{id}?at=SEQ`: the rollout replayed from its log as it was at a seq
//! (the dashboard's timeline).

use crate::common::{TestApp, spawn_app, two_waves};
use serde_json::{Value, json};

const R: &str = "stable@a1";

/// `(host, state)` of every cell, wave by wave.
fn states(detail: &Value) -> Vec<(String, String)> {
    detail["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["hosts"].as_array().unwrap().iter())
        .map(|h| (h["hostname"].as_str().unwrap().to_owned(), h["state"].as_str().unwrap().to_owned()))
        .collect()
}

async fn at(app: &TestApp, seq: i64) -> Value {
    let (status, detail) = app.get(&format!("/api/v1/rollouts/{R}?at={seq}")).await;
    assert_eq!(status, 200, "at {seq}: {detail}");
    detail
}

fn pair(host: &str, state: &str) -> (String, String) {
    (host.to_owned(), state.to_owned())
}

#[tokio::test]
async fn a_rollout_replays_to_any_seq_of_its_log() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&two_waves(), "a1").await.0, 200);
    app.tick().await;
    let now = app.clock.now();
    let a = app.agent("a");
    a.activate(R, "/nix/store/a-v1", now).await;
    let soaking = app.number("SELECT MAX(seq) FROM event_log").await;
    assert_eq!(a.converge(R, "/nix/store/a-v1", now).await.0, 200);
    let (status, _) = app.post(&format!("/api/v1/rollouts/{R}/approve"), json!({"wave": 1})).await;
    assert_eq!(status, 200);
    app.tick().await;
    let b = app.agent("b");
    b.activate(R, "/nix/store/b-v1", now).await;

    let (_, live) = app.get(&format!("/api/v1/rollouts/{R}")).await;
    let first = live["firstSeq"].as_i64().unwrap();
    assert!(first > 0 && first < soaking, "the rollout's first entry: {live}");
    assert!(live.get("replayedAt").is_none(), "the live answer is no replay");

    // At its opening every host is Pending; once a soaked, a soaks and b waits.
    let opened = at(&app, first).await;
    assert_eq!(states(&opened), [pair("a", "Pending"), pair("b", "Pending")]);
    assert_eq!(opened["state"], "Active");
    assert_eq!(opened["asOf"].as_i64(), Some(first));
    let mid = at(&app, soaking).await;
    assert_eq!(states(&mid), [pair("a", "Soaking"), pair("b", "Pending")]);
    assert_eq!(mid["currentWave"], 0);
    assert!(mid["asOf"].as_i64().unwrap() <= soaking);
    assert!(mid["replayedAt"].is_string(), "{mid}");
    assert_eq!(mid["firstSeq"].as_i64(), Some(first));
    // Past the end: as it is now.
    let end = at(&app, i64::MAX).await;
    assert_eq!(states(&end), states(&live));
    assert_eq!(states(&end), [pair("a", "Converged"), pair("b", "Soaking")]);
    assert_eq!(end["currentWave"], live["currentWave"]);

    // Before it opened; bad seqs.
    let (status, body) = app.get(&format!("/api/v1/rollouts/{R}?at=0")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not-found")), "{body}");
    for bad in ["at=-1", "at=x", "at=", "when=3"] {
        let (status, body) = app.get(&format!("/api/v1/rollouts/{R}?{bad}")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad-query")), "{bad}: {body}");
    }
    let (status, _) = app.get("/api/v1/rollouts/stable@ffff?at=3").await;
    assert_eq!(status, 404);
}
