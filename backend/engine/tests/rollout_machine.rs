//! The rollout state machine (SPEC §4).
#![allow(clippy::unwrap_used)]

use engine::effect::Effect;
use engine::rollout::{RolloutError, RolloutInput};
use engine::testkit::{FleetBuilder, Scenario};
use serde_json::json;
use shared::log::{LogEntry, WaveAdvanced};
use shared::state::AdvancedBy;
use shared::state::{HostState, RolloutState};

const R: &str = "stable@c0ffee";

/// stable: waves [a, b] then [c]; wave 1 requires approval.
fn scenario() -> Scenario {
    let set = FleetBuilder::new()
        .policy("p", &[(10, false), (5, true)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .host("c", "stable", &[])
        .waves("stable", &[&["a", "b"], &["c"]])
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    s.tick();
    s
}

fn input(s: &mut Scenario, input: RolloutInput) -> Result<Vec<Effect>, RolloutError> {
    let (fleet, now) = (s.set().fleet.clone(), s.now);
    s.state.apply_rollout_input(&fleet, &Scenario::rid(R), &input, now)
}

fn all_inputs() -> Vec<RolloutInput> {
    vec![
        RolloutInput::HostFailed { host: Scenario::host("a"), reason: "boom".into() },
        RolloutInput::Pause,
        RolloutInput::Resume,
        RolloutInput::ClearFailure,
        RolloutInput::Evaluate,
        RolloutInput::Supersede { by: Scenario::rid("stable@d00d") },
    ]
}

#[test]
fn state_input_table() {
    use RolloutState::*;
    // Expected state after each input of `all_inputs()`, or None for 409 (does not apply).
    // Every record is Converged, so Evaluate completes an Active rollout.
    let table: [(RolloutState, [Option<RolloutState>; 6]); 5] = [
        (Active, [Some(Halted), Some(Paused), None, None, Some(Completed), Some(Superseded)]),
        (Paused, [Some(Halted), None, Some(Active), None, Some(Paused), Some(Superseded)]),
        (Halted, [Some(Halted), None, None, Some(Active), Some(Halted), Some(Superseded)]),
        (Completed, [None, None, None, None, None, None]),
        (Superseded, [None, None, None, None, None, None]),
    ];
    for (from, expected) in table {
        for (input_, want) in all_inputs().into_iter().zip(expected) {
            let mut s = scenario();
            for host in ["a", "b", "c"] {
                let records = s.state.records.get_mut(&Scenario::rid(R)).unwrap();
                records.update(&Scenario::host(host), |r| r.state = HostState::Converged).unwrap();
            }
            s.state.rollouts.get_mut(&Scenario::rid(R)).unwrap().state = from;
            let name = input_.kind();
            let result = input(&mut s, input_);
            match want {
                Some(to) => {
                    assert!(result.is_ok(), "{from} + {name}: {result:?}");
                    assert_eq!(s.rollout(R).state, to, "{from} + {name}");
                }
                None => {
                    assert!(result.is_err(), "{from} + {name} must not apply");
                    assert_eq!(s.rollout(R).state, from, "{from} + {name} changes nothing");
                }
            }
        }
    }
}

#[test]
fn a_failed_host_halts_the_rollout_and_records_which_and_why() {
    let mut s = scenario();
    s.activate(R, "a");
    s.send(R, "a", "Failed", json!({"failedAt": s.now, "failingProbes": ["http"], "policyApplied": "halt"})).unwrap();
    let halt = s.rollout(R).halt.clone().unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Halted);
    assert_eq!(halt.host.as_str(), "a");
    assert!(halt.reason.contains("http"));
}

#[test]
fn a_failure_while_paused_halts_too() {
    let mut s = scenario();
    s.activate(R, "a");
    input(&mut s, RolloutInput::Pause).unwrap();
    s.send(R, "a", "Failed", json!({"failedAt": s.now, "failingProbes": [], "policyApplied": "halt"})).unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Halted);
}

#[test]
fn pause_and_halt_withdraw_unacknowledged_dispatches() {
    let mut s = scenario();
    assert!(s.record(R, "a").dispatch.is_some() && s.record(R, "b").dispatch.is_some());
    let effects = input(&mut s, RolloutInput::Pause).unwrap();
    let withdrawn: Vec<_> = effects.iter().filter(|e| matches!(e, Effect::WithdrawDispatch { .. })).collect();
    assert_eq!(withdrawn.len(), 2);
    assert!(s.record(R, "a").dispatch.is_none() && s.record(R, "b").dispatch.is_none());

    input(&mut s, RolloutInput::Resume).unwrap();
    s.tick();
    s.activate(R, "a");
    assert!(s.record(R, "b").dispatch.is_some());
    s.send(R, "a", "Failed", json!({"failedAt": s.now, "failingProbes": [], "policyApplied": "halt"})).unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Halted);
    assert!(s.record(R, "b").dispatch.is_none(), "halt withdrew b's unacknowledged dispatch");
}

