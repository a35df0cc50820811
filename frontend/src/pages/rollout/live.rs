//! The page's live model: one signal per host cell, so a feed entry re-renders one cell (and
//! its wave's counts), never the whole page.

use std::collections::HashMap;

use leptos::prelude::*;
use shared::api::{HostCell, LogEvent, RolloutDetail, RolloutHeader, WaveView};

/// One wave column: what does not change while the page is open.
#[derive(Clone)]
pub struct WaveMeta {
    pub index: Option<u32>,
    pub soak_minutes: u64,
    pub requires_approval: bool,
    pub cells: Vec<(String, RwSignal<HostCell>)>,
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
                WaveMeta { index: w.index, soak_minutes: w.soak_minutes, requires_approval: w.requires_approval, cells }
            })
            .collect();
        self.cells.set_value(map);
        self.waves.set(waves);
        self.header.set(Some(detail.header));
    }

    /// Applies one feed entry of this rollout.
    pub fn apply(&self, entry: &LogEvent) {
        let (cell, header) = super::model::changes(entry);
        if let Some(cell) = cell
            && let Some(signal) = self.cells.with_value(|m| m.get(cell.hostname.as_str()).copied())
        {
            signal.set(cell);
        }
        if let Some(header) = header {
            self.header.set(Some(header));
        }
    }
}
