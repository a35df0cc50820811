//! `fleetwave keygen`, `sign` and `release` as CI runs them: their output verifies with the
//! engine and is byte-stable for the same input.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use engine::testkit::{FleetBuilder, t0};
use engine::verify::{Freshness, TrustRoots, verify_artifact, verify_fleet, verify_manifest};
use shared::RolloutId;
use shared::manifest::SignedArtifact;

fn fleetwave(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetwave")).args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn artifact(path: &Path) -> SignedArtifact {
    let bytes = std::fs::read(path).unwrap();
    let sig = std::fs::read_to_string(format!("{}.sig", path.display())).unwrap();
    SignedArtifact { artifact: B64.encode(bytes), signature: sig.trim().to_owned() }
}

fn trust_for(pubkey: &str) -> TrustRoots {
    TrustRoots::from_config(
        &serde_json::from_value(serde_json::json!({
            "schemaVersion": 1, "ciReleaseKey": { "current": pubkey.trim() }, "freshnessWindowMinutes": 1440
        }))
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ci");
    let printed = ok(fleetwave(&["keygen", "--out", prefix.to_str().unwrap()]));
    let public = std::fs::read_to_string(dir.path().join("ci.pub")).unwrap();
    assert_eq!(printed.trim(), public.trim());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("ci.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let again = fleetwave(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn sign_produces_a_signature_the_engine_verifies_whatever_the_formatting() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ci");
    let public = ok(fleetwave(&["keygen", "--out", prefix.to_str().unwrap()]));
    let doc = dir.path().join("doc.json");
    std::fs::write(
        &doc,
        format!("{{\n  \"schemaVersion\": 1,\n  \"meta\": {{ \"signedAt\": \"{}\" }} }}\n", t0().to_rfc3339()),
    )
    .unwrap();
    ok(fleetwave(&["sign", "--key", dir.path().join("ci.key").to_str().unwrap(), doc.to_str().unwrap()]));
    let trust = trust_for(&public);
    assert!(verify_artifact(Some(&trust), &artifact(&doc), t0(), Freshness::Check).is_ok());
}

#[test]
fn release_outputs_verify_with_the_engine_and_are_byte_stable() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ci");
    let public = ok(fleetwave(&["keygen", "--out", prefix.to_str().unwrap()]));
    let key = dir.path().join("ci.key");
    let mut document = FleetBuilder::new()
        .policy("p", &[(5, false), (5, true)], "halt", 30)
        .channel("stable", "p")
        .channel("canary", "p")
        .host("web2", "stable", &["web"])
        .host("web1", "stable", &["web"])
        .host("c1", "canary", &[])
        .host_with_closure("spare", "stable", &[], None)
        .waves("stable", &[&["web1"], &["web2"]])
        .commit("abc123")
        .document();
    document["meta"].as_object_mut().unwrap().remove("signedAt");
    let fleet_path = dir.path().join("fleet.json");
    std::fs::write(&fleet_path, serde_json::to_string_pretty(&document).unwrap()).unwrap();

    let release = |out: &str| {
        let out = dir.path().join(out);
        ok(fleetwave(&[
            "release",
            "--fleet",
            fleet_path.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--signed-at",
            &t0().to_rfc3339(),
        ]));
        out
    };
    let (a, b) = (release("a"), release("b"));
    for file in [
        "fleet.json",
        "fleet.json.sig",
        "rollouts/stable@abc123.json",
        "rollouts/stable@abc123.json.sig",
        "rollouts/canary@abc123.json",
    ] {
        assert_eq!(std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap(), "{file} is byte-stable");
    }

    let trust = trust_for(&public);
    let fleet = verify_fleet(Some(&trust), &artifact(&a.join("fleet.json")), t0(), Freshness::Check).unwrap();
    let id = RolloutId::parse("stable@abc123").unwrap();
    let stable = verify_manifest(
        Some(&trust),
        &artifact(&a.join("rollouts/stable@abc123.json")),
        &fleet,
        Some(&id),
        t0(),
        Freshness::Check,
    )
    .unwrap();
    let hosts: Vec<(&str, u32)> = stable.manifest.host_set.iter().map(|e| (e.hostname.as_str(), e.wave)).collect();
    assert_eq!(hosts, [("web1", 0), ("web2", 1)], "sorted hostSet; the host without a closure is left out");
    assert_eq!(stable.manifest.fleet_hash, fleet.hash);
}

#[test]
fn release_refuses_an_inconsistent_fleet_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ci");
    ok(fleetwave(&["keygen", "--out", prefix.to_str().unwrap()]));
    let document = FleetBuilder::new()
        .policy("p", &[(0, false)], "halt", 30)
        .channel("stable", "p")
        .host("a", "nightly", &[])
        .document();
    let fleet_path = dir.path().join("fleet.json");
    std::fs::write(&fleet_path, document.to_string()).unwrap();
    let out = fleetwave(&[
        "release",
        "--fleet",
        fleet_path.to_str().unwrap(),
        "--key",
        dir.path().join("ci.key").to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hosts.a.channel: unknown channel `nightly`"));
    assert!(!dir.path().join("out").exists(), "nothing is written");
}
