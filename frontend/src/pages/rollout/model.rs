//! The rollout page's state without signals: the window of the event log it shows. Pure,
//! so it is tested natively (`cargo test -p frontend`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use shared::api::{HostCell, LogEvent, RolloutHeader};
use shared::log::{LogEntry, LogKind};
use shared::state::{Gate, HostState};
use shared::words::short_store_paths;

/// Log entries loaded at a time (the newest up to the snapshot, then older pages on demand).
pub const LOG_PAGE: usize = 200;
/// Log entries kept on screen; past it the oldest go (and can be loaded again).
pub const LOG_LIMIT: usize = 2000;

/// One log entry as the page shows it, described once when it arrives (not on every render).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub host: String,
    pub kind: LogKind,
    /// In words, store paths by their names.
    pub text: String,
    /// In words with store paths whole (shown on hover where it differs).
    pub full: String,
    /// A hold's gate and reason (what consecutive holds are grouped by).
    pub hold: Option<(Gate, String)>,
}

impl LogLine {
    pub fn new(entry: &LogEvent) -> LogLine {
        let full = entry.describe();
        let hold = match entry.entry() {
            Ok(LogEntry::HostHeld(h)) => Some((h.gate, h.reason)),
            _ => None,
        };
        LogLine {
            seq: entry.seq,
            at: entry.ts,
            host: entry.host.as_ref().map(|h| h.to_string()).unwrap_or_default(),
            kind: entry.kind,
            text: short_store_paths(&full),
            full,
            hold,
        }
    }

    pub fn gate(&self) -> Option<Gate> {
        self.hold.as_ref().map(|(g, _)| *g)
    }
}

/// What the log shows in a row: one entry, or consecutive holds of several hosts by the same
/// gate for the same reason. Lines are shared with the window (the rows are built again from
/// its up to 2,000 lines whenever entries arrive).
#[derive(Debug, Clone, PartialEq)]
pub enum LogRow {
    One(Arc<LogLine>),
    Held { gate: Gate, reason: String, lines: Vec<Arc<LogLine>> },
}

impl LogRow {
    /// Stable while the row shows the same entries: its newest seq and how many it has.
    pub fn key(&self) -> (i64, usize) {
        match self {
            LogRow::One(line) => (line.seq, 1),
            LogRow::Held { lines, .. } => (lines[0].seq, lines.len()),
        }
    }
}

/// The log's rows, newest first, from lines newest first: a run of holds with one gate and
/// reason becomes one row.
pub fn rows<'a>(lines: impl IntoIterator<Item = &'a Arc<LogLine>>) -> Vec<LogRow> {
    let mut out: Vec<LogRow> = Vec::new();
    for line in lines {
        if let (Some((gate, reason)), Some(last)) = (&line.hold, out.last_mut()) {
            match last {
                LogRow::Held { gate: g, reason: r, lines } if g == gate && r == reason => {
                    lines.push(line.clone());
                    continue;
                }
                LogRow::One(prev) if prev.hold.as_ref() == Some(&(*gate, reason.clone())) => {
                    let first = prev.clone();
                    *last = LogRow::Held { gate: *gate, reason: reason.clone(), lines: vec![first, line.clone()] };
                    continue;
                }
                _ => {}
            }
        }
        out.push(LogRow::One(line.clone()));
    }
    out
}

/// The part of a rollout's log on screen, oldest first, and whether older entries exist.
#[derive(Debug, Clone, Default)]
pub struct LogWindow {
    pub entries: Vec<Arc<LogLine>>,
    /// Entries older than the oldest shown may exist (a full page came back, or the oldest
    /// were dropped past [`LOG_LIMIT`]).
    pub older: bool,
}

impl LogWindow {
    /// The first page: the newest entries up to the snapshot.
    pub fn first_page(entries: Vec<LogEvent>) -> LogWindow {
        let older = entries.len() == LOG_PAGE;
        LogWindow { entries: entries.iter().map(|e| Arc::new(LogLine::new(e))).collect(), older }
    }

