//! The control plane's integration tests, one binary: API and flow tests against a real
//! server on a free port with its own temporary database, process tests of the real binary,
//! the agents' end to end on a real Nix store, and the import-cycle check. Shared helpers
//! are in `common` (a typed test app, signed agents, the log read typed).
#![allow(clippy::unwrap_used)]

mod common;

mod agent_api;
mod agents_e2e;
mod architecture;
mod bench_cli;
mod cli_signing;
mod cluster;
mod compression;
mod ctl;
mod demo_story;
mod durability;
mod feed;
mod hardening;
mod host_search;
mod log_chain;
mod log_retention;
mod manifests_api;
mod observability;
mod openapi;
mod operator_api;
mod policies_api;
mod release_diff;
mod rollout_flow;
mod serve_process;
mod simulator;
mod slow_clients;
mod system_routes;
mod timeline;
mod webhooks;
