//! Starts and stops the pieces of a browser test.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder};
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
/// How long chromedriver may take to accept its first session.
const DRIVER_START: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The dashboard build the tests serve; e2e builds nothing itself.
fn dist() -> anyhow::Result<PathBuf> {
    let dist = repo_root().join("dist");
    if !dist.join("index.html").is_file() {
        bail!(
            "{} has no index.html: build the dashboard first (`trunk build --release` at the repo root; ./scripts/test does it)",
            dist.display()
        );
    }
    Ok(dist)
}

/// Where failure screenshots go: `target/e2e-artifacts/<test>.png`.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("e2e-artifacts")
}

/// A browser pointed at a running control plane. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    pub base_url: String,
    /// The server's database, for setting up operators.
    pub store: backend::db::Store,
}

impl Session {
    /// Adds an operator (or viewer) to the server and returns its token.
    pub async fn add_operator(&self, name: &str, role: backend::db::auth::Role) -> anyhow::Result<String> {
        let token = backend::db::auth::new_token();
        let hash = backend::db::auth::token_hash(&token);
        backend::db::auth::add_operator(&self.store, name, role, &hash, chrono::Utc::now()).await?;
        Ok(token)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Makes the page's network a link of `mbit_per_s` each way with `latency_ms` added to each
    /// request (Chromium's emulation, as DevTools' throttling does); `None` lifts it.
    pub async fn emulate_network(&self, link: Option<(f64, u32)>) -> anyhow::Result<()> {
        let (throughput, latency) = match link {
            Some((mbit_per_s, latency_ms)) => (mbit_per_s * 1e6 / 8.0, latency_ms),
            None => (-1.0, 0),
        };
        let params = serde_json::json!({
            "offline": false, "latency": latency, "downloadThroughput": throughput, "uploadThroughput": throughput,
        });
        self.client.issue_cmd(Cdp { cmd: "Network.enable", params: serde_json::json!({}) }).await?;
        self.client.issue_cmd(Cdp { cmd: "Network.emulateNetworkConditions", params }).await?;
        Ok(())
    }

    /// Saves what the browser shows to `target/e2e-artifacts/<name>.png` (to look at).
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    /// Runs axe-core (tools/node_modules/axe-core, installed by scripts/setup) on the page as
    /// it is now and returns what it finds against WCAG 2.1 A and AA.
    pub async fn accessibility(&self) -> anyhow::Result<Vec<Violation>> {
        let axe = repo_root().join("tools/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&axe)
            .with_context(|| format!("reading {} (scripts/setup installs it)", axe.display()))?;
        self.client.execute(&source, vec![]).await.context("loading axe-core into the page")?;
        let run = "const done = arguments[arguments.length - 1];
            axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
              .then(r => done(JSON.stringify(r.violations.map(v => ({ id: v.id, impact: v.impact || '', help: v.help,
                  nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' — ' + (n.failureSummary || '')) })))))
              .catch(e => done('axe failed: ' + e));";
        let answer = self.client.execute_async(run, vec![]).await.context("running axe-core")?;
        let text = answer.as_str().unwrap_or_default();
        serde_json::from_str(text).with_context(|| format!("axe answered {text}"))
    }
}

/// What axe-core found wrong on a page.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Violation {
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    pub help: String,
    /// Up to five of the elements concerned, with what fails.
    pub nodes: Vec<String>,
}

impl Violation {
    pub fn serious(&self) -> bool {
        matches!(self.impact.as_str(), "serious" | "critical")
    }
}

