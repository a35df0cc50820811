//! Agent API semantics: event outcomes, heartbeat recovery synthesis, replay and bootstrap,
//! failure handling and quarantine, and agent authentication.

use crate::common::{Options, spawn_app, spawn_with};
use engine::testkit::FleetBuilder;
use serde_json::json;
use shared::api::OperatorAction;
use shared::log::LogEntry;
use shared::state::{Gate, HostEvent};

fn closure(host: &str) -> String {
    format!("/nix/store/{host}-v1")
}

/// stable: wave 0 [a, b], wave 1 [c]; soak 10 min; rollback-and-halt.
fn fleet() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(10, false), (10, false)], "rollback-and-halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .host("c", "stable", &[])
        .waves("stable", &[&["a", "b"], &["c"]])
}

const R: &str = "stable@a1";

#[tokio::test]
async fn events_are_applied_after_commit_duplicates_are_idempotent_and_illegal_ones_refused() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    let ack =
        json!({"kind": "DispatchAck", "seq": 1, "currentClosure": "/nix/store/old", "receivedAt": app.clock.now()});
    let (s, body) = a.event_raw(R, ack.clone()).await;
    assert_eq!((s, body.clone()), (200, json!({"outcome": "applied", "state": "Activating"})));
    // Applied means committed: the row is in the database now.
    assert!(app.log().await.iter().any(|e| e.host_event().is_some() && e.host_is("a")));

    let rows_before = app.log().await.len();
    let resend = json!({"hostname": "a", "rolloutId": R, "event": ack});
    let (s, body) = a.signed_at("POST", "/api/v1/agent/events", &resend, chrono::Utc::now().timestamp() + 1).await;
    assert_eq!((s, body), (200, json!({"outcome": "duplicate", "state": "Activating"})));
    assert_eq!(app.log().await.len(), rows_before, "a duplicate writes nothing");

    let (s, body) = a
        .event_raw(R, json!({"kind": "RollbackComplete", "seq": 2, "revertedTo": "/x", "completedAt": app.clock.now()}))
        .await;
    assert_eq!(s, 409);
    assert_eq!(body["error"]["code"], "illegal-for-state");
    assert!(body["error"]["message"].as_str().unwrap().contains("RollbackComplete is not allowed in state Activating"));

    let completed = json!({"kind": "ActivationCompleted", "seq": 3, "observedClosure": closure("a"), "exitCode": 0, "completedAt": app.clock.now()});
    assert_eq!(a.event_raw(R, completed).await.1["state"], "Soaking");
    let (s, body) = a
        .event_raw(
            R,
            json!({"kind": "Converged", "seq": 4, "convergedAt": app.clock.now(), "currentClosure": closure("a")}),
        )
        .await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("invariant")), "guard: soak not over");

    let (s, body) =
        a.event_raw("stable@ffff", json!({"kind": "ActivationStarted", "seq": 9, "startedAt": app.clock.now()})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("unknown-record")));
}

