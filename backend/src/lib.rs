//! Fleetwave control plane.
//!
//! Map of the modules:
//! - [`cli`]: the `fleetwave` subcommands (clap).
//! - [`config`]: `fleetwave serve`'s configuration (flags with `FLEETWAVE_*` twins), HTTP limits.
//! - [`server`]: builds the app (DB, router, listener, the leader's services or the election)
//!   and serves it until the shutdown token fires.
//! - [`cluster`]: several replicas on PostgreSQL — leader election with epoch fencing, and the
//!   live feed of every replica read from the log.
//! - [`http`]: the axum router, its middleware stack, the error type every route answers with.
//! - [`reducer`]: the single task that changes rollout state; group commit; replies after commit.
//! - [`feed`]: committed event-log entries → SSE, with `Last-Event-ID` resume.
//! - [`views`]: engine state → API bodies.
//! - [`demo`]: `fleetwave demo` — server, signed demo fleet, simulator and release cadence.
//! - [`bench`]: `fleetwave bench run` — Fleetwave at fleet scale next to this machine's ceilings
//!   (raw SQLite or PostgreSQL writes, a bare signed HTTP route); `bench ceilings` measures the
//!   ceilings alone.
//! - [`sim`]: the fleet simulator (signed agents with failure injection; also the load generator).
//! - [`metrics`]: Prometheus exposition.
//! - [`manifests`]: the upload verification, the `--manifests-dir` poller and its layout.
//! - [`trust`]: trust.json and the trust roots in force.
//! - [`db`]: the database behind one interface (`Store`: SQLite or PostgreSQL), its migrations,
//!   the queries, and the reducer's `Writer` (a connection of its own on a thread of its own).
//! - [`signatures`]: replay protection of signed agent requests, across restarts and leaders.
//! - [`telemetry`]: tracing setup (pretty for terminals, JSON for log shippers).
//! - [`shutdown`]: turns Ctrl-C / SIGTERM into the one `CancellationToken` every task watches.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod db;
pub mod demo;
pub mod feed;
pub mod history;
pub mod http;
pub mod manifests;
pub mod metrics;
pub mod reducer;
pub mod sealer;
pub mod server;
pub mod shutdown;
pub mod signatures;
pub mod sim;
pub mod telemetry;
pub mod trust;
pub mod views;
pub mod webhooks;
