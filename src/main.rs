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

/// A reconcile runs its stages one inside the other (tenant, storage, replica, their cloud
/// calls); unoptimised builds keep every level's locals on the stack, more than the 2 MiB
/// tokio gives a worker by default.
const WORKER_STACK: usize = 8 << 20;

fn main() -> ExitCode {
    let cli = tenant_storage_operator::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK)
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(tenant_storage_operator::cli::execute(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
