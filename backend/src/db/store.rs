//! Reading and writing control-plane state, on either database. The reducer is the only
//! writer: it loads everything once at start ([`load`]) and then writes each group of inputs
//! as one transaction (a [`Batch`], through the [`super::writer::Writer`]). Routes read
//! committed rows through the query functions. Each query is written once (`$n` parameters,
//! which both databases take) and runs on either pool; the two that look into JSON have a
//! dialect each.

use super::{Dialect, Store, on_pool};
use chrono::{DateTime, SecondsFormat, Utc};
use engine::host::HostRecord;
use engine::rollout::Rollout;
use serde::{Deserialize, Serialize};
use shared::api::LogEvent;
use shared::log::LogKind;
use shared::manifest::SignedArtifact;
use shared::policy::OperatorPolicies;
use shared::state::HostState;
use shared::{Channel, Closure, Hostname, RolloutId};

pub fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(format!("bad timestamp `{s}`: {e}").into()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
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
    pub policies: OperatorPolicies,
    pub presence: Vec<(Hostname, DateTime<Utc>, Option<Closure>)>,
    pub last_seq: i64,
    /// Signatures of agent writes accepted earlier and still live (key, expiry second).
    pub signatures: Vec<(crate::signatures::SignatureKey, i64)>,
}

/// The operators' freezes and suspended hosts as last committed (SPEC §17).
pub async fn policies(store: &Store) -> Result<OperatorPolicies, sqlx::Error> {
    let body: Option<String> = on_pool!(store, pool => {
        sqlx::query_scalar("SELECT body FROM policies WHERE id = 1").fetch_optional(pool).await?
    });
    body.map_or_else(|| Ok(OperatorPolicies::default()), |body| from_json(&body))
}

/// The hash of the fleet in force, if one is.
pub async fn fleet_hash(store: &Store) -> Result<Option<String>, sqlx::Error> {
    on_pool!(store, pool => {
        sqlx::query_scalar("SELECT fleet_hash FROM manifest_fleet WHERE id = 1").fetch_optional(pool).await
    })
}

/// Makes a PostgreSQL transaction read one snapshot throughout (SQLite's does from its first
/// read on).
pub(crate) const SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// The manifest set in force as stored: the fleet artifact and the manifests in acceptance
/// order. None before the first set was accepted.
pub async fn manifest_set(
    store: &Store,
) -> Result<Option<(SignedArtifact, Vec<(RolloutId, SignedArtifact)>)>, sqlx::Error> {
    let (fleet, manifests): (Option<(String,)>, Vec<(String, String)>) = on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        if store.dialect() == Dialect::Postgres {
            sqlx::query(SNAPSHOT).execute(&mut *tx).await?;
        }
        let fleet = sqlx::query_as("SELECT artifact FROM manifest_fleet WHERE id = 1").fetch_optional(&mut *tx).await?;
        let manifests =
            sqlx::query_as("SELECT rollout_id, artifact FROM manifest_rollouts ORDER BY accepted, rollout_id")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        (fleet, manifests)
    });
    let Some((fleet,)) = fleet else { return Ok(None) };
    let manifests = manifests
        .into_iter()
        .map(|(id, artifact)| Ok((RolloutId::parse(id).map_err(decode)?, from_json(&artifact)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some((from_json(&fleet)?, manifests)))
}

/// Writes into `host_records` the records that only the log's tail holds (the reducer had
/// not written them when it stopped or failed) and moves the snapshot to the log's end, so
/// that memory loaded from the table is the committed state. Records of rollouts that ended
/// meanwhile are among them, and leave memory once loaded.
pub(super) async fn settle_records(store: &Store) -> Result<(), sqlx::Error> {
    let settle = match store.dialect() {
        Dialect::Sqlite => {
            "INSERT INTO host_records (rollout_id, hostname, state, body)
             SELECT rollout_id, hostname, state, json_extract(payload, '$.record')
             FROM record_tail WHERE true
             ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body"
        }
        Dialect::Postgres => {
            "INSERT INTO host_records (rollout_id, hostname, state, body)
             SELECT rollout_id, hostname, state, record
             FROM record_tail
             ON CONFLICT (rollout_id, hostname) DO UPDATE SET state = excluded.state, body = excluded.body"
        }
    };
    on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(settle).execute(&mut *tx).await?;
        sqlx::query(RECORDS_WRITTEN_THROUGH_LOG).execute(&mut *tx).await?;
        tx.commit().await
    })
}

