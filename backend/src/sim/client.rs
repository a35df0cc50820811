//! A signed agent HTTP client (SPEC §9.1): what a real agent sends, used by the simulator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::request::RequestSigner;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use shared::agent::{HOST_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    host: String,
    /// Shared by a fleet's clients: most requests in flight at once.
    limit: Option<Arc<Semaphore>>,
    /// The agent's own request signing (never the same signature twice).
    signer: Arc<Mutex<RequestSigner>>,
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
            limit: None,
            signer: Arc::new(Mutex::new(RequestSigner::new(key))),
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
        let now = chrono::Utc::now().timestamp();
        let Ok(signed) = self.signer.lock().map(|mut signer| signer.sign(method.as_str(), path, &bytes, now)) else {
            return (Answer::Retry, Duration::ZERO);
        };
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(HOST_HEADER, &self.host)
            .header(TIMESTAMP_HEADER, signed.timestamp.to_string())
            .header(SIGNATURE_HEADER, signed.signature)
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
