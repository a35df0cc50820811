//! Webhooks (SPEC §18, `fleetwave serve --webhooks FILE`): each matching log entry is POSTed
//! to each webhook at least once, in seq order, signed with HMAC-SHA256 of the body. Each
//! webhook has a deliverer task of its own on the leader: it reads the committed log after its
//! cursor (persisted in `webhook_cursors` after each delivery), so it never holds up the
//! reducer, resumes where it stopped after a restart, and a webhook that is down only falls
//! behind. The reducer's commits wake it; a slow poll covers a missed wake-up.

mod deliver;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::api::WebhookView;
use shared::log::LogKind;
use shared::{Channel, limits};

pub use deliver::{Deliverer, SIGNATURE_HEADER, run, signature, start_cursors};

/// What `--webhooks FILE` holds: `[[webhook]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksFile {
    #[serde(default)]
    webhook: Vec<WebhookConfig>,
}

/// One `[[webhook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names its cursor: renaming a webhook starts it afresh.
    pub name: String,
    pub url: String,
    /// Only entries of these kinds (every kind without).
    #[serde(default)]
    pub kinds: Option<Vec<LogKind>>,
    /// Only entries about these channels (entries about no channel, such as uploads, are
    /// left out too).
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// The HMAC-SHA256 key of the signature header.
    pub secret: String,
    #[serde(default)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The log entry as the API and the feed give it.
    #[default]
    Json,
    /// `{"text": …}`: the entry in words, for a Slack (or Mattermost) incoming webhook.
    Slack,
}

/// Shortest secret accepted: a signature is only as good as its key.
const MIN_SECRET_BYTES: usize = 16;
const MAX_WEBHOOKS: usize = 64;

/// Reads and checks the webhooks file; errors name the webhook and the field.
pub fn read(path: &Path) -> anyhow::Result<Vec<WebhookConfig>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the webhooks file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<WebhookConfig>> {
    let file: WebhooksFile = toml::from_str(text)?;
    anyhow::ensure!(file.webhook.len() <= MAX_WEBHOOKS, "at most {MAX_WEBHOOKS} webhooks");
    let mut names = std::collections::BTreeSet::new();
    for (i, w) in file.webhook.iter().enumerate() {
        let at = format!("webhook[{i}] ({})", w.name);
        anyhow::ensure!(
            !w.name.is_empty()
                && w.name.len() <= limits::MAX_OPERATOR_NAME_BYTES
                && w.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "{at}: name must be 1–{} characters of A-Z a-z 0-9 - _ .",
            limits::MAX_OPERATOR_NAME_BYTES
        );
        anyhow::ensure!(names.insert(w.name.clone()), "{at}: the name is used twice");
        let url = reqwest::Url::parse(&w.url).map_err(|e| anyhow::anyhow!("{at}: url: {e}"))?;
        anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "{at}: url must be http:// or https://");
        anyhow::ensure!(w.secret.len() >= MIN_SECRET_BYTES, "{at}: secret must be at least {MIN_SECRET_BYTES} bytes");
        anyhow::ensure!(
            w.kinds.as_ref().is_none_or(|k| !k.is_empty()),
            "{at}: kinds is empty (leave it out for every kind)"
        );
        anyhow::ensure!(
            w.channels.as_ref().is_none_or(|c| !c.is_empty()),
            "{at}: channels is empty (leave it out for every channel)"
        );
    }
    Ok(file.webhook)
}

impl WebhookConfig {
    /// Whether the entry of `kind` about `channel` goes to this webhook.
    pub fn wants(&self, kind: LogKind, channel: Option<&Channel>) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
            && self.channels.as_ref().is_none_or(|c| channel.is_some_and(|ch| c.contains(ch)))
    }

    /// The URL without credentials or query (what the dashboard and logs show).
    pub fn shown_url(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => {
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
            }
            Err(_) => String::new(),
        }
    }
}

/// How one webhook's delivery stands (for `GET /api/v1/webhooks`, the dashboard and metrics).
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The last seq delivered (or passed over as not wanted).
    pub cursor: i64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// Set while the entry at the cursor keeps failing: since when, and why.
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Every configured webhook and how its delivery stands; shared by the deliverers and the API.
#[derive(Debug, Default)]
pub struct Webhooks {
    pub hooks: Vec<(WebhookConfig, Mutex<Status>)>,
}

impl Webhooks {
    pub fn new(configs: Vec<WebhookConfig>) -> Arc<Webhooks> {
        Arc::new(Webhooks { hooks: configs.into_iter().map(|c| (c, Mutex::new(Status::default()))).collect() })
    }

    pub fn views(&self, last_seq: i64) -> Vec<WebhookView> {
        self.hooks
            .iter()
            .map(|(config, status)| {
                let s = status.lock().map(|s| s.clone()).unwrap_or_default();
                WebhookView {
                    name: config.name.clone(),
                    url: config.shown_url(),
                    format: match config.format {
                        Format::Json => "json".into(),
                        Format::Slack => "slack".into(),
                    },
                    kinds: config.kinds.clone(),
                    channels: config.channels.clone(),
                    cursor: s.cursor,
                    behind: (last_seq - s.cursor).max(0),
                    delivered: s.delivered,
                    failed_attempts: s.failed_attempts,
                    last_delivered_at: s.last_delivered_at,
                    failing_since: s.failing_since,
                    last_error: s.last_error,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_checked_and_errors_name_the_webhook_and_field() {
        let ok = parse(
            r#"
            [[webhook]]
            name = "ops"
            url = "https://hooks.example.org/fleetwave"
            secret = "0123456789abcdef"
            kinds = ["RolloutStateChanged", "OperatorAction"]
            channels = ["stable"]
            format = "slack"
            "#,
        )
        .unwrap();
        assert_eq!(ok[0].format, Format::Slack);
        assert!(ok[0].wants(LogKind::OperatorAction, Some(&Channel::parse("stable").unwrap())));
        assert!(!ok[0].wants(LogKind::OperatorAction, None), "about no channel: not for a channel filter");
        assert!(!ok[0].wants(LogKind::HostEvent, Some(&Channel::parse("stable").unwrap())));
        let hook = |extra: &str| {
            format!("[[webhook]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\n{extra}")
        };
        for (text, says) in [
            (hook("kinds = [\"NoSuchKind\"]"), "NoSuchKind"),
            (hook("kinds = []"), "kinds is empty"),
            (hook("colour = \"red\""), "colour"),
            (hook("format = \"xml\""), "xml"),
            (hook("") + &hook(""), "used twice"),
            ("[[webhook]]\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"short\"\n".into(), "secret"),
            ("[[webhook]]\nname = \"a\"\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef\"\n".into(), "url"),
            ("[[webhook]]\nname = \"a b\"\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\n".into(), "name"),
        ] {
            let err = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn shown_urls_leave_out_credentials_and_queries() {
        let w = WebhookConfig {
            name: "a".into(),
            url: "https://user:pw@hooks.example.org:8443/x/y?token=secret".into(),
            kinds: None,
            channels: None,
            secret: String::new(),
            format: Format::Json,
        };
        assert_eq!(w.shown_url(), "https://hooks.example.org:8443/x/y");
    }
}