/// Records `host_records` as complete up to the log's last row (the writer after writing every
/// deferred record; a start after writing the log's tail into the table).
pub const RECORDS_WRITTEN_THROUGH_LOG: &str =
    "UPDATE record_snapshot SET seq = (SELECT COALESCE(MAX(seq), 0) FROM event_log)";

/// Stored signatures of agent writes that expire at `now` or later (each with the expiry of
/// the transaction that stored it: the latest of its keys').
pub async fn signatures(store: &Store, now: i64) -> Result<Vec<(crate::signatures::SignatureKey, i64)>, sqlx::Error> {
    let rows: Vec<(i64, Vec<u8>)> = on_pool!(store, pool => {
        sqlx::query_as("SELECT expires_at, keys FROM agent_signatures WHERE expires_at >= $1").bind(now).fetch_all(pool).await
    })?;
    Ok(rows
        .iter()
        .flat_map(|(expires, keys)| {
            keys.chunks_exact(16).filter_map(|key| Some((u128::from_le_bytes(key.try_into().ok()?), *expires)))
        })
        .collect())
}

/// The stored form of a batch's signatures: the keys concatenated, and the latest expiry.
pub fn signature_row(signatures: &[(crate::signatures::SignatureKey, i64)]) -> (Vec<u8>, i64) {
    let keys = signatures.iter().flat_map(|(key, _)| key.to_le_bytes()).collect();
    (keys, signatures.iter().map(|(_, expires)| *expires).max().unwrap_or(0))
}

pub async fn last_seq(store: &Store) -> Result<i64, sqlx::Error> {
    on_pool!(store, pool => sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetch_one(pool).await)
}

/// A quarantine row's columns, as [`QUARANTINE_COLUMNS`] lists them.
pub(crate) type QuarantineColumns =
    (String, String, String, String, String, Option<String>, Option<String>, Option<String>, i64);

/// The columns [`quarantine_row`] reads.
pub(crate) const QUARANTINE_COLUMNS: &str =
    "channel, closure, reason, by_whom, at, released_at, released_by, release_reason, id";

/// A quarantine row as stored.
pub(crate) fn quarantine_row(columns: QuarantineColumns) -> Result<QuarantineRow, sqlx::Error> {
    let (channel, closure, reason, by, at, released_at, released_by, release_reason, _) = columns;
    Ok(QuarantineRow {
        channel: Channel::parse(channel).map_err(decode)?,
        closure: Closure::parse(closure).map_err(decode)?,
        reason,
        by,
        at: parse_ts(&at)?,
        released_at: released_at.as_deref().map(parse_ts).transpose()?,
        released_by,
        release_reason,
    })
}

/// Every active quarantine (oldest first) and the `released` most recently released ones
/// (newest first): released quarantines only accumulate.
pub async fn quarantines(store: &Store, released: i64) -> Result<Vec<QuarantineRow>, sqlx::Error> {
    let sql = format!(
        "SELECT * FROM (SELECT {QUARANTINE_COLUMNS} FROM quarantines WHERE released_at IS NULL ORDER BY id) AS active
         UNION ALL
         SELECT * FROM (SELECT {QUARANTINE_COLUMNS}
                        FROM quarantines WHERE released_at IS NOT NULL ORDER BY id DESC LIMIT $1) AS released"
    );
    let rows: Vec<QuarantineColumns> =
        on_pool!(store, pool => sqlx::query_as(&sql).bind(released).fetch_all(pool).await)?;
    rows.into_iter().map(quarantine_row).collect()
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
    /// The state of the record the payload carries whole (`payload.record`), if it carries
    /// one: stored beside the payload so the records view finds and filters its tail without
    /// parsing payloads.
    pub record_state: Option<HostState>,
}

