//! Retention of the event log as a served control plane does it (SPEC §16): once entries are
//! older than `--log-retention-days`, the leader seals them into the archive, logs
//! `LogSealed` and deletes them; what asks for them afterwards is told so (410, the feed's
//! `reset`, the rollout's `sealedBefore`), an ended rollout sealed whole keeps a tally of its
//! records in their place, and `fleetwave log verify --archive` checks the archive and the
//! database as one chain.

use std::process::Command;
use std::time::Duration;

use engine::testkit::FleetBuilder;
use futures_util::StreamExt;

use crate::common::{Options, TestApp, spawn_with};

fn fleetwave(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwave")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A release of the one host `a`, converged: its rollout completes.
async fn complete_a_release(app: &TestApp, fleet: &FleetBuilder, commit: &str, closure: &str) {
    assert_eq!(app.upload(fleet, commit).await.0, 200);
    app.tick().await;
    let rollout = format!("stable@{commit}");
    let a = app.agent("a");
    a.activate(&rollout, closure, app.clock.now()).await;
    let (status, answer) = a.converge(&rollout, closure, app.clock.now()).await;
    assert_eq!(status, 200, "{answer}");
    app.tick().await;
    assert_eq!(app.rollout(&rollout).await["state"], "Completed");
}

/// Waits (the sealer looks once a second, on its own clock) until the database's log begins
/// at `first`; the seals that took it there.
async fn sealed_until(app: &TestApp, first: i64) -> Vec<shared::log::LogSealed> {
    for _ in 0..100 {
        let log = app.log().await;
        if log.first().map(|e| e.seq()) == Some(first) {
            return log
                .into_iter()
                .filter_map(|e| match e.entry {
                    shared::log::LogEntry::LogSealed(s) => Some(s),
                    _ => None,
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log did not begin at {first} within 10 s");
}

#[tokio::test]
async fn entries_past_retention_are_sealed_and_what_asks_for_them_is_told() {
    let app = spawn_with(
        Options { checkpoint_every_secs: 1, seal_every_secs: 1, log_retention_days: 1, ..Default::default() },
        None,
    )
    .await;
    let fleet = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .waves("stable", &[&["a"]]);
    complete_a_release(&app, &fleet, "a1", "/nix/store/a-v1").await;
    // A second release stays open: its log is kept whole, however old.
    assert_eq!(app.upload(&fleet.clone().release_closures("stable", "v2"), "a2").await.0, 200);
    app.tick().await;
    let opened = app.rollout("stable@a2").await["firstSeq"].as_i64().unwrap();
    let before = app.log().await;
    let served = &app;
    let summary_of = |id: &'static str| async move {
        let (status, list) = served.get("/api/v1/rollouts").await;
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().iter().find(|r| r["rolloutId"] == id).cloned().unwrap()
    };
    let completed = summary_of("stable@a1").await;
    assert_eq!((&completed["hosts"], &completed["convergedPercent"]), (&1.into(), &100.0.into()), "{completed}");
    let records_of_a = || async {
        let (status, host) = app.get("/api/v1/hosts/a").await;
        assert_eq!(status, 200, "{host}");
        host["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rolloutId"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(records_of_a().await, ["stable@a2", "stable@a1"]);

    app.advance(2 * 86_400);
    // Everything before the open rollout, in one seal or a few (a seal waits for the records
    // written behind the log), each segment after the one before.
    let first = opened;
    let seals = sealed_until(&app, first).await;
    let archive = app.dir.path().join("log-archive");
    let mut from = 1;
    for seal in &seals {
        assert_eq!(seal.from, from, "{seals:?}");
        assert_eq!(seal.file, format!("log-{}-{}.jsonl.zst", seal.from, seal.up_to));
        assert!(archive.join(&seal.file).is_file());
        from = seal.up_to + 1;
    }
    assert_eq!(from, first, "sealed through the entry before the open rollout's first");
    // Deleted once the seal was logged; the open rollout's entries are all there.
    let after = app.log().await;
    let kept: Vec<i64> = before.iter().map(|e| e.seq()).filter(|s| *s >= first).collect();
    assert!(kept.iter().all(|s| after.iter().any(|e| e.seq() == *s)));

    // The completed rollout still answers, and says where its log now begins. Its log sealed
    // whole, its records were replaced by their tally (in the same round, after the seal):
    // its summary is what it was, its page has each wave's counts and no hosts.
    let mut detail = app.rollout("stable@a1").await;
    for _ in 0..100 {
        if detail.get("hostsTallied").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        detail = app.rollout("stable@a1").await;
    }
    assert_eq!(detail["sealedBefore"], first, "{detail}");
    assert_eq!(detail["hostsTallied"], true, "{detail}");
    let wave = &detail["waves"][0];
    assert_eq!((&wave["counts"], &wave["hosts"]), (&serde_json::json!({"Converged": 1}), &serde_json::json!([])));
    assert_eq!(summary_of("stable@a1").await, completed);
    assert_eq!(records_of_a().await, ["stable@a2"], "the host's page lists the records kept");
    assert!(app.rollout("stable@a2").await.get("hostsTallied").is_none());
    assert!(app.rollout("stable@a2").await.get("sealedBefore").is_none());
    // Its replay needs the entries that left: 410 with the first kept seq.
    let (status, body) = app.get("/api/v1/rollouts/stable@a1?at=3").await;
    assert_eq!(
        (status, &body["error"]["code"], &body["error"]["firstSeq"]),
        (410, &"log-sealed".into(), &first.into())
    );
    // A page after a sealed seq: 410; after the first kept one's predecessor: the entries.
    let (status, body) = app.get("/api/v1/rollouts/stable@a2/events?after=0").await;
    assert_eq!((status, &body["error"]["firstSeq"]), (410, &first.into()), "{body}");
    let (status, body) = app.get(&format!("/api/v1/rollouts/stable@a2/events?after={}", first - 1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["seq"], first);

    // A feed client resuming from before it gets `reset`, then the entries from there.
    let mut feed = crate::feed::connect(&app, Some(0)).await;
    let reset = tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap();
    assert_eq!((reset.event.as_str(), reset.id.clone()), ("reset", (first - 1).to_string()));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&reset.data).unwrap()["firstSeq"], first);
    let next = tokio::time::timeout(Duration::from_secs(5), feed.next()).await.unwrap().unwrap();
    assert_eq!(next.id, first.to_string());

    // The auditor's view: the archive and the database verify as one chain.
    let db = app.db_arg();
    let (ok, text) = fleetwave(&["log", "verify", "--db", &db, "--archive", &archive.display().to_string()]);
    assert!(ok, "{text}");
    let last = app.log().await.last().unwrap().seq();
    assert!(
        text.contains(&format!("seq 1–{last}")) && text.contains(&format!("{} archive segments", seals.len())),
        "{text}"
    );
    let (ok, text) = fleetwave(&["log", "verify", "--db", &db]);
    assert!(ok && text.contains(&format!("from the seal of seq 1–{}", first - 1)), "{text}");
    let (ok, text) = fleetwave(&["log", "export", "--db", &db, "--from", "1"]);
    assert!(!ok && text.contains(&format!("entries before seq {first} were sealed")), "{text}");
}

/// The plan is SQLite's (PostgreSQL's planner picks by table statistics).
mod sqlite_only {
    /// Retention's cursors (the newest `LogSealed`, the `LogCompacted` entries) are found
    /// through their partial index, not by walking the log back to them.
    #[tokio::test]
    async fn the_archive_entries_are_read_through_their_partial_index() {
        let app = crate::common::spawn_with(crate::common::Options { sqlite: true, ..Default::default() }, None).await;
        for kind in [shared::log::LogKind::LogSealed, shared::log::LogKind::LogCompacted] {
            let sql = format!("EXPLAIN QUERY PLAN {}", backend::db::chain::newest_of_kind(kind));
            let plan: Vec<(i64, i64, i64, String)> =
                backend::on_pool!(&app.state.store, pool => sqlx::query_as(&sql).bind(1_i64).fetch_all(pool).await)
                    .unwrap();
            assert!(plan.iter().any(|(.., detail)| detail.contains("event_log_archive")), "{kind}: {plan:?}");
        }
    }
}
