//! Rollout policies (SPEC §17): verification of the fleet's freezes, maintenance windows and
//! failure budgets; the window arithmetic across midnight and daylight-saving changes; the
//! gates in their order; freezes, suspensions and budgets through the controller.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use engine::controller::Refusal;
use engine::planner::PlanAction;
use engine::testkit::{FleetBuilder, Scenario, sign, t0, trust};
use engine::verify::{Freshness, VerifyError, verify_fleet};
use engine::window::Window;
use serde_json::{Value, json};
use shared::ErrorCode;
use shared::api::OperatorAction;
use shared::log::LogEntry;
use shared::manifest::MaintenanceWindow;
use shared::state::{Gate, HostState, RolloutState};
use shared::{Channel, Closure, Hostname};

const R: &str = "stable@c0ffee";

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

fn single(hosts: &[&str], policy_waves: &[(u64, bool)]) -> FleetBuilder {
    let mut b = FleetBuilder::new().policy("p", policy_waves, "halt", 120).channel("stable", "p");
    for h in hosts {
        b = b.host(h, "stable", &["web"]);
    }
    b
}

fn gate_of(s: &Scenario, rollout: &str, host: &str) -> Option<Gate> {
    s.record(rollout, host).waiting_on.as_ref().map(|w| w.gate)
}

fn reason_of(s: &Scenario, rollout: &str, host: &str) -> String {
    s.record(rollout, host).waiting_on.as_ref().map(|w| w.reason.to_string()).unwrap_or_default()
}

fn rejected_code(result: Result<engine::controller::Acted, Refusal>) -> ErrorCode {
    match result {
        Err(Refusal::Rejected { code, .. }) => code,
        other => panic!("expected a 409 refusal, got {other:?}"),
    }
}

fn fail(s: &mut Scenario, host: &str) {
    let now = s.now;
    s.send(R, host, "Failed", json!({"failedAt": now, "failingProbes": ["http"], "policyApplied": "halt"})).unwrap();
}

// ---- verification ----

fn verify_error(doc: &Value) -> String {
    match verify_fleet(Some(&trust()), &sign(doc), t0(), Freshness::Check) {
        Err(VerifyError::Inconsistent(message)) => message,
        other => panic!("expected inconsistent, got {other:?}"),
    }
}

fn with_window(field: &str, value: Value) -> Value {
    let mut doc = single(&["a"], &[(0, false)])
        .window("nightly", json!({"all": true}), &["Mon", "Tue"], "02:00", "05:00", "Europe/Berlin")
        .document();
    doc["maintenanceWindows"][0][field] = value;
    doc
}

#[test]
fn malformed_windows_are_rejected_naming_the_field() {
    let cases = [
        ("timezone", json!("Mars/Olympus"), "maintenanceWindows[0].timezone: `Mars/Olympus` is not an IANA time zone"),
        ("days", json!(["Mon", "Moonday"]), "maintenanceWindows[0].days[1]: `Moonday` is not one of Mon"),
        ("days", json!([]), "maintenanceWindows[0].days: lists no day"),
        ("days", json!(["Tue", "Tue"]), "maintenanceWindows[0].days[1]: `Tue` is listed twice"),
        ("start", json!("2:00"), "maintenanceWindows[0].start: `2:00` is not a time of day"),
        ("start", json!("24:00"), "maintenanceWindows[0].start: `24:00` is not a time of day"),
        ("end", json!("05:60"), "maintenanceWindows[0].end: `05:60` is not a time of day"),
        ("end", json!("01:00"), "maintenanceWindows[0].end: 01:00 is not after start 02:00"),
        ("end", json!("02:00"), "maintenanceWindows[0].end: 02:00 is not after start 02:00"),
    ];
    for (field, value, expected) in cases {
        let message = verify_error(&with_window(field, value.clone()));
        assert!(message.starts_with(expected), "{field} = {value}: {message}");
    }
    // 24:00 ends a window at midnight.
    assert!(verify_fleet(Some(&trust()), &sign(&with_window("end", json!("24:00"))), t0(), Freshness::Check).is_ok());
}

