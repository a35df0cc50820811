//! Browser tests for the Fleetwave dashboard.
//!
//! [`harness`] starts what a test needs and tears it down even when the test fails: the real
//! control plane (in-process, port 0, temporary DB, the `dist/` that the test command built),
//! Debian's chromedriver on a free port, and headless Chromium with a fresh profile.
//! [`pages`] holds page objects split into find / act / check.
//!
//! Nothing here builds anything: run `trunk build --release` first (the README's test command
//! does).

pub mod harness;
pub mod pages;

pub use harness::{
    Replicas, ServerControl, Session, browser_test, cluster_browser_test, demo_browser_test, fleet_browser_test,
    release,
};
