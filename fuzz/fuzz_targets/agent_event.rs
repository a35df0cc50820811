//! Event bodies from a host: parsed as the route parses them, checked against the limits, and
//! those that pass applied by `step` to a record in every state (soaks from zero to the
//! largest span) and through the rollout machine and planner of a small scenario.
#![no_main]

use chrono::Duration;
use engine::host::{HostRecord, StepPolicy, step};
use engine::testkit::{FleetBuilder, Scenario, at};
use libfuzzer_sys::fuzz_target;
use shared::manifest::HealthFailurePolicy;
use shared::state::{HostEvent, HostState};
use shared::{Channel, Closure, Hostname, RolloutId};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<HostEvent>(data) else { return };
    let within_limits = event.check_limits().is_ok();
    for soak in [Duration::zero(), Duration::seconds(600), Duration::MAX] {
        let policy = StepPolicy { soak, on_health_failure: HealthFailurePolicy::RollbackAndHalt };
        for state in HostState::ALL {
            let mut record = HostRecord::pending(
                RolloutId::parse("stable@ab").unwrap(),
                Hostname::parse("a").unwrap(),
                Channel::parse("stable").unwrap(),
                Closure::parse("/nix/store/a-v1").unwrap(),
                at(0),
            );
            record.state = state;
            record.current_closure = Some(record.target_closure.clone());
            record.soak_due_at = Some(at(600));
            if let Ok(t) = step(&record, &event, at(10), &policy) {
                assert!(t.record.last_event_seq > record.last_event_seq);
            }
        }
    }
    if within_limits {
        let mut s = Scenario::new(
            FleetBuilder::new()
                .policy("p", &[(0, false)], "rollback-and-halt", 30)
                .channel("stable", "p")
                .host("a", "stable", &[])
                .release_closures("stable", "v1")
                .waves("stable", &[&["a"]])
                .manifest_set("ab"),
        );
        s.tick();
        let fleet = s.set.fleet.clone();
        let _ = s.state.apply_host_event(&fleet, &Scenario::rid("stable@ab"), &Scenario::host("a"), &event, s.now);
        s.advance(60);
        s.tick();
    }
});
