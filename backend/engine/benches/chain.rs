//! The event log's hash chain on the writer's path (SPEC §16): one entry's hash for a
//! probe-result entry as the simulator's load writes them (a 1.2 KB payload carrying the
//! whole record).
//!
//! `cargo bench -p engine --bench chain`
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use engine::chain::{Entry, GENESIS};

const PAYLOAD: &str = r#"{"event":{"kind":"ProbeResult","seq":4,"probe":"http","mode":"enforce","status":"pass","observedAt":"2026-12-02T05:52:24.203619683Z"},"from":"Soaking","to":"Soaking","record":{"rolloutId":"ch008@10ad","hostname":"sim-02808","channel":"ch008","state":"Soaking","targetClosure":"/nix/store/00000000000000000000000000000008-nixos-system-web-load","currentClosureAtDispatch":"/nix/store/00000000000000000000000000000000-initial","currentClosure":"/nix/store/00000000000000000000000000000008-nixos-system-web-load","dispatchAckedAt":"2026-12-02T05:49:51.916906641Z","activationStartedAt":"2026-12-02T05:50:50.062083166Z","activationCompletedAt":"2026-12-02T05:51:29.425542571Z","soakDueAt":"2026-12-02T05:51:29.425542571Z","deferredComponent":null,"convergedAt":null,"revertedTo":null,"probes":{"http":{"mode":"enforce","status":"pass","observedAt":"2026-12-02T05:52:24.203619683Z","lastPassAt":"2026-12-02T05:52:24.203619683Z","firstFailedAt":null,"reason":null}},"failure":null,"policyApplied":null,"lastEventSeq":4,"lastProgressAt":"2026-12-02T05:52:39.789176737Z","dispatch":null,"waitingOn":null,"excused":false,"stuck":false}}"#;

fn entry_hash(c: &mut Criterion) {
    let entry = Entry {
        seq: 1_000_000,
        ts: "2026-12-02T05:52:24.203619683Z",
        kind: "HostEvent",
        rollout_id: Some("ch008@10ad"),
        host: Some("sim-02808"),
        channel: Some("ch008"),
        payload: PAYLOAD,
    };
    c.bench_function("chain_entry_hash", |b| b.iter(|| entry.hash(&GENESIS).unwrap()));
}

criterion_group!(benches, entry_hash);
criterion_main!(benches);
