//! The Nix activator (SPEC §14 steps 2, 3 and 6): realise the target, set the system profile,
//! switch (or stage for the next boot), roll back to a recorded closure, reboot. Each step is
//! blocking and bounded by the activation timeout; the driver runs it on a thread of its own
//! and hands the result to the state machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::Closure;

use crate::command::{self, Finished};
use crate::config::{Config, Paths};
use crate::machine::{FetchFailure, Step, StepResult};

/// What the activator needs of the configuration.
#[derive(Debug, Clone)]
pub struct Activator {
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
    pub substituters: Vec<String>,
    pub trusted_public_keys: Vec<String>,
    pub switch_command: Vec<String>,
    pub timeout: Duration,
    /// What reboots the host (`systemctl reboot`).
    pub reboot_command: Vec<String>,
    /// The Nix programs and systemctl (from `PATH`; tests put stand-ins here).
    pub nix_store: String,
    pub nix_env: String,
    pub systemctl: String,
}

/// Parts of a system closure that cannot change without a reboot, in the order checked.
const BOOT_COMPONENTS: [&str; 3] = ["kernel", "initrd", "kernel-modules"];

impl Activator {
    pub fn new(config: &Config, paths: &Paths) -> Activator {
        Activator {
            profile: paths.profile.clone(),
            current_system: paths.current_system.clone(),
            booted_system: paths.booted_system.clone(),
            substituters: config.substituters.clone(),
            trusted_public_keys: config.trusted_public_keys.clone(),
            switch_command: config.switch_command.clone(),
            timeout: Duration::from_secs(config.activation_timeout_seconds),
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            nix_store: "nix-store".into(),
            nix_env: "nix-env".into(),
            systemctl: "systemctl".into(),
        }
    }

    pub fn run(&self, step: &Step) -> StepResult {
        match step {
            Step::Realise { target } => self.realise(target),
            Step::Switch { target } => self.switch(target),
            Step::Rollback { to } => self.rollback(to),
            Step::Reboot => {
                let done = command::run(&self.reboot_command, self.timeout, &[], None);
                if done.success() {
                    // The host goes down; the agent starts again after the boot.
                    StepResult::RebootFailed { message: "the reboot was asked for, but the host is still up".into() }
                } else {
                    StepResult::RebootFailed { message: format!("exit {}: {}", done.code(), done.stderr_tail.trim()) }
                }
            }
        }
    }

    /// What `/run/current-system` points at (`None` when it cannot be read).
    pub fn current(&self) -> Option<Closure> {
        read_closure(&self.current_system)
    }

    /// What `/run/booted-system` points at (`None` when it cannot be read).
    pub fn booted(&self) -> Option<Closure> {
        read_closure(&self.booted_system)
    }

    fn realise(&self, target: &Closure) -> StepResult {
        let mut argv: Vec<String> = vec![self.nix_store.clone(), "--realise".into(), target.as_str().into()];
        if !self.substituters.is_empty() {
            argv.extend(["--option".into(), "substituters".into(), self.substituters.join(" ")]);
        }
        if !self.trusted_public_keys.is_empty() {
            argv.extend(["--option".into(), "trusted-public-keys".into(), self.trusted_public_keys.join(" ")]);
        }
        let done = command::run(&argv, self.timeout, &[], None);
        if !done.success() {
            let class = if done.timed_out { FetchFailure::Network } else { classify_fetch(&done.stderr_tail) };
            return StepResult::FetchFailed { class, exit_code: done.code(), stderr_tail: done.stderr_tail };
        }
        let realised: Vec<&str> = done.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if realised != [target.as_str()] || !Path::new(target.as_str()).exists() {
            return StepResult::FetchFailed {
                class: FetchFailure::Other,
                exit_code: 0,
                stderr_tail: format!("nix-store --realise printed {realised:?}, not the target {target}"),
            };
        }
        StepResult::Realised
    }

    /// Points the system profile at `closure` (a new generation).
    fn set_profile(&self, closure: &Closure) -> Result<(), Finished> {
        let argv: Vec<String> = vec![
            self.nix_env.clone(),
            "-p".into(),
            self.profile.display().to_string(),
            "--set".into(),
            closure.as_str().into(),
        ];
        let done = command::run(&argv, self.timeout, &[], None);
        if done.success() { Ok(()) } else { Err(done) }
    }

    /// The part of `target` that differs from the booted system and needs a reboot, if any.
    pub fn needs_boot(&self, target: &Closure) -> Option<String> {
        let booted = &self.booted_system;
        let target = Path::new(target.as_str());
        for component in BOOT_COMPONENTS {
            let ends = |p: PathBuf| std::fs::canonicalize(p).ok();
            if ends(booted.join(component)) != ends(target.join(component)) {
                return Some(component.to_owned());
            }
        }
        let (ours, theirs) = (target.join("switch-inhibitors"), booted.join("switch-inhibitors"));
        if ours.exists() && theirs.exists() && std::fs::read(&ours).ok() != std::fs::read(&theirs).ok() {
            return Some("switch-inhibitors".to_owned());
        }
        None
    }

    /// Runs `closure/bin/switch-to-configuration action` through the switch command.
    fn switch_to_configuration(&self, closure: &Closure, action: &str, timeout: Duration) -> Finished {
        let mut argv = self.switch_command.clone();
        argv.push(format!("{closure}/bin/switch-to-configuration"));
        argv.push(action.to_owned());
        command::run(&argv, timeout, &[], None)
    }

