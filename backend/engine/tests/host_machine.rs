//! The host state machine (SPEC §3): every (state, event) pair, seq rules, guards.
#![allow(clippy::unwrap_used)]

use chrono::Duration;
use engine::effect::Effect;
use engine::host::{HostRecord, StepPolicy, TransitionError, step};
use engine::testkit::at;
use serde_json::json;
use shared::log::LogEntry;
use shared::manifest::HealthFailurePolicy;
use shared::state::{HostEvent, HostState, ProbeMode, ProbeStatus};
use shared::{Channel, Closure, Hostname, RolloutId};

/// Every kind, from the enum's own list.
const KINDS: [&str; 9] = HostEvent::KINDS;

fn closure(s: &str) -> Closure {
    Closure::parse(s).unwrap()
}

fn target() -> Closure {
    closure("/nix/store/web1-v2")
}

fn old() -> Closure {
    closure("/nix/store/web1-v1")
}

fn policy() -> StepPolicy {
    StepPolicy { soak: Duration::minutes(10), on_health_failure: HealthFailurePolicy::RollbackAndHalt }
}

/// A record in `state` with the fields that state implies, last seq 5.
fn record_in(state: HostState) -> HostRecord {
    let mut r = HostRecord::pending(
        RolloutId::parse("stable@abc").unwrap(),
        Hostname::parse("web1").unwrap(),
        Channel::parse("stable").unwrap(),
        target(),
        at(0),
    );
    r.last_event_seq = 5;
    r.state = state;
    if state != HostState::Pending {
        r.current_closure_at_dispatch = Some(old());
        r.current_closure = Some(old());
        r.dispatch_acked_at = Some(at(1));
    }
    match state {
        HostState::Soaking | HostState::Converged => {
            r.current_closure = Some(target());
            r.activation_completed_at = Some(at(10));
            r.soak_due_at = Some(at(610));
        }
        HostState::Deferred => r.deferred_component = Some("kernel".into()),
        HostState::Reverted => r.current_closure = Some(old()),
        _ => {}
    }
    r
}

/// A well-formed event of `kind` that satisfies every guard of its legal transition.
fn event(kind: &str, seq: u64) -> HostEvent {
    let t = target().to_string();
    let value = match kind {
        "DispatchAck" => json!({"currentClosure": old(), "receivedAt": at(1)}),
        "ActivationStarted" => json!({"startedAt": at(2)}),
        "ActivationCompleted" => {
            json!({"observedClosure": t, "exitCode": 0, "completedAt": at(100)})
        }
        "ActivationDeferred" => json!({"component": "kernel", "deferredAt": at(3)}),
        "ActivationFailed" => {
            json!({"exitCode": 4, "stderrTail": "unit failed", "failedAt": at(4)})
        }
        "ProbeResult" => {
            json!({"probe": "http", "mode": "enforce", "status": "pass", "observedAt": at(20)})
        }
        "Failed" => json!({"failedAt": at(30), "failingProbes": ["http"], "policyApplied": "halt"}),
        "RollbackComplete" => json!({"revertedTo": old(), "completedAt": at(40)}),
        "Converged" => json!({"convergedAt": at(610), "currentClosure": t}),
        other => panic!("unknown kind {other}"),
    };
    let mut value = value;
    value["kind"] = json!(kind);
    value["seq"] = json!(seq);
    serde_json::from_value(value).unwrap()
}

/// The documented destination of every legal pair (SPEC §3.3); everything else is illegal.
fn documented(state: HostState, kind: &str) -> Option<HostState> {
    use HostState::*;
    Some(match (state, kind) {
        (Pending, "DispatchAck") => Activating,
        (Activating, "ActivationStarted") => Activating,
        (Activating | Deferred, "ActivationCompleted") => Soaking,
        (Activating, "ActivationDeferred") => Deferred,
        (Activating | Deferred, "ActivationFailed") => Failed,
        (Soaking, "ProbeResult") => Soaking,
        (Soaking, "Failed") => Failed,
        (Soaking, "Converged") => Converged,
        (Failed, "RollbackComplete") => Reverted,
        _ => return None,
    })
}

