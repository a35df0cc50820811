//! The database behind one interface, [`Store`], with two implementations:
//!
//! - **SQLite** (the default): one file, WAL, `synchronous=NORMAL`, foreign keys on (SPEC
//!   §8), migrations in `migrations/sqlite/`. One process writes it.
//! - **PostgreSQL** (`--db postgres://…`, SPEC §15): any number of replicas share it; the
//!   leader's writer is the only one that writes rollout state, and fences every transaction
//!   by the leader epoch. Migrations in `migrations/postgres/`.
//!
//! Both hold the same columns with the same text in them (timestamps RFC 3339, bodies and
//! payloads JSON), so the queries in [`store`] and [`auth`] are written once and run on either
//! pool ([`on_pool!`]); the few that need a dialect of their own say so where they are. Inside
//! the control plane only the reducer writes rollout state (through [`writer::Writer`]);
//! operators and sessions are written by the CLI and the session route.

pub mod archive;
pub mod auth;
pub mod chain;
pub mod checkpoint;
#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod replay;
pub mod retention;
pub mod sqlite;
pub mod startup;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testing;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{PgPool, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {target}: {source}")]
    Open { target: String, source: sqlx::Error },
    #[error("cannot apply the migrations to {target}: {source}")]
    Migrate { target: String, source: sqlx::migrate::MigrateError },
}

/// How long a statement waits for another connection's lock before it fails (SQLite's
/// `SQLITE_BUSY`, PostgreSQL's `lock_timeout`). A lock held longer means something outside the
/// control plane (a backup tool, an operator's shell) is in the way.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the control plane keeps its state (`--db`): a SQLite file, or a PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbTarget {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; `sqlite://PATH` or anything else a
    /// SQLite file.
    pub fn parse(s: &str) -> Result<DbTarget, String> {
        if s.trim().is_empty() {
            return Err("the database is empty: give a file path or a postgres:// URL".into());
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return s
                .parse::<sqlx::postgres::PgConnectOptions>()
                .map(|_| DbTarget::Postgres(s.to_owned()))
                .map_err(|e| format!("not a PostgreSQL URL: {e}"));
        }
        Ok(DbTarget::Sqlite(PathBuf::from(s.strip_prefix("sqlite://").unwrap_or(s))))
    }

    /// As `--db` (or `FLEETWAVE_DB`) takes it: the file's path, or the whole URL (a password
    /// included, unlike `Display`).
    pub fn as_arg(&self) -> String {
        match self {
            DbTarget::Sqlite(path) => path.display().to_string(),
            DbTarget::Postgres(url) => url.clone(),
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DbTarget::Sqlite(path) => Some(path),
            DbTarget::Postgres(_) => None,
        }
    }
}

impl From<PathBuf> for DbTarget {
    fn from(path: PathBuf) -> DbTarget {
        DbTarget::Sqlite(path)
    }
}

impl std::str::FromStr for DbTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<DbTarget, String> {
        DbTarget::parse(s)
    }
}

/// Shown in logs and errors: a PostgreSQL URL without its password.
impl std::fmt::Display for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Sqlite(path) => write!(f, "{}", path.display()),
            DbTarget::Postgres(url) => match url.split_once('@') {
                Some((scheme_user, rest)) => match scheme_user.rsplit_once(':') {
                    Some((scheme_and_user, _password)) if scheme_and_user.contains("//") => {
                        write!(f, "{scheme_and_user}:***@{rest}")
                    }
                    _ => f.write_str(url),
                },
                None => f.write_str(url),
            },
        }
    }
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbTarget({self})")
    }
}

/// The connection pool reads go through, on either database. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever database it is: the body is
/// written once and compiled for each (sqlx's query API is the same on both).
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::db::Store::Sqlite($pool) => $body,
            $crate::db::Store::Postgres($pool) => $body,
        }
    };
}
pub use on_pool;

/// Which database a store is, for the few statements written in two dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Store {
    pub fn dialect(&self) -> Dialect {
        match self {
            Store::Sqlite(_) => Dialect::Sqlite,
            Store::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Cheap liveness probe of the database, used by `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }
}

/// Opens (creating a SQLite file if missing) the database and brings its schema up to date.
pub async fn open(target: &DbTarget) -> Result<Store, DbError> {
    open_with(target, BUSY_TIMEOUT).await
}

/// [`open`] with another busy (lock) timeout.
pub async fn open_with(target: &DbTarget, busy_timeout: Duration) -> Result<Store, DbError> {
    match target {
        DbTarget::Sqlite(path) => sqlite::open(path, busy_timeout).await.map(Store::Sqlite),
        DbTarget::Postgres(url) => postgres::open(url, busy_timeout).await.map(Store::Postgres),
    }
}

/// Bytes an unprivileged writer can still use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_is_postgres_and_anything_else_a_file() {
        assert!(matches!(DbTarget::parse("postgres://u:p@h/db"), Ok(DbTarget::Postgres(_))));
        assert!(matches!(DbTarget::parse("postgresql:///db?host=/run/pg"), Ok(DbTarget::Postgres(_))));
        assert_eq!(DbTarget::parse("fleetwave.db"), Ok(DbTarget::Sqlite("fleetwave.db".into())));
        assert_eq!(DbTarget::parse("sqlite:///var/lib/fw.db"), Ok(DbTarget::Sqlite("/var/lib/fw.db".into())));
        assert!(DbTarget::parse("").is_err());
        assert!(DbTarget::parse("postgres://h:notaport/db").is_err());
        assert_eq!(
            DbTarget::parse("postgres://fw:s3cret@db:5432/fw").unwrap().to_string(),
            "postgres://fw:***@db:5432/fw"
        );
    }
}
