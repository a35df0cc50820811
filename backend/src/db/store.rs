//! Reading and writing control-plane state. The reducer is the only writer: it loads
//! everything once at start ([`load`]) and then writes each group of inputs as one
//! transaction ([`commit`]). Routes read committed rows through the query functions.

use chrono::{DateTime, SecondsFormat, Utc};
use engine::host::HostRecord;
use engine::rollout::Rollout;
use serde::{Deserialize, Serialize};
use shared::api::LogEvent;
use shared::log::LogKind;
use shared::manifest::SignedArtifact;
use shared::state::HostState;
use shared::{Channel, Closure, Hostname, RolloutId};
use sqlx::{Row, SqlitePool};

pub fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(format!("bad timestamp `{s}`: {e}").into()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// An active or released quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineRow {
    pub channel: Channel,
    pub closure: Closure,
    pub reason: String,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_reason: Option<String>,
}

/// Everything the reducer rebuilds its memory from.
#[derive(Debug, Default)]
pub struct Loaded {
    pub fleet: Option<SignedArtifact>,
    pub manifests: Vec<(RolloutId, SignedArtifact)>,
    pub rollouts: Vec<Rollout>,
    /// Records of rollouts that are not terminal.
    pub records: Vec<HostRecord>,
    pub quarantines: Vec<QuarantineRow>,
    pub presence: Vec<(Hostname, DateTime<Utc>, Option<Closure>)>,
    pub last_seq: i64,
}

pub async fn load(pool: &SqlitePool) -> Result<Loaded, sqlx::Error> {
    settle_records(pool).await?;
    let mut loaded = Loaded::default();
    if let Some(row) = sqlx::query("SELECT artifact FROM manifest_fleet WHERE id = 1").fetch_optional(pool).await? {
        loaded.fleet = Some(from_json(row.get::<&str, _>(0))?);
    }
    for row in sqlx::query("SELECT rollout_id, artifact FROM manifest_rollouts ORDER BY accepted, rollout_id")
        .fetch_all(pool)
        .await?
    {
        let id = RolloutId::parse(row.get::<String, _>(0)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        loaded.manifests.push((id, from_json(row.get::<&str, _>(1))?));
    }
    for row in sqlx::query("SELECT body FROM rollouts ORDER BY rollout_id").fetch_all(pool).await? {
        loaded.rollouts.push(from_json(row.get::<&str, _>(0))?);
    }
    let records = sqlx::query(
        "SELECT r.body FROM host_records r JOIN rollouts o USING (rollout_id)
         WHERE o.state NOT IN ('Completed', 'Superseded') ORDER BY r.rollout_id, r.hostname",
    )
    .fetch_all(pool)
    .await?;
    for row in records {
        loaded.records.push(from_json(row.get::<&str, _>(0))?);
    }
    loaded.quarantines = quarantines(pool, 0).await?.into_iter().filter(|q| q.released_at.is_none()).collect();
    for row in
        sqlx::query("SELECT hostname, last_heartbeat_at, current_closure FROM host_presence").fetch_all(pool).await?
    {
        let host = Hostname::parse(row.get::<String, _>(0)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let closure = row.get::<Option<String>, _>(2).and_then(|c| Closure::parse(c).ok());
        loaded.presence.push((host, parse_ts(row.get::<&str, _>(1))?, closure));
    }
    loaded.last_seq = last_seq(pool).await?;
    Ok(loaded)
}

/// Writes into `host_records` the records that only the log's tail holds (the reducer had
/// not written them when it stopped or failed) and moves the snapshot to the log's end, so
/// that memory loaded from the table is the committed state. Records of rollouts that ended
/// meanwhile are among them, and leave memory once loaded.
async fn settle_records(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO host_records (rollout_id, hostname, state, body)
         SELECT rollout_id, hostname, json_extract(payload, '$.record.state'), json_extract(payload, '$.record')
         FROM record_tail WHERE true
         ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(RECORDS_WRITTEN_THROUGH_LOG).execute(&mut *tx).await?;
    tx.commit().await
}

/// Records `host_records` as complete up to the log's last row (the writer after writing every
/// deferred record; a start after writing the log's tail into the table).
pub const RECORDS_WRITTEN_THROUGH_LOG: &str =
    "UPDATE record_snapshot SET seq = (SELECT COALESCE(MAX(seq), 0) FROM event_log)";

pub async fn last_seq(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetch_one(pool).await
}

/// Every active quarantine (oldest first) and the `released` most recently released ones
/// (newest first): released quarantines only accumulate.
pub async fn quarantines(pool: &SqlitePool, released: i64) -> Result<Vec<QuarantineRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM (SELECT channel, closure, reason, by_whom, at, released_at, released_by, release_reason, id
                        FROM quarantines WHERE released_at IS NULL ORDER BY id)
         UNION ALL
         SELECT * FROM (SELECT channel, closure, reason, by_whom, at, released_at, released_by, release_reason, id
                        FROM quarantines WHERE released_at IS NOT NULL ORDER BY id DESC LIMIT ?)",
    )
    .bind(released)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(QuarantineRow {
                channel: Channel::parse(row.get::<String, _>(0)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                closure: Closure::parse(row.get::<String, _>(1)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                reason: row.get(2),
                by: row.get(3),
                at: parse_ts(row.get::<&str, _>(4))?,
                released_at: row.get::<Option<&str>, _>(5).map(parse_ts).transpose()?,
                released_by: row.get(6),
                release_reason: row.get(7),
            })
        })
        .collect()
}

