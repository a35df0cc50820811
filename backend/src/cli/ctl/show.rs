//! What `fleetwave ctl` prints for people: aligned tables, states coloured only on a terminal
//! (and never with `NO_COLOR`), times relative to now.

use chrono::{DateTime, Utc};
use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use shared::api::{AuditEntry, FleetOverview, HostCell, OperatorOutcome, RolloutDetail, RolloutSummary};
use shared::policy::Freeze;
use shared::state::{HostState, RolloutState};
use shared::words::relative;

/// Whether standard output gets colours: a terminal, and `NO_COLOR` / `CLICOLOR=0` not set
/// (anstream's rules).
pub fn colour_on_stdout() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

/// Text in a style, or plain when colours are off.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    pub colour: bool,
}

impl Paint {
    fn styled(self, style: anstyle::Style, text: &str) -> String {
        if self.colour { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }

    pub fn bold(self, text: &str) -> String {
        self.styled(anstyle::Style::new().bold(), text)
    }

    pub fn dim(self, text: &str) -> String {
        self.styled(anstyle::Style::new().dimmed(), text)
    }

    fn fg(self, colour: anstyle::AnsiColor, text: &str) -> String {
        self.styled(anstyle::Style::new().fg_color(Some(colour.into())), text)
    }

    pub fn red(self, text: &str) -> String {
        self.fg(anstyle::AnsiColor::Red, text)
    }

    pub fn rollout_state(self, state: RolloutState) -> String {
        let text = state.to_string();
        match state {
            RolloutState::Completed => self.fg(anstyle::AnsiColor::Green, &text),
            RolloutState::Halted => self.fg(anstyle::AnsiColor::Red, &text),
            RolloutState::Paused => self.fg(anstyle::AnsiColor::Yellow, &text),
            RolloutState::Active => self.fg(anstyle::AnsiColor::Cyan, &text),
            _ => self.dim(&text),
        }
    }

    pub fn host_state(self, state: HostState) -> String {
        let text = state.to_string();
        match state {
            HostState::Converged => self.fg(anstyle::AnsiColor::Green, &text),
            s if s.is_failure() => self.fg(anstyle::AnsiColor::Red, &text),
            HostState::Pending => self.dim(&text),
            _ => self.fg(anstyle::AnsiColor::Cyan, &text),
        }
    }
}

/// A table of columns aligned with two spaces between them, no borders (what `kubectl get`
/// prints); numeric columns right-aligned.
pub fn table(header: &[&str], right: &[usize], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(header.iter().map(|h| h.to_string()));
    for row in rows {
        table.add_row(row);
    }
    for &i in right {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    // The preset pads each cell with one space on both sides: trim the line ends.
    table
        .lines()
        .map(|l| l.trim_end().to_owned())
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn percent(p: f64) -> String {
    format!("{p:.0}%")
}

/// `ctl status`: freezes in force, then one line per channel.
pub fn status(
    paint: Paint,
    fleet: &FleetOverview,
    rollouts: &[RolloutSummary],
    freezes: &[Freeze],
    quarantined: usize,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    for f in freezes.iter().filter(|f| f.in_force(now)) {
        let until = f.until.map_or("until released".to_owned(), |u| format!("until {}", relative(u, now)));
        let by = f.by.as_deref().unwrap_or("the signed fleet");
        out.push_str(&paint.red(&format!("FROZEN {}: {} (by {by}, {until})", f.name, f.reason)));
        out.push('\n');
    }
    let online = fleet.hosts.iter().filter(|h| h.online).count();
    let suspended = fleet.hosts.iter().filter(|h| h.suspended.is_some()).count();
    out.push_str(&format!(
        "{} hosts, {online} online; {} channels; {quarantined} closures quarantined; {suspended} hosts suspended\n\n",
        fleet.hosts.len(),
        fleet.channels.len()
    ));
    let rows = fleet
        .channels
        .iter()
        .map(|c| {
            let summary =
                c.current_rollout.as_ref().and_then(|id| rollouts.iter().find(|r| &r.header.rollout_id == id));
            let on = fleet.hosts.iter().filter(|h| h.channel == c.name && h.online).count();
            match summary {
                Some(r) => vec![
                    c.name.to_string(),
                    r.header.rollout_id.to_string(),
                    paint.rollout_state(r.header.state),
                    wave_of(r),
                    percent(r.converged_percent),
                    format!("{on}/{}", c.hosts),
                    notes(paint, r),
                ],
                None => vec![
                    c.name.to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("{on}/{}", c.hosts),
                    String::new(),
                ],
            }
        })
        .collect();
    out.push_str(&table(&["CHANNEL", "ROLLOUT", "STATE", "WAVE", "CONVERGED", "ONLINE", "NOTES"], &[4, 5], rows));
    out.push('\n');
    out
}

fn wave_of(r: &RolloutSummary) -> String {
    format!("{} of {}", r.header.current_wave, r.waves.len().max(1))
}

fn notes(paint: Paint, r: &RolloutSummary) -> String {
    let mut notes = Vec::new();
    if let Some(halt) = &r.header.halt {
        notes.push(paint.red(&format!("halted: {} failed ({})", halt.host, halt.reason)));
    }
    if !r.stuck.is_empty() {
        notes.push(paint.red(&format!("{} stuck", r.stuck.len())));
    }
    if let Some(by) = &r.header.superseded_by {
        notes.push(format!("superseded by {by}"));
    }
    notes.join("; ")
}

/// `ctl rollouts`
pub fn rollouts(paint: Paint, rollouts: &[RolloutSummary], now: DateTime<Utc>) -> String {
    let rows = rollouts
        .iter()
        .map(|r| {
            vec![
                r.header.rollout_id.to_string(),
                r.header.channel.to_string(),
                paint.rollout_state(r.header.state),
                wave_of(r),
                r.hosts.to_string(),
                percent(r.converged_percent),
                relative(r.header.opened_at, now),
                notes(paint, r),
            ]
        })
        .collect();
    table(&["ROLLOUT", "CHANNEL", "STATE", "WAVE", "HOSTS", "CONVERGED", "OPENED", "NOTES"], &[4, 5], rows) + "\n"
}

/// `ctl rollout ID`: the header, one line per wave, then every host not converged with why.
pub fn rollout(paint: Paint, detail: &RolloutDetail, now: DateTime<Utc>) -> String {
    let h = &detail.header;
    let mut out = format!(
        "{} ({}), {}; wave {} current; opened {}\n",
        paint.bold(h.rollout_id.as_str()),
        h.channel,
        paint.rollout_state(h.state),
        h.current_wave,
        relative(h.opened_at, now)
    );
    if let Some(halt) = &h.halt {
        out.push_str(&paint.red(&format!("halted: {} failed ({})\n", halt.host, halt.reason)));
    }
    out.push('\n');
    let rows = detail
        .waves
        .iter()
        .map(|w| {
            let index = w.index.map_or("unstaged".into(), |i| {
                if i == h.current_wave { format!("{i} (current)") } else { i.to_string() }
            });
            let approval = match (w.requires_approval, w.approved) {
                (false, _) => "-",
                (true, true) => "approved",
                (true, false) => "required",
            };
            let failures = w.failure_budget.map_or("-".into(), |b| format!("{} of {}", b.used, b.max));
            let converged = w.counts.get(&HostState::Converged).copied().unwrap_or(0);
            vec![
                index,
                w.counts.values().sum::<u64>().to_string(),
                format!("{converged} ({})", percent(w.converged_percent)),
                format!("{} min", w.soak_minutes),
                approval.into(),
                failures,
            ]
        })
        .collect();
    out.push_str(&table(&["WAVE", "HOSTS", "CONVERGED", "SOAK", "APPROVAL", "FAILURES USED"], &[1], rows));
    out.push('\n');
    if detail.hosts_tallied {
        out.push_str("\nits host records were tallied when its log was sealed: counts only\n");
        return out;
    }
    let open: Vec<(Option<u32>, &HostCell)> = detail
        .waves
        .iter()
        .flat_map(|w| w.hosts.iter().map(move |c| (w.index, c)))
        .filter(|(_, c)| c.state != HostState::Converged)
        .collect();
    if open.is_empty() {
        out.push_str("\nevery host converged\n");
        return out;
    }
    out.push('\n');
    let rows = open
        .into_iter()
        .map(|(wave, c)| {
            let mut why = c.waiting_on.as_ref().map(|w| format!("{}: {}", w.gate, w.reason)).unwrap_or_default();
            for (flag, text) in [(c.stuck, "stuck"), (c.excused, "excused"), (c.suspended, "suspended")] {
                if flag {
                    why = if why.is_empty() { text.into() } else { format!("{text}; {why}") };
                }
            }
            vec![c.hostname.to_string(), wave.map_or("-".into(), |w| w.to_string()), paint.host_state(c.state), why]
        })
        .collect();
    out.push_str(&table(&["HOST", "WAVE", "STATE", "WAITING ON"], &[1], rows));
    out.push('\n');
    out
}

/// `ctl audit`: who did what, oldest first.
pub fn audit(entries: &[AuditEntry], now: DateTime<Utc>) -> String {
    if entries.is_empty() {
        return "nothing in that time\n".into();
    }
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.entry.ts.format("%Y-%m-%d %H:%M:%S").to_string(),
                relative(e.entry.ts, now),
                e.actor.clone(),
                e.entry.about(),
                e.what.clone(),
            ]
        })
        .collect();
    table(&["TIME (UTC)", "", "ACTOR", "ABOUT", "WHAT"], &[], rows) + "\n"
}

