//! `herald retention run [--dry-run]`: one pass of the retention job (`crate::retention`) from the
//! command line, with the `[retention]` settings, whether or not `retention.enabled` lets `herald serve`
//! run it. The dry run counts what would go and changes nothing.

use std::io::Write;

use crate::{
    config::Settings,
    retention::{Pass, Removed, Retention},
    store::{self, RetentionKind},
};

#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Remove what is older than the retention windows now (finished deliveries and their events,
    /// attempts, response bodies), in batches, printing progress and totals.
    Run {
        /// Only count, kind by kind, what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn retention(settings: &Settings, command: RetentionCommand) -> anyhow::Result<()> {
    // An operator's command against a running deployment: it never changes the schema under it.
    let store = store::connect_with(settings, store::Schema::RequireCurrent).await?;
    let retention = Retention::new(store, settings.retention.clone());
    let RetentionCommand::Run { dry_run } = command;
    let now = crate::domain::now();
    if dry_run {
        let counts = retention.dry_run(now).await?;
        let mut out = std::io::stdout().lock();
        for kind in RetentionKind::ALL {
            writeln!(
                out,
                "{:<16} {:>12}  (before {})",
                kind.as_str(),
                counts.get(kind),
                retention.cutoff(kind, now)
            )?;
        }
        writeln!(out, "dry run: nothing was removed")?;
        out.flush()?;
        return Ok(());
    }
    let shutdown = crate::shutdown::on_signal();
    // A line each time a kind passes another 10,000 rows, and the totals at the end.
    let mut shown: Option<(RetentionKind, u64)> = None;
    let mut progress = |kind: RetentionKind, total: u64| {
        let before = match shown {
            Some((shown_kind, shown_total)) if shown_kind == kind => shown_total,
            _ => 0,
        };
        if total / 10_000 > before / 10_000 {
            let mut out = std::io::stdout().lock();
            drop(writeln!(out, "{}: {total} so far", kind.as_str()));
            drop(out.flush());
        }
        shown = Some((kind, total));
    };
    let pass = retention.pass(now, &shutdown, &mut progress).await?;
    let (removed, note) = match pass {
        Pass::Done(removed) => (removed, "retention pass done"),
        Pass::Stopped(removed) => (removed, "retention pass interrupted (the next pass goes on)"),
        Pass::Busy => {
            anyhow::bail!("another Herald instance is running a retention pass now; try again later")
        }
    };
    let mut out = std::io::stdout().lock();
    print_totals(&mut out, &removed)?;
    writeln!(out, "{note}")?;
    out.flush()?;
    Ok(())
}

fn print_totals(out: &mut impl Write, removed: &Removed) -> std::io::Result<()> {
    for kind in RetentionKind::ALL {
        let verb = if kind == RetentionKind::ResponseBodies { "cleared" } else { "removed" };
        writeln!(out, "{:<16} {:>12}  {verb}", kind.as_str(), removed.get(kind))?;
    }
    Ok(())
}
