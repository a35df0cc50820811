//! Operator authentication and roles, and a table of bad input on every route: each gets its
//! documented 4xx, nothing panics, and the database is unchanged.

use crate::common::spawn_app;
use engine::testkit::FleetBuilder;
use serde_json::{Value, json};
use shared::log::LogKind;

fn fleet() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(10, false), (10, true)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .waves("stable", &[&["a"], &["b"]])
}

/// Every row of every table, as text: any insert, update or delete changes it. The cluster's
/// own rows (each replica reports itself every second) are not control-plane state and are
/// left out.
async fn db_snapshot(app: &crate::common::TestApp) -> String {
    let postgres = app.db.is_postgres();
    let tables = if postgres {
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_sqlx%' AND table_name <> 'replicas' ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    };
    let tables = app.texts(tables).await;
    assert!(tables.len() >= 8, "the snapshot sees the schema: {tables:?}");
    let mut out = String::new();
    for table in tables {
        // Every column of every row (SQLite: quoted, so blobs and NULLs show), rows sorted.
        let dump = if postgres {
            format!("SELECT row_to_json(t)::text FROM \"{table}\" t")
        } else {
            let columns = app.texts(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")).await;
            let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
            format!("SELECT json_array({}) FROM \"{table}\"", quoted.join(", "))
        };
        let mut rows = app.texts(&dump).await;
        rows.sort();
        out.push_str(&format!("{table} ({} rows):\n", rows.len()));
        for row in rows {
            out.push_str(&format!("  {row}\n"));
        }
    }
    out
}

#[tokio::test]
async fn an_action_before_any_fleet_is_not_ready_as_for_agents() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/api/v1/quarantines", json!({"channel": "stable", "closure": "/nix/store/x", "reason": "early"}))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("not-ready")), "{body}");
}

#[tokio::test]
async fn reads_need_a_token_and_actions_need_the_operator_role() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let anonymous = app.http.get(app.url("/api/v1/rollouts")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let forged = app.http.get(app.url("/api/v1/rollouts")).bearer_auth("fw_nope").send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let viewer = app.http.get(app.url("/api/v1/rollouts")).bearer_auth(&app.viewer_token).send().await.unwrap();
    assert_eq!(viewer.status(), 200);
    let (s, body) = app.post_as(&app.viewer_token.clone(), "/api/v1/rollouts/stable@a1/pause", json!({})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = app.post_as(&app.viewer_token.clone(), "/api/v1/manifests", json!({})).await;
    assert_eq!(s, 403, "viewers cannot upload either");
}

#[tokio::test]
async fn a_session_cookie_signs_in_and_changes_need_the_csrf_header() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let client = reqwest::Client::new();
    let r = client.post(app.url("/api/v1/session")).json(&json!({"token": app.operator_token})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(!cookie.contains(&app.operator_token), "the session is not the token");

    let me: Value =
        client.get(app.url("/api/v1/session")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "operator");
    let without =
        client.post(app.url("/api/v1/rollouts/stable@a1/pause")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(without.status(), 403);
    let with = client
        .post(app.url("/api/v1/rollouts/stable@a1/pause"))
        .header("cookie", &cookie)
        .header("x-fleetwave-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);

    let out = client.delete(app.url("/api/v1/session")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(client.get(app.url("/api/v1/session")).header("cookie", &cookie).send().await.unwrap().status(), 401);
    let bad = client.post(app.url("/api/v1/session")).json(&json!({"token": "fw_wrong"})).send().await.unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let hashes = app.texts("SELECT token_hash FROM operators").await.join(",");
    assert!(!hashes.contains(&app.operator_token) && !hashes.contains(&app.viewer_token[3..]));
    if let Some(path) = app.db.sqlite_path() {
        let db = std::fs::read(path).unwrap();
        let needle = app.operator_token.as_bytes();
        assert!(!db.windows(needle.len()).any(|w| w == needle), "the raw token is nowhere in the database file");
    }
}

#[tokio::test]
async fn operator_add_prints_a_working_token_on_its_last_line() {
    let app = spawn_app().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["operator", "add", "--name", "carol", "--role", "viewer", "--db"])
        .arg(app.db_arg())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim();
    let r = app.http.get(app.url("/api/v1/session")).bearer_auth(token).send().await.unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!((me["name"].as_str(), me["role"].as_str()), (Some("carol"), Some("viewer")));
}

#[tokio::test]
async fn bad_input_on_every_route_gets_its_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let before = db_snapshot(&app).await;
    let huge = format!("{{\"wave\": 1, \"reason\": \"{}\"}}", "x".repeat(1_100_000));
    let long_closure = format!("/api/v1/hosts?closure={}", "x".repeat(257));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/api/v1/manifests", "{".into(), 400, "malformed-json"),
        ("POST", "/api/v1/manifests", r#"{"fleet": 1}"#.into(), 422, "invalid-body"),
        (
            "POST",
            "/api/v1/manifests",
            r#"{"fleet": {"artifact": "", "signature": ""}, "extra": 1}"#.into(),
            422,
            "invalid-body",
        ),
        ("POST", "/api/v1/manifests", r#"{"fleet": {"artifact": "%%", "signature": "AA=="}}"#.into(), 422, "malformed"),
        // Uploads have a limit of their own (64 MiB: a large signed fleet is more than 1 MiB);
        // a 1.1 MB body is read and judged by its content.
        ("POST", "/api/v1/manifests", huge.clone(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/approve", "{".into(), 400, "malformed-json"),
        ("POST", "/api/v1/rollouts/stable@a1/approve", r#"{"wave": "one"}"#.into(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/approve", r#"{"wave": -1}"#.into(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/approve", r#"{"wave": 1, "sneaky": true}"#.into(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/approve", huge.clone(), 413, "body-too-large"),
        ("POST", "/api/v1/rollouts/stable/approve", r#"{"wave": 1}"#.into(), 400, "bad-id"),
        ("POST", "/api/v1/rollouts/..%2F..%2Fetc%2Fpasswd/pause", "".into(), 400, "bad-id"),
        ("POST", "/api/v1/rollouts/stable@a1/promote", r#"{"toWave": 1, "force": "yes"}"#.into(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/pause", "[]".into(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/resume", r#"{"reason": 7}"#.into(), 422, "invalid-body"),
        ("POST", "/api/v1/rollouts/stable@a1/clear-failure", "nul".into(), 400, "malformed-json"),
        (
            "POST",
            "/api/v1/quarantines",
            r#"{"channel": "../x", "closure": "/nix/store/a"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "POST",
            "/api/v1/quarantines",
            r#"{"channel": "stable", "closure": "/nix/store/a\nb"}"#.into(),
            422,
            "invalid-body",
        ),
        ("POST", "/api/v1/quarantines", r#"{"channel": "stable"}"#.into(), 422, "invalid-body"),
        ("POST", "/api/v1/quarantines/release", r#"{"channel": "stable", "closure": ""}"#.into(), 422, "invalid-body"),
        ("GET", "/api/v1/rollouts/STABLE@a1", "".into(), 400, "bad-id"),
        ("GET", "/api/v1/rollouts/stable@ffff", "".into(), 404, "not-found"),
        ("GET", "/api/v1/rollouts/stable@a1/events?limit=abc", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/rollouts/stable@a1/events?limit=0", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/rollouts/stable@a1/events?bogus=1", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/feed", "".into(), 400, "bad-last-event-id"),
        ("GET", "/api/v1/hosts?state=Sleepy", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/hosts?limit=0", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/hosts?limit=501", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/hosts?limit=-1", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/hosts?bogus=1", "".into(), 400, "bad-query"),
        ("GET", "/api/v1/hosts?q=", "".into(), 400, "bad-query"),
        ("GET", &long_closure, "".into(), 400, "bad-query"),
        ("POST", "/api/v1/session", "{}".into(), 422, "invalid-body"),
        ("POST", "/api/v1/session", r#"{"token": 5}"#.into(), 422, "invalid-body"),
        ("DELETE", "/api/v1/rollouts", "".into(), 405, "method-not-allowed"),
        ("GET", "/api/v1/nope", "".into(), 404, "not-found"),
    ];
    for (method, path, body, status, code) in cases {
        let mut req =
            app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(&app.operator_token).body(body);
        if path == "/api/v1/feed" {
            req = req.header("last-event-id", "minus-one");
        }
        let r = req.header("content-type", "application/json").send().await.unwrap();
        let got = r.status().as_u16();
        let json: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!((got, json["error"]["code"].as_str()), (status, Some(code)), "{method} {path}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path} explains itself");
    }

    // Agent routes: signed correctly, but the body is bad.
    let a = app.agent("a");
    for (body, status, code) in [
        ("{".to_owned(), 400, "malformed-json"),
        (r#"{"hostname": "a", "at": "not a time"}"#.to_owned(), 422, "invalid-body"),
        (r#"{"hostname": "a", "at": "2026-11-26T00:00:00Z", "color": "red"}"#.to_owned(), 422, "invalid-body"),
        (
            format!(r#"{{"hostname": "a", "at": "2026-11-26T00:00:00Z", "pad": "{}"}}"#, "x".repeat(1_100_000)),
            413,
            "body-too-large",
        ),
    ] {
        let path = "/api/v1/agent/heartbeat";
        let headers =
            crate::common::sign_request(&a.key, "a", "POST", path, body.as_bytes(), chrono::Utc::now().timestamp());
        let (s, json) = a.raw("POST", path, body.into_bytes(), headers).await;
        assert_eq!((s, json["error"]["code"].as_str()), (status, Some(code)), "{json}");
    }
    let (s, json) = a
        .signed(
            "POST",
            "/api/v1/agent/events",
            &json!({"hostname": "a", "rolloutId": "stable@a1", "event": {"kind": "Exploded", "seq": 1}}),
        )
        .await;
    assert_eq!((s, json["error"]["code"].as_str()), (422, Some("invalid-body")));
    let (s, json) =
        a.signed("POST", "/api/v1/agent/events", &json!({"hostname": "a", "rolloutId": "../../x", "event": {}})).await;
    assert_eq!((s, json["error"]["code"].as_str()), (422, Some("invalid-body")));

    assert_eq!(db_snapshot(&app).await, before, "bad input changed the database");
}

#[tokio::test]
async fn host_detail_shows_records_across_rollouts_and_recent_events() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    a.heartbeat(Some("/nix/store/old"), None).await;
    a.activate("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    app.upload(&fleet().release_closures("stable", "v2"), "b2").await;
    let (s, host) = app.get("/api/v1/hosts/a").await;
    assert_eq!(s, 200, "{host}");
    assert_eq!((host["host"]["channel"].as_str(), host["host"]["online"].as_bool()), (Some("stable"), Some(true)));
    let records: Vec<(&str, &str)> = host["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rolloutId"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(records, [("stable@b2", "Pending"), ("stable@a1", "Soaking")], "newest rollout first");
    let kinds: Vec<&str> = host["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&LogKind::HostEvent.as_str()) && kinds.contains(&LogKind::HostOnline.as_str()), "{kinds:?}");
    assert_eq!(app.get("/api/v1/hosts/nobody").await.0, 404);
    assert_eq!(app.get("/api/v1/hosts/..%2Fetc").await.0, 400);
}
