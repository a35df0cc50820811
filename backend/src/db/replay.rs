//! Re-deriving rollout and record rows, and the operators' policies, from the event log (SPEC
//! §8). Every log entry that changes a record or a rollout carries the whole new state
//! (`payload.record`, `payload.rollout`), `RolloutOpened` carries the host set whose Pending
//! records it created, and the policy entries carry each freeze and suspension whole;
//! replaying the log in seq order therefore ends with the rows as they are.

use std::collections::BTreeMap;

use engine::host::HostRecord;
use engine::rollout::Rollout;
use shared::api::LogEvent;
use shared::log::{Carried, LogEntry};
use shared::policy::{OperatorPolicies, Suspension};
use shared::{Channel, Closure, Hostname, RolloutId};

use super::store;
use super::writer::Writer;
use super::{Store, on_pool};

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    #[serde(with = "by_value")]
    pub rollouts: BTreeMap<RolloutId, Rollout>,
    #[serde(with = "by_value")]
    pub records: BTreeMap<(RolloutId, Hostname), HostRecord>,
    /// Freezes not released (run-out ones included, as the reducer keeps them until its next
    /// policy change) and suspended hosts.
    pub policies: OperatorPolicies,
    /// Quarantines in force, by channel and closure.
    #[serde(with = "by_value")]
    pub quarantines: BTreeMap<(Channel, Closure), store::QuarantineRow>,
}

/// A map whose keys its values carry, stored as the list of its values.
mod by_value {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub trait Keyed {
        type Key: Ord;
        fn key(&self) -> Self::Key;
    }

    pub fn serialize<K, V: Serialize, S: Serializer>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, V, D>(d: D) -> Result<BTreeMap<V::Key, V>, D::Error>
    where
        V: Keyed + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<V>::deserialize(d)?.into_iter().map(|v| (v.key(), v)).collect())
    }

    impl Keyed for engine::rollout::Rollout {
        type Key = shared::RolloutId;
        fn key(&self) -> Self::Key {
            self.id.clone()
        }
    }

    impl Keyed for engine::host::HostRecord {
        type Key = (shared::RolloutId, shared::Hostname);
        fn key(&self) -> Self::Key {
            (self.rollout_id.clone(), self.hostname.clone())
        }
    }

    impl Keyed for crate::db::store::QuarantineRow {
        type Key = (shared::Channel, shared::Closure);
        fn key(&self) -> Self::Key {
            (self.channel.clone(), self.closure.clone())
        }
    }
}

pub fn replay(entries: &[LogEvent]) -> Result<Replayed, String> {
    let mut out = Replayed::default();
    for e in entries {
        out.apply(e)?;
    }
    Ok(out)
}

impl Replayed {
    /// One more entry, in seq order.
    pub fn apply(&mut self, e: &LogEvent) -> Result<(), String> {
        let carried: Carried<HostRecord, Rollout> = e.carried().map_err(|err| format!("log entry {}: {err}", e.seq))?;
        if let Some(rollout) = carried.rollout {
            if let LogEntry::RolloutOpened(opened) = e.entry().map_err(|err| format!("log entry {}: {err}", e.seq))? {
                for h in opened.host_set {
                    let record = HostRecord::pending(
                        rollout.id.clone(),
                        h.hostname.clone(),
                        rollout.channel.clone(),
                        h.target_closure,
                        rollout.opened_at,
                    );
                    self.records.insert((rollout.id.clone(), h.hostname), record);
                }
            }
            self.rollouts.insert(rollout.id.clone(), rollout);
        }
        if let Some(record) = carried.record {
            self.records.insert((record.rollout_id.clone(), record.hostname.clone()), record);
        }
        match e.kind.topic() {
            shared::log::FeedTopic::Policy => {
                let entry = e.entry().map_err(|err| format!("log entry {}: {err}", e.seq))?;
                apply_policy(&mut self.policies, e, entry);
            }
            shared::log::FeedTopic::Quarantine => {
                let entry = e.entry().map_err(|err| format!("log entry {}: {err}", e.seq))?;
                self.apply_quarantine(e, entry);
            }
            _ => {}
        }
        Ok(())
    }

    /// A quarantine added or released on the entry's channel.
    fn apply_quarantine(&mut self, e: &LogEvent, entry: LogEntry) {
        let Some(channel) = &e.channel else { return };
        match entry {
            LogEntry::QuarantineAdded(q) => {
                let row = store::QuarantineRow {
                    channel: channel.clone(),
                    closure: q.closure.clone(),
                    reason: q.reason,
                    by: q.by,
                    at: e.ts,
                    released_at: None,
                    released_by: None,
                    release_reason: None,
                };
                self.quarantines.insert((channel.clone(), q.closure), row);
            }
            LogEntry::QuarantineReleased(q) => {
                self.quarantines.remove(&(channel.clone(), q.closure));
            }
            _ => {}
        }
    }