    fn switch(&self, target: &Closure) -> StepResult {
        let started = Instant::now();
        let before = self.current();
        if let Err(done) = self.set_profile(target) {
            return StepResult::SwitchFailed {
                exit_code: done.code(),
                stderr_tail: format!("nix-env --set failed: {}", done.stderr_tail),
            };
        }
        if let Some(component) = self.needs_boot(target) {
            let done = self.switch_to_configuration(target, "boot", self.timeout);
            if !done.success() {
                return StepResult::SwitchFailed { exit_code: done.code(), stderr_tail: done.stderr_tail };
            }
            return StepResult::Staged { component };
        }
        let done = self.switch_to_configuration(target, "switch", self.timeout);
        if done.timed_out {
            return StepResult::SwitchFailed {
                exit_code: 124,
                stderr_tail: format!(
                    "switch-to-configuration timed out after {} s\n{}",
                    self.timeout.as_secs(),
                    done.stderr_tail
                ),
            };
        }
        match self.settle(target, before.as_ref(), started) {
            Settled { observed: Some(observed), ended: true } => StepResult::SwitchFailed {
                exit_code: 1,
                stderr_tail: format!(
                    "the switch unit ended with {} still on {observed}\n{}",
                    self.current_system.display(),
                    done.stderr_tail
                ),
            },
            Settled { observed: Some(observed), ended: false } => {
                StepResult::Switched { observed, exit_code: done.code() }
            }
            Settled { observed: None, .. } => StepResult::SwitchFailed {
                exit_code: done.code(),
                stderr_tail: format!(
                    "{} cannot be read after the switch\n{}",
                    self.current_system.display(),
                    done.stderr_tail
                ),
            },
        }
    }

    /// What runs once the switch is over: at once when the switch ran in the foreground; through
    /// a switch command (a transient unit that returns as soon as it started) after
    /// `/run/current-system` moved, the unit ended (`ended`: without moving it), or at the
    /// timeout.
    fn settle(&self, target: &Closure, before: Option<&Closure>, started: Instant) -> Settled {
        if self.switch_command.is_empty() {
            return Settled { observed: self.current(), ended: false };
        }
        let unit = switch_unit(&self.switch_command);
        let deadline = started + self.timeout;
        loop {
            let now = self.current();
            let moved = now.as_ref() == Some(target) || (now.is_some() && now.as_ref() != before);
            if moved || Instant::now() >= deadline {
                return Settled { observed: now, ended: false };
            }
            if let Some(unit) = &unit
                && !self.unit_running(unit)
            {
                // Look once more: the unit may have moved the link just before it ended.
                let observed = self.current();
                let ended = observed.as_ref() != Some(target);
                return Settled { observed, ended };
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether the transient switch unit still runs (`systemctl is-active`). When systemctl
    /// cannot tell, the agent keeps waiting for `/run/current-system` or the timeout.
    fn unit_running(&self, unit: &str) -> bool {
        let argv = vec![self.systemctl.clone(), "is-active".to_owned(), unit.to_owned()];
        let done = command::run(&argv, Duration::from_secs(10), &[], None);
        !matches!(done.stdout.trim(), "inactive" | "failed")
    }

    fn rollback(&self, to: &Closure) -> StepResult {
        let started = Instant::now();
        let before = self.current();
        if let Err(done) = self.set_profile(to) {
            return StepResult::RolledBack {
                observed: before.unwrap_or_else(|| to.clone()),
                exit_code: done.code(),
                stderr_tail: format!("nix-env --set failed: {}", done.stderr_tail),
            };
        }
        let done = self.switch_to_configuration(to, "switch", self.timeout);
        let observed = self.settle(to, before.as_ref(), started).observed;
        StepResult::RolledBack {
            exit_code: if observed.is_none() && done.success() { 1 } else { done.code() },
            observed: observed.or(before).unwrap_or_else(|| to.clone()),
            stderr_tail: done.stderr_tail,
        }
    }
}

/// How a switch settled.
struct Settled {
    /// What `/run/current-system` points at.
    observed: Option<Closure>,
    /// The switch unit ended without moving it to the target.
    ended: bool,
}

/// The transient unit a switch command names (`--unit=NAME` or `--unit NAME`).
fn switch_unit(command: &[String]) -> Option<String> {
    command.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix("--unit=") {
        Some(unit) => Some(unit.to_owned()),
        None if arg == "--unit" => command.get(i + 1).cloned(),
        None => None,
    })
}

/// Sorts a failed `nix-store --realise` by its message (SPEC §14 step 2).
pub fn classify_fetch(stderr: &str) -> FetchFailure {
    let text = stderr.to_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if any(&["lacks a signature", "no signature", "signature by a trusted key", "not signed"]) {
        FetchFailure::Signature
    } else if any(&[
        "unable to download",
        "couldn't resolve",
        "could not resolve",
        "connection refused",
        "timed out",
        "timeout",
        "network is unreachable",
        "http error",
        "unable to connect",
    ]) {
        FetchFailure::Network
    } else if any(&[
        "don't know how to build",
        "does not exist",
        "is not valid",
        "cannot build missing",
        "no such file",
    ]) {
        FetchFailure::Missing
    } else {
        FetchFailure::Other
    }
}

/// The closure a system link (`/run/current-system`, `/run/booted-system`) points at.
pub fn read_closure(link: &Path) -> Option<Closure> {
    let target = std::fs::read_link(link).ok()?;
    let target = if target.is_absolute() { target } else { link.parent()?.join(target) };
    Closure::parse(target.to_str()?).ok()
}
