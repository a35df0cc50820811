//! Webhooks (SPEC §18) against a real local HTTP receiver: every wanted entry in seq order,
//! signed so the receiver can check it; a receiver down for a while loses nothing and gets
//! nothing out of order; a server restarted mid-backlog resumes from its stored cursor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::common::{Options, spawn_with};

const R: &str = "stable@a1";
const SECRET: &str = "a-secret-of-32-bytes-0123456789a";

use crate::common::two_waves as fleet;

/// One request the receiver took: which webhook, the body, the signature header.
#[derive(Debug, Clone)]
struct Received {
    webhook: String,
    body: Bytes,
    signature: String,
}

impl Received {
    fn seq(&self) -> i64 {
        serde_json::from_slice::<Value>(&self.body).unwrap()["seq"].as_i64().unwrap()
    }
}

/// A local HTTP receiver; while `up` is false it answers 503 (and keeps nothing).
#[derive(Clone, Default)]
struct Receiver {
    taken: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<u32>>,
    up: Arc<AtomicBool>,
    changed: Arc<Notify>,
}

async fn take(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let status = if r.up.load(Ordering::SeqCst) {
        let webhook = header("x-fleetwave-webhook");
        r.taken.lock().unwrap().push(Received { webhook, body, signature: header("x-fleetwave-signature") });
        StatusCode::NO_CONTENT
    } else {
        *r.refused.lock().unwrap() += 1;
        StatusCode::SERVICE_UNAVAILABLE
    };
    r.changed.notify_waiters();
    status
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver { up: Arc::new(AtomicBool::new(true)), ..Receiver::default() };
        let app = axum::Router::new().route("/hook", axum::routing::post(take)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn taken(&self, webhook: &str) -> Vec<Received> {
        self.taken.lock().unwrap().iter().filter(|r| r.webhook == webhook).cloned().collect()
    }

    /// Waits (signalled by each request) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Receiver) -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{what}: taken {:?}",
            self.taken.lock().unwrap().iter().map(Received::seq).collect::<Vec<_>>()
        );
    }
}

