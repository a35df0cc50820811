//! `GET /api/v1/hosts`: hostname prefix, channel, tag, state in the channel's current
//! rollout and running closure, each alone and together, pages in name order.

use crate::common::{TestApp, spawn_app};
use engine::testkit::FleetBuilder;
use serde_json::{Value, json};

fn fleet() -> FleetBuilder {
    fleet_with(0, false)
}

/// `host` acknowledges its dispatch in `rollout` and its activation fails.
async fn activation_fails(app: &TestApp, host: &str, rollout: &str, now: chrono::DateTime<chrono::Utc>) {
    let agent = app.agent(host);
    let (s, _) =
        agent.event(rollout, "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now})).await;
    assert_eq!(s, 200);
    let (s, a) = agent
        .event(rollout, "ActivationFailed", json!({"exitCode": 4, "stderrTail": "nginx failed", "failedAt": now}))
        .await;
    assert_eq!((s, a["state"].as_str()), (200, Some("Failed")), "{a}");
}

async fn names_of(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let (status, page) = app.get(&format!("/api/v1/hosts{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    let names = page["hosts"].as_array().unwrap().iter().map(|h| h["hostname"].as_str().unwrap().to_owned()).collect();
    (names, page)
}

#[tokio::test]
async fn hosts_are_found_by_prefix_channel_tag_state_and_closure_a_page_at_a_time() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    app.tick().await;
    let now = app.clock.now();
    // web-1 soaks, web-2's activation fails, web-3 runs an old nginx.
    app.agent("web-1").activate("stable@a1", "/nix/store/web-1-v1", now).await;
    activation_fails(&app, "web-2", "stable@a1", now).await;
    app.agent("web-3").heartbeat(Some("/nix/store/0000-old-nginx-1.24"), None).await;

    let (all, page) = names_of(&app, "").await;
    assert_eq!(all, ["edge-1", "edge-2", "web-1", "web-2", "web-3"], "name order");
    assert!(page.get("next").is_none(), "one page: {page}");

    assert_eq!(names_of(&app, "?q=web-").await.0, ["web-1", "web-2", "web-3"]);
    assert_eq!(names_of(&app, "?q=WEB-2").await.0, ["web-2"], "hostnames are lower case; so is the prefix");
    assert!(names_of(&app, "?q=zz").await.0.is_empty());
    // Pages: `next` is where the next one starts, and the last page has none.
    let (first, page) = names_of(&app, "?q=web-&limit=2").await;
    assert_eq!((first, page["next"].as_str()), (vec!["web-1".into(), "web-2".into()], Some("web-2")));
    let (second, page) = names_of(&app, "?q=web-&limit=2&after=web-2").await;
    assert_eq!(second, ["web-3"]);
    assert!(page.get("next").is_none());
    assert_eq!(names_of(&app, "?after=edge-2&limit=1").await.0, ["web-1"]);

    assert_eq!(names_of(&app, "?channel=edge").await.0, ["edge-1", "edge-2"]);
    assert_eq!(names_of(&app, "?tag=eu").await.0, ["edge-1", "web-3"]);
    assert_eq!(names_of(&app, "?tag=eu&channel=stable").await.0, ["web-3"]);
    let (failed, page) = names_of(&app, "?state=Failed").await;
    assert_eq!(failed, ["web-2"]);
    assert_eq!(page["hosts"][0]["rolloutId"], "stable@a1");
    assert_eq!(page["hosts"][0]["state"], "Failed");
    assert_eq!(names_of(&app, "?state=Soaking").await.0, ["web-1"]);
    assert_eq!(names_of(&app, "?state=Pending").await.0, ["edge-1", "edge-2", "web-3"]);
    assert_eq!(names_of(&app, "?state=Pending&channel=edge&q=edge-2").await.0, ["edge-2"]);
    let (running, page) = names_of(&app, "?closure=old-nginx").await;
    assert_eq!(running, ["web-3"]);
    assert_eq!(page["hosts"][0]["currentClosure"], "/nix/store/0000-old-nginx-1.24");
    assert_eq!(page["hosts"][0]["online"], true);
    assert!(names_of(&app, "?closure=old-nginx&channel=edge").await.0.is_empty());

    // Viewers search; nobody else.
    let anonymous = app.http.get(app.url("/api/v1/hosts")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_filter_few_hosts_pass_is_answered_past_the_first_batches() {
    // More hosts than the search asks the database about a batch at a time before it asks
    // for the set of hosts passing the filter: the ones that pass are near the end.
    const HOSTS: usize = 1100;
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h-{i:04}")).collect();
    let mut fleet = FleetBuilder::new().policy("p", &[(10, false)], "halt", 30).channel("stable", "p");
    for name in &names {
        fleet = fleet.host(name, "stable", &[]);
    }
    let wave: Vec<&str> = names.iter().map(String::as_str).collect();
    let fleet = fleet.waves("stable", &[&wave]);
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet, "a1").await.0, 200);
    app.tick().await;
    let now = app.clock.now();
    activation_fails(&app, "h-1098", "stable@a1", now).await;
    app.agent("h-1090").heartbeat(Some("/nix/store/0000-rare-kernel"), None).await;
    app.agent("h-0001").heartbeat(Some("/nix/store/0000-common"), None).await;

    assert_eq!(names_of(&app, "?state=Failed").await.0, ["h-1098"]);
    assert_eq!(names_of(&app, "?closure=rare-kernel").await.0, ["h-1090"]);
    assert!(names_of(&app, "?closure=rare-kernel&state=Failed").await.0.is_empty());
    // A filter most hosts pass fills the page from the first batch, and pages on.
    let (pending, page) = names_of(&app, "?state=Pending&limit=3").await;
    assert_eq!(
        (pending, page["next"].as_str()),
        (vec!["h-0000".into(), "h-0001".into(), "h-0002".into()], Some("h-0002"))
    );
    let (rest, page) = names_of(&app, "?state=Pending&limit=500&after=h-1000").await;
    assert_eq!(rest.len(), 98, "h-1001..h-1099 but the failed h-1098: {rest:?}");
    assert!(!rest.contains(&"h-1098".to_owned()) && page.get("next").is_none());
}

/// `GET /api/v1/hosts/{name}` says what the host booted as well as what it runs, from its
/// heartbeats; an agent that does not say (older) leaves it out.
#[tokio::test]
async fn a_host_says_what_it_booted() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    let beat = |host: &'static str, booted: Option<&'static str>| {
        let app = &app;
        async move {
            let mut body =
                json!({"hostname": host, "currentClosure": "/nix/store/0000-system-v2", "at": chrono::Utc::now()});
            if let Some(b) = booted {
                body["bootedClosure"] = json!(b);
            }
            let (status, answer) = app.agent(host).signed("POST", shared::agent::HEARTBEAT_PATH, &body).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    beat("web-1", Some("/nix/store/0000-system-v1")).await;
    beat("web-2", None).await;
    let (_, one) = app.get("/api/v1/hosts/web-1").await;
    assert_eq!(one["host"]["currentClosure"], "/nix/store/0000-system-v2");
    assert_eq!(one["bootedClosure"], "/nix/store/0000-system-v1");
    let (_, two) = app.get("/api/v1/hosts/web-2").await;
    assert!(two.get("bootedClosure").is_none(), "{two}");
    // A reboot into v2: the next heartbeat rewrites it at once.
    beat("web-1", Some("/nix/store/0000-system-v2")).await;
    let (_, one) = app.get("/api/v1/hosts/web-1").await;
    assert_eq!(one["bootedClosure"], "/nix/store/0000-system-v2");
    // Bad input: a booted closure that is no closure.
    let body = json!({"hostname": "web-3", "bootedClosure": "", "at": chrono::Utc::now()});
    let (status, _) = app.agent("web-3").signed("POST", shared::agent::HEARTBEAT_PATH, &body).await;
    assert!(status == 400 || status == 422, "{status}");
}

/// The plans are SQLite's (PostgreSQL's planner picks by table statistics).
mod sqlite_only {
    /// A search by state reads the records of that state by index, not every record of the
    /// current rollouts: SQLite pushes the state into both arms of the records view only when
    /// both give it the same affinity (migration 0014).
    #[tokio::test]
    async fn a_state_filter_reads_the_state_index_through_the_records_view() {
        let app = crate::common::spawn_with(crate::common::Options { sqlite: true, ..Default::default() }, None).await;
        for (hosts, bound) in
            [(0, vec!["stable@a1", "canary@a1", "Failed"]), (2, vec!["stable@a1", "canary@a1", "h-1", "h-2", "Failed"])]
        {
            let sql = format!("EXPLAIN QUERY PLAN {}", backend::db::store::record_states_query(2, hosts, true));
            let plan: Vec<(i64, i64, i64, String)> = backend::on_pool!(&app.state.store, pool => {
                let mut q = sqlx::query_as(&sql);
                for value in &bound {
                    q = q.bind(*value);
                }
                q.fetch_all(pool).await
            })
            .unwrap();
            let details: Vec<&str> = plan.iter().map(|(.., d)| d.as_str()).collect();
            assert!(
                details.iter().any(|d| d.contains("h USING") && d.contains("host_records_by_state")),
                "{hosts} hosts: {details:?}"
            );
            // The view's arms take the query's terms (no co-routine of the whole view); the
            // tail's newest rows (`t`) are grouped once, as a subquery of their own.
            assert!(
                !details.iter().any(|d| d.contains("CO-ROUTINE") && !d.ends_with(" t")),
                "the view is not flattened: {details:?}"
            );
        }
    }
}

/// A host moved to another channel keeps its record in its old channel's rollout; while that
/// rollout is still its channel's current one, a state filter must not match the host by it —
/// asked a batch of candidates at a time, and past the first batches (1,100 hosts before it),
/// for the whole set.
#[tokio::test]
async fn a_host_moved_to_another_channel_is_searched_by_its_new_channels_rollout() {
    for fillers in [0, 1_100] {
        moved_host_is_searched_by_its_new_channel(fillers).await;
    }
}

/// Channels stable (web-1..3) and edge (edge-1, 2), one wave each; `fillers` more hosts in
/// stable, named before every other; with `moved`, web-2 is in edge instead of stable.
fn fleet_with(fillers: usize, moved: bool) -> FleetBuilder {
    let filler_names: Vec<String> = (0..fillers).map(|i| format!("a-{i:04}")).collect();
    let mut b = FleetBuilder::new()
        .policy("p", &[(10, false)], "halt", 30)
        .channel("stable", "p")
        .channel("edge", "p")
        .host("web-1", "stable", &["web"])
        .host("web-2", if moved { "edge" } else { "stable" }, &["web"])
        .host("web-3", "stable", &["web", "eu"])
        .host("edge-1", "edge", &["eu"])
        .host("edge-2", "edge", &[]);
    for name in &filler_names {
        b = b.host(name, "stable", &[]);
    }
    let mut stable: Vec<&str> = filler_names.iter().map(String::as_str).collect();
    let mut edge = vec!["edge-1", "edge-2"];
    stable.extend(["web-1", "web-3"]);
    if moved {
        edge.push("web-2")
    } else {
        stable.push("web-2")
    }
    b.waves("stable", &[&stable]).waves("edge", &[&edge])
}

async fn moved_host_is_searched_by_its_new_channel(fillers: usize) {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet_with(fillers, false), "a1").await.0, 200);
    app.tick().await;
    let now = app.clock.now();
    activation_fails(&app, "web-2", "stable@a1", now).await;
    assert_eq!(names_of(&app, "?state=Failed").await.0, ["web-2"]);

    // Release b1 moves web-2 to edge and rolls out edge only: stable@a1 stays stable's
    // current rollout, with web-2's Failed record in it.
    let mut body = crate::common::upload_body(&fleet_with(fillers, true), "b1", chrono::Utc::now());
    let manifest_of = |r: &Value| -> Value { serde_json::from_slice(&crate::common::artifact_bytes(r)).unwrap() };
    let rollouts = body["rollouts"].as_array_mut().unwrap();
    rollouts.retain(|r| manifest_of(r)["channel"] == "edge");
    assert_eq!(rollouts.len(), 1, "{body}");
    let (status, answer) = app.post("/api/v1/manifests", body).await;
    assert_eq!(status, 200, "{answer}");
    app.tick().await;
    let current: Vec<String> = crate::common::wait_for_rollouts(&app, 3)
        .await
        .iter()
        .map(|r| r["rolloutId"].as_str().unwrap().to_owned())
        .collect();
    assert!(current.contains(&"edge@b1".to_owned()) && current.contains(&"stable@a1".to_owned()), "{current:?}");
    assert_eq!(app.host_state("stable@a1", "web-2").await, "Failed");

    // web-2 is Pending in edge@b1, its channel's current rollout: that is what it is found by.
    let (failed, page) = names_of(&app, "?state=Failed").await;
    assert!(failed.is_empty(), "{fillers} hosts before it: {page}");
    let (pending, page) = names_of(&app, "?state=Pending&q=web-2").await;
    assert_eq!(pending, ["web-2"], "{page}");
    let hit = &page["hosts"][0];
    assert_eq!((hit["rolloutId"].as_str(), hit["state"].as_str()), (Some("edge@b1"), Some("Pending")));
}
