//! Maintenance windows (SPEC §17): a weekly wall-clock window in an IANA time zone.
//!
//! A window is open at an instant when the wall clock in its zone reads a listed day and a
//! time in `[start, end)`. That is what daylight-saving changes need: on the night the clocks
//! skip an hour, a window of 02:00–05:00 opens when the clocks read 03:00 (the skipped hour
//! never shows on a wall clock) and a window inside the skipped hour does not open that
//! night; on the night they repeat an hour, a window inside it is open both times. Pure:
//! `now` is an argument, the zone database is compiled in (chrono-tz).

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use shared::manifest::MaintenanceWindow;

/// Day names as a window lists them, Monday first.
pub const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// How far ahead [`Window::next_open`] looks: two weeks cover every weekly window, even one
/// whose only day falls into a skipped hour once.
const LOOKAHEAD_DAYS: u64 = 15;

const MINUTES_PER_DAY: u32 = 24 * 60;

/// A verified maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    /// Indexed by days from Monday.
    days: [bool; 7],
    /// Minutes after midnight, wall clock; `start < end <= 24:00`.
    start: u32,
    end: u32,
    pub timezone: Tz,
}

impl Window {
    /// Checks a window as the fleet writes it; errors name the field under `field`
    /// (`maintenanceWindows[0]`).
    pub fn parse(window: &MaintenanceWindow, field: &str) -> Result<Window, String> {
        let timezone: Tz = window
            .timezone
            .parse()
            .map_err(|_| format!("{field}.timezone: `{}` is not an IANA time zone", window.timezone))?;
        if window.days.is_empty() {
            return Err(format!("{field}.days: lists no day"));
        }
        let mut days = [false; 7];
        for (i, day) in window.days.iter().enumerate() {
            let index = DAY_NAMES
                .iter()
                .position(|d| d == day)
                .ok_or_else(|| format!("{field}.days[{i}]: `{day}` is not one of {}", DAY_NAMES.join(", ")))?;
            if std::mem::replace(&mut days[index], true) {
                return Err(format!("{field}.days[{i}]: `{day}` is listed twice"));
            }
        }
        let start = parse_time(&window.start, false)
            .ok_or_else(|| format!("{field}.start: `{}` is not a time of day as HH:MM (00:00–23:59)", window.start))?;
        let end = parse_time(&window.end, true)
            .ok_or_else(|| format!("{field}.end: `{}` is not a time of day as HH:MM (00:01–24:00)", window.end))?;
        if end <= start {
            return Err(format!(
                "{field}.end: {} is not after start {} (a window ends on the day it starts; use 24:00 for midnight)",
                window.end, window.start
            ));
        }
        Ok(Window { name: window.name.clone(), days, start, end, timezone })
    }

    /// Whether the window is open at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.timezone);
        let minute = local.hour() * 60 + local.minute();
        self.days[local.weekday().num_days_from_monday() as usize] && (self.start..self.end).contains(&minute)
    }

    /// When the window is next open: `now` while it is, else the first instant after `now` at
    /// which it opens (within two weeks; `None` only for a window whose every day falls into
    /// skipped hours, which no real zone has).
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(now) {
            return Some(now);
        }
        let today = now.with_timezone(&self.timezone).date_naive();
        (0..=LOOKAHEAD_DAYS)
            .filter_map(|d| today.checked_add_days(Days::new(d)))
            .filter(|date| self.days[date.weekday().num_days_from_monday() as usize])
            .flat_map(|date| self.openings_on(date))
            .flatten()
            .find(|at| *at > now)
    }

    /// The instants of `date` at which the window opens, earliest first: when the wall clock
    /// reads `start` (twice on a night the clocks repeat it), or where the clocks skip
    /// `start`, the first minute after it that the wall clock shows (if before `end`).
    fn openings_on(&self, date: NaiveDate) -> [Option<DateTime<Utc>>; 2] {
        let found = (self.start..self.end.min(MINUTES_PER_DAY)).find_map(|minute| {
            let time = NaiveTime::from_hms_opt(minute / 60, minute % 60, 0)?;
            match self.timezone.from_local_datetime(&date.and_time(time)) {
                LocalResult::Single(at) => Some([Some(at.with_timezone(&Utc)), None]),
                LocalResult::Ambiguous(first, second) => {
                    Some([Some(first.with_timezone(&Utc)), Some(second.with_timezone(&Utc))])
                }
                LocalResult::None => None,
            }
        });
        found.unwrap_or([None, None])
    }

    /// `at` as the window's zone shows it: "Tue 02:00".
    pub fn local_label(&self, at: DateTime<Utc>) -> String {
        let local = at.with_timezone(&self.timezone);
        format!("{} {:02}:{:02}", day_name(local.weekday()), local.hour(), local.minute())
    }
}

fn day_name(day: Weekday) -> &'static str {
    DAY_NAMES[day.num_days_from_monday() as usize]
}

/// `"HH:MM"` as minutes after midnight; `"24:00"` only where `end_of_day` allows it.
fn parse_time(text: &str, end_of_day: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end_of_day => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}
