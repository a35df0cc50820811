//! The demo scenario, headless and accelerated: canary completes before stable dispatches,
//! the approval wave waits for an operator, the broken edge closure ends quarantined with its
//! other Pending hosts held, the flaky host fails within stable's last wave's failure budget
//! (stable completes without it), batch waits for its maintenance window when it is closed,
//! and everything else converges.

use std::time::Duration;

use crate::common::Logged;
use backend::db::store;
use backend::demo::{Demo, DemoArgs};
use engine::host::HostRecord;
use serde_json::json;
use shared::log::LogEntry;
use shared::state::{Gate, HostState, RolloutState};

async fn records(demo: &Demo, id: &str) -> Vec<HostRecord> {
    let id = shared::RolloutId::parse(id).unwrap();
    store::rollout_detail(&demo.state.store, &id).await.unwrap().map(|rows| rows.records).unwrap_or_default()
}

async fn rollout_state(demo: &Demo, id: &str) -> Option<(RolloutState, u32)> {
    let id = shared::RolloutId::parse(id).unwrap();
    store::rollout_detail::<shared::api::HostCell>(&demo.state.store, &id)
        .await
        .unwrap()
        .map(|rows| (rows.rollout.state, rows.rollout.current_wave))
}

/// Waits until `check` holds, re-checking after every committed change (the live feed is the
/// signal); fails after `limit`.
async fn until<F, Fut>(demo: &Demo, what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut feed = demo.state.feed.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        let wait = tokio::time::timeout_at(deadline, feed.recv()).await;
        assert!(wait.is_ok(), "timed out waiting for: {what}");
    }
}

const WAVE1: &[&str] = &[
    "db-02", "db-03", "web-05", "web-06", "web-07", "web-08", "web-09", "web-10", "web-11", "web-12", "api-03",
    "api-04", "api-05",
];

#[tokio::test]
async fn the_demo_tells_its_story() {
    let args = DemoArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: None,
        dist: "no-dist".into(),
        soak_minutes: 0,
        time_scale: 0.05,
        seed: 7,
        plan_tick_ms: 200,
        webhooks: None,
    };
    let demo = Demo::start(&args).await.unwrap();
    let limit = Duration::from_secs(60);

    // Stable reaches its approval wave and waits there.
    until(&demo, "stable's wave 1 held for approval", limit, || async {
        let held =
            records(&demo, "stable@d001").await.iter().filter(|r| WAVE1.contains(&r.hostname.as_str())).all(|r| {
                r.state == HostState::Pending && r.waiting_on.as_ref().is_some_and(|w| w.gate == Gate::Approval)
            });
        rollout_state(&demo, "stable@d001").await == Some((RolloutState::Active, 1)) && held
    })
    .await;

    let log: Vec<Logged> =
        store::log_after(&demo.state.store, 0, i64::MAX).await.unwrap().into_iter().map(Logged::new).collect();
    let canary_done = log
        .iter()
        .find(|e| {
            e.rollout_is("canary@d001")
                && matches!(&e.entry, LogEntry::RolloutStateChanged(c) if c.to == RolloutState::Completed)
        })
        .expect("canary completed")
        .seq();
    let queued = |e: &Logged| matches!(e.entry, LogEntry::DispatchQueued(_));
    let stable_first = log.iter().find(|e| e.rollout_is("stable@d001") && queued(e)).expect("stable dispatched").seq();
    assert!(
        canary_done < stable_first,
        "canary completed (seq {canary_done}) before stable dispatched anything (seq {stable_first})"
    );
    assert!(
        !log.iter().any(|e| queued(e) && WAVE1.iter().any(|h| e.host_is(h))),
        "nothing of the approval wave was dispatched before approval"
    );

    // The broken edge closure: edge-01 fails and rolls back; the closure is quarantined and the
    // other edge hosts, still Pending, are held by it.
    until(&demo, "edge quarantined", limit, || async {
        let recs = records(&demo, "edge@d001").await;
        recs.iter()
            .filter(|r| r.hostname.as_str() != "edge-01")
            .all(|r| r.state == HostState::Pending && r.waiting_on.as_ref().is_some_and(|w| w.gate == Gate::Quarantine))
            && recs.iter().any(|r| r.hostname.as_str() == "edge-01" && r.state == HostState::Reverted)
    })
    .await;
    let quarantines = store::quarantines(&demo.state.store, 1000).await.unwrap();
    assert_eq!(quarantines.len(), 1);
    assert!(quarantines[0].closure.as_str().contains(backend::demo::BROKEN_MARKER));
    assert_eq!(rollout_state(&demo, "edge@d001").await.map(|s| s.0), Some(RolloutState::Halted));

    // An operator approves through the API; everything else converges.
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/rollouts/stable@d001/approve", demo.addr))
        .bearer_auth(&demo.operator_token)
        .json(&json!({"wave": 1, "reason": "canary is healthy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until(&demo, "stable completed", limit, || async {
        rollout_state(&demo, "stable@d001").await.map(|s| s.0) == Some(RolloutState::Completed)
    })
    .await;
    for r in records(&demo, "stable@d001").await {
        if r.hostname.as_str() == backend::demo::FLAKY_HOST {
            assert!(r.state == HostState::Reverted && r.excused, "the flaky host rolled back, excused: {r:?}");
        } else {
            assert_eq!(r.state, HostState::Converged, "{}", r.hostname);
        }
    }
    let log: Vec<Logged> =
        store::log_after(&demo.state.store, 0, i64::MAX).await.unwrap().into_iter().map(Logged::new).collect();
    let within = log.iter().find_map(|e| match &e.entry {
        LogEntry::FailureWithinBudget(f) if e.host_is(backend::demo::FLAKY_HOST) => Some(f.clone()),
        _ => None,
    });
    let within = within.expect("the flaky host's failure is logged as within budget");
    assert_eq!((within.wave, within.failures, within.max), (2, 1, 1), "10% of stable's last wave of 10 hosts");
    assert_eq!(store::quarantines(&demo.state.store, 1000).await.unwrap().len(), 1, "only edge's closure");
    assert_eq!(rollout_state(&demo, "canary@d001").await.map(|s| s.0), Some(RolloutState::Completed));

    // Batch waits for its nightly window (when the test runs outside it).
    let (start, end, timezone) = backend::demo::BATCH_WINDOW;
    let window = engine::window::Window::parse(
        &shared::manifest::MaintenanceWindow {
            name: "batch-nightly".into(),
            selector: Default::default(),
            days: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].map(String::from).to_vec(),
            start: start.into(),
            end: end.into(),
            timezone: timezone.into(),
        },
        "demo",
    )
    .unwrap();
    let now = chrono::Utc::now();
    let opens = window.next_open(now).unwrap();
    if opens - now > chrono::Duration::minutes(5) {
        let batch = records(&demo, "batch@d001").await;
        assert_eq!(batch.len(), 3);
        for r in batch {
            let waiting = r.waiting_on.as_ref().unwrap_or_else(|| panic!("{} is held: {r:?}", r.hostname));
            assert_eq!((r.state, waiting.gate), (HostState::Pending, Gate::Window), "{}", r.hostname);
            assert!(waiting.reason.starts_with("maintenance window batch-nightly opens "), "{}", waiting.reason);
            assert!(waiting.reason.ends_with(" Europe/Berlin"), "{}", waiting.reason);
            assert_eq!(waiting.until, Some(opens));
        }
    }
    demo.stop().await.unwrap();
}
