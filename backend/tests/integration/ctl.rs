//! `fleetwave ctl` (the real binary) against a real server: every subcommand, `--json`
//! parsable, the exit codes of SPEC §18, and `watch` following a rollout to its end through a
//! connection the test cuts mid-way.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::common::{TestApp, spawn_app};

const R: &str = "stable@a1";

use crate::common::two_waves as fleet;

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn command(url: &str, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetwave"));
    command
        .arg("ctl")
        .args(args)
        .env("FLEETWAVE_URL", url)
        .env("FLEETWAVE_TOKEN", token)
        .env_remove("NO_COLOR")
        .kill_on_drop(true);
    command
}

async fn ctl_at(url: &str, token: &str, args: &[&str]) -> Ran {
    let out = command(url, token, args).output().await.unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ctl(app: &TestApp, args: &[&str]) -> Ran {
    ctl_at(&app.base, &app.operator_token, args).await
}

/// Runs `args` and checks it succeeded.
async fn ok(app: &TestApp, args: &[&str]) -> Ran {
    let ran = ctl(app, args).await;
    assert_eq!(ran.code, 0, "{args:?}: {}{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains('\u{1b}'), "no colour without a terminal: {}", ran.stdout);
    ran
}

#[tokio::test]
async fn reads_show_tables_and_json_and_actions_say_what_they_did() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);

    let status = ok(&app, &["status"]).await.stdout;
    assert!(status.contains("2 hosts"), "{status}");
    let line = status.lines().find(|l| l.starts_with("stable")).unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains(R) && line.contains("Active"), "{line}");
    let status = ok(&app, &["status", "--json"]).await.json();
    assert_eq!(status["currentRollouts"][0]["rolloutId"], R);
    assert_eq!(status["fleet"]["hosts"].as_array().map(Vec::len), Some(2));

    let rollouts = ok(&app, &["rollouts"]).await.stdout;
    assert!(rollouts.starts_with("ROLLOUT") && rollouts.contains(R), "{rollouts}");
    assert_eq!(ok(&app, &["rollouts", "--json"]).await.json()[0]["rolloutId"], R);

    let detail = ok(&app, &["rollout", R]).await.stdout;
    let b = detail.lines().find(|l| l.starts_with("b ")).unwrap_or_else(|| panic!("{detail}"));
    assert!(b.contains("Pending") && b.contains("wave: waiting for wave 1"), "{b}");
    assert_eq!(ok(&app, &["rollout", R, "--json"]).await.json()["waves"][1]["requiresApproval"], true);

    // Each action, in JSON (its outcome) and as words.
    let outcome = ok(&app, &["pause", R, "--reason", "lunch", "--json"]).await.json();
    assert!(outcome["seq"].as_i64().is_some_and(|s| s > 0), "{outcome}");
    assert!(ok(&app, &["resume", R]).await.stdout.contains("log seq"));
    ok(&app, &["approve", R, "--wave", "1", "--reason", "looks good"]).await;
    ok(&app, &["promote", R, "--to-wave", "1", "--force"]).await;
    ok(&app, &["quarantine", "--channel", "stable", "--closure", "/nix/store/bad", "--reason", "oom"]).await;
    ok(&app, &["release", "--channel", "stable", "--closure", "/nix/store/bad"]).await;
    let freeze = ok(&app, &["freeze", "--host", "a", "--for", "4h", "--reason", "incident 7", "--json"]).await.json();
    let name = freeze["name"].as_str().unwrap().to_owned();
    let status = ok(&app, &["status"]).await.stdout;
    assert!(status.contains(&format!("FROZEN {name}: incident 7")), "{status}");
    ok(&app, &["unfreeze", &name, "--reason", "resolved"]).await;
    ok(&app, &["suspend-host", "b", "--reason", "disk"]).await;
    assert!(ok(&app, &["status"]).await.stdout.contains("1 hosts suspended"));
    ok(&app, &["resume-host", "b", "--reason", "fixed"]).await;

    // Every action is in the log with the operator and the reason given.
    let log = app.log().await;
    let actions: Vec<String> = log
        .iter()
        .filter_map(|l| match &l.entry {
            shared::log::LogEntry::OperatorAction(a) => Some(a.action.name().to_owned()),
            _ => None,
        })
        .collect();
    for name in ["pause", "resume", "approve-wave", "promote", "quarantine", "release", "freeze", "unfreeze"] {
        assert!(actions.iter().any(|a| a == name), "{name} in {actions:?}");
    }
}

