//! The operator API over HTTP(S) for `fleetwave ctl`: bearer token, timeouts, and every
//! failure sorted into what the exit code says (refused by the server, or unreachable).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long to wait for a connection, and for a whole answer (not the feed's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The feed sends a keep-alive every 15 s: this long without a byte means the connection is
/// gone.
pub const FEED_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// Why a command did not do what it was asked; each maps to its exit code (SPEC §18).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The server answered and said no: its reason.
    #[error("{status}: {message} ({code})")]
    Refused { status: u16, code: String, message: String },
    /// No answer: connection refused, timed out, name not found, TLS failed.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The command line does not make sense (beyond what the parser checks).
    #[error("{0}")]
    Usage(String),
    /// A watched rollout ended in another state than Completed.
    #[error("{0}")]
    Ended(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } => 3,
            CtlError::Ended(_) => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For the feed: no overall timeout, a read timeout instead.
    streaming: reqwest::Client,
    /// `https://host:port` without a trailing slash.
    base: String,
    token: String,
}

impl Client {
    pub fn new(url: &str, token: &str) -> Result<Client, CtlError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::Usage(format!("--url must start with http:// or https:// (got `{url}`)")));
        }
        if token.is_empty() {
            return Err(CtlError::Usage("no token: pass --token or set FLEETWAVE_TOKEN".into()));
        }
        let builder = || reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).user_agent("fleetwave-ctl");
        let build = |b: reqwest::ClientBuilder| {
            b.build().map_err(|e| CtlError::Unreachable { url: base.clone(), reason: format!("no HTTP client: {e}") })
        };
        let http = build(builder().timeout(REQUEST_TIMEOUT))?;
        let streaming = build(builder().read_timeout(FEED_READ_TIMEOUT))?;
        Ok(Client { http, streaming, base, token: token.to_owned() })
    }

    /// The control plane's URL, as given.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, err: &reqwest::Error) -> CtlError {
        // The chain says why (connection refused, certificate, timeout).
        CtlError::Unreachable { url: self.base.clone(), reason: crate::telemetry::error_chain(err) }
    }

    /// `GET /api/v1{path}`, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CtlError> {
        self.send(Method::GET, path, None::<&()>).await
    }

    /// `POST /api/v1{path}` with `body` as JSON, read as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CtlError> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CtlError> {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CtlError::Refused {
            status: status.as_u16(),
            code: "unreadable-answer".into(),
            message: format!("the answer is not what this ctl expects (is the server another version?): {e}"),
        })
    }

    /// `GET /api/v1{path}` as a byte stream (JSONL, the feed), after checking the status.
    pub async fn stream(&self, path: &str, last_event_id: Option<i64>) -> Result<reqwest::Response, CtlError> {
        let mut request = self.streaming.get(self.url(path)).bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(refusal(status, &bytes));
        }
        Ok(response)
    }
}

/// A non-success answer: the API's error body where there is one (read loosely, so that a
/// code this ctl does not know still shows), else the status alone.
fn refusal(status: StatusCode, bytes: &[u8]) -> CtlError {
    let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let text = |field: &str| body["error"][field].as_str().map(str::to_owned);
    CtlError::Refused {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "http".into()),
        message: text("message").unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
    }
}
