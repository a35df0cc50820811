//! Operators and sessions. Tokens are random, shown once, and stored only as SHA-256 hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::store::{parse_ts, ts};
use super::{Store, on_pool};

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
    store: &Store,
    name: &str,
    role: Role,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    on_pool!(store, pool => {
        sqlx::query_scalar(
            "INSERT INTO operators (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(ts(now))
        .fetch_one(pool)
        .await
    })
}

fn operator((id, name, role): (i64, String, String)) -> Option<Operator> {
    Some(Operator { id, name, role: Role::parse(&role)? })
}

pub async fn operator_by_token(store: &Store, token_hash: &str) -> Result<Option<Operator>, sqlx::Error> {
    let row = on_pool!(store, pool => {
        sqlx::query_as("SELECT id, name, role FROM operators WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token_hash)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.and_then(operator))
}

pub async fn create_session(
    store: &Store,
    token_hash: &str,
    operator_id: i64,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    on_pool!(store, pool => {
        // Expired sessions go when a new one comes: the table holds live sessions only,
        // however often people sign in.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(ts(now)).execute(pool).await?;
        sqlx::query("INSERT INTO sessions (token_hash, operator_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(operator_id)
            .bind(ts(now))
            .bind(ts(expires))
            .execute(pool)
            .await
            .map(|_| ())
    })
}

pub async fn operator_by_session(
    store: &Store,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<Operator>, sqlx::Error> {
    let row: Option<(i64, String, String, String)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT o.id, o.name, o.role, s.expires_at FROM sessions s JOIN operators o ON o.id = s.operator_id
         WHERE s.token_hash = $1 AND o.revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await)?;
    let Some((id, name, role, expires_at)) = row else { return Ok(None) };
    if parse_ts(&expires_at)? <= now {
        return Ok(None);
    }
    Ok(operator((id, name, role)))
}

pub async fn delete_session(store: &Store, token_hash: &str) -> Result<(), sqlx::Error> {
    on_pool!(store, pool => {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(pool).await.map(|_| ())
    })
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

pub async fn list_operators(store: &Store, now: DateTime<Utc>) -> Result<Vec<OperatorListing>, sqlx::Error> {
    let rows: Vec<(String, String, String, Option<String>, i64)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT o.name, o.role, o.created_at, o.revoked_at,
                (SELECT COUNT(*) FROM sessions s WHERE s.operator_id = o.id AND s.expires_at > $1)
         FROM operators o ORDER BY o.name",
    )
    .bind(ts(now))
    .fetch_all(pool)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(name, role, created_at, revoked_at, live_sessions)| OperatorListing {
            name,
            role,
            created_at,
            revoked_at,
            live_sessions,
        })
        .collect())
}

/// Revokes `name`'s token and ends its sessions. False if there is no such operator, or it
/// was revoked already.
pub async fn revoke_operator(store: &Store, name: &str, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE operators SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(ts(now))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else { return Ok(false) };
        sqlx::query("DELETE FROM sessions WHERE operator_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    })
}
