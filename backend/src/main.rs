//! The `fleetwave` binary: a thin shell around the library (see `lib.rs` for the map).

/// mimalloc instead of glibc's allocator: the server allocates on the HTTP threads and frees
/// on the reducer's and the writer's; glibc's per-thread arenas grew the resident set by a
/// third under that pattern (BENCHMARKS.md, issue 7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    backend::cli::main()
}
