//! Talking to the control plane. Every failure becomes a sentence to show, never a panic:
//! API errors carry the server's `{"error": {"code", "message"}}`.

use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;
use shared::api::Whoami;
use shared::{ApiErrorBody, VersionInfo};

/// A failed call, ready to show to a person.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    /// The API's stable error code, or `network` when no answer came.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn network(err: gloo_net::Error) -> CallError {
    CallError { code: "network".into(), message: format!("The control plane did not answer: {err}") }
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, CallError> {
    if response.ok() {
        // Through the text: payloads are kept as raw JSON, which needs a string to borrow from.
        let text = response.text().await.map_err(network)?;
        return serde_json::from_str::<T>(&text).map_err(|err| CallError {
            code: "bad-response".into(),
            message: format!("The control plane sent an answer the dashboard cannot read: {err}"),
        });
    }
    let status = response.status();
    match response.json::<ApiErrorBody>().await {
        Ok(body) => Err(CallError { code: body.error.code.to_string(), message: body.error.message }),
        Err(_) => Err(CallError {
            code: format!("http-{status}"),
            message: format!("The control plane answered HTTP {status}."),
        }),
    }
}

pub async fn version() -> Result<VersionInfo, CallError> {
    let response = Request::get("/api/v1/version").send().await.map_err(network)?;
    decode(response).await
}

/// Trades an operator token for a session cookie (`POST /api/v1/session`).
pub async fn login(token: &str) -> Result<Whoami, CallError> {
    let request = Request::post("/api/v1/session").json(&serde_json::json!({ "token": token })).map_err(network)?;
    let response = request.send().await.map_err(network)?;
    decode(response).await
}

/// Who is signed in (`GET /api/v1/session`), by the session cookie.
pub async fn whoami() -> Result<Whoami, CallError> {
    let response = Request::get("/api/v1/session").send().await.map_err(network)?;
    decode(response).await
}

use shared::api::{
    ApproveBody, EventsPage, FleetOverview, OperatorAction, OperatorOutcome, PromoteBody, QuarantineBody, Quarantines,
    ReasonBody, RolloutDetail, RolloutSummary,
};
use shared::policy::{FreezeBody, Freezes, ReleaseFreezeBody, SuspendBody};

async fn get<T: DeserializeOwned>(path: &str) -> Result<T, CallError> {
    let response = Request::get(path).send().await.map_err(network)?;
    decode(response).await
}

/// This replica, the leader it knows and every replica (`GET /api/v1/cluster`).
pub async fn cluster() -> Result<shared::api::ClusterView, CallError> {
    get("/api/v1/cluster").await
}

pub async fn fleet() -> Result<FleetOverview, CallError> {
    get("/api/v1/fleet").await
}

pub async fn rollouts() -> Result<Vec<RolloutSummary>, CallError> {
    get("/api/v1/rollouts").await
}

pub async fn rollout(id: &str) -> Result<RolloutDetail, CallError> {
    get(&format!("/api/v1/rollouts/{id}")).await
}

/// The rollout as it was when the log ended at `seq` (replayed by the server).
pub async fn rollout_at(id: &str, seq: i64) -> Result<RolloutDetail, CallError> {
    get(&format!("/api/v1/rollouts/{id}?at={seq}")).await
}

/// The rollout's newest `limit` log entries with seq < `before`, oldest first.
pub async fn rollout_events_before(id: &str, before: i64, limit: u32) -> Result<EventsPage, CallError> {
    get(&format!("/api/v1/rollouts/{id}/events?before={before}&limit={limit}")).await
}

/// A channel's rollouts, newest first, ten at a time (`before`: the page after that rollout).
pub async fn channel_history(channel: &str, before: Option<&str>) -> Result<shared::api::ChannelHistory, CallError> {
    let after = before.map(|b| format!("?before={b}")).unwrap_or_default();
    get(&format!("/api/v1/channels/{channel}/history{after}")).await
}

/// Hosts matching a search, a page at a time (`GET /api/v1/hosts`).
pub async fn hosts(query: &shared::api::HostQuery) -> Result<shared::api::HostSearchPage, CallError> {
    get(&format!("/api/v1/hosts?{}", query.to_query_string())).await
}

pub async fn host(name: &str) -> Result<shared::api::HostDetail, CallError> {
    get(&format!("/api/v1/hosts/{name}")).await
}

pub async fn quarantines() -> Result<Quarantines, CallError> {
    get("/api/v1/quarantines").await
}

pub async fn freezes() -> Result<Freezes, CallError> {
    get("/api/v1/freezes").await
}

/// What a rollout changes, per target closure (the approve and promote dialogs).
pub async fn rollout_changes(id: &shared::RolloutId) -> Result<shared::api::RolloutChanges, CallError> {
    get(&format!("/api/v1/rollouts/{id}/changes")).await
}

/// The webhooks and how their deliveries stand.
pub async fn webhooks() -> Result<Vec<shared::api::WebhookView>, CallError> {
    get("/api/v1/webhooks").await
}

/// An operator action through its route, with its typed body. Changes made with the session
/// cookie carry the CSRF header.
pub async fn act(action: &OperatorAction, reason: Option<String>) -> Result<OperatorOutcome, CallError> {
    use OperatorAction as A;
    match action {
        A::ApproveWave { rollout_id, wave } => {
            post(&format!("/api/v1/rollouts/{rollout_id}/approve"), &ApproveBody { wave: *wave, reason }).await
        }
        A::Promote { rollout_id, to_wave, force } => {
            let body = PromoteBody { to_wave: *to_wave, force: *force, reason };
            post(&format!("/api/v1/rollouts/{rollout_id}/promote"), &body).await
        }
        A::Pause { rollout_id } => post(&format!("/api/v1/rollouts/{rollout_id}/pause"), &ReasonBody { reason }).await,
        A::Resume { rollout_id } => {
            post(&format!("/api/v1/rollouts/{rollout_id}/resume"), &ReasonBody { reason }).await
        }
        A::ClearFailure { rollout_id } => {
            post(&format!("/api/v1/rollouts/{rollout_id}/clear-failure"), &ReasonBody { reason }).await
        }
        A::Quarantine { channel, closure } => {
            let body = QuarantineBody { channel: channel.clone(), closure: closure.clone(), reason };
            post("/api/v1/quarantines", &body).await
        }
        A::Release { channel, closure } => {
            let body = QuarantineBody { channel: channel.clone(), closure: closure.clone(), reason };
            post("/api/v1/quarantines/release", &body).await
        }
        A::Freeze { name, selector, until } => {
            let body = FreezeBody {
                name: name.clone(),
                selector: selector.clone(),
                until: *until,
                reason: reason.unwrap_or_default(),
            };
            post("/api/v1/freezes", &body).await
        }
        A::Unfreeze { name } => {
            let body = ReleaseFreezeBody { name: name.clone(), reason: reason.unwrap_or_default() };
            post("/api/v1/freezes/release", &body).await
        }
        A::SuspendHost { hostname } => {
            post(&format!("/api/v1/hosts/{hostname}/suspend"), &SuspendBody { reason: reason.unwrap_or_default() })
                .await
        }
        A::ResumeHost { hostname } => {
            post(&format!("/api/v1/hosts/{hostname}/resume"), &SuspendBody { reason: reason.unwrap_or_default() }).await
        }
    }
}

async fn post<B: serde::Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, CallError> {
    let request = Request::post(path).header("X-Fleetwave-Csrf", "1").json(body).map_err(network)?;
    let response = request.send().await.map_err(network)?;
    decode(response).await
}