impl LogRow {
    /// The row as committed under `seq`.
    pub fn committed(self, seq: i64) -> LogEvent {
        LogEvent {
            seq,
            ts: self.ts,
            kind: self.kind,
            rollout_id: self.rollout_id,
            host: self.host,
            channel: self.channel,
            payload: self.payload,
        }
    }
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

/// A host's `host_presence` row: its last heartbeat and what it said it runs and booted.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRow {
    pub host: Hostname,
    pub at: DateTime<Utc>,
    pub closure: Option<Closure>,
    pub booted: Option<Closure>,
}

/// Everything one group of reducer inputs writes, committed in one transaction. Rollouts,
/// records and presence each name a key at most once (PostgreSQL's array upserts need it;
/// the reducer builds them from sets).
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
    /// The operators' policies, when they changed: replace the stored document (JSON).
    pub policies: Option<String>,
    pub presence: Vec<PresenceRow>,
    pub log: Vec<LogRow>,
    /// Signatures of the agent writes in this batch (or accepted before it), to store; and,
    /// now and then, the unix second before which stored ones have expired and go.
    pub signatures: Vec<(crate::signatures::SignatureKey, i64)>,
    pub signatures_expire_before: Option<i64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_none()
            && self.rollouts.is_empty()
            && self.records.is_empty()
            && !self.records_through
            && self.quarantines.is_empty()
            && self.policies.is_none()
            && self.presence.is_empty()
            && self.log.is_empty()
            && self.signatures.is_empty()
    }
}

pub(crate) fn decode(err: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(err))
}

/// A record's `state` column.
fn host_state(name: &str) -> Result<HostState, sqlx::Error> {
    HostState::from_name(name).ok_or_else(|| decode(std::io::Error::other(format!("unknown host state {name:?}"))))
}

/// A log row as both databases return it.
#[derive(sqlx::FromRow)]
struct LogColumns {
    seq: i64,
    ts: String,
    kind: String,
    rollout_id: Option<String>,
    host: Option<String>,
    channel: Option<String>,
    payload: String,
}

impl TryFrom<LogColumns> for LogEvent {
    type Error = sqlx::Error;

    fn try_from(row: LogColumns) -> Result<LogEvent, sqlx::Error> {
        Ok(LogEvent {
            seq: row.seq,
            ts: parse_ts(&row.ts)?,
            kind: row.kind.parse().map_err(decode)?,
            rollout_id: row.rollout_id.map(RolloutId::parse).transpose().map_err(decode)?,
            host: row.host.map(Hostname::parse).transpose().map_err(decode)?,
            channel: row.channel.map(Channel::parse).transpose().map_err(decode)?,
            payload: serde_json::value::RawValue::from_string(row.payload).map_err(decode)?,
        })
    }
}

fn log_events(rows: Vec<LogColumns>) -> Result<Vec<LogEvent>, sqlx::Error> {
    rows.into_iter().map(LogEvent::try_from).collect()
}

fn bodies<T: serde::de::DeserializeOwned>(rows: Vec<(String,)>) -> Result<Vec<T>, sqlx::Error> {
    rows.iter().map(|(body,)| from_json(body)).collect()
}

const LOG_COLUMNS: &str = "seq, ts, kind, rollout_id, host, channel, payload";

/// Log entries with seq > `after`, oldest first, at most `limit`.
pub async fn log_after(store: &Store, after: i64, limit: i64) -> Result<Vec<LogEvent>, sqlx::Error> {
    let sql = format!("SELECT {LOG_COLUMNS} FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2");
    log_events(on_pool!(store, pool => sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await)?)
}

