//! Replay protection of signed agent requests (SPEC §9.1): every signature is accepted once.
//!
//! A signature is remembered while its request could still be accepted: a request signed at
//! `t` is refused for its timestamp after `t + MAX_SKEW_SECONDS`, so that is when it is
//! forgotten. It is remembered by its first 16 bytes (part of R, which the signer derives
//! from a hash; a different valid signature sharing them has a 2^-128 chance) — at thousands
//! of requests per second the cache is a large share of the server's memory, and this keeps
//! it near 40 bytes per request.
//!
//! The signatures of writes are also stored, in the reducer's transaction with the writes
//! they carried (`agent_signatures`), and a reducer that starts — a restart, or a replica
//! taking over the lead (SPEC §15) — loads the ones still live: a request the previous
//! process accepted is not accepted again by the next.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

pub use shared::agent::MAX_SKEW_SECONDS;

/// A remembered signature: its first 16 bytes.
pub type SignatureKey = u128;

/// Signatures of writes accepted but not yet handed to the writer: beyond this many the
/// oldest are dropped from the hand-over (not from the cache). Only a process whose reducer
/// stopped taking them could get there.
const PENDING_AT_MOST: usize = 200_000;

#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<SignatureKey>,
    /// Keys by the second after which their request can no longer be accepted.
    expiry: BTreeMap<i64, Vec<SignatureKey>>,
    /// Keys of accepted writes (with their expiry) the reducer has yet to store.
    pending: Vec<(SignatureKey, i64)>,
}

impl Inner {
    fn forget_expired(&mut self, now: i64) {
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for key in entry.remove() {
                self.seen.remove(&key);
            }
        }
    }

    fn remember(&mut self, key: SignatureKey, expires: i64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.expiry.entry(expires).or_default().push(key);
        true
    }
}

/// The key a signature is remembered by.
pub fn key_of(signature: &[u8; 64]) -> SignatureKey {
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&signature[..16]);
    u128::from_le_bytes(prefix)
}

impl ReplayCache {
    /// True the first time a signature is offered, false for a replay. `signed_at` is the
    /// request's (already checked) timestamp; a `write`'s key is also handed to the reducer to
    /// store.
    pub fn first_use(&self, signature: &[u8; 64], signed_at: i64, now: i64, write: bool) -> bool {
        let Ok(mut inner) = self.inner.lock() else { return false };
        inner.forget_expired(now);
        let key = key_of(signature);
        let expires = signed_at.saturating_add(MAX_SKEW_SECONDS);
        if !inner.remember(key, expires) {
            return false;
        }
        if write {
            if inner.pending.len() >= PENDING_AT_MOST {
                inner.pending.remove(0);
            }
            inner.pending.push((key, expires));
        }
        true
    }

    /// The keys of writes accepted since the last call, for the reducer's next transaction.
    pub fn take_pending(&self) -> Vec<(SignatureKey, i64)> {
        self.inner.lock().map(|mut inner| std::mem::take(&mut inner.pending)).unwrap_or_default()
    }

    /// Remembers keys stored by an earlier process (still live at `now`).
    pub fn restore(&self, keys: impl IntoIterator<Item = (SignatureKey, i64)>, now: i64) {
        if let Ok(mut inner) = self.inner.lock() {
            for (key, expires) in keys {
                if expires >= now {
                    inner.remember(key, expires);
                }
            }
        }
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        self.inner.lock().map(|inner| (inner.seen.len(), inner.expiry.len())).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_refused_again_until_its_request_could_no_longer_be_accepted() {
        let cache = ReplayCache::default();
        let (a, b) = ([1u8; 64], [2u8; 64]);
        assert!(cache.first_use(&a, 1_000, 1_000, false));
        assert!(!cache.first_use(&a, 1_000, 1_000, false), "the same signature twice");
        assert!(cache.first_use(&b, 1_000, 1_000, false), "another signature");
        // Signed at 1,000: acceptable (by timestamp) until 1,060, so remembered until then.
        assert!(!cache.first_use(&a, 1_000, 1_000 + MAX_SKEW_SECONDS, false));
        // Later the timestamp check refuses it anyway; the cache has let it go.
        assert!(cache.first_use(&a, 1_000, 1_001 + MAX_SKEW_SECONDS, false));
        assert_eq!(cache.sizes(), (1, 1), "expired entries are gone");
    }

    #[test]
    fn the_keys_of_writes_are_handed_over_once_and_restored_keys_are_refused() {
        let cache = ReplayCache::default();
        assert!(cache.first_use(&[1u8; 64], 1_000, 1_000, true));
        assert!(cache.first_use(&[2u8; 64], 1_000, 1_000, false), "a read");
        assert_eq!(cache.take_pending(), vec![(key_of(&[1u8; 64]), 1_000 + MAX_SKEW_SECONDS)]);
        assert!(cache.take_pending().is_empty());
        // The next process: what the last one stored is refused; what expired is not loaded.
        let next = ReplayCache::default();
        next.restore([(key_of(&[1u8; 64]), 1_060), (key_of(&[3u8; 64]), 999)], 1_010);
        assert!(!next.first_use(&[1u8; 64], 1_000, 1_010, true), "accepted by the previous leader");
        assert!(next.first_use(&[3u8; 64], 1_009, 1_010, true), "expired when loaded, not restored");
    }
}
