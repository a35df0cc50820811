//! `fleetwave demo`: the whole system on embedded defaults (SPEC §12). A temporary database,
//! generated CI and host keys, a signed demo fleet (canary → stable by a channel edge, plus
//! edge and batch; ~40 hosts; waves with short soaks; one approval wave; disruption budgets;
//! a release whose edge closure is broken and gets quarantined by its rollback; the policies
//! of SPEC §17: a nightly maintenance window on the batch channel, and a failure budget on
//! stable's last wave that one host with bad firmware uses up), the simulator in-process, and
//! the dashboard. When the first rollouts are done it publishes the next release, so there is
//! always something moving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use shared::state::RolloutState;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::db::auth::Role;
use crate::db::auth::{new_token, token_hash};
use crate::reducer::ReducerInput;
use crate::server::App;
use crate::sim::{self, Behaviour, SimHost, Stats};

/// Closures containing this marker fail their health probe in the simulator.
pub const BROKEN_MARKER: &str = "broken";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the dashboard listens. Default: 127.0.0.1:8080.
    #[arg(long, env = "FLEETWAVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// SQLite database. Default: a temporary one, removed on exit.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The dashboard build. Default: ./dist.
    #[arg(long, env = "FLEETWAVE_DIST", default_value = "dist")]
    pub dist: PathBuf,
    /// Soak of every wave, in minutes (0 = converge as soon as activated). Default: 1.
    #[arg(long, default_value_t = 1)]
    pub soak_minutes: u64,
    /// Simulator pace: 1.0 is real agent timing; smaller is faster. Default: 0.4.
    #[arg(long, default_value_t = 0.4)]
    pub time_scale: f64,
    /// Seed of the simulated fleet's decisions. Default: 7.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Milliseconds between plan passes. Default: 1000.
    #[arg(long, default_value_t = 1000)]
    pub plan_tick_ms: u64,
    /// Webhooks to deliver the demo's log to, as `serve --webhooks` takes them.
    #[arg(long)]
    pub webhooks: Option<PathBuf>,
}

/// A running demo.
pub struct Demo {
    pub addr: SocketAddr,
    pub operator_token: String,
    pub stats: Arc<Stats>,
    pub state: crate::http::AppState,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

struct HostRole {
    prefix: &'static str,
    channel: &'static str,
    count: usize,
    tags: &'static [&'static str],
}

const ROLES: &[HostRole] = &[
    HostRole { prefix: "canary", channel: "canary", count: 4, tags: &["web", "canary"] },
    HostRole { prefix: "db", channel: "stable", count: 4, tags: &["db"] },
    HostRole { prefix: "web", channel: "stable", count: 18, tags: &["web"] },
    HostRole { prefix: "api", channel: "stable", count: 8, tags: &["api"] },
    HostRole { prefix: "edge", channel: "edge", count: 6, tags: &["edge"] },
    HostRole { prefix: "batch", channel: "batch", count: 3, tags: &["batch"] },
];

/// The channels whose rollouts make up a release's story: the next release comes once each
/// is Completed or Halted. (Batch waits for its maintenance window, at night in Berlin.)
const CADENCE: [&str; 3] = ["canary", "stable", "edge"];

/// The host whose firmware fails its health probe in release 1: its failure stays within
/// stable's last wave's failure budget, so stable completes without it.
pub const FLAKY_HOST: &str = "web-18";

/// The batch channel's maintenance window (SPEC §17).
pub const BATCH_WINDOW: (&str, &str, &str) = ("01:00", "05:00", "Europe/Berlin");

fn hostnames() -> Vec<(String, &'static HostRole)> {
    ROLES.iter().flat_map(|r| (1..=r.count).map(move |i| (format!("{}-{i:02}", r.prefix), r))).collect()
}

/// The closure `host` of `role` runs in `release`: its role's, except for the flaky host's
/// own in release 1 (built for its firmware, which fails the health probe).
fn host_closure(host: &str, role: &str, release: u32) -> String {
    if host == FLAKY_HOST && release == 1 {
        return format!("{}-{BROKEN_MARKER}-nic-firmware", closure(role, release));
    }
    closure(role, release)
}

