//! Planner pass at fleet scale (SPEC §13: 10,000 hosts, 100 active rollouts, ≤ 10 ms), and
//! how it grows: 1,000 / 10,000 / 50,000 hosts (10 / 100 / 500 rollouts of 100 hosts).
//!
//! `cargo bench -p engine --bench planner` (`plan_next`: a full pass; `plan_next_settled`: the
//! same once its actions were applied; `plan_moved`: the pass after hosts moved in one rollout)
//!
//! The fleet at 10,000: 100 channels of 100 hosts, each in 4 waves of 25 (wave 2 needs approval),
//! a host edge inside every wave, channel edges chaining every tenth channel to the next,
//! and 4 disruption budgets by tag. The state is mid-rollout: in half the channels wave 0
//! has converged and wave 1 is in flight; elsewhere wave 0 is activating or soaking.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeSet;

use engine::planner::{plan_next, plan_rollouts};
use engine::testkit::{FleetBuilder, Scenario};
use serde_json::json;
use shared::state::HostState;

const HOSTS_PER_CHANNEL: usize = 100;

fn fleet(channels: usize) -> FleetBuilder {
    let mut b =
        FleetBuilder::new().policy("p", &[(10, false), (10, false), (10, true), (10, false)], "rollback-and-halt", 30);
    let tags = ["web", "db", "cache", "batch"];
    for c in 0..channels {
        let channel = format!("ch{c:03}");
        b = b.channel(&channel, "p");
        let hosts: Vec<String> = (0..HOSTS_PER_CHANNEL).map(|h| format!("{channel}-h{h:03}")).collect();
        for (i, h) in hosts.iter().enumerate() {
            b = b.host(h, &channel, &[tags[i % tags.len()]]);
        }
        let waves: Vec<Vec<&str>> =
            hosts.chunks(HOSTS_PER_CHANNEL / 4).map(|w| w.iter().map(String::as_str).collect()).collect();
        let wave_refs: Vec<&[&str]> = waves.iter().map(Vec::as_slice).collect();
        b = b.waves(&channel, &wave_refs);
        for w in &waves {
            b = b.edge(w[0], w[1]);
        }
        if c % 10 != 9 {
            b = b.channel_edge(&channel, &format!("ch{:03}", c + 1));
        }
    }
    for tag in tags {
        b = b.budget(tag, json!({ "tags": [tag] }), channels as u32 * 20);
    }
    b
}

fn mid_rollout(channels: usize) -> Scenario {
    let set = fleet(channels).manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    s.tick();
    // Make every rollout dispatchable (channel edges would otherwise hold 90% of them), then
    // move the fleet along by hand: the benchmark measures planning, not the machines.
    let ids: Vec<_> = s.state.rollouts.keys().cloned().collect();
    for (n, id) in ids.iter().enumerate() {
        let records = s.state.records.get_mut(id).unwrap();
        for (i, record) in records.values_mut().enumerate() {
            let wave = i / (HOSTS_PER_CHANNEL / 4);
            record.dispatch = None;
            record.state = match (n % 2, wave) {
                (0, 0) => HostState::Converged,
                (0, 1) if i % 3 == 0 => HostState::Soaking,
                (0, 1) if i % 3 == 1 => HostState::Activating,
                (1, 0) if i % 2 == 0 => HostState::Soaking,
                (1, 0) => HostState::Activating,
                _ => HostState::Pending,
            };
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_next");
    for channels in [10, 100, 500] {
        let s = mid_rollout(channels);
        let actions = s.plan();
        let hosts: usize = s.state.records.values().map(|r| r.len()).sum();
        assert_eq!((s.state.rollouts.len(), hosts), (channels, channels * HOSTS_PER_CHANNEL));
        eprintln!("plan pass over {hosts} hosts / {channels} rollouts yields {} actions", actions.len());
        group.bench_function(format!("{hosts} hosts {channels} rollouts"), |b| {
            b.iter(|| plan_next(s.set(), &s.state, &s.quarantines, s.now));
        });
    }
    group.finish();

    // The same fleet once the server has applied that pass (waves advanced, hosts dispatched,
    // holds recorded): what each plan tick of a converging fleet then looks at.
    let mut group = c.benchmark_group("plan_next_settled");
    for channels in [10, 100, 500] {
        let mut s = mid_rollout(channels);
        s.tick();
        let hosts: usize = s.state.records.values().map(|r| r.len()).sum();
        eprintln!("settled pass over {hosts} hosts yields {} actions", s.plan().len());
        group.bench_function(format!("{hosts} hosts {channels} rollouts"), |b| {
            b.iter(|| plan_next(s.set(), &s.state, &s.quarantines, s.now));
        });
    }
    group.finish();

    // The pass the reducer runs after hosts moved in one rollout: that rollout alone (plus,
    // in the server, rollouts with budget holds and successor channels; none here). ch000 has
    // wave-1 hosts to dispatch, so the pass also counts budgets over the whole fleet; in ch001
    // every Pending host waits for a later wave, so nothing gets that far.
    let mut group = c.benchmark_group("plan_moved");
    for channels in [10, 100, 500] {
        let s = mid_rollout(channels);
        let hosts: usize = s.state.records.values().map(|r| r.len()).sum();
        for (label, rollout) in [("dispatching", 0), ("waiting", 1)] {
            let id = s.state.rollouts.keys().nth(rollout).unwrap().clone();
            let scope = BTreeSet::from([id]);
            group.bench_function(format!("{hosts} hosts, 1 rollout {label}"), |b| {
                b.iter(|| plan_rollouts(s.set(), &s.state, &s.quarantines, s.now, Some(&scope)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