#[test]
fn clear_failure_excuses_the_hosts_failed_or_reverted_at_that_moment() {
    let mut s = scenario();
    s.activate(R, "a");
    s.activate(R, "b");
    s.send(R, "a", "Failed", json!({"failedAt": s.now, "failingProbes": [], "policyApplied": "rollback-and-halt"}))
        .unwrap();
    s.send(R, "a", "RollbackComplete", json!({"revertedTo": "/nix/store/old", "completedAt": s.now})).unwrap();
    input(&mut s, RolloutInput::ClearFailure).unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Active);
    assert!(s.record(R, "a").excused, "a was Reverted at clear time");
    assert!(!s.record(R, "b").excused, "b was Soaking: not excused");

    // A later failure is not covered by the earlier clear.
    s.send(R, "b", "Failed", json!({"failedAt": s.now, "failingProbes": [], "policyApplied": "halt"})).unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Halted);
    assert!(!s.record(R, "b").excused);
}

#[test]
fn excused_hosts_no_longer_block_waves_or_completion_but_deferred_blocks_completion() {
    let mut s = scenario();
    s.activate(R, "a");
    s.send(R, "a", "Failed", json!({"failedAt": s.now, "failingProbes": [], "policyApplied": "halt"})).unwrap();
    input(&mut s, RolloutInput::ClearFailure).unwrap();
    s.tick();
    s.converge(R, "b");
    let actions = s.tick();
    assert!(
        actions.iter().any(|a| matches!(a, engine::planner::PlanAction::AdvanceWave { to: 1, .. })),
        "excused a does not block wave 0"
    );
    input(&mut s, RolloutInput::Approve { wave: 1 }).unwrap();
    s.tick();
    let now = s.now;
    s.send(R, "c", "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now})).unwrap();
    s.send(R, "c", "ActivationDeferred", json!({"component": "kernel", "deferredAt": now})).unwrap();
    assert_eq!(s.record(R, "c").state, HostState::Deferred);
    input(&mut s, RolloutInput::Evaluate).unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Active, "Deferred does not complete a rollout");

    // After the reboot the agent reports completion; soak, converge, and the rollout completes.
    s.send(
        R,
        "c",
        "ActivationCompleted",
        json!({"observedClosure": "/nix/store/c-v1", "exitCode": 0, "completedAt": now}),
    )
    .unwrap();
    s.advance(5 * 60);
    let now = s.now;
    s.send(R, "c", "Converged", json!({"convergedAt": now, "currentClosure": "/nix/store/c-v1"})).unwrap();
    assert_eq!(s.rollout(R).state, RolloutState::Completed, "Converged + excused completes");
}

#[test]
fn current_wave_only_grows_and_promote_rules() {
    let mut s = scenario();
    let promote = |to, force| RolloutInput::AdvanceWave { to, by: AdvancedBy::Operator, force };
    assert!(matches!(input(&mut s, promote(0, false)), Err(RolloutError::NotApplicable(m)) if m.contains("not after")));
    assert!(
        matches!(input(&mut s, promote(1, false)), Err(RolloutError::NotApplicable(m)) if m.contains("not complete"))
    );
    assert!(matches!(input(&mut s, promote(2, true)), Err(RolloutError::NotApplicable(m)) if m.contains("no wave 2")));
    let effects = input(&mut s, promote(1, true)).unwrap();
    assert_eq!(s.rollout(R).current_wave, 1);
    let Effect::Log(entry) = &effects[0] else { panic!("log") };
    assert_eq!(
        entry.entry,
        LogEntry::WaveAdvanced(WaveAdvanced { from: 0, to: 1, by: AdvancedBy::Operator, force: true })
    );
    // As stored (and as stored before the entries were typed).
    assert_eq!(
        serde_json::to_value(entry.entry.payload()).unwrap(),
        json!({"from": 0, "to": 1, "by": "operator", "force": true})
    );
    assert!(input(&mut s, promote(0, true)).is_err(), "never moves back, even forced");
}

#[test]
fn approvals_apply_once_and_only_to_waves_that_need_them() {
    let mut s = scenario();
    assert!(
        matches!(input(&mut s, RolloutInput::Approve { wave: 0 }), Err(RolloutError::NotApplicable(m)) if m.contains("does not require"))
    );
    assert!(input(&mut s, RolloutInput::Approve { wave: 1 }).is_ok());
    assert!(
        matches!(input(&mut s, RolloutInput::Approve { wave: 1 }), Err(RolloutError::NotApplicable(m)) if m.contains("already"))
    );
    assert!(input(&mut s, RolloutInput::Approve { wave: 7 }).is_err());
}
