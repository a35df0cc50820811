//! The primitives signing and verification share: RFC 8785 (JCS) canonical JSON, SHA-256 in
//! lower-case hex, Ed25519 public keys in standard base64. A leaf: it uses no other module.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// RFC 8785 canonical bytes of `value`: no whitespace, object members sorted by the UTF-16
/// code units of their names, numbers as ECMAScript prints a double (`ryu-js`), strings with
/// only the escapes JSON requires (`serde_json`'s, lower-case hex). Written directly over the
/// parsed value: the event log's hash chain canonicalises every entry on the writer's path,
/// where `serde_jcs` (which boxes a writer per fragment and re-parses every member name)
/// took 24 µs for a 1.2 KB entry. Checked against `serde_jcs` and RFC 8785's vectors
/// (`tests/verify.rs`).
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes()),
            _ => return Err(format!("cannot canonicalise the number {n}")),
        },
        Value::String(s) => write_string(s, out)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(members.iter().collect(), out, write_canonical)?,
    }
    Ok(())
}

/// RFC 8785 canonical bytes of the JSON text `json`, appended to `out`: what
/// [`canonicalize`] gives for the value `json` parses to, without building that value. Each
/// object's and array's members are borrowed as raw text and canonicalised one by one, so a
/// large document (a rollout's opening entry names every host of its set) costs a few
/// borrowed slices per level instead of a tree of maps several times its size.
pub fn canonicalize_json(json: &str, out: &mut Vec<u8>) -> Result<(), String> {
    use serde_json::value::RawValue;
    let malformed = |err: serde_json::Error| format!("cannot canonicalise malformed JSON: {err}");
    match json.trim_start().as_bytes().first() {
        Some(b'{') => {
            // A map, as `Value` parses one: a repeated name keeps its last member.
            let members: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_str(json).map_err(malformed)?;
            let members = members.iter().map(|(k, v)| (k, *v)).collect();
            write_object(members, out, |member: &RawValue, out| canonicalize_json(member.get(), out))?;
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(json).map_err(malformed)?;
            out.push(b'[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonicalize_json(item.get(), out)?;
            }
            out.push(b']');
        }
        _ => match canonical_as_written(json.trim()) {
            Some(text) => out.extend_from_slice(text.as_bytes()),
            // Any other scalar: its value is small.
            None => write_canonical(&serde_json::from_str(json).map_err(malformed)?, out)?,
        },
    }
    Ok(())
}

/// `scalar` itself when it is already canonical — a literal, a string without escapes (so
/// without control characters, quotes or backslashes: nothing to escape), an integer of at
/// most 15 digits other than `-0` (a double holds it exactly, and prints it as written) —
/// so that most members of a payload are copied rather than parsed again.
fn canonical_as_written(scalar: &str) -> Option<&str> {
    let bytes = scalar.as_bytes();
    let plain = match bytes.first()? {
        b't' | b'f' | b'n' => matches!(scalar, "true" | "false" | "null"),
        b'"' => {
            bytes.len() >= 2
                && bytes[bytes.len() - 1] == b'"'
                && !bytes[1..bytes.len() - 1].iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
        }
        _ => {
            let digits = scalar.strip_prefix('-').unwrap_or(scalar);
            (1..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && scalar != "-0"
        }
    };
    plain.then_some(scalar)
}

/// An object's members sorted by the UTF-16 code units of their names, each written by `write`.
fn write_object<M>(
    mut members: Vec<(&String, M)>,
    out: &mut Vec<u8>,
    write: impl Fn(M, &mut Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push(b'{');
    for (i, (name, member)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(name, out)?;
        out.push(b':');
        write(member, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) -> Result<(), String> {
    serde_json::to_writer(out, s).map_err(|err| format!("cannot canonicalise a string: {err}"))
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
