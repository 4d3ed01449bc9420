//! `herald-bench`: Herald's benchmark tool (the command line). It drives a running Herald through its
//! API, receives the deliveries in-process, and reports ingest rate, delivery throughput against a raw
//! HTTP ceiling, latency percentiles, losses, duplicates, retries, Herald's CPU and memory, and the CPU
//! per event of Herald, PostgreSQL, RabbitMQ and the whole machine but the bench.
//!
//! Exit status: 0 when nothing was lost, every signature was valid and every event was accepted; 1 when
//! the run completed but one of those failed; 2 when the run could not be made (Herald unreachable, …).

#![forbid(unsafe_code)]

mod api;
mod ceiling;
mod cpu;
mod driver;
mod procstat;
mod receiver;
mod report;
mod run;
mod scenario;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

use crate::scenario::Scenario;

const AFTER_HELP: &str = "\
Herald must accept plain-http deliveries to 127.0.0.1 (the bench's receiver):
  HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true herald serve
For --scenario retry, also give it a short retry schedule:
  HERALD__DELIVERY__RETRY_SCHEDULE=100ms,200ms,400ms,800ms HERALD__DELIVERY__SCHEDULER_INTERVAL=100ms
Use an organization of its own, so no other webhook receives the events:
  herald bootstrap --org bench --email bench@example.com   (prints its admin key)

Exit status: 0 all delivered with valid signatures; 1 something lost, badly signed or refused; 2 error.";

/// Benchmark a running Herald: send events, receive and verify the deliveries, report the numbers.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to measure.
    #[arg(long, value_enum)]
    pub scenario: Scenario,

    /// Herald's API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub url: String,

    /// An admin API key of Herald (`herald serve` prints one on first start).
    #[arg(long, env = "HERALD_KEY", hide_env_values = true, value_name = "KEY")]
    pub key: String,

    /// Events to send (overrides the scenario's count; with a rate, overrides rate × duration).
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,

    /// Event sends in flight at a time (closed-loop scenarios: single, fanout, retry), and the raw
    /// ceiling's concurrency for them; for paced, the most sends in flight (the next one waits).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub concurrency: usize,

    /// Send at this fixed rate (open loop) instead; steady, noisy and paced have one by default.
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    pub rate: Option<f64>,

    /// How long to send at the rate, in seconds (needs a rate).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Herald processes to measure (CPU, peak RSS); default: every process named herald or herald-worker
    /// (when several are named herald, only the one listening on --url's port).
    #[arg(long = "pid", value_name = "PID", num_args = 1..)]
    pub pids: Vec<u32>,

    /// Service groups whose CPU per event is reported beside Herald's, comma-separated (default: both,
    /// those found). The machine's busy CPU but the bench's is reported in any case.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "postgres,rabbitmq|none")]
    pub services: Vec<cpu::ServiceArg>,

    /// Seconds to wait for the deliveries after the last event was sent; what has not arrived then is lost.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub deadline: u64,

    /// How Herald runs (e.g. "embedded" or "postgres+rabbitmq"), copied into the report.
    #[arg(long, default_value = "unlabelled", value_name = "TEXT")]
    pub mode_label: String,

    /// Posts in flight during the raw ceiling of closed-loop scenarios (default: --concurrency). Herald
    /// itself delivers with delivery.concurrency (64 by default) in flight per worker process.
    #[arg(long, value_name = "N")]
    pub ceiling_concurrency: Option<usize>,

    /// Skip the raw HTTP ceiling measurement.
    #[arg(long)]
    pub skip_ceiling: bool,

    /// Leave the webhooks (and so their delivery logs) in place after the run, for inspection. Later
    /// runs in the same organization will then also deliver to them: delete them first.
    #[arg(long)]
    pub keep_webhooks: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    herald::install_tls_provider();
    match run::run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "herald-bench",
            "--scenario",
            "noisy",
            "--key",
            "k",
            "--pid",
            "1",
            "2",
            "--pid",
            "3",
            "--skip-ceiling",
        ])
        .expect("valid arguments");
        assert_eq!(
            (cli.scenario, cli.pids, cli.concurrency, cli.deadline),
            (Scenario::Noisy, vec![1, 2, 3], 32, 120)
        );
        assert!(cli.skip_ceiling && cli.services.is_empty());
        let paced = ["herald-bench", "--scenario", "paced", "--key", "k", "--services", "rabbitmq,postgres"];
        let cli = Cli::try_parse_from(paced).expect("valid arguments");
        assert_eq!(cli.scenario, Scenario::Paced);
        assert_eq!(cli.services, vec![cpu::ServiceArg::Rabbitmq, cpu::ServiceArg::Postgres]);
        let none = ["herald-bench", "--scenario", "paced", "--key", "k", "--services", "none"];
        assert_eq!(Cli::try_parse_from(none).expect("valid").services, vec![cpu::ServiceArg::None]);
    }
}
