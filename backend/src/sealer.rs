//! The leader's sealer (SPEC §16): every `--seal-every-secs` it archives what retention
//! allows ([`db::retention`]): observations past `--observation-retention-days` compacted,
//! entries past `--log-retention-days` sealed; each time a checkpoint at the log's end when
//! only the newest one holds entries back, the segment written to the archive, the
//! reducer's `LogCompacted` or `LogSealed`, then the delete. A delete a stop interrupted is
//! finished first. Then the host records of each ended rollout whose every entry is sealed
//! are replaced by their tally ([`views::tally`], counted per wave of the verified fleet).

use chrono::{DateTime, Utc};

use crate::db::retention::{self, Retention, RetentionError};
use crate::db::{self, Store};
use crate::reducer::{Archived, ReducerError, ReducerHandle, ReducerInput, SharedFleet};
use crate::views;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("cannot take a checkpoint to seal behind: {0}")]
    Checkpoint(#[from] db::checkpoint::CheckpointError),
    #[error("the reducer did not log the seal: {0}")]
    Reducer(#[from] ReducerError),
}

/// One round: finishes a purge a stop interrupted, then compacts the observations due and
/// seals what is due, each logged before its delete, then tallies the ended rollouts whose
/// logs are sealed whole ([`tally_sealed`]). Returns what it archived.
pub async fn seal_due(
    store: &Store,
    reducer: &ReducerHandle,
    retention: &Retention,
    fleet: &SharedFleet,
    now: DateTime<Utc>,
) -> Result<Vec<Archived>, SealError> {
    if let Some((up_to, _, _)) = db::chain::sealed_head(store).await? {
        retention::purge(store, up_to).await?;
    }
    if let Some(file) = db::chain::compactions(store, 1).await?.pop().and_then(|c| c.file) {
        retention::purge_observations(store, &retention.dir, &file).await?;
    }
    let mut archived = Vec::new();
    loop {
        let bounds = checkpointed(store, retention, now, |b, with| b.compact(with)).await?;
        let Some((from, up_to)) = bounds.compact(true) else { break };
        let compacted = retention::write_observations(store, &retention.dir, from, up_to).await?;
        let file = compacted.file.clone();
        log(reducer, Archived::Compacted(compacted.clone())).await?;
        let deleted = match &file {
            Some(file) => retention::purge_observations(store, &retention.dir, file).await?,
            None => 0,
        };
        tracing::info!(from, up_to, deleted, "observations compacted");
        archived.push(Archived::Compacted(compacted));
    }
    loop {
        let bounds = checkpointed(store, retention, now, |b, with| b.seal(with)).await?;
        let Some((first, due)) = bounds.seal(true) else { break };
        // A seal ends on an entry the database holds (its hash is the head).
        let Some(up_to) = retention::present_at_or_before(store, due).await?.filter(|s| *s >= first) else { break };
        let seal = retention::write_segment(store, &retention.dir, first, up_to).await?;
        log(reducer, Archived::Sealed(seal.clone())).await?;
        let deleted = retention::purge(store, seal.up_to).await?;
        tracing::info!(from = seal.from, up_to = seal.up_to, deleted, file = %seal.file, "event log sealed");
        archived.push(Archived::Sealed(seal));
    }
    tally_sealed(store, fleet).await?;
    Ok(archived)
}

/// Replaces the host records of each ended rollout whose every entry is sealed by their
/// tally: the tally is stored first (readers use it from then on), then the records are
/// deleted in batches. A delete a stop interrupted is finished first. Nothing is tallied
/// while no fleet is verified (the waves would be unknown). Returns the rollouts tallied.
pub async fn tally_sealed(store: &Store, fleet: &SharedFleet) -> Result<usize, SealError> {
    for id in retention::tallied_with_records(store).await? {
        retention::purge_records(store, &id).await?;
    }
    let Some(fleet) = fleet.read().ok().and_then(|f| f.clone()) else { return Ok(0) };
    let due = retention::tally_due(store).await?;
    for (id, channel) in &due {
        let (_, records) = db::store::rollout_hosts(store, std::slice::from_ref(id)).await?;
        let tally = views::tally(channel, &records, Some(&fleet));
        retention::write_tally(store, id, &tally).await?;
        let deleted = retention::purge_records(store, id.as_str()).await?;
        tracing::info!(rollout = %id, deleted, "host records of a sealed rollout tallied");
    }
    Ok(due.len())
}

/// The bounds at `now`, after taking a checkpoint at the log's end if only the newest one
/// holds back what `range` would take.
async fn checkpointed(
    store: &Store,
    retention: &Retention,
    now: DateTime<Utc>,
    range: impl Fn(&retention::Bounds, bool) -> Option<(i64, i64)>,
) -> Result<retention::Bounds, SealError> {
    let bounds = retention::bounds(store, retention, now).await?;
    if range(&bounds, false) > range(&bounds, true) {
        db::checkpoint::take(store, now).await?;
        return Ok(retention::bounds(store, retention, now).await?);
    }
    Ok(bounds)
}

async fn log(reducer: &ReducerHandle, entry: Archived) -> Result<(), ReducerError> {
    reducer.ask(|reply| ReducerInput::Archived { entry, reply }).await
}

/// The leader's sealer: a round every `retention.every`; a failure is logged and tried again
/// at the next round; the loop ends only with `token`.
pub async fn run(
    store: Store,
    reducer: ReducerHandle,
    retention: Retention,
    fleet: SharedFleet,
    clock: crate::clock::Clock,
    token: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(retention.every) => {}
        }
        if let Err(err) = seal_due(&store, &reducer, &retention, &fleet, clock.now()).await {
            tracing::warn!(%err, "cannot seal the event log's old entries; trying again later");
        }
    }
}
