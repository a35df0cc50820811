//! Page objects. Each page splits into `find` (locating elements), `act` (what a user does)
//! and `check` (what a user would notice), so tests read as scenarios.

pub mod fleet;
pub mod hosts;
pub mod policies;
pub mod quarantines;
pub mod rollout;
pub mod shell;

use std::time::Duration;

/// How long a page may take to show what a check expects (WASM load included).
pub const WAIT: Duration = Duration::from_secs(10);
