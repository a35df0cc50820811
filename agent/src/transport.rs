//! Talking to the control plane: signed requests (SPEC §9.1) over blocking HTTP with timeouts,
//! answers sorted by [`crate::request::classify`].

use std::io::Read;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::agent::{EVENTS_PATH, EventRequest, EventResponse, HEARTBEAT_PATH, HeartbeatRequest, HeartbeatResponse};

use crate::machine::SendError;
use crate::request::{RequestSigner, classify};

/// The most of an answer the agent reads (the control plane's answers are a few KiB).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

pub struct Transport {
    http: ureq::Agent,
    base: String,
    host: String,
    signer: RequestSigner,
}

impl Transport {
    pub fn new(base: &str, host: &str, key: SigningKey) -> Transport {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .user_agent(concat!("fleetwave-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Transport {
            http: config.into(),
            base: base.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            signer: RequestSigner::new(key),
        }
    }

    /// The HTTP client, shared with the probes.
    pub fn http(&self) -> &ureq::Agent {
        &self.http
    }

    pub fn heartbeat(&mut self, request: &HeartbeatRequest) -> Result<HeartbeatResponse, SendError> {
        self.post(HEARTBEAT_PATH, request)
    }

    pub fn event(&mut self, request: &EventRequest) -> Result<EventResponse, SendError> {
        self.post(EVENTS_PATH, request)
    }

    fn post<B: Serialize, T: DeserializeOwned>(&mut self, path: &str, body: &B) -> Result<T, SendError> {
        let bytes = serde_json::to_vec(body).map_err(|_| SendError::Retry { after: None })?;
        let signed = self.signer.sign("POST", path, &bytes, chrono::Utc::now().timestamp());
        let request = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        let request = signed.headers(&self.host).into_iter().fold(request, |r, (k, v)| r.header(k, v));
        let mut response = request.send(&bytes[..]).map_err(|_| SendError::Retry { after: None })?;
        let status = response.status().as_u16();
        let after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        if response.body_mut().as_reader().take(MAX_ANSWER_BYTES).read_to_end(&mut body).is_err() {
            // A body cut off is no answer: retried, after what the header asked for.
            return classify(503, after.as_deref(), b"");
        }
        classify(status, after.as_deref(), &body)
    }
}
