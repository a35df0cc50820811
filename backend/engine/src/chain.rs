//! The event log's hash chain (SPEC §16): entry `n`'s hash is SHA-256 over entry `n − 1`'s
//! hash (32 zero bytes before the first entry) followed by entry `n`'s RFC 8785 canonical
//! JSON. Changing, removing or reordering any entry changes the hash of every entry after
//! it, so checking the chain from its start (or from a sealed segment's head) names the first
//! entry that is not as it was written.
//!
//! What is hashed is an entry as stored and as exported: `seq`, `ts` (the stored RFC 3339
//! text), `kind`, `rolloutId`, `host`, `channel` (each left out when absent) and `payload`
//! (the stored JSON, canonicalised, so an export that re-encodes it still verifies).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// An entry's chain hash.
pub type Hash = [u8; 32];

/// What the first entry of a log chains to.
pub const GENESIS: Hash = [0; 32];

/// Payloads longer than this are canonicalised from their text
/// ([`crate::crypto::canonicalize_json`]): a rollout's opening entry lists every host of its
/// set, and as a value tree one of 100,000 hosts took 63 MB. Shorter ones (nearly every
/// entry) through the value: for a record-sized payload that is ~25 % faster.
const LARGE_PAYLOAD: usize = 64 * 1024;

/// One log entry as the chain sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub seq: i64,
    pub ts: &'a str,
    pub kind: &'a str,
    pub rollout_id: Option<&'a str>,
    pub host: Option<&'a str>,
    pub channel: Option<&'a str>,
    /// The payload's JSON text.
    pub payload: &'a str,
}

impl Entry<'_> {
    /// The entry as one JSON object (the form exports carry, less their `hash`).
    pub fn to_value(&self) -> Result<Value, String> {
        let payload: Value =
            serde_json::from_str(self.payload).map_err(|err| format!("its payload is not JSON: {err}"))?;
        let mut object = Map::new();
        object.insert("seq".into(), self.seq.into());
        object.insert("ts".into(), self.ts.into());
        object.insert("kind".into(), self.kind.into());
        for (key, value) in [("rolloutId", self.rollout_id), ("host", self.host), ("channel", self.channel)] {
            if let Some(value) = value {
                object.insert(key.into(), value.into());
            }
        }
        object.insert("payload".into(), payload);
        Ok(Value::Object(object))
    }

    /// The RFC 8785 bytes of [`Entry::to_value`], written member by member without building
    /// it, the payload from its text.
    fn canonical_from_text(&self) -> Result<Vec<u8>, String> {
        use crate::crypto::{canonicalize, canonicalize_json};
        let mut out = Vec::with_capacity(self.payload.len() + 160);
        // Members in RFC 8785 order (every name is ASCII: UTF-16 order is byte order).
        let name = |out: &mut Vec<u8>, name: &str| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            out.extend_from_slice(format!("\"{name}\":").as_bytes());
        };
        for (key, text) in [("channel", self.channel), ("host", self.host), ("kind", Some(self.kind))] {
            if let Some(text) = text {
                name(&mut out, key);
                out.extend_from_slice(&canonicalize(&Value::from(text))?);
            }
        }
        name(&mut out, "payload");
        canonicalize_json(self.payload, &mut out).map_err(|err| format!("its payload is not JSON: {err}"))?;
        if let Some(rollout_id) = self.rollout_id {
            name(&mut out, "rolloutId");
            out.extend_from_slice(&canonicalize(&Value::from(rollout_id))?);
        }
        name(&mut out, "seq");
        out.extend_from_slice(&canonicalize(&Value::from(self.seq))?);
        name(&mut out, "ts");
        out.extend_from_slice(&canonicalize(&Value::from(self.ts))?);
        out.push(b'}');
        Ok(out)
    }

    /// The hash of this entry following an entry whose hash is `prev`.
    pub fn hash(&self, prev: &Hash) -> Result<Hash, String> {
        let canonical = if self.payload.len() > LARGE_PAYLOAD {
            self.canonical_from_text()?
        } else {
            crate::crypto::canonicalize(&self.to_value()?)?
        };
        let mut hasher = Sha256::new();
        hasher.update(prev);
        hasher.update(&canonical);
        Ok(hasher.finalize().into())
    }
}

/// Lower-case hex of a hash.
pub fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from its 64 hex digits.
pub fn from_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Why the chain breaks at an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// The entry is not there: the one before it is followed by a later seq, or by nothing
    /// where an entry was expected.
    #[error("entry {seq} is missing")]
    Missing { seq: i64 },
    /// The entry's stored hash is not the hash of its contents after the entry before it:
    /// it (or the hash stored with it) was changed.
    #[error("entry {seq} is not as it was written: its hash does not match its contents and the entry before it")]
    Changed { seq: i64 },
    /// The entry carries no hash (written before the chain and never hashed).
    #[error("entry {seq} has no hash")]
    Unhashed { seq: i64 },
    #[error("entry {seq} cannot be read: {why}")]
    Unreadable { seq: i64, why: String },
    /// Seqs must rise by one.
    #[error("entry {seq} comes after entry {after}")]
    OutOfOrder { seq: i64, after: i64 },
}

