//! The `fleetwave-agent` binary: a thin shell around the library.

fn main() -> std::process::ExitCode {
    agent::cli::main()
}
