//! The workers: fan-out ([`fanout`]), delivery ([`deliver`], its outcomes recorded by `record`) and the
//! retry scheduler ([`scheduler`]).
//! `herald-worker` runs them against RabbitMQ; in embedded mode `herald serve` runs the same code
//! in-process on the embedded queue.

pub(crate) mod deliver;
pub(crate) mod direct;
pub(crate) mod disable;
pub(crate) mod endpoints;
pub(crate) mod fanout;
pub(crate) mod operational;
pub(crate) mod record;
pub(crate) mod recover;
mod report;
pub(crate) mod retry;
pub(crate) mod scheduler;
pub(crate) mod sender;
mod storable;

pub use disable::DisableRule;
pub use operational::RecordingRules;

use crate::{config::Mode, queue::Lane, services::Services, stages::Stages};

/// Events taken by fan-out at a time.
const FANOUT_PREFETCH: u16 = 256;
/// Deliveries handed over on the direct lane and not yet settled, at most: room for every delivery of the
/// events fan-out holds when each has up to 16 endpoints. A task handed over is small (its payload is
/// shared with its event), and a crash repeats only the attempts made and not yet recorded, however large
/// the room. A room of `delivery.concurrency` (64) sent most of a burst through the broker instead, at a
/// store write and a broker round trip more per delivery (docs/benchmarks.md).
const DIRECT_LANE_ROOM: usize = FANOUT_PREFETCH as usize * 16;

/// Which stages a worker process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub fanout: bool,
    /// Delivery and the retry scheduler.
    pub deliver: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { fanout: true, deliver: true };
}

/// Starts the roles' stages (`fanout` and `recovery`; `deliverer`, `outcome-recorder` and `scheduler`) on `stages` and
/// returns: they run until shutdown, then let in-flight work finish (up to `server.shutdown_grace`);
/// [`Stages::wait`] waits for them. An error here is a start-up failure.
pub async fn start(services: Services, roles: Roles, stages: &Stages) -> anyhow::Result<()> {
    // Only the outcome recorder emits here (operational events): a fan-out-only worker starts no outbox,
    // whose stages would otherwise end as soon as this function drops it.
    let outbox = roles.deliver.then(|| services.outbox(stages));
    let Services { mode, settings, store, queue, target_policy, webhooks, .. } = services;
    let delivery = &settings.delivery;
    if mode == Mode::Embedded {
        // The in-memory queue did not survive the restart, so whatever it held is due again.
        let requeued = store.requeue_all_queued(crate::domain::now()).await?;
        if requeued > 0 {
            tracing::info!(requeued, "deliveries queued before the restart are due again");
        }
    }
    let shutdown = stages.shutdown_token();
    // Both roles here: fan-out hands the first attempts it has room for straight to this deliverer.
    let (direct_lane, direct_consumer) = match roles {
        Roles { fanout: true, deliver: true } => {
            let (lane, consumer) = direct::DirectLane::new(DIRECT_LANE_ROOM);
            (Some(lane), Some(consumer))
        }
        _ => (None, None),
    };
    if roles.fanout {
        let consumer = queue.consume_events(FANOUT_PREFETCH).await?;
        let fanout = fanout::Fanout {
            store: store.clone(),
            queue: queue.clone(),
            webhooks: webhooks.clone(),
            lease: delivery.stuck_after.get(),
            direct: direct_lane,
            fresh_for: fanout::fresh_for(settings.events.relay_after.get()),
        };
        stages.spawn("fanout", fanout.run(consumer, shutdown.clone()));
        let recoverer =
            recover::Recoverer { store: store.clone(), interval: delivery.scheduler_interval.get() };
        stages.spawn("recovery", recoverer.run(shutdown.clone()));
    }
    if let Some(outbox) = outbox {
        // Twice the concurrency: tasks whose outcome is being committed still count against the prefetch,
        // and must not leave the HTTP slots idle meanwhile.
        let prefetch = u16::try_from(delivery.concurrency.saturating_mul(2)).unwrap_or(u16::MAX);
        let live = queue.consume_deliveries(Lane::Live, prefetch).await?;
        // Only this many handed-over tasks at once, however many the scheduler queued: the other slots
        // stay free for first attempts.
        let scheduled_prefetch =
            u16::try_from(delivery.scheduled_concurrency.min(delivery.concurrency)).unwrap_or(u16::MAX);
        let scheduled = queue.consume_deliveries(Lane::Scheduled, scheduled_prefetch).await?;
        let recorder = record::Recorder::start(
            stages,
            store.clone(),
            webhooks.clone(),
            RecordingRules { disable: DisableRule::new(delivery.disable_after_dead) },
            outbox,
            shutdown.clone(),
        );
        let deliverer = deliver::Deliverer {
            webhooks,
            endpoints: endpoints::Endpoints::new(delivery.per_endpoint_concurrency),
            store: store.clone(),
            sender: sender::Sender::new(delivery, target_policy)?,
            retry_policy: retry::RetryPolicy::new(delivery),
            recorder,
            concurrency: delivery.concurrency,
            grace: settings.server.shutdown_grace.get(),
        };
        stages.spawn("deliverer", deliverer.run(live, scheduled, direct_consumer, shutdown.clone()));
        let scheduler = scheduler::Scheduler {
            store,
            queue,
            interval: delivery.scheduler_interval.get(),
            claim_lease: delivery.claim_lease.get(),
            stuck_after: delivery.stuck_after.get(),
        };
        stages.spawn("scheduler", scheduler.run(shutdown));
    }
    tracing::info!(
        fanout = roles.fanout,
        deliver = roles.deliver,
        concurrency = delivery.concurrency,
        "workers running"
    );
    Ok(())
}