/// One event-log row to append.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub ts: DateTime<Utc>,
    pub kind: LogKind,
    pub rollout_id: Option<RolloutId>,
    pub host: Option<Hostname>,
    pub channel: Option<Channel>,
    pub payload: Payload,
}

/// A host record as written to `host_records`: its JSON is rendered once, by the reducer.
///
/// Records are written behind the log: a change carried whole by a log row
/// (`payload.record`) is written to the table later, with the other records changed since,
/// and readers see the table through the `current_host_records` view, which puts newer log
/// rows over it (migration 0003).
#[derive(Debug)]
pub struct RecordRow {
    pub rollout_id: RolloutId,
    pub hostname: Hostname,
    pub state: &'static str,
    pub body: Payload,
}

impl RecordRow {
    pub fn new(record: &HostRecord) -> RecordRow {
        RecordRow {
            rollout_id: record.rollout_id.clone(),
            hostname: record.hostname.clone(),
            state: record.state.as_str(),
            body: payload(record),
        }
    }
}

/// A log row's payload, rendered to JSON once when the row is made: the same text is stored,
/// sent to feed clients and served by the API.
pub type Payload = Box<serde_json::value::RawValue>;

/// Renders `value` as a payload (`{}` if it cannot be rendered, which our types never do).
pub fn payload(value: &impl Serialize) -> Payload {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_payload())
}

fn empty_payload() -> Payload {
    serde_json::value::RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

pub enum QuarantineChange {
    Add(QuarantineRow),
    Release { channel: Channel, closure: Closure, by: String, reason: String, at: DateTime<Utc> },
}

/// A new verified manifest set, replacing the one in force.
pub struct ManifestWrite {
    pub fleet: SignedArtifact,
    pub fleet_hash: String,
    /// In the order they were accepted, earliest first.
    pub manifests: Vec<(RolloutId, SignedArtifact)>,
    pub at: DateTime<Utc>,
}

/// Everything one group of reducer inputs writes, committed in one transaction.
#[derive(Default)]
pub struct Batch {
    pub manifests: Option<ManifestWrite>,
    pub rollouts: Vec<Rollout>,
    /// Records written now; records whose change a log row of this batch carries are
    /// written later, in bulk (see [`RecordRow`]).
    pub records: Vec<RecordRow>,
    /// Every record is written up to this batch: `record_snapshot` moves to its last seq.
    pub records_through: bool,
    pub quarantines: Vec<QuarantineChange>,
    pub presence: Vec<(Hostname, DateTime<Utc>, Option<Closure>)>,
    pub log: Vec<LogRow>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_none()
            && self.rollouts.is_empty()
            && self.records.is_empty()
            && !self.records_through
            && self.quarantines.is_empty()
            && self.presence.is_empty()
            && self.log.is_empty()
    }
}

fn decode(err: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(err))
}

fn entry_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<LogEvent, sqlx::Error> {
    Ok(LogEvent {
        seq: row.get(0),
        ts: parse_ts(row.get::<&str, _>(1))?,
        kind: row.get::<&str, _>(2).parse().map_err(decode)?,
        rollout_id: row.get::<Option<&str>, _>(3).map(RolloutId::parse).transpose().map_err(decode)?,
        host: row.get::<Option<&str>, _>(4).map(Hostname::parse).transpose().map_err(decode)?,
        channel: row.get::<Option<&str>, _>(5).map(Channel::parse).transpose().map_err(decode)?,
        payload: serde_json::value::RawValue::from_string(row.get::<String, _>(6)).map_err(decode)?,
    })
}

const LOG_COLUMNS: &str = "seq, ts, kind, rollout_id, host, channel, payload";

/// Log entries with seq > `after`, oldest first, at most `limit`.
pub async fn log_after(pool: &SqlitePool, after: i64, limit: i64) -> Result<Vec<LogEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {LOG_COLUMNS} FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?"))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(entry_from_row).collect()
}

/// One rollout's log entries with seq > `after`, oldest first.
pub async fn rollout_log(
    pool: &SqlitePool,
    rollout: &RolloutId,
    after: i64,
    limit: i64,
) -> Result<Vec<LogEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LOG_COLUMNS} FROM event_log WHERE rollout_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    ))
    .bind(rollout.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

/// One rollout's newest `limit` log entries with seq < `before`, oldest first: a page of its
/// log read backwards.
pub async fn rollout_log_before(
    pool: &SqlitePool,
    rollout: &RolloutId,
    before: i64,
    limit: i64,
) -> Result<Vec<LogEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT * FROM (SELECT {LOG_COLUMNS} FROM event_log WHERE rollout_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?) ORDER BY seq"
    ))
    .bind(rollout.as_str())
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