impl Break {
    /// The seq the break is named at.
    pub fn seq(&self) -> i64 {
        match self {
            Break::Missing { seq }
            | Break::Changed { seq }
            | Break::Unhashed { seq }
            | Break::Unreadable { seq, .. }
            | Break::OutOfOrder { seq, .. } => *seq,
        }
    }
}

/// Checks entries fed to it in seq order against their stored hashes.
#[derive(Debug, Clone)]
pub struct Verifier {
    prev: Hash,
    /// The seq the next entry must have (the first: any seq, unless the start was named).
    next: Option<i64>,
    checked: u64,
    anchored: u64,
}

impl Verifier {
    /// A chain from the log's first entry.
    pub fn from_genesis() -> Verifier {
        Verifier { prev: GENESIS, next: Some(1), checked: 0, anchored: 0 }
    }

    /// A chain that goes on after entry `after`, whose hash was `head` (a sealed segment's
    /// end).
    pub fn after(after: i64, head: Hash) -> Verifier {
        Verifier { prev: head, next: after.checked_add(1), checked: 0, anchored: 0 }
    }

    /// Checks the next entry and its stored hash.
    pub fn check(&mut self, entry: &Entry<'_>, stored: Option<&[u8]>) -> Result<(), Break> {
        if let Some(next) = self.next {
            if entry.seq > next {
                return Err(Break::Missing { seq: next });
            }
            if entry.seq < next {
                return Err(Break::OutOfOrder { seq: entry.seq, after: next - 1 });
            }
        }
        let stored = stored.ok_or(Break::Unhashed { seq: entry.seq })?;
        let hash = entry.hash(&self.prev).map_err(|why| Break::Unreadable { seq: entry.seq, why })?;
        if stored != hash.as_slice() {
            return Err(Break::Changed { seq: entry.seq });
        }
        self.prev = hash;
        self.next = entry.seq.checked_add(1);
        self.checked += 1;
        Ok(())
    }

    /// Takes the entry after a gap of compacted entries (deleted from the database; their
    /// archive not at hand) on its stored hash: the chain goes on from it, unchecked.
    pub fn anchor(&mut self, seq: i64, stored: Option<&[u8]>) -> Result<(), Break> {
        if self.next.is_some_and(|next| seq < next) {
            return Err(Break::OutOfOrder { seq, after: self.next.unwrap_or(seq) - 1 });
        }
        let stored = stored.ok_or(Break::Unhashed { seq })?;
        self.prev =
            Hash::try_from(stored).map_err(|_| Break::Unreadable { seq, why: "its hash is not 32 bytes".into() })?;
        self.next = seq.checked_add(1);
        self.anchored += 1;
        Ok(())
    }

    /// Entries taken on their stored hash after a gap ([`Verifier::anchor`]).
    pub fn anchored(&self) -> u64 {
        self.anchored
    }

    /// The hash of the last entry checked (the chain's head so far).
    pub fn head(&self) -> Hash {
        self.prev
    }

