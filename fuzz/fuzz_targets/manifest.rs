//! Signed documents through the verifier: the input's bytes as an artifact under a garbage
//! signature (malformed, bad-signature paths), and, when they are JSON, the same document
//! signed by the trusted CI key, so verification goes on into canonicalisation, the schema and
//! the consistency rules of a fleet and of a manifest filed against a fixed fleet.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use engine::testkit::{FleetBuilder, ci_key, t0, trust};
use engine::verify::{Freshness, verify_fleet, verify_manifest};
use libfuzzer_sys::fuzz_target;
use shared::manifest::SignedArtifact;

fuzz_target!(|data: &[u8]| {
    let roots = trust();
    let raw = SignedArtifact { artifact: B64.encode(data), signature: B64.encode([7u8; 64]) };
    let _ = verify_fleet(Some(&roots), &raw, t0(), Freshness::Check);

    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(signed) = engine::sign::sign_value(&ci_key(), &value) else { return };
    let artifact = signed.artifact();
    for freshness in [Freshness::Check, Freshness::Skip] {
        let _ = verify_fleet(Some(&roots), &artifact, t0(), freshness);
    }
    let base = FleetBuilder::new()
        .policy("p", &[(5, false), (5, true)], "halt", 30)
        .channel("stable", "p")
        .host("a", "stable", &["web"])
        .host("b", "stable", &[])
        .waves("stable", &[&["a"], &["b"]])
        .verified();
    let _ = verify_manifest(Some(&roots), &artifact, &base, None, t0(), Freshness::Skip);
});
