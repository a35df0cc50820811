//! `fleetwave ctl watch [ID]`: the live feed in a terminal. With a rollout id: one progress bar
//! per wave (hosts converged of the wave's hosts, the other states counted beside it) and the
//! rollout's log lines above them; it ends with exit 0 when the rollout completes and 4 when it
//! halts or is superseded. Without one: every log line of the fleet, until interrupted. A
//! dropped connection resumes with `Last-Event-ID`, so no entry is missed or shown twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use shared::api::{HostCell, LogEvent, RolloutDetail, RolloutHeader};
use shared::state::{HostState, RolloutState};
use shared::{Hostname, RolloutId};

use super::client::{Client, CtlError};
use super::show::Paint;

/// How long the feed may stay unreachable before `watch` gives up (exit 3).
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// One rollout as the watch shows it: each host's wave and state, the header.
struct Watched {
    header: RolloutHeader,
    /// Host → (wave position in `waves`, state).
    hosts: HashMap<Hostname, (usize, HostState)>,
    /// A bar per wave, in the detail's order.
    waves: Vec<ProgressBar>,
}

impl Watched {
    fn new(detail: &RolloutDetail, bars: &MultiProgress) -> Watched {
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos:>4}/{len:<4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut hosts = HashMap::new();
        let waves = detail
            .waves
            .iter()
            .enumerate()
            .map(|(position, wave)| {
                for cell in &wave.hosts {
                    hosts.insert(cell.hostname.clone(), (position, cell.state));
                }
                let label = wave.index.map_or("unstaged".into(), |i| format!("wave {i}"));
                let bar = bars.add(ProgressBar::new(wave.hosts.len() as u64).with_style(style.clone()));
                bar.set_prefix(label);
                bar
            })
            .collect();
        let mut watched = Watched { header: detail.header.clone(), hosts, waves };
        watched.redraw();
        watched
    }

    fn apply(&mut self, cell: Option<HostCell>, header: Option<RolloutHeader>) {
        if let Some(cell) = cell
            && let Some(entry) = self.hosts.get_mut(&cell.hostname)
        {
            entry.1 = cell.state;
        }
        if let Some(header) = header {
            self.header = header;
        }
        self.redraw();
    }

    fn redraw(&mut self) {
        let mut counts: Vec<BTreeMap<HostState, u64>> = vec![BTreeMap::new(); self.waves.len()];
        for (wave, state) in self.hosts.values() {
            if let Some(c) = counts.get_mut(*wave) {
                *c.entry(*state).or_default() += 1;
            }
        }
        for (position, wave) in self.waves.iter().enumerate() {
            let counts = &counts[position];
            wave.set_position(counts.get(&HostState::Converged).copied().unwrap_or(0));
            let mut words: Vec<String> = counts
                .iter()
                .filter(|(s, _)| **s != HostState::Converged && **s != HostState::Pending)
                .map(|(s, n)| format!("{n} {}", s.as_str().to_lowercase()))
                .collect();
            if position as u32 == self.header.current_wave {
                words.insert(0, "current".into());
            }
            wave.set_message(words.join(", "));
        }
    }

    /// Exit with what the rollout came to, once it came to an end (or halted).
    fn ended(&self) -> Option<Result<String, CtlError>> {
        let id = &self.header.rollout_id;
        match self.header.state {
            RolloutState::Completed => Some(Ok(format!("{id} completed"))),
            RolloutState::Halted => {
                let why = self.header.halt.as_ref().map(|h| format!(": {} failed ({})", h.host, h.reason));
                Some(Err(CtlError::Ended(format!("{id} halted{}", why.unwrap_or_default()))))
            }
            RolloutState::Superseded => {
                let by = self.header.superseded_by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default();
                Some(Err(CtlError::Ended(format!("{id} was superseded{by}"))))
            }
            RolloutState::Active | RolloutState::Paused => None,
        }
    }

    fn finish(&self) {
        for wave in &self.waves {
            wave.finish();
        }
    }
}