/// The signed manifest in force of rollout `id`, as accepted.
pub async fn manifest_artifact(store: &Store, id: &RolloutId) -> Result<Option<SignedArtifact>, sqlx::Error> {
    let sql = "SELECT artifact FROM manifest_rollouts WHERE rollout_id = $1";
    let row: Option<String> =
        on_pool!(store, pool => sqlx::query_scalar(sql).bind(id.as_str()).fetch_optional(pool).await)?;
    row.as_deref().map(from_json).transpose()
}

/// Where the webhook `name`'s deliveries stand: the last seq delivered or passed over.
pub async fn webhook_cursor(store: &Store, name: &str) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT seq FROM webhook_cursors WHERE name = $1";
    on_pool!(store, pool => sqlx::query_scalar(sql).bind(name).fetch_optional(pool).await)
}

pub async fn set_webhook_cursor(store: &Store, name: &str, seq: i64, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO webhook_cursors (name, seq, updated_at) VALUES ($1, $2, $3) \
               ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at";
    on_pool!(store, pool => sqlx::query(sql).bind(name).bind(seq).bind(ts(at)).execute(pool).await.map(|_| ()))
}

/// The `kind IN (…)` condition of the audited kinds, as the partial index `event_log_audit`
/// writes it.
pub fn audited_kinds_condition() -> String {
    let kinds: Vec<String> = LogKind::AUDITED.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("kind IN ({})", kinds.join(", "))
}

/// The condition the partial index `event_log_progress` is defined with (see
/// [`LogKind::PROGRESS`]).
pub fn progress_kinds_condition() -> String {
    let kinds: Vec<String> = LogKind::PROGRESS.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("kind IN ({})", kinds.join(", "))
}

/// A rollout's entries of [`LogKind::PROGRESS`] kinds, oldest first (through the partial
/// index: a rollout of 10,000 hosts has a few dozen of them among tens of thousands).
pub async fn rollout_progress(store: &Store, rollout: &RolloutId) -> Result<Vec<LogEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM event_log WHERE {} AND rollout_id = $1 ORDER BY seq",
        progress_kinds_condition()
    );
    log_events(on_pool!(store, pool => sqlx::query_as(&sql).bind(rollout.as_str()).fetch_all(pool).await)?)
}

/// Audited entries (what people did) with seq > `after` and `from` ≤ ts < `to`, oldest first,
/// at most `limit`.
pub async fn audit_page(
    store: &Store,
    after: i64,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<LogEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM event_log WHERE {} AND seq > $1 AND ts >= $2 AND ts < $3 ORDER BY seq LIMIT $4",
        audited_kinds_condition()
    );
    // Timestamps are stored in one fixed format (`ts`), so they compare as text.
    let from = from.map(ts).unwrap_or_default();
    let to = to.map(ts).unwrap_or_else(|| "9".into());
    log_events(on_pool!(store, pool => {
        sqlx::query_as(&sql).bind(after).bind(&from).bind(&to).bind(limit).fetch_all(pool).await
    })?)
}

