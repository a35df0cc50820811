//! One run of each probe kind against something real on this machine: a TCP listener, a tiny
//! HTTP server, shell commands.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;

use agent::config::{Probe, ProbeKind};
use agent::probes::run;
use shared::state::{ProbeMode, ProbeStatus};

fn probe(kind: ProbeKind, target: &str) -> Probe {
    Probe {
        name: "p".into(),
        kind,
        target: Some(target.into()),
        interval_seconds: 2,
        timeout_seconds: 1,
        mode: ProbeMode::Enforce,
        fail_after: 3,
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::new_with_defaults()
}

/// Answers each of `statuses` to one request, in order, on a free port; returns the port.
fn http_server(statuses: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for status in statuses {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

#[test]
fn an_http_probe_passes_on_2xx_and_fails_otherwise_with_the_status_as_reason() {
    let port = http_server(vec![200, 502]);
    let target = format!("http://127.0.0.1:{port}/health");
    assert_eq!(run(&probe(ProbeKind::Http, &target), &http()).status, ProbeStatus::Pass);
    let failed = run(&probe(ProbeKind::Http, &target), &http());
    assert_eq!(failed.status, ProbeStatus::Fail);
    assert!(failed.reason.unwrap().contains("502"));
    // Nothing listens any more: a connection error is a failure too.
    let refused = run(&probe(ProbeKind::Http, &format!("http://127.0.0.1:{port}/")), &http());
    assert_eq!(refused.status, ProbeStatus::Fail);
}

#[test]
fn a_tcp_probe_passes_when_the_port_accepts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(run(&probe(ProbeKind::Tcp, &format!("127.0.0.1:{port}")), &http()).status, ProbeStatus::Pass);
    drop(listener);
    let closed = run(&probe(ProbeKind::Tcp, &format!("127.0.0.1:{port}")), &http());
    assert_eq!(closed.status, ProbeStatus::Fail);
    assert!(closed.reason.unwrap().contains("connect"));
    assert_eq!(run(&probe(ProbeKind::Tcp, "no port here"), &http()).status, ProbeStatus::Fail);
}

#[test]
fn an_exec_probe_passes_on_exit_zero_and_fails_on_anything_else_or_a_timeout() {
    assert_eq!(run(&probe(ProbeKind::Exec, "true"), &http()).status, ProbeStatus::Pass);
    let failed = run(&probe(ProbeKind::Exec, "echo disk full >&2; exit 3"), &http());
    assert_eq!(failed.status, ProbeStatus::Fail);
    let reason = failed.reason.unwrap();
    assert!(reason.contains("exit 3") && reason.contains("disk full"), "{reason}");
    let hung = run(&probe(ProbeKind::Exec, "exec sleep 10"), &http());
    assert!(hung.reason.unwrap().contains("timed out"));
}
