use std::process::ExitCode;

use clap::Parser;

/// The operator holds thousands of small objects (a tenant is some hundred allocations) for
/// its whole life: glibc's malloc spends 16 bytes and more on each and keeps freed memory in
/// per-thread arenas. See `bench/RESULTS.md` for what mimalloc saves.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tenant_storage_operator::cli::Cli::parse();
    match tenant_storage_operator::cli::execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
