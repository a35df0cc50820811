//! Property tests: random event sequences through the host machine and random operator and
//! host inputs through the rollout machine keep the invariants of SPEC §13.
#![allow(clippy::unwrap_used)]

use chrono::Duration;
use engine::host::{HostRecord, StepPolicy, TransitionError, step};
use engine::rollout::RolloutInput;
use engine::testkit::{FleetBuilder, Scenario, at};
use proptest::prelude::*;
use serde_json::json;
use shared::manifest::HealthFailurePolicy;
use shared::state::AdvancedBy;
use shared::state::{HostEvent, HostState, RolloutState};
use shared::{Channel, Closure, Hostname, RolloutId};

const TARGET: &str = "/nix/store/t-v2";
const OTHER: &str = "/nix/store/t-v1";

fn arb_event() -> impl Strategy<Value = HostEvent> {
    let closure = prop_oneof![Just(TARGET), Just(OTHER)];
    (0u8..9, 0u64..40, 0i64..2000, closure, prop_oneof![Just(0i32), Just(1)], any::<bool>(), any::<bool>()).prop_map(
        |(kind, seq, t, closure, exit, enforce, pass)| {
            let when = at(t);
            let value = match kind {
                0 => json!({"kind":"DispatchAck","seq":seq,"currentClosure":OTHER,"receivedAt":when}),
                1 => json!({"kind":"ActivationStarted","seq":seq,"startedAt":when}),
                2 => json!({"kind":"ActivationCompleted","seq":seq,"observedClosure":closure,"exitCode":exit,"completedAt":when}),
                3 => json!({"kind":"ActivationDeferred","seq":seq,"component":"kernel","deferredAt":when}),
                4 => json!({"kind":"ActivationFailed","seq":seq,"exitCode":2,"stderrTail":"x","failedAt":when}),
                5 => json!({"kind":"ProbeResult","seq":seq,"probe":if enforce {"http"} else {"metrics"},
                            "mode":if enforce {"enforce"} else {"observe"},"status":if pass {"pass"} else {"fail"},"observedAt":when}),
                6 => json!({"kind":"Failed","seq":seq,"failedAt":when,"failingProbes":[],"policyApplied":"halt"}),
                7 => json!({"kind":"RollbackComplete","seq":seq,"revertedTo":OTHER,"completedAt":when}),
                _ => json!({"kind":"Converged","seq":seq,"convergedAt":when,"currentClosure":closure}),
            };
            serde_json::from_value(value).unwrap()
        },
    )
}

/// A fresh Pending record of host h in stable@ab, targeting TARGET.
fn pending_record() -> HostRecord {
    HostRecord::pending(
        RolloutId::parse("stable@ab").unwrap(),
        Hostname::parse("h").unwrap(),
        Channel::parse("stable").unwrap(),
        Closure::parse(TARGET).unwrap(),
        at(0),
    )
}

