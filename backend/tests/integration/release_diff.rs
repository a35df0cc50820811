//! `fleetwave release --diff-from` (SPEC §18) with real closures in the real Nix store
//! (Debian's `nix-bin`): the change summaries go into the signed manifests, verify, and come
//! back from `GET /rollouts/{id}/changes`; without Nix the release says "no diff available"
//! and carries none.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use engine::testkit::{FleetBuilder, ci_key};
use serde_json::{Value, json};

use crate::common::spawn_app;

/// Two fake systems whose closures differ as a real upgrade does: hello 2.10 → 2.12 (about
/// the same size), openssl (60 KiB) removed, curl (100 KiB) added, bash the same; `tag` keeps
/// each test's store paths its own.
fn build_systems(tag: &str) -> (String, String) {
    let expression = format!(
        r#"let
  pkg = name: kib: builtins.derivation {{ inherit name; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/bin:/usr/bin"; tag = "{tag}"; args = [ "-c" "head -c ${{toString (kib * 1024)}} /dev/zero > $out" ]; }};
  sys = v: deps: builtins.derivation {{ name = "nixos-system-web-${{v}}"; system = builtins.currentSystem; builder = "/bin/sh"; tag = "{tag}"; inherit deps; args = [ "-c" "echo $deps > $out" ]; }};
in [ (sys "1" [ (pkg "hello-2.10" 20) (pkg "openssl-3.0.1" 60) (pkg "bash-5.1" 30) ]) (sys "2" [ (pkg "hello-2.12" 21) (pkg "curl-8.0.1" 100) (pkg "bash-5.1" 30) ]) ]"#
    );
    let out = agent::testkit::nix("nix-build")
        .args(["--no-out-link", "--option", "sandbox", "false", "--option", "substituters", "", "-E", &expression])
        .output()
        .expect("nix-build runs (scripts/setup installs nix-bin)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let paths: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    (paths[0].clone(), paths[1].clone())
}

fn fleet(web: &str, new_host_closure: Option<&str>) -> FleetBuilder {
    let mut b = FleetBuilder::new()
        .policy("p", &[(0, true)], "halt", 30)
        .channel("stable", "p")
        .host_with_closure("a", "stable", &[], Some(web))
        .host_with_closure("b", "stable", &[], Some(web));
    if let Some(c) = new_host_closure {
        b = b.host_with_closure("c", "stable", &[], Some(c));
    }
    b
}

/// Runs `fleetwave release` for `fleet` at `commit` into `out`.
fn release(dir: &Path, fleet: &FleetBuilder, commit: &str, out: &Path, extra: &[&str]) -> String {
    let key = dir.join("ci.key");
    std::fs::write(&key, engine::sign::encode_signing_key(&ci_key())).unwrap();
    let mut doc = fleet.document();
    doc["meta"]["ciCommit"] = json!(commit);
    doc["meta"]["signedAt"] = Value::Null; // signed now
    let doc_path = dir.join(format!("fleet-{commit}.json"));
    std::fs::write(&doc_path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["release", "--fleet"])
        .arg(&doc_path)
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn upload_body(out: &Path) -> Value {
    let artifact = |p: &Path| {
        let sig = std::fs::read_to_string(format!("{}.sig", p.display())).unwrap();
        json!({ "artifact": B64.encode(std::fs::read(p).unwrap()), "signature": sig.trim() })
    };
    let rollouts: Vec<Value> = std::fs::read_dir(out.join("rollouts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| artifact(&p))
        .collect();
    json!({ "fleet": artifact(&out.join("fleet.json")), "rollouts": rollouts })
}

#[tokio::test]
async fn change_summaries_from_nix_are_signed_verified_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().display().to_string();
    let (v1, v2) = build_systems(&tag);
    let old = dir.path().join("old");
    release(dir.path(), &fleet(&v1, None), "a1", &old, &[]);
    let new = dir.path().join("new");
    // c is new in this release: nothing to compare its closure with.
    let said = release(
        dir.path(),
        &fleet(&v2, Some("/nix/store/no-such-closure")),
        "b2",
        &new,
        &["--diff-from", old.to_str().unwrap()],
    );
    assert!(said.contains("4 package changes"), "{said}");

    let manifest: Value = serde_json::from_slice(&std::fs::read(new.join("rollouts/stable@b2.json")).unwrap()).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let summary = &manifest["closures"][v2.as_str()];
    assert_eq!(summary["from"], v1.as_str());
    assert!(summary["sizeBytes"].as_u64().is_some_and(|s| s > 0), "{summary}");
    let changes: Vec<(String, Value, Value)> = summary["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["package"].as_str().unwrap().to_owned(), c["from"].clone(), c["to"].clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("curl".into(), Value::Null, json!("8.0.1")),
            ("hello".into(), json!("2.10"), json!("2.12")),
            ("nixos-system-web".into(), json!("1"), json!("2")),
            ("openssl".into(), json!("3.0.1"), Value::Null),
        ],
        "added, changed and removed, bash unchanged and left out"
    );
    // Nix reports a size change of 8 KiB or more (as NAR sizes, a little over the files').
    let delta = |i: usize| summary["changes"][i]["sizeDeltaBytes"].as_i64();
    assert!(delta(0).is_some_and(|d| (100 * 1024..110 * 1024).contains(&d)), "curl added: {summary}");
    assert!(delta(3).is_some_and(|d| (-70 * 1024..=-60 * 1024).contains(&d)), "openssl removed: {summary}");
    assert_eq!(delta(1), None, "hello grew by 1 KiB: below what Nix reports");
    let (size, before) = (summary["sizeBytes"].as_i64().unwrap(), summary["fromSizeBytes"].as_i64().unwrap());
    assert!((35 * 1024..45 * 1024).contains(&(size - before)), "the closure grew by about 41 KiB: {summary}");

    // Through the control plane: the signature and the summaries verify, and come back.
    let app = spawn_app().await;
    let (status, answer) = app.post("/api/v1/manifests", upload_body(&new)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, changes) = app.get("/api/v1/rollouts/stable@b2/changes").await;
    assert_eq!(status, 200, "{changes}");
    let targets = changes["targets"].as_array().unwrap();
    let web = targets.iter().find(|t| t["closure"] == v2.as_str()).unwrap();
    assert_eq!(web["hosts"], 2);
    assert_eq!(web["changes"]["changes"][1]["package"], "hello");
    let fresh = targets.iter().find(|t| t["closure"] == "/nix/store/no-such-closure").unwrap();
    assert!(fresh.get("changes").is_none(), "no diff available for a closure without a summary: {fresh}");
    assert_eq!(app.get("/api/v1/rollouts/nope@b2/changes").await.0, 404);

    // A summary edited after signing does not verify.
    let mut tampered = upload_body(&new);
    let raw = crate::common::artifact_bytes(&tampered["rollouts"][0]);
    let edited = String::from_utf8(raw).unwrap().replace("\"2.12\"", "\"2.13\"");
    tampered["rollouts"][0]["artifact"] = json!(B64.encode(edited));
    let (status, answer) = app.post("/api/v1/manifests", tampered).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("bad-signature")), "{answer}");
}

#[tokio::test]
async fn without_nix_the_release_says_no_diff_is_available_and_carries_none() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    release(dir.path(), &fleet("/nix/store/web-1", None), "a1", &old, &[]);
    let new = dir.path().join("new");
    let said = release(
        dir.path(),
        &fleet("/nix/store/web-2", None),
        "b2",
        &new,
        &["--diff-from", old.to_str().unwrap(), "--nix", "/nonexistent/nix"],
    );
    assert!(said.contains("no diff available for /nix/store/web-2"), "{said}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(new.join("rollouts/stable@b2.json")).unwrap()).unwrap();
    assert_eq!(manifest["schemaVersion"], 1);
    assert!(manifest.get("closures").is_none());
}
