//! Producing signed artifacts (what CI does): the RFC 8785 canonical bytes of a JSON
//! document, signed with Ed25519. Deterministic: the same key and document give the same
//! bytes and the same signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use shared::manifest::SignedArtifact;

use crate::crypto::canonicalize;

/// A signed document as it goes to disk (`NAME.json` + `NAME.json.sig`) or on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The canonical JSON bytes that were signed.
    pub canonical: Vec<u8>,
    pub signature: [u8; 64],
}

impl Signed {
    pub fn signature_b64(&self) -> String {
        B64.encode(self.signature)
    }

    pub fn artifact(&self) -> SignedArtifact {
        SignedArtifact { artifact: B64.encode(&self.canonical), signature: self.signature_b64() }
    }
}

/// Signs the canonical bytes of `document`; fails only when it cannot be canonicalised.
pub fn sign_value(key: &SigningKey, document: &Value) -> Result<Signed, String> {
    let canonical = canonicalize(document)?;
    let signature = key.sign(&canonical).to_bytes();
    Ok(Signed { canonical, signature })
}

/// Standard base64 of the raw 32-byte public key.
pub fn public_key_b64(key: &SigningKey) -> String {
    B64.encode(key.verifying_key().to_bytes())
}

/// Decodes a signing key stored as standard base64 of its 32-byte seed.
pub fn decode_signing_key(b64: &str) -> Result<SigningKey, String> {
    let bytes = B64.decode(b64.trim()).map_err(|err| format!("not standard base64: {err}"))?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an Ed25519 secret key is a 32-byte seed, got {} bytes", bytes.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn encode_signing_key(key: &SigningKey) -> String {
    B64.encode(key.to_bytes())
}
