//! The Nix activator against fake system trees (SPEC §14 tests): closures are directories in a
//! temporary root with a `bin/switch-to-configuration` script, `/run/current-system` and
//! `/run/booted-system` are links, and stand-ins for `nix-store` and `nix-env` do what Nix
//! would to them. Switches that succeed, exit non-zero, hang past the timeout or end on an
//! unexpected closure; a kernel change staged for the next boot; a rollback; fetch failures
//! sorted by their message.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::activator::{Activator, classify_fetch};
use agent::machine::{FetchFailure, Step, StepResult};
use shared::Closure;

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn write_script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Tree {
    /// A host running `v1` (kernel `k1`), with `v2` (same kernel) in the store.
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let tree = Tree { _dir: dir, root };
        tree.system("v1", "k1", "flip");
        tree.system("v2", "k1", "flip");
        std::fs::create_dir_all(tree.root.join("run")).unwrap();
        symlink(tree.closure("v1").as_str(), tree.root.join("run/current-system")).unwrap();
        symlink(tree.closure("v1").as_str(), tree.root.join("run/booted-system")).unwrap();
        // nix-env -p PROFILE --set CLOSURE: the profile ends up pointing at the closure.
        write_script(
            &tree.root.join("bin/nix-env"),
            r#"[ "$1" = -p ] && [ "$3" = --set ] && mkdir -p "$(dirname "$2")" && ln -sfn "$4" "$2""#,
        );
        tree
    }

    fn closure(&self, name: &str) -> Closure {
        Closure::parse(self.root.join("store").join(name).display().to_string()).unwrap()
    }

    /// A system closure whose switch-to-configuration does `how`: `flip` (points
    /// current-system at itself and exits 0), `fail` (flips, exits 4), `hang`, or `other`
    /// (points current-system at the closure `other`). It records each action it was asked.
    fn system(&self, name: &str, kernel: &str, how: &str) {
        let dir = self.root.join("store").join(name);
        let current = self.root.join("run/current-system");
        let log = self.root.join("switch.log");
        let flip = format!("ln -sfn {} {}", dir.display(), current.display());
        let body = match how {
            "flip" => flip,
            "fail" => format!("{flip}\necho 'unit nginx.service failed' >&2\nexit 4"),
            "hang" => "exec sleep 30".to_owned(),
            "other" => format!("ln -sfn {} {}", self.root.join("store/other").display(), current.display()),
            _ => unreachable!(),
        };
        write_script(
            &dir.join("bin/switch-to-configuration"),
            &format!("echo \"{name} $1\" >> {}\n[ \"$1\" = boot ] && exit 0\n{body}", log.display()),
        );
        let kernels = self.root.join("store/kernels");
        std::fs::create_dir_all(&kernels).unwrap();
        std::fs::write(kernels.join(kernel), kernel).unwrap();
        for component in ["kernel", "initrd", "kernel-modules"] {
            let _ = std::fs::remove_file(dir.join(component));
            let to = if component == "kernel" { kernels.join(kernel) } else { kernels.join("k1") };
            symlink(to, dir.join(component)).unwrap();
        }
    }

    fn activator(&self, timeout: Duration) -> Activator {
        Activator {
            profile: self.root.join("nix/var/nix/profiles/system"),
            current_system: self.root.join("run/current-system"),
            booted_system: self.root.join("run/booted-system"),
            substituters: Vec::new(),
            trusted_public_keys: Vec::new(),
            switch_command: Vec::new(),
            timeout,
            reboot_command: vec!["false".into()],
            nix_store: self.root.join("bin/nix-store").display().to_string(),
            nix_env: self.root.join("bin/nix-env").display().to_string(),
            systemctl: self.root.join("bin/systemctl").display().to_string(),
        }
    }

    fn profile(&self) -> PathBuf {
        std::fs::read_link(self.root.join("nix/var/nix/profiles/system")).unwrap()
    }

    fn switch_log(&self) -> String {
        std::fs::read_to_string(self.root.join("switch.log")).unwrap_or_default()
    }
}

#[test]
fn a_switch_sets_the_profile_runs_the_targets_switch_and_reports_what_runs() {
    let tree = Tree::new();
    let activator = tree.activator(Duration::from_secs(10));
    let result = activator.run(&Step::Switch { target: tree.closure("v2") });
    assert_eq!(result, StepResult::Switched { observed: tree.closure("v2"), exit_code: 0 });
    assert_eq!(tree.profile(), PathBuf::from(tree.closure("v2").as_str()));
    assert_eq!(tree.switch_log(), "v2 switch\n");
}

#[test]
fn a_switch_that_exits_non_zero_is_reported_with_its_exit_code() {
    let tree = Tree::new();
    tree.system("v2", "k1", "fail");
    let result = tree.activator(Duration::from_secs(10)).run(&Step::Switch { target: tree.closure("v2") });
    assert_eq!(result, StepResult::Switched { observed: tree.closure("v2"), exit_code: 4 });
}

