//! Times as people say them, for the dashboard and `fleetwave ctl` alike.

use chrono::{DateTime, Utc};

/// A span of time: "40 s", "12 min", "5 h 12 min", "2 d 3 h".
pub fn span(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} d {} h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// `at` seen from `now`: "3 min ago", "in 2 h 5 min".
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = now.signed_duration_since(at).num_seconds();
    let span = span(seconds.unsigned_abs());
    if seconds >= 0 { format!("{span} ago") } else { format!("in {span}") }
}

/// `text` with each Nix store path's hash elided (`/nix/store/df59…32 chars…-broken-nginx`
/// → `…-broken-nginx`), as people name closures.
pub fn short_store_paths(text: &str) -> String {
    const STORE: &str = "/nix/store/";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(STORE) {
        out.push_str(&rest[..at]);
        let after = &rest[at + STORE.len()..];
        let hash = after.as_bytes().iter().take_while(|b| b.is_ascii_alphanumeric()).count();
        if hash == 32 && after.as_bytes().get(32) == Some(&b'-') {
            out.push('…');
            rest = &after[32..];
        } else {
            out.push_str(STORE);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_read_by_their_names() {
        let hash = "df594d71a145abd0123456789abcdefg";
        assert_eq!(
            short_store_paths(&format!("quarantined: /nix/store/{hash}-broken-nginx on stable")),
            "quarantined: …-broken-nginx on stable"
        );
        assert_eq!(short_store_paths("/nix/store/short-x and /opt/y"), "/nix/store/short-x and /opt/y");
        assert_eq!(short_store_paths("/nix/store/"), "/nix/store/");
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(span(40), "40 s");
        assert_eq!(span(12 * 60 + 5), "12 min");
        assert_eq!(span(5 * 3600 + 12 * 60), "5 h 12 min");
        assert_eq!(span(2 * 86_400 + 3 * 3600), "2 d 3 h");
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(2);
        assert_eq!(relative(now - chrono::Duration::seconds(42), now), "42 s ago");
        assert_eq!(relative(now + chrono::Duration::minutes(125), now), "in 2 h 5 min");
        assert_eq!(relative(now - chrono::Duration::hours(50), now), "2 d 2 h ago");
    }
}
