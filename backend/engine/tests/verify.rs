//! Signed inputs (SPEC §2): canonical JSON against RFC 8785's vectors, every verification
//! outcome at its boundary, trust key slots, and the consistency rules.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use engine::crypto::{canonicalize, canonicalize_json};
use engine::sign::{public_key_b64, sign_value};
use engine::testkit::{FleetBuilder, at, ci_key, key, sign, t0, trust, trust_config};
use engine::verify::{Freshness, TrustRoots, VerifyError, verify_artifact, verify_fleet, verify_manifest};
use serde_json::{Value, json};
use shared::RolloutId;
use shared::manifest::SignedArtifact;

fn jcs(text: &str) -> String {
    let value: Value = serde_json::from_str(text).unwrap();
    String::from_utf8(canonicalize(&value).unwrap()).unwrap()
}

// ---- RFC 8785 ----

#[test]
fn rfc8785_appendix_b_number_serialisation() {
    // (IEEE 754 bits, expected JCS text). NaN and Infinity cannot occur in JSON text.
    let vectors = [
        (0x0000000000000000u64, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, expected) in vectors {
        let value = json!(f64::from_bits(bits));
        let out = String::from_utf8(canonicalize(&value).unwrap()).unwrap();
        assert_eq!(out, expected, "bits {bits:016x}");
    }
}

#[test]
fn rfc8785_section_3_2_2_sample() {
    let input = r#"{
        "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
        "literals": [null, true, false]
    }"#;
    let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
    assert_eq!(jcs(input), expected);
}

#[test]
fn rfc8785_section_3_2_3_sorts_properties_by_utf16_code_units() {
    let input = r#"{
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\ud83d\ude00": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis"
    }"#;
    let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
                    \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
                    \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
    assert_eq!(jcs(input), expected);
}

/// Any JSON value: the engine's canonical form is `serde_jcs`'s, byte for byte.
fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\u{0}-\\u{1f}\"\\\\/a-z\\u{7f}-\\u{ff}\\u{e000}-\\u{ffff}\\u{10000}-\\u{10ffff}]{0,8}"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn the_canonical_form_is_serde_jcs_byte_for_byte(value in json_value()) {
        proptest::prop_assert_eq!(canonicalize(&value).unwrap(), serde_jcs::to_vec(&value).unwrap());
    }

    /// Canonicalising the text (as the hash chain does with payloads) gives the bytes of
    /// canonicalising the value it parses to, however the text is laid out.
    #[test]
    fn canonicalising_json_text_equals_canonicalising_its_value(value in json_value()) {
        let expected = canonicalize(&value).unwrap();
        for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
            let mut out = Vec::new();
            canonicalize_json(&text, &mut out).unwrap();
            proptest::prop_assert_eq!(&out, &expected);
        }
    }
}

#[test]
fn canonicalising_json_text_keeps_the_last_of_repeated_names_and_decodes_escaped_ones() {
    let text = r#" { "b" : [1, 2.50, "x\u0041"], "a": 1, "a": {"z": null, "\u0079": true}, "\ud83d\ude00": 0 } "#;
    let mut out = Vec::new();
    canonicalize_json(text, &mut out).unwrap();
    assert_eq!(out, canonicalize(&serde_json::from_str(text).unwrap()).unwrap());
    assert_eq!(String::from_utf8(out).unwrap(), r#"{"a":{"y":true,"z":null},"b":[1,2.5,"xA"],"😀":0}"#);
    for malformed in ["{\"a\":", "[1,,2]", "", "nul"] {
        assert!(canonicalize_json(malformed, &mut Vec::new()).is_err(), "{malformed:?}");
    }
}

// ---- signatures ----

fn doc() -> Value {
    json!({ "schemaVersion": 1, "meta": { "signedAt": t0().to_rfc3339(), "ciCommit": "ab" }, "x": [1, 2.5, "y"] })
}

fn artifact_with_text(text: &str, signature: &str) -> SignedArtifact {
    SignedArtifact { artifact: B64.encode(text.as_bytes()), signature: signature.to_owned() }
}

fn check(artifact: &SignedArtifact, now: DateTime<Utc>) -> Result<(), VerifyError> {
    verify_artifact(Some(&trust()), artifact, now, Freshness::Check).map(|_| ())
}

#[test]
fn a_fleet_signed_by_an_independent_implementation_verifies_despite_whitespace_and_key_order() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/python-signed-fleet.json")).unwrap();
    let text = fixture["artifactText"].as_str().unwrap();
    let canonical = fixture["canonicalText"].as_str().unwrap();
    assert_ne!(text, canonical, "the fixture is sent in non-canonical form");
    assert_eq!(jcs(text), canonical, "our canonical form equals Python rfc8785's");

    let config = serde_json::from_value(json!({
        "schemaVersion": 1, "ciReleaseKey": { "current": fixture["publicKey"] }, "freshnessWindowMinutes": 1440
    }))
    .unwrap();
    let roots = TrustRoots::from_config(&config).unwrap();
    let artifact = artifact_with_text(text, fixture["signature"].as_str().unwrap());
    let fleet = verify_fleet(Some(&roots), &artifact, t0(), Freshness::Check).unwrap();
    assert_eq!(fleet.doc.hosts.len(), 3);
    assert_eq!(fleet.doc.disruption_budgets[0].name, "web");

    // The same document re-indented and with keys reordered still verifies...
    let reordered: Value = serde_json::from_str(text).unwrap();
    let compact = serde_json::to_string(&reordered).unwrap();
    assert!(
        verify_fleet(
            Some(&roots),
            &artifact_with_text(&compact, fixture["signature"].as_str().unwrap()),
            t0(),
            Freshness::Check
        )
        .is_ok()
    );
    // ...and a one-byte change to a value does not.
    let tampered = text.replacen("web1-v1", "web1-v2", 1);
    assert_eq!(
        verify_fleet(
            Some(&roots),
            &artifact_with_text(&tampered, fixture["signature"].as_str().unwrap()),
            t0(),
            Freshness::Check
        )
        .unwrap_err(),
        VerifyError::BadSignature
    );
}

