//! What a hostile host or client tried (issue 14), each against the real server: nothing it
//! sends stops the reducer, loses an acknowledged event, or grows what the server stores
//! beyond the limits of `shared::limits`.

use std::time::Duration;

use crate::common::{Options, TestApp, spawn_app, spawn_with};
use engine::testkit::FleetBuilder;
use serde_json::{Value, json};
use shared::state::HostEvent;

const R: &str = "stable@a1";
const TARGET: &str = "/nix/store/a-v1";

/// stable: one wave [a, b], soak 10 min, halt.
fn fleet() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(10, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .waves("stable", &[&["a", "b"]])
}

/// Sends `event` for host a, signed `offset` seconds from now (a resend of identical bytes
/// must be signed in another second, or it is a replay).
async fn send(app: &TestApp, event: &Value, offset: i64) -> (u16, Value) {
    let body = json!({ "hostname": "a", "rolloutId": R, "event": event });
    app.agent("a").signed_at("POST", "/api/v1/agent/events", &body, chrono::Utc::now().timestamp() + offset).await
}

async fn ready(app: &TestApp) -> u16 {
    app.http.get(app.url("/readyz")).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_completion_time_at_the_end_of_chronos_range_is_refused_and_the_reducer_keeps_running() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let now = app.clock.now();
    let ack = json!({"kind": "DispatchAck", "seq": 1, "currentClosure": "/nix/store/old", "receivedAt": now});
    assert_eq!(send(&app, &ack, 0).await.0, 200);
    // completedAt + soak overflowed chrono and panicked the reducer: every write was 503 from
    // then on while /readyz stayed 200.
    for at in ["+262142-12-31T23:59:59Z", "-262143-01-01T00:00:00Z", "1969-12-31T23:59:59Z"] {
        let completed = json!({"kind": "ActivationCompleted", "seq": 2, "observedClosure": TARGET, "exitCode": 0, "completedAt": at});
        let (status, body) = send(&app, &completed, 0).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("limit-exceeded")), "{at}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("event.completedAt"), "{body}");
    }
    let completed =
        json!({"kind": "ActivationCompleted", "seq": 2, "observedClosure": TARGET, "exitCode": 0, "completedAt": now});
    let (status, body) = send(&app, &completed, 0).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("Soaking")), "{body}");
    assert_eq!(ready(&app).await, 200);
}

#[tokio::test]
async fn seqs_beyond_two_to_the_53_are_refused_at_parse_time() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let now = app.clock.now();
    for seq in [u64::MAX, shared::limits::MAX_SEQ + 1] {
        let ack = json!({"kind": "DispatchAck", "seq": seq, "currentClosure": "/nix/store/old", "receivedAt": now});
        let (status, body) = send(&app, &ack, 0).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("limit-exceeded")), "{seq}: {body}");
    }
    let heartbeat = json!({"hostname": "a", "at": now, "rolloutId": R, "lastEventSeq": u64::MAX});
    let (status, body) = app.agent("a").signed("POST", "/api/v1/agent/heartbeat", &heartbeat).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("limit-exceeded")), "{body}");
    // The largest accepted seq is stored, and recovery synthesis after it neither wraps nor
    // panics: the host is already on its target, so a heartbeat synthesises the completion.
    let ack = json!({"kind": "DispatchAck", "seq": shared::limits::MAX_SEQ - 1, "currentClosure": "/nix/store/old", "receivedAt": now});
    assert_eq!(send(&app, &ack, 0).await.0, 200);
    app.agent("a").heartbeat(Some(TARGET), None).await;
    assert_eq!(app.host_state(R, "a").await, "Soaking");
    let snapshot = app.agent("a").heartbeat(Some(TARGET), None).await;
    assert_eq!(snapshot["bootstrap"][0]["lastEventSeq"], shared::limits::MAX_SEQ);
    // At the limit, a later event is refused as a duplicate of nothing new, never wrapped.
    let probe = json!({"kind": "ProbeResult", "seq": shared::limits::MAX_SEQ, "probe": "http", "mode": "enforce", "status": "pass", "observedAt": now});
    assert_eq!(send(&app, &probe, 1).await.1["outcome"], "duplicate");
    assert_eq!(ready(&app).await, 200);
}