#[test]
fn duplicate_names_inverted_freezes_and_bad_budgets_are_rejected_naming_the_field() {
    let two_windows = single(&["a"], &[(0, false)])
        .window("nightly", json!({"all": true}), &["Mon"], "02:00", "05:00", "UTC")
        .window("nightly", json!({"all": true}), &["Tue"], "02:00", "05:00", "UTC");
    assert_eq!(verify_error(&two_windows.document()), "maintenanceWindows[1].name: duplicate name `nightly`");

    let later = t0() + Duration::hours(1);
    let two_freezes = single(&["a"], &[(0, false)])
        .freeze("xmas", json!({"all": true}), t0(), later, "holidays")
        .freeze("xmas", json!({"all": true}), t0(), later, "again");
    assert_eq!(verify_error(&two_freezes.document()), "freezes[1].name: duplicate name `xmas`");

    let inverted = single(&["a"], &[(0, false)]).freeze("xmas", json!({"all": true}), later, t0(), "holidays");
    assert!(verify_error(&inverted.document()).starts_with("freezes[0].to: "), "to before from");

    let fleet = |max: Value| {
        single(&["a", "b"], &[(0, false), (0, false)]).waves("stable", &[&["a"], &["b"]]).max_failures("p", 1, max)
    };
    for bad in [json!("ten%"), json!("101%"), json!("%"), json!(-1), json!("5")] {
        let message = verify_error(&fleet(bad.clone()).document());
        assert!(message.starts_with("rolloutPolicies.p.waves[1].maxFailures: "), "{bad}: {message}");
    }
    for good in [json!(0), json!(3), json!("10%"), json!("100%")] {
        fleet(good).verified();
    }
}

#[test]
fn the_policies_need_schema_version_two() {
    let mut doc = single(&["a"], &[(0, false)])
        .window("nightly", json!({"all": true}), &["Mon"], "02:00", "05:00", "UTC")
        .document();
    doc["schemaVersion"] = json!(1);
    assert_eq!(verify_error(&doc), "maintenanceWindows: needs schemaVersion 2");
    let mut doc = single(&["a"], &[(0, false)]).max_failures("p", 0, json!(1)).document();
    doc["schemaVersion"] = json!(1);
    assert_eq!(verify_error(&doc), "rolloutPolicies.p.waves[0].maxFailures: needs schemaVersion 2");
    // A version 1 fleet without them is accepted as before.
    single(&["a"], &[(0, false)]).verified();
}

// ---- window arithmetic ----

fn window(days: &[&str], start: &str, end: &str, tz: &str) -> Window {
    let w = MaintenanceWindow {
        name: "w".into(),
        selector: Default::default(),
        days: days.iter().map(|d| (*d).to_owned()).collect(),
        start: start.into(),
        end: end.into(),
        timezone: tz.into(),
    };
    Window::parse(&w, "w").unwrap()
}

#[test]
fn a_window_on_the_night_the_clocks_skip_an_hour_opens_when_the_wall_clock_shows_its_time() {
    // Europe/Berlin, Sunday 2027-03-28: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    let w = window(&["Sun"], "02:00", "05:00", "Europe/Berlin");
    assert!(!w.is_open(utc("2027-03-28T00:59:59Z")), "01:59:59 CET");
    assert_eq!(w.next_open(utc("2027-03-27T20:00:00Z")), Some(utc("2027-03-28T01:00:00Z")), "03:00 CEST");
    assert_eq!(w.local_label(utc("2027-03-28T01:00:00Z")), "Sun 03:00");
    assert!(w.is_open(utc("2027-03-28T01:00:00Z")));
    assert!(w.is_open(utc("2027-03-28T02:59:59Z")), "04:59:59 CEST");
    assert!(!w.is_open(utc("2027-03-28T03:00:00Z")), "05:00 CEST");

    // 02:30 does not exist that night: the window opens at the first wall-clock minute after it.
    let half_past = window(&["Sun"], "02:30", "04:00", "Europe/Berlin");
    assert_eq!(half_past.next_open(utc("2027-03-27T20:00:00Z")), Some(utc("2027-03-28T01:00:00Z")));

    // A window inside the skipped hour does not occur that night; the next Sunday it does.
    let skipped = window(&["Sun"], "02:15", "02:45", "Europe/Berlin");
    assert_eq!(skipped.next_open(utc("2027-03-27T20:00:00Z")), Some(utc("2027-04-04T00:15:00Z")));
    for minute in 0..120 {
        assert!(!skipped.is_open(utc("2027-03-28T00:00:00Z") + Duration::minutes(minute)));
    }
}

