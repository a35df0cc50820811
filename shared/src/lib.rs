//! Wire types of the Fleetwave API, shared by the control plane (`backend`) and the
//! dashboard (`frontend`).
//!
//! This crate must stay wasm-clean: it depends on serde and chrono (without its clock) only,
//! does no IO and reads no clock. Field names on the wire are camelCase (SPEC §9).

pub mod agent;
pub mod api;
pub mod ids;
pub mod limits;
pub mod log;
pub mod manifest;
pub mod policy;
pub mod state;
pub mod words;

pub use api::{ApiError, ApiErrorBody, ErrorCode, VersionInfo};
pub use ids::{Channel, Closure, Hostname, IdError, RolloutId};
