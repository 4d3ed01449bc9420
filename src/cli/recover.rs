//! `herald recover` (start a recovery of one webhook and follow it) and `herald events redeliver` (fan
//! one event out again): the same `worker::recover` functions the API calls, on the store directly. The
//! running workers (`herald serve` in embedded mode, the fan-out role of `herald-worker`) do the work.

use std::{io::Write, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{config::Settings, store, worker::recover};

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The webhook to send what it missed.
    #[arg(long, value_name = "WEBHOOK_ID")]
    webhook: Uuid,
    /// Events created at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: DateTime<Utc>,
    /// Events created at or before this time (RFC 3339); now when absent.
    #[arg(long, value_name = "TIME")]
    until: Option<DateTime<Utc>>,
    /// Print the recovery's id and return at once instead of following it until it finishes.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Fan an event out again to its organization's current subscribers, skipping those that received
    /// it (e.g. an event dead-lettered in fan-out, or a webhook added since).
    Redeliver {
        /// The event's id.
        #[arg(value_name = "EVENT_ID")]
        id: Uuid,
    },
}

pub async fn recover(settings: &Settings, args: RecoverArgs) -> anyhow::Result<()> {
    let store = store::connect_with(settings, store::Schema::RequireCurrent).await?;
    let webhook = store
        .get_webhook(args.webhook)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no webhook {}", args.webhook))?;
    let until = args.until.unwrap_or_else(crate::domain::now);
    let started = recover::start_recovery(&store, &webhook, args.since, until).await?;
    let id = started.recovery.id;
    let mut out = std::io::stdout().lock();
    writeln!(out, "recovery {id} of webhook {} started ({} to {until})", webhook.id, args.since)?;
    out.flush()?;
    if args.no_wait {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let progress =
            store.get_recovery(id).await?.ok_or_else(|| anyhow::anyhow!("recovery {id} is gone"))?;
        let running = progress.is_running();
        let state = if running { "running" } else { "finished" };
        writeln!(
            out,
            "{state}: {} deliveries, {} done, {} failed{}",
            progress.total,
            progress.done,
            progress.failed,
            if progress.recovery.scanned { "" } else { " (still scanning the window)" }
        )?;
        out.flush()?;
        if !running {
            return Ok(());
        }
    }
}

pub async fn events(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let store = store::connect_with(settings, store::Schema::RequireCurrent).await?;
    let EventsCommand::Redeliver { id } = command;
    let event = store.get_event(id).await?.ok_or_else(|| anyhow::anyhow!("no event {id}"))?;
    let readied = recover::redeliver(&store, &event).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "event {id}: {} deliveries created, {} made due again; running workers will deliver them",
        readied.created, readied.readied
    )?;
    out.flush()?;
    Ok(())
}