#[tokio::test]
async fn agents_get_503_with_retry_after_before_any_fleet_is_verified() {
    let app = spawn_app().await;
    let a = app.agent("a");
    let body = serde_json::to_vec(&json!({"hostname": "a", "at": chrono::Utc::now()})).unwrap();
    let headers = crate::common::sign_request(
        &a.key,
        "a",
        "POST",
        "/api/v1/agent/heartbeat",
        &body,
        chrono::Utc::now().timestamp(),
    );
    let r = reqwest::Client::new().post(app.url("/api/v1/agent/heartbeat")).body(body);
    let r = headers.into_iter().fold(r, |r, (k, v)| r.header(k, v)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not-ready");
}

#[tokio::test]
async fn heartbeat_recovery_synthesis_fast_forwards_only_ungated_hosts() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let (a, b, c) = (app.agent("a"), app.agent("b"), app.agent("c"));

    // a was switched by hand before the dispatch reached it: Pending → Soaking, soak starts now.
    a.heartbeat(Some(&closure("a")), Some(R)).await;
    assert_eq!(app.host_state(R, "a").await, "Soaking");
    let log = app.log().await;
    let synthesized: Vec<_> = log.iter().filter_map(|e| e.host_event()).filter(|h| h.synthesized).collect();
    assert_eq!(synthesized.len(), 2, "DispatchAck then ActivationCompleted");
    assert!(matches!(synthesized[0].event, HostEvent::DispatchAck { .. }));

    // c is in wave 1 (held by the wave gate): not fast-forwarded.
    c.heartbeat(Some(&closure("c")), None).await;
    assert_eq!(app.host_state(R, "c").await, "Pending");

    // b's closure is quarantined: not fast-forwarded either.
    let (s, _) = app
        .post("/api/v1/quarantines", json!({"channel": "stable", "closure": closure("b"), "reason": "bad build"}))
        .await;
    assert_eq!(s, 200);
    b.heartbeat(Some(&closure("b")), None).await;
    assert_eq!(app.host_state(R, "b").await, "Pending");
    assert_eq!(app.cell(R, "b").await["waitingOn"]["gate"], "quarantine");

    // Soaking converges from a heartbeat only once the soak is over and only without rolloutId.
    app.advance(600);
    a.heartbeat(Some(&closure("a")), Some(R)).await;
    assert_eq!(
        app.host_state(R, "a").await,
        "Soaking",
        "a heartbeat naming the rollout means the agent is still on it"
    );
    let hb = a.heartbeat(Some(&closure("a")), None).await;
    assert_eq!(app.host_state(R, "a").await, "Converged");
    assert!(hb["bootstrap"].as_array().unwrap().is_empty(), "nothing open for a any more");
    assert_eq!(hb["nextHeartbeatSeconds"], 30);
}

#[tokio::test]
async fn no_synthesis_for_a_record_whose_agent_has_events_in_flight() {
    // The agent switched and reports it (seq 2 and 3 on their way); a heartbeat overtakes them.
    // Synthesising ActivationCompleted would take seq 2, which the agent already used, and its
    // own events would then be refused: the control plane asks for a replay instead.
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    a.event(R, "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": app.clock.now()})).await;
    let body = json!({"hostname": "a", "currentClosure": closure("a"), "rolloutId": R, "lastEventSeq": 3, "at": chrono::Utc::now()});
    let (status, answer) = a.signed("POST", "/api/v1/agent/heartbeat", &body).await;
    assert_eq!((status, &answer["replayFrom"]), (200, &json!(1)), "{answer}");
    assert_eq!(app.host_state(R, "a").await, "Activating", "nothing synthesised");
    let (s, body) = a.event(R, "ActivationStarted", json!({"startedAt": app.clock.now()})).await;
    assert_eq!((s, body["outcome"].as_str()), (200, Some("applied")));
    // Without events in flight (lastEventSeq no further than the record's) synthesis goes on.
    let body = json!({"hostname": "a", "currentClosure": closure("a"), "rolloutId": R, "lastEventSeq": 2, "at": chrono::Utc::now()});
    let (status, _) = a.signed("POST", "/api/v1/agent/heartbeat", &body).await;
    assert_eq!(status, 200);
    assert_eq!(app.host_state(R, "a").await, "Soaking");
}

#[tokio::test]
async fn activating_hosts_on_target_are_completed_from_a_heartbeat() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    a.event(R, "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": app.clock.now()})).await;
    assert_eq!(app.host_state(R, "a").await, "Activating");
    a.heartbeat(Some(&closure("a")), None).await;
    assert_eq!(app.host_state(R, "a").await, "Soaking");
}

#[tokio::test]
async fn replay_from_and_bootstrap_let_an_agent_resume() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    a.event(R, "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": app.clock.now()})).await;
    // The agent believes it sent up to seq 5; the control plane has 1.
    let body = json!({"hostname": "a", "rolloutId": R, "lastEventSeq": 5, "at": chrono::Utc::now()});
    let (_, hb) = a.signed("POST", "/api/v1/agent/heartbeat", &body).await;
    assert_eq!(hb["replayFrom"], 1);
    // A restarted agent names no rollout and gets its snapshots, ordered by rollout id.
    let hb = a.heartbeat(Some("/nix/store/old"), None).await;
    let snapshots = hb["bootstrap"].as_array().unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["rolloutId"], R);
    assert_eq!(snapshots[0]["state"], "Activating");
    assert_eq!(snapshots[0]["lastEventSeq"], 1);
    // What an agent that lost its intent needs to finish the job: the soak and the policy.
    assert_eq!(snapshots[0]["soakSeconds"], 600, "wave 0 soaks 10 minutes");
    assert_eq!(snapshots[0]["onHealthFailure"], "rollback-and-halt");
    let (s, direct) = a.signed("GET", "/api/v1/agent/bootstrap", &json!(null)).await;
    assert_eq!((s, direct), (200, json!(snapshots)));
}

