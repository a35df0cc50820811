//! The live feed: resume with Last-Event-ID without gap or duplicate, and a lagging client is
//! cut off rather than silently skipped.

use std::time::Duration;

use crate::common::{Options, spawn_app, spawn_with};
use engine::testkit::FleetBuilder;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::json;

fn fleet(hosts: usize) -> FleetBuilder {
    let mut b = FleetBuilder::new().policy("p", &[(10, false)], "halt", 30).channel("stable", "p");
    for i in 0..hosts {
        b = b.host(&format!("h{i:02}"), "stable", &[]);
    }
    b
}

pub async fn connect(app: &crate::common::TestApp, last_event_id: Option<i64>) -> impl Stream<Item = Event> + Unpin {
    let mut req = app.http.get(app.url("/api/v1/feed")).bearer_auth(&app.viewer_token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    Box::pin(r.bytes_stream().eventsource().filter_map(|e| async move { e.ok() }))
}

/// Reads events until one with seq >= `until` arrives; fails if the stream stalls for 5 s.
async fn read_until(stream: &mut (impl Stream<Item = Event> + Unpin), until: i64) -> Vec<Event> {
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the feed stalled");
        let event = next.expect("the feed ended");
        let seq: i64 = event.id.parse().unwrap();
        got.push(event);
        if seq >= until {
            return got;
        }
    }
}

async fn last_seq(app: &crate::common::TestApp) -> i64 {
    app.log().await.last().map_or(0, |e| e.seq())
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_every_missed_entry_once() {
    let app = spawn_app().await;
    app.upload(&fleet(3), "a1").await;
    let mut live = connect(&app, None).await;
    app.post("/api/v1/rollouts/stable@a1/pause", json!({"reason": "one"})).await;
    let first = read_until(&mut live, last_seq(&app).await).await;
    assert!(first.iter().any(|e| e.event == "rollout"), "a rollout entry for the pause");
    assert!(first.iter().any(|e| e.event == "operator"));
    let data: serde_json::Value = serde_json::from_str(&first[0].data).unwrap();
    assert_eq!(data["seq"].to_string(), first[0].id, "id is the event-log seq");
    let seen = first.last().unwrap().id.parse::<i64>().unwrap();
    drop(live);

    // The fleet keeps moving while the client is away.
    app.post("/api/v1/rollouts/stable@a1/resume", json!({})).await;
    app.post("/api/v1/quarantines", json!({"channel": "stable", "closure": "/nix/store/h01-v1"})).await;
    app.agent("h00").heartbeat(Some("/nix/store/old"), None).await;
    let target = last_seq(&app).await;
    assert!(target > seen + 3);

    let mut resumed = connect(&app, Some(seen)).await;
    let missed = read_until(&mut resumed, target).await;
    let got: Vec<i64> = missed.iter().map(|e| e.id.parse().unwrap()).collect();
    let expected: Vec<i64> = app.log().await.iter().map(|e| e.seq()).filter(|s| *s > seen).collect();
    assert_eq!(got, expected, "every missed entry, once, in order");
    let kinds: Vec<&str> = missed.iter().map(|e| e.event.as_str()).collect();
    assert!(kinds.contains(&"quarantine") && kinds.contains(&"presence") && kinds.contains(&"hold"), "{kinds:?}");

    // ...and then live entries follow without a duplicate.
    app.post("/api/v1/quarantines/release", json!({"channel": "stable", "closure": "/nix/store/h01-v1"})).await;
    let more = read_until(&mut resumed, last_seq(&app).await).await;
    assert!(more.iter().all(|e| e.id.parse::<i64>().unwrap() > target));
}

#[tokio::test]
async fn a_client_that_falls_too_far_behind_is_disconnected_not_skipped() {
    let app = spawn_with(Options { feed_capacity: 8, ..Options::default() }, None).await;
    let mut slow = connect(&app, Some(0)).await;
    // One upload opens a 40-host rollout: far more than 8 entries in one commit.
    app.upload(&fleet(40), "a1").await;
    let mut got = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), slow.next()).await.expect("stalled") {
        got.push(e.id.parse::<i64>().unwrap());
    }
    let all: Vec<i64> = app.log().await.iter().map(|e| e.seq()).collect();
    assert!(got.len() < all.len(), "the lagging client did not get everything");
    assert_eq!(got, all[..got.len()], "what it got is a gap-free prefix");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("fleetwave_feed_lagging_disconnects_total 1"), "{metrics}");

    // It reconnects from where it was and catches up.
    let mut again = connect(&app, Some(got.last().copied().unwrap_or(0))).await;
    let rest: Vec<i64> =
        read_until(&mut again, *all.last().unwrap()).await.iter().map(|e| e.id.parse().unwrap()).collect();
    assert_eq!([got, rest].concat(), all);
}

#[tokio::test]
async fn a_browser_can_resume_with_the_last_event_id_query_parameter() {
    let app = spawn_app().await;
    app.upload(&fleet(2), "a1").await;
    let after = last_seq(&app).await;
    app.post("/api/v1/rollouts/stable@a1/pause", json!({})).await;
    let r = app
        .http
        .get(app.url(&format!("/api/v1/feed?lastEventId={after}")))
        .bearer_auth(&app.viewer_token)
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(r.bytes_stream().eventsource().filter_map(|e| async move { e.ok() }));
    let got = read_until(&mut stream, last_seq(&app).await).await;
    assert_eq!(got.first().unwrap().id.parse::<i64>().unwrap(), after + 1);
}
