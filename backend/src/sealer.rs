//! The leader's sealer (SPEC §16): every `--seal-every-secs` it seals what retention allows
//! ([`db::retention`]): a checkpoint at the log's end when only the newest one holds entries
//! back, the segment written to the archive, `LogSealed` logged by the reducer, then the
//! entries deleted. A purge a stop interrupted is finished first.

use chrono::{DateTime, Utc};
use shared::log::LogSealed;

use crate::db::retention::{self, Retention, RetentionError};
use crate::db::{self, Store};
use crate::reducer::{ReducerError, ReducerHandle, ReducerInput};

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

/// One round: finishes a purge a stop interrupted, then seals and purges what is due.
/// Returns the seals it made.
pub async fn seal_due(
    store: &Store,
    reducer: &ReducerHandle,
    retention: &Retention,
    now: DateTime<Utc>,
) -> Result<Vec<LogSealed>, SealError> {
    if let Some((up_to, _, _)) = db::chain::sealed_head(store).await? {
        retention::purge(store, up_to).await?;
    }
    let mut sealed = Vec::new();
    loop {
        let mut bounds = retention::bounds(store, retention, now).await?;
        // Only the newest checkpoint holds more back: take one at the log's end.
        if bounds.range(false) > bounds.range(true) {
            db::checkpoint::take(store, now).await?;
            bounds = retention::bounds(store, retention, now).await?;
        }
        let Some((first, up_to)) = bounds.range(true) else { break };
        let seal = retention::write_segment(store, &retention.dir, first, up_to).await?;
        let seal = reducer.ask(|reply| ReducerInput::LogSealed { sealed: seal, reply }).await?;
        let deleted = retention::purge(store, seal.up_to).await?;
        tracing::info!(from = seal.from, up_to = seal.up_to, deleted, file = %seal.file, "event log sealed");
        sealed.push(seal);
    }
    Ok(sealed)
}

/// The leader's sealer: a round every `retention.every`; a failure is logged and tried again
/// at the next round; the loop ends only with `token`.
pub async fn run(
    store: Store,
    reducer: ReducerHandle,
    retention: Retention,
    clock: crate::clock::Clock,
    token: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(retention.every) => {}
        }
        if let Err(err) = seal_due(&store, &reducer, &retention, clock.now()).await {
            tracing::warn!(%err, "cannot seal the event log's old entries; trying again later");
        }
    }
}