#[test]
fn every_state_event_pair_is_documented_or_illegal() {
    let mut legal = 0;
    for state in HostState::ALL {
        for kind in KINDS {
            let record = record_in(state);
            let result = step(&record, &event(kind, 6), at(1000), &policy());
            match documented(state, kind) {
                Some(to) => {
                    let t = result.unwrap_or_else(|e| panic!("{state} + {kind}: {e}"));
                    legal += 1;
                    assert_eq!(t.record.state, to, "{state} + {kind}");
                    assert_eq!(t.record.last_event_seq, 6, "{state} + {kind} sets lastEventSeq");
                    assert_eq!(t.record.last_progress_at, at(1000));
                    let Effect::Log(entry) = &t.effects[0] else {
                        panic!("{state} + {kind}: first effect is the log row")
                    };
                    let LogEntry::HostEvent(applied) = &entry.entry else {
                        panic!("{state} + {kind}: the log row is a HostEvent entry")
                    };
                    assert_eq!((applied.event.kind(), applied.from, applied.to), (kind, state, to));
                    let changed = t.effects.iter().any(
                        |e| matches!(e, Effect::HostStateChanged { from, to: t, .. } if *from == state && *t == to),
                    );
                    assert_eq!(changed, state != to, "{state} + {kind}: HostStateChanged iff the state changed");
                }
                None => assert_eq!(
                    result.unwrap_err(),
                    TransitionError::IllegalForState { state, event: kind },
                    "{state} + {kind} must be illegal"
                ),
            }
        }
    }
    assert_eq!(legal, 11, "SPEC §3.3 lists eleven legal (state, event) pairs");
}

#[test]
fn legal_transitions_set_the_documented_fields() {
    let p = policy();
    let ack = step(&record_in(HostState::Pending), &event("DispatchAck", 6), at(5), &p).unwrap().record;
    assert_eq!(
        (ack.current_closure_at_dispatch, ack.dispatch_acked_at, ack.dispatch),
        (Some(old()), Some(at(1)), None)
    );

    let started = step(&record_in(HostState::Activating), &event("ActivationStarted", 6), at(5), &p).unwrap().record;
    assert_eq!(started.activation_started_at, Some(at(2)));

    for from in [HostState::Activating, HostState::Deferred] {
        let mut r = record_in(from);
        r.probes.insert("stale".into(), serde_json::from_value(json!({"mode":"enforce","status":"fail","observedAt":at(0),"lastPassAt":null,"firstFailedAt":at(0),"reason":null})).unwrap());
        let soaking = step(&r, &event("ActivationCompleted", 6), at(5), &p).unwrap().record;
        assert_eq!(soaking.current_closure, Some(target()));
        assert!(soaking.probes.is_empty(), "probes are cleared on activation");
        assert_eq!(soaking.activation_completed_at, Some(at(100)));
        assert_eq!(soaking.soak_due_at, Some(at(100) + Duration::minutes(10)), "soak starts at completedAt");
    }

    let deferred = step(&record_in(HostState::Activating), &event("ActivationDeferred", 6), at(5), &p).unwrap().record;
    assert_eq!(deferred.deferred_component.as_deref(), Some("kernel"));

    let failed = step(&record_in(HostState::Deferred), &event("ActivationFailed", 6), at(5), &p).unwrap().record;
    assert_eq!(
        failed.policy_applied,
        Some(HealthFailurePolicy::RollbackAndHalt),
        "policyApplied := policy.onHealthFailure"
    );
    assert!(failed.failure.unwrap().reason.contains("exit code 4: unit failed"));

    let probe_failed = step(&record_in(HostState::Soaking), &event("Failed", 6), at(5), &p).unwrap().record;
    assert_eq!(probe_failed.policy_applied, Some(HealthFailurePolicy::Halt), "from the event");
    assert_eq!(probe_failed.failure.unwrap().failing_probes, vec!["http".to_owned()]);

    let converged = step(&record_in(HostState::Soaking), &event("Converged", 6), at(5), &p).unwrap().record;
    assert_eq!(converged.converged_at, Some(at(610)));
}

#[test]
fn seq_at_or_below_the_last_is_duplicate_in_every_state_and_checked_first() {
    for state in HostState::ALL {
        for kind in KINDS {
            for seq in [0, 4, 5] {
                assert_eq!(
                    step(&record_in(state), &event(kind, seq), at(0), &policy()).unwrap_err(),
                    TransitionError::Duplicate { seq, last: 5 },
                    "{state} + {kind} seq {seq}"
                );
            }
        }
    }
}

#[test]
fn seq_gaps_are_allowed() {
    let t = step(&record_in(HostState::Pending), &event("DispatchAck", 42), at(0), &policy()).unwrap();
    assert_eq!(t.record.last_event_seq, 42);
}

fn probe(record: &HostRecord, name: &str, mode: &str, status: &str, seq: u64, when: i64) -> HostRecord {
    let e: HostEvent = serde_json::from_value(
        json!({"kind":"ProbeResult","seq":seq,"probe":name,"mode":mode,"status":status,"observedAt":at(when),"reason":"r"}),
    )
    .unwrap();
    step(record, &e, at(when), &policy()).unwrap().record
}

