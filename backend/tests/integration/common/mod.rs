//! `spawn_app()`: the real control plane on a free port with a database of its own (SQLite,
//! or PostgreSQL when `FLEETWAVE_TEST_DB=postgres`: the test command runs this suite once
//! for each), a trust file for the testkit's CI key, an operator and a viewer, and signed
//! agents.

use std::path::PathBuf;

use backend::db::testing::TestDb;

use backend::clock::Clock;
use backend::config::ServeConfig;
use backend::db::auth::Role;
use backend::db::auth::{new_token, token_hash};
use backend::reducer::ReducerInput;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use engine::testkit::{FleetBuilder, ci_key, host_key, trust_config};
use serde_json::{Value, json};
use shared::manifest::SignedArtifact;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub operator_token: String,
    pub viewer_token: String,
    pub clock: Clock,
    pub state: backend::http::AppState,
    /// The trust file and whatever else a test keeps beside the server.
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Options {
    pub plan_tick_ms: u64,
    pub manifests_dir: Option<PathBuf>,
    pub trust: bool,
    pub feed_capacity: usize,
    pub db_busy_timeout_ms: u64,
    pub metrics_access: backend::config::MetricsAccess,
    pub min_free_disk_mb: u64,
    /// SQLite whatever `FLEETWAVE_TEST_DB` says (a test of what only a file does).
    pub sqlite: bool,
    /// `--webhooks FILE`.
    pub webhooks: Option<PathBuf>,
    /// `--checkpoint-every-secs` (default: far away, like the plan tick).
    pub checkpoint_every_secs: u64,
    /// `--seal-every-secs` (default: far away) and `--log-retention-days`. The archive is
    /// `{dir}/log-archive`.
    pub seal_every_secs: u64,
    pub log_retention_days: u64,
}

