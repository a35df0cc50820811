//! Signing agent requests (SPEC §9.1): the headers every request carries. Ed25519 is
//! deterministic, so the same method, path and body signed in the same second is the same
//! signature, which the control plane refuses as a replay; a request identical to one already
//! signed at `t` or later is therefore signed at one second after it (retries are the only
//! requests that repeat, a few times at most: far inside the ±60 s the control plane accepts).
//! The simulator signs with this too.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::de::DeserializeOwned;
use shared::agent::{HOST_HEADER, MAX_SKEW_SECONDS, SIGNATURE_HEADER, TIMESTAMP_HEADER, signing_string};

use crate::machine::SendError;

/// The three headers of a signed request (`X-Fleetwave-Host` is the signer's hostname).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub timestamp: i64,
    /// Standard base64 of the 64 signature bytes.
    pub signature: String,
}

impl Signature {
    /// The headers a request signed by `host` carries (SPEC §9.1).
    pub fn headers(&self, host: &str) -> [(&'static str, String); 3] {
        [
            (HOST_HEADER, host.to_owned()),
            (TIMESTAMP_HEADER, self.timestamp.to_string()),
            (SIGNATURE_HEADER, self.signature.clone()),
        ]
    }
}

/// Signs one host's requests, never twice alike in one second.
#[derive(Debug)]
pub struct RequestSigner {
    key: SigningKey,
    stamps: Stamps,
}

impl RequestSigner {
    pub fn new(key: SigningKey) -> RequestSigner {
        RequestSigner { key, stamps: Stamps::default() }
    }

    /// Signs `method path` with `body` at `now` (unix seconds), or a little later when the same
    /// request was already signed in that second.
    pub fn sign(&mut self, method: &str, path_and_query: &str, body: &[u8], now: i64) -> Signature {
        let digest = engine::crypto::sha256_hex(body);
        let timestamp = self.stamps.issue(Stamps::key(method, path_and_query, &digest), now);
        let message = signing_string(method, path_and_query, timestamp, &digest);
        Signature { timestamp, signature: B64.encode(self.key.sign(message.as_bytes()).to_bytes()) }
    }
}

/// Signing timestamps that never repeat for identical requests.
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
            let horizon = now.saturating_sub(MAX_SKEW_SECONDS);
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

/// Sorts the control plane's answer as the agent acts on it (SPEC §14): a 2xx is parsed; no
/// answer, a 5xx, a 429 and a 401 (this host's clock, or a fleet not caught up with its key
/// yet) are retried, after the `Retry-After` header's seconds when it has them; any other 4xx
/// (409 above all) is refused and never sent again.
pub fn classify<T: DeserializeOwned>(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<T, SendError> {
    let retry_after = retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    match status {
        200..=299 => serde_json::from_slice(body).map_err(|_| SendError::Retry { after: None }),
        401 | 429 | 500.. => Err(SendError::Retry { after: retry_after }),
        _ => {
            let message = serde_json::from_slice::<shared::ApiErrorBody>(body)
                .map(|b| format!("{}: {}", b.error.code, b.error.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned());
            Err(SendError::Refused { status, message })
        }
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

    #[test]
    fn answers_are_retried_or_refused_as_the_spec_says() {
        use shared::agent::EventResponse;
        let ok = br#"{"outcome":"applied","state":"Activating"}"#;
        assert!(classify::<EventResponse>(200, None, ok).is_ok());
        let after = Some(Duration::from_secs(7));
        for status in [401, 429, 500, 503] {
            assert_eq!(
                classify::<EventResponse>(status, Some(" 7"), b"{}"),
                Err(SendError::Retry { after }),
                "{status}"
            );
        }
        assert_eq!(classify::<EventResponse>(503, Some("soon"), b"{}"), Err(SendError::Retry { after: None }));
        let conflict = br#"{"error":{"code":"illegal-for-state","message":"Pending cannot take Converged"}}"#;
        assert_eq!(
            classify::<EventResponse>(409, Some("7"), conflict),
            Err(SendError::Refused { status: 409, message: "illegal-for-state: Pending cannot take Converged".into() })
        );
        assert!(matches!(
            classify::<EventResponse>(422, None, b"not json"),
            Err(SendError::Refused { status: 422, .. })
        ));
        // A 2xx the agent cannot read is treated like no answer.
        assert_eq!(classify::<EventResponse>(200, None, b"{"), Err(SendError::Retry { after: None }));
    }

    #[test]
    fn a_signed_request_verifies_as_the_control_plane_checks_it() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut signer = RequestSigner::new(key.clone());
        let body = br#"{"hostname":"a","at":"2026-12-01T10:00:00Z"}"#;
        let first = signer.sign("POST", "/api/v1/agent/heartbeat", body, 1_000);
        let again = signer.sign("POST", "/api/v1/agent/heartbeat", body, 1_000);
        assert_ne!(first.signature, again.signature, "a resend in the same second signs differently");
        for s in [first, again] {
            let verified = engine::verify::agent_signature(
                &key.verifying_key(),
                "POST",
                "/api/v1/agent/heartbeat",
                s.timestamp,
                Some(&s.signature),
                body,
            );
            assert!(verified.is_ok(), "{s:?}");
        }
    }
}
