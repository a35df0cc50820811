//! Operators and sessions. Tokens are random, shown once, and stored only as SHA-256 hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};

use super::store::{parse_ts, ts};

/// A new random token (`fw_` + 32 random bytes, base64url).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    format!("fw_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored instead of a token.
pub fn token_hash(token: &str) -> String {
    engine::crypto::sha256_hex(token.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and the live feed.
    Viewer,
    /// Reads plus actions.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

pub async fn add_operator(
    pool: &SqlitePool,
    name: &str,
    role: Role,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO operators (name, role, token_hash, created_at) VALUES (?, ?, ?, ?) RETURNING id")
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(ts(now))
        .fetch_one(pool)
        .await
}

fn operator(row: &sqlx::sqlite::SqliteRow) -> Option<Operator> {
    Some(Operator { id: row.get(0), name: row.get(1), role: Role::parse(row.get::<&str, _>(2))? })
}

pub async fn operator_by_token(pool: &SqlitePool, token_hash: &str) -> Result<Option<Operator>, sqlx::Error> {
    let row = sqlx::query("SELECT id, name, role FROM operators WHERE token_hash = ? AND revoked_at IS NULL")
        .bind(token_hash)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().and_then(operator))
}

pub async fn create_session(
    pool: &SqlitePool,
    token_hash: &str,
    operator_id: i64,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // Expired sessions go when a new one comes: the table holds live sessions only, however
    // often people sign in.
    sqlx::query("DELETE FROM sessions WHERE expires_at <= ?").bind(ts(now)).execute(pool).await?;
    sqlx::query("INSERT INTO sessions (token_hash, operator_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
        .bind(token_hash)
        .bind(operator_id)
        .bind(ts(now))
        .bind(ts(expires))
        .execute(pool)
        .await
        .map(|_| ())
}

pub async fn operator_by_session(
    pool: &SqlitePool,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<Operator>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT o.id, o.name, o.role, s.expires_at FROM sessions s JOIN operators o ON o.id = s.operator_id
         WHERE s.token_hash = ? AND o.revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if parse_ts(row.get::<&str, _>(3))? <= now {
        return Ok(None);
    }
    Ok(operator(&row))
}

pub async fn delete_session(pool: &SqlitePool, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = ?").bind(token_hash).execute(pool).await.map(|_| ())
}

/// One operator as `fleetwave operator list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorListing {
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub live_sessions: i64,
}

pub async fn list_operators(pool: &SqlitePool, now: DateTime<Utc>) -> Result<Vec<OperatorListing>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.name, o.role, o.created_at, o.revoked_at,
                (SELECT COUNT(*) FROM sessions s WHERE s.operator_id = o.id AND s.expires_at > ?)
         FROM operators o ORDER BY o.name",
    )
    .bind(ts(now))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| OperatorListing {
            name: r.get(0),
            role: r.get(1),
            created_at: r.get(2),
            revoked_at: r.get(3),
            live_sessions: r.get(4),
        })
        .collect())
}

/// Revokes `name`'s token and ends its sessions. False if there is no such operator, or it
/// was revoked already.
pub async fn revoke_operator(pool: &SqlitePool, name: &str, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> =
        sqlx::query_scalar("UPDATE operators SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING id")
            .bind(ts(now))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(id) = id else { return Ok(false) };
    sqlx::query("DELETE FROM sessions WHERE operator_id = ?").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}