#[test]
fn a_window_on_the_night_the_clocks_repeat_an_hour_is_open_both_times() {
    // Europe/Berlin, Sunday 2027-10-31: 03:00 CEST becomes 02:00 CET (01:00 UTC).
    let w = window(&["Sun"], "02:30", "02:45", "Europe/Berlin");
    assert_eq!(w.next_open(utc("2027-10-30T20:00:00Z")), Some(utc("2027-10-31T00:30:00Z")), "02:30 CEST");
    assert!(w.is_open(utc("2027-10-31T00:35:00Z")), "02:35 CEST");
    assert!(!w.is_open(utc("2027-10-31T00:50:00Z")), "02:50 CEST");
    assert_eq!(w.next_open(utc("2027-10-31T00:50:00Z")), Some(utc("2027-10-31T01:30:00Z")), "02:30 CET");
    assert!(w.is_open(utc("2027-10-31T01:35:00Z")), "02:35 CET");
}

#[test]
fn windows_across_midnight_and_date_lines() {
    // Until midnight: 23:59 is inside, 00:00 the next day is not.
    let late = window(&["Mon"], "22:00", "24:00", "Europe/Berlin");
    assert!(late.is_open(utc("2026-11-30T22:59:00Z")), "Mon 23:59 CET");
    assert!(!late.is_open(utc("2026-11-30T23:00:00Z")), "Tue 00:00 CET");
    assert_eq!(late.next_open(utc("2026-11-30T23:00:00Z")), Some(utc("2026-12-07T21:00:00Z")), "next Monday");

    // Monday 23:30 in Berlin: Tuesday's window opens at 02:00 local, on the next UTC day.
    let tuesday = window(&["Tue"], "02:00", "05:00", "Europe/Berlin");
    let now = utc("2026-11-30T22:30:00Z");
    assert_eq!(tuesday.next_open(now), Some(utc("2026-12-01T01:00:00Z")));
    assert_eq!(tuesday.local_label(utc("2026-12-01T01:00:00Z")), "Tue 02:00");

    // The day is the zone's, not UTC's: Monday 02:00 in Tokyo is Sunday 17:00 UTC.
    let tokyo = window(&["Mon"], "02:00", "03:00", "Asia/Tokyo");
    assert!(tokyo.is_open(utc("2026-11-29T17:00:00Z")));
    assert!(!tokyo.is_open(utc("2026-11-30T17:00:00Z")), "Tuesday in Tokyo");
}

// ---- the gates in order ----

/// One host (`x`) held by every gate at once; lifting them one at a time shows each in the
/// order of SPEC §17, the first that blocks winning.
#[test]
fn every_gate_holds_in_the_documented_order_first_block_wins() {
    let set = FleetBuilder::new()
        .policy("p", &[(0, false), (0, true)], "halt", 120)
        .policy("one", &[(0, false)], "halt", 120)
        .channel("canary", "one")
        .channel("stable", "p")
        .host("c1", "canary", &[])
        .host("s0", "stable", &["web"])
        .host("x", "stable", &["web"])
        .host("y", "stable", &[])
        .waves("stable", &[&["s0"], &["x", "y"]])
        .channel_edge("canary", "stable")
        .edge("y", "x")
        .budget("web", json!({"tags": ["web"]}), 1)
        // t0 is 12:00 UTC: closed for another 30 minutes.
        .window(
            "afternoon",
            json!({"hosts": ["x"]}),
            &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            "12:30",
            "23:00",
            "UTC",
        )
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    s.tick();
    let stable = Channel::parse("stable").unwrap();
    let closure = Closure::parse("/nix/store/x-v1").unwrap();
    s.act(OperatorAction::Quarantine { channel: stable.clone(), closure: closure.clone() }, "bad").unwrap();
    let selector = serde_json::from_value(json!({"hosts": ["x"]})).unwrap();
    let freeze = OperatorAction::Freeze { name: Some("hold-x".into()), selector: Some(selector), until: None };
    s.act(freeze, "incident 42").unwrap();
    s.act(OperatorAction::SuspendHost { hostname: host("x") }, "disk replacement").unwrap();
    s.act(OperatorAction::Pause { rollout_id: Scenario::rid(R) }, "").unwrap();

    let mut seen = Vec::new();
    for expected in Gate::ALL {
        s.tick();
        let gate = gate_of(&s, R, "x");
        assert_eq!(gate, Some(expected), "after lifting {seen:?}: {}", reason_of(&s, R, "x"));
        seen.push(expected);
        match expected {
            Gate::Quarantine => {
                s.act(OperatorAction::Release { channel: stable.clone(), closure: closure.clone() }, "").unwrap();
            }
            Gate::Freeze => {
                assert_eq!(reason_of(&s, R, "x"), "frozen by hold-x: incident 42 (set by bob, until released)");
                s.act(OperatorAction::Unfreeze { name: "hold-x".into() }, "fixed").unwrap();
            }
            Gate::Suspended => {
                assert_eq!(reason_of(&s, R, "x"), "the host is suspended by bob: disk replacement");
                s.act(OperatorAction::ResumeHost { hostname: host("x") }, "disk replaced").unwrap();
            }
            Gate::RolloutState => {
                s.act(OperatorAction::Resume { rollout_id: Scenario::rid(R) }, "").unwrap();
            }
            Gate::ChannelEdge => s.converge("canary@c0ffee", "c1"),
            Gate::Wave => {
                s.act(OperatorAction::Promote { rollout_id: Scenario::rid(R), to_wave: 1, force: true }, "").unwrap();
            }
            Gate::Approval => {
                s.act(OperatorAction::ApproveWave { rollout_id: Scenario::rid(R), wave: 1 }, "").unwrap();
            }
            Gate::Window => {
                let waiting = s.record(R, "x").waiting_on.clone().unwrap();
                assert_eq!(&*waiting.reason, "maintenance window afternoon opens Thu 12:30 UTC");
                assert_eq!(waiting.until, Some(t0() + Duration::minutes(30)));
                s.advance(30 * 60);
            }
            Gate::HostEdge => {
                assert_eq!(reason_of(&s, R, "x"), "waiting for y (Pending)");
                s.converge(R, "y");
            }
            Gate::Budget => s.converge(R, "s0"),
        }
    }
    assert_eq!(Scenario::dispatched(&s.tick()), ["x"], "nothing holds x any more");
}

