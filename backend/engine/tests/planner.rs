//! The planner (SPEC §5): one scenario per gate, in the documented order, plus wave advance,
//! supersession and determinism.
#![allow(clippy::unwrap_used)]

use engine::planner::PlanAction;
use engine::rollout::RolloutInput;
use engine::testkit::{FleetBuilder, Scenario, t0};
use serde_json::json;
use shared::state::AdvancedBy;
use shared::state::{Gate, HostState, RolloutState};
use shared::{Channel, Closure};

fn hold_of<'a>(actions: &'a [PlanAction], host: &str) -> Option<(Gate, &'a str)> {
    actions.iter().find_map(|a| match a {
        PlanAction::Hold { host: h, gate, reason, .. } if h.as_str() == host => Some((*gate, &**reason)),
        _ => None,
    })
}

fn input(s: &mut Scenario, rollout: &str, input: RolloutInput) {
    let fleet = s.set().fleet.clone();
    let now = s.now;
    s.state.apply_rollout_input(&fleet, &Scenario::rid(rollout), &input, now).unwrap();
}

fn quarantine(s: &mut Scenario, channel: &str, closure: &str) {
    s.quarantines.insert((Channel::parse(channel).unwrap(), Closure::parse(closure).unwrap()));
}

fn single(hosts: &[&str]) -> FleetBuilder {
    let mut b =
        FleetBuilder::new().policy("p", &[(10, false), (10, false), (10, false)], "halt", 30).channel("stable", "p");
    for h in hosts {
        b = b.host(h, "stable", &["web"]);
    }
    b
}

const R: &str = "stable@c0ffee";

#[test]
fn opening_a_rollout_creates_pending_records_and_dispatches_wave_zero() {
    let mut s = Scenario::new(single(&["a", "b"]).manifest_set("c0ffee"));
    let actions = s.tick();
    assert_eq!(actions[0], PlanAction::OpenRollout { rollout_id: Scenario::rid(R) });
    assert_eq!(Scenario::dispatched(&actions), ["a", "b"]);
    assert!(matches!(&actions[1], PlanAction::QueueDispatch { soak_seconds: 0, .. }), "all-at-once channel: soak 0");
    assert_eq!(s.rollout(R).state, RolloutState::Active);
    assert_eq!(s.rollout(R).current_wave, 0);
    // A dispatch that is outstanding is not planned again.
    assert!(s.tick().is_empty());
}

#[test]
fn quarantine_holds_first_even_when_other_gates_would_too() {
    let mut s = Scenario::new(single(&["a", "b"]).waves("stable", &[&["a"], &["b"]]).manifest_set("c0ffee"));
    s.tick();
    input(&mut s, R, RolloutInput::Pause);
    quarantine(&mut s, "stable", "/nix/store/b-v1");
    let actions = s.plan();
    let (gate, reason) = hold_of(&actions, "b").unwrap();
    assert_eq!(gate, Gate::Quarantine, "quarantine is checked before rollout-state and wave");
    assert!(reason.contains("/nix/store/b-v1"));
    assert_eq!(hold_of(&actions, "a").unwrap().0, Gate::RolloutState, "a is only held by the pause");
}

#[test]
fn paused_and_halted_rollouts_dispatch_nothing() {
    let mut s = Scenario::new(single(&["a", "b"]).manifest_set("c0ffee"));
    s.tick();
    input(&mut s, R, RolloutInput::Pause);
    let actions = s.plan();
    assert_eq!(hold_of(&actions, "a"), Some((Gate::RolloutState, "the rollout is paused")));
    input(&mut s, R, RolloutInput::Resume);
    s.tick();
    s.activate(R, "a");
    s.send(R, "a", "Failed", json!({"failedAt": t0(), "failingProbes": ["http"], "policyApplied": "halt"})).unwrap();
    let actions = s.plan();
    assert!(Scenario::dispatched(&actions).is_empty(), "never dispatch after a failure under halt");
    let (gate, reason) = hold_of(&actions, "b").unwrap();
    assert_eq!(gate, Gate::RolloutState);
    assert!(reason.contains("halted") && reason.contains("a failed"), "{reason}");
}

