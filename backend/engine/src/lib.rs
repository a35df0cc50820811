//! Fleetwave's pure core. Nothing in this crate does IO, reads a clock or draws randomness:
//! time comes in as `now`, and everything that must happen outside comes back as
//! [`effect::Effect`] values for the reducer's applier.
//!
//! - [`crypto`]: canonical JSON, hashes and keys (a leaf).
//! - [`chain`]: the event log's hash chain and its verification (SPEC §16).
//! - [`verify`]: signed inputs — Ed25519 over RFC 8785 canonical JSON, trust slots,
//!   freshness, consistency (SPEC §2).
//! - [`fleet`]: the verified fleet document and the indexes the planner reads.
//! - [`window`]: maintenance windows — weekly wall-clock windows in IANA time zones (SPEC §17).
//! - [`host`]: the host state machine (SPEC §3).
//! - [`rollout`]: the rollout state machine (SPEC §4).
//! - [`records`]: one rollout's host records, with the brief of each that passes read.
//! - [`planner`]: `plan_next` (every rollout), `plan_rollouts` (chosen rollouts) and the gates
//!   (SPEC §5).
//! - [`state`]: the in-memory fleet state and the pure operations that change it.
//! - [`controller`]: what each reducer input does — agent events, heartbeats (recovery
//!   synthesis, presence), manifest sets, operator actions, quarantines, plan passes — and
//!   the writes it leaves for the applier.
//! - [`sign`], [`release`]: what CI does — sign canonical JSON, project a fleet into manifests.

pub mod chain;
pub mod controller;
pub mod crypto;
pub mod effect;
pub mod fleet;
pub mod host;
pub mod planner;
pub mod records;
pub mod release;
pub mod rollout;
pub mod sign;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;
pub mod window;
