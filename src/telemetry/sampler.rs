//! The sampled gauges: every 5 s, one task per process reads what no single piece of work can count
//! (the outbox backlog, in the API process; queue depths; the database pools; readiness; the process's
//! CPU and memory) and sets them. It also runs the recorder's upkeep (histogram buffers).

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::{metrics::names, process};
use crate::{queue::DynQueue, readiness::Readiness, store::DynStore};

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// What a process samples.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub store: DynStore,
    pub queue: DynQueue,
    pub readiness: Readiness,
    pub handle: PrometheusHandle,
    /// Sample the outbox backlog (the API process: it publishes).
    pub outbox: bool,
}

impl Sampler {
    /// Samples at once, then every [`SAMPLE_EVERY`], until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        crate::stages::every(SAMPLE_EVERY, &shutdown, || self.sample()).await;
    }

    /// Reads and sets every sampled gauge once.
    pub async fn sample(&self) {
        if self.outbox {
            match self.store.outbox_backlog().await {
                Ok((count, oldest)) => {
                    metrics::gauge!(names::OUTBOX_UNPUBLISHED).set(count as f64);
                    let age = oldest.map_or(0.0, |oldest| {
                        (crate::domain::now() - oldest).to_std().unwrap_or_default().as_secs_f64()
                    });
                    metrics::gauge!(names::OUTBOX_OLDEST_AGE).set(age);
                }
                Err(error) => tracing::debug!(%error, "cannot read the outbox backlog"),
            }
        }
        for (queue, depth) in self.queue.depths().await {
            metrics::gauge!(names::QUEUE_DEPTH, "queue" => queue).set(depth as f64);
        }
        let pools = self.store.pool_stats();
        metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(pools.idle));
        metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use").set(f64::from(pools.in_use));
        metrics::gauge!(names::DB_POOL_MAX_CONNECTIONS).set(f64::from(pools.max));
        self.readiness.check().await;
        process::sample();
        self.handle.run_upkeep();
    }
}