#[test]
fn probe_results_track_last_pass_and_first_failure() {
    let r = record_in(HostState::Soaking);
    let r = probe(&r, "http", "enforce", "pass", 6, 100);
    let r = probe(&r, "http", "enforce", "fail", 7, 200);
    let r = probe(&r, "http", "enforce", "fail", 8, 300);
    let p = &r.probes["http"];
    assert_eq!(
        (p.status, p.last_pass_at, p.first_failed_at),
        (ProbeStatus::Fail, Some(at(100)), Some(at(200))),
        "first failure wins"
    );
    let r = probe(&r, "http", "enforce", "pass", 9, 400);
    let p = &r.probes["http"];
    assert_eq!(
        (p.mode, p.last_pass_at, p.first_failed_at),
        (ProbeMode::Enforce, Some(at(400)), None),
        "cleared on pass"
    );
}

/// A probe result the same as the probe's last is marked `repeated` in its log entry (an
/// observation retention may compact); a first result or a change of status is not.
#[test]
fn a_probe_result_that_repeats_the_last_is_marked_repeated() {
    let repeated = |record: &HostRecord, status: &str, seq: u64| {
        let e: HostEvent = serde_json::from_value(
            json!({"kind":"ProbeResult","seq":seq,"probe":"http","mode":"enforce","status":status,"observedAt":at(10),"reason":"r"}),
        )
        .unwrap();
        let t = step(record, &e, at(10), &policy()).unwrap();
        let marked = t.effects.iter().find_map(|effect| match effect {
            engine::effect::Effect::Log(log) => match &log.entry {
                shared::log::LogEntry::HostEvent(applied) => Some(applied.repeated),
                _ => None,
            },
            _ => None,
        });
        (marked.expect("a host event is logged"), t.record)
    };
    let r = record_in(HostState::Soaking);
    let (first, r) = repeated(&r, "pass", 6);
    let (again, r) = repeated(&r, "pass", 7);
    let (changed, r) = repeated(&r, "fail", 8);
    let (failing_again, _) = repeated(&r, "fail", 9);
    assert_eq!((first, again, changed, failing_again), (false, true, false, true));
}

#[test]
fn converged_guards_wrong_closure_early_and_failing_enforce_probe() {
    let soaking = record_in(HostState::Soaking);
    let converge = |r: &HostRecord, when: i64, closure_str: &str| {
        let e: HostEvent = serde_json::from_value(
            json!({"kind":"Converged","seq":20,"convergedAt":at(when),"currentClosure":closure_str}),
        )
        .unwrap();
        step(r, &e, at(when), &policy())
    };
    let t = target().to_string();
    assert!(
        matches!(converge(&soaking, 610, "/nix/store/other"), Err(TransitionError::Invariant(m)) if m.contains("target"))
    );
    assert!(matches!(converge(&soaking, 609, &t), Err(TransitionError::Invariant(m)) if m.contains("soak runs until")));
    assert_eq!(
        converge(&soaking, 610, &t).unwrap().record.state,
        HostState::Converged,
        "convergedAt == soakDueAt is enough"
    );

    let failing = probe(&soaking, "http", "enforce", "fail", 6, 300);
    assert!(matches!(converge(&failing, 700, &t), Err(TransitionError::Invariant(m)) if m.contains("http")));
    let observed_only = probe(&soaking, "metrics", "observe", "fail", 6, 300);
    assert_eq!(
        converge(&observed_only, 700, &t).unwrap().record.state,
        HostState::Converged,
        "observe-mode failures do not block"
    );

    // (A failed guard cannot change the record: `step` only borrows it, the caller keeps it.)
}

#[test]
fn activation_completed_with_nonzero_exit_or_wrong_closure_goes_to_failed() {
    for (exit, observed, why) in
        [(1, target().to_string(), "exited with code 1"), (0, "/nix/store/other".to_owned(), "not the target")]
    {
        let e: HostEvent = serde_json::from_value(
            json!({"kind":"ActivationCompleted","seq":6,"observedClosure":observed,"exitCode":exit,"completedAt":at(100)}),
        )
        .unwrap();
        let r = step(&record_in(HostState::Activating), &e, at(100), &policy()).unwrap().record;
        assert_eq!(r.state, HostState::Failed);
        assert!(r.failure.unwrap().reason.contains(why));
        assert_eq!(r.soak_due_at, None, "never Soaking when it cannot converge");
    }
}

#[test]
fn rollback_complete_reverts_and_quarantines_the_target_closure() {
    let t = step(&record_in(HostState::Failed), &event("RollbackComplete", 6), at(50), &policy()).unwrap();
    assert_eq!(t.record.current_closure, Some(old()));
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::Quarantine { channel, closure, .. } if channel.as_str() == "stable" && *closure == target())));
}
