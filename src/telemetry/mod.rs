//! Logs, metrics and the health/metrics HTTP endpoint.

mod metrics;
mod server;

pub use metrics::{
    AwsCallLabels, Metrics, PollLabels, RegionLabels, SettingLabels, TenantLabels, is_mutating,
};
pub use server::{Health, serve};

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,kube_runtime=warn,aws_config=warn,aws_smithy_runtime=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Colour codes only for a terminal: in a pod's log or a file they are noise.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}