#[tokio::test]
async fn exit_codes_say_refused_usage_and_unreachable() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    ok(&app, &["approve", R, "--wave", "1"]).await;

    // Refused: the server's reason, exit 1.
    let again = ctl(&app, &["approve", R, "--wave", "1"]).await;
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already approved") && again.stderr.contains("409"), "{}", again.stderr);
    let viewer = ctl_at(&app.base, &app.viewer_token, &["pause", R]).await;
    assert_eq!(viewer.code, 1, "a viewer may not act: {}", viewer.stderr);
    assert_eq!(ctl_at(&app.base, &app.viewer_token, &["status"]).await.code, 0, "but may read");
    let unknown = ctl(&app, &["rollout", "nope@a1"]).await;
    assert_eq!((unknown.code, unknown.stderr.contains("404")), (1, true), "{}", unknown.stderr);
    let bad_token = ctl_at(&app.base, "fw_not-a-token", &["status"]).await;
    assert_eq!(bad_token.code, 1, "{}", bad_token.stderr);

    // Usage: exit 2, nothing sent.
    for args in [
        &["approve", R][..],
        &["freeze", "--reason", "x", "--for", "4w"],
        &["rollout", "Not An Id"],
        &["rollouts", "--limit", "0"],
        &["no-such-command"],
    ] {
        let ran = ctl(&app, args).await;
        assert_eq!(ran.code, 2, "{args:?}: {}", ran.stderr);
    }
    assert_eq!(ctl_at(&app.base, "", &["status"]).await.code, 2, "no token");

    // Unreachable: exit 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = ctl_at(&format!("http://127.0.0.1:{port}"), &app.operator_token, &["status"]).await;
    assert_eq!(down.code, 3, "{}", down.stderr);
    assert!(down.stderr.contains("cannot reach"), "{}", down.stderr);
}

/// A TCP relay in front of the server whose connections the test can cut.
struct Relay {
    url: String,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// While false, connections are closed as soon as they are accepted (the server is
    /// "down" for the client).
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (kept, is_open) = (connections.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                kept.lock().unwrap().push(task);
            }
        });
        Relay { url, connections, open }
    }

    /// Refuses connections (closing each at once) until [`Relay::reopen`].
    fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn reopen(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every open connection (the watch sees its feed break).
    fn cut(&self) -> usize {
        let tasks: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        tasks.iter().for_each(|t| t.abort());
        tasks.len()
    }
}

/// Starts `ctl watch` and waits until it took its snapshot: what happens after is shown.
async fn start_watch(
    url: &str,
    token: &str,
    args: &[&str],
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let mut child = command(url, token, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), errors.next_line()).await.unwrap().unwrap();
    assert!(first.as_deref().is_some_and(|l| l.contains("following after log seq")), "{first:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads the watch's lines until one contains `text` (its stdout is lines, no terminal).
async fn wait_for_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    text: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hit = line.contains(text);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with `{text}` in {seen:#?}");
    seen
}

#[tokio::test]
async fn watch_follows_a_rollout_through_a_cut_connection_to_completion_and_exits_zero() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    let relay = Relay::start(&app.base).await;
    let (mut child, mut lines) = start_watch(&relay.url, &app.operator_token, &["watch", R]).await;

    let now = app.clock.now();
    let a = app.agent("a");
    a.activate(R, "/nix/store/a-v1", now).await;
    wait_for_line(&mut lines, "a: activation completed (exit code 0), running /nix/store/a-v1 · Activating → Soaking")
        .await;

    // The connection drops and stays down while the rollout goes on: once it is back, the
    // watch resumes after the last entry it saw (Last-Event-ID) and shows what it missed,
    // each entry once.
    relay.close();
    assert!(relay.cut() >= 1, "the watch's feed went through the relay");
    assert_eq!(a.converge(R, "/nix/store/a-v1", now).await.0, 200);
    ok(&app, &["approve", R, "--wave", "1"]).await;
    app.tick().await;
    let b = app.agent("b");
    b.activate(R, "/nix/store/b-v1", now).await;
    assert_eq!(b.converge(R, "/nix/store/b-v1", now).await.0, 200);
    relay.reopen();

    let seen = wait_for_line(&mut lines, "rollout Active → Completed").await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0), "exit 0 once the rollout completed: {seen:#?}");
    let converged: Vec<&String> =
        seen.iter().filter(|l| l.contains("converged on /nix/store/") && l.contains("Soaking → Converged")).collect();
    assert_eq!(converged.len(), 2, "a and b converged, each shown once across the cut: {seen:#?}");
    assert!(seen.iter().any(|l| l.contains("wave 1 approved")), "{seen:#?}");
}

