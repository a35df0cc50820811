//! One rollout's host records, sorted by hostname, and beside each a [`Brief`]: the few facts
//! of it that a plan pass, a completion check or the gauges read of every record. A pass over
//! a 100,000-host rollout read a record's state, dispatch and hold from three places in a
//! 440-byte record (three cache misses per host, 44 MB a pass); the briefs are 16 bytes each
//! in one array, and a pass touches a whole record only for a host it may act on.
//!
//! Every change goes through [`Records::update`] (or [`Records::update_each`]), which writes
//! the record's brief again after it, so a brief never says other than its record.

use std::borrow::Borrow;
use std::sync::Arc;

use shared::Hostname;
use shared::state::{Gate, HostState};

use crate::host::HostRecord;

/// What a pass reads of every record, kept beside it (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brief {
    pub state: HostState,
    /// A dispatch is queued and not yet acknowledged.
    pub dispatched: bool,
    pub excused: bool,
    pub stuck: bool,
    /// The gate the record waits on, if it does.
    pub held: Option<Gate>,
    /// The address of the hold's reason, compared with the reason a pass shares among the
    /// hosts it holds alike ([`Brief::holds`]); 0 without a hold.
    reason: usize,
}

impl Brief {
    fn of(record: &HostRecord) -> Brief {
        let waiting = record.waiting_on.as_ref();
        Brief {
            state: record.state,
            dispatched: record.dispatch.is_some(),
            excused: record.excused,
            stuck: record.stuck,
            held: waiting.map(|w| w.gate),
            reason: waiting.map_or(0, |w| Arc::as_ptr(&w.reason).cast::<u8>() as usize),
        }
    }

    /// Whether the record waits at `gate` for this very copy of `reason` (the same
    /// allocation: both are alive, so an equal address is the same string). `false` says
    /// nothing: the record may hold an equal reason of its own.
    pub fn holds(&self, gate: Gate, reason: &Arc<str>) -> bool {
        self.held == Some(gate) && self.reason == Arc::as_ptr(reason).cast::<u8>() as usize
    }

    /// [`host::done_for_ordering`](crate::host::done_for_ordering), from the brief.
    pub fn done_for_ordering(&self) -> bool {
        crate::host::done_for_ordering(self.state, self.excused)
    }
}

/// One rollout's records by hostname (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Each record's hostname, in order (a pass reads them to find the fleet's facts
    /// without touching the records).
    hosts: Vec<Hostname>,
    records: Vec<HostRecord>,
    briefs: Vec<Brief>,
}

/// Equal records are equal collections whatever the addresses of their hold reasons.
impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        self.records == other.records
    }
}

impl Records {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn position<Q>(&self, host: &Q) -> Result<usize, usize>
    where
        Hostname: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.hosts.binary_search_by(|h| h.borrow().cmp(host))
    }

    pub fn get<Q>(&self, host: &Q) -> Option<&HostRecord>
    where
        Hostname: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(host).ok().map(|i| &self.records[i])
    }

    /// The record at `position` in hostname order.
    pub fn at(&self, position: usize) -> Option<&HostRecord> {
        self.records.get(position)
    }

    /// The records in hostname order.
    pub fn values(&self) -> std::slice::Iter<'_, HostRecord> {
        self.records.iter()
    }

    /// The hostnames in order: `hostnames()[i]` is the hostname of the record at `i`.
    pub fn hostnames(&self) -> &[Hostname] {
        &self.hosts
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Hostname, &HostRecord)> + ExactSizeIterator + Clone {
        self.hosts.iter().zip(&self.records)
    }

    /// Each record's hostname and state, in hostname order (from the briefs).
    pub fn states(&self) -> impl Iterator<Item = (&Hostname, HostState)> + Clone {
        self.hosts.iter().zip(self.briefs.iter().map(|b| b.state))
    }

    /// Each record's brief, in hostname order.
    pub fn briefs(&self) -> &[Brief] {
        &self.briefs
    }

    /// Changes the record of `host`, if there is one, and its brief with it.
    pub fn update<Q, R>(&mut self, host: &Q, change: impl FnOnce(&mut HostRecord) -> R) -> Option<R>
    where
        Hostname: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.position(host).ok()?;
        Some(self.update_at(i, change))
    }

    fn update_at<R>(&mut self, i: usize, change: impl FnOnce(&mut HostRecord) -> R) -> R {
        let record = &mut self.records[i];
        let out = change(record);
        debug_assert_eq!(record.hostname, self.hosts[i], "a change never renames a record");
        self.briefs[i] = Brief::of(record);
        out
    }

    /// Lets `change` look at every record, in hostname order, and change the ones it wants to.
    /// `wants` sees the brief first: a record it passes over is not touched.
    pub fn update_each(&mut self, wants: impl Fn(&Brief) -> bool, mut change: impl FnMut(&mut HostRecord)) {
        for i in 0..self.records.len() {
            if wants(&self.briefs[i]) {
                self.update_at(i, &mut change);
            }
        }
    }
}