    /// Forgets the records of rollouts that ended: they never change again (the tables keep
    /// them), and the reducer loads only open rollouts' records.
    pub fn prune(&mut self) {
        let rollouts = &self.rollouts;
        self.records.retain(|(id, _), _| rollouts.get(id).is_none_or(|r| !r.state.is_terminal()));
    }
}

/// One policy entry applied to the policies as the reducer changed them.
fn apply_policy(policies: &mut OperatorPolicies, e: &LogEvent, entry: LogEntry) {
    match (entry, &e.host) {
        (LogEntry::FreezeStarted(freeze), _) => {
            // The reducer drops run-out freezes when it adds one.
            policies.freezes.retain(|f| f.in_force(e.ts));
            policies.freezes.push(*freeze);
        }
        (LogEntry::FreezeReleased(released), _) => {
            policies.freezes.retain(|f| f.name != released.name);
            policies.freezes.retain(|f| f.in_force(e.ts));
        }
        (LogEntry::HostSuspended(change), Some(host)) => {
            policies.suspended.insert(host.clone(), Suspension { reason: change.reason, by: change.by, at: e.ts });
        }
        (LogEntry::HostResumed(_), Some(host)) => {
            policies.suspended.remove(host);
        }
        _ => {}
    }
}

/// The derived state as the tables hold it at the log's last seq, read in one snapshot (the
/// records through the `current_host_records` view, so records only the log's tail holds are
/// in it): every rollout, the records of those not ended, the quarantines in force and the
/// operators' policies. With the log's last seq and that entry's stored hash (none for an
/// empty log).
pub async fn from_tables(store: &Store) -> Result<(Option<(i64, Option<Vec<u8>>)>, Replayed), sqlx::Error> {
    let mut records = BTreeMap::new();
    let (head, mut state) = read_tables(store, &mut |_, r| {
        records.insert((r.rollout_id.clone(), r.hostname.clone()), r);
    })
    .await?;
    state.records = records;
    Ok((head, state))
}

/// Open rollouts whose records one statement of [`read_tables`] reads.
const ROLLOUTS_PER_READ: usize = 500;

