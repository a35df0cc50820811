//! Engine state → API bodies. (Log entries carry the whole record or rollout as the engine
//! serialises it, rendered by the reducer's applier; the dashboard reads that record as a [`HostCell`],
//! and replaying the log restores records from it.)

use std::collections::BTreeMap;

use engine::fleet::{Placement, VerifiedFleet, WaveSpec};
use engine::host::HostRecord;
use engine::rollout::{Rollout, Suspended, wave_failures};
use shared::api::{FailureBudgetUse, HostCell, RolloutDetail, RolloutHeader, RolloutSummary, WaveCounts, WaveView};

use crate::db::store::{RecordState, Tally};
use shared::state::HostState;

/// A record as the dashboard draws it; `suspended`: its host is suspended now.
pub fn host_cell(r: &HostRecord, suspended: bool) -> HostCell {
    HostCell {
        suspended,
        hostname: r.hostname.clone(),
        state: r.state,
        target_closure: r.target_closure.clone(),
        current_closure: r.current_closure.clone(),
        waiting_on: r.waiting_on.clone(),
        stuck: r.stuck,
        excused: r.excused,
        last_event_seq: r.last_event_seq,
    }
    .shown()
}

pub fn rollout_header(r: &Rollout) -> RolloutHeader {
    RolloutHeader {
        rollout_id: r.id.clone(),
        channel: r.channel.clone(),
        state: r.state,
        current_wave: r.current_wave,
        approved_waves: r.approved_waves.iter().copied().collect(),
        halt: r.halt.clone(),
        opened_at: r.opened_at,
        completed_at: r.completed_at,
        superseded_by: r.superseded_by.clone(),
    }
}

/// The wave column a host is drawn in: its wave, `None` for "unstaged", wave 0 without a fleet.
fn wave_of(fleet: Option<&VerifiedFleet>, host: &shared::Hostname) -> Option<u32> {
    match fleet.map(|f| f.placement(host)) {
        Some(Placement::Wave(w)) => Some(w),
        Some(Placement::Unstaged) => None,
        None => Some(0),
    }
}

fn percent(converged: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { (converged as f64 * 1000.0 / total as f64).round() / 10.0 }
}

fn counts<'a>(cells: impl Iterator<Item = &'a HostState>) -> BTreeMap<HostState, u64> {
    let mut counts = BTreeMap::new();
    for state in cells {
        *counts.entry(*state).or_insert(0) += 1;
    }
    counts
}

/// A rollout's records counted by state per wave of `channel` (placed by `fleet`, as the
/// detail places them; the waves first, then "unstaged"), and its stuck hosts.
pub fn tally(channel: &shared::Channel, records: &[RecordState], fleet: Option<&VerifiedFleet>) -> Tally {
    let waves_of_channel = fleet.map_or(1, |f| f.waves(channel).len().max(1));
    let mut waves: BTreeMap<Option<u32>, BTreeMap<HostState, u64>> =
        (0..waves_of_channel as u32).map(|i| (Some(i), BTreeMap::new())).collect();
    for record in records {
        let wave = wave_of(fleet, &record.hostname);
        *waves.entry(wave).or_default().entry(record.state).or_insert(0) += 1;
    }
    // Waves first, then the unstaged column (as on the rollout page).
    let (staged, unstaged): (Vec<_>, Vec<_>) = waves.into_iter().partition(|(index, _)| index.is_some());
    Tally {
        waves: staged.into_iter().chain(unstaged).map(|(index, counts)| WaveCounts { index, counts }).collect(),
        stuck: records.iter().filter(|r| r.stuck).map(|r| r.hostname.clone()).collect(),
    }
}

/// A rollout with its hosts counted by state, per wave, and its stuck hosts.
pub fn rollout_summary(r: &Rollout, tally: Tally) -> RolloutSummary {
    let mut counts: BTreeMap<HostState, u64> = BTreeMap::new();
    for wave in &tally.waves {
        for (state, n) in &wave.counts {
            *counts.entry(*state).or_insert(0) += n;
        }
    }
    let hosts = counts.values().sum();
    let converged = counts.get(&HostState::Converged).copied().unwrap_or(0);
    RolloutSummary {
        header: rollout_header(r),
        hosts,
        converged_percent: percent(converged, hosts),
        counts,
        waves: tally.waves,
        stuck: tally.stuck,
    }
}

