//! Property tests: random event sequences through the host machine and random operator and
//! host inputs through the rollout machine keep the invariants of SPEC §13.

use chrono::Duration;
use engine::host::{HostRecord, StepPolicy, step};
use engine::rollout::{AdvancedBy, RolloutInput};
use engine::testkit::{FleetBuilder, Scenario, at};
use proptest::prelude::*;
use serde_json::json;
use shared::manifest::HealthFailurePolicy;
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn host_machine_invariants_hold_for_any_event_sequence(events in prop::collection::vec(arb_event(), 1..60)) {
        let policy = StepPolicy { soak: Duration::seconds(300), on_health_failure: HealthFailurePolicy::Halt };
        let mut record = HostRecord::pending(
            RolloutId::parse("stable@ab").unwrap(),
            Hostname::parse("h").unwrap(),
            Channel::parse("stable").unwrap(),
            Closure::parse(TARGET).unwrap(),
            at(0),
        );
        for (i, event) in events.iter().enumerate() {
            let before = record.clone();
            match step(&before, event, at(i as i64), &policy) {
                Ok(t) => {
                    prop_assert!(!before.state.is_terminal(), "terminal {} accepted {}", before.state, event.kind());
                    prop_assert!(t.record.last_event_seq > before.last_event_seq, "seq strictly grows on every accepted event");
                    prop_assert_eq!(t.record.last_event_seq, event.seq());
                    record = t.record;
                }
                Err(_) => prop_assert_eq!(&record, &before, "a rejected event changes nothing"),
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
    Tick(i64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, 0u32..4, any::<bool>()).prop_map(|(k, w, f)| Op::Rollout(k, w, f)),
        (0usize..4, arb_event()).prop_map(|(h, e)| Op::Event(h, e)),
        (0i64..900).prop_map(Op::Tick),
    ]
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
        let fleet = s.set.fleet.clone();
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
                    let result = s.state.apply_rollout_input(&fleet, &id, &input, s.now);
                    if result.is_err() {
                        prop_assert_eq!(s.rollout(R), &before, "a refused input changes nothing");
                    }
                }
                Op::Event(h, event) => {
                    // Events arrive with whatever seq the agent sends; rejections are fine.
                    let _ = s.state.apply_host_event(&fleet, &id, &Scenario::host(HOSTS[h]), &event, s.now);
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
        }
    }
}