    /// Entries checked.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The seq the next entry would have.
    pub fn next_seq(&self) -> Option<i64> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, payload: &str) -> Entry<'_> {
        Entry {
            seq,
            ts: "2026-12-01T00:00:00Z",
            kind: "HostEvent",
            rollout_id: Some("stable@a1"),
            host: Some("web-1"),
            channel: None,
            payload,
        }
    }

    fn chain(payloads: &[&'static str]) -> Vec<(Entry<'static>, Hash)> {
        let mut prev = GENESIS;
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let e = entry(i as i64 + 1, p);
                prev = e.hash(&prev).unwrap();
                (e, prev)
            })
            .collect()
    }

    fn verify(entries: &[(Entry<'_>, Hash)]) -> Result<u64, Break> {
        let mut v = Verifier::from_genesis();
        for (e, h) in entries {
            v.check(e, Some(h))?;
        }
        Ok(v.checked())
    }

    #[test]
    fn a_chain_verifies_and_any_change_is_named_at_its_entry() {
        let entries = chain(&[r#"{"a":1}"#, r#"{"b":"x"}"#, r#"{"c":[1,2]}"#, r#"{"d":null}"#]);
        assert_eq!(verify(&entries), Ok(4));

        // A payload changed (one byte).
        let mut changed = entries.clone();
        changed[1].0.payload = r#"{"b":"y"}"#;
        assert_eq!(verify(&changed), Err(Break::Changed { seq: 2 }));

        // A row removed.
        let mut removed = entries.clone();
        removed.remove(2);
        assert_eq!(verify(&removed), Err(Break::Missing { seq: 3 }));

        // An entry rewritten with a hash recomputed for it: the next entry no longer follows.
        let mut forged = entries.clone();
        forged[1].0.payload = r#"{"b":"y"}"#;
        forged[1].1 = forged[1].0.hash(&forged[0].1).unwrap();
        assert_eq!(verify(&forged), Err(Break::Changed { seq: 3 }));

        // Two entries swapped.
        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        assert_eq!(verify(&swapped), Err(Break::Missing { seq: 2 }));
    }

    #[test]
    fn the_payload_is_hashed_canonically_and_absent_columns_are_left_out() {
        let a = entry(1, r#"{"b": 1, "a": [true, null]}"#);
        let b = entry(1, r#"{"a":[true,null],"b":1}"#);
        assert_eq!(a.hash(&GENESIS), b.hash(&GENESIS));
        assert_ne!(a.hash(&GENESIS), entry(2, a.payload).hash(&GENESIS));
        let value = Entry { channel: None, rollout_id: None, ..a }.to_value().unwrap();
        assert!(value.get("channel").is_none() && value.get("rolloutId").is_none(), "{value}");
        assert!(entry(1, "{not json").hash(&GENESIS).is_err());
    }

    #[test]
    fn the_hash_is_over_the_canonical_bytes_of_the_entry_as_exported() {
        // Written without building the entry's value; it must hash what exports carry.
        let full = Entry { channel: Some("stable\u{e9}"), ..entry(41, r#"{"z": "\u00e9", "a": [1.0, {"y": 2}]}"#) };
        // Over LARGE_PAYLOAD: canonicalised from its text.
        let hosts: Vec<String> = (0..5_000).map(|i| format!(r#"{{"hostname": "h{i}", "n": {i}.0}}"#)).collect();
        let large = format!(r#"{{"hostSet": [{}], "hosts": 5000}}"#, hosts.join(", "));
        assert!(large.len() > LARGE_PAYLOAD);
        let large = Entry { payload: &large, ..full };
        for e in [full, Entry { channel: None, host: None, rollout_id: None, ..full }, large] {
            let prev = [7u8; 32];
            let mut hasher = Sha256::new();
            hasher.update(prev);
            hasher.update(crate::crypto::canonicalize(&e.to_value().unwrap()).unwrap());
            let expected: Hash = hasher.finalize().into();
            assert_eq!(e.hash(&prev), Ok(expected), "{e:?}");
        }
    }

    #[test]
    fn a_chain_goes_on_after_a_sealed_head() {
        let entries = chain(&[r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        let mut v = Verifier::after(1, entries[0].1);
        assert_eq!(v.check(&entries[1].0, Some(&entries[1].1)), Ok(()));
        assert_eq!(v.check(&entries[2].0, Some(&entries[2].1)), Ok(()));
        assert_eq!(v.head(), entries[2].1);
        let mut wrong_head = Verifier::after(1, GENESIS);
        assert_eq!(wrong_head.check(&entries[1].0, Some(&entries[1].1)), Err(Break::Changed { seq: 2 }));
        assert_eq!(Verifier::from_genesis().check(&entries[0].0, None), Err(Break::Unhashed { seq: 1 }));
        assert_eq!(from_hex(&hex(&entries[2].1)), Some(entries[2].1));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn after_a_compacted_gap_the_chain_goes_on_from_the_next_entrys_stored_hash() {
        let entries = chain(&[r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#, r#"{"d":4}"#]);
        let mut v = Verifier::from_genesis();
        v.check(&entries[0].0, Some(&entries[0].1)).unwrap();
        // Entry 2 was compacted away: entry 3 is taken on its hash, entry 4 checked after it.
        assert_eq!(v.check(&entries[2].0, Some(&entries[2].1)), Err(Break::Missing { seq: 2 }));
        v.anchor(3, Some(&entries[2].1)).unwrap();
        assert_eq!(v.check(&entries[3].0, Some(&entries[3].1)), Ok(()));
        assert_eq!((v.checked(), v.anchored(), v.head()), (2, 1, entries[3].1));
        // An anchor changed behind the gap shows at the entry after it.
        let mut v = Verifier::after(1, entries[0].1);
        v.anchor(3, Some(&[7; 32])).unwrap();
        assert_eq!(v.check(&entries[3].0, Some(&entries[3].1)), Err(Break::Changed { seq: 4 }));
        assert_eq!(v.anchor(2, Some(&entries[1].1)), Err(Break::OutOfOrder { seq: 2, after: 3 }));
    }
}
