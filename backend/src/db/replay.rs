//! Re-deriving rollout and record rows from the event log (SPEC §8). Every log entry that
//! changes a record or a rollout carries the whole new state (`payload.record`,
//! `payload.rollout`), and `RolloutOpened` carries the host set whose Pending records it
//! created; replaying the log in seq order therefore ends with the rows as they are.

use std::collections::BTreeMap;

use engine::host::HostRecord;
use engine::rollout::Rollout;
use shared::{Closure, Hostname, RolloutId};
use sqlx::SqlitePool;

use super::store::{self, LogEntry};
use super::writer::Writer;

#[derive(Debug, Default, PartialEq)]
pub struct Replayed {
    pub rollouts: BTreeMap<RolloutId, Rollout>,
    pub records: BTreeMap<(RolloutId, Hostname), HostRecord>,
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value, seq: i64) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("log entry {seq}: {e}"))
}

pub fn replay(entries: &[LogEntry]) -> Result<Replayed, String> {
    let mut out = Replayed::default();
    for e in entries {
        let payload = e.payload_value();
        if let Some(v) = payload.get("rollout") {
            let rollout: Rollout = decode(v, e.seq)?;
            if e.kind == "RolloutOpened" {
                let hosts = payload.get("hostSet").and_then(|h| h.as_array()).cloned().unwrap_or_default();
                for h in hosts {
                    let host: Hostname = decode(&h["hostname"], e.seq)?;
                    let target: Closure = decode(&h["targetClosure"], e.seq)?;
                    let record = HostRecord::pending(
                        rollout.id.clone(),
                        host.clone(),
                        rollout.channel.clone(),
                        target,
                        rollout.opened_at,
                    );
                    out.records.insert((rollout.id.clone(), host), record);
                }
            }
            out.rollouts.insert(rollout.id.clone(), rollout);
        }
        if let Some(v) = payload.get("record") {
            let record: HostRecord = decode(v, e.seq)?;
            out.records.insert((record.rollout_id.clone(), record.hostname.clone()), record);
        }
    }
    Ok(out)
}

/// Empties the rollout and record tables and refills them from the event log.
pub async fn rebuild(pool: &SqlitePool, writer: &Writer) -> Result<Replayed, String> {
    let entries = store::log_after(pool, 0, i64::MAX).await.map_err(|e| e.to_string())?;
    let replayed = replay(&entries)?;
    let mut batch = store::Batch { rollouts: replayed.rollouts.values().cloned().collect(), ..Default::default() };
    batch.records = replayed.records.values().map(store::RecordRow::new).collect();
    batch.records_through = true;
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("DELETE FROM host_records").execute(&mut *tx).await.map_err(|e| e.to_string())?;
    sqlx::query("DELETE FROM rollouts").execute(&mut *tx).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    writer.commit(batch).await.map_err(|e| e.to_string())?;
    Ok(replayed)
}