#[tokio::test]
async fn a_failed_host_halts_and_its_rollback_quarantines_the_closure_for_the_other_hosts() {
    let set = FleetBuilder::new()
        .policy("p", &[(10, false)], "rollback-and-halt", 30)
        .channel("stable", "p")
        .host_with_closure("a", "stable", &[], Some("/nix/store/bad"))
        .host_with_closure("b", "stable", &["slow"], Some("/nix/store/bad"))
        .budget("one", json!({"tags": ["slow"], "hosts": ["a"]}), 1);
    let app = spawn_app().await;
    app.upload(&set, "a1").await;
    let a = app.agent("a");
    a.activate(R, "/nix/store/bad", app.clock.now()).await;
    assert_eq!(app.cell(R, "b").await["waitingOn"]["gate"], "budget");
    let (s, _) = a
        .event(
            R,
            "Failed",
            json!({"failedAt": app.clock.now(), "failingProbes": ["http"], "policyApplied": "rollback-and-halt"}),
        )
        .await;
    assert_eq!(s, 200);
    let detail = app.rollout(R).await;
    assert_eq!(detail["state"], "Halted");
    assert_eq!(detail["halt"]["host"], "a");
    assert_eq!(app.cell(R, "b").await["waitingOn"]["gate"], "rollout-state", "halted at once: no further dispatch");

    let (s, _) =
        a.event(R, "RollbackComplete", json!({"revertedTo": "/nix/store/old", "completedAt": app.clock.now()})).await;
    assert_eq!(s, 200);
    let (_, q) = app.get("/api/v1/quarantines").await;
    assert_eq!(q["active"][0]["closure"], "/nix/store/bad");
    assert_eq!(q["active"][0]["by"], "fleetwave");
    assert_eq!(app.cell(R, "b").await["waitingOn"]["gate"], "quarantine", "held at once, before any tick");

    // Clearing the failure does not release the quarantine.
    let (s, _) = app.post(&format!("/api/v1/rollouts/{R}/clear-failure"), json!({"reason": "investigated"})).await;
    assert_eq!(s, 200);
    assert_eq!(app.cell(R, "b").await["waitingOn"]["gate"], "quarantine");
    assert!(app.agent("b").heartbeat(None, None).await["dispatch"].is_null());
}

#[tokio::test]
async fn operator_actions_are_logged_and_refused_with_409_when_they_do_not_apply() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let url = |action: &str| format!("/api/v1/rollouts/{R}/{action}");
    let (s, body) = app.post(&url("resume"), json!({})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("not-applicable")));
    let (s, _) = app.post(&url("pause"), json!({"reason": "lunch"})).await;
    assert_eq!(s, 200);
    assert_eq!(app.cell(R, "a").await["waitingOn"]["gate"], "rollout-state");
    let (s, _) = app.post(&url("pause"), json!({})).await;
    assert_eq!(s, 409, "already paused");
    assert_eq!(app.post(&url("resume"), json!({})).await.0, 200);
    assert_eq!(app.post(&url("approve"), json!({"wave": 0})).await.0, 409, "wave 0 needs no approval");
    assert_eq!(app.post(&url("clear-failure"), json!({})).await.0, 409, "not halted");
    let (s, body) = app.post(&url("promote"), json!({"toWave": 1})).await;
    assert_eq!(s, 409);
    assert!(body["error"]["message"].as_str().unwrap().contains("not complete"));
    let (s, body) = app.post(&url("promote"), json!({"toWave": 1, "force": true, "reason": "hotfix"})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(app.rollout(R).await["currentWave"], 1);
    assert_eq!(app.post("/api/v1/rollouts/stable@ffff/pause", json!({})).await.1["error"]["code"], "unknown-rollout");
    assert_eq!(
        app.post("/api/v1/quarantines/release", json!({"channel": "stable", "closure": "/nix/store/x"})).await.0,
        409
    );

    let log = app.log().await;
    let actions: Vec<_> = log
        .iter()
        .filter_map(|e| match &e.entry {
            LogEntry::OperatorAction(acted) => Some(acted),
            _ => None,
        })
        .collect();
    assert_eq!(actions.len(), 3, "only actions that applied are logged");
    let promote = actions[2];
    assert!(matches!(promote.action, OperatorAction::Promote { force: true, .. }), "{promote:?}");
    assert_eq!((promote.forced, promote.reason.as_deref()), (true, Some("hotfix")));
    assert!(promote.operator.starts_with("olive"));
}

