//! Several control-plane replicas on one PostgreSQL (SPEC §15), as separate processes of the
//! real binary: a rollout driven by the simulator through random replicas survives its leader
//! being SIGKILLed three times (nothing answered `applied` is lost, a new leader takes over
//! within 10 s each time, a feed client sees every seq once), and a leader paused with
//! SIGSTOP and woken after another took over commits nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend::db::testing::TestDb;
use backend::sim::{self, Behaviour, SimHost};
use engine::testkit::{FleetBuilder, ci_key, host_key, trust_config};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use shared::api::{ClusterView, ReplicaRole};
use tokio_util::sync::CancellationToken;

use crate::common::{Logged, db_arg, upload_body};

const ROLLOUT: &str = "stable@a1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `hosts` hosts on one channel in four waves, at most 20 activating at a time.
fn fleet(hosts: usize) -> FleetBuilder {
    let mut b = FleetBuilder::new().policy("p", &[(0, false); 4], "halt", 30).channel("stable", "p");
    let names: Vec<String> = (0..hosts).map(|i| format!("h{i:03}")).collect();
    for n in &names {
        b = b.host(n, "stable", &["web"]);
    }
    let quarter = hosts / 4;
    let waves: Vec<Vec<&str>> = names.chunks(quarter.max(1)).map(|c| c.iter().map(String::as_str).collect()).collect();
    let waves: Vec<&[&str]> = waves.iter().map(Vec::as_slice).collect();
    b.waves("stable", &waves).budget("web", serde_json::json!({"tags": ["web"]}), 20)
}

fn sim_hosts(hosts: usize) -> Vec<SimHost> {
    (0..hosts)
        .map(|i| format!("h{i:03}"))
        .map(|h| SimHost { key: host_key(&h), hostname: h, initial_closure: "/nix/store/old".into() })
        .collect()
}

struct Replica {
    url: String,
    port: u16,
    child: Option<Child>,
}

/// Replicas of one database, each `fleetwave serve` on a port of its own; their stderr goes
/// to `replica-{i}.log` in the directory (printed when a test fails).
struct Replicas {
    db: TestDb,
    dir: tempfile::TempDir,
    list: Vec<Replica>,
    token: String,
    http: reqwest::Client,
}

impl Replicas {
    async fn start(n: usize) -> Replicas {
        Self::start_on(TestDb::postgres().await, n).await
    }

