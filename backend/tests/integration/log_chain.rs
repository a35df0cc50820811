//! The event log's hash chain as an auditor meets it (SPEC §16): `fleetwave log verify` on a
//! served control plane's log, one payload byte or one row changed behind its back with the
//! `sqlite3` shell, and `fleetwave log export` lines that verify on their own.

use std::process::{Command, Output};

use engine::chain::{Entry, GENESIS, Hash, from_hex};
use engine::testkit::FleetBuilder;
use serde_json::{Value, json};

use crate::common::{Options, spawn_with};

fn fleetwave(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetwave")).args(args).output().unwrap()
}

fn sqlite3(db: &str, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect("the sqlite3 shell (scripts/setup installs it)");
    assert!(out.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An export line's hash, checked against the line before it (`prev`).
fn check_line(line: &Value, prev: &Hash) -> Hash {
    let object = line.as_object().unwrap();
    let payload = object["payload"].to_string();
    let entry = Entry {
        seq: object["seq"].as_i64().unwrap(),
        ts: object["ts"].as_str().unwrap(),
        kind: object["kind"].as_str().unwrap(),
        rollout_id: object.get("rolloutId").and_then(Value::as_str),
        host: object.get("host").and_then(Value::as_str),
        channel: object.get("channel").and_then(Value::as_str),
        payload: &payload,
    };
    let hash = entry.hash(prev).unwrap();
    assert_eq!(Some(hash), from_hex(object["hash"].as_str().unwrap()), "line {line}");
    hash
}

#[tokio::test]
async fn log_verify_names_the_entry_changed_or_removed_behind_its_back_and_exports_verify() {
    let fleet = FleetBuilder::new()
        .policy("p", &[(10, false)], "halt", 30)
        .channel("stable", "p")
        .host("web-1", "stable", &[])
        .host("web-2", "stable", &[])
        .waves("stable", &[&["web-1", "web-2"]]);
    let app = spawn_with(Options { sqlite: true, ..Default::default() }, None).await;
    assert_eq!(app.upload(&fleet, "a1").await.0, 200);
    app.tick().await;
    let now = app.clock.now();
    for host in ["web-1", "web-2"] {
        let agent = app.agent(host);
        let (s, _) = agent
            .event("stable@a1", "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now}))
            .await;
        assert_eq!(s, 200);
    }
    let stopped = app.stop().await;
    let db = stopped.db.sqlite_path().unwrap().to_str().unwrap().to_owned();
    let last: i64 = sqlite3(&db, "SELECT MAX(seq) FROM event_log").parse().unwrap();
    assert!(last >= 4, "a few entries: {last}");

    let out = fleetwave(&["log", "verify", "--db", &db]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("log verified: {last} entries, seq 1–{last}, head ")),
        "{}",
        text(&out.stdout)
    );

    // The export: every line's hash follows from the line before it.
    let out = fleetwave(&["log", "export", "--db", &db]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as i64, last);
    let mut prev = GENESIS;
    for line in &lines {
        prev = check_line(line, &prev);
    }
    // A range starts from the hash of the line before it.
    let out = fleetwave(&["log", "export", "--db", &db, "--from", "2", "--to", "3"]);
    let range: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(range.iter().map(|l| l["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    let head_of_1 = from_hex(lines[0]["hash"].as_str().unwrap()).unwrap();
    check_line(&range[1], &check_line(&range[0], &head_of_1));

    // One byte of the payload of web-2's DispatchAck entry.
    let seq: i64 =
        sqlite3(&db, "SELECT seq FROM event_log WHERE host = 'web-2' AND kind = 'HostEvent' ORDER BY seq LIMIT 1")
            .parse()
            .unwrap();
    sqlite3(
        &db,
        &format!(
            "UPDATE event_log SET payload = replace(payload, '/nix/store/old', '/nix/store/olD') WHERE seq = {seq}"
        ),
    );
    let out = fleetwave(&["log", "verify", "--db", &db]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("entry {seq} is not as it was written")), "{}", text(&out.stderr));
    sqlite3(
        &db,
        &format!(
            "UPDATE event_log SET payload = replace(payload, '/nix/store/olD', '/nix/store/old') WHERE seq = {seq}"
        ),
    );
    assert!(fleetwave(&["log", "verify", "--db", &db]).status.success(), "changed back, it verifies again");

    // A row deleted.
    sqlite3(&db, "DELETE FROM event_log WHERE seq = 3");
    let out = fleetwave(&["log", "verify", "--db", &db]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("entry 3 is missing"), "{}", text(&out.stderr));

    // Bad input gets a clear error.
    let out = fleetwave(&["log", "export", "--db", &db, "--from", "5", "--to", "2"]);
    assert!(!out.status.success() && text(&out.stderr).contains("--from"), "{}", text(&out.stderr));
}