#[tokio::test]
async fn quarantine_and_release_hold_and_free_pending_hosts() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let (s, _) =
        app.post("/api/v1/quarantines", json!({"channel": "stable", "closure": closure("b"), "reason": "CVE"})).await;
    assert_eq!(s, 200);
    assert_eq!(app.post("/api/v1/quarantines", json!({"channel": "stable", "closure": closure("b")})).await.0, 409);
    assert!(app.agent("b").heartbeat(None, None).await["dispatch"].is_null());
    assert_eq!(app.cell(R, "b").await["waitingOn"]["gate"], "quarantine");
    let (s, _) = app
        .post("/api/v1/quarantines/release", json!({"channel": "stable", "closure": closure("b"), "reason": "patched"}))
        .await;
    assert_eq!(s, 200);
    assert!(app.agent("b").heartbeat(None, None).await["dispatch"].is_object());
    let (_, q) = app.get("/api/v1/quarantines").await;
    assert_eq!(q["active"], json!([]));
    assert_eq!(q["released"][0]["releaseReason"], "patched");
}

#[tokio::test]
async fn a_waiting_fleet_is_logged_once_not_on_every_tick() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let before = app.log().await.len();
    for _ in 0..100 {
        app.tick().await;
    }
    assert_eq!(app.log().await.len(), before, "100 plan ticks of a waiting fleet add no rows");
    let held: Vec<_> = app
        .log()
        .await
        .into_iter()
        .filter_map(|e| match e.entry {
            LogEntry::HostHeld(held) => Some(held),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 1, "c was held once, by the wave gate");
    assert_eq!(held[0].gate, Gate::Wave);
}

#[tokio::test]
async fn a_write_accepted_before_a_restart_is_refused_as_a_replay_after_it_and_a_read_is_not_stored() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    let now = chrono::Utc::now().timestamp();
    let path = "/api/v1/agent/heartbeat";
    let body = serde_json::to_vec(&json!({"hostname": "a", "at": chrono::Utc::now()})).unwrap();
    let write = crate::common::sign_request(&a.key, "a", "POST", path, &body, now);
    assert_eq!(a.raw("POST", path, body.clone(), write.clone()).await.0, 200);
    let read = crate::common::sign_request(&a.key, "a", "GET", "/api/v1/agent/bootstrap", b"", now);
    assert_eq!(a.raw("GET", "/api/v1/agent/bootstrap", Vec::new(), read).await.0, 200);
    let stored: Vec<Vec<u8>> = backend::on_pool!(&app.state.store, pool => sqlx::query_scalar("SELECT keys FROM agent_signatures").fetch_all(pool).await.unwrap());
    assert_eq!(stored.concat().len(), 16, "the write's signature, not the read's: {stored:?}");

    // A new process (on PostgreSQL, as a new leader would) refuses the same request.
    let app = spawn_with(Options::default(), Some(app.stop().await)).await;
    let a = app.agent("a");
    let (status, body) = a.raw("POST", path, body, write).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("replayed-signature")), "{body}");
}

