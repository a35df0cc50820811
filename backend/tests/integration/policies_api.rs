//! The policy routes of SPEC §17 against a real server: freezes (`GET`/`POST /freezes`,
//! `POST /freezes/release`) and suspended hosts (`POST /hosts/{h}/suspend|resume`) — auth,
//! 409s, bad input, what they log, what agents and the rollout page see, and that they
//! survive a restart; the failure budget on the rollout page.

use crate::common::{Options, spawn_app, spawn_with};
use chrono::Duration;
use engine::testkit::FleetBuilder;
use serde_json::{Value, json};
use shared::log::LogEntry;

/// The fleet's own freeze of `c` is in force from an hour before `now` for a day.
fn fleet_at(now: chrono::DateTime<chrono::Utc>) -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(0, false), (0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &["web"])
        .host("b", "stable", &["web"])
        .host("c", "stable", &["db"])
        .waves("stable", &[&["a", "b"], &["c"]])
        .max_failures("p", 0, json!(1))
        .freeze("audit", json!({"hosts": ["c"]}), now - Duration::hours(1), now + Duration::days(1), "yearly audit")
}

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

#[tokio::test]
async fn freezes_need_the_operator_role_answer_their_name_and_are_listed_with_the_fleets_own() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet_at(app.clock.now()), "a1").await.0, 200);
    let anonymous = app.http.get(app.url("/api/v1/freezes")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let (s, body) = app.post_as(&app.viewer_token.clone(), "/api/v1/freezes", json!({"reason": "x"})).await;
    assert_eq!((s, code(&body)), (403, Some("forbidden")));
    let (s, body) = app.post_as(&app.viewer_token.clone(), "/api/v1/hosts/a/suspend", json!({"reason": "x"})).await;
    assert_eq!((s, code(&body)), (403, Some("forbidden")));

    let (s, frozen) = app.post("/api/v1/freezes", json!({"reason": "incident 7"})).await;
    assert_eq!(s, 200, "{frozen}");
    let name = frozen["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("stop-the-line-"), "{name}");
    assert!(frozen["seq"].as_i64().unwrap() > 0);

    let (s, list) = app.get("/api/v1/freezes").await;
    assert_eq!(s, 200);
    let active = list["active"].as_array().unwrap();
    let by_name = |n: &str| active.iter().find(|f| f["name"] == n).unwrap_or_else(|| panic!("{n} in {list}"));
    assert_eq!(by_name("audit")["source"], "fleet");
    assert_eq!(by_name("audit")["reason"], "yearly audit");
    let mine = by_name(&name);
    assert_eq!((mine["source"].as_str(), mine["reason"].as_str()), (Some("operator"), Some("incident 7")));
    assert!(mine["by"].as_str().unwrap().starts_with("olive"), "{mine}");
    assert!(mine.get("until").is_none() && mine.get("selector").is_none(), "the whole fleet, until released");

    // 409s: a name in force, a freeze that is not there, the fleet's own.
    let (s, body) = app.post("/api/v1/freezes", json!({"name": name, "reason": "again"})).await;
    assert_eq!((s, code(&body)), (409, Some("already-frozen")));
    let (s, body) = app.post("/api/v1/freezes", json!({"name": "audit", "reason": "again"})).await;
    assert_eq!((s, code(&body)), (409, Some("already-frozen")));
    let (s, body) = app.post("/api/v1/freezes/release", json!({"name": "audit", "reason": "done"})).await;
    assert_eq!((s, code(&body)), (409, Some("unknown-freeze")));
    assert!(body["error"]["message"].as_str().unwrap().contains("signed fleet"), "{body}");
    let (s, body) = app.post("/api/v1/freezes/release", json!({"name": "nope", "reason": "done"})).await;
    assert_eq!((s, code(&body)), (409, Some("unknown-freeze")));

    let (s, body) = app.post("/api/v1/freezes/release", json!({"name": name, "reason": "resolved"})).await;
    assert_eq!(s, 200, "{body}");
    let (_, list) = app.get("/api/v1/freezes").await;
    assert_eq!(list["active"].as_array().unwrap().len(), 1, "only the fleet's freeze is left: {list}");

    // Logged with operator and reason.
    let log = app.log().await;
    let started = log.iter().find_map(|l| match &l.entry {
        LogEntry::FreezeStarted(f) if f.name == name => Some(f.clone()),
        _ => None,
    });
    assert_eq!(started.unwrap().reason, "incident 7");
    let released = log.iter().find_map(|l| match &l.entry {
        LogEntry::FreezeReleased(f) if f.name == name => Some(f.clone()),
        _ => None,
    });
    let released = released.unwrap();
    assert!(released.by.starts_with("olive") && released.reason == "resolved", "{released:?}");
    let actions: Vec<&str> = log
        .iter()
        .filter_map(|l| match &l.entry {
            LogEntry::OperatorAction(a) => Some(a.action.name()),
            _ => None,
        })
        .collect();
    assert_eq!(actions, ["freeze", "unfreeze"]);
}

#[tokio::test]
async fn bad_policy_input_gets_its_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    app.upload(&fleet_at(app.clock.now()), "a1").await;
    let before = app.log().await.len();
    let later = (app.clock.now() + Duration::hours(1)).to_rfc3339();
    let past = (app.clock.now() - Duration::hours(1)).to_rfc3339();
    let huge = format!(r#"{{"reason": "x", "selector": {{"hosts": ["{}"]}}}}"#, "a".repeat(300 * 1024));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/v1/freezes", "{".into(), 400, "malformed-json"),
        ("/api/v1/freezes", "{}".into(), 422, "invalid-body"),
        ("/api/v1/freezes", r#"{"reason": ""}"#.into(), 422, "invalid-body"),
        ("/api/v1/freezes", r#"{"reason": "x", "name": "no spaces"}"#.into(), 422, "invalid-body"),
        ("/api/v1/freezes", format!(r#"{{"reason": "x", "until": "{past}"}}"#), 422, "invalid-body"),
        ("/api/v1/freezes", r#"{"reason": "x", "until": "tomorrow"}"#.into(), 422, "invalid-body"),
        ("/api/v1/freezes", r#"{"reason": "x", "selector": {"colour": "red"}}"#.into(), 422, "invalid-body"),
        ("/api/v1/freezes", r#"{"reason": "x", "selector": {"hosts": ["zz"]}}"#.into(), 422, "invalid-body"),
        ("/api/v1/freezes", format!(r#"{{"reason": "{}"}}"#, "x".repeat(2000)), 422, "limit-exceeded"),
        ("/api/v1/freezes", huge, 413, "body-too-large"),
        ("/api/v1/freezes/release", r#"{"name": "x"}"#.into(), 422, "invalid-body"),
        ("/api/v1/hosts/a/suspend", "{}".into(), 422, "invalid-body"),
        ("/api/v1/hosts/a/suspend", r#"{"reason": " "}"#.into(), 422, "invalid-body"),
        ("/api/v1/hosts/a/suspend", r#"{"reason": "x", "extra": 1}"#.into(), 422, "invalid-body"),
        ("/api/v1/hosts/..%2Fetc/suspend", r#"{"reason": "x"}"#.into(), 400, "bad-id"),
        ("/api/v1/hosts/zz/suspend", r#"{"reason": "x"}"#.into(), 409, "unknown-host"),
        ("/api/v1/hosts/a/resume", r#"{"reason": "x"}"#.into(), 409, "not-suspended"),
    ];
    for (path, body, status, expected) in cases {
        let r = app
            .http
            .post(app.url(path))
            .bearer_auth(&app.operator_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let json: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!((got, code(&json)), (status, Some(expected)), "{path}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path} explains itself");
    }
    assert_eq!(app.log().await.len(), before, "nothing was logged");
    let (_, list) = app.get("/api/v1/freezes").await;
    assert_eq!(list["active"].as_array().unwrap().len(), 1, "only the fleet's freeze: {list}");
    // A good one with a selector and an end works.
    let (s, body) = app
        .post(
            "/api/v1/freezes",
            json!({"name": "web-only", "reason": "x", "until": later, "selector": {"tags": ["web"]}}),
        )
        .await;
    assert_eq!((s, body["name"].as_str()), (200, Some("web-only")), "{body}");
}

#[tokio::test]
async fn freezes_and_suspensions_hold_hosts_show_on_the_rollout_page_and_survive_a_restart() {
    let app = spawn_app().await;
    app.upload(&fleet_at(app.clock.now()), "a1").await;
    let (s, body) = app.post("/api/v1/hosts/b/suspend", json!({"reason": "disk swap"})).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = app.post("/api/v1/hosts/b/suspend", json!({"reason": "again"})).await;
    assert_eq!((s, code(&body)), (409, Some("already-suspended")));
    let (s, _) = app
        .post("/api/v1/freezes", json!({"name": "web", "reason": "deploy freeze", "selector": {"hosts": ["a"]}}))
        .await;
    assert_eq!(s, 200);
    app.tick().await;

    // Nothing is dispatched to a (frozen) or b (suspended).
    let a = app.agent("a");
    let hb = a.heartbeat(Some("/nix/store/old"), None).await;
    assert!(hb.get("dispatch").is_none_or(Value::is_null), "{hb}");
    let cell_a = app.cell("stable@a1", "a").await;
    assert_eq!(cell_a["waitingOn"]["gate"], "freeze", "{cell_a}");
    let reason = cell_a["waitingOn"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("frozen by web: deploy freeze (set by olive-") && reason.ends_with(", until released)"),
        "{reason}"
    );
    let cell_b = app.cell("stable@a1", "b").await;
    assert_eq!((cell_b["waitingOn"]["gate"].as_str(), cell_b["suspended"].as_bool()), (Some("suspended"), Some(true)));
    let (_, host) = app.get("/api/v1/hosts/b").await;
    assert_eq!(host["host"]["suspended"]["reason"], "disk swap", "{host}");
    let c = app.cell("stable@a1", "c").await;
    assert_eq!(c["waitingOn"]["gate"], "freeze", "the fleet's own freeze holds c first: {c}");

    let log = app.log().await;
    assert!(
        log.iter().any(|l| matches!(&l.entry, LogEntry::HostSuspended(s) if s.reason == "disk swap") && l.host_is("b"))
    );

    // A restart restores both from the database.
    let stopped = app.stop().await;
    let app = spawn_with(Options::default(), Some(stopped)).await;
    app.tick().await;
    let (_, list) = app.get("/api/v1/freezes").await;
    assert!(list["active"].as_array().unwrap().iter().any(|f| f["name"] == "web"), "{list}");
    assert_eq!(app.cell("stable@a1", "b").await["suspended"], true);
    let (s, _) = app.post("/api/v1/hosts/b/resume", json!({"reason": "done"})).await;
    assert_eq!(s, 200);
    let (s, _) = app.post("/api/v1/freezes/release", json!({"name": "web", "reason": "over"})).await;
    assert_eq!(s, 200);
    app.tick().await;
    let hb = app.agent("a").heartbeat(Some("/nix/store/old"), None).await;
    assert_eq!(hb["dispatch"]["targetClosure"], "/nix/store/a-v1", "{hb}");
    assert!(app.cell("stable@a1", "b").await.get("suspended").is_none());
}

#[tokio::test]
async fn the_rollout_page_shows_each_waves_failure_budget_use() {
    let app = spawn_app().await;
    app.upload(&fleet_at(app.clock.now()), "a1").await;
    let a = app.agent("a");
    a.heartbeat(Some("/nix/store/old"), None).await;
    a.activate("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    let (s, body) = a
        .event(
            "stable@a1",
            "Failed",
            json!({"failedAt": app.clock.now(), "failingProbes": ["http"], "policyApplied": "halt"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let rollout = app.rollout("stable@a1").await;
    assert_eq!(rollout["state"], "Active", "one failure is within the budget: {rollout}");
    assert_eq!(rollout["waves"][0]["failureBudget"], json!({"used": 1, "max": 1}));
    assert!(rollout["waves"][1].get("failureBudget").is_none(), "wave 1 has no budget");
    let log = app.log().await;
    assert!(log.iter().any(|l| matches!(&l.entry, LogEntry::FailureWithinBudget(f) if f.failures == 1 && f.max == 1)));
}