/// One step of an agent following the protocol towards `target`: `phase` says where it is
/// (0 dispatched, 1 activating, 2 soaking, 3 failed, 4 activation failed, 5 done), `choice`
/// picks among what may come next there (a failed activation, a failing probe, a Failed).
fn protocol_event(
    phase: &mut u8,
    seq: u64,
    choice: u8,
    target: &str,
    when: chrono::DateTime<chrono::Utc>,
) -> HostEvent {
    let value = match (*phase, choice % 8) {
        (0, _) => {
            *phase = 1;
            json!({"kind":"DispatchAck","seq":seq,"currentClosure":OTHER,"receivedAt":when})
        }
        (1, 0) => json!({"kind":"ActivationStarted","seq":seq,"startedAt":when}),
        (1, 1) => {
            *phase = 4;
            json!({"kind":"ActivationFailed","seq":seq,"exitCode":2,"stderrTail":"x","failedAt":when})
        }
        (1, _) => {
            *phase = 2;
            json!({"kind":"ActivationCompleted","seq":seq,"observedClosure":target,"exitCode":0,"completedAt":when})
        }
        // Converged is refused until the soak is over; the agent tries again.
        (2, 0..=3) => json!({"kind":"Converged","seq":seq,"convergedAt":when,"currentClosure":target}),
        (2, 4 | 5) => {
            json!({"kind":"ProbeResult","seq":seq,"probe":"http","mode":"enforce","status":"pass","observedAt":when})
        }
        (2, 6) => {
            json!({"kind":"ProbeResult","seq":seq,"probe":"http","mode":"enforce","status":"fail","observedAt":when})
        }
        (2, _) => {
            *phase = 3;
            json!({"kind":"Failed","seq":seq,"failedAt":when,"failingProbes":["http"],"policyApplied":"rollback-and-halt"})
        }
        (3 | 4, _) => {
            *phase = 5;
            json!({"kind":"RollbackComplete","seq":seq,"revertedTo":OTHER,"completedAt":when})
        }
        _ => json!({"kind":"ActivationStarted","seq":seq,"startedAt":when}),
    };
    serde_json::from_value(value).unwrap()
}

/// Sequences shaped like an agent's: mostly the protocol's next step with the next seq (so
/// they reach Soaking, Converged, Failed and Reverted), with arbitrary events mixed in
/// (duplicates, reorders, illegal kinds). See `the_generators_reach_every_state`.
fn arb_agent_sequence() -> impl Strategy<Value = Vec<HostEvent>> {
    prop::collection::vec((0u8..10, any::<u8>(), arb_event()), 1..40).prop_map(|steps| {
        let (mut phase, mut seq) = (0u8, 0u64);
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (roll, choice, noise))| {
                if roll < 8 {
                    seq += 1;
                    // Time moves on: a soak of 300 s is over after a few steps.
                    protocol_event(&mut phase, seq, choice, TARGET, at(i as i64 * 100))
                } else {
                    noise
                }
            })
            .collect()
    })
}

fn arb_sequence() -> impl Strategy<Value = Vec<HostEvent>> {
    prop_oneof![arb_agent_sequence(), prop::collection::vec(arb_event(), 1..60)]
}

/// The states a sequence takes a fresh record through (every state it is in after an event).
fn states_visited(events: &[HostEvent]) -> std::collections::BTreeSet<HostState> {
    let policy = StepPolicy { soak: Duration::seconds(300), on_health_failure: HealthFailurePolicy::Halt };
    let mut record = pending_record();
    let mut seen = std::collections::BTreeSet::from([record.state]);
    for (i, event) in events.iter().enumerate() {
        if let Ok(t) = step(&record, event, at(i as i64 * 100), &policy) {
            record = t.record;
            seen.insert(record.state);
        }
    }
    seen
}

/// Per state, the share (%) of 1,000 sequences drawn from `strategy` (a fixed seed) that take
/// a fresh record through it.
fn reach(strategy: impl Strategy<Value = Vec<HostEvent>>) -> std::collections::BTreeMap<HostState, usize> {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut reached: std::collections::BTreeMap<HostState, usize> = HostState::ALL.iter().map(|s| (*s, 0)).collect();
    let cases = 1000;
    for _ in 0..cases {
        let events = strategy.new_tree(&mut runner).unwrap().current();
        for state in states_visited(&events) {
            *reached.entry(state).or_default() += 1;
        }
    }
    reached.values_mut().for_each(|n| *n = *n * 100 / cases);
    reached
}