// ---- freezes ----

#[test]
fn a_freeze_lets_activating_hosts_finish_withdraws_unacknowledged_dispatches_and_starts_nothing() {
    let mut s = Scenario::new(
        single(&["a", "b", "c"], &[(0, false)]).budget("one", json!({"hosts": ["c"]}), 1).manifest_set("c0ffee"),
    );
    s.tick();
    // a is switching, b's dispatch is not picked up yet.
    let now = s.now;
    s.send(R, "a", "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now})).unwrap();
    assert_eq!(s.record(R, "a").state, HostState::Activating);
    assert!(s.record(R, "b").dispatch.is_some());

    let acted = s.act(OperatorAction::Freeze { name: None, selector: None, until: None }, "stop the line").unwrap();
    let name = acted.name.unwrap();
    assert_eq!(name, "stop-the-line-20261126-120000");
    let actions = s.tick();
    assert!(actions.contains(&PlanAction::Hold {
        host: host("b"),
        rollout_id: Scenario::rid(R),
        gate: Gate::Freeze,
        reason: format!("frozen by {name}: stop the line (set by bob, until released)").into(),
        until: None,
    }));
    assert!(s.record(R, "b").dispatch.is_none(), "the unacknowledged dispatch was withdrawn");
    assert!(Scenario::dispatched(&actions).is_empty(), "nothing new starts");

    // The activating host finishes under the freeze.
    let now = s.now;
    s.send(
        R,
        "a",
        "ActivationCompleted",
        json!({"observedClosure": "/nix/store/a-v1", "exitCode": 0, "completedAt": now}),
    )
    .unwrap();
    s.converge(R, "a");
    assert_eq!(s.record(R, "a").state, HostState::Converged);
    assert!(Scenario::dispatched(&s.tick()).is_empty());

    assert_eq!(
        rejected_code(s.act(OperatorAction::Freeze { name: Some(name.clone()), selector: None, until: None }, "x")),
        ErrorCode::AlreadyFrozen
    );
    s.act(OperatorAction::Unfreeze { name: name.clone() }, "all clear").unwrap();
    assert_eq!(rejected_code(s.act(OperatorAction::Unfreeze { name }, "again")), ErrorCode::UnknownFreeze);
    assert_eq!(Scenario::dispatched(&s.tick()), ["b", "c"]);
}

#[test]
fn a_signed_freeze_holds_its_hosts_from_its_start_to_its_end_and_only_a_new_fleet_lifts_it() {
    let (from, to) = (t0() + Duration::hours(1), t0() + Duration::hours(3));
    let set = single(&["a", "b"], &[(0, false), (0, false)])
        .waves("stable", &[&["a"], &["b"]])
        .freeze("xmas", json!({"hosts": ["b"]}), from, to, "holidays")
        .manifest_set("c0ffee");
    let mut s = Scenario::new(set);
    assert_eq!(Scenario::dispatched(&s.tick()), ["a"]);
    s.advance(3600);
    s.converge(R, "a");
    s.tick();
    assert_eq!(gate_of(&s, R, "b"), Some(Gate::Freeze));
    let waiting = s.record(R, "b").waiting_on.clone().unwrap();
    assert_eq!(&*waiting.reason, "frozen by xmas: holidays (signed fleet, until 2026-11-26 15:00 UTC)");
    assert_eq!(waiting.until, Some(to));
    assert_eq!(rejected_code(s.act(OperatorAction::Unfreeze { name: "xmas".into() }, "")), ErrorCode::UnknownFreeze);
    s.now = to;
    assert_eq!(Scenario::dispatched(&s.tick()), ["b"]);
}

#[test]
fn freezes_refuse_bad_input() {
    let mut s = Scenario::new(single(&["a"], &[(0, false)]).manifest_set("c0ffee"));
    let invalid = |r: Result<engine::controller::Acted, Refusal>| matches!(r, Err(Refusal::Invalid { .. }));
    let freeze = |name: Option<&str>, selector: Option<Value>, until: Option<DateTime<Utc>>| OperatorAction::Freeze {
        name: name.map(str::to_owned),
        selector: selector.map(|v| serde_json::from_value(v).unwrap()),
        until,
    };
    assert!(invalid(s.act(freeze(None, None, None), "  ")), "a reason is required");
    assert!(invalid(s.act(freeze(Some("a b"), None, None), "r")), "names are plain");
    assert!(invalid(s.act(freeze(None, None, Some(t0())), "r")), "until in the past");
    assert!(invalid(s.act(freeze(None, Some(json!({"hosts": ["nope"]})), None), "r")), "selects nothing");
    assert!(invalid(s.act(freeze(None, None, None), &"x".repeat(1025))), "reason too long");
    assert!(s.state.policies.freezes.is_empty(), "nothing changed");
}

// ---- suspended hosts ----

#[test]
fn a_suspended_host_is_excused_for_wave_advance_and_completion_and_counts_again_once_resumed() {
    let set = single(&["a", "b", "c"], &[(0, false), (0, false)]).waves("stable", &[&["a", "b"], &["c"]]);
    let mut s = Scenario::new(set.manifest_set("c0ffee"));
    s.tick();
    assert!(s.record(R, "b").dispatch.is_some());
    s.act(OperatorAction::SuspendHost { hostname: host("b") }, "rma").unwrap();
    assert_eq!(
        rejected_code(s.act(OperatorAction::SuspendHost { hostname: host("b") }, "rma")),
        ErrorCode::AlreadySuspended
    );
    assert_eq!(
        rejected_code(s.act(OperatorAction::SuspendHost { hostname: host("zz") }, "rma")),
        ErrorCode::UnknownHost
    );
    s.tick();
    assert!(s.record(R, "b").dispatch.is_none(), "withdrawn");
    assert_eq!(gate_of(&s, R, "b"), Some(Gate::Suspended));

    // b does not hold wave 0.
    s.converge(R, "a");
    let actions = s.tick();
    assert_eq!(actions[0], PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 1 });
    assert_eq!(Scenario::dispatched(&actions), ["c"]);

    // Resumed before the rollout completes: b counts again and is dispatched (its wave is
    // behind the current one); the rollout completes only once b converges.
    s.act(OperatorAction::ResumeHost { hostname: host("b") }, "back").unwrap();
    assert_eq!(rejected_code(s.act(OperatorAction::ResumeHost { hostname: host("b") }, "")), ErrorCode::NotSuspended);
    assert_eq!(Scenario::dispatched(&s.tick()), ["b"]);
    s.converge(R, "c");
    s.tick();
    assert_eq!(s.rollout(R).state, RolloutState::Active, "b is not done");
    s.converge(R, "b");
    s.tick();
    assert_eq!(s.rollout(R).state, RolloutState::Completed);
}

