//! `herald dlq drain`: empties RabbitMQ's dead-letter queue so no event stays there unnoticed. A
//! fan-out event there never had its deliveries created: they are created now, for its organization's
//! current subscribers that have not received it (`worker::recover::redeliver`, as `herald events
//! redeliver`). A delivery task there has its delivery in the store: if still queued, it is made due at
//! once (instead of waiting for its lease), and the message removed. A message this version cannot read
//! is left in the queue and listed. `--dry-run` takes every message, says what it would do, and puts
//! them all back.

use std::io::Write;

use crate::{
    config::Settings,
    queue::rabbitmq::dead_letters::{DeadLetter, DeadLetters, Settlement},
    store::{DeliveryStatus, DynStore},
    worker::recover,
};

/// What a drain did, by kind of message.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    deliveries_created: u64,
    deliveries_readied: u64,
    events_gone: u64,
    tasks: u64,
    tasks_made_due: u64,
    undecodable: u64,
}

pub(super) async fn drain(
    settings: &Settings,
    store: &DynStore,
    out: &mut impl Write,
    dry_run: bool,
) -> anyhow::Result<()> {
    let Some(url) = &settings.queue.url else {
        anyhow::bail!(
            "embedded mode (no queue.url) has no broker dead-letter queue: dead deliveries are in the store (herald dlq list)"
        );
    };
    let mut letters = DeadLetters::open(url.expose(), &settings.queue.prefix).await?;
    writeln!(
        out,
        "draining {}{}",
        letters.queue(),
        if dry_run { " (dry run: nothing changes)" } else { "" }
    )?;
    let mut tally = Tally::default();
    while let Some(taken) = letters.next().await? {
        let settlement = match &taken.letter {
            DeadLetter::Event(message) => {
                tally.events += 1;
                match store.get_event(message.id).await? {
                    // Removed by retention since (events are stored before they are published).
                    None => {
                        tally.events_gone += 1;
                        writeln!(out, "event {}: no longer in the store; removed", message.id)?;
                        removed_unless(dry_run)
                    }
                    Some(_) if dry_run => {
                        writeln!(
                            out,
                            "event {} ({}): would be fanned out again",
                            message.id, message.event_type
                        )?;
                        Settlement::Keep
                    }
                    Some(event) => {
                        let readied = recover::redeliver(store, &event).await?;
                        tally.deliveries_created += readied.created;
                        tally.deliveries_readied += readied.readied;
                        writeln!(
                            out,
                            "event {} ({}): {} deliveries created, {} made due again",
                            event.id, event.event_type, readied.created, readied.readied
                        )?;
                        Settlement::Remove
                    }
                }
            }
            DeadLetter::Task(task) => {
                tally.tasks += 1;
                let status = store.get_delivery(task.delivery_id).await?.map(|delivery| delivery.status);
                if status == Some(DeliveryStatus::Queued) {
                    tally.tasks_made_due += 1;
                    if !dry_run {
                        let now = crate::domain::now();
                        store.defer_deliveries(&[(task.delivery_id, now)], now).await?;
                    }
                }
                removed_unless(dry_run)
            }
            DeadLetter::Undecodable(reason) => {
                tally.undecodable += 1;
                writeln!(out, "a message left in the queue: {reason}")?;
                Settlement::Keep
            }
        };
        letters.settle(taken, settlement).await?;
    }
    letters.close().await?;
    report(out, &tally, dry_run)?;
    out.flush()?;
    Ok(())
}

fn removed_unless(dry_run: bool) -> Settlement {
    if dry_run { Settlement::Keep } else { Settlement::Remove }
}

fn report(out: &mut impl Write, tally: &Tally, dry_run: bool) -> std::io::Result<()> {
    let would = if dry_run { "would be " } else { "" };
    writeln!(
        out,
        "{} fan-out events: {} {would}fanned out again ({} deliveries created, {} made due again), {} no longer stored",
        tally.events,
        tally.events - tally.events_gone,
        tally.deliveries_created,
        tally.deliveries_readied,
        tally.events_gone
    )?;
    writeln!(
        out,
        "{} delivery tasks: {} {would}made due at once (still queued in the store), the rest finished or gone",
        tally.tasks, tally.tasks_made_due
    )?;
    writeln!(out, "{} messages this version cannot read, left in the queue", tally.undecodable)
}