#[tokio::test]
async fn oversized_strings_and_too_many_probes_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    let now = app.clock.now();
    a.activate(R, TARGET, now).await;
    let rows = app.log().await.len();
    // 400 KB probe names grew the database by 40 MB in 12 events: such a body is not even read.
    let huge = json!({"kind": "ProbeResult", "seq": 3, "probe": "x".repeat(400_000), "mode": "enforce", "status": "pass", "observedAt": now});
    let (status, body) = send(&app, &huge, 0).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("body-too-large")), "{body}");
    let cases = [
        json!({"kind": "ProbeResult", "seq": 3, "probe": "p".repeat(129), "mode": "enforce", "status": "pass", "observedAt": now}),
        json!({"kind": "ActivationFailed", "seq": 3, "exitCode": 1, "stderrTail": "e".repeat(8 * 1024 + 1), "failedAt": now}),
        json!({"kind": "ProbeResult", "seq": 3, "probe": "http", "mode": "enforce", "status": "fail", "observedAt": now, "reason": "r".repeat(1025)}),
        json!({"kind": "Failed", "seq": 3, "failedAt": now, "failingProbes": vec!["p"; 65], "policyApplied": "halt"}),
        json!({"kind": "Failed", "seq": 3, "failedAt": now, "failingProbes": ["p".repeat(129)], "policyApplied": "halt"}),
    ];
    for event in &cases {
        let (status, body) = send(&app, event, 0).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("limit-exceeded")), "{body}");
    }
    // Distinct probes per record are bounded too: the 65th new name is refused.
    for i in 0..shared::limits::MAX_PROBES as u64 {
        let probe = json!({"kind": "ProbeResult", "seq": 3 + i, "probe": format!("probe-{i}"), "mode": "observe", "status": "pass", "observedAt": now});
        assert_eq!(send(&app, &probe, 0).await.0, 200);
    }
    let seq = 3 + shared::limits::MAX_PROBES as u64;
    let one_more = json!({"kind": "ProbeResult", "seq": seq, "probe": "one-more", "mode": "observe", "status": "pass", "observedAt": now});
    let (status, body) = send(&app, &one_more, 0).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("limit-exceeded")), "{body}");
    // A known probe still reports.
    let again = json!({"kind": "ProbeResult", "seq": seq, "probe": "probe-0", "mode": "observe", "status": "fail", "observedAt": now});
    assert_eq!(send(&app, &again, 0).await.1["outcome"], "applied");
    assert_eq!(app.log().await.len(), rows + shared::limits::MAX_PROBES + 1, "refused events wrote nothing");
}

#[tokio::test]
async fn an_event_whose_commit_failed_is_applied_when_retried_after_the_database_is_back() {
    let app = spawn_with(Options { db_busy_timeout_ms: 200, ..Options::default() }, None).await;
    app.upload(&fleet(), "a1").await;
    app.agent("a").activate(R, TARGET, app.clock.now()).await;
    let probe = json!({"kind": "ProbeResult", "seq": 3, "probe": "http", "mode": "enforce", "status": "pass", "observedAt": app.clock.now()});

    // Another process holds the write lock longer than the busy timeout.
    let locker = Locker::lock(&app).await;
    let (status, _) = send(&app, &probe, 0).await;
    assert_eq!(status, 503, "the commit failed: not applied");
    // While memory cannot be reloaded, nothing is answered from it: before, this retry was
    // answered `duplicate` although no log row held the event.
    let (status, body) = send(&app, &probe, 1).await;
    assert_eq!(status, 503, "refused while reloading: {body}");
    assert_eq!(ready(&app).await, 503, "not ready while reloading");
    locker.release().await;

    // The reload retries; once it loaded, the retried event is applied and logged.
    let mut answer = (503, Value::Null);
    for attempt in 2..60 {
        answer = send(&app, &probe, attempt).await;
        if answer.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((answer.0, answer.1["outcome"].as_str()), (200, Some("applied")), "{}", answer.1);
    let logged =
        app.log().await.iter().any(|e| {
            e.host_is("a") && e.host_event().is_some_and(|h| matches!(h.event, HostEvent::ProbeResult { .. }))
        });
    assert!(logged, "the applied event is in the log");
    assert_eq!(ready(&app).await, 200);
}

/// Another client of the database holding a lock the control plane's writes need: SQLite's
/// write lock, or PostgreSQL's exclusive lock on the event log.
enum Locker {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

impl Locker {
    async fn lock(app: &TestApp) -> Locker {
        use sqlx::Connection as _;
        match app.db.target() {
            backend::db::DbTarget::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                Locker::Sqlite(conn)
            }
            backend::db::DbTarget::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE event_log IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
                Locker::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Locker::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            Locker::Postgres(mut conn) => drop(sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap()),
        }
    }
}

#[tokio::test]
async fn agent_timestamps_at_the_ends_of_i64_are_refused_without_overflow() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let a = app.agent("a");
    let body = json!({"hostname": "a", "at": app.clock.now()});
    for ts in [i64::MIN, i64::MAX, i64::MIN + 1] {
        let (status, answer) = a.signed_at("POST", "/api/v1/agent/heartbeat", &body, ts).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("skewed-timestamp")), "{ts}: {answer}");
    }
    assert_eq!(ready(&app).await, 200);
}

