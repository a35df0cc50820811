//! Validated names: hostnames, channels, rollout ids and closures. Each parses from its wire
//! string and rejects anything outside its grammar, so later code never sees a bad id (and
//! an id can never smuggle a path separator or a control character).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a valid {}: {}", self.value.escape_debug(), self.kind, self.rule)
    }
}

impl std::error::Error for IdError {}

/// `[a-z0-9][a-z0-9-_.]{0,62}` (SPEC §1).
fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..].iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(compact_str::CompactString);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                if is_name(&s) {
                    Ok($name(compact_str::CompactString::from(s.as_str())))
                } else {
                    Err(IdError { kind: $kind, value: s, rule: "1–63 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit" })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.into_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A host, by hostname.
    Hostname,
    "hostname"
);
name_type!(
    /// A named stream of releases (`stable`, `canary`, …).
    Channel,
    "channel name"
);

/// `{channel}@{ref}`, where `ref` is the release's commit in lower-case hex (1–64 digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct RolloutId(String);

impl RolloutId {
    pub fn new(channel: &Channel, channel_ref: &str) -> Result<Self, IdError> {
        Self::parse(format!("{channel}@{channel_ref}"))
    }

    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let valid = match s.split_once('@') {
            Some((channel, r)) => is_name(channel) && is_commit(r),
            None => false,
        };
        if valid {
            Ok(RolloutId(s))
        } else {
            Err(IdError { kind: "rollout id", value: s, rule: "`{channel}@{ref}` with ref in lower-case hex" })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn channel(&self) -> &str {
        self.0.split_once('@').map_or("", |(c, _)| c)
    }

    pub fn channel_ref(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, r)| r)
    }
}

/// A commit id: 1–64 lower-case hex digits.
pub fn is_commit(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TryFrom<String> for RolloutId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl std::str::FromStr for RolloutId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<RolloutId> for String {
    fn from(v: RolloutId) -> String {
        v.0
    }
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opaque store path such as `/nix/store/abc…-nixos-system-web1-24.11`, compared byte for
/// byte. Non-empty, at most 4096 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct Closure(String);

impl Closure {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if !s.is_empty() && s.len() <= 4096 && !s.chars().any(char::is_control) {
            Ok(Closure(s))
        } else {
            Err(IdError { kind: "closure", value: s, rule: "1–4096 bytes without control characters" })
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The closure as people name it: a store path's name after its hash
    /// (`/nix/store/df59…-broken-nginx` → `…-broken-nginx`); anything else whole.
    pub fn short(&self) -> std::borrow::Cow<'_, str> {
        let name = self.0.strip_prefix("/nix/store/").and_then(|rest| rest.split_once('-'));
        match name {
            Some((hash, name)) if hash.len() == 32 && !name.is_empty() => format!("…-{name}").into(),
            _ => self.0.as_str().into(),
        }
    }
}

impl TryFrom<String> for Closure {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl std::str::FromStr for Closure {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<Closure> for String {
    fn from(v: Closure) -> String {
        v.0
    }
}

impl fmt::Display for Closure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_grammar() {
        for ok in ["web1", "0db", "a", "db-1.eu_west", &"a".repeat(63)] {
            assert!(Hostname::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web1", "-web", ".x", "web/1", "../etc", "a b", &"a".repeat(64), "wéb"] {
            assert!(Hostname::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rollout_ids_are_channel_at_lower_hex() {
        let id = RolloutId::parse("stable@0a1b2c").unwrap();
        assert_eq!((id.channel(), id.channel_ref()), ("stable", "0a1b2c"));
        for bad in ["stable", "stable@", "@abc", "stable@ABC", "stable@xyz", "st/able@abc", "a@b@c"] {
            assert!(RolloutId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_reject_bad_strings_when_deserialised() {
        assert!(serde_json::from_str::<Hostname>("\"../x\"").is_err());
        assert!(serde_json::from_str::<Closure>("\"\"").is_err());
        assert!(serde_json::from_str::<Closure>("\"/nix/store/a\\nb\"").is_err());
        let c: Closure = serde_json::from_str("\"/nix/store/abc-system\"").unwrap();
        assert_eq!(c.as_str(), "/nix/store/abc-system");
    }
}