    /// A page of older entries goes in front.
    pub fn prepend(&mut self, page: Vec<LogEvent>) {
        self.older = page.len() == LOG_PAGE;
        let mut lines: Vec<Arc<LogLine>> = page.iter().map(|e| Arc::new(LogLine::new(e))).collect();
        lines.append(&mut self.entries);
        self.entries = lines;
    }

    /// A live entry from the feed; past the limit the oldest goes.
    pub fn push(&mut self, entry: &LogEvent) {
        self.entries.push(Arc::new(LogLine::new(entry)));
        if self.entries.len() > LOG_LIMIT {
            self.entries.remove(0);
            self.older = true;
        }
    }

    /// The seq to page back from.
    pub fn oldest_seq(&self) -> Option<i64> {
        self.entries.first().map(|e| e.seq)
    }
}

/// What a feed entry changes on the page: the cell of the record it carries (its `waitingOn`
/// cleared unless Pending, as the snapshot shows it) and the rollout's header.
pub fn changes(entry: &LogEvent) -> (Option<HostCell>, Option<RolloutHeader>) {
    let Ok(carried) = entry.carried::<HostCell, RolloutHeader>() else { return (None, None) };
    (carried.record.map(HostCell::shown), carried.rollout)
}

/// What of a cell decides how its wave counts it and whether a dense wave shows it
/// ([`dense_shown`]): its state, and whether it is stuck or suspended.
pub fn mark(cell: &HostCell) -> (HostState, bool) {
    (cell.state, cell.stuck || cell.suspended)
}

/// Cells a dense wave shows at most.
pub const DENSE_SHOWN: usize = 1500;