#[tokio::test]
async fn a_last_event_id_beyond_the_log_is_refused_instead_of_starving_the_client() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let last = app.log().await.last().map(|e| e.seq()).unwrap();
    let feed = |id: i64| {
        app.http
            .get(app.url("/api/v1/feed"))
            .bearer_auth(&app.viewer_token)
            .header("last-event-id", id.to_string())
            .send()
    };
    let r = feed(last + 1_000).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ahead-of-log");
    assert_eq!(feed(last).await.unwrap().status(), 200, "the last seq itself resumes");
}

#[tokio::test]
async fn sessions_are_only_created_from_json_requests() {
    let app = spawn_app().await;
    let body = json!({ "token": app.operator_token }).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = app.http.post(app.url("/api/v1/session")).header("content-type", content_type).body(body.clone());
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 415, "{content_type}");
        assert!(r.headers().get("set-cookie").is_none(), "{content_type}: no session");
    }
    let r = app.http.post(app.url("/api/v1/session")).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 415, "no content type");
    let r = app
        .http
        .post(app.url("/api/v1/session"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A rollout manifest of `fleet_hash` for stable (hosts a and b in wave 0, closures
/// `/nix/store/{host}-{suffix}`), signed by the CI key as of `signed_at`.
fn stable_manifest(fleet_hash: &str, reference: &str, signed_at: chrono::DateTime<chrono::Utc>, suffix: &str) -> Value {
    let doc = json!({
        "schemaVersion": 1,
        "channel": "stable",
        "channelRef": reference,
        "meta": { "signedAt": signed_at.to_rfc3339() },
        "fleetHash": fleet_hash,
        "hostSet": [
            { "hostname": "a", "wave": 0, "targetClosure": format!("/nix/store/a-{suffix}") },
            { "hostname": "b", "wave": 0, "targetClosure": format!("/nix/store/b-{suffix}") },
        ],
    });
    serde_json::to_value(engine::testkit::sign(&doc)).unwrap()
}

fn whole_second(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.timestamp(), 0).unwrap()
}

async fn rollout_ids(app: &TestApp) -> Vec<(String, String)> {
    let (_, body) = app.get("/api/v1/rollouts").await;
    body.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rolloutId"].as_str().unwrap().to_owned(), r["state"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn an_older_fleet_or_release_is_refused_and_a_release_signed_in_the_same_second_as_the_last_still_opens() {
    let app = spawn_app().await;
    let now = whole_second(chrono::Utc::now());
    let newer = crate::common::upload_body(&fleet(), "a1", now);
    let (status, summary) = app.post("/api/v1/manifests", newer.clone()).await;
    assert_eq!(status, 200, "{summary}");
    let fleet_hash = summary["fleetHash"].as_str().unwrap().to_owned();

    // A fleet signed four minutes earlier (still fresh) would roll the fleet back.
    let older = crate::common::upload_body(&fleet().commit("a0"), "a0", now - chrono::Duration::minutes(4));
    let (status, body) = app.post("/api/v1/manifests", older).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("older-than-current")), "{body}");

    // Two more releases of stable for the same fleet, signed in the same second as each other:
    // the one accepted later is the newest, whatever their refs sort as ("bb" > "aa").
    let fleet_artifact = newer["fleet"].clone();
    for reference in ["bb", "aa"] {
        let upload =
            json!({ "fleet": fleet_artifact, "rollouts": [stable_manifest(&fleet_hash, reference, now, reference)] });
        let (status, body) = app.post("/api/v1/manifests", upload).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("opensNothing").is_none(), "{reference} opens: {body}");
    }
    let rollouts = rollout_ids(&app).await;
    assert!(rollouts.contains(&("stable@aa".into(), "Active".into())), "the later upload opened: {rollouts:?}");
    assert!(rollouts.contains(&("stable@bb".into(), "Superseded".into())), "{rollouts:?}");

    // A release signed before the newest is refused; one with the hosts and closures of the
    // rollout in force is accepted and says that it opens nothing.
    let stale = json!({ "fleet": fleet_artifact, "rollouts": [stable_manifest(&fleet_hash, "cc", now - chrono::Duration::seconds(10), "cc")] });
    let (status, body) = app.post("/api/v1/manifests", stale).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("older-than-current")), "{body}");
    let same = json!({ "fleet": fleet_artifact, "rollouts": [stable_manifest(&fleet_hash, "dd", now + chrono::Duration::seconds(1), "aa")] });
    let (status, body) = app.post("/api/v1/manifests", same).await;
    assert_eq!(status, 200, "{body}");
    let why = body["opensNothing"][0].as_str().unwrap_or_default();
    assert!(why.contains("stable@dd opens nothing") && why.contains("stable@aa"), "{body}");
    assert!(!rollout_ids(&app).await.iter().any(|(id, _)| id == "stable@dd"));

    // The acceptance order is stored with the set, so a restart breaks ties the same way.
    let stopped = app.stop().await;
    let app = crate::common::spawn_with(Options::default(), Some(stopped)).await;
    let order = app.texts("SELECT rollout_id FROM manifest_rollouts ORDER BY accepted").await;
    assert_eq!(order, ["stable@a1", "stable@bb", "stable@aa", "stable@dd"]);
}

