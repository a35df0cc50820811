//! Operators and sessions. Tokens are random, shown once, and stored only as SHA-256 hashes.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};

use super::store::{parse_ts, ts};

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
    let row = sqlx::query("SELECT id, name, role FROM operators WHERE token_hash = ?")
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
        "SELECT o.id, o.name, o.role, s.expires_at FROM sessions s JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = ?",
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
