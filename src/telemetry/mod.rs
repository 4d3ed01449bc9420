//! Telemetry: logs (here), metrics ([`metrics`]: names, the Prometheus recorder) and the gauges sampled
//! every 5 s ([`sampler`], with the process metrics of `process`).
//!
//! Logging: human-readable lines by default, one JSON object per line with `log.format = "json"`.
//! Logs go to standard error, so standard output carries only what a command prints on purpose (such as
//! the key `herald bootstrap` creates). `RUST_LOG`, when set, overrides `log.level`.

pub mod metrics;
mod process;
pub mod sampler;

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; later calls (tests) are ignored.
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr))
            .try_init(),
    };
    drop(result);
}