#[test]
fn a_switch_that_hangs_is_killed_at_the_timeout() {
    let tree = Tree::new();
    tree.system("v2", "k1", "hang");
    let started = std::time::Instant::now();
    let result = tree.activator(Duration::from_millis(500)).run(&Step::Switch { target: tree.closure("v2") });
    match result {
        StepResult::SwitchFailed { exit_code: 124, stderr_tail } => {
            assert!(stderr_tail.contains("timed out"), "{stderr_tail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20), "the hung switch was not left running");
}

#[test]
fn a_switch_that_ends_on_another_closure_reports_that_closure() {
    let tree = Tree::new();
    tree.system("v2", "k1", "other");
    tree.system("other", "k1", "flip");
    let result = tree.activator(Duration::from_secs(10)).run(&Step::Switch { target: tree.closure("v2") });
    assert_eq!(result, StepResult::Switched { observed: tree.closure("other"), exit_code: 0 });
}

#[test]
fn a_switch_through_a_switch_command_waits_for_current_system_to_move() {
    // A prefix that returns at once and leaves the switch running (as `systemd-run` does).
    let tree = Tree::new();
    let mut activator = tree.activator(Duration::from_secs(10));
    let detach = tree.root.join("bin/detach");
    write_script(&detach, "(sleep 0.5; \"$@\") >/dev/null 2>&1 &\nexit 0");
    activator.switch_command = vec![detach.display().to_string()];
    let result = activator.run(&Step::Switch { target: tree.closure("v2") });
    assert_eq!(result, StepResult::Switched { observed: tree.closure("v2"), exit_code: 0 });
}

#[test]
fn a_switch_unit_that_ends_without_moving_current_system_is_a_failure_at_once() {
    // `systemd-run --unit=fleetwave-switch …` started a switch that died before it switched:
    // the agent sees the unit gone and does not wait for the whole activation timeout.
    let tree = Tree::new();
    let mut activator = tree.activator(Duration::from_secs(60));
    let start_only = tree.root.join("bin/start-only");
    write_script(&start_only, "exit 0");
    write_script(&tree.root.join("bin/systemctl"), r#"[ "$1 $2" = "is-active fleetwave-switch" ] && echo inactive"#);
    activator.switch_command = vec![start_only.display().to_string(), "--unit=fleetwave-switch".into()];
    let started = std::time::Instant::now();
    match activator.run(&Step::Switch { target: tree.closure("v2") }) {
        StepResult::SwitchFailed { exit_code: 1, stderr_tail } => {
            assert!(stderr_tail.contains("ended"), "{stderr_tail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30), "reported when the unit ended, not at the timeout");
}

#[test]
fn a_kernel_change_is_staged_for_the_next_boot_not_switched() {
    let tree = Tree::new();
    tree.system("v2", "k2", "flip");
    let activator = tree.activator(Duration::from_secs(10));
    assert_eq!(activator.needs_boot(&tree.closure("v1")), None);
    let result = activator.run(&Step::Switch { target: tree.closure("v2") });
    assert_eq!(result, StepResult::Staged { component: "kernel".into() });
    assert_eq!(tree.switch_log(), "v2 boot\n", "switch-to-configuration boot, not switch");
    assert_eq!(activator.current(), Some(tree.closure("v1")), "still running v1");
    assert_eq!(tree.profile(), PathBuf::from(tree.closure("v2").as_str()), "the next boot is v2");
}

#[test]
fn differing_switch_inhibitors_stage_for_the_next_boot_too() {
    let tree = Tree::new();
    std::fs::write(tree.root.join("store/v1/switch-inhibitors"), "dbus=1\n").unwrap();
    std::fs::write(tree.root.join("store/v2/switch-inhibitors"), "dbus=2\n").unwrap();
    let activator = tree.activator(Duration::from_secs(10));
    assert_eq!(activator.needs_boot(&tree.closure("v2")), Some("switch-inhibitors".into()));
    std::fs::write(tree.root.join("store/v2/switch-inhibitors"), "dbus=1\n").unwrap();
    assert_eq!(activator.needs_boot(&tree.closure("v2")), None);
}

#[test]
fn a_rollback_sets_the_profile_back_and_runs_the_previous_closures_switch() {
    let tree = Tree::new();
    let activator = tree.activator(Duration::from_secs(10));
    activator.run(&Step::Switch { target: tree.closure("v2") });
    let result = activator.run(&Step::Rollback { to: tree.closure("v1") });
    assert_eq!(
        result,
        StepResult::RolledBack { observed: tree.closure("v1"), exit_code: 0, stderr_tail: String::new() }
    );
    assert_eq!(tree.profile(), PathBuf::from(tree.closure("v1").as_str()));
    assert_eq!(tree.switch_log(), "v2 switch\nv1 switch\n", "the previous closure's own switch ran");
}

#[test]
fn a_failed_fetch_is_classified_by_what_nix_said() {
    let tree = Tree::new();
    write_script(
        &tree.root.join("bin/nix-store"),
        "echo \"error: cannot add path '$2' because it lacks a signature by a trusted key\" >&2\nexit 1",
    );
    let result = tree.activator(Duration::from_secs(10)).run(&Step::Realise { target: tree.closure("v2") });
    match result {
        StepResult::FetchFailed { class: FetchFailure::Signature, exit_code: 1, stderr_tail } => {
            assert!(stderr_tail.contains("lacks a signature"))
        }
        other => panic!("{other:?}"),
    }
    write_script(&tree.root.join("bin/nix-store"), "echo \"$2\"");
    assert_eq!(
        tree.activator(Duration::from_secs(10)).run(&Step::Realise { target: tree.closure("v2") }),
        StepResult::Realised
    );

    let cases = [
        ("error: unable to download 'https://cache/x.narinfo': Couldn't resolve host name (6)", FetchFailure::Network),
        ("error: path '/nix/store/abc-x' does not exist and cannot be created", FetchFailure::Missing),
        ("error: don't know how to build these paths", FetchFailure::Missing),
        ("error: cannot add path because it lacks a signature by a trusted key", FetchFailure::Signature),
        ("error: out of disk space", FetchFailure::Other),
    ];
    for (stderr, class) in cases {
        assert_eq!(classify_fetch(stderr), class, "{stderr}");
    }
}
