//! The `fleetwave` command line: one binary, one subcommand per job (SPEC §12).

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use serve::ServeConfig;

use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "fleetwave",
    version,
    about = "Roll NixOS closures out to a fleet in waves"
)]
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
}

/// Entry point of the binary: parse, set up logging, run the subcommand, map errors to an
/// exit code with the whole error chain printed.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(config) => serve::run(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