/// The rollout page's answer: one column per wave of the channel (from the fleet document),
/// plus an "unstaged" column when some hosts are in no wave; each with its cells in hostname
/// order, its counts and its failure budget's use. `cells` are the records as read, in any
/// order.
pub fn rollout_detail(
    r: &Rollout,
    mut cells: Vec<HostCell>,
    fleet: Option<&VerifiedFleet>,
    suspended: &Suspended,
    as_of: i64,
) -> RolloutDetail {
    let specs = fleet.map(|f| f.waves(&r.channel).to_vec()).unwrap_or_default();
    // Hostname order, which the columns show and `wave_failures` reads the fleet's facts in.
    cells.sort_unstable_by(|a, b| a.hostname.cmp(&b.hostname));
    let placed: Vec<Option<u32>> = cells.iter().map(|c| wave_of(fleet, &c.hostname)).collect();
    let mut columns: BTreeMap<Option<u32>, Vec<HostCell>> =
        (0..specs.len().max(1)).map(|i| (Some(i as u32), Vec::new())).collect();
    for wave in &placed {
        columns.entry(*wave).or_default();
    }
    let budgets: BTreeMap<u32, FailureBudgetUse> = match fleet {
        Some(fleet) => columns
            .keys()
            .flatten()
            .filter_map(|&wave| {
                let failures = wave_failures(fleet, &r.channel, wave, cells.iter().map(|c| (&c.hostname, c.state)));
                failures.allowed.map(|max| (wave, FailureBudgetUse { used: failures.failed, max }))
            })
            .collect(),
        None => BTreeMap::new(),
    };
    for (mut cell, wave) in cells.into_iter().zip(placed) {
        cell.suspended = suspended.contains_key(&cell.hostname);
        columns.entry(wave).or_default().push(cell.shown());
    }
    let mut waves: Vec<WaveView> = columns
        .into_iter()
        .map(|(index, hosts)| {
            let spec = index.and_then(|i| specs.get(i as usize));
            let counts = counts(hosts.iter().map(|h| &h.state));
            let converged = counts.get(&HostState::Converged).copied().unwrap_or(0);
            let failure_budget = index.and_then(|wave| budgets.get(&wave).copied());
            WaveView {
                failure_budget,
                converged_percent: percent(converged, hosts.len() as u64),
                counts,
                hosts,
                ..wave_view(r, index, spec)
            }
        })
        .collect();
    // Waves in order, the unstaged column last.
    waves.sort_by_key(|w| w.index.map_or(u64::MAX, u64::from));
    detail(r, waves, as_of, false)
}

/// A wave column as its spec and the rollout's approvals draw it, without hosts or counts.
fn wave_view(r: &Rollout, index: Option<u32>, spec: Option<&WaveSpec>) -> WaveView {
    WaveView {
        index,
        soak_minutes: spec.map_or(0, |s| s.soak_seconds / 60),
        requires_approval: spec.is_some_and(|s| s.requires_approval),
        approved: index.is_some_and(|i| r.approved_waves.contains(&i)),
        hosts: Vec::new(),
        counts: BTreeMap::new(),
        converged_percent: 0.0,
        failure_budget: None,
    }
}

fn detail(r: &Rollout, waves: Vec<WaveView>, as_of: i64, hosts_tallied: bool) -> RolloutDetail {
    RolloutDetail {
        header: rollout_header(r),
        waves,
        as_of,
        first_seq: 0,
        sealed_before: None,
        replayed_at: None,
        hosts_tallied,
    }
}

