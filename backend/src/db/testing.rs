//! Databases for tests: a SQLite file in a temporary directory, or a PostgreSQL database of
//! the test's own, created on the server `FLEETWAVE_TEST_PG` names (`scripts/test` starts
//! one: `scripts/postgres`) and dropped when the test is done.
//!
//! The integration tests run against the database `FLEETWAVE_TEST_DB` names (`sqlite`, the
//! default, or `postgres`): the test command runs them once for each.

use std::path::PathBuf;

use super::DbTarget;

/// The server tests create their databases on (an admin URL: its user may create databases).
pub const SERVER_VAR: &str = "FLEETWAVE_TEST_PG";
/// Which database the integration tests run against.
pub const MATRIX_VAR: &str = "FLEETWAVE_TEST_DB";

/// A database a test owns; gone when dropped.
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir, path: PathBuf },
    Postgres(PgDatabase),
}

impl TestDb {
    /// A fresh SQLite file.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("fleetwave.db");
        TestDb::Sqlite { dir, path }
    }

    /// A fresh PostgreSQL database.
    pub async fn postgres() -> TestDb {
        TestDb::Postgres(PgDatabase::create().await)
    }

    /// A fresh database of the kind `FLEETWAVE_TEST_DB` names.
    pub async fn from_env() -> TestDb {
        match std::env::var(MATRIX_VAR).as_deref() {
            Ok("postgres") => TestDb::postgres().await,
            Ok("sqlite") | Err(_) => TestDb::sqlite(),
            Ok(other) => panic!("{MATRIX_VAR}={other}: expected `sqlite` or `postgres`"),
        }
    }

    pub fn target(&self) -> DbTarget {
        match self {
            TestDb::Sqlite { path, .. } => DbTarget::Sqlite(path.clone()),
            TestDb::Postgres(db) => DbTarget::Postgres(db.url.clone()),
        }
    }

    /// The SQLite file, for the tests that look at one.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            TestDb::Sqlite { path, .. } => Some(path),
            TestDb::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres(_))
    }
}

/// A PostgreSQL database created for one test, dropped when this is dropped.
pub struct PgDatabase {
    pub url: String,
    _scratch: super::postgres::Scratch,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let server = std::env::var(SERVER_VAR).unwrap_or_else(|_| {
            panic!(
                "{SERVER_VAR} is not set: the PostgreSQL tests need a server to create their databases on. \
                 `./scripts/test` starts one (scripts/postgres); by hand: `eval $(scripts/postgres start)`."
            )
        });
        let scratch = super::postgres::Scratch::create(&server, "fw_test")
            .await
            .unwrap_or_else(|e| panic!("{SERVER_VAR}={server}: {e:#}"));
        PgDatabase { url: scratch.url.clone(), _scratch: scratch }
    }
}
