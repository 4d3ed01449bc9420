//! The RabbitMQ topology, declared idempotently by every process (names carry `queue.prefix`):
//!
//! ```text
//! {p}.events (topic) --#--> {p}.fanout (quorum) ------------------------------------+
//! {p}.deliveries (direct) --delivery--> {p}.deliveries (quorum) ---------------------+
//!                         --scheduled--> {p}.deliveries.scheduled (quorum) ----------+--> {p}.deliveries.dead
//!                                           (dead-letter exchange, fanout) --> {p}.deliveries.dead (quorum)
//! ```

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

/// Routing key of live delivery tasks (first attempts from fan-out) on the direct exchange.
pub(super) const DELIVERY_KEY: &str = "delivery";
/// Routing key of the tasks the scheduler hands over (retries, recoveries, replays, sweeps).
pub(super) const SCHEDULED_KEY: &str = "scheduled";
/// How long the dead-letter queue keeps a message: a week, for inspection (the store is what
/// `herald dlq` and the API replay from).
const DEAD_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// At most this many messages in the dead-letter queue; the oldest are dropped first.
const DEAD_MAX_LENGTH: i64 = 100_000;
/// Redeliveries (a consumer died holding the message) before a message goes to the dead-letter queue
/// instead of looping forever.
const DELIVERY_LIMIT: i64 = 50;

/// Exchange and queue names under a prefix.
#[derive(Debug, Clone)]
pub struct Names {
    pub events_exchange: String,
    pub fanout_queue: String,
    pub deliveries_exchange: String,
    pub deliveries_queue: String,
    pub scheduled_queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            events_exchange: format!("{prefix}.events"),
            fanout_queue: format!("{prefix}.fanout"),
            deliveries_exchange: format!("{prefix}.deliveries"),
            deliveries_queue: format!("{prefix}.deliveries"),
            scheduled_queue: format!("{prefix}.deliveries.scheduled"),
            dead_exchange: format!("{prefix}.deliveries.dead"),
            dead_queue: format!("{prefix}.deliveries.dead"),
        }
    }
}

/// Declares exchanges, queues and bindings; idempotent while the arguments stay the same (the broker
/// refuses a re-declaration with other arguments, so changing one needs a migration of the queue).
pub(super) async fn declare(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    // Durable: the exchanges survive a broker restart, so publishing never finds them missing; the other
    // options stay off (not passive: create if missing; not auto-deleted; not internal).
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    let none = FieldTable::default();
    // Wait for the broker's answer, so a failed binding fails the declaration here.
    let bind = QueueBindOptions { nowait: false };
    // Topic: events are routed by type, so other consumers can bind to the types they want.
    channel
        .exchange_declare(names.events_exchange.as_str().into(), ExchangeKind::Topic, durable, none.clone())
        .await?;
    // Direct: delivery tasks have one destination queue, by a fixed key.
    channel
        .exchange_declare(
            names.deliveries_exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            none.clone(),
        )
        .await?;
    // Fanout: whatever is dead-lettered, from either queue, lands in the one dead-letter queue.
    channel
        .exchange_declare(names.dead_exchange.as_str().into(), ExchangeKind::Fanout, durable, none.clone())
        .await?;

    // Durable: the queues (and, with persistent messages, their contents) survive a broker restart.
    let queue_options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let mut dead_arguments = quorum();
    dead_arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(DEAD_TTL_MS));
    dead_arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(DEAD_MAX_LENGTH));
    channel.queue_declare(names.dead_queue.as_str().into(), queue_options, dead_arguments).await?;
    channel
        .queue_bind(
            names.dead_queue.as_str().into(),
            names.dead_exchange.as_str().into(),
            // A fanout exchange ignores the key.
            "".into(),
            bind,
            none.clone(),
        )
        .await?;

    for (queue, exchange, key) in [
        // Fan-out takes every event type.
        (&names.fanout_queue, &names.events_exchange, "#"),
        (&names.deliveries_queue, &names.deliveries_exchange, DELIVERY_KEY),
        (&names.scheduled_queue, &names.deliveries_exchange, SCHEDULED_KEY),
    ] {
        let mut arguments = quorum();
        // Rejected messages (undecodable) and messages redelivered too often go to the DLQ instead of
        // looping forever.
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(names.dead_exchange.as_str().into()),
        );
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
        channel.queue_declare(queue.as_str().into(), queue_options, arguments).await?;
        channel
            .queue_bind(queue.as_str().into(), exchange.as_str().into(), key.into(), bind, none.clone())
            .await?;
    }
    Ok(())
}

/// Quorum queues: replicated, durable, with poison-message handling (`x-delivery-limit`).
fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments
}
