//! A signed agent HTTP client (SPEC §9.1): what a real agent sends, used by the simulator.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use shared::agent::{HOST_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signing_string};
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    host: String,
    key: SigningKey,
    /// Shared by a fleet's clients: most requests in flight at once.
    limit: Option<Arc<Semaphore>>,
    stamps: Arc<Mutex<Stamps>>,
}

/// Signing timestamps that never repeat for identical requests. Ed25519 signatures are
/// deterministic, so the same method, path and body signed in the same second is the same
/// signature, which the control plane refuses as a replay (SPEC §9.1); a retry of an event
/// within its second would need a second attempt. Instead, a request identical to one already
/// signed at `t` or later is signed at one second after it (still far inside the ±60 s the
/// control plane accepts: only retries repeat a request, a few times at most).
#[derive(Debug, Default)]
pub struct Stamps {
    /// Last timestamp used, by a hash of (method, path, body digest).
    last: HashMap<u64, i64>,
    /// When entries too old to collide were last dropped (once a second at most).
    pruned_at: i64,
}

impl Stamps {
    /// The timestamp to sign request `key` with at `now` (unix seconds).
    pub fn issue(&mut self, key: u64, now: i64) -> i64 {
        if now > self.pruned_at {
            // Requests signed more than a skew window ago can no longer collide.
            let horizon = now.saturating_sub(shared::agent::MAX_SKEW_SECONDS);
            self.last.retain(|_, at| *at >= horizon);
            self.pruned_at = now;
        }
        let ts = match self.last.get(&key) {
            Some(&last) if last >= now => last.saturating_add(1),
            _ => now,
        };
        self.last.insert(key, ts);
        ts
    }

    /// The key of a request: what its signature covers besides the timestamp.
    pub fn key(method: &str, path: &str, body_digest_hex: &str) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (method, path, body_digest_hex).hash(&mut h);
        h.finish()
    }
}

/// An answer, or why there is none.
pub enum Answer {
    Ok(Value),
    /// The control plane refused (4xx other than 401 for skew): do not retry.
    Refused(u16, Value),
    /// 503, 5xx or no connection: retry later.
    Retry,
}

impl AgentClient {
    pub fn new(http: reqwest::Client, base: &str, host: &str, key: SigningKey) -> AgentClient {
        AgentClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            key,
            limit: None,
            stamps: Arc::default(),
        }
    }

    /// Shares `limit` (requests in flight) with other clients.
    pub fn limited(mut self, limit: Option<Arc<Semaphore>>) -> AgentClient {
        self.limit = limit;
        self
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one signed request; returns the answer and how long it took.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (Answer, Duration) {
        // Wait for a slot before signing and before the clock starts: the latency is the
        // server's, not the load generator's queue.
        let _slot = match &self.limit {
            Some(limit) => limit.clone().acquire_owned().await.ok(),
            None => None,
        };
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        let digest = engine::verify::sha256_hex(&bytes);
        let request_key = Stamps::key(method.as_str(), path, &digest);
        let now = chrono::Utc::now().timestamp();
        let ts = self.stamps.lock().map_or(now, |mut stamps| stamps.issue(request_key, now));
        let signature = self.key.sign(signing_string(method.as_str(), path, ts, &digest).as_bytes());
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(HOST_HEADER, &self.host)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, B64.encode(signature.to_bytes()))
            .header("content-type", "application/json")
            .body(bytes);
        let started = Instant::now();
        let answer = match request.send().await {
            Err(_) => Answer::Retry,
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                match status {
                    200..=299 => Answer::Ok(body),
                    // Not expected (see `Stamps`), unless this machine's clock stepped back:
                    // a later second signs differently.
                    401 if body["error"]["code"] == "replayed-signature" => Answer::Retry,
                    500.. => Answer::Retry,
                    _ => Answer::Refused(status, body),
                }
            }
        };
        (answer, started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identical_request_is_never_signed_twice_in_the_same_second() {
        let mut stamps = Stamps::default();
        let (retry, other) = (Stamps::key("POST", "/api/v1/agent/events", "aa"), Stamps::key("POST", "/x", "aa"));
        assert_ne!(retry, other);
        assert_eq!(stamps.issue(retry, 1_000), 1_000);
        assert_eq!(stamps.issue(other, 1_000), 1_000, "different requests share a second");
        assert_eq!(stamps.issue(retry, 1_000), 1_001, "the retry is signed a second later");
        assert_eq!(stamps.issue(retry, 1_000), 1_002);
        assert_eq!(stamps.issue(retry, 1_005), 1_005, "once the clock passed them, it is used as is");
        assert_eq!(stamps.issue(retry, 2_000), 2_000);
        assert_eq!(stamps.last.len(), 1, "requests older than the skew window are forgotten");
    }
}