    async fn start_on(db: TestDb, n: usize) -> Replicas {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trust.json"), serde_json::to_vec(&trust_config(&ci_key())).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
            .args(["operator", "add", "--name", "ci", "--role", "operator", "--db", &db_arg(&db)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_owned();
        let list = (0..n)
            .map(|_| {
                let port = free_port();
                Replica { url: format!("http://127.0.0.1:{port}"), port, child: None }
            })
            .collect();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let mut replicas = Replicas { db, dir, list, token, http };
        for i in 0..n {
            replicas.spawn(i);
        }
        replicas
    }

    fn urls(&self) -> Vec<String> {
        self.list.iter().map(|r| r.url.clone()).collect()
    }

    /// (Re)starts replica `i` on its port.
    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("replica-{i}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
            .args(["--log-format", "json", "serve"])
            .env("FLEETWAVE_LISTEN", format!("127.0.0.1:{}", self.list[i].port))
            .env("FLEETWAVE_DB", db_arg(&self.db))
            .env("FLEETWAVE_TRUST", self.dir.path().join("trust.json"))
            .env("FLEETWAVE_DIST", self.dir.path().join("no-dist"))
            .env("FLEETWAVE_PLAN_TICK_MS", "200")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.list[i].child = Some(child);
    }

    /// SIGKILL: no shutdown path runs.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.list[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.list[i].child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success(), "kill {signal} {pid}");
    }

    async fn view(&self, i: usize) -> Option<ClusterView> {
        self.list[i].child.as_ref()?;
        let r = self.http.get(format!("{}/api/v1/cluster", self.list[i].url)).bearer_auth(&self.token).send().await;
        r.ok()?.json().await.ok()
    }

    /// The replica that says it leads, with its epoch (asking each live replica itself).
    async fn leader(&self) -> Option<(usize, i64)> {
        for i in 0..self.list.len() {
            if let Some(view) = self.view(i).await
                && view.this.role == ReplicaRole::Leader
            {
                return Some((i, view.this.epoch));
            }
        }
        None
    }

    /// Waits until a replica leads at an epoch past `past`: which, at what epoch, how long.
    async fn new_leader(&self, past: i64, limit: Duration) -> (usize, i64, Duration) {
        self.leader_from(past + 1, limit).await
    }

    /// Waits until a replica leads at epoch `from` or later: which, at what epoch, how long.
    async fn leader_from(&self, from: i64, limit: Duration) -> (usize, i64, Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some((i, epoch)) = self.leader().await
                && epoch >= from
            {
                return (i, epoch, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no replica led at epoch {from} or later within {limit:?}\n{}", self.logs());
    }

    /// Waits until replica `i` knows a leader at epoch `epoch` or later: a follower that has
    /// not seen the leader's lock yet answers writes `503 no-leader` (SPEC §15).
    async fn knows_leader(&self, i: usize, epoch: i64, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(view) = self.view(i).await
                && view.leader.is_some_and(|l| l.epoch >= epoch)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("replica {i} knew no leader at epoch {epoch} or later within {limit:?}\n{}", self.logs());
    }

    async fn rollout_state(&self) -> Option<String> {
        for r in &self.list {
            if r.child.is_none() {
                continue;
            }
            let answer =
                self.http.get(format!("{}/api/v1/rollouts/{ROLLOUT}", r.url)).bearer_auth(&self.token).send().await;
            if let Ok(answer) = answer
                && let Ok(body) = answer.json::<Value>().await
                && let Some(state) = body["state"].as_str()
            {
                return Some(state.to_owned());
            }
        }
        None
    }

    async fn wait_completed(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.rollout_state().await.as_deref() == Some("Completed") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the rollout did not complete within {limit:?}: {:?}\n{}", self.rollout_state().await, self.logs());
    }

    /// The tail of every replica's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.list.len() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("replica-{i}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- replica {i} ({}), last lines:\n", self.list[i].url));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    async fn log(&self) -> Vec<Logged> {
        let store = backend::db::open(&self.db.target()).await.unwrap();
        let log = backend::db::store::log_after(&store, 0, i64::MAX).await.unwrap();
        store.close().await;
        log.into_iter().map(Logged::new).collect()
    }

    async fn number(&self, sql: &str) -> i64 {
        let store = backend::db::open(&self.db.target()).await.unwrap();
        let n = backend::on_pool!(&store, pool => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap());
        store.close().await;
        n
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.list.len() {
            if let Some(child) = &self.list[i].child {
                let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            }
            self.kill(i);
        }
    }
}

/// Uploads the release through replica `via` (a follower passes it to the leader).
async fn upload(replicas: &Replicas, via: usize, hosts: usize) {
    let body = upload_body(&fleet(hosts), "a1", chrono::Utc::now());
    let r = replicas
        .http
        .post(format!("{}/api/v1/manifests", replicas.list[via].url))
        .bearer_auth(&replicas.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// A feed client: follows `/api/v1/feed` on replica `first`, and whenever its replica goes
/// away resumes on the next live one with `Last-Event-ID`. Returns every seq it received.
fn follow_feed(
    urls: Vec<String>,
    token: String,
    first: usize,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut seen: Vec<i64> = Vec::new();
        let mut at = first;
        while !stop.is_cancelled() {
            let mut request = http.get(format!("{}/api/v1/feed", urls[at])).bearer_auth(&token);
            if let Some(last) = seen.last() {
                request = request.header("last-event-id", last.to_string());
            }
            if let Ok(response) = request.send().await
                && response.status() == 200
            {
                let mut events = response.bytes_stream().eventsource();
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return seen,
                        next = events.next() => next,
                    };
                    match next {
                        Some(Ok(event)) => seen.push(event.id.parse().unwrap()),
                        // The replica went away: resume elsewhere.
                        Some(Err(_)) | None => break,
                    }
                }
            }
            at = (at + 1) % urls.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

/// Every event the simulator was answered `applied` for is in the log.
fn assert_applied_are_logged(applied: &[(String, String, u64)], log: &[Logged]) {
    let logged: std::collections::HashSet<(String, String, u64)> = log
        .iter()
        .filter_map(|e| {
            let event = e.host_event()?;
            Some((e.event.host.as_ref()?.to_string(), e.event.rollout_id.as_ref()?.to_string(), event.event.seq()))
        })
        .collect();
    let missing: Vec<_> = applied.iter().filter(|a| !logged.contains(*a)).collect();
    assert!(missing.is_empty(), "answered applied but not in the log: {missing:?}");
}

fn seed() -> u64 {
    std::env::var("FLEETWAVE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

#[tokio::test]
async fn a_rollout_through_random_replicas_survives_three_leader_kills_and_loses_nothing_applied() {
    const HOSTS: usize = 200;
    let seed = seed();
    println!("seed {seed} (FLEETWAVE_TEST_SEED={seed} repeats the kill moments)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut replicas = Replicas::start(3).await;
    let (leader, first_epoch, took) = replicas.new_leader(0, Duration::from_secs(20)).await;
    println!("replica {leader} leads after {took:?}");
    replicas.knows_leader((leader + 1) % 3, first_epoch, Duration::from_secs(20)).await;
    upload(&replicas, (leader + 1) % 3, HOSTS).await;

    let stop = CancellationToken::new();
    let feed = follow_feed(replicas.urls(), replicas.token.clone(), (leader + 2) % 3, stop.clone());
    let behaviour = Behaviour { time_scale: 0.25, record_applied: true, ..Behaviour::default() };
    let (stats, agents) = sim::spawn(&replicas.urls(), sim_hosts(HOSTS), seed, behaviour, stop.clone());

    let mut takeovers = Vec::new();
    let mut last_epoch = first_epoch;
    for kill in 1..=3 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1_000..4_000))).await;
        // On two loaded cores a leader may miss a lock check (or its `/cluster` answer the
        // client's timeout) and step down on its own; the kill then lands on whoever leads.
        let (leader, epoch, waited) = replicas.leader_from(last_epoch, Duration::from_secs(30)).await;
        if epoch != last_epoch {
            println!(
                "kill {kill}: leadership moved on its own (epoch {last_epoch} → {epoch}, {} ms)",
                waited.as_millis()
            );
        }
        let state = replicas.rollout_state().await;
        assert_eq!(state.as_deref(), Some("Active"), "kill {kill} would not land during the rollout");
        replicas.kill(leader);
        let (next, next_epoch, took) = replicas.new_leader(epoch, Duration::from_secs(30)).await;
        println!(
            "kill {kill}: replica {leader} (leader at epoch {epoch}) SIGKILLed; replica {next} leads at epoch {next_epoch} after {} ms",
            took.as_millis()
        );
        takeovers.push(took);
        last_epoch = next_epoch;
        // Back as a follower, so three replicas stay up.
        replicas.spawn(leader);
    }
    replicas.wait_completed(Duration::from_secs(180)).await;
    let log = replicas.log().await;
    let last = log.last().unwrap().seq();
    // The feed client catches up to the end of the log, then stops.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && replicas.number("SELECT COALESCE(MAX(seq), 0) FROM event_log").await > last {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for agent in agents {
        agent.await.unwrap();
    }
    let feed = feed.await.unwrap();
    let log = replicas.log().await;
    let applied = stats.applied.lock().unwrap().clone();
    println!(
        "{} events answered applied, {} log rows, the feed client saw seqs {}..={} ({} entries), takeovers {:?}",
        applied.len(),
        log.len(),
        feed.first().unwrap_or(&0),
        feed.last().unwrap_or(&0),
        feed.len(),
        takeovers.iter().map(|t| format!("{} ms", t.as_millis())).collect::<Vec<_>>()
    );
    assert!(applied.len() >= HOSTS * 4, "every host went through its events: {}", applied.len());
    assert_applied_are_logged(&applied, &log);
    for (i, took) in takeovers.iter().enumerate() {
        assert!(*took < Duration::from_secs(10), "takeover {} took {took:?}", i + 1);
    }
    assert!(!feed.is_empty(), "the feed client received entries");
    for pair in feed.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "the feed skipped or repeated after seq {}: {:?}", pair[0], pair);
    }
    let feed_end = replicas.number("SELECT COALESCE(MAX(seq), 0) FROM event_log").await;
    assert_eq!(*feed.last().unwrap(), feed_end, "the feed reached the end of the log");
    // Every host converged (as the server has it: a Converged whose answer was lost with a
    // killed leader is answered `duplicate` when the agent sends it again).
    let converged = replicas.number("SELECT count(*) FROM current_host_records WHERE state = 'Converged'").await;
    assert_eq!(converged, HOSTS as i64);
}

