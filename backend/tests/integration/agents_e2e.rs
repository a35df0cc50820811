//! End to end with real agents (SPEC §14): `fleetwave serve` and three `fleetwave-agent run`
//! processes, each host with a root of its own, closures built in one real Nix store
//! (Debian's `nix-bin`), real profile generations. A two-wave rollout converges; a closure
//! whose switch fails, and one whose enforce probe fails during the soak, are rolled back to
//! the previous generation and quarantined while the other hosts are held; an agent killed
//! with SIGKILL mid-soak resumes after a restart with no seq reused and the rollout completes.

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::write_release_dir;
use agent::testkit::{self, Behaviour, System};
use engine::testkit::{FleetBuilder, ci_key, host_key, trust_config};
use serde_json::Value;
use shared::Closure;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The agent next to `fleetwave` (the workspace builds both), or `FLEETWAVE_AGENT_BIN`.
fn agent_binary() -> PathBuf {
    let path = std::env::var_os("FLEETWAVE_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_fleetwave")).with_file_name("fleetwave-agent"));
    assert!(path.exists(), "{} is not built (cargo build -p agent)", path.display());
    path
}

/// `fleetwave serve` on a temporary database, polling a manifests directory.
struct Plane {
    child: Child,
    url: String,
    token: String,
    release: PathBuf,
    http: reqwest::Client,
}

