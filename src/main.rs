use std::process::ExitCode;

use clap::Parser;

/// The operator keeps thousands of small long-lived objects (a tenant each) among the short
/// lived ones of every reconcile: glibc's malloc fragments its heap around them, so the process
/// grew by some kilobytes a tenant more than it held. jemalloc keeps sizes apart and returns
/// freed pages from a background thread. See `bench/RESULTS.md`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Freed pages go back within a second (jemalloc keeps them ten by default): a reconcile's
/// garbage is not counted against the pod's memory while the next ones run.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
