//! Health probes (SPEC §14): one run of a configured probe, bounded by its timeout.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use shared::limits::MAX_REASON_BYTES;
use shared::state::ProbeStatus;

use crate::command;
use crate::config::{Probe, ProbeKind};

/// One run's verdict, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: ProbeStatus,
    pub reason: Option<String>,
}

impl Verdict {
    fn pass() -> Verdict {
        Verdict { status: ProbeStatus::Pass, reason: None }
    }

    fn fail(reason: impl Into<String>) -> Verdict {
        let mut reason: String = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Verdict { status: ProbeStatus::Fail, reason: Some(reason) }
    }
}

/// Runs `probe` once.
pub fn run(probe: &Probe, http: &ureq::Agent) -> Verdict {
    let timeout = Duration::from_secs(probe.timeout_seconds);
    let target = probe.target.as_deref().unwrap_or_default();
    match probe.kind {
        ProbeKind::SystemdFailedUnits => {
            let argv: Vec<String> = ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"]
                .map(String::from)
                .into();
            let done = command::run(&argv, timeout, &[], None);
            let failed: Vec<&str> = done.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
            match (done.success(), failed.is_empty()) {
                (true, true) => Verdict::pass(),
                (true, false) => Verdict::fail(format!("failed units: {}", failed.join(", "))),
                (false, _) => Verdict::fail(format!("systemctl exit {}: {}", done.code(), done.stderr_tail.trim())),
            }
        }
        ProbeKind::Http => {
            let answer =
                http.get(target).config().timeout_global(Some(timeout)).http_status_as_error(false).build().call();
            match answer {
                Ok(r) if r.status().is_success() => Verdict::pass(),
                Ok(r) => Verdict::fail(format!("GET {target}: {}", r.status())),
                Err(err) => Verdict::fail(format!("GET {target}: {err}")),
            }
        }
        ProbeKind::Tcp => {
            let addrs = match target.to_socket_addrs() {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(err) => return Verdict::fail(format!("{target}: {err}")),
            };
            let mut last = format!("{target}: no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(_) => return Verdict::pass(),
                    Err(err) => last = format!("connect {addr}: {err}"),
                }
            }
            Verdict::fail(last)
        }
        ProbeKind::Exec => {
            let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), target.to_owned()];
            let done = command::run(&argv, timeout, &[], None);
            if done.success() {
                Verdict::pass()
            } else if done.timed_out {
                Verdict::fail(format!("`{target}` timed out after {} s", timeout.as_secs()))
            } else {
                Verdict::fail(format!("`{target}` exit {}: {}", done.code(), done.stderr_tail.trim()))
            }
        }
    }
}
