//! The live feed of a replica on PostgreSQL: the log as committed, read from the database.
//!
//! The leader's every commit sends `NOTIFY fleetwave_log, '<last seq>'`. This task listens,
//! and on each notification past what it has published — and after every (re)connect, when
//! notifications may have been missed — reads `event_log WHERE seq > last` in seq order and
//! publishes it to the replica's [`FeedHub`]. Seqs commit in order (one fenced writer), so
//! reading past `last` never skips a row that commits later: feed clients of any replica,
//! the leader's included, see every entry once, in order. A new manifest set in the log makes
//! the replica re-read and re-verify the fleet its agent routes and views use.

use std::time::Duration;

use shared::log::LogKind;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::db::postgres::LOG_CHANNEL;
use crate::db::{Store, store};
use crate::feed::FeedHub;
use crate::reducer::SharedFleet;
use crate::trust::SharedTrust;

/// Rows read per query while catching up.
const PAGE: i64 = 1000;
/// A catch-up read even without a notification, in case one was lost without the connection
/// being (the listener reports lost connections; this is the belt to those braces).
const POLL_EVERY: Duration = Duration::from_secs(5);
/// Wait before listening again after the database refused.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub struct Tail {
    pub pool: PgPool,
    pub feed: FeedHub,
    pub fleet: SharedFleet,
    pub trust: SharedTrust,
    pub clock: Clock,
}

/// Runs until `shutdown`. Starts at the log's end as it is now: a feed client that wants
/// older entries resumes with `Last-Event-ID` and is backfilled from the database.
pub async fn run(tail: Tail, shutdown: CancellationToken) {
    let store = Store::Postgres(tail.pool.clone());
    let mut last = loop {
        match store::last_seq(&store).await {
            Ok(seq) => break seq,
            Err(err) => tracing::warn!(%err, "feed tail: cannot read the log's end; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
    };
    refresh_fleet(&tail, &store).await;
    while !shutdown.is_cancelled() {
        let mut listener = match listen(&tail.pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(%err, "feed tail: cannot listen for commits; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_EVERY) => continue,
                }
            }
        };
        // Anything committed before the listener was in place.
        last = catch_up(&tail, &store, last).await;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL_EVERY) => {
                    last = catch_up(&tail, &store, last).await;
                    continue;
                }
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(notification)) => {
                    // Notifications of what was already read (a catch-up ran ahead of them)
                    // cost nothing, and those already waiting are taken together: one read
                    // for a burst of commits.
                    let mut through = seq_of(&notification);
                    while let Some(next) = listener.next_buffered() {
                        through = through.max(seq_of(&next));
                    }
                    if through > last {
                        last = catch_up(&tail, &store, last).await;
                    }
                }
                // Reconnected: notifications may have been lost meanwhile.
                Ok(None) => last = catch_up(&tail, &store, last).await,
                Err(err) => {
                    tracing::warn!(%err, "feed tail: the listening connection failed; listening again");
                    break;
                }
            }
        }
    }
}

/// The last seq a commit wrote, from its notification (unknown: read anyway).
fn seq_of(notification: &sqlx::postgres::PgNotification) -> i64 {
    notification.payload().parse::<i64>().unwrap_or(i64::MAX)
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(LOG_CHANNEL).await?;
    Ok(listener)
}

/// Publishes every entry after `last`; returns the new last seq (unchanged if the database
/// did not answer: the next notification or poll tries again).
async fn catch_up(tail: &Tail, store: &Store, mut last: i64) -> i64 {
    loop {
        let rows = match store::log_after(store, last, PAGE).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(%err, after = last, "feed tail: cannot read the log");
                return last;
            }
        };
        let Some(newest) = rows.last().map(|r| r.seq) else { return last };
        tail.feed.publish(&rows);
        if rows.iter().any(|r| r.kind == LogKind::ManifestSetUpdated) {
            refresh_fleet(tail, store).await;
        }
        last = newest;
        if (rows.len() as i64) < PAGE {
            return last;
        }
    }
}

/// Re-reads the manifest set in force and shares its fleet, verified as the leader verified
/// it when it loaded (signatures and consistency against this replica's trust roots). A fleet
/// already shared (on the leader, its reducer shared it before the commit) is not verified
/// again.
async fn refresh_fleet(tail: &Tail, store: &Store) {
    let shared = tail.fleet.read().ok().and_then(|f| f.as_ref().map(|f| f.hash.clone()));
    match store::fleet_hash(store).await {
        Ok(stored) if stored.is_some() && stored == shared => return,
        Ok(_) => {}
        Err(err) => return tracing::warn!(%err, "feed tail: cannot read the fleet in force"),
    }
    let loaded = match store::manifest_set(store).await {
        Ok(loaded) => loaded,
        Err(err) => return tracing::warn!(%err, "feed tail: cannot read the manifest set"),
    };
    let Some((fleet, manifests)) = loaded else { return };
    let trust = tail.trust.read().ok().and_then(|t| t.as_deref().cloned());
    match crate::reducer::core::reverify(trust.as_ref(), &fleet, &manifests, tail.clock.now()) {
        Ok(set) => {
            if let Ok(mut shared) = tail.fleet.write() {
                *shared = Some(set.fleet.clone());
            }
        }
        Err(err) => tracing::error!(%err, "the manifest set in the database does not verify on this replica"),
    }
}