fn two_channels() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("canary", "p")
        .channel("stable", "p")
        .host("c1", "canary", &[])
        .host("s1", "stable", &[])
        .channel_edge("canary", "stable")
}

#[test]
fn channel_edge_holds_until_the_predecessor_rollout_completes() {
    let mut s = Scenario::new(two_channels().manifest_set("c0ffee"));
    let actions = s.tick();
    assert_eq!(Scenario::dispatched(&actions), ["c1"]);
    let (gate, reason) = hold_of(&actions, "s1").unwrap();
    assert_eq!(gate, Gate::ChannelEdge);
    assert!(reason.contains("canary@c0ffee is Active"), "{reason}");
    s.converge("canary@c0ffee", "c1");
    assert_eq!(s.rollout("canary@c0ffee").state, RolloutState::Completed);
    assert_eq!(Scenario::dispatched(&s.tick()), ["s1"]);
}

#[test]
fn channel_edge_with_a_missing_predecessor_rollout_blocks() {
    let mut s = Scenario::new(two_channels().manifest_set("c0ffee"));
    // Open only stable's rollout: canary has a verified manifest but no rollout row.
    let open = PlanAction::OpenRollout { rollout_id: Scenario::rid("stable@c0ffee") };
    let set = s.set().clone();
    engine::planner::apply(&mut s.state, &set, &open, t0());
    let actions = s.plan();
    let (gate, reason) = hold_of(&actions, "s1").unwrap();
    assert_eq!(gate, Gate::ChannelEdge);
    assert!(reason.contains("has not opened"), "{reason}");
}

#[test]
fn later_waves_wait_and_unstaged_hosts_are_held() {
    let mut s = Scenario::new(single(&["a", "b", "z"]).waves("stable", &[&["a"], &["b"]]).manifest_set("c0ffee"));
    let actions = s.tick();
    assert_eq!(Scenario::dispatched(&actions), ["a"]);
    assert_eq!(hold_of(&actions, "b"), Some((Gate::Wave, "waiting for wave 1")));
    assert_eq!(hold_of(&actions, "z"), Some((Gate::Wave, "unstaged")));
}

#[test]
fn a_pass_applies_at_most_its_cap_of_new_holds_and_the_rest_follow_in_the_next_passes() {
    let later = ["b", "c", "d", "e", "f"];
    let fleet = single(&["a", "b", "c", "d", "e", "f"]).waves("stable", &[&["a"], &later]);
    let mut s = Scenario::new(fleet.manifest_set("c0ffee"));
    s.cap_holds_per_pass(2);
    let held = |s: &Scenario| -> Vec<&str> {
        later.into_iter().filter(|h| s.record(R, h).waiting_on.as_ref().is_some_and(|w| w.gate == Gate::Wave)).collect()
    };
    let first = s.tick();
    assert_eq!(Scenario::dispatched(&first), ["a"], "dispatches are not capped");
    assert_eq!(held(&s), ["b", "c"]);
    assert!(s.plan_due() && !s.full_plan_due(), "the rest wait for the next pass, as after hosts moved");
    // That pass (not a plan tick) holds the next two, and the one after it the last.
    let now = s.now;
    s.controller.plan(now, &mut Vec::new());
    assert_eq!(held(&s), ["b", "c", "d", "e"]);
    assert!(s.plan_due());
    s.controller.plan(now, &mut Vec::new());
    assert_eq!(held(&s), later);
    assert!(!s.plan_due(), "nothing is left over");
    assert!(s.tick().is_empty(), "each host was held once");
}

