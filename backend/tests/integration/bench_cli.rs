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
