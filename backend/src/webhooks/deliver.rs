//! One webhook's deliverer: the log after its cursor, in seq order, each wanted entry POSTed
//! until the endpoint takes it (2xx), backing off between attempts; the cursor is stored
//! after each delivery, so a restart resumes at the first entry not yet taken.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use shared::api::LogEvent;
use tokio_util::sync::CancellationToken;

use super::{Format, Status, WebhookConfig, Webhooks};
use crate::clock::Clock;
use crate::db::{Store, store};
use crate::feed::FeedHub;
use crate::metrics::Metrics;

/// `sha256=<lower hex HMAC-SHA256 of the body, keyed by the webhook's secret>`.
pub const SIGNATURE_HEADER: &str = "X-Fleetwave-Signature";
/// Entries read from the log at a time.
const PAGE: i64 = 200;
/// Each attempt's limit; an endpoint that takes longer counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between attempts at one entry: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often the log is looked at without a wake-up from the reducer's commits.
const POLL: Duration = Duration::from_secs(5);

type HmacSha256 = Hmac<Sha256>;

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The body sent for `entry`.
fn body(config: &WebhookConfig, entry: &LogEvent) -> Vec<u8> {
    match config.format {
        Format::Json => serde_json::to_vec(entry).unwrap_or_default(),
        Format::Slack => {
            let about = entry.about();
            let text = if about.is_empty() {
                format!("Fleetwave: {}", entry.describe())
            } else {
                format!("Fleetwave · *{about}*: {}", entry.describe())
            };
            serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
        }
    }
}

/// What a deliverer needs from the server.
pub struct Deliverer {
    pub store: Store,
    pub webhooks: Arc<Webhooks>,
    /// Index into `webhooks.hooks`.
    pub index: usize,
    pub wake: FeedHub,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// Delivers until `token` is cancelled. Errors (the database, the endpoint) are retried, never
/// returned: the deliverer only stops with the server (or the leadership).
pub async fn run(d: Deliverer, token: CancellationToken) {
    let Some((config, status)) = d.webhooks.hooks.get(d.index) else { return };
    let http = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).user_agent("fleetwave-webhooks").build() {
        Ok(http) => http,
        Err(err) => {
            tracing::error!(webhook = %config.name, %err, "no HTTP client: webhook not delivered");
            return token.cancelled().await;
        }
    };
    let labels = vec![("webhook".to_owned(), config.name.clone())];
    let mut wake = d.wake.committed();
    let set_status = |f: &mut dyn FnMut(&mut Status)| {
        if let Ok(mut s) = status.lock() {
            f(&mut s);
        }
    };
    // Where to start: the stored cursor ([`start_cursors`] stored one for a new webhook).
    let mut cursor = loop {
        match store::webhook_cursor(&d.store, &config.name).await {
            Ok(Some(seq)) => break seq,
            Ok(None) => break 0,
            Err(err) => {
                tracing::warn!(webhook = %config.name, %err, "cannot read the webhook's cursor; trying again");
                if pause(&token, POLL).await {
                    return;
                }
            }
        }
    };
    set_status(&mut |s| s.cursor = cursor);
    loop {
        let page = match store::log_after(&d.store, cursor, PAGE).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(webhook = %config.name, %err, "cannot read the log; trying again");
                if pause(&token, POLL).await {
                    return;
                }
                continue;
            }
        };
        let full = page.len() as i64 == PAGE;
        for entry in page {
            if config.wants(entry.kind, entry.channel.as_ref()) {
                let body = body(config, &entry);
                let signed = signature(&config.secret, &body);
                let mut retry = FIRST_RETRY;
                loop {
                    let attempt = http
                        .post(&config.url)
                        .header("Content-Type", "application/json")
                        .header(SIGNATURE_HEADER, &signed)
                        .header("X-Fleetwave-Webhook", &config.name)
                        .header("X-Fleetwave-Seq", entry.seq.to_string())
                        .body(body.clone())
                        .send();
                    let outcome = tokio::select! {
                        _ = token.cancelled() => return,
                        outcome = attempt => outcome,
                    };
                    let failure = match outcome {
                        Ok(r) if r.status().is_success() => None,
                        Ok(r) => Some(format!("answered {}", r.status())),
                        Err(err) => Some(crate::telemetry::error_chain(&err)),
                    };
                    let Some(failure) = failure else { break };
                    d.metrics.webhook_failures.get_or_create(&labels).inc();
                    d.metrics.webhook_failing.get_or_create(&labels).set(1);
                    let now = d.clock.now();
                    set_status(&mut |s| {
                        s.failed_attempts += 1;
                        s.failing_since.get_or_insert(now);
                        s.last_error = Some(format!("seq {}: {failure}", entry.seq));
                    });
                    tracing::warn!(webhook = %config.name, seq = entry.seq, %failure, retry_in = ?retry, "webhook delivery failed");
                    if pause(&token, retry).await {
                        return;
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                }
                d.metrics.webhook_delivered.get_or_create(&labels).inc();
                d.metrics.webhook_failing.get_or_create(&labels).set(0);
                let now = d.clock.now();
                set_status(&mut |s| {
                    s.delivered += 1;
                    s.last_delivered_at = Some(now);
                    s.failing_since = None;
                    s.last_error = None;
                });
                // Stored before the next entry is sent: after a restart at most this one is
                // sent again (at least once), never one skipped.
                cursor = entry.seq;
                store_cursor(&d, config, cursor, &token).await;
            }
            cursor = entry.seq;
            set_status(&mut |s| s.cursor = cursor);
            d.metrics.webhook_cursor.get_or_create(&labels).set(cursor);
        }
        if full {
            continue;
        }
        // Caught up: the entries passed over (not wanted) move the stored cursor too.
        store_cursor(&d, config, cursor, &token).await;
        tokio::select! {
            _ = token.cancelled() => return,
            woken = wake.changed() => {
                // Without a feed to wake it, the deliverer polls.
                if woken.is_err() && pause(&token, POLL).await {
                    return;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Gives each webhook without a stored cursor one at the end of the log, before the reducer
/// starts: a new webhook delivers what happens from then on (not the whole history), and
/// nothing committed after the start is passed over.
pub async fn start_cursors(
    store: &Store,
    webhooks: &Webhooks,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    for (config, _) in &webhooks.hooks {
        if store::webhook_cursor(store, &config.name).await?.is_none() {
            let last = store::last_seq(store).await?;
            store::set_webhook_cursor(store, &config.name, last, now).await?;
        }
    }
    Ok(())
}

/// Stores the cursor, retrying while the database refuses (until cancelled).
async fn store_cursor(d: &Deliverer, config: &WebhookConfig, cursor: i64, token: &CancellationToken) {
    while let Err(err) = store::set_webhook_cursor(&d.store, &config.name, cursor, d.clock.now()).await {
        tracing::warn!(webhook = %config.name, %err, "cannot store the webhook's cursor; trying again");
        if pause(token, POLL).await {
            return;
        }
    }
}

/// Sleeps for `span`; true when cancelled meanwhile.
async fn pause(token: &CancellationToken, span: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(span) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_lower_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