/// `count` numbered parameters from `$from` on, comma-separated: the list of an `IN (…)`.
pub(crate) fn marks(from: usize, count: usize) -> String {
    (from..from + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A column the log is looked up by (through `log_keys`, see [`keyed_seqs`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum LogKey {
    Rollout,
    Host,
}

impl LogKey {
    fn column(self) -> &'static str {
        match self {
            LogKey::Rollout => "rollout_id",
            LogKey::Host => "host",
        }
    }
}

/// Which end of a log lookup [`keyed_seqs`] starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LogEnd {
    Oldest,
    Newest,
}

impl LogEnd {
    fn sql(self) -> &'static str {
        match self {
            LogEnd::Oldest => "ASC",
            LogEnd::Newest => "DESC",
        }
    }
}

/// A subquery giving the seqs of the log entries whose `key` is `value` (an SQL expression)
/// and whose seq meets `range` (a condition on `seq`), the first `limit` of them from `from`. On SQLite the keys are copied into the table `log_keys` behind the log
/// (migration 0019) and the rows not copied yet are the tail after its last seq, read by seq;
/// on PostgreSQL `log_keys` is a view of the log's own indexed columns and that tail is empty.
/// Use it as `seq IN (…)` and order and limit again outside.
pub(crate) fn keyed_seqs(key: LogKey, value: &str, range: &str, from: LogEnd, limit: &str) -> String {
    let (column, order) = (key.column(), from.sql());
    format!(
        "SELECT seq FROM (SELECT seq FROM log_keys WHERE {column} = {value} AND {range} ORDER BY seq {order} LIMIT {limit}) AS keyed
         UNION ALL
         SELECT seq FROM (SELECT seq FROM event_log
                          WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM log_keys) AND {column} = {value} AND {range}
                          ORDER BY seq {order} LIMIT {limit}) AS tail"
    )
}

/// One rollout's log entries with seq > `after`, oldest first.
pub async fn rollout_log(
    store: &Store,
    rollout: &RolloutId,
    after: i64,
    limit: i64,
) -> Result<Vec<LogEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM event_log WHERE seq IN ({}) ORDER BY seq LIMIT $3",
        keyed_seqs(LogKey::Rollout, "$1", "seq > $2", LogEnd::Oldest, "$3")
    );
    log_events(on_pool!(store, pool => {
        sqlx::query_as(&sql).bind(rollout.as_str()).bind(after).bind(limit).fetch_all(pool).await
    })?)
}

/// The seq of a rollout's first log entry (its opening), if it has one.
pub async fn rollout_start(store: &Store, rollout: &RolloutId) -> Result<Option<(i64, LogKind)>, sqlx::Error> {
    let sql = format!(
        "SELECT seq, kind FROM event_log WHERE seq IN ({}) ORDER BY seq LIMIT 1",
        keyed_seqs(LogKey::Rollout, "$1", "true", LogEnd::Oldest, "1")
    );
    let row: Option<(i64, String)> = on_pool!(store, pool => {
        sqlx::query_as(&sql).bind(rollout.as_str()).fetch_optional(pool).await?
    });
    row.map(|(seq, kind)| Ok((seq, kind.parse().map_err(decode)?))).transpose()
}

/// One rollout's newest `limit` log entries with seq < `before`, oldest first: a page of its
/// log read backwards.
pub async fn rollout_log_before(
    store: &Store,
    rollout: &RolloutId,
    before: i64,
    limit: i64,
) -> Result<Vec<LogEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT * FROM (SELECT {LOG_COLUMNS} FROM event_log WHERE seq IN ({}) ORDER BY seq DESC LIMIT $3) AS page ORDER BY seq",
        keyed_seqs(LogKey::Rollout, "$1", "seq < $2", LogEnd::Newest, "$3")
    );
    log_events(on_pool!(store, pool => {
        sqlx::query_as(&sql).bind(rollout.as_str()).bind(before).bind(limit).fetch_all(pool).await
    })?)
}

/// Rollouts newest first (by the order they opened), of one channel or all: at most `limit`,
/// and only those opened before the rollout `before` when it is given. `None` when `before`
/// names no rollout (of the channel).
pub async fn rollout_rows(
    store: &Store,
    channel: Option<&Channel>,
    before: Option<&RolloutId>,
    limit: i64,
) -> Result<Option<Vec<Rollout>>, sqlx::Error> {
    let channel = channel.map(Channel::as_str);
    let below = match before {
        None => i64::MAX,
        Some(id) => {
            let seq: Option<i64> = on_pool!(store, pool => {
                sqlx::query_scalar("SELECT opened_seq FROM rollouts WHERE rollout_id = $1 AND channel = COALESCE($2, channel)")
                    .bind(id.as_str())
                    .bind(channel)
                    .fetch_optional(pool)
                    .await
            })?;
            let Some(seq) = seq else { return Ok(None) };
            seq
        }
    };
    let rows = on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT body FROM rollouts WHERE opened_seq < $1 AND channel = COALESCE($3, channel)
             ORDER BY opened_seq DESC LIMIT $2",
        )
        .bind(below)
        .bind(limit)
        .bind(channel)
        .fetch_all(pool)
        .await
    })?;
    bodies(rows).map(Some)
}