#[test]
fn whitespace_and_key_order_in_transit_do_not_matter() {
    let signed = sign(&doc());
    let pretty = "{\n  \"x\" : [ 1, 2.50, \"y\" ],\n  \"meta\": {\"ciCommit\":\"ab\", \"signedAt\": \"2026-11-26T12:00:00+00:00\"},\n \"schemaVersion\":1 }";
    assert_eq!(check(&artifact_with_text(pretty, &signed.signature), t0()), Ok(()));
}

#[test]
fn every_single_byte_change_breaks_the_signature_or_the_document() {
    let signed = sign(&doc());
    let bytes = B64.decode(&signed.artifact).unwrap();
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] ^= 0x01;
        let artifact = SignedArtifact { artifact: B64.encode(&changed), signature: signed.signature.clone() };
        let err = check(&artifact, t0()).unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature | VerifyError::Malformed(_)), "flipping byte {i} gave {err:?}");
    }
    let mut sig = B64.decode(&signed.signature).unwrap();
    sig[10] ^= 0x80;
    let artifact = SignedArtifact { artifact: signed.artifact.clone(), signature: B64.encode(sig) };
    assert_eq!(check(&artifact, t0()), Err(VerifyError::BadSignature));
}

#[test]
fn no_trust_roots_verifies_nothing() {
    assert_eq!(verify_artifact(None, &sign(&doc()), t0(), Freshness::Check).unwrap_err(), VerifyError::NoTrustRoots);
    let mut config = trust_config(&ci_key());
    config.ci_release_key.current = "not a key".into();
    assert_eq!(TrustRoots::from_config(&config).unwrap_err().code().as_str(), "no-trust-roots");
}

#[test]
fn malformed_artifacts_are_named_malformed() {
    let signature = sign(&doc()).signature;
    for artifact in [
        SignedArtifact { artifact: "%%%".into(), signature: signature.clone() },
        artifact_with_text("{not json", &signature),
        artifact_with_text("", &signature),
    ] {
        assert_eq!(check(&artifact, t0()).unwrap_err().code().as_str(), "malformed");
    }
}

#[test]
fn wrong_key_or_garbage_signature_is_bad_signature() {
    let other = sign_value(&key("someone-else"), &doc()).unwrap().artifact();
    assert_eq!(check(&other, t0()), Err(VerifyError::BadSignature));
    let mut short = sign(&doc());
    short.signature = B64.encode([1u8; 63]);
    assert_eq!(check(&short, t0()), Err(VerifyError::BadSignature));
    short.signature = "???".into();
    assert_eq!(check(&short, t0()), Err(VerifyError::BadSignature));
}

#[test]
fn non_canonical_signature_encodings_are_rejected_by_strict_verification() {
    // s + L (the group order) verifies under lax Ed25519 but is malleable: strict rejects it.
    let signed = sign(&doc());
    let mut sig = B64.decode(&signed.signature).unwrap();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    let artifact = SignedArtifact { artifact: signed.artifact.clone(), signature: B64.encode(sig) };
    assert_eq!(check(&artifact, t0()), Err(VerifyError::BadSignature));
}

