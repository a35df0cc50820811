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

/// `GET /api/v1/channels/{channel}/history`: a channel's rollouts newest first with their
/// waves' timings, approvals and operators' actions.
#[tokio::test]
async fn a_channel_history_tells_each_rollout_its_waves_and_who_approved_them() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&two_waves(), "a1").await.0, 200);
    app.tick().await;
    let now = app.clock.now();
    let a = app.agent("a");
    a.activate(R, "/nix/store/a-v1", now).await;
    assert_eq!(a.converge(R, "/nix/store/a-v1", now).await.0, 200);
    app.tick().await;
    let (status, _) =
        app.post(&format!("/api/v1/rollouts/{R}/approve"), json!({"wave": 1, "reason": "canary looks fine"})).await;
    assert_eq!(status, 200);
    app.tick().await;
    let b = app.agent("b");
    b.activate(R, "/nix/store/b-v1", now).await;
    assert_eq!(b.converge(R, "/nix/store/b-v1", now).await.0, 200);
    app.tick().await;
    assert_eq!(app.rollout(R).await["state"], "Completed");
    // A second release of the channel.
    assert_eq!(app.upload(&two_waves(), "a2").await.0, 200);
    app.tick().await;

    let (status, history) = app.get("/api/v1/channels/stable/history").await;
    assert_eq!(status, 200, "{history}");
    let ids: Vec<&str> =
        history["rollouts"].as_array().unwrap().iter().map(|r| r["rolloutId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["stable@a2", R], "newest first");
    let first = &history["rollouts"][1];
    assert_eq!(first["state"], "Completed");
    let waves = first["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 2);
    for w in waves {
        assert!(w["openedAt"].is_string() && w["completedAt"].is_string(), "every wave opened and completed: {w}");
        assert!(w["tookSeconds"].is_u64(), "{w}");
    }
    assert_eq!(waves[1]["requiresApproval"], true);
    assert!(waves[1]["approvedBy"].as_str().unwrap().starts_with("olive"), "{}", waves[1]);
    assert!(waves[1]["approvalWaitSeconds"].is_u64(), "{}", waves[1]);
    assert!(waves[0].get("approvedBy").is_none());
    let actions = first["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(actions[0]["what"].as_str().unwrap().ends_with(": canary looks fine"), "{}", actions[0]);
    assert!(actions[0]["operator"].as_str().unwrap().starts_with("olive"));

    // Pages.
    let (_, page) = app.get("/api/v1/channels/stable/history?limit=1").await;
    assert_eq!((page["rollouts"].as_array().unwrap().len(), page["next"].as_str()), (1, Some("stable@a2")));
    let (_, page) = app.get("/api/v1/channels/stable/history?limit=1&before=stable@a2").await;
    assert_eq!(page["rollouts"][0]["rolloutId"], R);
    assert!(page.get("next").is_none(), "{page}");

    for (query, status, code) in [
        ("stable/history?limit=0", 400, "bad-query"),
        ("stable/history?limit=51", 400, "bad-query"),
        ("stable/history?before=stable@ffff", 400, "bad-query"),
        ("stable/history?before=NOPE", 400, "bad-id"),
        ("stable/history?color=red", 400, "bad-query"),
        ("STABLE/history", 400, "bad-id"),
        ("nope/history", 404, "not-found"),
    ] {
        let (s, body) = app.get(&format!("/api/v1/channels/{query}")).await;
        assert_eq!((s, body["error"]["code"].as_str()), (status, Some(code)), "{query}: {body}");
    }
}

/// The plan is SQLite's (PostgreSQL's planner picks by table statistics).
mod sqlite_only {
    #[tokio::test]
    async fn the_history_query_reads_the_partial_index() {
        let app = crate::common::spawn_with(crate::common::Options { sqlite: true, ..Default::default() }, None).await;
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT seq FROM event_log WHERE {} AND rollout_id = 'stable@a1' ORDER BY seq",
            backend::db::store::progress_kinds_condition()
        );
        let plan: Vec<(i64, i64, i64, String)> =
            backend::on_pool!(&app.state.store, pool => sqlx::query_as(&sql).fetch_all(pool).await).unwrap();
        assert!(plan.iter().any(|(.., detail)| detail.contains("event_log_progress")), "{plan:?}");
    }
}