/// What [`from_tables`] reads, in the same one snapshot, except that each record of an open
/// rollout goes to `record` as it is read (its stored JSON and the record parsed from it)
/// instead of into the answer's `records`: a checkpoint of 100,000 records writes each on
/// as it comes rather than holding them all.
pub async fn read_tables(
    store: &Store,
    record: &mut (dyn FnMut(&str, HostRecord) + Send),
) -> Result<(Option<(i64, Option<Vec<u8>>)>, Replayed), sqlx::Error> {
    let (head, rollouts, quarantines, policies) = on_pool!(store, pool => async {
        let mut tx = pool.begin().await?;
        if store.dialect() == super::Dialect::Postgres {
            sqlx::query(store::SNAPSHOT).execute(&mut *tx).await?;
        }
        let head: Option<(i64, Option<Vec<u8>>)> =
            sqlx::query_as(super::chain::HEAD).fetch_optional(&mut *tx).await?;
        let rollouts: Vec<(String,)> =
            sqlx::query_as("SELECT body FROM rollouts ORDER BY rollout_id").fetch_all(&mut *tx).await?;
        // The open rollouts first: the records view is then read by its key, not whole — a
        // few hundred rollouts a statement, as SQLite groups the log's tail once per
        // statement (migration 0019): one statement per rollout grouped it a thousand times
        // at 1,000 open rollouts.
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT rollout_id FROM rollouts WHERE state NOT IN ('Completed', 'Superseded') ORDER BY rollout_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for ids in open.chunks(ROLLOUTS_PER_READ) {
            let sql = format!(
                "SELECT body FROM current_host_records WHERE rollout_id IN ({}) ORDER BY rollout_id, hostname",
                store::marks(1, ids.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for id in ids {
                query = query.bind(id);
            }
            let mut rows = query.fetch(&mut *tx);
            while let Some(body) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                record(&body, store::from_json(&body)?);
            }
        }
        let quarantines: Vec<store::QuarantineColumns> = sqlx::query_as(&format!(
            "SELECT {} FROM quarantines WHERE released_at IS NULL ORDER BY id",
            store::QUARANTINE_COLUMNS
        ))
        .fetch_all(&mut *tx)
        .await?;
        let policies: Option<String> =
            sqlx::query_scalar("SELECT body FROM policies WHERE id = 1").fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((head, rollouts, quarantines, policies))
    }
    .await)?;
    let mut state = Replayed::default();
    for (body,) in rollouts {
        let rollout: Rollout = store::from_json(&body)?;
        state.rollouts.insert(rollout.id.clone(), rollout);
    }
    for columns in quarantines {
        let row = store::quarantine_row(columns)?;
        state.quarantines.insert((row.channel.clone(), row.closure.clone()), row);
    }
    if let Some(body) = policies {
        state.policies = store::from_json(&body)?;
    }
    Ok((head, state))
}

/// Empties the rollout and record tables and refills them from the event log.
pub async fn rebuild(store: &Store, writer: &Writer) -> Result<Replayed, String> {
    let entries = store::log_after(store, 0, i64::MAX).await.map_err(|e| e.to_string())?;
    let replayed = replay(&entries)?;
    let mut batch = store::Batch { rollouts: replayed.rollouts.values().cloned().collect(), ..Default::default() };
    batch.records = replayed.records.values().map(store::RecordRow::new).collect();
    batch.records_through = true;
    batch.policies = Some(serde_json::to_string(&replayed.policies).map_err(|e| e.to_string())?);
    on_pool!(store, pool => async {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM host_records").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM rollout_tallies").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM rollouts").execute(&mut *tx).await?;
        tx.commit().await
    }
    .await)
    .map_err(|e| e.to_string())?;
    writer.commit(batch).await.map_err(|e| e.to_string())?;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use shared::log::StoredPayload;

    use super::*;

    /// Rows as the control plane stored them before log entries were typed (commit 8de0abc):
    /// one of each kind and agent event `fleetwave demo` wrote while driven through the API,
    /// plus the kinds the demo does not produce (stuck, offline, synthesized rows), shaped
    /// after that code's `json!` literals.
    const BEFORE: &str = include_str!("../../tests/fixtures/log_before_typed_entries.jsonl");

    fn before() -> Vec<(LogEvent, serde_json::Value)> {
        BEFORE
            .lines()
            .map(|line| {
                let event: LogEvent = serde_json::from_str(line).unwrap();
                let payload = serde_json::from_str(event.payload.get()).unwrap();
                (event, payload)
            })
            .collect()
    }

    #[test]
    fn rows_stored_before_the_entries_were_typed_read_back_and_render_the_same() {
        let rows = before();
        use shared::log::LogKind;
        let kinds: std::collections::BTreeSet<_> = rows.iter().map(|(e, _)| e.kind).collect();
        // Kinds added after the fixture was recorded (the policies of SPEC §17) are not in it.
        let later = [
            LogKind::FreezeStarted,
            LogKind::FreezeReleased,
            LogKind::HostSuspended,
            LogKind::HostResumed,
            LogKind::FailureWithinBudget,
            LogKind::LogSealed,
            LogKind::LogCompacted,
        ];
        let then: std::collections::BTreeSet<_> = LogKind::ALL.iter().copied().filter(|k| !later.contains(k)).collect();
        assert_eq!(kinds, then, "the fixture has every kind of its time");
        for (event, mut stored) in rows {
            let entry = event.entry().unwrap_or_else(|e| panic!("seq {}: {e}", event.seq));
            assert_eq!(entry.kind(), event.kind);
            let carried: Carried<HostRecord, Rollout> = event.carried().unwrap();
            let again =
                StoredPayload { entry: &entry, record: carried.record.as_ref(), rollout: carried.rollout.as_ref() };
            // Only host events are marked synthesized now (the old code marked every row a
            // synthesized event caused; nothing read the mark on the others).
            if !matches!(entry, LogEntry::HostEvent(_)) {
                stored.as_object_mut().unwrap().remove("synthesized");
            }
            assert_eq!(serde_json::to_value(again).unwrap(), stored, "seq {} ({})", event.seq, event.kind);
        }
    }

    #[test]
    fn replaying_rows_stored_before_the_entries_were_typed_restores_their_records() {
        let events: Vec<LogEvent> = before().into_iter().map(|(e, _)| e).collect();
        let replayed = replay(&events).unwrap();
        assert!(!replayed.rollouts.is_empty() && !replayed.records.is_empty());
        let last_record = events.iter().rev().find_map(|e| e.carried::<HostRecord, Rollout>().unwrap().record).unwrap();
        let key = (last_record.rollout_id.clone(), last_record.hostname.clone());
        assert_eq!(replayed.records.get(&key), Some(&last_record));
    }
}
