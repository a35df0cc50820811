//! The interval a heartbeat's answer asks for (SPEC §6 `nextHeartbeatSeconds`): 5 s while the
//! host has a dispatch outstanding or a record Activating, Deferred or Soaking; 15 s while its
//! only open records are Pending and held by a gate; else 30 s — so a rollout's hosts waiting
//! for later waves do not heartbeat as often as those it is moving.

use engine::testkit::{FleetBuilder, Scenario, at};
use serde_json::json;

const R: &str = "stable@a1";

fn asked_of_all(s: &mut Scenario) -> [u64; 3] {
    ["a", "b", "c"].map(|h| s.heartbeat_interval(h))
}

#[test]
fn hosts_with_work_are_asked_every_5_s_held_ones_every_15_and_the_rest_every_30() {
    let fleet = FleetBuilder::new()
        .policy("p", &[(0, false), (0, false), (0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .host("c", "stable", &[])
        .waves("stable", &[&["a"], &["b"], &["c"]]);
    let mut s = Scenario::new(fleet.manifest_set("a1"));
    s.now = at(0);
    assert_eq!(asked_of_all(&mut s), [30, 30, 30], "nothing is open");
    // The rollout opens: a is dispatched, b and c wait for their waves.
    s.tick();
    assert!(s.record(R, "a").dispatch.is_some());
    assert!(s.record(R, "b").waiting_on.is_some() && s.record(R, "c").waiting_on.is_some());
    assert_eq!(asked_of_all(&mut s), [5, 15, 15]);

    let now = s.now;
    s.send(R, "a", "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now})).unwrap();
    s.send(R, "a", "ActivationStarted", json!({"startedAt": now})).unwrap();
    assert_eq!(s.heartbeat_interval("a"), 5, "activating");
    let target = s.record(R, "a").target_closure.to_string();
    s.send(R, "a", "ActivationCompleted", json!({"observedClosure": target, "exitCode": 0, "completedAt": now}))
        .unwrap();
    assert_eq!(s.heartbeat_interval("a"), 5, "soaking");
    s.send(R, "a", "Converged", json!({"convergedAt": now, "currentClosure": target})).unwrap();
    // Wave 0 is done: the next pass moves the rollout on to b's wave.
    s.tick();
    assert!(s.record(R, "b").dispatch.is_some());
    assert_eq!(asked_of_all(&mut s), [30, 5, 15], "a has no open work left; b has a dispatch");
}