#[test]
fn schema_versions_this_build_does_not_know_are_unsupported() {
    // 1 and, for fleet documents, 2 (the policies of SPEC §17) are known.
    for version in [json!(0), json!(3), json!("1"), json!(null)] {
        let mut d = doc();
        d["schemaVersion"] = version;
        assert_eq!(check(&sign(&d), t0()).unwrap_err().code().as_str(), "unsupported-schema");
    }
    let mut d = doc();
    d.as_object_mut().unwrap().remove("schemaVersion");
    assert_eq!(check(&sign(&d), t0()).unwrap_err().code().as_str(), "unsupported-schema");
}

#[test]
fn a_document_without_signed_at_is_not_signed() {
    let mut d = doc();
    d["meta"].as_object_mut().unwrap().remove("signedAt");
    assert_eq!(check(&sign(&d), t0()), Err(VerifyError::NotSigned));
    d["meta"]["signedAt"] = Value::Null;
    assert_eq!(check(&sign(&d), t0()), Err(VerifyError::NotSigned));
    d["meta"]["signedAt"] = json!("yesterday");
    assert_eq!(check(&sign(&d), t0()).unwrap_err().code().as_str(), "malformed");
}

fn signed_at(when: DateTime<Utc>) -> SignedArtifact {
    let mut d = doc();
    d["meta"]["signedAt"] = json!(when.to_rfc3339());
    sign(&d)
}

#[test]
fn reject_before_accepts_equal_and_rejects_earlier() {
    let mut config = trust_config(&ci_key());
    config.ci_release_key.reject_before = Some(t0());
    let roots = TrustRoots::from_config(&config).unwrap();
    let verify = |a: &SignedArtifact| verify_artifact(Some(&roots), a, t0(), Freshness::Check).map(|_| ());
    assert_eq!(verify(&signed_at(t0())), Ok(()));
    assert_eq!(verify(&signed_at(t0() - Duration::seconds(1))).unwrap_err().code().as_str(), "rejected-before");
    // rejectBefore is not a freshness rule: it applies after a restart too.
    let after_restart = verify_artifact(Some(&roots), &signed_at(t0() - Duration::seconds(1)), t0(), Freshness::Skip);
    assert_eq!(after_restart.unwrap_err().code().as_str(), "rejected-before");
}

#[test]
fn freshness_window_plus_sixty_seconds_is_accepted_and_one_more_is_stale() {
    let window = Duration::minutes(1440);
    let artifact = signed_at(t0());
    assert_eq!(check(&artifact, t0() + window + Duration::seconds(60)), Ok(()));
    assert_eq!(check(&artifact, t0() + window + Duration::seconds(61)).unwrap_err().code().as_str(), "stale");
    // After a restart the persisted set is re-verified without freshness.
    let later = verify_artifact(Some(&trust()), &artifact, t0() + Duration::days(30), Freshness::Skip);
    assert!(later.is_ok());
}

#[test]
fn sixty_seconds_in_the_future_is_accepted_and_sixty_one_is_future_dated() {
    assert_eq!(check(&signed_at(at(60)), t0()), Ok(()));
    assert_eq!(check(&signed_at(at(61)), t0()).unwrap_err().code().as_str(), "future-dated");
}

#[test]
fn previous_and_successor_keys_count_until_retire_at_and_current_always() {
    let (current, previous, successor) = (key("current"), key("previous"), key("successor"));
    let config = |retire_at: Option<DateTime<Utc>>| {
        let mut c = trust_config(&current);
        c.ci_release_key.previous = Some(public_key_b64(&previous));
        c.ci_release_key.successor = Some(public_key_b64(&successor));
        c.ci_release_key.retire_at = retire_at;
        TrustRoots::from_config(&c).unwrap()
    };
    let by = |k| sign_value(k, &doc()).unwrap().artifact();
    let verify = |roots: &TrustRoots, k, now| verify_artifact(Some(roots), &by(k), now, Freshness::Check).map(|_| ());

    let rotating = config(Some(at(10)));
    for k in [&current, &previous, &successor] {
        assert_eq!(verify(&rotating, k, at(9)), Ok(()), "inside the rotation window");
    }
    assert_eq!(verify(&rotating, &current, at(10)), Ok(()));
    assert_eq!(verify(&rotating, &previous, at(10)), Err(VerifyError::BadSignature), "retired at retireAt");
    assert_eq!(verify(&rotating, &successor, at(10)), Err(VerifyError::BadSignature));

    let open_ended = config(None);
    assert_eq!(verify(&open_ended, &previous, at(3600)), Ok(()));
    assert_eq!(verify(&open_ended, &key("stranger"), t0()), Err(VerifyError::BadSignature));
}