fn webhooks_file(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("webhooks.toml");
    let text = format!(
        r#"
[[webhook]]
name = "all"
url = "{url}"
secret = "{SECRET}"

[[webhook]]
name = "chat"
url = "{url}"
secret = "{SECRET}"
format = "slack"
kinds = ["RolloutStateChanged", "OperatorAction"]
channels = ["stable"]
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The webhooks' delivery state once `done` holds for it: the deliverer records a delivery
/// after the receiver took it, so the receiver's view can be ahead of the server's for a moment.
async fn delivery_state(app: &crate::common::TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, views) = app.get("/api/v1/webhooks").await;
        assert_eq!(status, 200, "{views}");
        if done(&views) {
            return views;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery state never came to it: {views}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn verifies(r: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    r.signature == format!("sha256={hex}")
}

#[tokio::test]
async fn every_entry_arrives_in_seq_order_signed_and_a_slack_webhook_gets_words() {
    let (receiver, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(Options { webhooks: Some(webhooks_file(dir.path(), &url)), ..Options::default() }, None).await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    assert_eq!(app.post(&format!("/api/v1/rollouts/{R}/pause"), serde_json::json!({"reason": "lunch"})).await.0, 200);
    let now = app.clock.now();
    app.agent("a").activate(R, "/nix/store/a-v1", now).await;

    let log = app.log().await;
    let last = log.last().unwrap().seq();
    receiver.until("every entry delivered", |r| r.taken("all").last().is_some_and(|e| e.seq() == last)).await;
    let all = receiver.taken("all");
    let seqs: Vec<i64> = all.iter().map(Received::seq).collect();
    assert_eq!(seqs, log.iter().map(|l| l.seq()).collect::<Vec<_>>(), "every entry once, in seq order");
    assert!(all.iter().all(verifies), "the receiver can check each signature");
    let first: shared::api::LogEvent = serde_json::from_slice(&all[0].body).unwrap();
    assert_eq!(first.kind, shared::log::LogKind::ManifestSetUpdated, "the body is the log entry");

    // The chat webhook: only what it asked for, in words.
    let wanted = log.iter().filter(|l| {
        matches!(l.entry, shared::log::LogEntry::OperatorAction(_) | shared::log::LogEntry::RolloutStateChanged(_))
    });
    let wanted = wanted.count();
    receiver.until("the chat webhook's entries", |r| r.taken("chat").len() == wanted).await;
    let texts: Vec<String> = receiver
        .taken("chat")
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("stable@a1") && t.contains("pause by") && t.contains("lunch")),
        "{texts:?}"
    );

    let views = delivery_state(&app, |v| v[0]["cursor"] == last).await;
    assert_eq!(views[0]["name"], "all");
    assert_eq!(views[0]["behind"], 0);
    assert_eq!(views[0]["delivered"], log.len());
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(&format!("fleetwave_webhook_delivered_total{{webhook=\"all\"}} {}", log.len())),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_receiver_down_for_a_while_then_back_loses_nothing_and_gets_nothing_out_of_order() {
    let (receiver, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(Options { webhooks: Some(webhooks_file(dir.path(), &url)), ..Options::default() }, None).await;
    receiver.up.store(false, Ordering::SeqCst);
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    for action in ["pause", "resume", "pause", "resume"] {
        assert_eq!(app.post(&format!("/api/v1/rollouts/{R}/{action}"), serde_json::json!({})).await.0, 200);
    }
    receiver.until("two refused attempts", |r| *r.refused.lock().unwrap() >= 2).await;
    let views = delivery_state(&app, |v| v[0]["failingSince"].is_string()).await;
    assert!(views[0]["lastError"].as_str().is_some_and(|e| e.contains("503")), "{views}");
    assert!(views[0]["behind"].as_i64().is_some_and(|b| b > 0), "{views}");

    receiver.up.store(true, Ordering::SeqCst);
    let log = app.log().await;
    let last = log.last().unwrap().seq();
    receiver.until("the backlog delivered", |r| r.taken("all").last().is_some_and(|e| e.seq() == last)).await;
    let seqs: Vec<i64> = receiver.taken("all").iter().map(Received::seq).collect();
    assert_eq!(seqs, log.iter().map(|l| l.seq()).collect::<Vec<_>>());
    delivery_state(&app, |v| v[0]["failingSince"].is_null() && v[0]["behind"] == 0).await;
}

#[tokio::test]
async fn a_server_restarted_mid_backlog_resumes_from_its_stored_cursor() {
    let (receiver, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = webhooks_file(dir.path(), &url);
    let app = spawn_with(Options { webhooks: Some(file.clone()), ..Options::default() }, None).await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    let delivered_before = app.log().await.last().unwrap().seq();
    receiver
        .until("the upload delivered", |r| r.taken("all").last().is_some_and(|e| e.seq() == delivered_before))
        .await;
    // Down: a backlog builds up, and the server stops in the middle of it.
    receiver.up.store(false, Ordering::SeqCst);
    for action in ["pause", "resume"] {
        assert_eq!(app.post(&format!("/api/v1/rollouts/{R}/{action}"), serde_json::json!({})).await.0, 200);
    }
    receiver.until("a refused attempt", |r| *r.refused.lock().unwrap() >= 1).await;
    let stopped = app.stop().await;

    let app = spawn_with(Options { webhooks: Some(file), ..Options::default() }, Some(stopped)).await;
    assert_eq!(app.post(&format!("/api/v1/rollouts/{R}/pause"), serde_json::json!({})).await.0, 200);
    receiver.up.store(true, Ordering::SeqCst);
    let log = app.log().await;
    let last = log.last().unwrap().seq();
    receiver
        .until("the backlog delivered after the restart", |r| r.taken("all").last().is_some_and(|e| e.seq() == last))
        .await;
    let seqs: Vec<i64> = receiver.taken("all").iter().map(Received::seq).collect();
    assert_eq!(
        seqs,
        log.iter().map(|l| l.seq()).collect::<Vec<_>>(),
        "what was delivered before the stop is not sent again, nothing after it is missed"
    );
}
