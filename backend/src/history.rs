//! A channel's history, from its rollouts' logs (pure): per wave when it opened and
//! completed, how long that took and how long it waited for its approval, who approved it,
//! and every operator action on the rollout.

use engine::fleet::WaveSpec;
use shared::api::{ActionRecord, LogEvent, RolloutHeader, RolloutHistory, WaveHistory};
use shared::log::LogEntry;
use shared::state::RolloutState;

fn seconds(from: Option<chrono::DateTime<chrono::Utc>>, to: Option<chrono::DateTime<chrono::Utc>>) -> Option<u64> {
    let (from, to) = (from?, to?);
    u64::try_from(to.signed_duration_since(from).num_seconds().max(0)).ok()
}

/// One rollout's history from its header, its channel's waves and its entries of
/// [`LogKind::PROGRESS`] kinds (seq order; entries of other kinds are passed over).
pub fn rollout_history(header: RolloutHeader, specs: &[WaveSpec], entries: &[LogEvent]) -> RolloutHistory {
    let mut waves: Vec<WaveHistory> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| WaveHistory {
            index: i as u32,
            soak_minutes: spec.soak_seconds / 60,
            requires_approval: spec.requires_approval,
            opened_at: None,
            completed_at: None,
            took_seconds: None,
            approved_by: None,
            approved_at: None,
            approval_wait_seconds: None,
            forced: false,
        })
        .collect();
    if let Some(first) = waves.first_mut() {
        first.opened_at = Some(header.opened_at);
    }
    let mut actions = Vec::new();
    let mut current = 0_u32;
    // Who approved each wave: the approve action is logged next to the wave's WaveApproved
    // entry (the first of them counts).
    let mut approvers: std::collections::BTreeMap<u32, String> = std::collections::BTreeMap::new();
    let typed: Vec<(&LogEvent, LogEntry)> = entries.iter().filter_map(|e| Some((e, e.entry().ok()?))).collect();
    for (_, entry) in &typed {
        if let LogEntry::OperatorAction(a) = entry
            && let shared::api::OperatorAction::ApproveWave { wave, .. } = &a.action
        {
            approvers.entry(*wave).or_insert_with(|| a.operator.clone());
        }
    }
    for (e, entry) in typed {
        match entry {
            LogEntry::WaveAdvanced(w) => {
                if let Some(left) = waves.get_mut(w.from as usize) {
                    left.completed_at = Some(e.ts);
                    left.forced = w.force;
                }
                if let Some(opened) = waves.get_mut(w.to as usize) {
                    opened.opened_at = Some(e.ts);
                }
                current = w.to;
            }
            LogEntry::WaveApproved(a) => {
                if let Some(wave) = waves.get_mut(a.wave as usize) {
                    wave.approved_at = Some(e.ts);
                    wave.approved_by = approvers.get(&a.wave).cloned();
                }
            }
            LogEntry::OperatorAction(a) => {
                actions.push(ActionRecord {
                    at: e.ts,
                    operator: a.operator.clone(),
                    what: LogEntry::OperatorAction(a).describe(),
                });
            }
            LogEntry::RolloutStateChanged(c) if c.to == RolloutState::Completed => {
                if let Some(last) = waves.get_mut(current as usize) {
                    last.completed_at = Some(e.ts);
                }
            }
            _ => {}
        }
    }
    for wave in &mut waves {
        wave.took_seconds = seconds(wave.opened_at, wave.completed_at);
        wave.approval_wait_seconds = wave.approved_at.map(|at| seconds(wave.opened_at, Some(at)).unwrap_or(0));
        if wave.opened_at.is_none() {
            wave.approval_wait_seconds = None;
        }
    }
    RolloutHistory { header, waves, actions }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use shared::log::LogKind;

    fn entry(seq: i64, minute: u32, kind: LogKind, payload: serde_json::Value) -> LogEvent {
        serde_json::from_value(json!({
            "seq": seq, "ts": format!("2026-12-01T12:{minute:02}:00Z"), "kind": kind,
            "rolloutId": "stable@a1", "payload": payload,
        }))
        .unwrap()
    }

    fn spec(soak_minutes: u64, requires_approval: bool) -> WaveSpec {
        WaveSpec { soak_seconds: soak_minutes * 60, requires_approval, max_failures: None }
    }

    #[test]
    fn waves_say_when_they_opened_completed_and_waited_for_whom() {
        let header: RolloutHeader = serde_json::from_value(json!({
            "rolloutId": "stable@a1", "channel": "stable", "state": "Completed", "currentWave": 2,
            "approvedWaves": [1], "openedAt": "2026-12-01T12:00:00Z", "completedAt": "2026-12-01T12:40:00Z",
        }))
        .unwrap();
        let approve = json!({"action": {"action": "approve-wave", "rolloutId": "stable@a1", "wave": 1}, "operator": "ana",
            "reason": "looks good", "override": false});
        let promote = json!({"action": {"action": "promote", "rolloutId": "stable@a1", "toWave": 2, "force": true},
            "operator": "bo", "reason": null, "override": true});
        let entries = [
            entry(10, 5, LogKind::WaveAdvanced, json!({"from": 0, "to": 1, "by": "auto", "force": false})),
            entry(11, 17, LogKind::OperatorAction, approve),
            entry(12, 17, LogKind::WaveApproved, json!({"wave": 1})),
            entry(13, 30, LogKind::OperatorAction, promote),
            entry(14, 30, LogKind::WaveAdvanced, json!({"from": 1, "to": 2, "by": "operator", "force": true})),
            entry(
                15,
                40,
                LogKind::RolloutStateChanged,
                json!({"from": "Active", "to": "Completed", "input": "evaluate", "halt": null, "supersededBy": null}),
            ),
        ];
        let h = rollout_history(header, &[spec(5, false), spec(10, true), spec(0, false)], &entries);
        let w = &h.waves;
        assert_eq!((w[0].took_seconds, w[0].approved_by.as_deref()), (Some(5 * 60), None));
        assert_eq!(w[1].opened_at.map(|t| t.format("%H:%M").to_string()).as_deref(), Some("12:05"));
        assert_eq!((w[1].approved_by.as_deref(), w[1].approval_wait_seconds), (Some("ana"), Some(12 * 60)));
        assert_eq!((w[1].took_seconds, w[1].forced), (Some(25 * 60), true), "left by a forced promote");
        assert_eq!(w[2].took_seconds, Some(10 * 60), "the last wave completes with the rollout");
        assert_eq!((w[1].soak_minutes, w[1].requires_approval), (10, true));
        let who: Vec<&str> = h.actions.iter().map(|a| a.operator.as_str()).collect();
        assert_eq!(who, ["ana", "bo"]);
        assert!(h.actions[0].what.contains("approve-wave by ana: looks good"), "{:?}", h.actions[0]);
    }

    #[test]
    fn a_wave_not_reached_has_no_times() {
        let header: RolloutHeader = serde_json::from_value(json!({
            "rolloutId": "stable@a1", "channel": "stable", "state": "Halted", "currentWave": 0,
            "approvedWaves": [1], "openedAt": "2026-12-01T12:00:00Z",
        }))
        .unwrap();
        // Approved ahead, never reached: no wait is told.
        let entries = [entry(3, 1, LogKind::WaveApproved, json!({"wave": 1}))];
        let h = rollout_history(header, &[spec(5, false), spec(5, true)], &entries);
        assert_eq!((h.waves[0].completed_at, h.waves[0].took_seconds), (None, None));
        assert_eq!((h.waves[1].opened_at, h.waves[1].approval_wait_seconds), (None, None));
        assert!(h.waves[1].approved_at.is_some());
    }
}
