//! The `fleetwave` command line: one binary, one subcommand per job (SPEC §12).

pub mod ctl;
mod diff;
pub mod log;
pub mod operator;
mod serve;
pub mod signing;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ServeConfig;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "fleetwave", version, about = "Roll NixOS closures out to a fleet in waves")]
pub struct Cli {
    /// How log lines are written to stderr. Default: pretty.
    #[arg(long, global = true, env = "FLEETWAVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: agent and operator API, live feed and the dashboard.
    Serve(ServeConfig),
    /// Make an Ed25519 key pair (CI release key or host key).
    Keygen(signing::KeygenArgs),
    /// Sign a JSON document (RFC 8785 canonical form) into FILE.sig.
    Sign(signing::SignArgs),
    /// Sign a fleet document and one rollout manifest per channel (what CI runs).
    Release(signing::ReleaseArgs),
    /// The whole system on embedded defaults: demo fleet, simulated agents, dashboard.
    Demo(crate::demo::DemoArgs),
    /// Run simulated agents against a control plane (demo, tests, load).
    Simulate(simulate::SimulateArgs),
    /// Benchmarks: Fleetwave at fleet scale next to this machine's ceilings.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Manage operators and viewers.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// The event log: verify its hash chain, export entries for auditors.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Operate the fleet from a terminal through the API: status, rollouts, actions, watch.
    Ctl(ctl::CtlArgs),
    /// Print shell completions for `fleetwave` (e.g. `fleetwave completions bash >
    /// /etc/bash_completion.d/fleetwave`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Entry point of the binary: parse, set up logging, run the subcommand, map errors to an
/// exit code with the whole error chain printed.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        // Its exit codes say what happened (SPEC §18).
        Command::Ctl(args) => return ctl::main(args),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "fleetwave", &mut std::io::stdout());
            Ok(())
        }
        Command::Serve(config) => run_async(serve::run(config)),
        Command::Keygen(args) => signing::keygen(args),
        Command::Sign(args) => signing::sign(args),
        Command::Release(args) => signing::release(args),
        Command::Operator(command) => run_async(operator::run(command)),
        Command::Log(command) => run_async(log::run(command)),
        Command::Demo(args) => run_async(crate::demo::run(args)),
        Command::Simulate(args) => run_async(simulate::run(args)),
        Command::Bench(command) => run_async(crate::bench::run(command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run_async<T>(job: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => anyhow::bail!("cannot start the async runtime: {err}"),
    };
    runtime.block_on(job)
}