/// Each channel's most recently opened rollout (in any state).
pub async fn current_rollouts(store: &Store) -> Result<std::collections::BTreeMap<String, RolloutId>, sqlx::Error> {
    let rows: Vec<(String, String)> = on_pool!(store, pool => sqlx::query_as(
        "SELECT channel, rollout_id FROM rollouts r
         WHERE opened_seq = (SELECT MAX(opened_seq) FROM rollouts WHERE channel = r.channel)",
    )
    .fetch_all(pool)
    .await)?;
    rows.into_iter().map(|(channel, id)| Ok((channel, RolloutId::parse(id).map_err(decode)?))).collect()
}

/// Whether a rollout with this id was ever opened.
pub async fn rollout_exists(store: &Store, id: &RolloutId) -> Result<bool, sqlx::Error> {
    let found: Option<(String,)> = on_pool!(store, pool => {
        sqlx::query_as("SELECT rollout_id FROM rollouts WHERE rollout_id = $1").bind(id.as_str()).fetch_optional(pool).await
    })?;
    Ok(found.is_some())
}

/// What an ended rollout's records said once retention replaced them (SPEC §16): its hosts
/// counted by state per wave (the waves first, then "unstaged"), and its stuck hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub waves: Vec<shared::api::WaveCounts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<Hostname>,
}

/// A rollout and what its hosts did, read in one snapshot: its records, or its tally once
/// retention replaced them; with the log seq they reflect.
pub struct RolloutRows<R> {
    pub rollout: Rollout,
    /// In no particular order; empty once the rollout is tallied.
    pub records: Vec<R>,
    pub tally: Option<Tally>,
    pub as_of: i64,
}