/// The control plane running in this process on a free port with a temporary database.
struct TestServer {
    addr: SocketAddr,
    store: backend::db::Store,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> anyhow::Result<TestServer> {
        let dist = dist()?;
        let dir = tempfile::tempdir()?;
        let config = backend::config::ServeConfig::local(dir.path().join("fleetwave.db"), dist);
        let shutdown = CancellationToken::new();
        let app = backend::server::App::build(&config, shutdown.clone()).await?;
        let addr = app.local_addr();
        let store = app.state().store.clone();
        let task = tokio::spawn(async move {
            if let Err(err) = app.run().await {
                eprintln!("test server failed: {err:#}");
            }
        });
        Ok(TestServer { addr, store, shutdown, task, _dir: dir })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

/// chromedriver and every Chromium it starts, in a process group of their own so that one
/// signal ends them all, even when the test panicked halfway.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> anyhow::Result<Driver> {
        let port = free_port()?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(CHROMEDRIVER).arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1"),
            0,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("cannot start {CHROMEDRIVER}; install Debian's chromium-driver (./scripts/setup does)")
        })?;
        Ok(Driver { child, port, _profile: tempfile::tempdir()? })
    }

    fn capabilities(&self) -> serde_json::Map<String, serde_json::Value> {
        let profile = self._profile.path().display().to_string();
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,900",
                    format!("--user-data-dir={profile}"),
                ]
            }
        });
        match caps {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("capabilities are a JSON object literal"),
        }
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        let url = format!("http://127.0.0.1:{}", self.port);
        let started = Instant::now();
        loop {
            let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(self.capabilities())
                .connect(&url)
                .await;
            match attempt {
                Ok(client) => return Ok(client),
                Err(err) if started.elapsed() < DRIVER_START => {
                    // chromedriver has not opened its port yet; this is the one poll in the
                    // harness, because chromedriver offers no readiness signal.
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err).context("chromedriver did not accept a session"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The child is the leader of its own group: -pid addresses chromedriver and every
        // Chromium process under it.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid only sends a signal; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = serde_json::json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Runs one browser test: starts the server, chromedriver and Chromium, runs `test`, saves a
/// screenshot to `target/e2e-artifacts/<name>.png` if it failed, and tears everything down
/// whatever happened.
pub async fn browser_test<F, Fut>(name: &str, test: F) -> anyhow::Result<()>
where
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let server = TestServer::start().await?;
    let result = in_browser(name, format!("http://{}", server.addr), server.store.clone(), test).await;
    drop(server);
    result
}

/// Starts chromedriver and Chromium, runs `test` with a session on `base_url`, saves a
/// screenshot to `target/e2e-artifacts/<name>.png` if it failed, and closes the browser
/// whatever happened (the caller stops its servers afterwards).
async fn in_browser<F, Fut>(name: &str, base_url: String, store: backend::db::Store, test: F) -> anyhow::Result<()>
where
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let driver = Driver::start()?;
    let client = driver.connect().await?;
    let result = test(Session { client: client.clone(), base_url, store }).await;
    if result.is_err() {
        save_screenshot(&client, name).await;
    }
    let _ = client.close().await;
    drop(driver);
    result
}

async fn save_screenshot(client: &Client, name: &str) {
    let dir = artifacts_dir();
    let path = dir.join(format!("{name}.png"));
    match client.screenshot().await {
        Ok(png) => match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, png)) {
            Ok(()) => eprintln!("screenshot of the failure: {}", path.display()),
            Err(err) => eprintln!("cannot save the failure screenshot to {}: {err}", path.display()),
        },
        Err(err) => eprintln!("cannot take the failure screenshot: {err}"),
    }
}

/// Like [`browser_test`], against `fleetwave demo` running in-process (its simulated fleet
/// moving at test speed) instead of an empty server. `test` also gets the demo's operator
/// token.
pub async fn demo_browser_test<F, Fut>(name: &str, test: F) -> anyhow::Result<()>
where
    F: FnOnce(Session, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let dist = dist()?;
    let args = backend::demo::DemoArgs {
        listen: "127.0.0.1:0".parse()?,
        db: None,
        dist,
        soak_minutes: 0,
        time_scale: 0.05,
        seed: 7,
        plan_tick_ms: 200,
        webhooks: None,
    };
    let demo = backend::demo::Demo::start(&args).await?;
    let token = demo.operator_token.clone();
    let result = in_browser(name, format!("http://{}", demo.addr), demo.state.store.clone(), |s| test(s, token)).await;
    demo.stop().await?;
    result
}

/// The server of a [`fleet_browser_test`], which a test may take down and bring back on the
/// same address and database (a network drop, as the browser sees it).
pub struct ServerControl {
    config: backend::config::ServeConfig,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub state: backend::http::AppState,
    _dir: tempfile::TempDir,
}

