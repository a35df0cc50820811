//! The activator with the real Nix store (Debian's `nix-bin`, installed by `scripts/setup`):
//! closures built by `nix-build`, real profile generations, and realising from a `file://`
//! binary cache where only a signed path is accepted.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use agent::activator::Activator;
use agent::machine::{FetchFailure, Step, StepResult};
use agent::testkit::{self, Behaviour};
use shared::Closure;

fn activator(root: &Path) -> Activator {
    Activator {
        profile: root.join("nix/var/nix/profiles/system"),
        current_system: root.join("run/current-system"),
        booted_system: root.join("run/booted-system"),
        substituters: Vec::new(),
        trusted_public_keys: Vec::new(),
        switch_command: Vec::new(),
        timeout: Duration::from_secs(60),
        reboot_command: vec!["false".into()],
        nix_store: "nix-store".into(),
        nix_env: "nix-env".into(),
        systemctl: "systemctl".into(),
    }
}

/// Makes `root` a host that runs `running` (booted into it).
fn boot(root: &Path, running: &Closure) {
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("nix/var/nix/profiles")).unwrap();
    symlink(running.as_str(), root.join("run/current-system")).unwrap();
    symlink(running.as_str(), root.join("run/booted-system")).unwrap();
}

#[test]
fn real_profile_generations_switch_and_roll_back_to_the_recorded_closure() {
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path();
    let v1 = testkit::build_system(root_path, "v1", "generations", Behaviour::Switches).unwrap();
    let v2 = testkit::build_system(root_path, "v2", "generations", Behaviour::Switches).unwrap();
    boot(root_path, &v1);
    let a = activator(root_path);
    let profile = a.profile.clone();

    assert_eq!(a.run(&Step::Realise { target: v2.clone() }), StepResult::Realised);
    assert_eq!(
        a.run(&Step::Switch { target: v2.clone() }),
        StepResult::Switched { observed: v2.clone(), exit_code: 0 }
    );
    assert_eq!(testkit::generations(&profile).unwrap(), [(1, true)]);
    assert_eq!(testkit::profile_target(&profile).unwrap(), Path::new(v2.as_str()));

    let back = a.run(&Step::Rollback { to: v1.clone() });
    assert_eq!(back, StepResult::RolledBack { observed: v1.clone(), exit_code: 0, stderr_tail: String::new() });
    assert_eq!(testkit::generations(&profile).unwrap(), [(1, false), (2, true)], "a new generation, not --rollback");
    assert_eq!(testkit::profile_target(&profile).unwrap(), Path::new(v1.as_str()));
    let log = std::fs::read_to_string(root_path.join("switch.log")).unwrap();
    assert_eq!(log, "v2 switch\nv1 switch\n", "the previous closure's own switch-to-configuration ran");
}

#[test]
fn a_closure_whose_switch_fails_is_reported_with_the_exit_code_and_still_on_the_old_system() {
    let root = tempfile::tempdir().unwrap();
    let v1 = testkit::build_system(root.path(), "v1", "failing", Behaviour::Switches).unwrap();
    let broken = testkit::build_system(root.path(), "broken", "failing", Behaviour::Fails).unwrap();
    boot(root.path(), &v1);
    let a = activator(root.path());
    assert_eq!(a.run(&Step::Switch { target: broken }), StepResult::Switched { observed: v1, exit_code: 4 });
}

#[test]
fn realising_takes_a_signed_path_from_the_binary_cache_and_refuses_an_unsigned_one() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let (secret, public) = testkit::cache_key(scratch.path(), "fleetwave-test-1").unwrap();
    let signed = testkit::build_system(scratch.path(), "signed", "cache", Behaviour::Switches).unwrap();
    let unsigned = testkit::build_system(scratch.path(), "unsigned", "cache", Behaviour::Switches).unwrap();
    testkit::publish(&cache, &signed, Some(&secret)).unwrap();
    testkit::publish(&cache, &unsigned, None).unwrap();
    assert!(!Path::new(signed.as_str()).exists() && !Path::new(unsigned.as_str()).exists());

    let root = scratch.path().join("host");
    boot(&root, &signed);
    let mut a = activator(&root);
    a.substituters = vec![format!("file://{}", cache.display())];
    a.trusted_public_keys = vec![public];
    assert_eq!(a.run(&Step::Realise { target: signed.clone() }), StepResult::Realised);
    assert!(Path::new(signed.as_str()).exists());
    match a.run(&Step::Realise { target: unsigned.clone() }) {
        StepResult::FetchFailed { class: FetchFailure::Signature, exit_code, stderr_tail } => {
            assert_ne!(exit_code, 0);
            assert!(stderr_tail.contains("not signed"), "{stderr_tail}");
        }
        other => panic!("an unsigned path was not refused for its signature: {other:?}"),
    }
    assert!(!Path::new(unsigned.as_str()).exists());
}
