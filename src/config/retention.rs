//! [`RetentionSettings`]: how long Herald keeps events, deliveries, attempts and response bodies, and how
//! the retention job (`crate::retention`) paces its deletes. Checked once at start-up by
//! [`RetentionSettings::check`].

use serde::Deserialize;

use super::HumanDuration;

/// The `[retention]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Whether `herald serve` runs the retention job (`herald retention run` works either way).
    pub enabled: bool,
    /// Finished deliveries, and events with no delivery left, are removed this long after they ended
    /// (were created, for events).
    pub events: HumanDuration,
    /// Attempts of finished deliveries are removed this long after they started.
    pub attempts: HumanDuration,
    /// Response bodies of attempts are cleared this long after the attempt started (the attempt stays).
    pub response_bodies: HumanDuration,
    /// Time between two passes of the job (the first runs at start-up).
    pub interval: HumanDuration,
    /// Rows removed per statement: each batch is its own short transaction.
    pub batch_size: u32,
    /// Pause between two batches, so that ingestion and delivery keep the database to themselves most
    /// of the time.
    pub batch_pause: HumanDuration,
}

/// The largest `retention.batch_size`: larger batches hold their row locks too long.
pub const MAX_BATCH_SIZE: u32 = 10_000;

impl RetentionSettings {
    /// What types alone cannot say: every window above zero, bodies kept no longer than their attempts,
    /// attempts no longer than their deliveries, a batch of 1 to [`MAX_BATCH_SIZE`] rows.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, window) in [
            ("retention.events", self.events),
            ("retention.attempts", self.attempts),
            ("retention.response_bodies", self.response_bodies),
            ("retention.interval", self.interval),
        ] {
            if window.get().is_zero() {
                return Err((key, "must be above 0 (e.g. 30d, 12h, 90s)".into()));
            }
        }
        if self.attempts.get() > self.events.get() {
            return Err((
                "retention.attempts",
                "must be at most retention.events: a delivery's attempts cannot outlive the delivery".into(),
            ));
        }
        if self.response_bodies.get() > self.attempts.get() {
            return Err((
                "retention.response_bodies",
                "must be at most retention.attempts: a body cannot outlive its attempt".into(),
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(("retention.batch_size", format!("must be between 1 and {MAX_BATCH_SIZE}")));
        }
        Ok(())
    }
}