impl ServerControl {
    async fn start(config: backend::config::ServeConfig, dir: tempfile::TempDir) -> anyhow::Result<ServerControl> {
        let shutdown = CancellationToken::new();
        let app = backend::server::App::build(&config, shutdown.clone()).await?;
        let mut config = config;
        config.listen = app.local_addr();
        let state = app.state().clone();
        let task = Some(tokio::spawn(app.run()));
        Ok(ServerControl { config, shutdown, task, state, _dir: dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// Stops the server: open connections (the live feed) are closed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// Starts it again on the same address and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(|_| async { Ok(()) }).await
    }

    /// Starts it again, running `meanwhile` once its reducer runs and before it answers a
    /// request (a browser that reconnects waits for its answer until then).
    pub async fn restart_after<F, Fut>(&mut self, meanwhile: F) -> anyhow::Result<()>
    where
        F: FnOnce(backend::http::AppState) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        self.shutdown = CancellationToken::new();
        let app = backend::server::App::build(&self.config, self.shutdown.clone()).await?;
        self.state = app.state().clone();
        meanwhile(self.state.clone()).await?;
        self.task = Some(tokio::spawn(app.run()));
        Ok(())
    }
}

impl Drop for ServerControl {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Like [`browser_test`], with a signed fleet already in force: `fleet` is a fleet document
/// (unsigned JSON) that is signed with a fresh CI key, verified and handed to the reducer,
/// however large (no upload size limit applies in-process). The test also gets the server's
/// [`ServerControl`].
pub async fn fleet_browser_test<F, Fut>(name: &str, fleet: serde_json::Value, test: F) -> anyhow::Result<()>
where
    F: FnOnce(Session, ServerControl) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let dist = dist()?;
    let dir = tempfile::tempdir()?;
    let trust = serde_json::json!({"schemaVersion": 1, "ciReleaseKey": {"current": engine::sign::public_key_b64(&fleet_ci_key())}, "freshnessWindowMinutes": 1440});
    std::fs::write(dir.path().join("trust.json"), serde_json::to_vec(&trust)?)?;
    let config = backend::config::ServeConfig {
        trust: Some(dir.path().join("trust.json")),
        plan_tick_ms: 3_600_000,
        ..backend::config::ServeConfig::local(dir.path().join("fleetwave.db"), dist)
    };
    let server = ServerControl::start(config, dir).await?;
    let state = server.state.clone();
    release(&state, &fleet).await?;
    in_browser(name, format!("http://{}", server.addr()), state.store.clone(), |s| test(s, server)).await
}

/// Signs `fleet` (a fleet document) as the CI key of [`fleet_browser_test`]'s trust file does
/// and hands it to the reducer: a release comes into force.
pub async fn release(state: &backend::http::AppState, fleet: &serde_json::Value) -> anyhow::Result<()> {
    let out = engine::release::sign_release(&fleet_ci_key(), fleet).map_err(anyhow::Error::msg)?;
    let rollouts = out.manifests.iter().map(|(_, s)| s.artifact()).collect();
    let update =
        backend::manifests::verify_upload(&state.trust_roots(), out.fleet.artifact(), rollouts, chrono::Utc::now())
            .map_err(|e| anyhow::anyhow!("the test fleet does not verify: {}", e.code()))?;
    state
        .reducer
        .ask(|reply| backend::reducer::ReducerInput::ManifestSetUpdated {
            update: Box::new(update),
            reply: Some(reply),
        })
        .await?;
    Ok(())
}

fn fleet_ci_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
}

/// Replicas of one control plane on a PostgreSQL database of the test's own (SPEC §15),
/// running in this process. The browser is pointed at the first one that does not lead.
pub struct Replicas {
    pub addrs: Vec<SocketAddr>,
    tokens: Vec<CancellationToken>,
    tasks: Vec<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    pub states: Vec<backend::http::AppState>,
    _db: backend::db::testing::TestDb,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// The replica that leads now, if one does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.states.len())
            .find(|&i| self.tasks[i].is_some() && self.states[i].cluster.role() == shared::api::ReplicaRole::Leader)
    }

    /// Stops replica `i` the way SIGTERM does: it steps down, and another takes over.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        self.tokens[i].cancel();
        if let Some(task) = self.tasks[i].take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for token in &self.tokens {
            token.cancel();
        }
    }
}

/// Like [`browser_test`], against `count` replicas on one PostgreSQL database (needs
/// `FLEETWAVE_TEST_PG`, which ./scripts/test sets). The session points at a follower.
pub async fn cluster_browser_test<F, Fut>(name: &str, count: usize, test: F) -> anyhow::Result<()>
where
    F: FnOnce(Session, Replicas) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let dist = dist()?;
    let dir = tempfile::tempdir()?;
    let db = backend::db::testing::TestDb::postgres().await;
    let mut replicas =
        Replicas { addrs: Vec::new(), tokens: Vec::new(), tasks: Vec::new(), states: Vec::new(), _db: db, _dir: dir };
    for _ in 0..count {
        let config = backend::config::ServeConfig::local(replicas._db.target(), dist.clone());
        let token = CancellationToken::new();
        let app = backend::server::App::build(&config, token.clone()).await?;
        replicas.addrs.push(app.local_addr());
        replicas.states.push(app.state().clone());
        replicas.tokens.push(token);
        replicas.tasks.push(Some(tokio::spawn(app.run())));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while replicas.leader().is_none() {
        ensure_before(deadline, "no replica leads")?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let follower = (0..count).find(|&i| Some(i) != replicas.leader()).context("one replica at least follows")?;
    let (base_url, store) = (format!("http://{}", replicas.addrs[follower]), replicas.states[follower].store.clone());
    in_browser(name, base_url, store, |s| test(s, replicas)).await
}

fn ensure_before(deadline: Instant, what: &str) -> anyhow::Result<()> {
    if Instant::now() >= deadline {
        bail!("{what} within the time allowed");
    }
    Ok(())
}