#[test]
fn approval_waves_wait_for_an_operator() {
    let set = FleetBuilder::new()
        .policy("p", &[(0, false), (0, true)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .waves("stable", &[&["a"], &["b"]])
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    s.tick();
    s.converge(R, "a");
    let actions = s.tick();
    assert!(actions.contains(&PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 1 }));
    assert_eq!(hold_of(&actions, "b"), Some((Gate::Approval, "wave 1 requires approval")));
    input(&mut s, R, RolloutInput::Approve { wave: 1 });
    assert_eq!(Scenario::dispatched(&s.tick()), ["b"]);
}

#[test]
fn host_edges_hold_until_the_gating_host_is_converged_or_deferred() {
    let set = single(&["db1", "db2", "web1", "web2"]).edge("db1", "web1").edge("db2", "web2").manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    let actions = s.tick();
    assert_eq!(Scenario::dispatched(&actions), ["db1", "db2"]);
    assert_eq!(hold_of(&actions, "web1"), Some((Gate::HostEdge, "waiting for db1 (Pending)")));
    s.converge(R, "db1");
    let now = s.now;
    s.send(R, "db2", "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now})).unwrap();
    s.send(R, "db2", "ActivationDeferred", json!({"component": "kernel", "deferredAt": now})).unwrap();
    assert_eq!(Scenario::dispatched(&s.tick()), ["web1", "web2"], "Converged and Deferred both pass");
}

#[test]
fn budget_three_candidates_max_in_flight_one_queues_exactly_one() {
    let set = single(&["a", "b", "c"]).budget("web", json!({"tags": ["web"]}), 1).manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    let actions = s.tick();
    assert_eq!(Scenario::dispatched(&actions), ["a"]);
    assert_eq!(hold_of(&actions, "b"), Some((Gate::Budget, "budget web: 1 of 1 in flight")));
    assert_eq!(hold_of(&actions, "c").unwrap().0, Gate::Budget);
    // Outstanding dispatch, then Activating, then Soaking all count.
    assert!(Scenario::dispatched(&s.tick()).is_empty());
    s.activate(R, "a");
    assert_eq!(s.record(R, "a").state, HostState::Soaking);
    assert!(Scenario::dispatched(&s.tick()).is_empty());
    s.converge(R, "a");
    assert_eq!(Scenario::dispatched(&s.tick()), ["b"]);
}

/// Hosts without a closure are in no `hostSet`, so the rollout's records are not its channel's
/// hosts one for one: each record still gets its own host's wave and budgets.
#[test]
fn a_host_set_smaller_than_its_channel_still_gets_each_hosts_own_wave_and_budgets() {
    let set = FleetBuilder::new()
        .policy("p", &[(10, false), (10, false)], "halt", 30)
        .channel("stable", "p")
        .host_with_closure("a", "stable", &["db"], None)
        .host("b", "stable", &["db"])
        .host_with_closure("c", "stable", &["db"], None)
        .host("d", "stable", &["db"])
        .host("e", "stable", &["db"])
        .waves("stable", &[&["a", "d", "e"], &["b", "c"]])
        .budget("db", json!({"tags": ["db"]}), 1)
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    let actions = s.tick();
    // Records b, d, e sit at positions 0, 1, 2; the channel's hosts a, b, c, d, e.
    assert_eq!(Scenario::dispatched(&actions), ["d"]);
    assert_eq!(hold_of(&actions, "b"), Some((Gate::Wave, "waiting for wave 1")));
    assert_eq!(hold_of(&actions, "e"), Some((Gate::Budget, "budget db: 1 of 1 in flight")));
    // The next pass counts d's outstanding dispatch against its budget from the records.
    s.state.records.values_mut().for_each(|records| {
        records.update_each(|_| true, |r| r.waiting_on = None);
    });
    let actions = s.plan();
    assert!(Scenario::dispatched(&actions).is_empty());
    assert_eq!(hold_of(&actions, "e"), Some((Gate::Budget, "budget db: 1 of 1 in flight")));
}

#[test]
fn budgets_count_in_flight_hosts_across_rollouts_and_forget_stale_dispatches() {
    let set = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("blue", "p")
        .channel("green", "p")
        .host("b1", "blue", &["web"])
        .host("g1", "green", &["web"])
        .budget("web", json!({"tags": ["web"]}), 1)
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    let actions = s.tick();
    assert_eq!(Scenario::dispatched(&actions), ["b1"], "blue@ sorts first and takes the budget");
    assert_eq!(hold_of(&actions, "g1").unwrap().0, Gate::Budget);
    // The dispatch was never acknowledged: after stuckAfterMinutes it stops counting.
    s.advance(30 * 60 - 1);
    assert!(Scenario::dispatched(&s.tick()).is_empty());
    s.advance(1);
    assert_eq!(Scenario::dispatched(&s.tick()), ["g1"]);
}

#[test]
fn wave_advance_happens_before_dispatch_in_the_same_pass_and_one_step_at_a_time() {
    let mut s =
        Scenario::new(single(&["a", "b", "c"]).waves("stable", &[&["a"], &["b"], &["c"]]).manifest_set("c0ffee"));
    s.tick();
    s.converge(R, "a");
    // Pretend b is already Converged (e.g. synthesised from a heartbeat): waves 0 and 1 are
    // both complete, yet one pass moves one step only.
    let records = s.state.records.get_mut(&Scenario::rid(R)).unwrap();
    records.update(&Scenario::host("b"), |r| r.state = HostState::Converged).unwrap();
    let actions = s.plan();
    assert_eq!(actions[0], PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 1 });
    assert_eq!(actions.iter().filter(|a| matches!(a, PlanAction::AdvanceWave { .. })).count(), 1);
    // c still waits for wave 2: its recorded hold stands (no action rewrites it).
    assert!(!Scenario::dispatched(&actions).contains(&"c".to_owned()) && hold_of(&actions, "c").is_none());
    let held = s.record(R, "c").waiting_on.clone().unwrap();
    assert_eq!((held.gate, &*held.reason), (Gate::Wave, "waiting for wave 2"));
    s.tick();
    let next = s.tick();
    assert_eq!(next[0], PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 2 });
    assert_eq!(Scenario::dispatched(&next), ["c"], "advanced and dispatched in the same pass");
}