/// The generators reach deep states, not only the first few: the share of generated sequences
/// that take a record through each state, printed for random events alone and for the
/// mixture the property uses (agent-shaped sequences and random ones).
#[test]
fn the_generators_reach_every_state() {
    let show = |r: &std::collections::BTreeMap<HostState, usize>| {
        r.iter().map(|(s, n)| format!("{s} {n} %")).collect::<Vec<_>>().join(", ")
    };
    let random = reach(prop::collection::vec(arb_event(), 1..60));
    let mixed = reach(arb_sequence());
    println!("random events alone reach: {}", show(&random));
    println!("the property's sequences reach: {}", show(&mixed));
    for state in
        [HostState::Activating, HostState::Soaking, HostState::Converged, HostState::Failed, HostState::Reverted]
    {
        assert!(mixed[&state] >= 10, "only {} % of sequences reach {state}: {}", mixed[&state], show(&mixed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn host_machine_invariants_hold_for_any_event_sequence(events in arb_sequence()) {
        let policy = StepPolicy { soak: Duration::seconds(300), on_health_failure: HealthFailurePolicy::Halt };
        let mut record = pending_record();
        for (i, event) in events.iter().enumerate() {
            let before = record.clone();
            match step(&before, event, at(i as i64 * 100), &policy) {
                Ok(t) => {
                    prop_assert!(!before.state.is_terminal(), "terminal {} accepted {}", before.state, event.kind());
                    prop_assert!(t.record.last_event_seq > before.last_event_seq, "seq strictly grows on every accepted event");
                    prop_assert_eq!(t.record.last_event_seq, event.seq());
                    record = t.record;
                }
                // (A rejected event cannot change the record: `step` only borrows it.)
                Err(e) => prop_assert_eq!(
                    matches!(e, TransitionError::Duplicate { .. }),
                    event.seq() <= record.last_event_seq,
                    "Duplicate exactly when seq <= lastEventSeq, whatever the state: {:?}", e
                ),
            }
            if record.state == HostState::Converged {
                prop_assert_eq!(record.current_closure.as_ref().map(Closure::as_str), Some(TARGET), "Converged ⇒ on target");
            }
            if record.state == HostState::Soaking {
                prop_assert_eq!(record.current_closure.as_ref().map(Closure::as_str), Some(TARGET), "Soaking only on target");
                prop_assert!(record.soak_due_at.is_some());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Rollout(u8, u32, bool),
    Event(usize, HostEvent),
    /// Host h's agent takes the protocol's next step from where its record is.
    Agent(usize, u8),
    Tick(i64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..8, 0u32..4, any::<bool>()).prop_map(|(k, w, f)| Op::Rollout(k, w, f)),
        1 => (0usize..4, arb_event()).prop_map(|(h, e)| Op::Event(h, e)),
        4 => (0usize..4, any::<u8>()).prop_map(|(h, c)| Op::Agent(h, c)),
        2 => (0i64..900).prop_map(Op::Tick),
    ]
}

/// What an agent sends next for `record` (the next seq; `choice` picks among failing and
/// succeeding), or nothing when it has nothing to say (no dispatch yet, or done).
fn agent_step(record: &HostRecord, choice: u8, now: chrono::DateTime<chrono::Utc>) -> Option<HostEvent> {
    let mut phase = match record.state {
        HostState::Pending if record.dispatch.is_some() => 0,
        HostState::Activating | HostState::Deferred => 1,
        HostState::Soaking => 2,
        HostState::Failed => 3,
        _ => return None,
    };
    Some(protocol_event(&mut phase, record.last_event_seq + 1, choice, record.target_closure.as_str(), now))
}

const HOSTS: [&str; 4] = ["a", "b", "c", "d"];
const R: &str = "stable@c0ffee";

fn scenario() -> Scenario {
    let mut b =
        FleetBuilder::new().policy("p", &[(5, false), (5, true), (5, false)], "halt", 30).channel("stable", "p");
    for h in HOSTS {
        b = b.host(h, "stable", &[]).release_closures("stable", "v2");
    }
    let mut s = Scenario::new(b.waves("stable", &[&["a"], &["b", "c"], &["d"]]).manifest_set("c0ffee"));
    s.tick();
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rollout_machine_invariants_hold_for_any_inputs(ops in prop::collection::vec(arb_op(), 1..50)) {
        let mut s = scenario();
        let fleet = s.set().fleet.clone();
        let id = Scenario::rid(R);
        for op in ops {
            let before = s.rollout(R).clone();
            match op {
                Op::Rollout(kind, wave, force) => {
                    let input = match kind {
                        0 => RolloutInput::Pause,
                        1 => RolloutInput::Resume,
                        2 => RolloutInput::ClearFailure,
                        3 => RolloutInput::Approve { wave },
                        4 => RolloutInput::AdvanceWave { to: wave, by: AdvancedBy::Operator, force },
                        5 => RolloutInput::Evaluate,
                        6 => RolloutInput::HostFailed { host: Scenario::host("a"), reason: "r".into() },
                        _ => RolloutInput::Supersede { by: Scenario::rid("stable@d00d") },
                    };
                    let now = s.now;
                    let result = s.state.apply_rollout_input(&fleet, &id, &input, now);
                    if result.is_err() {
                        prop_assert_eq!(s.rollout(R), &before, "a refused input changes nothing");
                    }
                }
                Op::Event(h, event) => {
                    // Events arrive with whatever seq the agent sends; rejections are fine.
                    let now = s.now;
                    let _ = s.state.apply_host_event(&fleet, &id, &Scenario::host(HOSTS[h]), &event, now);
                }
                Op::Agent(h, choice) => {
                    let now = s.now;
                    if let Some(event) = agent_step(s.record(R, HOSTS[h]), choice, now) {
                        let _ = s.state.apply_host_event(&fleet, &id, &Scenario::host(HOSTS[h]), &event, now);
                    }
                }
                Op::Tick(secs) => {
                    s.advance(secs);
                    s.tick();
                }
            }
            let after = s.rollout(R);
            prop_assert!(after.current_wave >= before.current_wave, "currentWave only grows");
            prop_assert!((after.current_wave as usize) < 3);
            if before.state.is_terminal() {
                prop_assert_eq!(after, &before, "terminal states are absorbing");
            }
            if !after.state.is_terminal() {
                // A superseded rollout keeps the record of why it had halted.
                prop_assert_eq!(after.state == RolloutState::Halted, after.halt.is_some(), "Halted ⇔ halt recorded");
            }
            if after.state == RolloutState::Completed {
                let done = s.state.records[&id].values().all(|r| r.state == HostState::Converged || r.excused);
                prop_assert!(done, "Completed ⇒ every record Converged or excused");
            }
            for record in s.state.records[&id].values() {
                if record.state == HostState::Converged {
                    prop_assert_eq!(&record.current_closure, &Some(record.target_closure.clone()), "Converged ⇒ on target");
                }
            }
            briefs_agree(&s.state.records[&id])?;
        }
    }
}

/// Each record's brief says what the record says (every change went through `Records`).
fn briefs_agree(records: &engine::records::Records) -> Result<(), TestCaseError> {
    prop_assert_eq!(records.briefs().len(), records.len());
    for (record, brief) in records.values().zip(records.briefs()) {
        let said = (brief.state, brief.dispatched, brief.excused, brief.stuck, brief.held);
        let waiting = record.waiting_on.as_ref();
        let is = (record.state, record.dispatch.is_some(), record.excused, record.stuck, waiting.map(|w| w.gate));
        prop_assert_eq!(said, is, "the brief of {}", record.hostname);
        if let Some(w) = waiting {
            prop_assert!(brief.holds(w.gate, &w.reason), "the brief of {} holds its reason", record.hostname);
        }
    }
    Ok(())
}

/// The rollout property's operations reach deep states too: out of 300 generated runs (a
/// fixed seed), the share in which some host reaches each state and the rollout each state.
/// (Measured 2026-12-01: a host reaches Soaking in 57 %, Converged 19 %, Failed 26 %,
/// Reverted 19 % of runs; the rollout Halted 26 %. Before the agent-shaped operations, with
/// random events only: Soaking and Converged 0 %.)
#[test]
fn the_rollout_operations_reach_deep_states() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(arb_op(), 1..50);
    let (mut hosts, mut rollouts): (
        std::collections::BTreeMap<HostState, usize>,
        std::collections::BTreeMap<RolloutState, usize>,
    ) = Default::default();
    let runs = 300;
    for _ in 0..runs {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut s = scenario();
        let fleet = s.set().fleet.clone();
        let id = Scenario::rid(R);
        let (mut seen_hosts, mut seen_rollout) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        for op in ops {
            let now = s.now;
            match op {
                Op::Agent(h, choice) => {
                    if let Some(event) = agent_step(s.record(R, HOSTS[h]), choice, now) {
                        let _ = s.state.apply_host_event(&fleet, &id, &Scenario::host(HOSTS[h]), &event, now);
                    }
                }
                Op::Event(h, event) => {
                    let _ = s.state.apply_host_event(&fleet, &id, &Scenario::host(HOSTS[h]), &event, now);
                }
                Op::Tick(secs) => {
                    s.advance(secs);
                    s.tick();
                }
                Op::Rollout(kind, wave, _) => {
                    let input = match kind {
                        0 => RolloutInput::Pause,
                        1 => RolloutInput::Resume,
                        2 => RolloutInput::ClearFailure,
                        _ => RolloutInput::Approve { wave },
                    };
                    let _ = s.state.apply_rollout_input(&fleet, &id, &input, now);
                }
            }
            seen_hosts.extend(s.state.records[&id].values().map(|r| r.state));
            seen_rollout.insert(s.rollout(R).state);
        }
        for state in seen_hosts {
            *hosts.entry(state).or_default() += 1;
        }
        for state in seen_rollout {
            *rollouts.entry(state).or_default() += 1;
        }
    }
    let host_share = |s| hosts.get(&s).copied().unwrap_or(0) * 100 / runs;
    let rollout_share = |s| rollouts.get(&s).copied().unwrap_or(0) * 100 / runs;
    let table: Vec<String> = HostState::ALL.iter().map(|s| format!("{s} {} %", host_share(*s))).collect();
    let rtable: Vec<String> = RolloutState::ALL.iter().map(|s| format!("{s} {} %", rollout_share(*s))).collect();
    println!("runs in which a host reaches: {}", table.join(", "));
    println!("runs in which the rollout reaches: {}", rtable.join(", "));
    for state in [HostState::Soaking, HostState::Converged, HostState::Failed] {
        assert!(host_share(state) >= 10, "{}", table.join(", "));
    }
    // (Completing takes every host of three waves through the protocol and an approval:
    // rarely within 50 operations. The scenario tests and the simulator cover completion.)
    assert!(rollout_share(RolloutState::Halted) >= 5, "{}", rtable.join(", "));
}

/// Times at and near the ends of what chrono represents (±262,143 years), and ordinary ones.
fn arb_time() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
    prop_oneof![
        Just(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        Just(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        Just("+262142-12-31T23:59:59Z".parse().unwrap()),
        Just("-262143-01-01T00:00:00Z".parse().unwrap()),
        (-100_000_000_000i64..100_000_000_000).prop_map(at),
        (0i64..2000).prop_map(at),
    ]
}

fn arb_seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(shared::limits::MAX_SEQ),
        Just(shared::limits::MAX_SEQ + 1),
        any::<u64>(),
        0u64..8,
    ]
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,8}", (0usize..20_000).prop_map(|n| "x".repeat(n)), any::<String>()]
}

fn arb_closure() -> impl Strategy<Value = Closure> {
    prop_oneof![
        Just(Closure::parse(TARGET).unwrap()),
        Just(Closure::parse(OTHER).unwrap()),
        Just(Closure::parse("/".repeat(4096)).unwrap()),
        "[a-z/]{1,64}".prop_map(|s| Closure::parse(s).unwrap()),
    ]
}

/// Every event kind with every field drawn from its extremes: what a hostile host could send
/// (the routes refuse most of it at parse time; the machines must not panic on any of it).
fn arb_extreme_event() -> impl Strategy<Value = HostEvent> {
    use shared::state::{ProbeMode, ProbeStatus};
    let exit = prop_oneof![Just(0i32), Just(i32::MIN), Just(i32::MAX), any::<i32>()];
    let policy = prop_oneof![Just(HealthFailurePolicy::Halt), Just(HealthFailurePolicy::RollbackAndHalt)];
    (
        0u8..9,
        arb_seq(),
        arb_time(),
        arb_closure(),
        exit,
        arb_text(),
        (any::<bool>(), any::<bool>()),
        prop::collection::vec(arb_text(), 0..4),
        policy,
    )
        .prop_map(|(kind, seq, when, closure, exit_code, text, (enforce, pass), names, policy_applied)| match kind
        {
            0 => HostEvent::DispatchAck { seq, current_closure: closure, received_at: when },
            1 => HostEvent::ActivationStarted { seq, started_at: when },
            2 => HostEvent::ActivationCompleted { seq, observed_closure: closure, exit_code, completed_at: when },
            3 => HostEvent::ActivationDeferred { seq, component: text, deferred_at: when },
            4 => HostEvent::ActivationFailed { seq, exit_code, stderr_tail: text, failed_at: when },
            5 => HostEvent::ProbeResult {
                seq,
                probe: text.clone(),
                mode: if enforce { ProbeMode::Enforce } else { ProbeMode::Observe },
                status: if pass { ProbeStatus::Pass } else { ProbeStatus::Fail },
                observed_at: when,
                reason: names.first().cloned(),
            },
            6 => HostEvent::Failed { seq, failed_at: when, failing_probes: names, policy_applied },
            7 => HostEvent::RollbackComplete { seq, reverted_to: closure, completed_at: when },
            _ => HostEvent::Converged { seq, converged_at: when, current_closure: closure },
        })
}

fn arb_soak() -> impl Strategy<Value = Duration> {
    prop_oneof![Just(Duration::zero()), Just(Duration::seconds(300)), Just(Duration::MAX), Just(Duration::MIN)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No event, whatever its fields, makes `step` panic; a refused one changes nothing, and
    /// an accepted one keeps seq strictly growing.
    #[test]
    fn step_never_panics_on_extreme_fields(
        events in prop::collection::vec(arb_extreme_event(), 1..30),
        soak in arb_soak(),
        now in arb_time(),
    ) {
        let policy = StepPolicy { soak, on_health_failure: HealthFailurePolicy::RollbackAndHalt };
        let mut record = pending_record();
        for event in &events {
            let before = record.clone();
            match step(&before, event, now, &policy) {
                Ok(t) => {
                    prop_assert!(t.record.last_event_seq > before.last_event_seq);
                    record = t.record;
                }
                Err(e) => prop_assert_eq!(
                    matches!(e, TransitionError::Duplicate { .. }),
                    event.seq() <= record.last_event_seq,
                    "Duplicate exactly when seq <= lastEventSeq: {:?}", e
                ),
            }
        }
    }

    /// The same events through the rollout machine and the planner (plan passes between
    /// them, the clock moving): nothing panics, and the rollout's invariants hold.
    #[test]
    fn the_planner_and_rollout_machine_never_panic_on_extreme_events(
        ops in prop::collection::vec((0usize..4, arb_extreme_event(), 0i64..900), 1..30),
    ) {
        let mut s = scenario();
        let fleet = s.set().fleet.clone();
        let id = Scenario::rid(R);
        for (h, event, secs) in ops {
            let before = s.rollout(R).clone();
            let now = s.now;
            let _ = s.state.apply_host_event(&fleet, &id, &Scenario::host(HOSTS[h]), &event, now);
            s.advance(secs);
            s.tick();
            prop_assert!(s.rollout(R).current_wave >= before.current_wave);
            briefs_agree(&s.state.records[&id])?;
        }
    }
}
