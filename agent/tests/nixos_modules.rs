//! The flake and its NixOS modules. Without nixpkgs on this machine they cannot be evaluated;
//! they are parsed by the real Nix (`nix-instantiate --parse`), and the agent module is checked
//! to write every key `agent.toml` has.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn the_flake_and_the_modules_parse() {
    for file in ["flake.nix", "nix/agent.nix", "nix/control-plane.nix"] {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(repo().join(file))
            .output()
            .expect("nix-instantiate (Debian's nix-bin; scripts/setup installs it)");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_agent_module_writes_every_key_of_agent_toml() {
    let module = std::fs::read_to_string(repo().join("nix/agent.nix")).unwrap();
    let keys = [
        "controlPlane",
        "hostname",
        "keyFile",
        "stateDir",
        "profile",
        "substituters",
        "trustedPublicKeys",
        "switchCommand",
        "activationTimeoutSeconds",
        "reboot",
        "probes",
    ];
    for key in keys {
        assert!(module.contains(&format!("    {key} = ")), "agent.nix does not write `{key}`");
    }
    for key in ["name", "kind", "target", "intervalSeconds", "timeoutSeconds", "mode", "failAfter"] {
        assert!(module.contains(&format!("      {key} = lib.mkOption")), "agent.nix has no probe option `{key}`");
    }
    // Every key the module writes is one the agent accepts (unknown keys are start-up errors).
    let sample = r#"
controlPlane = "https://fleet.example.com"
hostname = "web-01"
keyFile = "/var/lib/fleetwave-agent/host.key"
stateDir = "/var/lib/fleetwave-agent"
profile = "/nix/var/nix/profiles/system"
substituters = []
trustedPublicKeys = []
switchCommand = ["/run/current-system/sw/bin/systemd-run", "--unit=fleetwave-switch", "--collect", "--service-type=exec", "--quiet"]
activationTimeoutSeconds = 300
reboot = "never"

[[probes]]
name = "web"
kind = "http"
target = "http://127.0.0.1/health"
intervalSeconds = 10
timeoutSeconds = 5
mode = "enforce"
failAfter = 3
"#;
    agent::config::Config::parse(sample).unwrap();
}