// ---- consistency of the fleet document (SPEC §2.3) ----

fn base() -> FleetBuilder {
    FleetBuilder::new()
        .policy("p", &[(0, false), (0, false)], "halt", 30)
        .channel("stable", "p")
        .channel("canary", "p")
        .host("a", "stable", &["web"])
        .host("b", "stable", &["web"])
        .host("c", "canary", &[])
}

fn inconsistency(builder: FleetBuilder) -> String {
    match verify_fleet(Some(&trust()), &sign(&builder.document()), t0(), Freshness::Check) {
        Err(VerifyError::Inconsistent(message)) => message,
        other => panic!("expected inconsistent, got {other:?}"),
    }
}

#[test]
fn fleet_consistency_rules_each_name_the_field() {
    assert!(verify_fleet(Some(&trust()), &sign(&base().document()), t0(), Freshness::Check).is_ok());
    let cases: Vec<(FleetBuilder, &str)> = vec![
        (base().host("d", "nightly", &[]), "hosts.d.channel: unknown channel `nightly`"),
        (base().channel("edge", "missing"), "channels.edge.rolloutPolicy: unknown policy `missing`"),
        (
            base().waves("stable", &[&["a"], &["a", "b"]]),
            "waves.stable[1].hosts: host `a` is already in waves.stable[0]",
        ),
        (base().waves("stable", &[&["a", "c"]]), "waves.stable[0].hosts: host `c` is on channel `canary`"),
        (base().waves("stable", &[&["a"], &["zz"]]), "waves.stable[1].hosts: unknown host `zz`"),
        (base().waves("stable", &[&["a"], &["b"], &[]]), "waves.stable: 3 waves but policy `p` defines only 2"),
        (base().edge("a", "c"), "edges[0]: `a` (channel stable) and `c` (channel canary) are on different channels"),
        (base().edge("a", "b").edge("b", "a"), "edges: cycle"),
        (base().edge("a", "a"), "edges: cycle a → a"),
        (base().channel_edge("stable", "canary").channel_edge("canary", "stable"), "channelEdges: cycle"),
        (base().channel_edge("stable", "nope"), "channelEdges[0].gated: unknown channel `nope`"),
        (
            base().budget("web", json!({"tags": ["web"]}), 1).budget("web", json!({"all": true}), 2),
            "disruptionBudgets[1].name: duplicate budget `web`",
        ),
    ];
    for (builder, expected) in cases {
        let message = inconsistency(builder);
        assert!(message.starts_with(expected), "expected `{expected}`, got `{message}`");
    }
}

// ---- consistency of rollout manifests (SPEC §2.4) ----

fn manifest_doc(fleet_hash: &str, hosts: &[(&str, &str)]) -> Value {
    let host_set: Vec<Value> =
        hosts.iter().map(|(h, c)| json!({"hostname": h, "wave": 0, "targetClosure": c})).collect();
    json!({ "schemaVersion": 1, "channel": "stable", "channelRef": "abc123", "meta": { "signedAt": t0().to_rfc3339() },
            "fleetHash": fleet_hash, "hostSet": host_set })
}

#[test]
fn manifest_consistency_rules() {
    let fleet = base().verified();
    let verify = |d: &Value, filed_as: Option<&RolloutId>| {
        verify_manifest(Some(&trust()), &sign(d), &fleet, filed_as, t0(), Freshness::Check)
    };
    let good = manifest_doc(&fleet.hash, &[("a", "/nix/store/a-v2"), ("b", "/nix/store/b-v2")]);
    let m = verify(&good, Some(&RolloutId::parse("stable@abc123").unwrap())).unwrap();
    assert_eq!(m.id.as_str(), "stable@abc123");

    let inconsistent = |d: &Value, filed_as: Option<&RolloutId>| match verify(d, filed_as) {
        Err(VerifyError::Inconsistent(message)) => message,
        other => panic!("expected inconsistent, got {other:?}"),
    };
    assert!(inconsistent(&good, Some(&RolloutId::parse("stable@ffff").unwrap())).contains("filed as `stable@ffff`"));
    assert!(
        inconsistent(&manifest_doc(&"0".repeat(64), &[("a", "/x")]), None)
            .contains("is not the hash of the verified fleet")
    );
    assert!(
        inconsistent(&manifest_doc(&fleet.hash, &[("c", "/x")]), None)
            .contains("`c` is on channel `canary`, not `stable`")
    );
    assert!(
        inconsistent(&manifest_doc(&fleet.hash, &[("zz", "/x")]), None).contains("`zz` is not a host of the fleet")
    );
    assert!(inconsistent(&manifest_doc(&fleet.hash, &[("b", "/x"), ("a", "/x")]), None).contains("must be sorted"));
    assert!(inconsistent(&manifest_doc(&fleet.hash, &[("a", "/x"), ("a", "/y")]), None).contains("must be sorted"));
    let mut bad_ref = good.clone();
    bad_ref["channelRef"] = json!("NOT-HEX");
    assert!(inconsistent(&bad_ref, None).starts_with("channelRef"));
}

