//! `fleetwave bench ceilings` runs and reports both ceilings (a small run; the figures are
//! measured with the defaults and recorded in BENCHMARKS.md).

use std::process::Command;

#[test]
fn bench_ceilings_reports_sqlite_and_http_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["bench", "ceilings", "--events", "300", "--clients", "4", "--seconds", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["one transaction per event:", "512 events per transaction:", "requests/s, p50"] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    // Every figure is a positive number: the requests were verified and answered.
    assert!(!text.contains(" 0 requests/s") && !text.contains(" 0 events/s"), "{text}");
}
