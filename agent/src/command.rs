//! Running a program with a deadline, keeping the tail of what it printed.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shared::limits::MAX_STDERR_TAIL_BYTES;

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Its exit code; `None` when it was killed at the deadline (or by a signal).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Standard output (at most 64 KiB are kept).
    pub stdout: String,
    /// The last bytes of standard error.
    pub stderr_tail: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The exit code to report: 124 for a timeout (as `timeout(1)` does), -1 when killed by a
    /// signal otherwise.
    pub fn code(&self) -> i32 {
        match (self.exit_code, self.timed_out) {
            (_, true) => 124,
            (Some(code), false) => code,
            (None, false) => -1,
        }
    }
}

const MAX_STDOUT_BYTES: usize = 64 * 1024;

fn keep_tail(mut bytes: Vec<u8>, max: usize) -> String {
    if bytes.len() > max {
        bytes.drain(..bytes.len() - max);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads a pipe to its end in a thread, keeping at most `max` bytes (the last ones).
fn drain(pipe: Option<impl Read + Send + 'static>, max: usize) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else { return String::new() };
        let mut kept = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > 2 * max {
                        kept.drain(..kept.len() - max);
                    }
                }
            }
        }
        keep_tail(kept, max)
    })
}

/// Runs `argv` with no stdin, killing it at `timeout`. A program that cannot be started is a
/// `Finished` with exit code 127 (as a shell reports it) and the reason as its stderr.
pub fn run(argv: &[String], timeout: Duration, env: &[(&str, &str)], dir: Option<&Path>) -> Finished {
    let Some((program, args)) = argv.split_first() else {
        return Finished {
            exit_code: Some(127),
            timed_out: false,
            stdout: String::new(),
            stderr_tail: "empty command".into(),
        };
    };
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            return Finished {
                exit_code: Some(127),
                timed_out: false,
                stdout: String::new(),
                stderr_tail: format!("cannot run {program}: {err}"),
            };
        }
    };
    let stdout = drain(child.stdout.take(), MAX_STDOUT_BYTES);
    let stderr = drain(child.stderr.take(), MAX_STDERR_TAIL_BYTES);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                break (child.wait().ok(), true);
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(_) => break (None, false),
        }
    };
    // A grandchild that kept the pipes open must not hold the agent up past the deadline.
    let stdout = if stdout.is_finished() || !timed_out { stdout.join().unwrap_or_default() } else { String::new() };
    let stderr = if stderr.is_finished() || !timed_out { stderr.join().unwrap_or_default() } else { String::new() };
    Finished { exit_code: status.and_then(|s| s.code()), timed_out, stdout, stderr_tail: stderr }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_codes_output_and_timeouts_are_reported() {
        let ok = run(&sh("echo out; echo err >&2"), Duration::from_secs(10), &[], None);
        assert_eq!((ok.exit_code, ok.stdout.as_str(), ok.stderr_tail.as_str()), (Some(0), "out\n", "err\n"));
        let failed = run(&sh("exit 4"), Duration::from_secs(10), &[], None);
        assert_eq!((failed.code(), failed.timed_out), (4, false));
        let hung = run(&sh("exec sleep 30"), Duration::from_millis(200), &[], None);
        assert_eq!((hung.code(), hung.timed_out), (124, true));
        let missing = run(&["/nonexistent/program".to_owned()], Duration::from_secs(1), &[], None);
        assert_eq!(missing.code(), 127);
        assert!(missing.stderr_tail.contains("/nonexistent/program"));
    }

    #[test]
    fn only_the_tail_of_a_long_stderr_is_kept() {
        let loud = run(
            &sh("i=0; while [ $i -lt 3000 ]; do echo line $i >&2; i=$((i+1)); done"),
            Duration::from_secs(10),
            &[],
            None,
        );
        assert!(loud.stderr_tail.len() <= MAX_STDERR_TAIL_BYTES);
        assert!(loud.stderr_tail.ends_with("line 2999\n"));
    }
}
