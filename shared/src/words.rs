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

#[cfg(test)]
mod tests {
    use super::*;

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