#[tokio::test]
async fn agent_requests_must_be_signed_fresh_unique_and_about_the_signer() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    let path = "/api/v1/agent/heartbeat";
    let body = serde_json::to_vec(&json!({"hostname": "a", "at": chrono::Utc::now()})).unwrap();
    let now = chrono::Utc::now().timestamp();

    let good = crate::common::sign_request(&a.key, "a", "POST", path, &body, now);
    assert_eq!(a.raw("POST", path, body.clone(), good.clone()).await.0, 200);
    let (s, e) = a.raw("POST", path, body.clone(), good).await;
    assert_eq!((s, e["error"]["code"].as_str()), (401, Some("replayed-signature")));

    let stranger = engine::testkit::key("stranger");
    let (s, e) =
        a.raw("POST", path, body.clone(), crate::common::sign_request(&stranger, "zz", "POST", path, &body, now)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (401, Some("unknown-host")));
    let (s, e) =
        a.raw("POST", path, body.clone(), crate::common::sign_request(&stranger, "a", "POST", path, &body, now)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (401, Some("bad-signature")));
    let (s, e) = a
        .raw("POST", path, body.clone(), crate::common::sign_request(&a.key, "a", "POST", path, &body, now - 61))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (401, Some("skewed-timestamp")));
    let (s, _) = a
        .raw("POST", path, body.clone(), crate::common::sign_request(&a.key, "a", "POST", path, &body, now - 59))
        .await;
    assert_eq!(s, 200, "59 s of skew is tolerated");
    let tampered = serde_json::to_vec(&json!({"hostname": "a", "at": chrono::Utc::now(), "rolloutId": R})).unwrap();
    let (s, _) =
        a.raw("POST", path, tampered, crate::common::sign_request(&a.key, "a", "POST", path, &body, now)).await;
    assert_eq!(s, 401, "the body is covered by the signature");
    let (s, _) = a
        .raw(
            "POST",
            "/api/v1/agent/heartbeat?x=1",
            body.clone(),
            crate::common::sign_request(&a.key, "a", "POST", path, &body, now + 1),
        )
        .await;
    assert_eq!(s, 401, "the query is covered by the signature");

    let other = serde_json::to_vec(&json!({"hostname": "b", "at": chrono::Utc::now()})).unwrap();
    let (s, e) = a
        .raw("POST", path, other.clone(), crate::common::sign_request(&a.key, "a", "POST", path, &other, now + 2))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("wrong-host")));
}

#[tokio::test]
async fn manifests_dir_is_polled_and_a_bad_set_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("release");
    let write = |commit: &str, corrupt: bool| {
        crate::common::write_release_dir(&manifests, &fleet(), commit, chrono::Utc::now(), corrupt)
    };
    write("a1", false);
    let app = spawn_with(Options { manifests_dir: Some(manifests.clone()), ..Options::default() }, None).await;
    let rollouts = crate::common::wait_for_rollouts(&app, 1).await;
    assert_eq!(rollouts[0]["rolloutId"], R);

    write("b2", true);
    // Give the poller several rounds; the corrupted set must not replace the verified one.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (_, rollouts) = app.get("/api/v1/rollouts").await;
    assert_eq!(rollouts.as_array().unwrap().len(), 1);
    drop(dir);
}

#[tokio::test]
async fn a_commit_that_fails_answers_503_changes_nothing_and_the_next_one_applies() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    let ack =
        json!({"kind": "DispatchAck", "seq": 1, "currentClosure": "/nix/store/old", "receivedAt": app.clock.now()});
    // Make every event-log append fail, as a full disk would.
    if app.db.is_postgres() {
        app.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
        )
        .await;
        app.execute("CREATE TRIGGER refuse_log BEFORE INSERT ON event_log FOR EACH ROW EXECUTE FUNCTION refuse()")
            .await;
    } else {
        app.execute("CREATE TRIGGER refuse_log BEFORE INSERT ON event_log BEGIN SELECT RAISE(ABORT, 'disk full'); END")
            .await;
    }
    let rows_before = app.log().await.len();
    let (s, body) = a.event_raw(R, ack.clone()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (503, Some("not-ready")), "{body}");
    assert_eq!(app.log().await.len(), rows_before, "nothing was written");
    assert_eq!(app.host_state(R, "a").await, "Pending", "the record is unchanged");

    // The disk has room again: the reducer reloaded from the database, so the same event is
    // applied once (not a duplicate of a change that was never stored).
    app.execute(if app.db.is_postgres() { "DROP TRIGGER refuse_log ON event_log" } else { "DROP TRIGGER refuse_log" })
        .await;
    let resend = json!({"hostname": "a", "rolloutId": R, "event": ack});
    let (s, body) = a.signed_at("POST", "/api/v1/agent/events", &resend, chrono::Utc::now().timestamp() + 1).await;
    assert_eq!((s, body), (200, json!({"outcome": "applied", "state": "Activating"})));
    assert_eq!(app.host_state(R, "a").await, "Activating");
}
