//! Wire types of the Fleetwave API, shared by the control plane (`backend`) and the
//! dashboard (`frontend`).
//!
//! This crate must stay wasm-clean: it depends on serde only, does no IO and reads no
//! clock. Field names on the wire are camelCase (SPEC §9).

pub mod api;

pub use api::{ApiError, ApiErrorBody, VersionInfo};
