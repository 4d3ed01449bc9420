//! The `herald` command line: `serve`, `migrate`, `bootstrap`, `gen-key`, `dlq`, `recover`, `events`,
//! `retention`. Parsing lives here (not in `main.rs`) so it can be tested; each command loads the
//! configuration, starts logging and calls the library.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

mod drain;
mod recover;
mod retention;

use crate::{
    app::{self, App},
    config::{AdminSettings, Settings},
    crypto::SecretBox,
    services::Services,
    stages::Stages,
    store, telemetry,
};

/// Herald: a webhook dispatcher. Applications send events; Herald signs and delivers them to subscribed
/// endpoints with retries, a dead-letter queue and replay.
#[derive(Debug, Parser)]
#[command(name = "herald", version, propagate_version = true)]
pub struct Cli {
    /// Folder holding default.toml and {HERALD_ENV}.toml; built-in defaults apply where files are missing.
    #[arg(long, global = true, env = "HERALD_CONFIG_DIR", default_value = "config", value_name = "DIR")]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API. In embedded mode (no queue.url) the delivery workers run in this process too.
    /// On an empty database, creates a first organization and admin and prints the admin's API key.
    Serve {
        /// Address to listen on, instead of server.bind.
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
    /// Apply the database migrations and exit (serve, herald-worker and bootstrap also apply them; the
    /// dlq commands only check that the schema is current).
    Migrate,
    /// Create an organization and its first admin user, and print that admin's new API key once.
    Bootstrap {
        /// Name of the new organization.
        #[arg(long, value_name = "NAME")]
        org: String,
        /// Email address of its first admin.
        #[arg(long, value_name = "EMAIL")]
        email: String,
    },
    /// Create a new API key for an existing admin (a lost key), and print it once. Older keys keep
    /// working until revoked.
    AdminKey {
        /// Name of the organization.
        #[arg(long, value_name = "NAME")]
        org: String,
        /// Email address of one of its admins.
        #[arg(long, value_name = "EMAIL")]
        email: String,
    },
    /// Print a new encryption key for secrets.keys (ID:BASE64).
    GenKey,
    /// Print the OpenAPI 3.1 document of the API (as served at /api/v1/openapi.json).
    Openapi,
    /// Inspect and replay the dead-letter queue (deliveries that ran out of attempts).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Send a webhook every event of a window it has not received (recover since), and follow the
    /// recovery until it finishes. The running workers do the work.
    Recover(recover::RecoverArgs),
    /// Act on one event.
    Events {
        #[command(subcommand)]
        command: recover::EventsCommand,
    },
    /// Remove data older than the retention windows (what `herald serve` does every
    /// retention.interval), or count it with --dry-run.
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead deliveries, most recent first.
    List {
        #[command(flatten)]
        scope: DlqScope,
        /// How many to show at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Make dead deliveries due again; running workers deliver them (one more attempt each). Name the
    /// scope: --org, --webhook, or --all for every organization's.
    #[command(group(clap::ArgGroup::new("scope").required(true).multiple(true).args(["organization", "webhook", "all"])))]
    Replay {
        #[command(flatten)]
        scope: DlqScope,
        /// Every organization's dead deliveries (instead of --org or --webhook).
        #[arg(long, conflicts_with_all = ["organization", "webhook"])]
        all: bool,
        /// Only count the deliveries that would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only deliveries created at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only deliveries created at or before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Empty RabbitMQ's dead-letter queue (production mode): fan-out events there get their deliveries
    /// created (as `herald events redeliver`); delivery tasks are removed (their deliveries are in the
    /// store, which hands them over again); messages this version cannot read are left in the queue.
    Drain {
        /// Only show what is in the queue and what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct DlqScope {
    /// Only this organization's deliveries.
    #[arg(long = "org", value_name = "ORGANIZATION_ID")]
    organization: Option<uuid::Uuid>,
    /// Only this webhook's deliveries.
    #[arg(long, value_name = "WEBHOOK_ID")]
    webhook: Option<uuid::Uuid>,
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::install_tls_provider();
    match cli.command {
        Command::GenKey => return print_line(&SecretBox::generate_key_text()),
        Command::Openapi => return print_line(crate::http::openapi::document().trim_end()),
        _ => {}
    }
    let settings = Settings::load(&cli.config_dir)?;
    let _trace_export = telemetry::init(&settings.log, &settings.telemetry);
    if matches!(cli.command, Command::Serve { .. }) {
        telemetry::metrics::install("api");
    }
    match cli.command {
        Command::Serve { bind } => serve(settings, bind).await,
        Command::Migrate => {
            store::connect(&settings).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Bootstrap { org, email } => {
            validate_bootstrap(&org, &email)?;
            let store = store::connect(&settings).await?;
            let (created, key) = app::bootstrap(&store, &org, &email, false)
                .await?
                .ok_or_else(|| anyhow::anyhow!("bootstrap did not create the organization"))?;
            tracing::info!(organization_id = %created.organization.id, admin = %created.admin.email, "organization created; its admin API key follows (shown once)");
            print_line(key.expose())
        }
        Command::AdminKey { org, email } => {
            let store = store::connect(&settings).await?;
            let (key, secret) = app::new_admin_key(&store, &org, &email).await?;
            tracing::info!(key_id = %key.id, organization = %org, "admin API key created; it follows (shown once)");
            print_line(secret.expose())
        }
        Command::Dlq { command } => dlq(&settings, command).await,
        Command::Recover(args) => recover::recover(&settings, args).await,
        Command::Events { command } => recover::events(&settings, command).await,
        Command::Retention { command } => retention::retention(&settings, command).await,
        Command::GenKey | Command::Openapi => Ok(()),
    }
}

fn validate_bootstrap(org: &str, email: &str) -> anyhow::Result<()> {
    if org.trim().is_empty() || org.len() > 200 {
        anyhow::bail!("--org must be 1 to 200 characters");
    }
    if !crate::domain::is_plausible_email(email) {
        anyhow::bail!("--email must be an email address such as admin@example.com");
    }
    Ok(())
}

async fn serve(mut settings: Settings, bind: Option<SocketAddr>) -> anyhow::Result<()> {
    if let Some(bind) = bind {
        settings.server.bind = bind;
    }
    let address = settings.server.bind;
    let mode = settings.mode().describe(settings.database_kind()?);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("server.bind: cannot listen on {address}: {error}"))?;
    let local = listener.local_addr()?;
    let admin = crate::http::admin::bind(settings.admin.bind.unwrap_or(AdminSettings::API_BIND)).await?;
    let admin_address = admin.local_addr()?;
    // One owner of every background task: a stage that fails stops the server and is the exit error.
    let stages = Stages::new(crate::shutdown::on_signal(), settings.server.shutdown_grace.get());
    let app = App::start(Services::connect(settings, &stages).await?, stages).await?;
    drop(app.serve_admin(admin));
    if let Some((created, key)) = app::bootstrap(&app.state.store, "default", "admin@localhost", true).await?
    {
        print_first_start(&created.admin.email, key.expose(), local)?;
    }
    tracing::info!(address = %local, admin = %admin_address, mode, "Herald is listening");
    app.serve(listener).await
}

async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    // An operator's command against a running deployment: it never changes the schema under it.
    let store = store::connect_with(settings, store::Schema::RequireCurrent).await?;
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List { scope, limit } => {
            let dead = store.list_dead_deliveries(scope.organization, scope.webhook, limit).await?;
            writeln!(
                out,
                "{:<36}  {:<36}  {:>8}  {:<20}  LAST ERROR",
                "DELIVERY", "WEBHOOK", "ATTEMPTS", "DIED AT"
            )?;
            for delivery in &dead {
                let last = match (delivery.last_status_code, &delivery.last_error) {
                    (Some(code), _) => format!("HTTP {code}"),
                    (None, Some(error)) => error.chars().take(80).collect(),
                    (None, None) => "-".into(),
                };
                let died = delivery.updated_at.format("%Y-%m-%d %H:%M:%S");
                writeln!(
                    out,
                    "{:<36}  {:<36}  {:>8}  {died:<20}  {last}",
                    delivery.id, delivery.webhook_id, delivery.attempts
                )?;
            }
            writeln!(out, "{} dead deliveries shown (at most {limit})", dead.len())?;
        }
        DlqCommand::Replay { scope, since, until, dry_run: true, .. } => {
            let dead = store.list_dead_deliveries(scope.organization, scope.webhook, i64::MAX).await?;
            let within = |at| since.is_none_or(|since| at >= since) && until.is_none_or(|until| at <= until);
            let count = dead.iter().filter(|delivery| within(delivery.created_at)).count();
            writeln!(out, "would make {count} dead deliveries due again (dry run: nothing changed)")?;
        }
        DlqCommand::Replay { scope, since, until, .. } => {
            let filter = store::ReplayFilter {
                organization_id: scope.organization,
                webhook_id: scope.webhook,
                since,
                until,
                status: store::DeliveryStatus::Dead,
            };
            let replayed = store.replay_deliveries(&filter, crate::domain::now()).await?;
            writeln!(out, "{replayed} dead deliveries are due again; running workers will deliver them")?;
        }
        DlqCommand::Drain { dry_run } => drain::drain(settings, &store, &mut out, dry_run).await?,
    }
    out.flush()?;
    Ok(())
}

fn print_first_start(email: &str, key: &str, address: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Herald created organization \"default\" with admin {email}. The admin API key, shown only this once:"
    )?;
    writeln!(out, "{key}")?;
    writeln!(
        out,
        "Next: export HERALD_KEY=<the key above>; curl -H \"Authorization: Bearer $HERALD_KEY\" http://{address}/api/v1/event-types"
    )?;
    out.flush()?;
    Ok(())
}

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_has_help() {
        Cli::command().debug_assert();
        fn check(command: &clap::Command) {
            for argument in command.get_arguments() {
                let builtin = matches!(argument.get_id().as_str(), "help" | "version");
                assert!(builtin || argument.get_help().is_some(), "--{} has no help", argument.get_id());
            }
            for sub in command.get_subcommands() {
                assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
                check(sub);
            }
        }
        check(&Cli::command());
    }

    #[test]
    fn bootstrap_arguments_are_checked() {
        assert!(validate_bootstrap("acme", "ops@acme.test").is_ok());
        assert!(validate_bootstrap("", "ops@acme.test").is_err());
        assert!(validate_bootstrap("acme", "not-an-email").is_err());
    }
}