impl Plane {
    async fn start(dir: &Path) -> Plane {
        let db = dir.join("fw.db");
        let trust = dir.join("trust.json");
        std::fs::write(&trust, serde_json::to_vec(&trust_config(&ci_key())).unwrap()).unwrap();
        let bin = env!("CARGO_BIN_EXE_fleetwave");
        let added = Command::new(bin)
            .args(["operator", "add", "--name", "e2e", "--role", "viewer", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        let token = String::from_utf8_lossy(&added.stdout).lines().last().unwrap().trim().to_owned();
        let release = dir.join("release");
        std::fs::create_dir_all(&release).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(bin)
            .args(["serve", "--manifests-poll-ms", "200", "--plan-tick-ms", "500"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(&db)
            .arg("--trust")
            .arg(&trust)
            .arg("--manifests-dir")
            .arg(&release)
            .env("FLEETWAVE_DIST", dir.join("no-dist"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let plane =
            Plane { child, url: format!("http://127.0.0.1:{port}"), token, release, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while plane.http.get(format!("{}/readyz", plane.url)).send().await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(
                Instant::now() < deadline,
                "serve never became ready: {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        plane
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}/api/v1{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// The host states of rollout `id` by hostname, and the rollout's state (empty while it
    /// is not open yet).
    async fn states(&self, id: &str) -> (String, Vec<(String, String)>) {
        let r =
            self.http.get(format!("{}/api/v1/rollouts/{id}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        if r.status() != 200 {
            return (String::new(), Vec::new());
        }
        let rollout: Value = r.json().await.unwrap();
        let mut hosts = Vec::new();
        for wave in rollout["waves"].as_array().unwrap() {
            for h in wave["hosts"].as_array().unwrap() {
                hosts.push((h["hostname"].as_str().unwrap().to_owned(), h["state"].as_str().unwrap().to_owned()));
            }
        }
        hosts.sort();
        (rollout["state"].as_str().unwrap_or_default().to_owned(), hosts)
    }

    /// Waits (at most `limit`) until rollout `id` is in `state` with its hosts in `hosts`.
    async fn wait_for(&self, id: &str, state: &str, hosts: &[(&str, &str)], limit: Duration, agents: &[&Host]) {
        let want: Vec<(String, String)> = hosts.iter().map(|(h, s)| ((*h).to_owned(), (*s).to_owned())).collect();
        let deadline = Instant::now() + limit;
        loop {
            let (now, seen) = self.states(id).await;
            if now == state && seen == want {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = agents.iter().map(|a| format!("--- {}:\n{}", a.name, a.log())).collect();
                panic!("{id}: wanted {state} {want:?}, have {now} {seen:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn release(&self, fleet: &FleetBuilder, commit: &str) {
        let staging = self.release.with_extension("new");
        write_release_dir(&staging, fleet, commit, chrono::Utc::now(), false);
        let _ = std::fs::remove_dir_all(&self.release);
        std::fs::rename(&staging, &self.release).unwrap();
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One host: a root with `/run/current-system`, the agent's config and key under it.
struct Host {
    name: String,
    root: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn new(dir: &Path, name: &str) -> Host {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("nix/var/nix/profiles")).unwrap();
        std::fs::create_dir_all(root.join("etc/fleetwave")).unwrap();
        std::fs::write(root.join("etc/fleetwave/host.key"), engine::sign::encode_signing_key(&host_key(name))).unwrap();
        Host { name: name.to_owned(), root, child: None }
    }

    /// Boots the host into `closure`.
    fn boot(&self, closure: &Closure) {
        for link in ["run/current-system", "run/booted-system"] {
            let _ = std::fs::remove_file(self.root.join(link));
            symlink(closure.as_str(), self.root.join(link)).unwrap();
        }
    }

    fn start(&mut self, url: &str) {
        let config = format!(
            r#"controlPlane = "{url}"
hostname = "{name}"
keyFile = "/etc/fleetwave/host.key"
switchCommand = []
activationTimeoutSeconds = 60

[[probes]]
name = "health"
kind = "exec"
target = "test ! -e {root}/run/current-system/unhealthy"
intervalSeconds = 1
timeoutSeconds = 1
mode = "enforce"
failAfter = 2
"#,
            name = self.name,
            root = self.root.display()
        );
        let config_path = self.root.join("etc/fleetwave/agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join("agent.log")).unwrap();
        let child = Command::new(agent_binary())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--root")
            .arg(&self.root)
            .env("NIX_CONFIG", testkit::NIX_CONFIG)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent.log")).unwrap_or_default()
    }

    fn current(&self) -> PathBuf {
        std::fs::read_link(self.root.join("run/current-system")).unwrap()
    }

    fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/system")
    }

    /// The profile's generations, printed with what each points at so the test output shows
    /// the switches and the rollbacks.
    fn generations(&self) -> Vec<(u32, bool)> {
        let generations = testkit::generations(&self.profile()).unwrap();
        let shown: Vec<String> = generations
            .iter()
            .map(|(n, current)| {
                let link = self.profile().with_file_name(format!("system-{n}-link"));
                let target = std::fs::read_link(&link).map(|t| t.display().to_string()).unwrap_or_default();
                let name = target.rsplit_once("-nixos-system-").map_or(target.as_str(), |(_, n)| n).to_owned();
                format!("{n}: {name}{}", if *current { " (current)" } else { "" })
            })
            .collect();
        println!("{}: profile generations [{}]", self.name, shown.join(", "));
        generations
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

const HOSTS: [&str; 3] = ["a", "b", "c"];

/// Three hosts in channel `stable` (wave 0: a; wave 1: b, c) of a `rollback-and-halt`
/// policy with `soak` minutes in wave 0, each host's target from `target`.
fn fleet(soak: u64, target: impl Fn(&str) -> String) -> FleetBuilder {
    let mut b =
        FleetBuilder::new().policy("p", &[(soak, false), (0, false)], "rollback-and-halt", 30).channel("stable", "p");
    for h in HOSTS {
        b = b.host_with_closure(h, "stable", &["web"], Some(&target(h)));
    }
    b.waves("stable", &[&["a"], &["b", "c"]])
}

/// The three hosts, booted into a `v1` of their own, and the systems they will be offered.
struct Hosts {
    hosts: Vec<Host>,
    closures: HashMap<(String, String), Closure>,
}

impl Hosts {
    /// Builds every host's `v1` and the `extra` (host, name, behaviour) systems in one
    /// `nix-build`, and boots every host into its `v1`.
    fn build(dir: &Path, extra: &[(&str, &str, Behaviour)], tag: &str) -> Hosts {
        let hosts: Vec<Host> = HOSTS.iter().map(|h| Host::new(dir, h)).collect();
        let mut wanted: Vec<(&str, &str, Behaviour)> = HOSTS.iter().map(|h| (*h, "v1", Behaviour::Switches)).collect();
        wanted.extend_from_slice(extra);
        let systems: Vec<System> = wanted
            .iter()
            .map(|(h, name, behaviour)| {
                let root = &hosts.iter().find(|x| x.name == *h).unwrap().root;
                System { root, name, tag, behaviour: *behaviour }
            })
            .collect();
        let built = testkit::build_systems(&systems).unwrap();
        let closures = wanted.iter().zip(built).map(|((h, n, _), c)| (((*h).to_owned(), (*n).to_owned()), c)).collect();
        let fleet = Hosts { hosts, closures };
        for host in &fleet.hosts {
            host.boot(&fleet.closure(&host.name, "v1"));
        }
        fleet
    }

    /// `v2` for every host.
    fn v2() -> Vec<(&'static str, &'static str, Behaviour)> {
        HOSTS.iter().map(|h| (*h, "v2", Behaviour::Switches)).collect()
    }

    fn closure(&self, host: &str, name: &str) -> Closure {
        self.closures[&(host.to_owned(), name.to_owned())].clone()
    }

    /// (Re)starts every agent.
    fn start(&mut self, url: &str) {
        for host in &mut self.hosts {
            host.kill();
            host.start(url);
        }
    }

    fn agents(&self) -> Vec<&Host> {
        self.hosts.iter().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_converge_two_waves_and_a_closure_whose_switch_fails_is_rolled_back_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::start(dir.path()).await;
    let mut extra = Hosts::v2();
    extra.extend([
        ("a", "broken", Behaviour::Fails),
        ("b", "v3", Behaviour::Switches),
        ("c", "v3", Behaviour::Switches),
    ]);
    let mut hosts = Hosts::build(dir.path(), &extra, "switch-fails");

    // Release 1: every host to v2, in two waves.
    plane.release(&fleet(0, |h| hosts.closure(h, "v2").to_string()), "a1");
    hosts.start(&plane.url);
    let all = [("a", "Converged"), ("b", "Converged"), ("c", "Converged")];
    let agents = hosts.agents();
    plane.wait_for("stable@a1", "Completed", &all, Duration::from_secs(90), &agents).await;
    for host in &hosts.hosts {
        assert_eq!(host.current(), Path::new(hosts.closure(&host.name, "v2").as_str()), "{} runs v2", host.name);
        assert_eq!(host.generations(), [(1, true)]);
    }

    // Release 2: a's closure fails to switch. The agents are restarted so they ask at once
    // instead of at their next idle heartbeat (30 s).
    plane.release(
        &fleet(
            0,
            |h| if h == "a" { hosts.closure(h, "broken").to_string() } else { hosts.closure(h, "v3").to_string() },
        ),
        "b2",
    );
    hosts.start(&plane.url);
    let held = [("a", "Reverted"), ("b", "Pending"), ("c", "Pending")];
    let agents = hosts.agents();
    plane.wait_for("stable@b2", "Halted", &held, Duration::from_secs(90), &agents).await;
    let a = &hosts.hosts[0];
    assert_eq!(a.current(), Path::new(hosts.closure("a", "v2").as_str()), "a is back on v2");
    assert_eq!(a.generations(), [(1, false), (2, false), (3, true)], "v2, broken, v2 again");
    assert_eq!(testkit::profile_target(&a.profile()).unwrap(), Path::new(hosts.closure("a", "v2").as_str()));
    let quarantines = plane.get("/quarantines").await;
    let active: Vec<&str> =
        quarantines["active"].as_array().unwrap().iter().map(|q| q["closure"].as_str().unwrap()).collect();
    assert_eq!(active, [hosts.closure("a", "broken").as_str()]);
    for host in &hosts.hosts[1..] {
        assert_eq!(host.current(), Path::new(hosts.closure(&host.name, "v2").as_str()), "{} held on v2", host.name);
        assert_eq!(host.generations(), [(1, true)], "{} was never switched", host.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_failing_its_enforce_probe_during_the_soak_is_rolled_back_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::start(dir.path()).await;
    let extra =
        [("a", "sick", Behaviour::Unhealthy), ("b", "v2", Behaviour::Switches), ("c", "v2", Behaviour::Switches)];
    let mut hosts = Hosts::build(dir.path(), &extra, "probe-fails");
    // A soak of a minute: the probe (every second, failing twice in a row) fails it first.
    plane.release(
        &fleet(1, |h| if h == "a" { hosts.closure(h, "sick").to_string() } else { hosts.closure(h, "v2").to_string() }),
        "a1",
    );
    hosts.start(&plane.url);
    let held = [("a", "Reverted"), ("b", "Pending"), ("c", "Pending")];
    let agents = hosts.agents();
    plane.wait_for("stable@a1", "Halted", &held, Duration::from_secs(50), &agents).await;
    let a = &hosts.hosts[0];
    assert_eq!(a.current(), Path::new(hosts.closure("a", "v1").as_str()), "a is back on what it ran");
    assert_eq!(a.generations(), [(1, false), (2, true)], "sick, then v1 again");
    let quarantines = plane.get("/quarantines").await;
    assert_eq!(quarantines["active"][0]["closure"], hosts.closure("a", "sick").as_str());
    let events = plane.get("/rollouts/stable@a1/events?after=0&limit=1000").await;
    let failed: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["host"] == "a" && e["payload"]["event"]["kind"] == "Failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["payload"]["event"]["failingProbes"], serde_json::json!(["health"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_soak_resumes_without_reusing_a_seq_and_the_rollout_completes() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::start(dir.path()).await;
    let mut hosts = Hosts::build(dir.path(), &Hosts::v2(), "killed");
    plane.release(&fleet(1, |h| hosts.closure(h, "v2").to_string()), "a1");
    hosts.start(&plane.url);
    let soaking = [("a", "Soaking"), ("b", "Pending"), ("c", "Pending")];
    let agents = hosts.agents();
    plane.wait_for("stable@a1", "Active", &soaking, Duration::from_secs(40), &agents).await;
    // Let a few probe results go out, then kill the agent without warning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    hosts.hosts[0].kill();
    let before: u64 = serde_json::from_slice::<Value>(
        &std::fs::read(hosts.hosts[0].root.join("var/lib/fleetwave-agent/intent.json")).unwrap(),
    )
    .unwrap()["nextSeq"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    hosts.hosts[0].start(&plane.url);

    let all = [("a", "Converged"), ("b", "Converged"), ("c", "Converged")];
    let agents = hosts.agents();
    plane.wait_for("stable@a1", "Completed", &all, Duration::from_secs(120), &agents).await;
    let events = plane.get("/rollouts/stable@a1/events?after=0&limit=1000").await;
    let seqs: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["host"] == "a" && e["kind"] == shared::log::LogKind::HostEvent.as_str())
        .map(|e| e["payload"]["event"]["seq"].as_u64().unwrap())
        .collect();
    let contiguous: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, contiguous, "every event of a applied once, in order, none lost to a reused seq");
    assert!(seqs.len() as u64 >= before, "events after the restart carry seqs from {before} on");
    let log = hosts.hosts[0].log();
    assert!(log.contains("resuming stable@a1"), "{log}");
    assert!(!log.contains("refused"), "{log}");
}

/// Resident memory and CPU of `pid` from /proc: (VmRSS KiB, VmHWM KiB, CPU seconds).
fn usage(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = clock_ticks();
    (kib("VmRSS:"), kib("VmHWM:"), ticks as f64 / hz)
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The agent's footprint (SPEC §13: ≤ 20 MiB resident, ≤ 1 % of a core idle): one agent
/// through a rollout (fetch, switch, soak with a probe every second), then idle for 90 s.
/// `cargo build --release -p agent && FLEETWAVE_AGENT_BIN=target/release/fleetwave-agent
/// cargo nextest run -p backend --test integration -E 'test(/^agents_e2e::/)' --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: about 2 minutes"]
async fn agent_resident_memory_and_idle_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::start(dir.path()).await;
    let mut hosts = Hosts::build(dir.path(), &Hosts::v2(), "footprint");
    plane.release(&fleet(0, |h| hosts.closure(h, "v2").to_string()), "a1");
    hosts.start(&plane.url);
    let all = [("a", "Converged"), ("b", "Converged"), ("c", "Converged")];
    let agents = hosts.agents();
    plane.wait_for("stable@a1", "Completed", &all, Duration::from_secs(90), &agents).await;
    let pid = hosts.hosts[0].child.as_ref().unwrap().id();
    let (rss, peak, cpu_before) = usage(pid);
    println!("after the rollout: resident {} KiB, peak {} KiB, CPU {cpu_before:.2} s so far", rss, peak);
    let idle = Duration::from_secs(90);
    tokio::time::sleep(idle).await;
    let (rss, peak, cpu_after) = usage(pid);
    let share = (cpu_after - cpu_before) / idle.as_secs_f64() * 100.0;
    println!(
        "idle {} s: resident {} KiB ({:.1} MiB), peak {} KiB ({:.1} MiB), CPU {:.3} s = {share:.3} % of a core",
        idle.as_secs(),
        rss,
        rss as f64 / 1024.0,
        peak,
        peak as f64 / 1024.0,
        cpu_after - cpu_before
    );
    assert!(rss > 0 && cpu_after >= cpu_before);
}