/// Rollouts newest first (by the order they opened): at most `limit`, and only those opened
/// before the rollout `before` when it is given. `None` when `before` names no rollout.
pub async fn rollout_rows(
    pool: &SqlitePool,
    before: Option<&RolloutId>,
    limit: i64,
) -> Result<Option<Vec<Rollout>>, sqlx::Error> {
    let below = match before {
        None => i64::MAX,
        Some(id) => {
            let seq: Option<i64> = sqlx::query_scalar("SELECT opened_seq FROM rollouts WHERE rollout_id = ?")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            let Some(seq) = seq else { return Ok(None) };
            seq
        }
    };
    let rows = sqlx::query("SELECT body FROM rollouts WHERE opened_seq < ? ORDER BY opened_seq DESC LIMIT ?")
        .bind(below)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| from_json(r.get::<&str, _>(0))).collect::<Result<_, _>>().map(Some)
}

/// Each channel's most recently opened rollout (in any state).
pub async fn current_rollouts(pool: &SqlitePool) -> Result<std::collections::BTreeMap<String, RolloutId>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT channel, rollout_id FROM rollouts r
         WHERE opened_seq = (SELECT MAX(opened_seq) FROM rollouts WHERE channel = r.channel)",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let id = RolloutId::parse(row.get::<String, _>(1)).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok((row.get::<String, _>(0), id))
        })
        .collect()
}

/// Whether a rollout with this id was ever opened.
pub async fn rollout_exists(pool: &SqlitePool, id: &RolloutId) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM rollouts WHERE rollout_id = ?")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// A rollout, its records and the log seq they reflect, read in one snapshot.
pub async fn rollout_detail(
    pool: &SqlitePool,
    id: &RolloutId,
) -> Result<Option<(Rollout, Vec<HostRecord>, i64)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let as_of: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetch_one(&mut *tx).await?;
    let Some(row) = sqlx::query("SELECT body FROM rollouts WHERE rollout_id = ?")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let rollout: Rollout = from_json(row.get::<&str, _>(0))?;
    let rows = sqlx::query("SELECT body FROM current_host_records WHERE rollout_id = ? ORDER BY hostname")
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?;
    let records = rows.iter().map(|r| from_json(r.get::<&str, _>(0))).collect::<Result<_, _>>()?;
    tx.commit().await?;
    Ok(Some((rollout, records, as_of)))
}

/// One record as a summary counts it.
pub struct RecordState {
    pub rollout_id: String,
    pub hostname: Hostname,
    pub state: HostState,
    pub stuck: bool,
}

/// The state of every record of the rollouts in `ids` (for summaries: counts per wave).
pub async fn record_states(pool: &SqlitePool, ids: &[RolloutId]) -> Result<Vec<RecordState>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; ids.len()].join(", ");
    let query = format!(
        "SELECT rollout_id, hostname, state, json_extract(body, '$.stuck') FROM current_host_records
         WHERE rollout_id IN ({marks})"
    );
    let mut q = sqlx::query(&query);
    for id in ids {
        q = q.bind(id.as_str());
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let state: &str = r.get(2);
            Ok(RecordState {
                rollout_id: r.get(0),
                hostname: Hostname::parse(r.get::<&str, _>(1)).map_err(decode)?,
                state: serde_json::from_value(serde_json::Value::String(state.to_owned())).map_err(decode)?,
                stuck: r.get::<Option<i64>, _>(3) == Some(1),
            })
        })
        .collect()
}

pub async fn presence(pool: &SqlitePool) -> Result<Vec<(String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT hostname, last_heartbeat_at, current_closure FROM host_presence").fetch_all(pool).await?;
    rows.iter().map(|r| Ok((r.get(0), parse_ts(r.get::<&str, _>(1))?, r.get(2)))).collect()
}

/// A host's non-terminal records in rollouts that are not terminal, by rollout id.
pub async fn open_records_of_host(pool: &SqlitePool, host: &Hostname) -> Result<Vec<HostRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.body FROM current_host_records r JOIN rollouts o USING (rollout_id)
         WHERE r.hostname = ? AND o.state NOT IN ('Completed', 'Superseded')
           AND r.state NOT IN ('Converged', 'Reverted') ORDER BY r.rollout_id",
    )
    .bind(host.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| from_json(r.get::<&str, _>(0))).collect()
}

/// Every record of `host`, in every rollout, newest rollout first.
pub async fn records_of_host(pool: &SqlitePool, host: &Hostname) -> Result<Vec<HostRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.body FROM current_host_records r JOIN rollouts o USING (rollout_id) WHERE r.hostname = ? ORDER BY o.opened_seq DESC",
    )
    .bind(host.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| from_json(r.get::<&str, _>(0))).collect()
}

/// The newest `limit` log entries about `host`, oldest first.
pub async fn host_log(pool: &SqlitePool, host: &Hostname, limit: i64) -> Result<Vec<LogEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT * FROM (SELECT {LOG_COLUMNS} FROM event_log WHERE host = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq"
    ))
    .bind(host.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry_from_row).collect()
}
