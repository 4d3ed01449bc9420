//! Telemetry: logs (here), metrics ([`metrics`]: names, the Prometheus recorder) and the gauges sampled
//! every 5 s ([`sampler`], with the process metrics of `process`).
//!
//! Logging: human-readable lines by default, one JSON object per line with `log.format = "json"`.
//! Logs go to standard error, so standard output carries only what a command prints on purpose (such as
//! the key `herald bootstrap` creates). `RUST_LOG`, when set, overrides `log.level`. Beside the log layer,
//! the trace exporter's layer when `telemetry.otlp_endpoint` is set (`telemetry_otlp`), with its own filter.

pub mod metrics;
mod process;
pub mod sampler;

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};
pub use crate::telemetry_otlp::TraceExport;

/// `log.level` with lapin silenced unless a directive names it: lapin logs every failed connection
/// attempt at ERROR (several lines each), while Herald reports a broker outage itself, once when it starts
/// and once when it ends (`outage.rs`), and the supervisor's own warnings carry the errors that matter.
fn quiet_lapin(level: &str) -> String {
    if level.contains("lapin") { level.to_string() } else { format!("{level},lapin=off") }
}

/// Installs the global subscriber; later calls (tests) are ignored. Hold the returned [`TraceExport`]
/// until the process ends: dropping it flushes the last traces.
pub fn init(settings: &LogSettings, telemetry: &TelemetrySettings) -> TraceExport {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(quiet_lapin(&settings.level)));
    let logs = match settings.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (traces, export) = crate::telemetry_otlp::layer(telemetry);
    let layers: Vec<_> = std::iter::once(logs).chain(traces).collect();
    if tracing_subscriber::registry().with(layers).try_init().is_ok() {
        export.report();
    }
    export
}