/// The closure every host of a role runs in `release` (hosts of a role are identical).
pub fn closure(role: &str, release: u32) -> String {
    let digest: String = <sha2::Sha256 as sha2::Digest>::digest(format!("{role}-{release}").as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    // Release 1 of the edge role is the broken one.
    let broken = if role == "edge" && release == 1 { format!("-{BROKEN_MARKER}-nginx") } else { String::new() };
    format!("/nix/store/{digest}-nixos-system-{role}-24.11.{release}{broken}")
}

/// The demo fleet document for `release` (unsigned).
pub fn fleet_document(keys: &[(String, SigningKey)], release: u32, soak_minutes: u64) -> Value {
    let mut hosts = serde_json::Map::new();
    for ((name, role), (_, key)) in hostnames().into_iter().zip(keys) {
        let closure = host_closure(&name, role.prefix, release);
        hosts.insert(
            name,
            json!({ "channel": role.channel, "tags": role.tags, "closure": closure,
                    "pubkey": engine::sign::public_key_b64(key) }),
        );
    }
    let s = soak_minutes;
    let names = |prefix: &str, range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|i| format!("{prefix}-{i:02}")).collect()
    };
    let wave = |db, web, api| {
        let hosts = [names("db", db), names("web", web), names("api", api)].concat();
        json!({ "hosts": hosts })
    };
    let stable_waves = json!([wave(1..=1, 1..=4, 1..=2), wave(2..=3, 5..=12, 3..=5), wave(4..=4, 13..=18, 6..=8)]);
    let (window_start, window_end, window_zone) = BATCH_WINDOW;
    json!({
        "schemaVersion": 2,
        "meta": { "ciCommit": format!("{:04x}", 0xd000 + release), "signedAt": chrono::Utc::now().to_rfc3339() },
        "hosts": hosts,
        "channels": {
            "canary": { "rolloutPolicy": "canary" },
            "stable": { "rolloutPolicy": "stable" },
            "edge": { "rolloutPolicy": "edge" },
            "batch": { "rolloutPolicy": "batch" }
        },
        "rolloutPolicies": {
            "canary": { "waves": [{ "soakMinutes": s }], "onHealthFailure": "rollback-and-halt", "stuckAfterMinutes": 10 },
            "stable": { "waves": [{ "soakMinutes": s }, { "soakMinutes": s, "requiresApproval": true },
                                  { "soakMinutes": s, "maxFailures": "10%" }],
                        "onHealthFailure": "rollback-and-halt", "stuckAfterMinutes": 10 },
            "edge": { "waves": [{ "soakMinutes": s }, { "soakMinutes": s }], "onHealthFailure": "rollback-and-halt", "stuckAfterMinutes": 10 },
            "batch": { "waves": [{ "soakMinutes": s }], "onHealthFailure": "rollback-and-halt", "stuckAfterMinutes": 10 }
        },
        "waves": {
            "stable": stable_waves,
            "edge": [{ "hosts": names("edge", 1..=1) }, { "hosts": names("edge", 2..=6) }]
        },
        "edges": [
            { "gates": "db-01", "gated": "web-01", "reason": "schema migrations run on the database first" },
            { "gates": "db-02", "gated": "web-05", "reason": "schema migrations run on the database first" }
        ],
        "channelEdges": [{ "gates": "canary", "gated": "stable", "reason": "stable follows a healthy canary" }],
        "disruptionBudgets": [
            { "name": "web", "selector": { "tags": ["web"] }, "maxInFlight": 4 },
            { "name": "db", "selector": { "tags": ["db"] }, "maxInFlight": 1 }
        ],
        "maintenanceWindows": [{
            "name": "batch-nightly", "selector": { "channel": "batch" },
            "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            "start": window_start, "end": window_end, "timezone": window_zone
        }]
    })
}

fn new_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Signs and verifies `release`, then hands it to the reducer.
async fn publish(
    state: &crate::http::AppState,
    ci: &SigningKey,
    keys: &[(String, SigningKey)],
    release: u32,
    soak: u64,
) -> anyhow::Result<()> {
    let out = engine::release::sign_release(ci, &fleet_document(keys, release, soak)).map_err(anyhow::Error::msg)?;
    let rollouts = out.manifests.iter().map(|(_, s)| s.artifact()).collect();
    let update =
        crate::manifests::verify_upload(&state.trust_roots(), out.fleet.artifact(), rollouts, state.clock.now())
            .map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?;
    state
        .reducer
        .ask(|reply| ReducerInput::ManifestSetUpdated { update: Box::new(update), reply: Some(reply) })
        .await?;
    tracing::info!(release, "demo: published release {release}");
    Ok(())
}