/// Follows the feed; see the module's documentation.
pub async fn watch(client: &Client, id: Option<RolloutId>, json: bool, paint: Paint) -> Result<String, CtlError> {
    let bars = MultiProgress::new();
    if json {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // Entries on stdout (JSON lines with --json), notes about the connection on stderr.
    let say = |line: String| {
        if bars.is_hidden() {
            println!("{line}");
        } else {
            bars.suspend(|| println!("{line}"));
        }
    };
    let note = |line: String| bars.suspend(|| eprintln!("{}", paint.dim(&line)));
    let (mut watched, mut after) = match &id {
        Some(id) => {
            let detail: RolloutDetail = client.get(&format!("/rollouts/{}", id.as_str())).await?;
            let watched = Watched::new(&detail, &bars);
            // On stderr: stdout is the entries (JSON lines with --json).
            let h = &detail.header;
            let note = format!(
                "{} ({}): {}, wave {} current; following after log seq {}",
                h.rollout_id, h.channel, h.state, h.current_wave, detail.as_of
            );
            bars.suspend(|| eprintln!("{}", paint.dim(&note)));
            if let Some(end) = watched.ended() {
                watched.finish();
                return end;
            }
            (Some(watched), Some(detail.as_of))
        }
        None => (None, None),
    };
    let mut failing_since: Option<std::time::Instant> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let response = match client.stream("/feed", after).await {
            Ok(response) => response,
            Err(err @ CtlError::Unreachable { .. }) => {
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(err);
                }
                note(format!("{err}; trying again in {} s", backoff.as_secs_f32()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Err(err) => return Err(err),
        };
        if failing_since.take().is_some() {
            note(format!("connected again; resuming after log seq {}", after.unwrap_or(0)));
        }
        backoff = Duration::from_millis(500);
        let mut events = response.bytes_stream().eventsource();
        let mut holds = Holds::default();
        loop {
            // Holds that arrive together are shown grouped once something else arrives, or once
            // the feed has been quiet for a moment.
            let next = if holds.is_empty() {
                events.next().await
            } else {
                match tokio::time::timeout(HOLDS_QUIET, events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        holds.flush(&say, paint);
                        continue;
                    }
                }
            };
            let Some(event) = next else { break };
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    note(format!("the feed broke off ({err}); resuming"));
                    break;
                }
            };
            let Ok(entry) = serde_json::from_str::<LogEvent>(&event.data) else {
                continue; // not an entry (a future message kind): nothing to show
            };
            after = Some(entry.seq);
            let ours = id.as_ref().is_none_or(|id| entry.rollout_id.as_ref() == Some(id));
            if !ours {
                continue;
            }
            if json {
                println!("{}", serde_json::to_string(&entry).unwrap_or_default());
            } else if !changes_nothing(&entry) && !holds.add(&entry) {
                holds.flush(&say, paint);
                say(line(&entry, entry.about(), paint));
            }
            if let Some(watched) = watched.as_mut() {
                if let Ok(carried) = entry.carried::<HostCell, RolloutHeader>() {
                    watched.apply(carried.record, carried.rollout);
                }
                if let Some(end) = watched.ended() {
                    holds.flush(&say, paint);
                    watched.finish();
                    return end;
                }
            }
        }
        holds.flush(&say, paint);
        // The stream ended (server restart, proxy timeout): reconnect after the last seq.
        failing_since.get_or_insert_with(std::time::Instant::now);
    }
}

/// A host event that left the host's state as it was (a passing probe while soaking): not
/// worth a line for people (`--json` still has it).
fn changes_nothing(entry: &LogEvent) -> bool {
    matches!(entry.entry(), Ok(shared::log::LogEntry::HostEvent(e)) if e.from == e.to)
}

/// How long the feed stays quiet before the holds that arrived together are shown.
const HOLDS_QUIET: Duration = Duration::from_millis(300);
/// Hosts named in a line of holds; the rest are counted.
const HOLDS_NAMED: usize = 3;

/// Holds that arrive together (a wave opening holds dozens of hosts at once, by a few
/// reasons), grouped by rollout and reason: one line per group, in the order each group began.
#[derive(Default)]
struct Holds {
    /// Per group: its first entry, the entry in words, every host in it.
    groups: Vec<(LogEvent, String, Vec<String>)>,
}

impl Holds {
    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Takes `entry` into its group if it is a hold; false when it is something else.
    fn add(&mut self, entry: &LogEvent) -> bool {
        if entry.kind != shared::log::LogKind::HostHeld {
            return false;
        }
        let Some(host) = entry.host.as_ref() else { return false };
        let what = entry.describe();
        match self.groups.iter_mut().find(|(first, w, _)| first.rollout_id == entry.rollout_id && *w == what) {
            Some((_, _, hosts)) => hosts.push(host.to_string()),
            None => self.groups.push((entry.clone(), what, vec![host.to_string()])),
        }
        true
    }

    fn flush(&mut self, say: &impl Fn(String), paint: Paint) {
        for (first, _, hosts) in self.groups.drain(..) {
            let rollout = first.rollout_id.as_ref().map(|r| r.to_string()).unwrap_or_default();
            let about = match hosts.len() {
                0..=HOLDS_NAMED => format!("{rollout} {}", hosts.join(", ")),
                n => format!("{rollout} {} and {} more", hosts[..HOLDS_NAMED].join(", "), n - HOLDS_NAMED),
            };
            say(line(&first, about, paint));
        }
    }
}

/// One line: time, seq, what it is about, the entry in words.
fn line(entry: &LogEvent, about: String, paint: Paint) -> String {
    format!(
        "{} {:>7} {about}: {}",
        entry.ts.format("%H:%M:%S"),
        paint.dim(&format!("#{}", entry.seq)),
        entry.describe()
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::json;

    use super::*;

    fn held(seq: i64, host: &str, reason: &str) -> LogEvent {
        serde_json::from_value(json!({
            "seq": seq, "ts": "2026-12-01T12:00:00Z", "kind": "HostHeld", "rolloutId": "stable@a1",
            "host": host, "payload": {"gate": "approval", "reason": reason},
        }))
        .unwrap()
    }

    #[test]
    fn holds_arriving_together_are_one_line_per_reason_naming_three_hosts_and_counting_the_rest() {
        let plain = Paint { colour: false };
        let lines = RefCell::new(Vec::new());
        let say = |l: String| lines.borrow_mut().push(l);
        let mut holds = Holds::default();
        let approval = "wave 1 requires approval";
        for (seq, (host, reason)) in
            [("a", approval), ("b", "wave 2 requires approval"), ("c", approval), ("d", approval), ("e", approval)]
                .iter()
                .enumerate()
        {
            assert!(holds.add(&held(seq as i64 + 1, host, reason)));
        }
        let mut other = held(6, "f", approval);
        other.kind = shared::log::LogKind::HostExcused;
        assert!(!holds.add(&other), "anything but a hold is shown on its own");
        holds.flush(&say, plain);
        assert!(holds.is_empty());
        assert_eq!(
            *lines.borrow(),
            [
                "12:00:00      #1 stable@a1 a, c, d and 1 more: held by approval: wave 1 requires approval",
                "12:00:00      #2 stable@a1 b: held by approval: wave 2 requires approval",
            ]
        );
    }
}
