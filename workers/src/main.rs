//! `herald-worker`: the worker process of production mode. It connects to the store and RabbitMQ and runs
//! the fan-out and delivery roles (both by default) until SIGTERM or Ctrl-C, or until one of its stages
//! fails (the process then exits non-zero naming it), with its admin listener (`admin.bind`, default
//! 127.0.0.1:9465: `/metrics`, `/healthz`, `/readyz`).

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, FromArgMatches, Parser};

/// Herald's worker: consumes events from RabbitMQ, fans them out to subscribed webhooks and delivers them.
/// Run as many as you like, on as many machines: they compete for work.
#[derive(Debug, Parser)]
#[command(name = "herald-worker", version)]
struct Args {
    /// Folder holding default.toml and {HERALD_ENV}.toml; built-in defaults apply where files are missing.
    #[arg(long, env = "HERALD_CONFIG_DIR", default_value = "config", value_name = "DIR")]
    config_dir: PathBuf,
    /// Which stages to run: fan-out (events into deliveries), deliver (HTTP attempts and the retry
    /// scheduler), or all.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// Deliveries in flight at once, instead of delivery.concurrency (the RabbitMQ prefetch is twice this).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    All,
    Fanout,
    Deliver,
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if matches!(
        matches.value_source("config_dir"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    ) && let Err(error) = herald::config::check_config_dir_flag(&args.config_dir)
    {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    herald::install_tls_provider();
    let mut settings = herald::config::Settings::load(&args.config_dir)?;
    if let Some(concurrency) = args.concurrency {
        settings.delivery.concurrency = usize::from(concurrency);
    }
    let _trace_export = herald::telemetry::init(&settings.log, &settings.telemetry);
    if settings.mode() != herald::config::Mode::Production {
        anyhow::bail!(
            "configuration: queue.url: herald-worker needs RabbitMQ (set HERALD__QUEUE__URL); in embedded mode `herald serve` runs the workers itself"
        );
    }
    let metrics = herald::telemetry::metrics::install("worker");
    let admin_bind = settings.admin.bind.unwrap_or(herald::config::AdminSettings::WORKER_BIND);
    let admin = herald::http::admin::bind(admin_bind).await?;
    let admin_address = admin.local_addr()?;
    // One owner of every background task: a stage that fails stops the process and is the exit error.
    let stages =
        herald::stages::Stages::new(herald::shutdown::on_signal(), settings.server.shutdown_grace.get());
    let services = herald::services::Services::connect(settings, &stages).await?;
    let queue = services.queue.clone();
    let readiness = herald::readiness::Readiness::new(services.store.clone(), queue.clone());
    let roles = match args.role {
        Role::All => herald::worker::Roles::ALL,
        Role::Fanout => herald::worker::Roles { fanout: true, deliver: false },
        Role::Deliver => herald::worker::Roles { fanout: false, deliver: true },
    };
    let supervised = stages.clone();
    readiness.add_check("stages", std::sync::Arc::new(move || supervised.health()));
    let sampler = herald::telemetry::sampler::Sampler {
        store: services.store.clone(),
        queue: queue.clone(),
        readiness: readiness.clone(),
        handle: metrics.clone(),
        outbox: false,
    };
    stages.spawn("metrics-sampler", sampler.run(stages.shutdown_token()));
    let admin =
        tokio::spawn(herald::http::admin::serve_admin(admin, metrics, readiness, stages.shutdown_token()));
    tracing::info!(admin = %admin_address, "admin listener up");
    herald::worker::start(services, roles, &stages).await?;
    let stopped = stages.wait().await;
    drop(admin.await);
    queue.close().await;
    stopped?;
    tracing::info!("worker stopped");
    Ok(())
}