/// Records from any order; of two for one host, the later wins.
impl FromIterator<HostRecord> for Records {
    fn from_iter<I: IntoIterator<Item = HostRecord>>(iter: I) -> Records {
        let mut records: Vec<HostRecord> = iter.into_iter().collect();
        // Stable: of equal hostnames the later stays last, and dedup keeps the first of a run.
        records.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        records.reverse();
        records.dedup_by(|a, b| a.hostname == b.hostname);
        records.reverse();
        Records {
            hosts: records.iter().map(|r| r.hostname.clone()).collect(),
            briefs: records.iter().map(Brief::of).collect(),
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use shared::state::WaitingOn;
    use shared::{Channel, Closure, RolloutId};

    fn record(host: &str, closure: &str) -> HostRecord {
        HostRecord::pending(
            RolloutId::parse("web@abc").unwrap(),
            Hostname::parse(host).unwrap(),
            Channel::parse("web").unwrap(),
            Closure::parse(format!("/nix/store/{}-{closure}", "a".repeat(32))).unwrap(),
            DateTime::UNIX_EPOCH,
        )
    }

    fn check(records: &Records) {
        let hosts: Vec<&Hostname> = records.values().map(|r| &r.hostname).collect();
        assert!(hosts.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {hosts:?}");
        assert_eq!(records.hostnames().iter().collect::<Vec<_>>(), hosts);
        let briefs: Vec<Brief> = records.values().map(Brief::of).collect();
        assert_eq!(records.briefs(), briefs.as_slice());
    }

    #[test]
    fn records_stay_sorted_with_their_briefs_through_every_change() {
        let mut records: Records =
            ["c", "a", "b", "a"].iter().zip(["1", "2", "3", "4"]).map(|(h, c)| record(h, c)).collect();
        check(&records);
        assert_eq!(records.len(), 3);
        assert!(records.get("a").unwrap().target_closure.as_str().ends_with("-4"), "the later of two wins");

        let reason: Arc<str> = "waiting for wave 2".into();
        let held = records.update("b", |r| {
            r.waiting_on =
                Some(WaitingOn { gate: Gate::Wave, reason: reason.clone(), since: DateTime::UNIX_EPOCH, until: None });
            r.state
        });
        assert_eq!(held, Some(HostState::Pending));
        check(&records);
        assert!(records.briefs()[1].holds(Gate::Wave, &reason));
        let equal: Arc<str> = "waiting for wave 2".into();
        assert!(!records.briefs()[1].holds(Gate::Wave, &equal), "an equal copy elsewhere is not this one");
        assert!(!records.briefs()[1].holds(Gate::Approval, &reason));
        assert!(!records.briefs()[0].holds(Gate::Wave, &reason));

        assert_eq!(records.update("zz", |r| r.stuck = true), None, "no record, no change");
        records.update_each(|b| b.state == HostState::Pending && b.held.is_none(), |r| r.stuck = true);
        assert_eq!(records.briefs().iter().map(|b| b.stuck).collect::<Vec<_>>(), [true, false, true]);
        check(&records);
        assert_eq!(records.hostnames().iter().map(Hostname::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
