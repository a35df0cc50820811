//! The page's live model: one signal per host cell, so a feed entry re-renders one cell (and
//! its wave's counts), never the whole page.

use std::collections::{BTreeMap, HashMap};

use leptos::prelude::*;
use shared::api::{FailureBudgetUse, HostCell, LogEvent, RolloutDetail, RolloutHeader, WaveView};
use shared::log::LogKind;
use shared::state::HostState;

/// One wave column: what does not change while the page is open.
#[derive(Clone)]
pub struct WaveMeta {
    pub index: Option<u32>,
    pub soak_minutes: u64,
    pub requires_approval: bool,
    /// The wave's failure budget as loaded (its use is counted live from the cells).
    pub failure_budget: Option<FailureBudgetUse>,
    pub cells: Vec<(String, RwSignal<HostCell>)>,
    /// The wave's counts when the rollout's host records were tallied (it has no cells then).
    pub tallied: Option<BTreeMap<HostState, u64>>,
}

#[derive(Clone, Copy)]
pub struct Live {
    pub header: RwSignal<Option<RolloutHeader>>,
    pub waves: RwSignal<Vec<WaveMeta>>,
    pub cells: StoredValue<HashMap<String, RwSignal<HostCell>>>,
}

impl Live {
    pub fn new() -> Live {
        Live { header: RwSignal::new(None), waves: RwSignal::new(Vec::new()), cells: StoredValue::new(HashMap::new()) }
    }

    pub fn load(&self, detail: RolloutDetail) {
        let mut map = HashMap::new();
        let waves = detail
            .waves
            .into_iter()
            .map(|w: WaveView| {
                let tallied = detail.hosts_tallied.then(|| w.counts.clone());
                let cells = w
                    .hosts
                    .into_iter()
                    .map(|h| {
                        let name = h.hostname.to_string();
                        let signal = RwSignal::new(h);
                        map.insert(name.clone(), signal);
                        (name, signal)
                    })
                    .collect();
                WaveMeta {
                    index: w.index,
                    soak_minutes: w.soak_minutes,
                    requires_approval: w.requires_approval,
                    failure_budget: w.failure_budget,
                    cells,
                    tallied,
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
            if let Some(signal) = self.cells.with_value(|m| m.get(host).copied()) {
                signal.update(|c| c.suspended = entry.kind == LogKind::HostSuspended);
            }
            return;
        }
        let (cell, header) = super::model::changes(entry);
        if let Some(mut cell) = cell
            && let Some(signal) = self.cells.with_value(|m| m.get(cell.hostname.as_str()).copied())
        {
            // A record does not carry its host's suspension: keep what the page knows.
            cell.suspended = signal.with_untracked(|c| c.suspended);
            signal.set(cell);
        }
        if let Some(header) = header {
            self.header.set(Some(header));
        }
    }
}
