//! `fleetwave-agent`: follows the control plane on a NixOS host (SPEC §14).
//!
//! - `config` — the configuration file, checked when loaded (errors name the field), and the
//!   paths the agent uses under `--root`.
//! - `cli` — `keygen` (the host key, printed for fleet.json) and `check` (what `run` would do).
//! - `intent` — the job and the next event seq, written atomically before they are used.
//! - `machine` — the agent's logic, sans IO: inputs in, actions out (the simulator drives it
//!   too).
//! - `run` — the real driver: the machine with HTTP (`transport`), the Nix activator
//!   (`activator`, programs run by `command`) and real probes (`probes`).
//! - `request` — signing requests (SPEC §9.1), never twice alike in one second; the simulator
//!   signs with it too.
//!
//! The agent depends on `shared` (wire types) and the pure `engine` (key format, request
//! hashing), never on a server crate.

pub mod activator;
pub mod cli;
pub mod command;
pub mod config;
pub mod intent;
pub mod machine;
pub mod probes;
pub mod request;
pub mod run;
pub mod testkit;
pub mod transport;
