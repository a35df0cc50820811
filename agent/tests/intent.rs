//! The agent's durable memory: saved atomically, read back whole, a torn temporary file from a
//! crash ignored, and a corrupt file an error rather than a fresh start that reuses seqs.
#![allow(clippy::unwrap_used)]

use agent::intent::{INTENT_FILE, Intent, IntentError, Stage, clear, load, save};
use shared::manifest::HealthFailurePolicy;
use shared::state::HostEvent;
use shared::{Closure, RolloutId};

fn intent(next_seq: u64) -> Intent {
    let at = "2026-12-01T10:00:00Z".parse().unwrap();
    Intent {
        rollout_id: RolloutId::parse("stable@a1").unwrap(),
        target_closure: Closure::parse("/nix/store/a-v2").unwrap(),
        previous_closure: Closure::parse("/nix/store/a-v1").unwrap(),
        boot_id: "6f0c7a3e-0000-4000-8000-000000000001".into(),
        soak_seconds: Some(60),
        on_health_failure: HealthFailurePolicy::RollbackAndHalt,
        stage: Stage::Fetching,
        soak_due_at: None,
        next_seq,
        events: vec![HostEvent::DispatchAck {
            seq: 1,
            current_closure: Closure::parse("/nix/store/a-v1").unwrap(),
            received_at: at,
        }],
    }
}

#[test]
fn an_intent_survives_being_saved_and_loaded_and_each_save_replaces_the_last_whole() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("var/lib/fleetwave-agent");
    assert_eq!(load(&state).unwrap(), None, "no intent on a fresh host");
    save(&state, &intent(2)).unwrap();
    save(&state, &intent(3)).unwrap();
    assert_eq!(load(&state).unwrap(), Some(intent(3)));
    // A crash between writing the temporary file and the rename leaves it behind: ignored.
    std::fs::write(state.join(format!("{INTENT_FILE}.tmp")), b"{\"rolloutId\": \"stab").unwrap();
    assert_eq!(load(&state).unwrap().map(|i| i.next_seq), Some(3));
    save(&state, &intent(4)).unwrap();
    assert_eq!(load(&state).unwrap().map(|i| i.next_seq), Some(4));
    clear(&state).unwrap();
    assert_eq!(load(&state).unwrap(), None);
    clear(&state).unwrap();
}

#[test]
fn a_corrupt_intent_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(INTENT_FILE), b"{\"rolloutId\": 7}").unwrap();
    assert!(matches!(load(dir.path()), Err(IntentError::Corrupt { .. })));
}
