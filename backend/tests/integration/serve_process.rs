//! The real binary: `fleetwave serve` starts, answers over TCP, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn serve_answers_readyz_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust.json");
    std::fs::write(&trust, serde_json::to_vec(&engine::testkit::trust_config(&engine::testkit::ci_key())).unwrap())
        .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["serve", "--log-format", "json"])
        .env("FLEETWAVE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETWAVE_DB", dir.path().join("fw.db"))
        .env("FLEETWAVE_DIST", dir.path().join("no-dist"))
        .env("FLEETWAVE_TRUST", &trust)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the "listening" log line instead of polling the port: the server logs it
    // after binding, so the first request cannot race the bind.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        let listening = line.contains("listening");
        seen.push(line);
        if listening {
            break;
        }
        assert!(Instant::now() < deadline, "no `listening` line: {seen:#?}");
    }
    // Logs are JSON objects with the env-configured settings in them.
    let first: serde_json::Value = serde_json::from_str(&seen[0]).expect("JSON log lines");
    assert!(first["config"].as_str().unwrap_or_default().contains(&port.to_string()), "{first}");

    let ready = http_get(port, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.ends_with("ready"), "{ready}");

    // SAFETY: sends SIGTERM to our own child process.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped cleanly")), "{rest:#?}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn serve_without_trust_roots_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fleetwave"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FLEETWAVE_DB", dir.path().join("fw.db"))
        .env("FLEETWAVE_TRUST", dir.path().join("missing-trust.json"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read the trust configuration") && stderr.contains("missing-trust.json"),
        "{stderr}"
    );
}
