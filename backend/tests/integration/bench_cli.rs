//! `fleetwave bench run` end to end on a tiny fleet: the ceilings, a real `fleetwave serve`
//! child process, both load phases and the feed watchers all report. (The figures themselves
//! are measured with the defaults and recorded in BENCHMARKS.md; nothing here times anything.)

use std::process::Command;

/// A run small enough for the test command: 40 hosts, one-second phases, 200 ceiling events.
const TINY: [&str; 14] = [
    "bench",
    "run",
    "--sizes",
    "40",
    "--hosts-per-rollout",
    "10",
    "--seconds",
    "1",
    "--feed-clients",
    "2",
    "--clients",
    "4",
    "--ceiling-events",
    "200",
];

#[test]
fn bench_run_reports_every_figure_with_its_ceiling() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwave")).args(TINY).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "SQLite (raw, rusqlite)",
        "through sqlx",
        "bare axum route",
        "| 40 hosts / 4 rollouts |",
        "× route ceiling",
        "× raw SQLite grouped",
        "plan pass",
        "reducer, events phase",
        "backend peak RSS",
        "feed fan-out",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    // Requests were verified and answered, events were applied, and both feed clients stayed
    // connected and received entries.
    assert!(!text.contains(" 0 requests/s") && !text.contains(" 0 events/s"), "{text}");
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_owned();
    let events = line("| events applied / refused or retried |");
    assert!(!events.contains("| 0 /"), "no event was applied: {events}");
    assert!(events.ends_with("/ 0 |"), "events were refused or retried: {events}");
    let feed = line("| feed fan-out |");
    assert!(feed.contains("2/2 connected") && !feed.contains(", 0–"), "{feed}");
}

#[tokio::test]
async fn bench_run_on_postgres_reports_its_figures_against_raw_postgres_and_drops_its_databases() {
    use sqlx::Connection as _;
    let server = std::env::var(backend::db::testing::SERVER_VAR).expect("FLEETWAVE_TEST_PG (./scripts/test sets it)");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(TINY)
        .args(["--db", &server])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "fleetwave bench run on PostgreSQL",
        "PostgreSQL (raw, sqlx on one connection)",
        "UNNEST arrays",
        "× raw PostgreSQL grouped",
        "| 40 hosts / 4 rollouts |",
        "feed fan-out",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_owned();
    let events = line("| events applied / refused or retried |");
    assert!(!events.contains("| 0 /") && events.ends_with("/ 0 |"), "{events}");
    let feed = line("| feed fan-out |");
    assert!(feed.contains("2/2 connected") && !feed.contains(", 0–"), "{feed}");
    // Its databases (the ceilings' and the server's) are gone.
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'fleetwave\\_bench\\_%' OR datname LIKE 'fleetwave\\_ceiling\\_%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `fleetwave bench history` on a tiny fleet: every simulated day's release completes (the
/// agents' state machines drive it), the database grows by a day's entries, and once
/// retention is on its first round archives the old ones and leaves a log that verifies with
/// its archive.
#[test]
fn bench_history_drives_releases_and_retention_archives_the_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "history",
        "--hosts",
        "20",
        "--hosts-per-rollout",
        "10",
        "--days",
        "4",
        "--soak-minutes",
        "1",
        "--log-retention-days",
        "2",
        "--observation-retention-days",
        "1",
        "--retention-from-day",
        "4",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwave")).args(args).arg("--dir").arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    // | day | entries written | entries in the database | …
    let rows: Vec<(i64, i64)> = text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Some((cells.get(2)?.parse().ok()?, cells.get(3)?.parse().ok()?))
        })
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].0 > 20 * 5, "every host's release is in the log: {text}");
    for day in 1..3 {
        let ((before, _), (written, kept)) = (rows[day - 1], rows[day]);
        assert!(written > before + 20 * 5 && kept == written, "day {}: {text}", day + 1);
    }
    let (written, kept) = rows[3];
    assert!(written > rows[2].0 && kept < rows[1].0, "day 4's round archived the first days: {text}");
    assert!(stderr.contains("retention's first round on day 4"), "{stderr}");
    let db = dir.path().join("fleetwave.db");
    let archive = dir.path().join("log-archive");
    let verify = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["log", "verify", "--db"])
        .arg(&db)
        .arg("--archive")
        .arg(&archive)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(said.contains("log verified") && said.contains("seq 1–"), "{said}");
}
