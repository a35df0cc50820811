//! The page's live model: one signal per host cell, so a feed entry re-renders one cell (and
//! its wave's counts), never the whole page. A wave's counts are kept entry by entry (not
//! counted again from its cells), and a dense wave chooses the cells it shows again at most
//! twice a second: at 100,000 hosts the feed brings ~1,500 entries a second, and walking a
//! 25,000-host wave for each would stop the page.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use leptos::prelude::*;
use shared::api::{FailureBudgetUse, HostCell, LogEvent, RolloutDetail, RolloutHeader, WaveView};
use shared::log::LogKind;
use shared::state::HostState;

use super::model::mark;

/// One wave column: what does not change while the page is open.
#[derive(Clone)]
pub struct WaveMeta {
    pub index: Option<u32>,
    pub soak_minutes: u64,
    pub requires_approval: bool,
    /// The wave's failure budget as loaded (its use is counted live from the cells).
    pub failure_budget: Option<FailureBudgetUse>,
    pub cells: Vec<(String, RwSignal<HostCell>)>,
    /// The wave's hosts by state: as loaded (the tally when the rollout's host records were
    /// tallied: it has no cells then), then kept by [`Live::apply`].
    pub counts: RwSignal<BTreeMap<HostState, u64>>,
    /// Bumped when cells of the wave changed state, stuck or suspended flag: at most every
    /// [`RECHOOSE_EVERY`] (what a dense wave shows is chosen again then).
    pub moved: RwSignal<u64>,
}

/// How often a dense wave chooses its cells again at most while the feed moves its hosts.
const RECHOOSE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy)]
pub struct Live {
    pub header: RwSignal<Option<RolloutHeader>>,
    pub waves: RwSignal<Vec<WaveMeta>>,
    /// Each host's cell and the index of its wave in `waves`.
    pub cells: StoredValue<HashMap<String, (usize, RwSignal<HostCell>)>>,
    /// Waves whose `moved` is due to be bumped.
    due: StoredValue<HashSet<usize>>,
}

impl Live {
    pub fn new() -> Live {
        Live {
            header: RwSignal::new(None),
            waves: RwSignal::new(Vec::new()),
            cells: StoredValue::new(HashMap::new()),
            due: StoredValue::new(HashSet::new()),
        }
    }

    pub fn load(&self, detail: RolloutDetail) {
        let mut map = HashMap::new();
        let waves = detail
            .waves
            .into_iter()
            .enumerate()
            .map(|(position, w): (usize, WaveView)| {
                let mut counts = if detail.hosts_tallied { w.counts.clone() } else { BTreeMap::new() };
                let cells = w
                    .hosts
                    .into_iter()
                    .map(|h| {
                        if !detail.hosts_tallied {
                            *counts.entry(h.state).or_insert(0) += 1;
                        }
                        let name = h.hostname.to_string();
                        let signal = RwSignal::new(h);
                        map.insert(name.clone(), (position, signal));
                        (name, signal)
                    })
                    .collect();
                WaveMeta {
                    index: w.index,
                    soak_minutes: w.soak_minutes,
                    requires_approval: w.requires_approval,
                    failure_budget: w.failure_budget,
                    cells,
                    counts: RwSignal::new(counts),
                    moved: RwSignal::new(0),
                }
            })
            .collect();
        self.cells.set_value(map);
        self.waves.set(waves);
        self.header.set(Some(detail.header));
    }

    /// Applies one feed entry of this rollout (or a host's suspension, which belongs to no
    /// rollout).
    pub fn apply(&self, entry: &LogEvent) {
        if matches!(entry.kind, LogKind::HostSuspended | LogKind::HostResumed) {
            let host = entry.host.as_ref().map(|h| h.as_str()).unwrap_or_default();
            if let Some((wave, signal)) = self.cells.with_value(|m| m.get(host).copied()) {
                let before = signal.with_untracked(mark);
                signal.update(|c| c.suspended = entry.kind == LogKind::HostSuspended);
                self.moved(wave, before, signal.with_untracked(mark));
            }
            return;
        }
        let (cell, header) = super::model::changes(entry);
        if let Some(mut cell) = cell
            && let Some((wave, signal)) = self.cells.with_value(|m| m.get(cell.hostname.as_str()).copied())
        {
            // A record does not carry its host's suspension: keep what the page knows.
            let before = signal.with_untracked(mark);
            cell.suspended = signal.with_untracked(|c| c.suspended);
            let after = mark(&cell);
            signal.set(cell);
            self.moved(wave, before, after);
        }
        if let Some(header) = header {
            self.header.set(Some(header));
        }
    }

    /// A cell of wave `wave` went from `before` to `after` ([`mark`]): its counts follow at
    /// once, what a dense wave shows within [`RECHOOSE_EVERY`].
    fn moved(&self, wave: usize, before: (HostState, bool), after: (HostState, bool)) {
        if before == after {
            return;
        }
        let Some((counts, moved)) = self.waves.with_untracked(|w| w.get(wave).map(|m| (m.counts, m.moved))) else {
            return;
        };
        if before.0 != after.0 {
            counts.update(|c| {
                if let Some(n) = c.get_mut(&before.0) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.remove(&before.0);
                    }
                }
                *c.entry(after.0).or_insert(0) += 1;
            });
        }
        if self.due.try_update_value(|due| due.insert(wave)) == Some(true) {
            let due = self.due;
            set_timeout(
                move || {
                    due.try_update_value(|d| d.remove(&wave));
                    moved.try_update(|n| *n += 1);
                },
                RECHOOSE_EVERY,
            );
        }
    }
}
