//! What the reducer rebuilds its memory from ([`Loaded`]) at start-up and after a failed
//! commit (SPEC §16): the derived state (rollouts, open rollouts' records, quarantines in
//! force, policies) from the newest checkpoint with the log's entries after it replayed onto
//! it, or, before the first checkpoint (or if the newest cannot be read), from the tables;
//! the manifest set in force, presence and the live signatures from their tables.

use chrono::Utc;
use shared::{Closure, Hostname};

use super::Store;
use super::checkpoint;
use super::replay::{self, Replayed};
use super::store::{self, Loaded};

/// Where the derived state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The checkpoint at this seq, and this many entries after it.
    Checkpoint {
        seq: i64,
        replayed: i64,
    },
    Tables,
}

pub async fn load(store: &Store) -> Result<Loaded, sqlx::Error> {
    Ok(load_from(store).await?.0)
}

/// [`load`], saying where the derived state came from.
pub async fn load_from(store: &Store) -> Result<(Loaded, Source), sqlx::Error> {
    // The records table catches up with the log's tail: the queries that read it afterwards
    // see what memory holds.
    store::settle_records(store).await?;
    let mut loaded = Loaded::default();
    if let Some((fleet, manifests)) = store::manifest_set(store).await? {
        loaded.fleet = Some(fleet);
        loaded.manifests = manifests;
    }
    loaded.last_seq = store::last_seq(store).await?;
    let (state, source) = derived(store, loaded.last_seq).await?;
    loaded.rollouts = state.rollouts.into_values().collect();
    loaded.records = state.records.into_values().collect();
    loaded.quarantines = state.quarantines.into_values().collect();
    loaded.policies = state.policies;
    for (host, at, closure) in store::presence(store).await? {
        let host = Hostname::parse(host).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        loaded.presence.push((host, at, closure.and_then(|c| Closure::parse(c).ok())));
    }
    loaded.signatures = store::signatures(store, Utc::now().timestamp()).await?;
    Ok((loaded, source))
}

async fn derived(store: &Store, last_seq: i64) -> Result<(Replayed, Source), sqlx::Error> {
    match checkpoint::newest(store).await {
        Ok(Some(newest)) => {
            let seq = newest.seq;
            match checkpoint::replay_from(store, newest).await {
                Ok(state) => return Ok((state, Source::Checkpoint { seq, replayed: last_seq - seq })),
                Err(err) => tracing::warn!(%err, seq, "the newest checkpoint does not replay; loading from the tables"),
            }
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(%err, "the newest checkpoint cannot be read; loading from the tables"),
    }
    let (_, state) = replay::from_tables(store).await?;
    Ok((state, Source::Tables))
}