#[test]
fn a_failed_host_blocks_its_wave_and_an_empty_wave_never_auto_advances() {
    let builder = single(&["a", "b", "c"]).waves("stable", &[&["a", "b"], &[], &["c"]]);
    let mut s = Scenario::new(builder.manifest_set("c0ffee"));
    s.tick();
    s.converge(R, "a");
    s.activate(R, "b");
    s.send(R, "b", "Failed", json!({"failedAt": s.now, "failingProbes": [], "policyApplied": "halt"})).unwrap();
    // Even if the rollout were active again, an unexcused Failed host blocks wave 0.
    s.state.rollouts.get_mut(&Scenario::rid(R)).unwrap().state = RolloutState::Active;
    assert!(!s.plan().iter().any(|a| matches!(a, PlanAction::AdvanceWave { .. })));
    s.state.rollouts.get_mut(&Scenario::rid(R)).unwrap().state = RolloutState::Halted;
    input(&mut s, R, RolloutInput::ClearFailure);
    let actions = s.tick();
    assert_eq!(actions[0], PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 1 });
    // Wave 1 is empty: it never auto-advances, however often we plan.
    for _ in 0..5 {
        assert!(!s.tick().iter().any(|a| matches!(a, PlanAction::AdvanceWave { .. })));
    }
    assert_eq!(s.rollout(R).current_wave, 1);
    input(&mut s, R, RolloutInput::AdvanceWave { to: 2, by: AdvancedBy::Operator, force: false });
    assert_eq!(Scenario::dispatched(&s.tick()), ["c"]);
}

