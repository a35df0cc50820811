//! The SQLite database: one file, WAL, `synchronous=NORMAL`, foreign keys on (SPEC §8), with
//! the migrations in `migrations/` applied at start. Only this process writes it, and inside
//! it only the reducer writes rollout state (operators and sessions are written by the CLI and
//! the session route).

pub mod auth;
pub mod replay;
pub mod store;
pub mod writer;

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot apply the migrations to {path}: {source}")]
    Migrate { path: String, source: sqlx::migrate::MigrateError },
}

/// How long a statement waits for another connection's lock before it fails (`SQLITE_BUSY`).
/// Only this process writes the database, so a lock held longer means something outside it
/// (a backup tool, an operator's `sqlite3` shell) is in the way.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if missing) the database at `path` and brings its schema up to date.
pub async fn open(path: &Path) -> Result<SqlitePool, DbError> {
    open_with(path, BUSY_TIMEOUT).await
}

/// [`open`] with another busy timeout.
pub async fn open_with(path: &Path, busy_timeout: Duration) -> Result<SqlitePool, DbError> {
    let display = path.display().to_string();
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Open { path: display.clone(), source })?;
    sqlx::migrate!("../migrations").run(&pool).await.map_err(|source| DbError::Migrate { path: display, source })?;
    Ok(pool)
}

/// Bytes an unprivileged writer can still use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Cheap liveness probe of the database, used by `/readyz`.
pub async fn ping(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_creates_a_wal_database_with_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleetwave.db");
        let pool = open(&path).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&pool).await.unwrap();
        assert_eq!(fk, 1);
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'event_log'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(tables, 1, "the event log table comes from migrations/");
        pool.close().await;
        // Opening again is idempotent: migrations already applied are skipped.
        let again = open(&path).await.unwrap();
        ping(&again).await.unwrap();
    }
}
