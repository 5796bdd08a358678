//! A crash point for tests: with `TSO_FAILPOINT_EXIT_AFTER=<Operation>` (an AWS operation name,
//! e.g. `CreateKey`) or `<Operation>:<n>`, the process exits with status [`EXIT`] the moment the
//! first (the n-th) successful answer to that operation arrives, before anything else happens:
//! what a kill right after the call would leave. Only tests set it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The variable naming the operation.
pub const VARIABLE: &str = "TSO_FAILPOINT_EXIT_AFTER";
/// The exit status at the crash point.
pub const EXIT: i32 = 86;

#[derive(Clone, Debug)]
pub struct ExitAfter {
    operation: String,
    /// Successful answers to wait for; shared by every client of the process.
    remaining: Arc<AtomicUsize>,
}

impl ExitAfter {
    /// The crash point the environment asks for, if any.
    pub fn from_env() -> Option<Self> {
        let value = std::env::var(VARIABLE).ok().filter(|op| !op.is_empty())?;
        let (operation, nth) = match value.split_once(':') {
            Some((operation, n)) => match n.parse() {
                Ok(n) => (operation.to_owned(), n),
                Err(_) => {
                    // No crash point at all, so the test that set it fails loudly.
                    tracing::error!(%value, "{VARIABLE}: the count after ':' is not a number");
                    return None;
                }
            },
            None => (value, 1),
        };
        tracing::warn!(%operation, nth, "{VARIABLE} is set: this process exits right after a successful {operation} (a test's crash point)");
        Some(ExitAfter {
            operation,
            remaining: Arc::new(AtomicUsize::new(nth)),
        })
    }
}

impl Intercept for ExitAfter {
    fn name(&self) -> &'static str {
        "ExitAfter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let succeeded = context.response().is_some_and(|r| r.status().is_success());
        if succeeded
            && cfg
                .load::<Metadata>()
                .is_some_and(|m| m.name() == self.operation)
            && self.remaining.fetch_sub(1, Ordering::SeqCst) <= 1
        {
            eprintln!("fail point: exiting right after {}", self.operation);
            std::process::exit(EXIT);
        }
        Ok(())
    }
}
