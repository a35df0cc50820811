//! An agent request as the control plane checks it: the timestamp header, the signature header
//! over method, path and body (sometimes the right signature, so the body is parsed), then the
//! body as an event or heartbeat with its limits.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer;
use engine::testkit::host_key;
use engine::verify::{agent_signature, agent_timestamp};
use libfuzzer_sys::fuzz_target;
use shared::agent::{EventRequest, HeartbeatRequest, MAX_SKEW_SECONDS, signing_string};

const NOW: i64 = 1_764_000_000;

fuzz_target!(|data: &[u8]| {
    // Four header lines (method, path, timestamp, signature), then the body.
    let mut parts = data.splitn(5, |b| *b == b'\n');
    fn text(p: Option<&[u8]>) -> &str {
        p.and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("")
    }
    let (method, path, ts, sig) = (text(parts.next()), text(parts.next()), text(parts.next()), text(parts.next()));
    let body = parts.next().unwrap_or_default();
    let Ok(timestamp) = agent_timestamp(Some(ts), NOW, MAX_SKEW_SECONDS) else { return };
    let key = host_key("a");
    let signature = if sig == "SIGN" {
        let message = signing_string(method, path, timestamp, &engine::crypto::sha256_hex(body));
        B64.encode(key.sign(message.as_bytes()).to_bytes())
    } else {
        sig.to_owned()
    };
    if agent_signature(&key.verifying_key(), method, path, timestamp, Some(&signature), body).is_err() {
        return;
    }
    if let Ok(request) = serde_json::from_slice::<EventRequest>(body) {
        let _ = request.check_limits();
    }
    if let Ok(heartbeat) = serde_json::from_slice::<HeartbeatRequest>(body) {
        let _ = heartbeat.check_limits();
    }
});