/// What an action did, with the log entry recording it.
pub fn outcome(outcome: &OperatorOutcome) -> String {
    format!("{} (log seq {})\n", outcome.message, outcome.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_borders_and_right_align_numbers() {
        let text = table(
            &["NAME", "N", "NOTE"],
            &[1],
            vec![vec!["a".into(), "5".into(), String::new()], vec!["longer".into(), "120".into(), "x".into()]],
        );
        assert_eq!(text, "NAME      N  NOTE\na         5\nlonger  120  x");
    }

    /// A rollout whose records retention tallied: each wave's hosts are its counts' sum, and
    /// no host list follows.
    #[test]
    fn a_tallied_rollout_shows_its_counts_and_says_why_no_hosts() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let detail = RolloutDetail {
            header: shared::api::RolloutHeader {
                rollout_id: shared::RolloutId::parse("stable@a1").unwrap(),
                channel: shared::Channel::parse("stable").unwrap(),
                state: RolloutState::Completed,
                current_wave: 0,
                approved_waves: vec![],
                halt: None,
                opened_at: at,
                completed_at: Some(at),
                superseded_by: None,
            },
            waves: vec![shared::api::WaveView {
                index: Some(0),
                soak_minutes: 5,
                requires_approval: false,
                approved: false,
                hosts: vec![],
                counts: [(HostState::Converged, 3), (HostState::Failed, 1)].into(),
                converged_percent: 75.0,
                failure_budget: None,
            }],
            as_of: 9,
            first_seq: 0,
            sealed_before: Some(9),
            replayed_at: None,
            hosts_tallied: true,
        };
        let text = rollout(Paint { colour: false }, &detail, at);
        let wave = text.lines().find(|l| l.starts_with("0 (current)")).unwrap();
        assert_eq!(wave.split_whitespace().collect::<Vec<_>>()[2..4], ["4", "3"], "{text}");
        assert!(text.ends_with("its host records were tallied when its log was sealed: counts only\n"), "{text}");
        assert!(!text.contains("every host converged"), "{text}");
    }

    #[test]
    fn plain_paint_adds_no_escape_codes() {
        let plain = Paint { colour: false };
        assert_eq!(plain.rollout_state(RolloutState::Halted), "Halted");
        let colour = Paint { colour: true };
        assert!(colour.rollout_state(RolloutState::Halted).contains('\u{1b}'));
    }
}
