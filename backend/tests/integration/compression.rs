//! Answers are gzipped for clients that accept it — the dashboard's reads and assets — and not
//! where compressing would cost the fleet or delay the feed: agents' answers and the live feed
//! stay plain.

use std::io::Read;

use crate::common::{TestApp, sign_request, spawn_app, two_waves, wait_for_rollouts};
use serde_json::{Value, json};

/// `path` read by a viewer accepting `encoding`: the encoding the server chose and the body
/// as sent.
async fn read(app: &TestApp, path: &str, encoding: &str) -> (Option<String>, Vec<u8>) {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(&app.viewer_token)
        .header("accept-encoding", encoding)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let chosen = r.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_owned());
    (chosen, r.bytes().await.unwrap().to_vec())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn reads_are_compressed_for_clients_that_accept_it_and_decode_to_the_plain_answer() {
    let app = spawn_app().await;
    let (status, body) = app.upload(&two_waves(), "c1").await;
    assert_eq!(status, 200, "{body}");
    let id = wait_for_rollouts(&app, 1).await[0]["rolloutId"].as_str().unwrap().to_owned();

    for path in ["/api/v1/openapi.json".to_owned(), format!("/api/v1/rollouts/{id}"), "/api/v1/fleet".to_owned()] {
        let (none, plain) = read(&app, &path, "identity").await;
        assert_eq!(none, None, "{path}");
        let plain: Value = serde_json::from_slice(&plain).unwrap();

        let (chosen, gzip) = read(&app, &path, "gzip, deflate, br, zstd").await;
        assert_eq!(chosen.as_deref(), Some("gzip"), "{path}");
        let decoded: Value = serde_json::from_slice(&gunzip(&gzip)).unwrap();
        assert_eq!(decoded, plain, "{path}");
    }
    // The OpenAPI document (~66 KB of JSON) shrinks several times over.
    let (_, plain) = read(&app, "/api/v1/openapi.json", "identity").await;
    let (_, gzip) = read(&app, "/api/v1/openapi.json", "gzip").await;
    assert!(gzip.len() * 3 < plain.len(), "{} bytes compressed of {}", gzip.len(), plain.len());
}

#[tokio::test]
async fn agents_answers_and_the_live_feed_stay_plain_whatever_the_client_accepts() {
    let app = spawn_app().await;
    let (status, body) = app.upload(&two_waves(), "c1").await;
    assert_eq!(status, 200, "{body}");
    let agent = app.agent("a");

    let path = shared::agent::HEARTBEAT_PATH;
    let body = serde_json::to_vec(&json!({ "hostname": "a", "at": chrono::Utc::now() })).unwrap();
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .body(body.clone());
    for (name, value) in sign_request(&agent.key, "a", "POST", path, &body, chrono::Utc::now().timestamp()) {
        request = request.header(name, value);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none(), "{:?}", r.headers());
    let answer: Value = r.json().await.unwrap();
    assert!(answer.is_object(), "{answer}");

    let r = app
        .http
        .get(app.url("/api/v1/feed"))
        .bearer_auth(&app.viewer_token)
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.headers().get("content-encoding").is_none(), "{:?}", r.headers());
}
