//! The primitives signing and verification share: RFC 8785 (JCS) canonical JSON, SHA-256 in
//! lower-case hex, Ed25519 public keys in standard base64. A leaf: it uses no other module.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// RFC 8785 canonical bytes of `value`.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, String> {
    serde_jcs::to_vec(value).map_err(|err| format!("cannot canonicalise: {err}"))
}

/// Lower-case hex SHA-256 of `bytes` (the `fleetHash` of canonical bytes, request digests).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// Decodes a standard-base64 Ed25519 public key (32 raw bytes).
pub fn decode_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = B64.decode(b64.trim()).map_err(|err| format!("not standard base64: {err}"))?;
    let raw: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| format!("an Ed25519 public key is 32 bytes, got {}", bytes.len()))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 public key".to_owned())
}