#[tokio::test]
async fn a_future_dated_release_is_taken_once_it_is_due_and_one_with_an_unknown_key_once_trust_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("release");
    // Signed 62 s ahead: future-dated (more than 60 s ahead) for about two seconds.
    let first = chrono::Utc::now() + chrono::Duration::seconds(62);
    crate::common::write_release_dir(&manifests, &fleet(), "a1", first, false);
    let app = spawn_with(Options { manifests_dir: Some(manifests.clone()), ..Options::default() }, None).await;
    let rollouts = crate::common::wait_for_rollouts(&app, 1).await;
    assert_eq!(rollouts[0]["rolloutId"], R, "picked up once due, though its files never changed");

    // trust.json without the CI key that signs the next release: rejected as bad-signature.
    let trust_path = app.dir.path().join("trust.json");
    let right = std::fs::read(&trust_path).unwrap();
    let other = engine::testkit::trust_config(&engine::testkit::key("another ci"));
    std::fs::write(&trust_path, serde_json::to_vec(&other).unwrap()).unwrap();
    // (Signed after the first, which is in force now: an older one would be refused.)
    let second = first + chrono::Duration::seconds(1);
    crate::common::write_release_dir(&manifests, &fleet().release_closures("stable", "v2"), "b2", second, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rollout_ids(&app).await.len(), 1, "not verified under the wrong key");
    // The operator fixes trust.json; the same files now verify.
    std::fs::write(&trust_path, right).unwrap();
    let rollouts = crate::common::wait_for_rollouts(&app, 2).await;
    assert!(rollouts.iter().any(|r| r["rolloutId"] == "stable@b2"), "{rollouts:?}");
}

