//! A signed agent HTTP client (SPEC §9.1), used by the simulator and the load tools. Answers
//! are sorted as the agent sorts them ([`agent::request::classify`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::machine::SendError;
use agent::request::RequestSigner;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    /// The control plane's replicas: each request goes to one of them at random (SPEC §15:
    /// any replica takes an agent's request).
    bases: Arc<[String]>,
    host: String,
    /// Shared by a fleet's clients: most requests in flight at once.
    limit: Option<Arc<Semaphore>>,
    /// The agent's own request signing (never the same signature twice).
    signer: Arc<Mutex<RequestSigner>>,
}

impl AgentClient {
    pub fn new(http: reqwest::Client, base: &str, host: &str, key: SigningKey) -> AgentClient {
        Self::across(http, Arc::from([base.trim_end_matches('/').to_owned()]), host, key)
    }

    /// A client that sends each request to one of `bases` at random.
    pub fn across(http: reqwest::Client, bases: Arc<[String]>, host: &str, key: SigningKey) -> AgentClient {
        AgentClient {
            http,
            bases,
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

    /// Sends one signed POST of `body`; returns the parsed answer and how long it took.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> (Result<T, SendError>, Duration) {
        // Wait for a slot before signing and before the clock starts: the latency is the
        // server's, not the load generator's queue.
        let _slot = match &self.limit {
            Some(limit) => limit.clone().acquire_owned().await.ok(),
            None => None,
        };
        let retry = Err(SendError::Retry { after: None });
        let Ok(bytes) = serde_json::to_vec(body) else { return (retry, Duration::ZERO) };
        let now = chrono::Utc::now().timestamp();
        let Ok(signed) = self.signer.lock().map(|mut signer| signer.sign("POST", path, &bytes, now)) else {
            return (retry, Duration::ZERO);
        };
        let base = match self.bases.len() {
            0 | 1 => self.bases.first().map_or("", String::as_str),
            n => &self.bases[rand::random::<usize>() % n],
        };
        let request = self.http.post(format!("{base}{path}")).header("content-type", "application/json");
        let request = signed.headers(&self.host).into_iter().fold(request, |r, (k, v)| r.header(k, v)).body(bytes);
        let started = Instant::now();
        let answer = match request.send().await {
            Err(_) => retry,
            Ok(response) => {
                let status = response.status().as_u16();
                let after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await.unwrap_or_default();
                agent::request::classify(status, after.as_deref(), &body)
            }
        };
        (answer, started.elapsed())
    }
}
