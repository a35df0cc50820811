//! Presence (SPEC §6): a host goes offline after three of the heartbeat intervals its last
//! answer asked for — not sooner because a rollout opened for it meanwhile.

use engine::controller::Write;
use engine::testkit::{FleetBuilder, Scenario, at};
use shared::log::LogEntry;

/// Whether a plan pass now logs `a` going offline.
fn goes_offline(s: &mut Scenario) -> bool {
    let mut out = Vec::new();
    s.controller.request_plan();
    let now = s.now;
    s.controller.plan(now, &mut out);
    out.iter().any(|w| matches!(w, Write::Log(row) if matches!(row.entry, LogEntry::HostOffline(_))))
}

#[test]
fn a_host_told_to_come_back_in_30_s_is_not_offline_at_15_when_a_rollout_opened_meanwhile() {
    let fleet = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &[])
        .waves("stable", &[&["a"]]);
    let mut s = Scenario::new(fleet.manifest_set("a1"));
    s.now = at(0);
    assert_eq!(s.heartbeat_interval("a"), 30, "nothing is open for a yet");
    // The rollout opens (a's record is open from now on), and a is silent for 20 s.
    s.tick();
    assert!(s.state.record(&Scenario::rid("stable@a1"), &Scenario::host("a")).is_some());
    s.advance(20);
    assert!(!goes_offline(&mut s), "told 30 s, late only after 90");
    s.advance(71);
    assert!(goes_offline(&mut s), "silent for three of its intervals");
    // Back, now told the active interval: offline after three of those.
    assert_eq!(s.heartbeat_interval("a"), 5);
    s.advance(16);
    assert!(goes_offline(&mut s));
}
