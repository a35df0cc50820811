//! Test support with the real Nix store (Debian's `nix-bin`, as root with no daemon): fake
//! NixOS systems built by `nix-build` whose `bin/switch-to-configuration` flips a test root's
//! `/run/current-system`, and `file://` binary caches, signed or not. Used by the agent's
//! tests and the end-to-end tests of the control plane with real agents.

use std::path::{Path, PathBuf};
use std::process::Command;

use shared::Closure;

/// What Nix needs to build and copy as root without a daemon or a sandbox.
pub const NIX_CONFIG: &str = "build-users-group =\nsandbox = false\nexperimental-features = nix-command";

/// A Nix command with [`NIX_CONFIG`].
pub fn nix(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("NIX_CONFIG", NIX_CONFIG);
    command
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output().map_err(|e| {
        anyhow::anyhow!("cannot run {command:?} (is nix-bin installed? scripts/setup installs it): {e}")
    })?;
    anyhow::ensure!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What a fake system's `switch-to-configuration switch` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Points the root's current-system at itself and exits 0.
    Switches,
    /// Exits 4 without switching (a unit failed to start).
    Fails,
    /// Switches, and carries a file `unhealthy` (for a probe to find).
    Unhealthy,
}

/// One fake NixOS system to build: `name` for the host whose root is `root` (the root is part
/// of the derivation, so every test root gets closures of its own); `tag` makes otherwise
/// equal systems distinct.
#[derive(Debug, Clone)]
pub struct System<'a> {
    pub root: &'a Path,
    pub name: &'a str,
    pub tag: &'a str,
    pub behaviour: Behaviour,
}

impl System<'_> {
    fn expression(&self) -> String {
        let (root, name) = (self.root.display().to_string(), self.name);
        let flip = format!("ln -sfn \"$SELF\" {root}/run/current-system");
        let action = match self.behaviour {
            Behaviour::Switches | Behaviour::Unhealthy => flip,
            Behaviour::Fails => "echo 'unit nginx.service failed to start' >&2; exit 4".to_owned(),
        };
        let script = format!(
            "#!/bin/sh\nSELF=@out@\necho \"{name} $1\" >> {root}/switch.log\n[ \"$1\" = boot ] && exit 0\n{action}\n"
        );
        let marker = if self.behaviour == Behaviour::Unhealthy { " && touch $out/unhealthy" } else { "" };
        format!(
            r#"(builtins.derivation {{
  name = "nixos-system-{name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/bin:/usr/bin";
  tag = {tag:?};
  script = {script:?};
  args = [ "-c" "mkdir -p $out/bin && printf '%s' \"$script\" | sed \"s|@out@|$out|\" > $out/bin/switch-to-configuration && chmod +x $out/bin/switch-to-configuration{marker}" ];
}})"#,
            tag = self.tag
        )
    }
}

/// Builds `systems` with one `nix-build` (one evaluation); returns their store paths in order.
pub fn build_systems(systems: &[System]) -> anyhow::Result<Vec<Closure>> {
    let list: Vec<String> = systems.iter().map(System::expression).collect();
    let expression = format!("[ {} ]", list.join(" "));
    let out = run(nix("nix-build").args(["--no-out-link", "--option", "sandbox", "false", "-E", &expression]))?;
    let paths: Vec<Closure> = out.lines().map(Closure::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(
        paths.len() == systems.len(),
        "nix-build printed {} paths for {} systems",
        paths.len(),
        systems.len()
    );
    Ok(paths)
}

/// Builds one fake system (see [`System`]).
pub fn build_system(root: &Path, name: &str, tag: &str, behaviour: Behaviour) -> anyhow::Result<Closure> {
    let mut built = build_systems(&[System { root, name, tag, behaviour }])?;
    built.pop().ok_or_else(|| anyhow::anyhow!("nix-build printed no path"))
}

/// A signing key pair for a binary cache: (secret key file, public key as `trusted-public-keys`
/// wants it).
pub fn cache_key(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, String)> {
    let secret = run(nix("nix").args(["key", "generate-secret", "--key-name", name]))?;
    let file = dir.join(format!("{name}.secret"));
    std::fs::write(&file, &secret)?;
    let public = run(nix("nix").args(["key", "convert-secret-to-public"]).stdin(std::fs::File::open(&file)?))?;
    Ok((file, public))
}

/// Copies `path` into the `file://` cache at `cache`, signed with `key` when given, and
/// deletes it from the local store, so that realising it has to fetch it.
pub fn publish(cache: &Path, path: &Closure, key: Option<&Path>) -> anyhow::Result<()> {
    let store = format!("file://{}", cache.display());
    run(nix("nix").args(["copy", "--to", &store, path.as_str()]))?;
    if let Some(key) = key {
        run(nix("nix").args(["store", "sign", "--store", &store, "-k"]).arg(key).arg(path.as_str()))?;
    }
    run(nix("nix-store").args(["--delete", path.as_str()]))?;
    Ok(())
}

/// The generations of a profile: (number, whether current).
pub fn generations(profile: &Path) -> anyhow::Result<Vec<(u32, bool)>> {
    let listing = run(nix("nix-env").arg("-p").arg(profile).arg("--list-generations"))?;
    Ok(listing
        .lines()
        .filter_map(|l| {
            let number = l.split_whitespace().next()?.parse().ok()?;
            Some((number, l.contains("(current)")))
        })
        .collect())
}

/// Where a profile points now: the store path of its current generation.
pub fn profile_target(profile: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(profile).ok()
}
