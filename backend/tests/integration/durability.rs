//! Durability: every event answered `applied` survives a SIGKILL and the rollout carries on
//! after a restart; the rollout and record tables are re-derivable from the event log.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Logged, db_arg, spawn_app};
use backend::db::Store;
use backend::db::testing::TestDb;
use backend::on_pool;
use engine::host::HostRecord;
use engine::rollout::Rollout;
use engine::testkit::{FleetBuilder, ci_key, host_key, trust_config};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &std::path::Path, db: &TestDb, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["serve", "--log-format", "json"])
        .env("FLEETWAVE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETWAVE_DB", db_arg(db))
        .env("FLEETWAVE_TRUST", dir.join("trust.json"))
        .env("FLEETWAVE_DIST", dir.join("no-dist"))
        .env("FLEETWAVE_PLAN_TICK_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, base: format!("http://127.0.0.1:{port}") };
    // The process gives no readiness signal to a parent; /readyz is the contract (SPEC §12).
    for _ in 0..300 {
        if reqwest::get(format!("{}/readyz", server.base)).await.is_ok_and(|r| r.status() == 200) {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not become ready");
}

fn fleet(hosts: usize) -> FleetBuilder {
    let mut b = FleetBuilder::new().policy("p", &[(0, false)], "halt", 30).channel("stable", "p");
    for i in 0..hosts {
        b = b.host(&format!("h{i:02}"), "stable", &[]);
    }
    b
}

async fn post_event(
    http: &reqwest::Client,
    base: &str,
    host: &str,
    event: Value,
) -> Result<(u16, Value), reqwest::Error> {
    let body = serde_json::to_vec(&json!({"hostname": host, "rolloutId": "stable@a1", "event": event})).unwrap();
    let headers = crate::common::sign_request(
        &host_key(host),
        host,
        "POST",
        "/api/v1/agent/events",
        &body,
        chrono::Utc::now().timestamp(),
    );
    let mut req = http.post(format!("{base}/api/v1/agent/events")).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// The next events an agent sends for a record in `state` with `last` seq (soak is 0).
fn next_events(host: &str, state: &str, last: u64) -> Vec<Value> {
    let now = chrono::Utc::now();
    let closure = format!("/nix/store/{host}-v1");
    let ack = json!({"kind": "DispatchAck", "currentClosure": "/nix/store/old", "receivedAt": now});
    let done = json!({"kind": "ActivationCompleted", "observedClosure": closure, "exitCode": 0, "completedAt": now});
    let conv = json!({"kind": "Converged", "convergedAt": now, "currentClosure": closure});
    let plan = match state {
        "Pending" => vec![ack, done, conv],
        "Activating" => vec![done, conv],
        "Soaking" => vec![conv],
        _ => vec![],
    };
    plan.into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e["seq"] = json!(last + 1 + i as u64);
            e
        })
        .collect()
}

#[tokio::test]
async fn applied_events_survive_sigkill_and_the_rollout_completes_after_restart() {
    const HOSTS: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::from_env().await;
    std::fs::write(dir.path().join("trust.json"), serde_json::to_vec(&trust_config(&ci_key())).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["operator", "add", "--name", "ci", "--role", "operator", "--db"])
        .arg(db_arg(&db))
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_owned();
    let port = free_port();
    let server = start(dir.path(), &db, port).await;
    let http = reqwest::Client::new();
    let upload = crate::common::upload_body(&fleet(HOSTS), "a1", chrono::Utc::now());
    let r =
        http.post(format!("{}/api/v1/manifests", server.base)).bearer_auth(&token).json(&upload).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Every host races through its events; the server is killed mid-stream.
    let applied: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut agents = Vec::new();
    for i in 0..HOSTS {
        let (http, base, applied) = (http.clone(), server.base.clone(), applied.clone());
        agents.push(tokio::spawn(async move {
            let host = format!("h{i:02}");
            for event in next_events(&host, "Pending", 0) {
                let seq = event["seq"].as_u64().unwrap();
                match post_event(&http, &base, &host, event).await {
                    Ok((200, answer)) if answer["outcome"] == "applied" => {
                        applied.lock().unwrap().push((host.clone(), seq))
                    }
                    _ => return,
                }
            }
        }));
    }
    while applied.lock().unwrap().len() < HOSTS {
        tokio::task::yield_now().await;
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no shutdown path runs.
    server.child.wait().unwrap();
    for agent in agents {
        agent.await.unwrap();
    }
    // (At least HOSTS of them: the loop above waited for that before the kill.)
    let acknowledged = applied.lock().unwrap().clone();
    println!("{} events answered applied before the SIGKILL", acknowledged.len());

    // Every event answered `applied` is in the log.
    let server = start(dir.path(), &db, port).await;
    let store = backend::db::open(&db.target()).await.unwrap();
    let log = backend::db::store::log_after(&store, 0, i64::MAX).await.unwrap();
    for (host, seq) in &acknowledged {
        assert!(
            log.iter()
                .map(|e| Logged::new(e.clone()))
                .any(|e| e.host_is(host) && e.host_event().is_some_and(|h| h.event.seq() == *seq)),
            "{host} seq {seq} was answered applied but is not in the log"
        );
    }

    // Agents resume from their bootstrap snapshots and the rollout completes.
    for i in 0..HOSTS {
        let host = format!("h{i:02}");
        let headers = crate::common::sign_request(
            &host_key(&host),
            &host,
            "GET",
            "/api/v1/agent/bootstrap",
            b"",
            chrono::Utc::now().timestamp(),
        );
        let mut req = http.get(format!("{}/api/v1/agent/bootstrap", server.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let snapshots: Value = req.send().await.unwrap().json().await.unwrap();
        let (state, last) = match snapshots.as_array().unwrap().first() {
            Some(s) => (s["state"].as_str().unwrap().to_owned(), s["lastEventSeq"].as_u64().unwrap()),
            None => ("Converged".to_owned(), 0),
        };
        for event in next_events(&host, &state, last) {
            let (status, answer) = post_event(&http, &server.base, &host, event).await.unwrap();
            assert_eq!(status, 200, "{host}: {answer}");
        }
    }
    let detail: Value = http
        .get(format!("{}/api/v1/rollouts/stable@a1", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["state"], "Completed", "{detail}");
    drop(server);
}

async fn table_rows(store: &Store) -> (BTreeMap<String, Rollout>, BTreeMap<String, HostRecord>) {
    type Rows = (Vec<(String, String)>, Vec<(String, String, String)>);
    let (rollouts, records): Rows = on_pool!(store, pool => (
        sqlx::query_as("SELECT rollout_id, body FROM rollouts").fetch_all(pool).await.unwrap(),
        sqlx::query_as("SELECT rollout_id, hostname, body FROM current_host_records").fetch_all(pool).await.unwrap(),
    ));
    (
        rollouts.into_iter().map(|(id, b)| (id, serde_json::from_str(&b).unwrap())).collect(),
        records.into_iter().map(|(id, h, b)| (format!("{id}/{h}"), serde_json::from_str(&b).unwrap())).collect(),
    )
}

/// A checkpoint of the state now, as stored (SPEC §16).
async fn checkpoint(app: &crate::common::TestApp) -> backend::db::checkpoint::Checkpoint {
    let store = &app.state.store;
    backend::db::checkpoint::take(store, app.clock.now()).await.unwrap().expect("entries since the last checkpoint");
    backend::db::checkpoint::newest(store).await.unwrap().unwrap()
}

#[tokio::test]
async fn replaying_the_event_log_into_empty_tables_gives_the_same_rollouts_and_records() {
    let app = spawn_app().await;
    let f = FleetBuilder::new()
        .policy("p", &[(0, false), (5, true)], "rollback-and-halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .host("c", "stable", &[])
        .host("d", "stable", &[])
        .waves("stable", &[&["a", "b"], &["c", "d"]]);
    app.upload(&f, "a1").await;
    let (a, b) = (app.agent("a"), app.agent("b"));
    a.activate("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    a.converge("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    let mut checkpoints = vec![checkpoint(&app).await];
    b.activate("stable@a1", "/nix/store/b-v1", app.clock.now()).await;
    b.event(
        "stable@a1",
        "ProbeResult",
        json!({"probe": "http", "mode": "enforce", "status": "fail", "observedAt": app.clock.now()}),
    )
    .await;
    b.event(
        "stable@a1",
        "Failed",
        json!({"failedAt": app.clock.now(), "failingProbes": ["http"], "policyApplied": "rollback-and-halt"}),
    )
    .await;
    b.event("stable@a1", "RollbackComplete", json!({"revertedTo": "/nix/store/old", "completedAt": app.clock.now()}))
        .await;
    checkpoints.push(checkpoint(&app).await);
    app.post("/api/v1/rollouts/stable@a1/clear-failure", json!({})).await;
    app.tick().await;
    app.post("/api/v1/rollouts/stable@a1/approve", json!({"wave": 1})).await;
    app.post("/api/v1/rollouts/stable@a1/pause", json!({})).await;
    // Policies: a freeze released, one in force, a host resumed, one suspended.
    for (path, body) in [
        ("/api/v1/freezes", json!({"name": "f1", "reason": "one"})),
        ("/api/v1/freezes", json!({"name": "f2", "reason": "two", "selector": {"hosts": ["c"]}})),
        ("/api/v1/freezes/release", json!({"name": "f1", "reason": "over"})),
        ("/api/v1/hosts/c/suspend", json!({"reason": "fan"})),
        ("/api/v1/hosts/d/suspend", json!({"reason": "disk"})),
        ("/api/v1/hosts/c/resume", json!({"reason": "fixed"})),
    ] {
        assert_eq!(app.post(path, body).await.0, 200, "{path}");
    }
    // Quarantines: one released, one in force.
    for (path, closure) in [
        ("/api/v1/quarantines", "/nix/store/00000000000000000000000000000001-bad"),
        ("/api/v1/quarantines", "/nix/store/00000000000000000000000000000002-worse"),
        ("/api/v1/quarantines/release", "/nix/store/00000000000000000000000000000001-bad"),
    ] {
        let body = json!({"channel": "stable", "closure": closure, "reason": "bad build"});
        assert_eq!(app.post(path, body).await.0, 200, "{path} {closure}");
    }
    checkpoints.push(checkpoint(&app).await);
    // A second release supersedes the first.
    app.upload(&f.clone().release_closures("stable", "v2"), "b2").await;
    app.advance(3600);
    app.tick().await;

    // Checkpoints (SPEC §16): each is the log's state at its seq, and replaying the entries
    // after it onto it gives what replaying the whole log gives.
    let log = backend::db::store::log_after(&app.state.store, 0, i64::MAX).await.unwrap();
    let mut whole = backend::db::replay::replay(&log).unwrap();
    whole.prune();
    let in_force = backend::db::store::quarantines(&app.state.store, 0).await.unwrap();
    assert!(in_force.iter().any(|q| q.closure.as_str().ends_with("-worse")), "{in_force:?}");
    let by_key = |qs: Vec<backend::db::store::QuarantineRow>| {
        qs.into_iter().map(|q| ((q.channel.clone(), q.closure.clone()), q)).collect::<BTreeMap<_, _>>()
    };
    assert_eq!(whole.quarantines, by_key(in_force), "quarantines in force as stored");
    for cp in &checkpoints {
        let upto: Vec<_> = log.iter().filter(|e| e.seq <= cp.seq).cloned().collect();
        let mut then = backend::db::replay::replay(&upto).unwrap();
        then.prune();
        assert_eq!(cp.state, then, "the checkpoint at {} is the log's state there", cp.seq);
        let replayed = backend::db::checkpoint::replay_from(&app.state.store, cp.clone()).await.unwrap();
        assert_eq!(replayed, whole, "replayed from the checkpoint at {}", cp.seq);
    }
    // Start-up loads the newest checkpoint and replays the entries after it; what it loads
    // is the log's state, which is what the tables hold.
    let (loaded, source) = backend::db::startup::load_from(&app.state.store).await.unwrap();
    let (newest, last) = (checkpoints.last().unwrap().seq, log.last().unwrap().seq);
    assert!(last > newest);
    assert_eq!(source, backend::db::startup::Source::Checkpoint { seq: newest, replayed: last - newest });
    assert_eq!(backend::db::replay::from_tables(&app.state.store).await.unwrap().1, whole, "the tables");
    assert!(loaded.rollouts.iter().eq(whole.rollouts.values()), "rollouts loaded");
    assert!(loaded.records.iter().eq(whole.records.values()), "records loaded");
    assert!(loaded.quarantines.iter().eq(whole.quarantines.values()), "quarantines loaded");
    assert_eq!(loaded.policies, whole.policies, "policies loaded");

    let before = table_rows(&app.state.store).await;
    assert!(before.0.len() == 2 && before.1.len() == 8);
    let policies = backend::db::store::policies(&app.state.store).await.unwrap();
    assert_eq!(policies.freezes.len(), 1);
    assert_eq!(policies.suspended.keys().map(|h| h.as_str()).collect::<Vec<_>>(), ["d"]);
    // A writer of its own (at the epoch the server leads in, on PostgreSQL).
    let epoch = app.state.cluster.this().epoch;
    let writer = backend::db::writer::Writer::open(&app.db.target(), backend::db::BUSY_TIMEOUT, epoch).await.unwrap();
    let replayed = backend::db::replay::rebuild(&app.state.store, &writer).await.unwrap();
    assert_eq!(replayed.rollouts.len(), 2);
    let after = table_rows(&app.state.store).await;
    assert_eq!(after.0, before.0, "rollouts re-derived from the log");
    assert_eq!(after.1, before.1, "records re-derived from the log");
    assert_eq!(backend::db::store::policies(&app.state.store).await.unwrap(), policies, "policies too");
}

/// The state of `host`'s record in `host_records` itself and as readers see it.
async fn table_and_view_state(store: &Store, host: &str) -> (String, String) {
    let of = |table: &str| format!("SELECT state FROM {table} WHERE rollout_id = 'stable@a1' AND hostname = $1");
    on_pool!(store, pool => (
        sqlx::query_scalar(&of("host_records")).bind(host).fetch_one(pool).await.unwrap(),
        sqlx::query_scalar(&of("current_host_records")).bind(host).fetch_one(pool).await.unwrap(),
    ))
}

#[tokio::test]
async fn records_carried_by_the_log_are_written_behind_it_and_read_through_it() {
    let app = spawn_app().await;
    let f = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .waves("stable", &[&["a", "b"]]);
    app.upload(&f, "a1").await;
    app.tick().await;
    let (a, b) = (app.agent("a"), app.agent("b"));
    // Within the write interval (the clock stands still): the log carries a's new record,
    // the table still has the dispatched one, and every reader sees the log's.
    a.activate("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    assert_eq!(table_and_view_state(&app.state.store, "a").await, ("Pending".into(), "Soaking".into()));
    assert_eq!(app.host_state("stable@a1", "a").await, "Soaking");
    let (_, host) = app.get("/api/v1/hosts/a").await;
    assert_eq!(host["records"][0]["state"], "Soaking", "{host}");
    let snapshots = a.signed("GET", "/api/v1/agent/bootstrap", &Value::Null).await.1;
    assert_eq!(snapshots[0]["state"], "Soaking", "{snapshots}");
    let (_, list) = app.get("/api/v1/rollouts").await;
    assert_eq!(list[0]["counts"]["Soaking"], 1, "{list}");
    // A crash now (the database as it is committed) loses nothing: the next start writes the
    // log's records into the table before loading memory from it. (SQLite: a copy of the
    // file; PostgreSQL: the database itself, as a new leader would load it.)
    let crashed = match app.db.sqlite_path() {
        Some(_) => {
            let crashed = app.dir.path().join("crashed.db");
            app.execute(&format!("VACUUM INTO '{}'", crashed.display())).await;
            crashed.into()
        }
        None => app.db.target(),
    };
    let store = backend::db::open(&crashed).await.unwrap();
    let loaded = backend::db::startup::load(&store).await.unwrap();
    let record = loaded.records.iter().find(|r| r.hostname.as_str() == "a").unwrap();
    assert_eq!(record.state.as_str(), "Soaking");
    assert_eq!(table_and_view_state(&store, "a").await, ("Soaking".into(), "Soaking".into()));
    store.close().await;

    // Once the interval passed, the next group writes every deferred record.
    app.advance(3);
    b.activate("stable@a1", "/nix/store/b-v1", app.clock.now()).await;
    assert_eq!(table_and_view_state(&app.state.store, "a").await, ("Soaking".into(), "Soaking".into()));
    assert_eq!(table_and_view_state(&app.state.store, "b").await.1, "Soaking");

    // A clean stop writes what is still deferred; after a restart memory has it too.
    a.converge("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    assert_eq!(table_and_view_state(&app.state.store, "a").await.1, "Converged");
    let stopped = app.stop().await;
    let db = backend::db::open(&stopped.db.target()).await.unwrap();
    assert_eq!(table_and_view_state(&db, "a").await, ("Converged".into(), "Converged".into()));
    db.close().await;
    let app = crate::common::spawn_with(crate::common::Options::default(), Some(stopped)).await;
    assert_eq!(app.host_state("stable@a1", "a").await, "Converged");
}

/// The leader checkpoints on its own once one is due (here: a second after anything new),
/// at the log's end.
#[tokio::test]
async fn the_leader_checkpoints_when_one_is_due() {
    let app =
        crate::common::spawn_with(crate::common::Options { checkpoint_every_secs: 1, ..Default::default() }, None)
            .await;
    let f = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .waves("stable", &[&["a"]]);
    app.upload(&f, "a1").await;
    app.tick().await;
    app.agent("a").activate("stable@a1", "/nix/store/a-v1", app.clock.now()).await;
    let last = backend::db::store::last_seq(&app.state.store).await.unwrap();
    // Polled: the checkpointer looks once a second, on its own clock.
    let mut taken = None;
    for _ in 0..100 {
        taken = backend::db::checkpoint::newest(&app.state.store).await.unwrap().filter(|c| c.seq >= last);
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let taken = taken.expect("a checkpoint within 10 s");
    let log = backend::db::store::log_after(&app.state.store, 0, i64::MAX).await.unwrap();
    let upto: Vec<_> = log.into_iter().filter(|e| e.seq <= taken.seq).collect();
    let mut then = backend::db::replay::replay(&upto).unwrap();
    then.prune();
    assert_eq!(taken.state, then);
}