#[test]
fn a_newer_release_supersedes_the_open_rollout_and_withdraws_its_dispatches() {
    let fleet = single(&["a", "b"]).waves("stable", &[&["a"], &["b"]]);
    let mut s = Scenario::new(fleet.manifest_set("c0ffee"));
    s.tick();
    assert!(s.record(R, "a").dispatch.is_some());
    let (v2_fleet, v2) = fleet.release_closures("stable", "v2").release("d00d", t0() + chrono::Duration::minutes(5));
    let mut manifests: Vec<_> = s.set().iter().cloned().collect();
    manifests.extend(v2);
    // The new release comes with a new fleet document (new closures, new hash).
    s.upload(engine::state::ManifestSet::new(v2_fleet, manifests));
    let actions = s.tick();
    assert_eq!(actions[0], PlanAction::OpenRollout { rollout_id: Scenario::rid("stable@d00d") });
    assert_eq!(s.rollout(R).state, RolloutState::Superseded);
    assert_eq!(s.rollout(R).superseded_by, Some(Scenario::rid("stable@d00d")));
    assert!(s.record(R, "a").dispatch.is_none(), "the old dispatch was withdrawn");
    assert_eq!(Scenario::dispatched(&actions), ["a"]);
    assert_eq!(s.record("stable@d00d", "a").target_closure.as_str(), "/nix/store/a-v2");
}

#[test]
fn a_release_with_an_identical_host_set_opens_nothing() {
    let fleet = single(&["a", "b"]);
    let mut s = Scenario::new(fleet.manifest_set("c0ffee"));
    s.tick();
    let (_, again) = fleet.release("beef", t0() + chrono::Duration::minutes(5));
    let mut manifests: Vec<_> = s.set().iter().cloned().collect();
    manifests.extend(again);
    let fleet = s.set().fleet.clone();
    s.upload(engine::state::ManifestSet::new(fleet, manifests));
    assert!(!s.tick().iter().any(|a| matches!(a, PlanAction::OpenRollout { .. })));
    assert!(!s.state.rollouts.contains_key(&Scenario::rid("stable@beef")));
}

