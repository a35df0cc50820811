//! The agent's state machine by tables (SPEC §14): each row feeds one input at a time offset
//! and lists the actions expected, in order, written short (`persist`, `send DispatchAck#1`,
//! `realise v2`, …). The happy path, every failure path of the activation, probes, retries,
//! replays and restarts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use agent::intent::{Intent, Outcome, Stage};
use agent::machine::{Action, Agent, FetchFailure, Found, Input, ProbeSchedule, SendError, Settings, Step, StepResult};
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use shared::agent::{DispatchOrder, EventOutcome, HeartbeatResponse};
use shared::manifest::HealthFailurePolicy;
use shared::state::{HostEvent, HostRolloutSnapshot, HostState, ProbeMode, ProbeStatus};
use shared::{Channel, Closure, Hostname, RolloutId};

const V1: &str = "/nix/store/11111111111111111111111111111111-nixos-system-web-v1";
const V2: &str = "/nix/store/22222222222222222222222222222222-nixos-system-web-v2";
const OTHER: &str = "/nix/store/33333333333333333333333333333333-nixos-system-web-other";

fn closure(c: &str) -> Closure {
    Closure::parse(c).unwrap()
}

fn rollout() -> RolloutId {
    RolloutId::parse("stable@a1").unwrap()
}

fn t0() -> DateTime<Utc> {
    "2026-12-01T10:00:00Z".parse().unwrap()
}

fn probe(name: &str, mode: ProbeMode) -> ProbeSchedule {
    ProbeSchedule { name: name.into(), mode, interval: Duration::from_secs(10), fail_after: 3 }
}

fn settings(probes: Vec<ProbeSchedule>, reboot_allowed: bool) -> Settings {
    Settings::new(Hostname::parse("web-01").unwrap(), probes, reboot_allowed, 42)
}

/// A short name for an action, so tables read like the protocol.
fn short(action: &Action) -> String {
    let name = |c: &Closure| {
        match c.as_str() {
            V1 => "v1",
            V2 => "v2",
            OTHER => "other",
            _ => "?",
        }
        .to_owned()
    };
    match action {
        Action::Persist => "persist".into(),
        Action::SendHeartbeat(hb) => match (&hb.rollout_id, hb.last_event_seq) {
            (Some(_), Some(seq)) => format!("heartbeat @{seq}"),
            _ => "heartbeat".into(),
        },
        Action::SendEvent(e) => format!("send {}#{}", e.event.kind(), e.event.seq()),
        Action::Activate(Step::Realise { target }) => format!("realise {}", name(target)),
        Action::Activate(Step::Switch { target }) => format!("switch {}", name(target)),
        Action::Activate(Step::Rollback { to }) => format!("rollback {}", name(to)),
        Action::Activate(Step::Reboot) => "reboot".into(),
        Action::RunProbe(p) => format!("probe {p}"),
        Action::Log(..) => "log".into(),
    }
}

