//! The agent's configuration: defaults, every bad value refused naming its field, paths under
//! `--root`, and the `keygen` / `check` commands of the real binary.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use agent::config::{Config, DEFAULT_SWITCH_COMMAND, ProbeKind, Reboot};

const MINIMAL: &str = r#"
controlPlane = "https://fleet.example.com/"
hostname = "web-01"
keyFile = "/etc/fleetwave/host.key"
"#;

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.control_plane, "https://fleet.example.com");
    assert_eq!(c.hostname.as_str(), "web-01");
    assert_eq!(c.state_dir, Path::new("/var/lib/fleetwave-agent"));
    assert_eq!(c.profile, Path::new("/nix/var/nix/profiles/system"));
    assert_eq!(c.switch_command, DEFAULT_SWITCH_COMMAND);
    assert_eq!(c.activation_timeout_seconds, 300);
    assert_eq!(c.reboot, Reboot::Never);
    assert!(c.probes.is_empty() && c.substituters.is_empty() && c.trusted_public_keys.is_empty());
}

#[test]
fn probes_and_every_setting_are_read() {
    let text = format!(
        "{MINIMAL}{}",
        r#"
substituters = ["file:///var/cache/fleet", "https://cache.example.com"]
trustedPublicKeys = ["fleet-1:AAAA"]
switchCommand = []
activationTimeoutSeconds = 120
reboot = "allowed"
[[probes]]
name = "units"
kind = "systemd-failed-units"
intervalSeconds = 10
timeoutSeconds = 5
mode = "enforce"
[[probes]]
name = "web"
kind = "http"
target = "http://127.0.0.1:8080/health"
intervalSeconds = 5
timeoutSeconds = 2
mode = "observe"
failAfter = 5
"#
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.probes.len(), 2);
    assert_eq!((c.probes[0].kind, c.probes[0].fail_after), (ProbeKind::SystemdFailedUnits, 3));
    assert_eq!((c.probes[1].kind, c.probes[1].fail_after), (ProbeKind::Http, 5));
    assert!(c.switch_command.is_empty());
    assert_eq!((c.activation_timeout_seconds, c.reboot), (120, Reboot::Allowed));
}

#[test]
fn each_bad_value_is_refused_naming_its_field() {
    let probe = |fields: &str| {
        format!(
            "{MINIMAL}[[probes]]\nname = \"p\"\nkind = \"http\"\ntarget = \"http://x/\"\nintervalSeconds = 5\ntimeoutSeconds = 2\nmode = \"enforce\"\n{fields}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (MINIMAL.replace("https://fleet.example.com/", "ftp://x"), "controlPlane"),
        (MINIMAL.replace("web-01", "Web 01"), "hostname"),
        (MINIMAL.replace("/etc/fleetwave/host.key", "host.key"), "keyFile"),
        (format!("{MINIMAL}stateDir = \"var/lib\"\n"), "stateDir"),
        (format!("{MINIMAL}profile = \"system\"\n"), "profile"),
        (format!("{MINIMAL}substituters = [\"a b\"]\n"), "substituters[0]"),
        (format!("{MINIMAL}trustedPublicKeys = [\"nokey\"]\n"), "trustedPublicKeys[0]"),
        (format!("{MINIMAL}switchCommand = [\"systemd-run\", \"\"]\n"), "switchCommand[1]"),
        (format!("{MINIMAL}activationTimeoutSeconds = 0\n"), "activationTimeoutSeconds"),
        (format!("{MINIMAL}reboot = \"sometimes\"\n"), "reboot"),
        (format!("{MINIMAL}colour = \"red\"\n"), "colour"),
        (MINIMAL.replace("hostname = \"web-01\"\n", ""), "hostname"),
        (probe("timeoutSeconds = 9\n").replacen("timeoutSeconds = 2\n", "", 1), "probes[0].timeoutSeconds"),
        (probe("failAfter = 0\n"), "probes[0].failAfter"),
        (probe("colour = 1\n"), "probes[0].colour"),
        (probe("").replace("mode = \"enforce\"", "mode = \"maybe\""), "probes[0].mode"),
        (probe("").replace("http://x/", "x:80"), "probes[0].target"),
        (probe("").replace("kind = \"http\"", "kind = \"tcp\"").replace("http://x/", "x"), "probes[0].target"),
        (probe("").replace("target = \"http://x/\"\n", ""), "probes[0].target"),
        (
            probe("")
                .replace("kind = \"http\"\ntarget = \"http://x/\"", "kind = \"systemd-failed-units\"\ntarget = \"x\""),
            "probes[0].target",
        ),
        (probe("").replace("intervalSeconds = 5", "intervalSeconds = 0"), "probes[0].intervalSeconds"),
        (format!("{}{}", probe(""), probe("").replace(MINIMAL, "")), "probes[1].name"),
    ];
    for (text, field) in cases {
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.field, field, "{err}\n---\n{text}");
        assert!(!err.problem.is_empty());
    }
}

#[test]
fn a_root_moves_every_path_but_the_store() {
    let c = Config::parse(MINIMAL).unwrap();
    let paths = c.paths(Some(Path::new("/tmp/host-a")));
    assert_eq!(paths.key_file, Path::new("/tmp/host-a/etc/fleetwave/host.key"));
    assert_eq!(paths.state_dir, Path::new("/tmp/host-a/var/lib/fleetwave-agent"));
    assert_eq!(paths.profile, Path::new("/tmp/host-a/nix/var/nix/profiles/system"));
    assert_eq!(paths.current_system, Path::new("/tmp/host-a/run/current-system"));
    assert_eq!(paths.booted_system, Path::new("/tmp/host-a/run/booted-system"));
    assert_eq!(paths.boot_id, Path::new("/tmp/host-a/proc/sys/kernel/random/boot_id"));
    assert_eq!(c.paths(None).current_system, Path::new("/run/current-system"));
}

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetwave-agent"))
}

#[test]
fn keygen_writes_a_private_key_and_check_reports_what_the_agent_would_do() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/fleetwave")).unwrap();
    let key = root.path().join("etc/fleetwave/host.key");
    let out = agent().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 44, "base64 of 32 bytes: {public}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = agent().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(!again.status.success(), "an existing key is not replaced without --force");

    let config = root.path().join("agent.toml");
    std::fs::write(&config, MINIMAL).unwrap();
    let out = agent().args(["check", "--config"]).arg(&config).arg("--root").arg(root.path()).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("host web-01 follows https://fleet.example.com"), "{report}");
    assert!(report.contains(&public), "the report names the public key: {report}");
    assert!(report.contains("systemd-run --unit=fleetwave-switch"), "{report}");

    // Without the root the key is not where the config says: an error naming keyFile.
    let out = agent().args(["check", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keyFile: cannot read /etc/fleetwave/host.key"));
}