impl Default for Options {
    fn default() -> Self {
        // Plan ticks are driven by the tests (`tick()`); the periodic one is far away.
        Options {
            plan_tick_ms: 3_600_000,
            manifests_dir: None,
            trust: true,
            feed_capacity: backend::feed::FEED_CAPACITY,
            db_busy_timeout_ms: 5_000,
            metrics_access: backend::config::MetricsAccess::Public,
            min_free_disk_mb: 64,
            sqlite: false,
            webhooks: None,
            checkpoint_every_secs: 3_600_000,
            seal_every_secs: 3_600_000,
            log_retention_days: 365,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default(), None).await
}

/// What a stopped server leaves: its directory and its database, to start another on.
pub struct Stopped {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
}

/// Starts a server; `reuse` keeps the directory and database of a previous one.
pub async fn spawn_with(options: Options, reuse: Option<Stopped>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    }
    let (dir, db) = match reuse {
        Some(Stopped { dir, db }) => (dir, db),
        None if options.sqlite => (tempfile::tempdir().unwrap(), TestDb::sqlite()),
        None => (tempfile::tempdir().unwrap(), TestDb::from_env().await),
    };
    let trust_path = dir.path().join("trust.json");
    std::fs::write(&trust_path, serde_json::to_vec(&trust_config(&ci_key())).unwrap()).unwrap();
    let config = ServeConfig {
        trust: options.trust.then_some(trust_path),
        manifests_dir: options.manifests_dir,
        manifests_poll_ms: 50,
        plan_tick_ms: options.plan_tick_ms,
        feed_capacity: options.feed_capacity,
        db_busy_timeout_ms: options.db_busy_timeout_ms,
        metrics_access: options.metrics_access,
        min_free_disk_mb: options.min_free_disk_mb,
        webhooks: options.webhooks,
        checkpoint_every_secs: options.checkpoint_every_secs,
        seal_every_secs: options.seal_every_secs,
        log_retention_days: options.log_retention_days,
        log_archive_dir: Some(dir.path().join("log-archive")),
        ..ServeConfig::local(db.target(), dir.path().join("no-dist"))
    };
    let shutdown = CancellationToken::new();
    let clock = Clock::default();
    let app = backend::server::App::build_with_clock(&config, shutdown.clone(), clock.clone()).await.unwrap();
    let addr = app.local_addr();
    let state = app.state().clone();
    // On PostgreSQL the replica leads after its first election round.
    let mut roles = state.cluster.roles();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        roles.wait_for(|r| *r == shared::api::ReplicaRole::Leader),
    )
    .await
    .expect("the server leads within 10 s")
    .unwrap();
    let store = state.store.clone();
    let mut tokens = Vec::new();
    for (name, role) in [("olive", Role::Operator), ("vera", Role::Viewer)] {
        let token = new_token();
        // A reused database already has them; create fresh ones under new names.
        let unique = format!("{name}-{}", &token[3..9]);
        backend::db::auth::add_operator(&store, &unique, role, &token_hash(&token), chrono::Utc::now()).await.unwrap();
        tokens.push(token);
    }
    let task = tokio::spawn(app.run());
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        operator_token: tokens[0].clone(),
        viewer_token: tokens[1].clone(),
        clock,
        state,
        dir,
        db,
        shutdown,
        task: Some(task),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Stops the server cleanly and hands back its directory and database (to restart on).
    pub async fn stop(mut self) -> Stopped {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let db = std::mem::replace(&mut self.db, TestDb::sqlite());
        Stopped { dir, db }
    }

    /// Runs one statement on the app's database.
    pub async fn execute(&self, sql: &str) {
        backend::on_pool!(&self.state.store, pool => sqlx::query(sql).execute(pool).await.map(|_| ()).unwrap_or_else(|e| panic!("{sql}: {e}")));
    }

    /// The first column of every row `sql` returns, as text.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        backend::on_pool!(&self.state.store, pool => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}")))
    }

    /// The one number `sql` returns.
    pub async fn number(&self, sql: &str) -> i64 {
        backend::on_pool!(&self.state.store, pool => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}")))
    }

    /// The database as `--db` names it, for the CLI.
    pub fn db_arg(&self) -> String {
        db_arg(&self.db)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// One plan pass, answered after it committed.
    pub async fn tick(&self) {
        self.state.reducer.ask(|reply| ReducerInput::PlanTick { reply: Some(reply) }).await.unwrap();
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(&self.operator_token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(&self.operator_token.clone(), path, body).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Signs the builder's fleet and release `commit` and uploads them.
    pub async fn upload(&self, fleet: &FleetBuilder, commit: &str) -> (u16, Value) {
        let body = upload_body(fleet, commit, chrono::Utc::now());
        self.post("/api/v1/manifests", body).await
    }

    pub fn agent(&self, host: &str) -> Agent {
        Agent {
            host: host.to_owned(),
            key: host_key(host),
            base: self.base.clone(),
            http: self.http.clone(),
            seq: Default::default(),
        }
    }

    /// Every committed log entry, oldest first, with its typed entry.
    pub async fn log(&self) -> Vec<Logged> {
        let events = backend::db::store::log_after(&self.state.store, 0, 100_000).await.unwrap();
        events.into_iter().map(Logged::new).collect()
    }

    pub async fn rollout(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/rollouts/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The dashboard cell of `host` in rollout `id`.
    pub async fn cell(&self, id: &str, host: &str) -> Value {
        let detail = self.rollout(id).await;
        for wave in detail["waves"].as_array().unwrap() {
            for cell in wave["hosts"].as_array().unwrap() {
                if cell["hostname"] == host {
                    return cell.clone();
                }
            }
        }
        panic!("{host} not in {id}")
    }

    /// State of `host` in rollout `id`, from the API.
    pub async fn host_state(&self, id: &str, host: &str) -> String {
        let detail = self.rollout(id).await;
        for wave in detail["waves"].as_array().unwrap() {
            for cell in wave["hosts"].as_array().unwrap() {
                if cell["hostname"] == host {
                    return cell["state"].as_str().unwrap().to_owned();
                }
            }
        }
        panic!("{host} not in {id}")
    }
}

/// A database as `--db` (or `FLEETWAVE_DB`) names it.
pub fn db_arg(db: &TestDb) -> String {
    db.target().as_arg()
}

/// Channel `stable`: host `a` in wave 0, `b` in wave 1 (which needs approval), no soak.
pub fn two_waves() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(0, false), (0, true)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &["web"])
        .host("b", "stable", &["web"])
        .waves("stable", &[&["a"], &["b"]])
}

/// `{fleet, rollouts}` for a release of `fleet` at `commit`, signed now.
pub fn upload_body(fleet: &FleetBuilder, commit: &str, signed_at: chrono::DateTime<chrono::Utc>) -> Value {
    let mut doc = fleet.document();
    doc["meta"]["signedAt"] = json!(signed_at.to_rfc3339());
    doc["meta"]["ciCommit"] = json!(commit);
    let out = engine::release::sign_release(&ci_key(), &doc).unwrap();
    let rollouts: Vec<SignedArtifact> = out.manifests.iter().map(|(_, s)| s.artifact()).collect();
    json!({ "fleet": out.fleet.artifact(), "rollouts": rollouts })
}

/// The signed document an upload body's artifact (`{"artifact": <base64>, "signature": …}`)
/// carries, as its bytes.
pub fn artifact_bytes(signed: &Value) -> Vec<u8> {
    B64.decode(signed["artifact"].as_str().unwrap()).unwrap()
}

/// Writes a release of `fleet` at `commit`, signed as of `signed_at`, as a manifests
/// directory (`fleet.json(.sig)`, `rollouts/*.json(.sig)`), replacing what `dir` held.
/// `corrupt` flips one byte of the fleet so that its signature no longer verifies.
pub fn write_release_dir(
    dir: &std::path::Path,
    fleet: &FleetBuilder,
    commit: &str,
    signed_at: chrono::DateTime<chrono::Utc>,
    corrupt: bool,
) {
    let body = upload_body(fleet, commit, signed_at);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("rollouts")).unwrap();
    let mut fleet_bytes = artifact_bytes(&body["fleet"]);
    if corrupt {
        fleet_bytes[10] ^= 1;
    }
    std::fs::write(dir.join("fleet.json"), fleet_bytes).unwrap();
    std::fs::write(dir.join("fleet.json.sig"), body["fleet"]["signature"].as_str().unwrap()).unwrap();
    for r in body["rollouts"].as_array().unwrap() {
        let doc: Value = serde_json::from_slice(&artifact_bytes(r)).unwrap();
        let name = format!("{}@{}.json", doc["channel"].as_str().unwrap(), doc["channelRef"].as_str().unwrap());
        std::fs::write(dir.join("rollouts").join(&name), artifact_bytes(r)).unwrap();
        std::fs::write(dir.join("rollouts").join(format!("{name}.sig")), r["signature"].as_str().unwrap()).unwrap();
    }
}