/// Which hosts a dense wave (more than [`DENSE_SHOWN`] hosts) shows a cell for: first those
/// that need a look (failed, rolled back, stuck, suspended), then those on their way
/// (activating, soaking, deferred), then the pending ones, each in hostname order, up to
/// `limit` in all; converged hosts get none. `cells`: each host's state and whether it is
/// stuck or suspended, in hostname order. Returns the indexes of the cells to show, in
/// hostname order, and how many not-converged hosts got no cell.
pub fn dense_shown(cells: impl IntoIterator<Item = (HostState, bool)>, limit: usize) -> (Vec<usize>, usize) {
    let mut ranks: [Vec<usize>; 3] = Default::default();
    for (i, (state, flagged)) in cells.into_iter().enumerate() {
        let rank = match state {
            HostState::Converged => continue,
            _ if state.is_failure() || flagged => 0,
            HostState::Pending => 2,
            _ => 1,
        };
        ranks[rank].push(i);
    }
    let waiting: usize = ranks.iter().map(Vec::len).sum();
    let mut shown: Vec<usize> = ranks.into_iter().flatten().take(limit).collect();
    shown.sort_unstable();
    let hidden = waiting - shown.len();
    (shown, hidden)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(seq: i64, payload: serde_json::Value) -> LogEvent {
        serde_json::from_value(json!({
            "seq": seq, "ts": "2026-12-01T12:00:00Z", "kind": shared::log::LogKind::HostHeld,
            "rolloutId": "stable@a1", "host": "a", "payload": payload,
        }))
        .unwrap()
    }

    fn page(seqs: std::ops::Range<i64>) -> Vec<LogEvent> {
        seqs.map(|s| entry(s, json!({"gate": "wave", "reason": "later"}))).collect()
    }

    #[test]
    fn a_full_first_page_says_older_entries_exist_and_a_short_one_does_not() {
        assert!(LogWindow::first_page(page(0..LOG_PAGE as i64)).older);
        assert!(!LogWindow::first_page(page(0..5)).older);
    }

    #[test]
    fn older_pages_go_in_front_and_live_entries_at_the_end_within_the_limit() {
        let mut window = LogWindow::first_page(page(1000..1000 + LOG_PAGE as i64));
        window.prepend(page(990..1000));
        assert_eq!(window.oldest_seq(), Some(990));
        assert!(!window.older, "a short page is the start of the log");
        let seqs: Vec<i64> = window.entries.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first, in order");
        for seq in 2000..2000 + LOG_LIMIT as i64 {
            window.push(&entry(seq, json!({"gate": "wave", "reason": "later"})));
        }
        assert_eq!(window.entries.len(), LOG_LIMIT);
        assert!(window.older, "dropped entries can be loaded again");
        assert_eq!(window.entries[0].text, "held by wave: later", "described when it arrived");
        assert_eq!(window.entries.last().map(|e| e.seq), Some(2000 + LOG_LIMIT as i64 - 1));
    }

    fn held(seq: i64, host: &str, gate: &str, reason: &str) -> LogLine {
        let mut e = entry(seq, json!({"gate": gate, "reason": reason}));
        e.host = Some(shared::Hostname::parse(host).unwrap());
        LogLine::new(&e)
    }

    #[test]
    fn consecutive_holds_by_one_gate_for_one_reason_are_one_row() {
        let nginx = format!("quarantine of /nix/store/{}-broken-nginx", "d".repeat(32));
        let approved = LogLine::new(&serde_json::from_value::<LogEvent>(json!({
            "seq": 10, "ts": "2026-12-01T12:00:00Z", "kind": "WaveApproved", "rolloutId": "stable@a1", "payload": {"wave": 1}
        })).unwrap());
        // Newest first, as the log shows them.
        let lines = vec![
            held(9, "e", "quarantine", &nginx),
            held(8, "d", "quarantine", &nginx),
            held(7, "c", "quarantine", &nginx),
            held(6, "b", "wave", "wave 2 opens after wave 1"),
            approved,
            held(4, "a", "quarantine", &nginx),
        ];
        let lines: Vec<Arc<LogLine>> = lines.into_iter().map(Arc::new).collect();
        let rows = rows(&lines);
        assert_eq!(rows.len(), 4);
        match &rows[0] {
            LogRow::Held { gate, reason, lines } => {
                assert_eq!((*gate, reason.as_str()), (Gate::Quarantine, nginx.as_str()));
                assert_eq!(lines.iter().map(|l| l.host.as_str()).collect::<Vec<_>>(), ["e", "d", "c"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rows[0].key(), (9, 3));
        assert!(matches!(&rows[1], LogRow::One(l) if l.seq == 6), "another gate is its own row");
        assert!(matches!(&rows[3], LogRow::One(l) if l.seq == 4), "not consecutive: its own row");
        // Store paths read by their names; the whole path is kept for hovering.
        let LogRow::One(single) = &rows[3] else { unreachable!() };
        assert_eq!(single.text, "held by quarantine: quarantine of …-broken-nginx");
        assert!(single.full.contains("/nix/store/dddd"));
        assert_eq!(single.gate(), Some(Gate::Quarantine));
    }

    #[test]
    fn a_dense_wave_shows_the_hosts_that_need_a_look_first_then_those_moving_then_pending() {
        use HostState::*;
        // a … g; d is stuck.
        let cells = [
            (Pending, false),
            (Converged, false),
            (Soaking, false),
            (Pending, true),
            (Failed, false),
            (Pending, false),
        ];
        let cells = || cells.into_iter().chain([(Activating, false)]);
        assert_eq!(dense_shown(cells(), 3), (vec![2, 3, 4], 3), "stuck d and failed e, then soaking c");
        assert_eq!(dense_shown(cells(), 4), (vec![2, 3, 4, 6], 2));
        assert_eq!(dense_shown(cells(), 5), (vec![0, 2, 3, 4, 6], 1), "then pending, in hostname order");
        assert_eq!(dense_shown(cells(), 100), (vec![0, 2, 3, 4, 5, 6], 0), "never a converged one");
    }

    #[test]
    fn an_entry_carrying_a_record_changes_its_cell_and_clears_a_hold_once_it_moved() {
        let record = json!({"hostname": "a", "state": "Activating", "targetClosure": "/nix/store/a",
            "waitingOn": {"gate": "wave", "reason": "later", "since": "2026-12-01T12:00:00Z"},
            "stuck": false, "excused": false, "lastEventSeq": 1});
        let (cell, header) = changes(&entry(1, json!({"gate": "wave", "reason": "x", "record": record})));
        let cell = cell.unwrap();
        assert_eq!((cell.state, cell.waiting_on), (HostState::Activating, None));
        assert!(header.is_none());
        assert_eq!(changes(&entry(2, json!({"gate": "wave", "reason": "x"}))), (None, None));
    }
}