fn refreshes(metrics: &str) -> u64 {
    let line = metrics.lines().find(|l| l.starts_with("fleetwave_reducer_inputs_total{kind=\"refresh_gauges\"}"));
    line.and_then(|l| l.split_whitespace().last()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn scrapes_in_a_burst_ask_the_reducer_at_most_once_a_second_and_metrics_can_require_a_token() {
    let app = spawn_app().await;
    app.upload(&fleet(), "a1").await;
    let started = std::time::Instant::now();
    let mut last = String::new();
    for _ in 0..50 {
        last = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    }
    // Each refresh is counted before it is rendered, so the last scrape shows them all.
    let seconds = started.elapsed().as_secs() + 1;
    let asked = refreshes(&last);
    assert!((1..=seconds).contains(&asked), "{asked} gauge refreshes for 50 scrapes in {seconds} s");

    let app =
        spawn_with(Options { metrics_access: backend::config::MetricsAccess::Viewer, ..Options::default() }, None)
            .await;
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 401);
    let r = app.http.get(app.url("/metrics")).bearer_auth(&app.viewer_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn behind_a_tls_proxy_the_session_cookie_is_secure_and_every_response_carries_the_browser_hardening_headers() {
    let app = spawn_app().await;
    let sign_in = |proto: Option<&'static str>| {
        let mut r = app
            .http
            .post(app.url("/api/v1/session"))
            .header("content-type", "application/json")
            .body(json!({ "token": app.operator_token }).to_string());
        if let Some(p) = proto {
            r = r.header("x-forwarded-proto", p);
        }
        r.send()
    };
    let cookie = |r: &reqwest::Response| r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let secure = sign_in(Some("https")).await.unwrap();
    assert!(cookie(&secure).contains("; Secure"), "{}", cookie(&secure));
    let plain = sign_in(None).await.unwrap();
    assert!(!cookie(&plain).contains("Secure"), "{}", cookie(&plain));
    assert!(cookie(&plain).contains("HttpOnly") && cookie(&plain).contains("SameSite=Strict"));

    for path in ["/", "/api/v1/version", "/api/v1/nope", "/healthz"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"), "{path}: {csp}");
    }
}

#[tokio::test]
async fn a_revoked_token_and_its_sessions_stop_working_at_once_and_expired_sessions_are_purged() {
    let app = spawn_app().await;
    let whoami = |token: String| {
        let http = app.http.clone();
        let url = app.url("/api/v1/session");
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let sign_in = || {
        let request = app
            .http
            .post(app.url("/api/v1/session"))
            .header("content-type", "application/json")
            .body(json!({ "token": app.operator_token }).to_string());
        async move { request.send().await.unwrap() }
    };
    let me: Value = whoami(app.operator_token.clone()).await.json().await.unwrap();
    let name = me["name"].as_str().unwrap().to_owned();
    let signed_in = sign_in().await;
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    // An expired session left by someone else is purged when the next one is created.
    app.execute("INSERT INTO sessions (token_hash, operator_id, created_at, expires_at) VALUES ('old', 1, '2020-01-01T00:00:00.000Z', '2020-01-02T00:00:00.000Z')").await;
    let again = sign_in().await;
    assert_eq!(again.status(), 200);
    let left = app.number("SELECT COUNT(*) FROM sessions WHERE token_hash = 'old'").await;
    assert_eq!(left, 0, "the expired session is gone");

    let fleetwave = env!("CARGO_BIN_EXE_fleetwave");
    let db = app.db_arg();
    let list = std::process::Command::new(fleetwave).args(["operator", "list", "--db", &db]).output().unwrap();
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success() && listing.contains(&name) && listing.contains("operator"), "{listing}");
    let revoke = std::process::Command::new(fleetwave)
        .args(["operator", "revoke", "--db", &db, "--name", &name])
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));

    assert_eq!(whoami(app.operator_token.clone()).await.status(), 401, "the token no longer works");
    let by_cookie = app.http.get(app.url("/api/v1/session")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(by_cookie.status(), 401, "nor does its session");
    assert_eq!(whoami(app.viewer_token.clone()).await.status(), 200, "others are untouched");
    let twice = std::process::Command::new(fleetwave)
        .args(["operator", "revoke", "--db", &db, "--name", &name])
        .output()
        .unwrap();
    assert!(!twice.status.success(), "revoking twice says so");
    let listing = std::process::Command::new(fleetwave).args(["operator", "list", "--db", &db]).output().unwrap();
    let line = String::from_utf8_lossy(&listing.stdout).lines().find(|l| l.starts_with(&name)).unwrap().to_owned();
    assert!(!line.contains(" - "), "listed as revoked: {line}");
}

/// What only a database in a file does.
mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn readiness_fails_when_the_database_disk_is_nearly_full() {
        // Nearly full, as far as the control plane can tell: the reserve is more than the disk
        // has free (read with statvfs, as in production).
        let free_mib = backend::db::free_bytes(&std::env::temp_dir()).unwrap() / (1024 * 1024);
        let app =
            spawn_with(Options { min_free_disk_mb: free_mib + 1024, sqlite: true, ..Options::default() }, None).await;
        let r = app.http.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "disk-full");
        let app = spawn_with(Options { sqlite: true, ..Options::default() }, None).await;
        assert_eq!(ready(&app).await, 200, "with room to spare it is ready");
    }
}