#[test]
fn equal_inputs_give_equal_actions_in_rollout_then_host_order() {
    let set = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("zeta", "p")
        .channel("alpha", "p")
        .host("m", "zeta", &[])
        .host("b", "alpha", &[])
        .host("a", "zeta", &[])
        .host("k", "alpha", &[])
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    s.tick();
    let mut fresh = s.clone();
    for r in fresh.state.records.values_mut() {
        r.update_each(|_| true, |rec| rec.dispatch = None);
    }
    let first = fresh.plan();
    assert_eq!(first, fresh.plan());
    assert_eq!(first, fresh.clone().plan());
    let order: Vec<String> = first
        .iter()
        .map(|a| match a {
            PlanAction::QueueDispatch { rollout_id, host, .. } => format!("{rollout_id}/{host}"),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(order, ["alpha@c0ffee/b", "alpha@c0ffee/k", "zeta@c0ffee/a", "zeta@c0ffee/m"]);
}

#[test]
fn unchanged_holds_are_not_logged_again() {
    let mut s = Scenario::new(single(&["a", "b"]).waves("stable", &[&["a"], &["b"]]).manifest_set("c0ffee"));
    s.tick();
    let set = s.set().clone();
    let mut logged = 0;
    for _ in 0..100 {
        s.advance(15);
        let actions = s.plan();
        assert!(hold_of(&actions, "b").is_none(), "a recorded hold is not planned again: {actions:?}");
        let now = s.now;
        for action in actions {
            logged += engine::planner::apply(&mut s.state, &set, &action, now).len();
        }
    }
    assert_eq!(logged, 0, "100 passes of a waiting fleet log nothing");
    let waiting = s.record(R, "b").waiting_on.clone().unwrap();
    assert_eq!((waiting.gate, waiting.since), (Gate::Wave, t0()), "since is when the hold began");

    // When the reason changes (here: the stored one is stale), the hold is planned again.
    let stale = shared::state::WaitingOn { gate: Gate::Wave, reason: "stale".into(), since: t0(), until: None };
    let records = s.state.records.get_mut(&Scenario::rid(R)).unwrap();
    records.update(&Scenario::host("b"), |r| r.waiting_on = Some(stale)).unwrap();
    assert_eq!(hold_of(&s.plan(), "b"), Some((Gate::Wave, "waiting for wave 1")));
}

#[test]
fn a_pass_over_some_rollouts_answers_for_them_as_a_full_pass_does_and_counts_budgets_fleet_wide() {
    let set = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("blue", "p")
        .channel("green", "p")
        .host("b1", "blue", &["web"])
        .host("b2", "blue", &[])
        .host("g1", "green", &["web"])
        .host("g2", "green", &[])
        .budget("web", json!({"tags": ["web"]}), 1)
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    let opened = s.plan();
    for action in &opened {
        let (set, now) = (s.set().clone(), s.now);
        drop(engine::planner::apply(&mut s.state, &set, action, now));
    }
    // Before anything is dispatched, green alone: g1 takes the free budget, g2 goes too.
    let green = std::collections::BTreeSet::from([Scenario::rid("green@c0ffee")]);
    let scoped = engine::planner::plan_rollouts(s.set(), &s.state, &s.quarantines, s.now, Some(&green));
    assert_eq!(Scenario::dispatched(&scoped), ["g1", "g2"]);
    // The full pass gives the budget to blue (it sorts first); green's share of it is what a
    // pass over green alone answers once blue's host is in flight.
    let full = s.plan();
    assert_eq!(Scenario::dispatched(&full), ["b1", "b2", "g2"]);
    for action in &full {
        let (set, now) = (s.set().clone(), s.now);
        drop(engine::planner::apply(&mut s.state, &set, action, now));
    }
    let scoped = engine::planner::plan_rollouts(s.set(), &s.state, &s.quarantines, s.now, Some(&green));
    assert!(scoped.is_empty(), "g1's budget hold is recorded, b1 holds the budget: {scoped:?}");
    assert_eq!(s.record("green@c0ffee", "g1").waiting_on.as_ref().map(|w| w.gate), Some(Gate::Budget));
}

#[test]
fn hosts_held_for_one_reason_share_it_and_records_read_back_share_it_again() {
    let mut s = Scenario::new(
        single(&["a", "b", "c", "d"]).waves("stable", &[&["a"], &["b", "c", "d"]]).manifest_set("c0ffee"),
    );
    s.tick();
    let reason = |s: &Scenario, host: &str| s.record(R, host).waiting_on.clone().unwrap().reason;
    let held = ["b", "c", "d"].map(|h| reason(&s, h));
    assert_eq!(&*held[0], "waiting for wave 1");
    assert!(held.iter().all(|r| std::sync::Arc::ptr_eq(r, &held[0])), "one pass's holds share the reason");

    // Read back from the database, each record has its own copy: the planner still sees the
    // holds as recorded, and sharing them again makes them one.
    for records in s.state.records.values_mut() {
        records.update_each(
            |_| true,
            |record| {
                *record = serde_json::from_value(serde_json::to_value(&*record).unwrap()).unwrap();
            },
        );
    }
    assert!(!std::sync::Arc::ptr_eq(&reason(&s, "b"), &reason(&s, "c")));
    assert!(s.plan().is_empty(), "nothing to hold again");
    s.state.share_hold_reasons();
    let held = ["b", "c", "d"].map(|h| reason(&s, h));
    assert!(held.iter().all(|r| std::sync::Arc::ptr_eq(r, &held[0])));
    assert!(s.plan().is_empty());
}