#[tokio::test]
async fn watch_exits_four_when_the_rollout_halts_and_json_lines_are_log_entries() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    let (mut child, mut lines) = start_watch(&app.base, &app.operator_token, &["watch", R, "--json"]).await;
    let a = app.agent("a");
    a.activate(R, "/nix/store/a-v1", app.clock.now()).await;
    let failed = json!({"failedAt": app.clock.now(), "failingProbes": ["http"], "policyApplied": "halt"});
    assert_eq!(a.event(R, "Failed", failed).await.0, 200);

    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(4), "a halt ends the watch with exit 4");
    let mut entries = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let entry: shared::api::LogEvent = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        entries.push(entry);
    }
    assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq), "in seq order");
    assert!(entries.iter().all(|e| e.rollout_id.as_ref().is_some_and(|r| r.as_str() == R)), "this rollout's only");
    assert!(
        entries.iter().any(|e| e.kind == shared::log::LogKind::RolloutStateChanged),
        "the halt itself is among them: {:?}",
        entries.iter().map(|e| e.kind).collect::<Vec<_>>()
    );

    // A halted rollout goes on once its failure is cleared.
    ok(&app, &["clear-failure", R, "--reason", "flaky probe"]).await;
}

#[tokio::test]
async fn completions_are_generated_for_the_whole_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwave")).args(["completions", "bash"]).output().await.unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["ctl", "suspend-host", "watch", "serve"] {
        assert!(script.contains(word), "{word} completes");
    }
}