#[tokio::test]
async fn a_paused_leader_woken_after_another_took_over_commits_nothing() {
    const HOSTS: usize = 40;
    let mut replicas = Replicas::start(1).await;
    let (old, old_epoch, _) = replicas.new_leader(0, Duration::from_secs(20)).await;
    // The second replica follows: the first leads for sure.
    replicas.list.push(Replica { url: String::new(), port: free_port(), child: None });
    replicas.list[1].url = format!("http://127.0.0.1:{}", replicas.list[1].port);
    replicas.spawn(1);
    upload(&replicas, old, HOSTS).await;

    let stop = CancellationToken::new();
    let behaviour = Behaviour { time_scale: 0.25, record_applied: true, ..Behaviour::default() };
    let (stats, agents) = sim::spawn(&replicas.urls(), sim_hosts(HOSTS), 7, behaviour, stop.clone());
    // Agents are busy on both replicas when the leader freezes.
    while stats.events_applied.load(std::sync::atomic::Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicas.signal(old, "-STOP");
    let paused = Instant::now();
    let (new, new_epoch, took) = replicas.new_leader(old_epoch, Duration::from_secs(30)).await;
    assert_eq!(new, 1 - old);
    println!(
        "replica {old} paused at epoch {old_epoch}; replica {new} leads at epoch {new_epoch} after {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(10), "takeover after a freeze took {took:?}");
    let by_old = format!("SELECT count(*) FROM event_log WHERE epoch = {old_epoch}");
    let committed_by_old = replicas.number(&by_old).await;
    // Woken up with requests and commits of its own in flight: none of them may land.
    replicas.signal(old, "-CONT");
    let woke = Instant::now();
    loop {
        if let Some(view) = replicas.view(old).await
            && view.this.role == ReplicaRole::Follower
        {
            break;
        }
        assert!(woke.elapsed() < Duration::from_secs(10), "the woken replica did not step down\n{}", replicas.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "replica {old} woke {} ms after the pause and stepped down {} ms later",
        (woke - paused).as_millis(),
        woke.elapsed().as_millis()
    );
    replicas.wait_completed(Duration::from_secs(120)).await;
    stop.cancel();
    for agent in agents {
        agent.await.unwrap();
    }
    assert_eq!(replicas.number(&by_old).await, committed_by_old, "the deposed leader committed after the takeover");
    let last_old =
        replicas.number(&format!("SELECT COALESCE(MAX(seq), 0) FROM event_log WHERE epoch = {old_epoch}")).await;
    let first_new = replicas.number(&format!("SELECT MIN(seq) FROM event_log WHERE epoch = {new_epoch}")).await;
    assert!(last_old < first_new, "rows of the two epochs interleave: {last_old} vs {first_new}");
    let later = replicas
        .number(&format!("SELECT count(*) FROM event_log WHERE seq > {last_old} AND epoch <> {new_epoch}"))
        .await;
    assert_eq!(later, 0, "every row after the takeover is the new leader's");
    let applied = stats.applied.lock().unwrap().clone();
    assert_applied_are_logged(&applied, &replicas.log().await);
    let old_log = std::fs::read_to_string(replicas.dir.path().join(format!("replica-{old}.log"))).unwrap();
    let how: Vec<&str> = old_log.lines().filter(|l| l.contains("fenced") || l.contains("stepping down")).collect();
    println!("the woken replica's own account:\n  {}", how.join("\n  "));
    assert!(!how.is_empty(), "the woken replica logged why it stopped leading");
}

#[tokio::test]
async fn writes_wait_for_a_leader_then_go_through_any_replica_and_a_signature_is_used_once_across_leaders() {
    use sqlx::Connection as _;
    // Someone else holds the leader lock: no replica can lead yet.
    let db = TestDb::postgres().await;
    backend::db::open(&db.target()).await.unwrap().close().await;
    let mut holder = sqlx::PgConnection::connect(&db_arg(&db)).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(backend::cluster::election::LEADER_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut replicas = Replicas::start_on(db, 2).await;
    let http = replicas.http.clone();
    let ready = |i: usize| http.get(format!("{}/readyz", replicas.list[i].url)).send();
    // Up, but nobody leads: not ready, and a write is refused with a hint to retry.
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = ready(0).await {
            up = true;
            assert_eq!(r.status(), 503);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "replica 0 did not come up\n{}", replicas.logs());
    let body = upload_body(&fleet(8), "a1", chrono::Utc::now());
    let post = |i: usize| {
        http.post(format!("{}/api/v1/manifests", replicas.list[i].url)).bearer_auth(&replicas.token).json(&body).send()
    };
    let refused = post(0).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "no-leader");

    // The lock is free: one replica leads, the other passes writes to it.
    holder.close().await.unwrap();
    let (leader, epoch, _) = replicas.new_leader(0, Duration::from_secs(20)).await;
    let follower = 1 - leader;
    let mut known = false;
    for _ in 0..200 {
        let view = replicas.view(follower).await.unwrap();
        if view.leader.as_ref().is_some_and(|l| l.url == replicas.list[leader].url) {
            assert_eq!(view.this.role, ReplicaRole::Follower);
            assert_eq!(view.replicas.len(), 2, "{view:?}");
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(known, "the follower learns who leads");
    assert_eq!(ready(follower).await.unwrap().status(), 200, "a follower that knows the leader is ready");
    // Its metrics name its role, the epoch, and every replica's last report (as of the last
    // round: a replica reports itself every second).
    let expected = [
        "fleetwave_cluster_role{role=\"follower\"} 1".to_owned(),
        format!("fleetwave_cluster_epoch {epoch}"),
        format!("fleetwave_cluster_replica_epoch{{replica=\"{}\"}} {epoch}", replicas.list[leader].url),
        format!(
            "fleetwave_cluster_replica_last_seen_seconds{{replica=\"{}\",role=\"leader\"}}",
            replicas.list[leader].url
        ),
        format!(
            "fleetwave_cluster_replica_last_seen_seconds{{replica=\"{}\",role=\"follower\"}}",
            replicas.list[follower].url
        ),
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics =
            http.get(format!("{}/metrics", replicas.list[follower].url)).send().await.unwrap().text().await.unwrap();
        if expected.iter().all(|line| metrics.lines().any(|l| l.starts_with(line.as_str()))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in &expected {
        assert!(
            metrics.lines().any(|l| l.starts_with(line.as_str())),
            "`{line}` not in the follower's metrics:\n{metrics}"
        );
    }
    assert_eq!(post(follower).await.unwrap().status(), 200, "an upload through the follower");

    // An agent write through the follower: the leader verifies the signature, once.
    let key = host_key("h000");
    let path = shared::agent::HEARTBEAT_PATH;
    let hb = serde_json::to_vec(&serde_json::json!({"hostname": "h000", "at": chrono::Utc::now()})).unwrap();
    let headers = crate::common::sign_request(&key, "h000", "POST", path, &hb, chrono::Utc::now().timestamp());
    let urls = replicas.urls();
    let send = |i: usize, headers: Vec<(&'static str, String)>| {
        let request =
            http.post(format!("{}{path}", urls[i])).header("content-type", "application/json").body(hb.clone());
        headers.into_iter().fold(request, |r, (k, v)| r.header(k, v)).send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null)["error"]["code"].as_str().map(str::to_owned))
    };
    assert_eq!(code(send(follower, headers.clone()).await.unwrap()).await, (200, None));
    for i in [leader, follower] {
        assert_eq!(
            code(send(i, headers.clone()).await.unwrap()).await,
            (401, Some("replayed-signature".into())),
            "replica {i}"
        );
    }
    let mut forged = headers.clone();
    forged[2].1 =
        crate::common::sign_request(&host_key("h001"), "h000", "POST", path, &hb, chrono::Utc::now().timestamp())[2]
            .1
            .clone();
    assert_eq!(code(send(follower, forged).await.unwrap()).await, (401, Some("bad-signature".into())));

    // The leader dies; the new one refuses the signature the old one accepted.
    replicas.kill(leader);
    let (next, _, _) = replicas.new_leader(epoch, Duration::from_secs(20)).await;
    assert_eq!(next, follower);
    assert_eq!(code(send(next, headers).await.unwrap()).await, (401, Some("replayed-signature".into())));
}