#[test]
fn change_summaries_need_schema_two_name_target_closures_and_keep_to_the_limits() {
    let fleet = base().verified();
    let verify = |d: &Value| verify_manifest(Some(&trust()), &sign(d), &fleet, None, t0(), Freshness::Check);
    let with = |version: u32, closures: Value| {
        let mut d = manifest_doc(&fleet.hash, &[("a", "/nix/store/a-v2"), ("b", "/nix/store/b-v2")]);
        d["schemaVersion"] = json!(version);
        d["closures"] = closures;
        d
    };
    let summary = json!({"/nix/store/a-v2": {"sizeBytes": 1024, "changes": [{"package": "hello", "from": "2.10", "to": "2.12"}]}});
    let m = verify(&with(2, summary.clone())).unwrap();
    let closures = m.manifest.closures.unwrap();
    assert_eq!(closures[&shared::Closure::parse("/nix/store/a-v2").unwrap()].changes[0].package, "hello");

    let inconsistent = |d: &Value| match verify(d) {
        Err(VerifyError::Inconsistent(message)) => message,
        other => panic!("expected inconsistent, got {other:?}"),
    };
    assert_eq!(inconsistent(&with(1, summary)), "closures: needs schemaVersion 2");
    assert!(inconsistent(&with(2, json!({"/nix/store/other": {"changes": []}}))).contains("not a targetClosure"));
    let many: Vec<Value> = (0..=10_000).map(|i| json!({"package": format!("p{i}"), "to": "1"})).collect();
    assert!(inconsistent(&with(2, json!({"/nix/store/a-v2": {"changes": many}}))).contains("more than 10000"));
    let long = json!({"/nix/store/a-v2": {"changes": [{"package": "x".repeat(257), "to": "1"}]}});
    assert!(inconsistent(&with(2, long)).contains("changes[0]"));
    let neither = json!({"/nix/store/a-v2": {"changes": [{"package": "x"}]}});
    assert!(inconsistent(&with(2, neither)).contains("neither from nor to"));
    assert!(matches!(verify(&with(3, json!(null))), Err(VerifyError::UnsupportedSchema(_))));
}

#[test]
fn a_freshness_window_longer_than_a_year_is_refused_when_trust_is_loaded_and_never_overflows() {
    let mut config = trust_config(&ci_key());
    // Minutes chrono can just represent: the window plus the 60 s of slack overflowed and
    // panicked the poller on every verification.
    for minutes in [u64::MAX, i64::MAX as u64 / 60_000, 366 * 24 * 60 + 1] {
        config.freshness_window_minutes = minutes;
        let err = TrustRoots::from_config(&config).unwrap_err();
        assert_eq!(err.code().as_str(), "malformed");
        assert!(err.to_string().contains("freshnessWindowMinutes"), "{err}");
    }
    config.freshness_window_minutes = 366 * 24 * 60;
    let roots = TrustRoots::from_config(&config).unwrap();
    let fleet =
        FleetBuilder::new().policy("p", &[(0, false)], "halt", 30).channel("stable", "p").host("a", "stable", &[]);
    assert!(verify_fleet(Some(&roots), &sign(&fleet.document()), t0(), Freshness::Check).is_ok());
}

#[test]
fn two_hosts_with_the_same_public_key_are_inconsistent() {
    let mut doc = base().document();
    doc["hosts"]["c"]["pubkey"] = doc["hosts"]["a"]["pubkey"].clone();
    match verify_fleet(Some(&trust()), &sign(&doc), t0(), Freshness::Check) {
        Err(VerifyError::Inconsistent(message)) => {
            assert_eq!(message, "hosts.c.pubkey: the same key as hosts.a.pubkey")
        }
        other => panic!("expected inconsistent, got {other:?}"),
    }
}