/// A rollout, its records (or tally) and the log seq they reflect, read in one snapshot. The
/// records are read as `R`: the whole [`HostRecord`], or only what the caller shows (the
/// dashboard's [`shared::api::HostCell`]: at 100,000 records, reading whole ones was a third
/// of the answer). They come unsorted: sorting 100,000 rows of text in SQL took longer than
/// the caller's sort of what it keeps.
pub async fn rollout_detail<R: serde::de::DeserializeOwned>(
    store: &Store,
    id: &RolloutId,
) -> Result<Option<RolloutRows<R>>, sqlx::Error> {
    let (as_of, rollout, tally, records) = on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        if store.dialect() == Dialect::Postgres {
            sqlx::query(SNAPSHOT).execute(&mut *tx).await?;
        }
        let as_of: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetch_one(&mut *tx).await?;
        let rollout: Option<(String,)> = sqlx::query_as("SELECT body FROM rollouts WHERE rollout_id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let tally: Option<String> = sqlx::query_scalar("SELECT body FROM rollout_tallies WHERE rollout_id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let records: Vec<(String,)> = match (&rollout, &tally) {
            (Some(_), None) => {
                sqlx::query_as("SELECT body FROM current_host_records WHERE rollout_id = $1")
                    .bind(id.as_str())
                    .fetch_all(&mut *tx)
                    .await?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        (as_of, rollout, tally, records)
    });
    let Some((rollout,)) = rollout else { return Ok(None) };
    Ok(Some(RolloutRows {
        rollout: from_json(&rollout)?,
        records: bodies(records)?,
        tally: tally.as_deref().map(from_json).transpose()?,
        as_of,
    }))
}

/// One record as a summary counts it.
pub struct RecordState {
    pub rollout_id: String,
    pub hostname: Hostname,
    pub state: HostState,
    pub stuck: bool,
}

/// What the hosts of the rollouts in `ids` did, for summaries, read in one snapshot: the
/// tallies of those retention tallied, by rollout id, and the state of every record of the
/// others.
pub async fn rollout_hosts(
    store: &Store,
    ids: &[RolloutId],
) -> Result<(std::collections::BTreeMap<String, Tally>, Vec<RecordState>), sqlx::Error> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let stuck = match store.dialect() {
        Dialect::Sqlite => "COALESCE(json_extract(body, '$.stuck'), 0)",
        Dialect::Postgres => "CASE WHEN body::json ->> 'stuck' = 'true' THEN 1 ELSE 0 END::int8",
    };
    let tallies_sql =
        format!("SELECT rollout_id, body FROM rollout_tallies WHERE rollout_id IN ({})", marks(1, ids.len()));
    let (tallies, rows) = on_pool!(store, pool => async {
        let mut tx = pool.begin().await?;
        if store.dialect() == Dialect::Postgres {
            sqlx::query(SNAPSHOT).execute(&mut *tx).await?;
        }
        let mut q = sqlx::query_as(&tallies_sql);
        for id in ids {
            q = q.bind(id.as_str());
        }
        let tallies: Vec<(String, String)> = q.fetch_all(&mut *tx).await?;
        let counted: Vec<&RolloutId> =
            ids.iter().filter(|id| !tallies.iter().any(|(t, _)| t == id.as_str())).collect();
        let mut rows: Vec<(String, String, String, i64)> = Vec::new();
        if !counted.is_empty() {
            let sql = format!(
                "SELECT rollout_id, hostname, state, {stuck} FROM current_host_records WHERE rollout_id IN ({})",
                marks(1, counted.len())
            );
            let mut q = sqlx::query_as(&sql);
            for id in counted {
                q = q.bind(id.as_str());
            }
            rows = q.fetch_all(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>((tallies, rows))
    }
    .await)?;
    let tallies =
        tallies.into_iter().map(|(id, body)| Ok((id, from_json(&body)?))).collect::<Result<_, sqlx::Error>>()?;
    let states = rows
        .into_iter()
        .map(|(rollout_id, hostname, state, stuck)| {
            Ok(RecordState {
                rollout_id,
                hostname: Hostname::parse(hostname).map_err(decode)?,
                state: host_state(&state)?,
                stuck: stuck == 1,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((tallies, states))
}

pub async fn presence(store: &Store) -> Result<Vec<(String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> = on_pool!(store, pool => {
        sqlx::query_as("SELECT hostname, last_heartbeat_at, current_closure FROM host_presence").fetch_all(pool).await
    })?;
    rows.into_iter().map(|(host, at, closure)| Ok((host, parse_ts(&at)?, closure))).collect()
}

/// A host's non-terminal records in rollouts that are not terminal, by rollout id.
pub async fn open_records_of_host(store: &Store, host: &Hostname) -> Result<Vec<HostRecord>, sqlx::Error> {
    bodies(on_pool!(store, pool => sqlx::query_as(
        "SELECT r.body FROM current_host_records r JOIN rollouts o USING (rollout_id)
         WHERE r.hostname = $1 AND o.state NOT IN ('Completed', 'Superseded')
           AND r.state NOT IN ('Converged', 'Reverted') ORDER BY r.rollout_id",
    )
    .bind(host.as_str())
    .fetch_all(pool)
    .await)?)
}

/// Every record of `host`, in every rollout, newest rollout first.
pub async fn records_of_host(store: &Store, host: &Hostname) -> Result<Vec<HostRecord>, sqlx::Error> {
    bodies(on_pool!(store, pool => sqlx::query_as(
        "SELECT r.body FROM current_host_records r JOIN rollouts o USING (rollout_id) WHERE r.hostname = $1 ORDER BY o.opened_seq DESC",
    )
    .bind(host.as_str())
    .fetch_all(pool)
    .await)?)
}

/// The newest `limit` log entries about `host`, oldest first.
pub async fn host_log(store: &Store, host: &Hostname, limit: i64) -> Result<Vec<LogEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT * FROM (SELECT {LOG_COLUMNS} FROM event_log WHERE seq IN ({}) ORDER BY seq DESC LIMIT $2) AS page ORDER BY seq",
        keyed_seqs(LogKey::Host, "$1", "true", LogEnd::Newest, "$2")
    );
    log_events(on_pool!(store, pool => sqlx::query_as(&sql).bind(host.as_str()).bind(limit).fetch_all(pool).await)?)
}

/// `(rollout, hostname, state)` of the records whose host is in `hosts` and whose rollout is
/// in `rollouts` (with `state`: only records in it). `hosts` empty means every host.
pub async fn record_states_of(
    store: &Store,
    rollouts: &[&RolloutId],
    hosts: &[&str],
    state: Option<HostState>,
) -> Result<Vec<(String, String, HostState)>, sqlx::Error> {
    if rollouts.is_empty() {
        return Ok(Vec::new());
    }
    let sql = record_states_query(rollouts.len(), hosts.len(), state.is_some());
    let rows = on_pool!(store, pool => {
        let mut q = sqlx::query_as(&sql);
        for id in rollouts {
            q = q.bind(id.as_str());
        }
        for host in hosts {
            q = q.bind(*host);
        }
        if let Some(state) = state {
            q = q.bind(state.as_str());
        }
        q.fetch_all(pool).await
    });
    let rows: Vec<(String, String, String)> = rows?;
    rows.into_iter().map(|(rollout, host, state)| Ok((rollout, host, host_state(&state)?))).collect()
}

/// [`record_states_of`]'s statement for `rollouts` rollout ids and `hosts` hostnames (0: any
/// host), with a state to match or not.
pub fn record_states_query(rollouts: usize, hosts: usize, state: bool) -> String {
    let mut sql = format!(
        "SELECT rollout_id, hostname, state FROM current_host_records WHERE rollout_id IN ({})",
        marks(1, rollouts)
    );
    if hosts > 0 {
        sql.push_str(&format!(" AND hostname IN ({})", marks(rollouts + 1, hosts)));
    }
    if state {
        sql.push_str(&format!(" AND state = ${}", rollouts + hosts + 1));
    }
    sql
}

/// The hosts whose last heartbeat named a closure containing `text`.
pub async fn hosts_running(store: &Store, text: &str) -> Result<Vec<String>, sqlx::Error> {
    let contains = match store.dialect() {
        Dialect::Sqlite => "instr(current_closure, $1) > 0",
        Dialect::Postgres => "strpos(current_closure, $1) > 0",
    };
    let sql = format!("SELECT hostname FROM host_presence WHERE {contains}");
    on_pool!(store, pool => sqlx::query_scalar(&sql).bind(text).fetch_all(pool).await)
}

/// The presence rows of each of `hosts` that ever sent a heartbeat.
pub async fn presence_of(store: &Store, hosts: &[&str]) -> Result<Vec<PresenceRow>, sqlx::Error> {
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT hostname, last_heartbeat_at, current_closure, booted_closure FROM host_presence WHERE hostname IN ({})",
        marks(1, hosts.len())
    );
    let rows: Vec<(String, String, Option<String>, Option<String>)> = on_pool!(store, pool => {
        let mut q = sqlx::query_as(&sql);
        for host in hosts {
            q = q.bind(*host);
        }
        q.fetch_all(pool).await
    })?;
    rows.into_iter()
        .map(|(host, at, closure, booted)| {
            Ok(PresenceRow {
                host: Hostname::parse(host).map_err(decode)?,
                at: parse_ts(&at)?,
                closure: closure.and_then(|c| Closure::parse(c).ok()),
                booted: booted.and_then(|c| Closure::parse(c).ok()),
            })
        })
        .collect()
}