#[test]
fn a_rollout_whose_last_open_host_is_suspended_completes() {
    let mut s = Scenario::new(single(&["a", "b"], &[(0, false)]).manifest_set("c0ffee"));
    s.tick();
    s.converge(R, "a");
    s.tick();
    assert_eq!(s.rollout(R).state, RolloutState::Active);
    s.act(OperatorAction::SuspendHost { hostname: host("b") }, "broken fan").unwrap();
    s.tick();
    assert_eq!(s.rollout(R).state, RolloutState::Completed);
    assert_eq!(s.record(R, "b").state, HostState::Pending, "suspended, not updated");
}

// ---- failure budgets ----

fn budgeted(max: Value) -> Scenario {
    let set = single(&["a", "b", "c", "d", "e"], &[(0, false), (0, false)])
        .waves("stable", &[&["a", "b", "c", "d"], &["e"]])
        .max_failures("p", 0, max);
    let mut s = Scenario::new(set.manifest_set("c0ffee"));
    s.tick();
    for h in ["a", "b", "c", "d"] {
        s.activate(R, h);
    }
    s
}

#[test]
fn failures_up_to_the_budget_do_not_halt_and_one_more_does() {
    for (max, allowed) in [(json!(2), 2), (json!("50%"), 2), (json!("60%"), 2), (json!("24%"), 0)] {
        let mut s = budgeted(max.clone());
        for (n, h) in ["a", "b", "c"].into_iter().enumerate() {
            fail(&mut s, h);
            let failures = n + 1;
            let halted = s.rollout(R).state == RolloutState::Halted;
            assert_eq!(halted, failures > allowed, "maxFailures {max}: {failures} failures");
            if halted {
                break;
            }
        }
    }
}