/// Publishes the next release once every rollout of the current one is done (Completed, or
/// Halted by the broken closure).
async fn releases(
    state: crate::http::AppState,
    ci: SigningKey,
    keys: Vec<(String, SigningKey)>,
    soak: u64,
    shutdown: CancellationToken,
) {
    let mut release = 1;
    let mut feed = state.feed.subscribe();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            // Any committed change may have finished the release; re-check then.
            entry = feed.recv() => if matches!(entry, Err(tokio::sync::broadcast::error::RecvError::Closed)) { return },
        }
        // The release's rollouts are among the newest opened (four channels).
        let Ok(Some(rollouts)) = crate::db::store::rollout_rows(&state.store, None, None, 16).await else { continue };
        let current: Vec<_> = rollouts
            .iter()
            .filter(|r| r.id.channel_ref() == format!("{:04x}", 0xd000 + release))
            .filter(|r| CADENCE.contains(&r.id.channel()))
            .collect();
        let done = current.len() == CADENCE.len()
            && current.iter().all(|r| matches!(r.state, RolloutState::Completed | RolloutState::Halted));
        if done {
            release += 1;
            tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(5)) => {} }
            if let Err(err) = publish(&state, &ci, &keys, release, soak).await {
                tracing::error!("demo: cannot publish release {release}: {err:#}");
            }
        }
    }
}

impl Demo {
    pub async fn start(args: &DemoArgs) -> anyhow::Result<Demo> {
        let dir = tempfile::tempdir().context("cannot create the demo's temporary directory")?;
        let ci = new_key();
        let trust = dir.path().join("trust.json");
        let trust_doc = json!({ "schemaVersion": 1, "ciReleaseKey": { "current": engine::sign::public_key_b64(&ci) }, "freshnessWindowMinutes": 1440 });
        std::fs::write(&trust, serde_json::to_vec_pretty(&trust_doc)?)?;
        let keys: Vec<(String, SigningKey)> = hostnames().into_iter().map(|(h, _)| (h, new_key())).collect();
        let config = ServeConfig {
            listen: args.listen,
            trust: Some(trust),
            plan_tick_ms: args.plan_tick_ms,
            webhooks: args.webhooks.clone(),
            ..ServeConfig::local(args.db.clone().unwrap_or_else(|| dir.path().join("fleetwave.db")), args.dist.clone())
        };
        let shutdown = CancellationToken::new();
        let app = App::build(&config, shutdown.clone()).await?;
        let addr = app.local_addr();
        let state = app.state().clone();
        let operator_token = new_token();
        let name = format!("demo-operator-{}", &operator_token[3..9]);
        crate::db::auth::add_operator(
            &state.store,
            &name,
            Role::Operator,
            &token_hash(&operator_token),
            chrono::Utc::now(),
        )
        .await?;
        let server = tokio::spawn(app.run());

        publish(&state, &ci, &keys, 1, args.soak_minutes).await?;
        let hosts = hostnames()
            .into_iter()
            .zip(&keys)
            .map(|((name, role), (_, key))| SimHost {
                hostname: name,
                key: key.clone(),
                initial_closure: closure(role.prefix, 0),
            })
            .collect();
        let behaviour = Behaviour {
            time_scale: args.time_scale,
            bad_closure_marker: Some(BROKEN_MARKER.into()),
            ..Behaviour::default()
        };
        let (stats, mut tasks) = sim::spawn(&[format!("http://{addr}")], hosts, args.seed, behaviour, shutdown.clone());
        tasks.push(tokio::spawn(releases(state.clone(), ci, keys, args.soak_minutes, shutdown.clone())));
        Ok(Demo { addr, operator_token, stats, state, server, tasks, shutdown, _dir: dir })
    }

    pub fn login_link(&self) -> String {
        format!("http://{}/login?token={}", self.addr, self.operator_token)
    }

    /// Stops the simulator and the server; waits for the reducer's last transaction.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.server.await.context("the server task panicked")?
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The CLI: start, print the link, run until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let demo = Demo::start(&args).await?;
    tokio::spawn(crate::shutdown::cancel_on_signal(demo.shutdown_token()));
    println!();
    println!("  Fleetwave demo: {} simulated hosts are rolling out.", hostnames().len());
    println!("  Open the dashboard (signs you in as an operator):");
    println!();
    println!("    {}", demo.login_link());
    println!();
    println!("  Stable's second wave waits for your approval; its last wave tolerates one failed host");
    println!("  ({FLAKY_HOST}); batch hosts wait for their nightly maintenance window. Ctrl-C stops everything.");
    println!();
    let token = demo.shutdown_token();
    token.cancelled().await;
    let stats = demo.stats.clone();
    demo.stop().await?;
    tracing::info!("demo stopped: {}", sim::summary(&stats, started.elapsed()));
    Ok(())
}

/// The hosts of the demo fleet, for tests.
pub fn demo_hostnames() -> Vec<String> {
    hostnames().into_iter().map(|(h, _)| h).collect()
}
