use engine::testkit::{FleetBuilder, sign, t0};
use proptest::prelude::*;

use super::*;
use shared::Closure;

fn extreme_time() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        (-100_000_000_000i64..100_000_000_000).prop_map(|s| t0() + Duration::seconds(s)),
        (0i64..3_000).prop_map(|s| t0() + Duration::seconds(s)),
    ]
}

fn extreme_seq() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), Just(u64::MAX - 1), Just(shared::limits::MAX_SEQ), 0u64..6, any::<u64>()]
}

/// One input as a hostile host could make it, fields at their extremes.
#[derive(Debug, Clone)]
enum Input {
    Event { host: usize, event: HostEvent },
    Heartbeat { host: usize, at: DateTime<Utc>, on_target: bool, named: bool, last: Option<u64> },
    Tick(i64),
}

fn input() -> impl Strategy<Value = Input> {
    let closure = prop_oneof![Just("/nix/store/a-v1".to_owned()), Just("/nix/store/old".to_owned())]
        .prop_map(|c| Closure::parse(c).unwrap());
    let event = (0u8..9, extreme_seq(), extreme_time(), closure, any::<i32>(), ".{0,40}").prop_map(
        |(kind, seq, when, closure, code, text)| match kind {
            0 => HostEvent::DispatchAck { seq, current_closure: closure, received_at: when },
            1 => HostEvent::ActivationStarted { seq, started_at: when },
            2 => HostEvent::ActivationCompleted { seq, observed_closure: closure, exit_code: code, completed_at: when },
            3 => HostEvent::ActivationDeferred { seq, component: text, deferred_at: when },
            4 => HostEvent::ActivationFailed { seq, exit_code: code, stderr_tail: text, failed_at: when },
            5 => HostEvent::ProbeResult {
                seq,
                probe: text,
                mode: shared::state::ProbeMode::Enforce,
                status: if code % 2 == 0 { shared::state::ProbeStatus::Pass } else { shared::state::ProbeStatus::Fail },
                observed_at: when,
                reason: None,
            },
            6 => HostEvent::Failed {
                seq,
                failed_at: when,
                failing_probes: vec![text],
                policy_applied: shared::manifest::HealthFailurePolicy::RollbackAndHalt,
            },
            7 => HostEvent::RollbackComplete { seq, reverted_to: closure, completed_at: when },
            _ => HostEvent::Converged { seq, converged_at: when, current_closure: closure },
        },
    );
    prop_oneof![
        (0usize..2, event).prop_map(|(host, event)| Input::Event { host, event }),
        (0usize..2, extreme_time(), any::<bool>(), any::<bool>(), prop::option::of(extreme_seq()))
            .prop_map(|(host, at, on_target, named, last)| Input::Heartbeat { host, at, on_target, named, last }),
        (0i64..900).prop_map(Input::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever hosts send, the reducer's core (events, heartbeats with recovery synthesis,
    /// plan passes, rendering the write set) does not panic.
    #[test]
    fn the_reducer_core_never_panics_on_extreme_agent_input(inputs in prop::collection::vec(input(), 1..40)) {
        let f = FleetBuilder::new()
            .policy("p", &[(1, false)], "rollback-and-halt", 30)
            .channel("stable", "p")
            .host("a", "stable", &[])
            .host("b", "stable", &[])
            .release_closures("stable", "v1")
            .waves("stable", &[&["a", "b"]]);
        let mut core = Core::from_loaded(Loaded::default(), None, SharedFleet::default(), t0());
        let update = ManifestUpdate { set: f.manifest_set("a1"), fleet_artifact: sign(&f.document()), manifest_artifacts: vec![], uploaded_by: None };
        let mut now = t0();
        let mut pending = Pending::default();
        core.manifests(&mut pending, now, update).unwrap();
        core.plan(&mut pending, now);
        core.batch(pending, now, false);
        let rollout = RolloutId::parse("stable@a1").unwrap();
        for input in inputs {
            let mut pending = Pending::default();
            match input {
                Input::Event { host, event } => {
                    let host = Hostname::parse(["a", "b"][host]).unwrap();
                    let _ = core.host_event(&mut pending, now, &host, &rollout, &event);
                }
                Input::Heartbeat { host, at, on_target, named, last } => {
                    let name = ["a", "b"][host];
                    let closure = if on_target { format!("/nix/store/{name}-v1") } else { "/nix/store/old".into() };
                    let hb = HeartbeatRequest {
                        hostname: Hostname::parse(name).unwrap(),
                        current_closure: Some(Closure::parse(closure).unwrap()),
                        booted_closure: None,
                        rollout_id: named.then(|| rollout.clone()),
                        last_event_seq: last,
                        at,
                    };
                    core.heartbeat(&mut pending, now, &hb);
                }
                Input::Tick(secs) => {
                    now += Duration::seconds(secs);
                    core.request_plan();
                }
            }
            if core.plan_due() {
                core.plan(&mut pending, now);
            }
            core.batch(pending, now, false);
            core.prune();
        }
    }
}

impl Core {
    /// A log row carrying the record as it is now, as every change of a record writes one.
    fn log_as_it_is(&mut self, pending: &mut Pending, rollout: &RolloutId, host: &Hostname) {
        let record = self.controller.state.record(rollout, host).cloned();
        let channel = record.as_ref().map(|r| r.channel.clone());
        self.out.push(Write::Log(Box::new(Logged {
            ts: t0(),
            rollout_id: Some(rollout.clone()),
            host: Some(host.clone()),
            channel,
            entry: LogEntry::HostExcused(Default::default()),
            record,
            rollout: None,
        })));
        self.absorb(pending);
    }
}

fn key(host: &str) -> (RolloutId, Hostname) {
    (RolloutId::parse("stable@a1").unwrap(), Hostname::parse(host).unwrap())
}

fn written(batch: &Batch) -> Vec<&str> {
    batch.records.iter().map(|r| r.hostname.as_str()).collect()
}

#[test]
fn records_wait_behind_their_log_rows_unless_they_changed_after_them() {
    let f = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .host("b", "stable", &[])
        .waves("stable", &[&["a", "b"]]);
    let mut core = Core::from_loaded(Loaded::default(), None, SharedFleet::default(), t0());
    let update = ManifestUpdate {
        set: f.manifest_set("a1"),
        fleet_artifact: sign(&f.document()),
        manifest_artifacts: vec![],
        uploaded_by: None,
    };
    let mut pending = Pending::default();
    core.manifests(&mut pending, t0(), update).unwrap();
    core.plan(&mut pending, t0());
    // The first group writes everything (nothing was written yet).
    let first = core.batch(pending, t0(), false);
    assert!(first.records_through);
    assert_eq!(written(&first), ["a", "b"]);

    // A change its log row carries: deferred while the interval runs.
    let mut pending = Pending::default();
    let (rollout, b) = key("b");
    core.log_as_it_is(&mut pending, &rollout, &b);
    let second = core.batch(pending, t0(), false);
    assert!(!second.records_through && second.records.is_empty());

    // A record that changes after its row is written at once, and every deferred one
    // with it (the tail holds an older state of it than the table will).
    let mut pending = Pending::default();
    let (rollout, a) = key("a");
    core.log_as_it_is(&mut pending, &rollout, &a);
    core.controller.state.records.get_mut(&rollout).and_then(|r| r.update(&a, |r| r.stuck = true)).unwrap();
    let third = core.batch(pending, t0(), false);
    assert!(third.records_through);
    assert_eq!(written(&third), ["a", "b"]);
    assert!(third.records[0].body.get().contains("\"stuck\":true"));

    // Nothing deferred: a log row carrying no record moves the snapshot past it.
    let mut pending = Pending::default();
    core.out.push(Write::Log(Box::new(Logged {
        ts: t0(),
        rollout_id: None,
        host: Some(b.clone()),
        channel: None,
        entry: LogEntry::HostOffline(shared::log::HostOffline { last_heartbeat_at: t0() }),
        record: None,
        rollout: None,
    })));
    core.absorb(&mut pending);
    let fourth = core.batch(pending, t0(), false);
    assert!(fourth.records_through && fourth.records.is_empty());
}