#[tokio::test]
async fn rollouts_and_released_quarantines_come_a_page_at_a_time_and_unknown_rollouts_have_no_events() {
    let app = spawn_app().await;
    // Three releases of stable: three rollouts, newest first.
    for (i, reference) in ["a1", "a2", "a3"].iter().enumerate() {
        let release = fleet().release_closures("stable", &format!("v{}", i + 2));
        let (status, body) = app.upload(&release, reference).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = |body: &Value| -> Vec<String> {
        body.as_array().unwrap().iter().map(|r| r["rolloutId"].as_str().unwrap().to_owned()).collect()
    };
    let (_, all) = app.get("/api/v1/rollouts").await;
    assert_eq!(ids(&all), ["stable@a3", "stable@a2", "stable@a1"]);
    let (_, first) = app.get("/api/v1/rollouts?limit=2").await;
    assert_eq!(ids(&first), ["stable@a3", "stable@a2"]);
    let (_, next) = app.get("/api/v1/rollouts?limit=2&before=stable@a2").await;
    assert_eq!(ids(&next), ["stable@a1"]);
    for bad in ["limit=0", "limit=1001", "before=stable@ffff", "before=nope"] {
        let (status, body) = app.get(&format!("/api/v1/rollouts?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, fleet_view) = app.get("/api/v1/fleet").await;
    assert_eq!(fleet_view["channels"][0]["currentRollout"], "stable@a3");

    // Events of a rollout that never existed: 404, as for the rollout itself.
    let (status, body) = app.get("/api/v1/rollouts/stable@ffff/events").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not-found")), "{body}");
    assert_eq!(app.get("/api/v1/rollouts/stable@a1/events").await.0, 200);

    // A rollout's log read backwards: the newest entries before a seq, oldest first.
    let seqs = |page: &Value| -> Vec<i64> {
        page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect()
    };
    let (_, all) = app.get("/api/v1/rollouts/stable@a1/events?after=0&limit=1000").await;
    let all = seqs(&all);
    assert!(all.len() >= 3, "{all:?}");
    let bound = all[all.len() - 1];
    let (_, page) = app.get(&format!("/api/v1/rollouts/stable@a1/events?before={bound}&limit=2")).await;
    assert_eq!(seqs(&page), all[all.len() - 3..all.len() - 1], "the two entries before {bound}, oldest first");
    let (status, body) = app.get("/api/v1/rollouts/stable@a1/events?after=1&before=9").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad-query")), "{body}");

    // Released quarantines: the newest `limit`, newest first; active ones always.
    for i in 0..3 {
        let q = json!({"channel": "stable", "closure": format!("/nix/store/q{i}"), "reason": "test"});
        assert_eq!(app.post("/api/v1/quarantines", q.clone()).await.0, 200);
        assert_eq!(app.post("/api/v1/quarantines/release", q).await.0, 200);
    }
    let q = json!({"channel": "stable", "closure": "/nix/store/active", "reason": "test"});
    assert_eq!(app.post("/api/v1/quarantines", q).await.0, 200);
    let (_, page) = app.get("/api/v1/quarantines?limit=2").await;
    let closures: Vec<&str> =
        page["released"].as_array().unwrap().iter().map(|q| q["closure"].as_str().unwrap()).collect();
    assert_eq!(closures, ["/nix/store/q2", "/nix/store/q1"]);
    assert_eq!(page["active"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_fleet_of_ten_thousand_hosts_is_uploaded_in_one_request() {
    let app = spawn_app().await;
    let mut builder = FleetBuilder::new().policy("p", &[(10, false)], "halt", 30).channel("stable", "p");
    let hosts: Vec<String> = (0..10_000).map(|i| format!("h{i:05}")).collect();
    for h in &hosts {
        builder = builder.host(h, "stable", &["web"]);
    }
    let body = crate::common::upload_body(&builder, "a1", chrono::Utc::now());
    let size = body.to_string().len();
    assert!(size > 2 * 1024 * 1024, "the upload is {size} bytes, past the old 1 MiB limit");
    let (status, summary) = app.post("/api/v1/manifests", body).await;
    assert_eq!((status, summary["hosts"].as_u64()), (200, Some(10_000)), "{summary}");
}
