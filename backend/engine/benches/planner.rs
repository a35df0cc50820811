//! Planner pass at fleet scale (SPEC §13: 10,000 hosts, 100 active rollouts, ≤ 10 ms), and
//! how it grows: 1,000 / 10,000 / 50,000 / 100,000 hosts (10 / 100 / 500 / 1,000 rollouts of
//! 100 hosts; the full passes only at 100,000).
//!
//! `cargo bench -p engine --bench planner` (`plan_next`: a full pass; `plan_next_settled`: the
//! same once its actions were applied; `plan_moved`: the pass after hosts moved in one rollout;
//! `*_policies`: the same with the policies of SPEC §17 in force, see [`with_policies`])
//!
//! The fleet at 10,000: 100 channels of 100 hosts, each in 4 waves of 25 (wave 2 needs approval),
//! a host edge inside every wave, channel edges chaining every tenth channel to the next,
//! and 4 disruption budgets by tag. The state is mid-rollout: in half the channels wave 0
//! has converged and wave 1 is in flight; elsewhere wave 0 is activating or soaking.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeSet;

use engine::planner::{PlanAction, plan_next, plan_rollouts};
use engine::testkit::{FleetBuilder, Scenario, t0};
use serde_json::json;
use shared::api::OperatorAction;
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

const EVERY_DAY: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The policies of SPEC §17 on the same fleet, in force and looked at for every host, but
/// holding only a few: every host is covered by an open maintenance window (one host by a
/// closed one), the fleet's own freeze of one host is in force (and one of the whole fleet
/// next week is not), 10 % failure budgets on every wave; in the state, an operator freeze
/// of one host (by a selector) and one host in a hundred suspended. `holding`: instead, the
/// closed window covers every batch host (a quarter), and the operator freezes a whole
/// channel — what a pass costs when the policies hold many hosts.
fn with_policies(b: FleetBuilder, holding: bool) -> FleetBuilder {
    let next_week = t0() + chrono::Duration::days(7);
    let closed = if holding { json!({"tags": ["batch"]}) } else { json!({"hosts": ["ch000-h003"]}) };
    let mut b = b
        .window("daytime", json!({"tagsAny": ["web", "db", "cache"]}), &EVERY_DAY, "00:00", "24:00", "UTC")
        // Closed at the benchmark's `now`, 12:00 UTC.
        .window("batch-night", closed, &EVERY_DAY, "02:00", "04:00", "Europe/Berlin")
        .freeze("next-week", json!({"all": true}), next_week, next_week + chrono::Duration::days(1), "holidays")
        .freeze("one-host", json!({"hosts": ["ch000-h007"]}), t0(), next_week, "hardware check");
    for wave in 0..4 {
        b = b.max_failures("p", wave, json!("10%"));
    }
    b
}

fn mid_rollout(channels: usize) -> Scenario {
    mid_rollout_of(fleet(channels))
}

fn mid_rollout_with_policies(channels: usize, holding: bool) -> Scenario {
    let mut s = mid_rollout_of(with_policies(fleet(channels), holding));
    let selector = if holding { json!({"channel": "ch001"}) } else { json!({"hosts": ["ch001-h011"]}) };
    let selector = serde_json::from_value(selector).unwrap();
    s.act(OperatorAction::Freeze { name: Some("op".into()), selector: Some(selector), until: None }, "bench").unwrap();
    let hosts: Vec<_> = s.set().fleet.doc.hosts.keys().step_by(100).cloned().collect();
    for hostname in hosts {
        s.act(OperatorAction::SuspendHost { hostname }, "bench").unwrap();
    }
    s
}

fn mid_rollout_of(fleet: FleetBuilder) -> Scenario {
    let set = fleet.manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    // Opening: a pass applies at most `HOLDS_PER_PASS` new holds, so a fleet of more than
    // that takes a few passes to have every hold recorded.
    for _ in 0..100 {
        if !s.tick().iter().any(|a| matches!(a, PlanAction::Hold { .. })) {
            break;
        }
    }
    // Make every rollout dispatchable (channel edges would otherwise hold 90% of them), then
    // move the fleet along by hand: the benchmark measures planning, not the machines.
    let ids: Vec<_> = s.state.rollouts.keys().cloned().collect();
    for (n, id) in ids.iter().enumerate() {
        let records = s.state.records.get_mut(id).unwrap();
        let mut i = 0;
        records.update_each(
            |_| true,
            |record| {
                let wave = i / (HOSTS_PER_CHANNEL / 4);
                i += 1;
                record.dispatch = None;
                record.state = match (n % 2, wave) {
                    (0, 0) => HostState::Converged,
                    (0, 1) if i % 3 == 0 => HostState::Soaking,
                    (0, 1) if i % 3 == 1 => HostState::Activating,
                    (1, 0) if i % 2 == 0 => HostState::Soaking,
                    (1, 0) => HostState::Activating,
                    _ => HostState::Pending,
                };
            },
        );
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_next");
    for channels in [10, 100, 500, 1000] {
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
    for channels in [10, 100, 500, 1000] {
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

    // The full passes again with the policies in force (compare with the groups above, and
    // with those groups measured before the policies existed: BENCHMARKS.md).
    for (name, settle, holding) in [
        ("plan_next_policies", false, false),
        ("plan_next_settled_policies", true, false),
        ("plan_next_settled_policies_holding", true, true),
    ] {
        let mut group = c.benchmark_group(name);
        for channels in [10, 100, 500] {
            let mut s = mid_rollout_with_policies(channels, holding);
            if settle {
                s.tick();
            }
            let hosts: usize = s.state.records.values().map(|r| r.len()).sum();
            eprintln!("{name} over {hosts} hosts yields {} actions", s.plan().len());
            group.bench_function(format!("{hosts} hosts {channels} rollouts"), |b| {
                b.iter(|| plan_next(s.set(), &s.state, &s.quarantines, s.now));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