/// Waits (bounded) until the API lists at least `n` rollouts: the manifests poller runs every
/// 50 ms in tests.
pub async fn wait_for_rollouts(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (_, rollouts) = app.get("/api/v1/rollouts").await;
        if rollouts.as_array().is_some_and(|r| r.len() >= n) {
            return rollouts.as_array().unwrap().clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the manifests dir was not picked up");
}

/// A simulated agent: signs requests with its host key and numbers its events.
pub struct Agent {
    pub host: String,
    pub key: SigningKey,
    base: String,
    http: reqwest::Client,
    seq: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

pub fn sign_request(
    key: &SigningKey,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
    ts: i64,
) -> Vec<(&'static str, String)> {
    let digest = engine::crypto::sha256_hex(body);
    let message = shared::agent::signing_string(method, path, ts, &digest);
    vec![
        ("x-fleetwave-host", host.to_owned()),
        ("x-fleetwave-timestamp", ts.to_string()),
        ("x-fleetwave-signature", B64.encode(key.sign(message.as_bytes()).to_bytes())),
    ]
}

impl Agent {
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{}", self.base, path)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn signed(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        self.signed_at(method, path, body, chrono::Utc::now().timestamp()).await
    }

    /// Signs with an explicit timestamp (a resend of identical bytes within the same second
    /// would be a replay).
    pub async fn signed_at(&self, method: &str, path: &str, body: &Value, ts: i64) -> (u16, Value) {
        let bytes = if method == "GET" { Vec::new() } else { serde_json::to_vec(body).unwrap() };
        let headers = sign_request(&self.key, &self.host, method, path, &bytes, ts);
        self.raw(method, path, bytes, headers).await
    }

    pub async fn heartbeat(&self, closure: Option<&str>, rollout: Option<&str>) -> Value {
        let mut body = json!({ "hostname": self.host, "at": chrono::Utc::now() });
        if let Some(c) = closure {
            body["currentClosure"] = json!(c);
        }
        if let Some(r) = rollout {
            body["rolloutId"] = json!(r);
        }
        let (status, answer) = self.signed("POST", shared::agent::HEARTBEAT_PATH, &body).await;
        assert_eq!(status, 200, "heartbeat of {}: {answer}", self.host);
        answer
    }

    /// Sends the next event (seq numbered per rollout) and returns (status, answer).
    pub async fn event(&self, rollout: &str, kind: &str, mut fields: Value) -> (u16, Value) {
        let seq = {
            let mut seqs = self.seq.lock().unwrap();
            let s = seqs.entry(rollout.to_owned()).or_insert(0);
            *s += 1;
            *s
        };
        fields["kind"] = json!(kind);
        fields["seq"] = json!(seq);
        self.event_raw(rollout, fields).await
    }

    pub async fn event_raw(&self, rollout: &str, event: Value) -> (u16, Value) {
        let body = json!({ "hostname": self.host, "rolloutId": rollout, "event": event });
        self.signed("POST", shared::agent::EVENTS_PATH, &body).await
    }

    /// Acknowledges the dispatch and activates to `closure` (→ Soaking).
    pub async fn activate(&self, rollout: &str, closure: &str, at: chrono::DateTime<chrono::Utc>) {
        let (s, a) =
            self.event(rollout, "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": at})).await;
        assert_eq!((s, a["outcome"].as_str()), (200, Some("applied")), "{}: {a}", self.host);
        let (s, a) = self
            .event(
                rollout,
                "ActivationCompleted",
                json!({"observedClosure": closure, "exitCode": 0, "completedAt": at}),
            )
            .await;
        assert_eq!((s, a["state"].as_str()), (200, Some("Soaking")), "{}: {a}", self.host);
    }

    pub async fn converge(&self, rollout: &str, closure: &str, at: chrono::DateTime<chrono::Utc>) -> (u16, Value) {
        self.event(rollout, "Converged", json!({"convergedAt": at, "currentClosure": closure})).await
    }
}

/// A committed log entry and its typed entry, as tests read the log.
pub struct Logged {
    pub event: shared::api::LogEvent,
    pub entry: shared::log::LogEntry,
}

impl Logged {
    pub fn new(event: shared::api::LogEvent) -> Logged {
        let entry = event.entry().unwrap_or_else(|e| panic!("log entry {}: {e}", event.seq));
        Logged { event, entry }
    }

    pub fn seq(&self) -> i64 {
        self.event.seq
    }

    pub fn host_is(&self, host: &str) -> bool {
        self.event.host.as_ref().is_some_and(|h| h.as_str() == host)
    }

    pub fn rollout_is(&self, rollout: &str) -> bool {
        self.event.rollout_id.as_ref().is_some_and(|r| r.as_str() == rollout)
    }

    /// The agent event of a `HostEvent` entry.
    pub fn host_event(&self) -> Option<&shared::log::HostEventApplied> {
        match &self.entry {
            shared::log::LogEntry::HostEvent(applied) => Some(applied),
            _ => None,
        }
    }
}