/// Rows of a table: seconds after the previous row, the input, the actions expected.
type Rows<'a> = Vec<(i64, Input, &'a [&'a str])>;

struct Run {
    agent: Agent,
    now: DateTime<Utc>,
    /// Every event sent, in order (for the seq checks).
    sent: Vec<HostEvent>,
}

impl Run {
    fn start(settings: Settings, intent: Option<Intent>, current: &str, boot: &str) -> (Run, Vec<String>) {
        let found = Found { intent, current: closure(current), booted: Some(closure(current)), boot_id: boot.into() };
        let (agent, actions) = Agent::start(settings, found, t0());
        let mut run = Run { agent, now: t0(), sent: Vec::new() };
        let shown = run.note(&actions);
        (run, shown)
    }

    fn note(&mut self, actions: &[Action]) -> Vec<String> {
        for a in actions {
            if let Action::SendEvent(e) = a {
                self.sent.push(e.event.clone());
            }
        }
        actions.iter().map(short).filter(|s| s != "log").collect()
    }

    /// Feeds `input` `secs` after the previous one; returns the actions, short, logs left out.
    fn at(&mut self, secs: i64, input: Input) -> Vec<String> {
        self.now += TimeDelta::seconds(secs);
        let actions = self.agent.handle(self.now, input);
        self.note(&actions)
    }

    /// Feeds a table of rows, checking each.
    fn table(&mut self, rows: &[(i64, Input, &[&str])]) {
        for (i, (secs, input, expected)) in rows.iter().enumerate() {
            let got = self.at(*secs, input.clone());
            assert_eq!(got, *expected, "row {i}: {input:?}");
        }
    }

    fn stage(&self) -> Option<Stage> {
        self.agent.intent().map(|i| i.stage)
    }
}

/// A heartbeat answer; the next heartbeat is due in 30 s.
fn answer(dispatch: Option<DispatchOrder>) -> Input {
    Input::Heartbeat(Ok(HeartbeatResponse {
        received_at: t0(),
        replay_from: None,
        bootstrap: Vec::new(),
        dispatch,
        next_heartbeat_seconds: 30,
    }))
}

fn dispatch(soak_seconds: u64, policy: HealthFailurePolicy) -> Option<DispatchOrder> {
    Some(DispatchOrder { rollout_id: rollout(), target_closure: closure(V2), soak_seconds, on_health_failure: policy })
}

fn applied(seq: u64) -> Input {
    Input::Event { rollout_id: rollout(), seq, result: Ok(EventOutcome::Applied) }
}

fn step(result: StepResult) -> Input {
    Input::Activator(result)
}

fn switched(to: &str, exit_code: i32) -> Input {
    step(StepResult::Switched { observed: closure(to), exit_code })
}

fn rolled_back(to: &str, exit_code: i32) -> Input {
    step(StepResult::RolledBack { observed: closure(to), exit_code, stderr_tail: String::new() })
}

fn probed(name: &str, status: ProbeStatus) -> Input {
    Input::Probe { name: name.into(), status, reason: (status == ProbeStatus::Fail).then(|| "502".into()) }
}

const PASS: ProbeStatus = ProbeStatus::Pass;
const FAIL: ProbeStatus = ProbeStatus::Fail;
const ROLLBACK: HealthFailurePolicy = HealthFailurePolicy::RollbackAndHalt;
const HALT: HealthFailurePolicy = HealthFailurePolicy::Halt;

/// Started on v1, dispatched v2 and acknowledged: the realise is running.
fn dispatched(probes: Vec<ProbeSchedule>, soak: u64, policy: HealthFailurePolicy) -> Run {
    let (mut run, first) = Run::start(settings(probes, false), None, V1, "boot-1");
    assert_eq!(first, ["heartbeat"]);
    run.table(&[
        (0, answer(dispatch(soak, policy)), &["persist", "realise v2", "send DispatchAck#1"]),
        (0, applied(1), &[]),
    ]);
    run
}

#[test]
fn a_dispatch_is_fetched_switched_soaked_and_converged() {
    let mut run = dispatched(vec![probe("http", ProbeMode::Enforce), probe("disk", ProbeMode::Observe)], 60, ROLLBACK);
    run.table(&[
        (1, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (20, switched(V2, 0), &["persist", "probe http", "probe disk", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (1, probed("http", PASS), &["persist", "send ProbeResult#4"]),
        (0, applied(4), &[]),
        // An observe probe that fails never holds the soak up.
        (0, probed("disk", FAIL), &["persist", "send ProbeResult#5"]),
        (0, applied(5), &[]),
        (7, Input::Tick, &[]),
        (3, Input::Tick, &["probe http", "probe disk", "heartbeat @5"]),
        (0, answer(None), &[]),
        (0, probed("http", PASS), &["persist", "send ProbeResult#6"]),
        (0, applied(6), &[]),
        // 60 s after the completion (at +21 s): converged, once every enforce probe passed.
        (48, Input::Tick, &["probe http", "heartbeat @6"]),
        (0, answer(None), &[]),
        (1, Input::Tick, &["persist", "send Converged#7"]),
        (0, applied(7), &[]),
        // Done: probe results that come late are not reported; heartbeats go on.
        (0, probed("http", PASS), &[]),
        (100, Input::Tick, &["heartbeat @7"]),
    ]);
    assert_eq!(run.stage(), Some(Stage::Done(Outcome::Converged)));
    assert_eq!(run.agent.current(), &closure(V2));
}

#[test]
fn the_soak_waits_for_an_enforce_probe_that_has_not_passed_yet() {
    let mut run = dispatched(vec![probe("http", ProbeMode::Enforce)], 0, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, switched(V2, 0), &["persist", "probe http", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (5, Input::Tick, &[]),
        (0, probed("http", FAIL), &["persist", "send ProbeResult#4"]),
        (0, applied(4), &[]),
        (10, Input::Tick, &["probe http"]),
        // Soak 0: converged as soon as the enforce probe passes, queued behind its result.
        (0, probed("http", PASS), &["persist", "send ProbeResult#5"]),
        (0, applied(5), &["send Converged#6"]),
    ]);
}

#[test]
fn every_way_an_activation_fails_is_reported_and_rolled_back_to_the_recorded_previous_closure() {
    let fetch_failed = step(StepResult::FetchFailed {
        class: FetchFailure::Signature,
        exit_code: 1,
        stderr_tail: "lacks a signature by a trusted key".into(),
    });
    let timed_out = step(StepResult::SwitchFailed { exit_code: 124, stderr_tail: "timed out after 300 s".into() });
    let cases: Vec<(&str, Rows)> = vec![
        ("unsigned path", vec![(0, fetch_failed, &["persist", "rollback v1", "send ActivationFailed#2"])]),
        (
            "switch exits non-zero",
            vec![
                (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
                (0, applied(2), &[]),
                (0, switched(V2, 4), &["persist", "rollback v1", "send ActivationCompleted#3"]),
            ],
        ),
        (
            "switch to another closure",
            vec![
                (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
                (0, applied(2), &[]),
                (0, switched(OTHER, 0), &["persist", "rollback v1", "send ActivationCompleted#3"]),
            ],
        ),
        (
            "switch hangs past the timeout",
            vec![
                (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
                (0, applied(2), &[]),
                (25, timed_out, &["persist", "rollback v1", "send ActivationFailed#3"]),
            ],
        ),
    ];
    for (name, rows) in cases {
        let mut run = dispatched(vec![probe("http", ProbeMode::Enforce)], 60, ROLLBACK);
        run.table(&rows);
        let last = run.sent.last().unwrap().seq();
        let revert = format!("send RollbackComplete#{}", last + 1);
        run.table(&[(0, applied(last), &[]), (0, rolled_back(V1, 0), &["persist", &revert])]);
        assert_eq!(run.stage(), Some(Stage::Done(Outcome::Reverted)), "{name}");
        assert_eq!(run.agent.current(), &closure(V1), "{name}");
        match run.sent.last().unwrap() {
            HostEvent::RollbackComplete { reverted_to, .. } => assert_eq!(reverted_to, &closure(V1)),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_fetch_failure_names_its_class() {
    let mut run = dispatched(vec![], 60, HALT);
    run.at(
        0,
        step(StepResult::FetchFailed {
            class: FetchFailure::Network,
            exit_code: 1,
            stderr_tail: "unable to download".into(),
        }),
    );
    match &run.sent[1] {
        HostEvent::ActivationFailed { stderr_tail, exit_code: 1, .. } => {
            assert!(stderr_tail.contains("(network)") && stderr_tail.contains("unable to download"), "{stderr_tail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(run.stage(), Some(Stage::Done(Outcome::Halted)), "halt: no rollback");
}

#[test]
fn enforce_probes_failing_fail_after_times_in_a_row_fail_the_host_and_roll_back() {
    let mut run = dispatched(vec![probe("http", ProbeMode::Enforce), probe("disk", ProbeMode::Observe)], 600, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, switched(V2, 0), &["persist", "probe http", "probe disk", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (0, probed("http", FAIL), &["persist", "send ProbeResult#4"]),
        (0, applied(4), &[]),
        (0, probed("disk", FAIL), &["persist", "send ProbeResult#5"]),
        (0, applied(5), &[]),
        (10, Input::Tick, &["probe http", "probe disk"]),
        // A pass in between starts the count again.
        (0, probed("http", PASS), &["persist", "send ProbeResult#6"]),
        (0, applied(6), &[]),
        (0, probed("disk", FAIL), &["persist", "send ProbeResult#7"]),
        (0, applied(7), &[]),
        (10, Input::Tick, &["probe http", "probe disk"]),
        (0, probed("http", FAIL), &["persist", "send ProbeResult#8"]),
        (0, applied(8), &[]),
        (10, Input::Tick, &["probe http", "heartbeat @8"]),
        (0, probed("http", FAIL), &["persist", "send ProbeResult#9"]),
        (0, applied(9), &[]),
        (10, Input::Tick, &["probe http"]),
        (0, probed("http", FAIL), &["persist", "rollback v1", "send ProbeResult#10"]),
        (0, applied(10), &["send Failed#11"]),
        (0, applied(11), &[]),
        // A probe result arriving after the soak ended is not reported.
        (0, probed("disk", PASS), &[]),
        (3, rolled_back(V1, 0), &["persist", "send RollbackComplete#12"]),
    ]);
    match &run.sent[10] {
        HostEvent::Failed { failing_probes, policy_applied, .. } => {
            assert_eq!(failing_probes, &["http".to_owned()]);
            assert_eq!(*policy_applied, ROLLBACK);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn under_halt_a_failing_host_stays_on_the_target() {
    let mut run = dispatched(vec![ProbeSchedule { fail_after: 1, ..probe("http", ProbeMode::Enforce) }], 600, HALT);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, switched(V2, 0), &["persist", "probe http", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (0, probed("http", FAIL), &["persist", "send ProbeResult#4"]),
        (0, applied(4), &["send Failed#5"]),
        (0, applied(5), &[]),
        (60, Input::Tick, &["heartbeat @5"]),
    ]);
    assert_eq!(run.stage(), Some(Stage::Done(Outcome::Halted)));
    assert_eq!(run.agent.current(), &closure(V2));
}

#[test]
fn a_rollback_that_keeps_failing_is_tried_three_times_then_left_to_an_operator() {
    let mut run = dispatched(vec![], 60, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, switched(V2, 1), &["persist", "rollback v1", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (0, rolled_back(V2, 1), &[]),
        // The first retry waits between 0.5 and 1 s.
        (0, Input::Tick, &[]),
        (1, Input::Tick, &["rollback v1"]),
        (0, rolled_back(V2, 1), &[]),
        (2, Input::Tick, &["rollback v1"]),
        (0, rolled_back(V2, 1), &["persist"]),
        (60, Input::Tick, &["heartbeat @3"]),
    ]);
    assert_eq!(run.stage(), Some(Stage::Done(Outcome::RollbackFailed)));
}

#[test]
fn a_kernel_change_is_staged_for_the_next_boot_and_completed_after_it() {
    // reboot = "never": staged, reported, and the agent waits for someone to reboot.
    let mut run = dispatched(vec![], 60, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, step(StepResult::Staged { component: "kernel".into() }), &["persist", "send ActivationDeferred#3"]),
        (0, applied(3), &[]),
        (60, Input::Tick, &["heartbeat @3"]),
    ]);
    let intent = run.agent.intent().cloned().unwrap();
    assert_eq!(intent.stage, Stage::Deferred);
    // The agent restarts in the same boot: still waiting.
    let (_, same_boot) = Run::start(settings(vec![], false), Some(intent.clone()), V1, "boot-1");
    assert_eq!(same_boot, ["heartbeat @3"]);
    // After a reboot into the target: completed, then the soak.
    let (mut booted, actions) = Run::start(settings(vec![], false), Some(intent.clone()), V2, "boot-2");
    assert_eq!(actions, ["persist", "heartbeat @4", "send ActivationCompleted#4"]);
    booted.table(&[(0, applied(4), &[]), (60, Input::Tick, &["persist", "send Converged#5"])]);
    // After a reboot into something else: reported as it is, and rolled back.
    let (_, wrong) = Run::start(settings(vec![], false), Some(intent), OTHER, "boot-2");
    assert_eq!(wrong, ["persist", "rollback v1", "heartbeat @4", "send ActivationCompleted#4"]);

    // reboot = "allowed": the agent reboots.
    let (mut run, _) = Run::start(settings(vec![], true), None, V1, "boot-1");
    run.table(&[
        (0, answer(dispatch(60, ROLLBACK)), &["persist", "realise v2", "send DispatchAck#1"]),
        (0, applied(1), &[]),
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, step(StepResult::Staged { component: "initrd".into() }), &["persist", "reboot"]),
        (0, applied(2), &["send ActivationDeferred#3"]),
    ]);
}

#[test]
fn network_errors_are_retried_with_growing_jittered_backoff_and_refusals_never() {
    let mut run = dispatched(vec![], 60, ROLLBACK);
    let retry = |after| Input::Event { rollout_id: rollout(), seq: 2, result: Err(SendError::Retry { after }) };
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, retry(None), &[]),
        // First retry: 0.5–1 s later.
        (1, Input::Tick, &["send ActivationStarted#2"]),
        (0, retry(None), &[]),
        // Second: 1–2 s.
        (0, Input::Tick, &[]),
        (2, Input::Tick, &["send ActivationStarted#2"]),
        // Retry-After: 30 s from the control plane (and under a second of jitter).
        (0, retry(Some(Duration::from_secs(20))), &[]),
        (19, Input::Tick, &[]),
        (2, Input::Tick, &["send ActivationStarted#2"]),
        // A 409 is logged and the next event goes; the refused one is never sent again.
        (
            0,
            Input::Event {
                rollout_id: rollout(),
                seq: 2,
                result: Err(SendError::Refused { status: 409, message: "illegal-for-state".into() }),
            },
            &[],
        ),
        (0, switched(V2, 0), &["persist", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
    ]);
    let sends = run.sent.iter().filter(|e| e.seq() == 2).count();
    assert_eq!(sends, 4, "sent, retried three times, then dropped on the 409");
}

#[test]
fn heartbeats_follow_the_interval_asked_for_and_back_off_when_unanswered() {
    let (mut run, first) = Run::start(settings(vec![], false), None, V1, "boot-1");
    assert_eq!(first, ["heartbeat"]);
    let hb_retry = Input::Heartbeat(Err(SendError::Retry { after: None }));
    let every_5s = Input::Heartbeat(Ok(HeartbeatResponse {
        received_at: t0(),
        replay_from: None,
        bootstrap: Vec::new(),
        dispatch: None,
        next_heartbeat_seconds: 5,
    }));
    run.table(&[
        (0, every_5s.clone(), &[]),
        (4, Input::Tick, &[]),
        (1, Input::Tick, &["heartbeat"]),
        (0, hb_retry.clone(), &[]),
        (1, Input::Tick, &["heartbeat"]),
        (0, hb_retry.clone(), &[]),
        (0, Input::Tick, &[]),
        (2, Input::Tick, &["heartbeat"]),
        (0, every_5s, &[]),
        (5, Input::Tick, &["heartbeat"]),
    ]);
    assert!(run.agent.next_wake().is_none(), "a heartbeat in flight and nothing else: only its answer wakes");
}

#[test]
fn a_replay_resends_every_event_after_the_control_planes_seq_in_order() {
    let mut run = dispatched(vec![], 60, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, switched(V2, 0), &["persist", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (30, Input::Tick, &["heartbeat @3"]),
    ]);
    let replay = Input::Heartbeat(Ok(HeartbeatResponse {
        received_at: t0(),
        replay_from: Some(1),
        bootstrap: Vec::new(),
        dispatch: None,
        next_heartbeat_seconds: 5,
    }));
    run.table(&[
        (0, replay, &["send ActivationStarted#2"]),
        (0, applied(2), &["send ActivationCompleted#3"]),
        (0, applied(3), &[]),
    ]);
    // Events still on their way are not missing: a heartbeat that overtook them asks for them,
    // and nothing is sent twice.
    let mut run = dispatched(vec![probe("http", ProbeMode::Enforce)], 60, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, switched(V2, 0), &["persist", "probe http"]),
        (30, Input::Tick, &["heartbeat @3"]),
    ]);
    let overtaken = Input::Heartbeat(Ok(HeartbeatResponse {
        received_at: t0(),
        replay_from: Some(1),
        bootstrap: Vec::new(),
        dispatch: None,
        next_heartbeat_seconds: 30,
    }));
    run.table(&[(0, overtaken, &[]), (0, applied(2), &["send ActivationCompleted#3"]), (0, applied(3), &[])]);
    assert_eq!(run.sent.iter().filter(|e| e.seq() == 2).count(), 1);
}

#[test]
fn a_restart_mid_soak_resumes_with_the_next_seq_and_no_event_resent_blindly() {
    let mut run = dispatched(vec![probe("http", ProbeMode::Enforce)], 60, ROLLBACK);
    run.table(&[
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        (0, switched(V2, 0), &["persist", "probe http", "send ActivationCompleted#3"]),
        (0, applied(3), &[]),
        (1, probed("http", PASS), &["persist", "send ProbeResult#4"]),
    ]);
    // Killed here: ProbeResult#4 persisted, maybe never delivered.
    let intent = run.agent.intent().cloned().unwrap();
    assert_eq!((intent.stage, intent.next_seq), (Stage::Soaking, 5));
    let (mut again, actions) =
        Run::start(settings(vec![probe("http", ProbeMode::Enforce)], false), Some(intent), V2, "boot-1");
    // The heartbeat says how far the agent got; the control plane asks for what it lacks.
    assert_eq!(actions, ["probe http", "heartbeat @4"]);
    let replay = Input::Heartbeat(Ok(HeartbeatResponse {
        received_at: t0(),
        replay_from: Some(3),
        bootstrap: Vec::new(),
        dispatch: None,
        next_heartbeat_seconds: 5,
    }));
    again.table(&[
        (0, replay, &["send ProbeResult#4"]),
        (0, applied(4), &[]),
        (0, probed("http", PASS), &["persist", "send ProbeResult#5"]),
        (0, applied(5), &[]),
        (60, Input::Tick, &["persist", "heartbeat @6", "send Converged#6"]),
    ]);
}

#[test]
fn a_switch_that_finished_while_the_agent_was_down_is_reported_not_redone() {
    let mut run = dispatched(vec![], 60, ROLLBACK);
    run.at(0, step(StepResult::Realised));
    let intent = run.agent.intent().cloned().unwrap();
    assert_eq!(intent.stage, Stage::Switching);
    let (_, finished) = Run::start(settings(vec![], false), Some(intent.clone()), V2, "boot-1");
    assert_eq!(finished, ["persist", "heartbeat @3", "send ActivationCompleted#3"]);
    let (_, unfinished) = Run::start(settings(vec![], false), Some(intent.clone()), V1, "boot-1");
    assert_eq!(unfinished, ["switch v2", "heartbeat @2"]);
    let rolling_back = Intent { stage: Stage::RollingBack, ..intent };
    let (_, again) = Run::start(settings(vec![], false), Some(rolling_back), V2, "boot-1");
    assert_eq!(again, ["rollback v1", "heartbeat @2"]);
}

#[test]
fn an_agent_that_lost_its_intent_resumes_from_the_control_planes_record() {
    let (mut run, _) = Run::start(settings(vec![], false), None, V2, "boot-1");
    let due = t0() + TimeDelta::seconds(30);
    let bootstrap = Input::Heartbeat(Ok(HeartbeatResponse {
        received_at: t0(),
        replay_from: None,
        bootstrap: vec![HostRolloutSnapshot {
            rollout_id: rollout(),
            hostname: Hostname::parse("web-01").unwrap(),
            channel: Channel::parse("stable").unwrap(),
            state: HostState::Soaking,
            target_closure: closure(V2),
            current_closure_at_dispatch: Some(closure(V1)),
            current_closure: Some(closure(V2)),
            dispatch_acked_at: None,
            activation_started_at: None,
            activation_completed_at: None,
            soak_due_at: Some(due),
            last_event_seq: 5,
            soak_seconds: Some(30),
            on_health_failure: Some(HALT),
        }],
        dispatch: None,
        next_heartbeat_seconds: 5,
    }));
    run.table(&[(0, bootstrap, &["persist"]), (30, Input::Tick, &["persist", "heartbeat @6", "send Converged#6"])]);
    let intent = run.agent.intent().unwrap();
    assert_eq!(intent.previous_closure, closure(V1));
    assert_eq!((intent.soak_seconds, intent.on_health_failure), (Some(30), HALT), "taken from the snapshot");
}

#[test]
fn dispatches_are_taken_one_job_at_a_time_and_stale_results_ignored() {
    let mut run = dispatched(vec![], 0, ROLLBACK);
    let other = DispatchOrder { rollout_id: RolloutId::parse("stable@b2").unwrap(), ..dispatch(0, ROLLBACK).unwrap() };
    run.table(&[
        (0, answer(dispatch(0, ROLLBACK)), &[]),
        (0, answer(Some(other.clone())), &[]),
        (0, switched(V2, 0), &[]),
        (0, rolled_back(V1, 0), &[]),
        (0, step(StepResult::Realised), &["persist", "switch v2", "send ActivationStarted#2"]),
        (0, applied(2), &[]),
        // Soak 0 and no probes: Converged at once, queued behind #3.
        (0, switched(V2, 0), &["persist", "send ActivationCompleted#3"]),
        (0, applied(3), &["send Converged#4"]),
    ]);
}

proptest! {
    /// Whatever the world answers, in whatever order: every event the agent sends for the
    /// first time carries a larger seq than all before it, and was persisted before it left.
    #[test]
    fn seqs_only_grow_and_are_persisted_before_they_are_sent(choices in proptest::collection::vec(0u8..12, 1..120)) {
        let probes = vec![ProbeSchedule { fail_after: 2, ..probe("http", ProbeMode::Enforce) }];
        let (mut agent, _) = Agent::start(settings(probes, false), Found { intent: None, current: closure(V1), booted: None, boot_id: "b".into() }, t0());
        let mut now = t0();
        let mut highest_sent = 0;
        let mut in_flight: Option<u64> = None;
        for c in choices {
            now += TimeDelta::seconds(i64::from(c % 5));
            let input = match c {
                0 => answer(dispatch(20, ROLLBACK)),
                1 => step(StepResult::Realised),
                2 => switched(V2, 0),
                3 => switched(V2, 1),
                4 => probed("http", PASS),
                5 => probed("http", FAIL),
                6 => rolled_back(V1, 0),
                7 => Input::Event { rollout_id: rollout(), seq: in_flight.unwrap_or(0), result: Err(SendError::Retry { after: None }) },
                8 => Input::Event { rollout_id: rollout(), seq: in_flight.unwrap_or(0), result: Ok(EventOutcome::Applied) },
                9 => step(StepResult::Staged { component: "kernel".into() }),
                10 => Input::Heartbeat(Err(SendError::Retry { after: None })),
                _ => Input::Tick,
            };
            let first_new = agent.intent().map_or(1, |i| i.next_seq);
            let mut persisted = false;
            for action in agent.handle(now, input) {
                match action {
                    Action::Persist => persisted = true,
                    Action::SendEvent(e) => {
                        let seq = e.event.seq();
                        prop_assert!(seq < first_new || persisted, "seq {seq} sent before it was persisted");
                        prop_assert!(seq <= highest_sent + 1, "seq {seq} skips past {highest_sent}");
                        highest_sent = highest_sent.max(seq);
                        in_flight = Some(seq);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn heartbeats_say_what_the_host_runs_and_what_it_booted() {
    // Switched to v2 since booting v1 (a kernel change waits for the next boot).
    let found = Found { intent: None, current: closure(V2), booted: Some(closure(V1)), boot_id: "b".into() };
    let (_, actions) = Agent::start(settings(vec![], false), found, t0());
    let heartbeat = actions
        .iter()
        .find_map(|a| match a {
            Action::SendHeartbeat(hb) => Some(hb.clone()),
            _ => None,
        })
        .expect("a heartbeat first");
    assert_eq!(heartbeat.current_closure, Some(closure(V2)));
    assert_eq!(heartbeat.booted_closure, Some(closure(V1)));
    // Where `/run/booted-system` cannot be read, the heartbeat says nothing of it.
    let found = Found { intent: None, current: closure(V1), booted: None, boot_id: "b".into() };
    let (_, actions) = Agent::start(settings(vec![], false), found, t0());
    let said = actions.iter().any(|a| matches!(a, Action::SendHeartbeat(hb) if hb.booted_closure.is_none()));
    assert!(said);
}