#[tokio::test]
async fn audit_lists_what_people_did_filtered_by_time_and_actor() {
    let app = spawn_app().await;
    let olive = app.texts("SELECT name FROM operators WHERE role = 'operator'").await.remove(0);
    let oscar_token = backend::db::auth::new_token();
    let hash = backend::db::auth::token_hash(&oscar_token);
    backend::db::auth::add_operator(
        &app.state.store,
        "oscar",
        backend::db::auth::Role::Operator,
        &hash,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let started = app.clock.now();
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    ok(&app, &["pause", R, "--reason", "lunch"]).await;
    app.advance(3600);
    let later = app.clock.now();
    let oscar = |args: &'static [&'static str]| {
        let (base, token) = (app.base.clone(), oscar_token.clone());
        async move { ctl_at(&base, &token, args).await }
    };
    assert_eq!(oscar(&["resume", R]).await.code, 0);
    assert_eq!(oscar(&["suspend-host", "b", "--reason", "disk"]).await.code, 0);
    assert_eq!(oscar(&["freeze", "--name", "night", "--reason", "incident"]).await.code, 0);
    assert_eq!(oscar(&["unfreeze", "night", "--reason", "over"]).await.code, 0);
    // Agents' entries are not in the audit.
    app.agent("a").activate(R, "/nix/store/a-v1", app.clock.now()).await;

    let lines = |ran: Ran| -> Vec<shared::api::AuditEntry> {
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        ran.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    };
    let all = lines(ctl(&app, &["audit", "--json"]).await);
    let seen: Vec<(String, String)> = all.iter().map(|e| (e.actor.clone(), e.entry.kind.to_string())).collect();
    let expected: Vec<(String, String)> = [
        (olive.as_str(), "ManifestSetUpdated"),
        (&olive, "OperatorAction"),
        ("oscar", "OperatorAction"),
        // A policy change is logged, then the action that made it.
        ("oscar", "HostSuspended"),
        ("oscar", "OperatorAction"),
        ("oscar", "FreezeStarted"),
        ("oscar", "OperatorAction"),
        ("oscar", "FreezeReleased"),
        ("oscar", "OperatorAction"),
    ]
    .iter()
    .map(|(a, k)| (a.to_string(), k.to_string()))
    .collect();
    assert_eq!(seen, expected, "every person's entry, oldest first, and nothing of the agents'");
    assert!(all.windows(2).all(|w| w[0].entry.seq < w[1].entry.seq));
    assert!(all[1].what.contains("pause") && all[1].what.contains("lunch"), "{}", all[1].what);
    assert!(all[0].what.contains(&format!("uploaded by {olive}")), "{}", all[0].what);

    let by_olive = lines(ctl(&app, &["audit", "--json", "--actor", &olive]).await);
    assert_eq!(by_olive.len(), 2);
    let since =
        lines(ctl(&app, &["audit", "--json", "--from", &(later - chrono::Duration::seconds(1)).to_rfc3339()]).await);
    assert_eq!(since.len(), 7, "the hour before is left out");
    let until = (started + chrono::Duration::seconds(1800)).to_rfc3339();
    let before = lines(ctl(&app, &["audit", "--json", "--to", &until]).await);
    assert_eq!(before.len(), 2);

    // For people: a table.
    let table = ok(&app, &["audit", "--actor", "oscar"]).await.stdout;
    assert!(table.starts_with("TIME (UTC)"), "{table}");
    assert!(table.lines().any(|l| l.contains("oscar") && l.contains("freeze night released by oscar")), "{table}");

    // Bad queries are refused with a reason.
    for query in ["from=yesterday", "actor=", "colour=red", &format!("from={until}&to={until}")] {
        let (status, body) = app.get(&format!("/api/v1/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let anonymous = app.http.get(app.url("/api/v1/audit")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

/// The plan is SQLite's (PostgreSQL's planner picks by table statistics).
mod sqlite_only {
    #[tokio::test]
    async fn the_audit_query_reads_the_partial_index() {
        let app = crate::common::spawn_with(crate::common::Options { sqlite: true, ..Default::default() }, None).await;
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT seq FROM event_log WHERE {} AND seq > 0 AND ts >= '' AND ts < '9' ORDER BY seq LIMIT 500",
            backend::db::store::audited_kinds_condition()
        );
        let plan: Vec<(i64, i64, i64, String)> =
            backend::on_pool!(&app.state.store, pool => sqlx::query_as(&sql).fetch_all(pool).await).unwrap();
        assert!(plan.iter().any(|(.., detail)| detail.contains("event_log_audit")), "{plan:?}");
    }
}

/// Runs `ctl args` on a pseudo-terminal (util-linux `script`), with `NO_COLOR` set or not.
async fn on_a_terminal(app: &TestApp, args: &str, no_color: bool) -> String {
    let line = format!("{} ctl {args}", env!("CARGO_BIN_EXE_fleetwave"));
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env("FLEETWAVE_URL", &app.base)
        .env("FLEETWAVE_TOKEN", &app.operator_token)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE");
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let out = command.output().await.expect("util-linux `script` runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn tables_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let app = spawn_app().await;
    assert_eq!(app.upload(&fleet(), "a1").await.0, 200);
    let coloured = on_a_terminal(&app, "rollouts", false).await;
    assert!(coloured.contains(R) && coloured.contains('\u{1b}'), "states coloured on a terminal: {coloured:?}");
    let plain = on_a_terminal(&app, "rollouts", true).await;
    assert!(plain.contains(R) && !plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}
