//! The retention job: removes what is older than the `[retention]` windows, in bounded batches, so the
//! database stops growing without a long lock or a table-sized transaction. A pass goes kind by kind
//! ([`RetentionKind::ALL`]): response bodies cleared, then attempts of finished deliveries, then finished
//! deliveries, then published events with no delivery left; each kind batch by batch
//! (`retention.batch_size` rows, one short transaction each, `retention.batch_pause` between two), then
//! on SQLite the freed pages are given back to the file system a step at a time. A delivery not finished
//! (pending, queued, in flight), its attempts and its event, and an event not yet published, are never
//! removed, whatever their age (the store checks it row by row: `store::RetentionStore`).
//!
//! `herald serve` runs it as the `retention` stage every `retention.interval` (not `herald-worker`):
//! with several API instances on PostgreSQL, the one holding the retention lock runs the pass and the
//! others skip it. `herald retention run [--dry-run]` runs one pass from the command line.

use std::{sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    config::RetentionSettings,
    store::{RetentionKind, RetentionStore, StoreResult},
    telemetry::metrics::names,
};

/// Free pages given back per step after a pass (SQLite; 4 MiB of 4 KiB pages): each step holds the
/// write lock only briefly.
const RECLAIM_PAGES: u32 = 1024;

/// Rows per kind, removed (or, dry, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub response_bodies: u64,
    pub attempts: u64,
    pub deliveries: u64,
    pub events: u64,
}

impl Removed {
    pub fn get(&self, kind: RetentionKind) -> u64 {
        match kind {
            RetentionKind::ResponseBodies => self.response_bodies,
            RetentionKind::Attempts => self.attempts,
            RetentionKind::Deliveries => self.deliveries,
            RetentionKind::Events => self.events,
        }
    }

    fn add(&mut self, kind: RetentionKind, count: u64) {
        let slot = match kind {
            RetentionKind::ResponseBodies => &mut self.response_bodies,
            RetentionKind::Attempts => &mut self.attempts,
            RetentionKind::Deliveries => &mut self.deliveries,
            RetentionKind::Events => &mut self.events,
        };
        *slot += count;
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Everything expired at its start is gone.
    Done(Removed),
    /// Shutdown came first: stopped between two batches, after removing this much.
    Stopped(Removed),
    /// Another process holds the retention lock (its pass runs now); nothing was done.
    Busy,
}

/// The retention job over one store.
#[derive(Debug, Clone)]
pub struct Retention {
    store: Arc<dyn RetentionStore>,
    settings: RetentionSettings,
}

impl Retention {
    pub fn new(store: Arc<dyn RetentionStore>, settings: RetentionSettings) -> Self {
        Self { store, settings }
    }

    /// The stage's body: a pass at once, then every `retention.interval`, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        for kind in RetentionKind::ALL {
            metrics::counter!(names::RETENTION_REMOVED, "kind" => kind.as_str()).increment(0);
        }
        crate::stages::every(self.settings.interval.get(), &shutdown, || self.logged_pass(&shutdown)).await;
    }

    async fn logged_pass(&self, shutdown: &CancellationToken) {
        let started = Instant::now();
        match self.pass(crate::domain::now(), shutdown, &mut |_, _| {}).await {
            Ok(Pass::Done(removed)) => {
                let took = started.elapsed();
                metrics::histogram!(names::RETENTION_PASS_DURATION).record(took.as_secs_f64());
                metrics::gauge!(names::RETENTION_LAST_SUCCESS).set(Utc::now().timestamp() as f64);
                if removed != Removed::default() {
                    tracing::info!(
                        response_bodies = removed.response_bodies,
                        attempts = removed.attempts,
                        deliveries = removed.deliveries,
                        events = removed.events,
                        took_ms = took.as_millis() as u64,
                        "retention pass removed expired data"
                    );
                }
            }
            Ok(Pass::Stopped(_)) => tracing::debug!("retention pass stopped by shutdown"),
            Ok(Pass::Busy) => tracing::debug!("another Herald instance is running the retention pass"),
            Err(error) => {
                crate::outage::warn_unless_reported!(&error, %error, "retention pass failed; the next one retries");
            }
        }
    }

    /// When each kind's window began at `now`: rows older than this go.
    pub fn cutoff(&self, kind: RetentionKind, now: DateTime<Utc>) -> DateTime<Utc> {
        let window = match kind {
            RetentionKind::ResponseBodies => self.settings.response_bodies,
            RetentionKind::Attempts => self.settings.attempts,
            RetentionKind::Deliveries | RetentionKind::Events => self.settings.events,
        };
        now - chrono::Duration::from_std(window.get()).unwrap_or(chrono::Duration::MAX)
    }

    /// One pass over what expired by `now`, under the retention lock; `progress` hears each kind's
    /// running total after every batch. Stops between two batches when `shutdown` is cancelled.
    pub async fn pass(
        &self,
        now: DateTime<Utc>,
        shutdown: &CancellationToken,
        progress: &mut (dyn FnMut(RetentionKind, u64) + Send),
    ) -> StoreResult<Pass> {
        let Some(_lock) = self.store.try_retention_lock().await? else { return Ok(Pass::Busy) };
        let mut removed = Removed::default();
        let batch = self.settings.batch_size;
        for kind in RetentionKind::ALL {
            let before = self.cutoff(kind, now);
            let mut resume = None;
            loop {
                let swept = self.store.remove_expired(kind, before, resume, batch).await?;
                removed.add(kind, swept.removed);
                metrics::counter!(names::RETENTION_REMOVED, "kind" => kind.as_str()).increment(swept.removed);
                progress(kind, removed.get(kind));
                resume = swept.resume;
                if resume.is_none() {
                    break;
                }
                if !self.pause(shutdown).await {
                    return Ok(Pass::Stopped(removed));
                }
            }
        }
        let mut free = u64::MAX;
        loop {
            let left = self.store.reclaim_space(RECLAIM_PAGES).await?;
            // Done, or the file does not give pages back (created before incremental auto-vacuum).
            if left == 0 || left >= free {
                break;
            }
            free = left;
            if !self.pause(shutdown).await {
                return Ok(Pass::Stopped(removed));
            }
        }
        Ok(Pass::Done(removed))
    }

    /// What a pass at `now` would remove, kind by kind; changes nothing.
    pub async fn dry_run(&self, now: DateTime<Utc>) -> StoreResult<Removed> {
        let mut counts = Removed::default();
        for kind in RetentionKind::ALL {
            counts.add(kind, self.store.count_expired(kind, self.cutoff(kind, now)).await?);
        }
        Ok(counts)
    }

    /// Waits `retention.batch_pause`; `false` if shutdown came first.
    async fn pause(&self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(self.settings.batch_pause.get()) => true,
        }
    }
}
