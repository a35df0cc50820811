//! The `fleetwave` binary: a thin shell around the library (see `lib.rs` for the map).

fn main() -> std::process::ExitCode {
    backend::cli::main()
}