#[test]
fn a_failure_within_budget_is_logged_excused_when_its_wave_completes_and_does_not_quarantine() {
    let mut s = budgeted(json!(1));
    let now = s.now;
    let rows = s
        .send(
            R,
            "a",
            "Failed",
            json!({"failedAt": now, "failingProbes": ["http"], "policyApplied": "rollback-and-halt"}),
        )
        .unwrap();
    let within = rows.iter().find_map(|r| match &r.entry {
        LogEntry::FailureWithinBudget(w) => Some(w.clone()),
        _ => None,
    });
    let within = within.expect("logged");
    assert_eq!((within.wave, within.failures, within.max), (0, 1, 1));
    assert_eq!(s.rollout(R).state, RolloutState::Active);
    // The agent rolls back: the closure is not quarantined (the budget lets the others go on).
    s.send(R, "a", "RollbackComplete", json!({"revertedTo": "/nix/store/old", "completedAt": now})).unwrap();
    assert_eq!(s.record(R, "a").state, HostState::Reverted);
    assert!(s.quarantines.is_empty());

    for h in ["b", "c", "d"] {
        s.converge(R, h);
    }
    assert!(!s.record(R, "a").excused);
    let actions = s.tick();
    assert_eq!(actions[0], PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 1 });
    assert!(s.record(R, "a").excused, "excused as its wave completed");
    s.converge(R, "e");
    s.tick();
    assert_eq!(s.rollout(R).state, RolloutState::Completed);
}

#[test]
fn a_failure_within_budget_in_the_last_wave_is_excused_when_the_rollout_completes() {
    let set = single(&["a", "b"], &[(0, false)]).waves("stable", &[&["a", "b"]]).max_failures("p", 0, json!("50%"));
    let mut s = Scenario::new(set.manifest_set("c0ffee"));
    s.tick();
    s.activate(R, "a");
    fail(&mut s, "a");
    s.converge(R, "b");
    s.tick();
    assert_eq!(s.rollout(R).state, RolloutState::Completed);
    assert!(s.record(R, "a").excused);
}

#[test]
fn a_failure_within_budget_whose_host_is_rolling_back_holds_its_wave_until_the_rollback_is_done() {
    let mut s = budgeted(json!(1));
    let now = s.now;
    s.send(R, "a", "Failed", json!({"failedAt": now, "failingProbes": ["http"], "policyApplied": "rollback-and-halt"}))
        .unwrap();
    for h in ["b", "c", "d"] {
        s.converge(R, h);
    }
    assert!(!s.tick().iter().any(|a| matches!(a, PlanAction::AdvanceWave { .. })), "a is still rolling back");
    let now = s.now;
    s.send(R, "a", "RollbackComplete", json!({"revertedTo": "/nix/store/old", "completedAt": now})).unwrap();
    assert_eq!(s.tick()[0], PlanAction::AdvanceWave { rollout_id: Scenario::rid(R), to: 1 });
    assert!(s.record(R, "a").excused);
}