/// The rollout page of a rollout whose records retention replaced by their tally: each
/// wave's counts (and failure budget's use) without its hosts.
pub fn tallied_detail(r: &Rollout, tally: &Tally, fleet: Option<&VerifiedFleet>, as_of: i64) -> RolloutDetail {
    let specs = fleet.map(|f| f.waves(&r.channel).to_vec()).unwrap_or_default();
    let waves = tally
        .waves
        .iter()
        .map(|wave| {
            let spec = wave.index.and_then(|i| specs.get(i as usize));
            let hosts: u64 = wave.counts.values().sum();
            let converged = wave.counts.get(&HostState::Converged).copied().unwrap_or(0);
            let failed = wave.counts.iter().filter(|(s, _)| s.is_failure()).map(|(_, n)| n).sum();
            WaveView {
                failure_budget: spec
                    .and_then(|s| s.max_failures)
                    .map(|budget| FailureBudgetUse { used: failed, max: budget.allowed(hosts) }),
                converged_percent: percent(converged, hosts),
                counts: wave.counts.clone(),
                ..wave_view(r, wave.index, spec)
            }
        })
        .collect();
    detail(r, waves, as_of, true)
}

#[cfg(test)]
mod tests {
    use engine::testkit::FleetBuilder;
    use shared::api::WaveCounts;
    use shared::{Channel, Hostname};

    use super::*;

    fn state(host: &str, state: HostState, stuck: bool) -> RecordState {
        RecordState { rollout_id: "stable@1".into(), hostname: Hostname::parse(host).unwrap(), state, stuck }
    }

    /// A tally counts each wave's records by state (every wave of the channel, then the
    /// unstaged hosts), and the summary and the tallied page are drawn from it alone.
    #[test]
    fn a_tally_counts_records_per_wave_and_the_summary_and_page_read_it() {
        let fleet = FleetBuilder::new()
            .policy("p", &[(5, false), (0, true), (0, false)], "halt", 30)
            .channel("stable", "p")
            .max_failures("p", 1, serde_json::json!(1))
            .host("a", "stable", &[])
            .host("b", "stable", &[])
            .host("c", "stable", &[])
            .host("d", "stable", &[])
            .waves("stable", &[&["a"], &["b", "c"], &[]])
            .verified();
        let records = [
            state("a", HostState::Converged, false),
            state("b", HostState::Converged, false),
            state("c", HostState::Failed, true),
            state("d", HostState::Pending, false),
        ];
        let channel = Channel::parse("stable").unwrap();
        let tally = tally(&channel, &records, Some(&fleet));
        let wave = |index: Option<u32>, counts: &[(HostState, u64)]| WaveCounts {
            index,
            counts: counts.iter().copied().collect(),
        };
        assert_eq!(
            tally,
            Tally {
                waves: vec![
                    wave(Some(0), &[(HostState::Converged, 1)]),
                    wave(Some(1), &[(HostState::Converged, 1), (HostState::Failed, 1)]),
                    wave(Some(2), &[]),
                    wave(None, &[(HostState::Pending, 1)]),
                ],
                stuck: vec![Hostname::parse("c").unwrap()],
            }
        );

        let mut rollout =
            Rollout::open(shared::RolloutId::parse("stable@1").unwrap(), channel, 1, chrono::DateTime::UNIX_EPOCH);
        rollout.approved_waves.insert(1);
        let summary = rollout_summary(&rollout, tally.clone());
        assert_eq!((summary.hosts, summary.converged_percent), (4, 50.0));
        assert_eq!(summary.counts, [(HostState::Converged, 2), (HostState::Failed, 1), (HostState::Pending, 1)].into());
        assert_eq!((summary.waves, summary.stuck), (tally.waves.clone(), tally.stuck.clone()));

        let page = tallied_detail(&rollout, &tally, Some(&fleet), 7);
        assert!(page.hosts_tallied && page.waves.iter().all(|w| w.hosts.is_empty()));
        let second = &page.waves[1];
        assert_eq!((second.converged_percent, second.requires_approval, second.approved), (50.0, true, true));
        assert_eq!(second.failure_budget, Some(FailureBudgetUse { used: 1, max: 1 }));
        assert_eq!((page.waves[0].soak_minutes, page.waves[3].index), (5, None));
    }
}
