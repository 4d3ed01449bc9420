//! The RabbitMQ queue: durable quorum queues ([`topology`]), one supervised connection that comes back
//! after failures ([`supervisor`]), and messages whose body is the stored payload with their metadata
//! in one versioned header ([`codec`]).
//!
//! Messages are persistent and published with `mandatory` on a confirm-mode channel; a batch of publishes
//! is sent first and its confirms awaited together. Consumers use manual acks and a prefetch; a message
//! that does not decode goes to the dead-letter queue.

mod codec;
pub mod dead_letters;
mod supervisor;
mod topology;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use lapin::{
    Confirmation,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions},
};
use tokio::sync::mpsc;

pub use self::topology::Names;
use self::{
    codec::{DecodeError, Outgoing},
    supervisor::{ConsumerSpec, Forward, Supervisor, unavailable},
};
use super::{Consumer, DeliveryTask, EventMessage, Lane, Queue, QueueError, Received, Settle};
use crate::stages::Stages;

/// The longest a publish waits for the broker's confirm of a message.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RabbitQueue {
    supervisor: Arc<Supervisor>,
}

impl RabbitQueue {
    /// Starts the supervisor (the support stage `rabbitmq-supervisor` of `stages`), which keeps a
    /// connection up: a broker that is down at start-up does not stop the process, it is connected to
    /// in the background (see [`Supervisor::start`]); a URL that is not an AMQP URL does.
    pub async fn connect(url: &str, prefix: &str, stages: &Stages) -> anyhow::Result<Self> {
        Ok(Self { supervisor: Supervisor::start(url, Names::new(prefix), stages).await? })
    }

    pub fn names(&self) -> &Names {
        &self.supervisor.names
    }

    /// Publishes messages on the confirm channel, then awaits every confirm.
    async fn publish_all<'a>(
        &self,
        exchange: &str,
        messages: impl Iterator<Item = Outgoing<'a>>,
    ) -> Result<(), QueueError> {
        let link = self.supervisor.link().await?;
        // Mandatory: a message no queue takes comes back as unroutable instead of vanishing (a missing
        // binding is an error, not silence). Immediate is not supported by RabbitMQ.
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let mut confirms = Vec::new();
        for Outgoing { routing_key, properties, body } in messages {
            match link
                .publisher
                .basic_publish(exchange.into(), routing_key.into(), options, &body, properties)
                .await
            {
                Ok(confirm) => confirms.push(confirm),
                Err(error) => {
                    link.broken.cancel();
                    return Err(unavailable(error));
                }
            }
        }
        for confirm in confirms {
            // A confirm the broker never sends (a connection gone silent) must not hold the publisher:
            // the link is treated as broken and the work stays in the store to be published again.
            let Ok(confirmation) = tokio::time::timeout(CONFIRM_WAIT, confirm).await else {
                link.broken.cancel();
                return Err(QueueError::Unavailable(format!(
                    "no publisher confirm from RabbitMQ within {CONFIRM_WAIT:?}"
                )));
            };
            match confirmation {
                Ok(Confirmation::Ack(None)) => {}
                Ok(Confirmation::Ack(Some(returned))) => {
                    return Err(QueueError::Refused(format!(
                        "unroutable on {exchange}: {}",
                        returned.reply_text.as_str()
                    )));
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(QueueError::Refused(format!("nacked by {exchange}")));
                }
                Ok(Confirmation::NotRequested) => {}
                Err(error) => {
                    link.broken.cancel();
                    return Err(unavailable(error));
                }
            }
        }
        Ok(())
    }

    /// Consumes `queue`, decoding each message; one that does not decode is dead-lettered.
    async fn register<T: Send + 'static>(
        &self,
        queue: String,
        prefetch: u16,
        decode: fn(&lapin::BasicProperties, Vec<u8>) -> Result<T, DecodeError>,
    ) -> Consumer<T> {
        let (sender, receiver) = mpsc::channel(usize::from(prefetch.max(1)));
        let name: Arc<str> = queue.as_str().into();
        let forward: Forward = Arc::new(move |delivery| {
            let (sender, queue) = (sender.clone(), name.clone());
            Box::pin(async move {
                let lapin::message::Delivery { properties, data, acker, redelivered, .. } = delivery;
                match decode(&properties, data) {
                    Ok(message) => {
                        let received = Received::new(message, Box::new(AmqpSettle(acker)), redelivered);
                        sender.send(received).await.is_ok()
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, %queue, "undecodable message sent to the dead-letter queue");
                        Box::new(AmqpSettle(acker)).dead_letter().await;
                        true
                    }
                }
            })
        });
        self.supervisor.register(ConsumerSpec { queue, prefetch, forward }).await;
        Consumer::new(receiver)
    }
}

/// Settles a message with the broker.
#[derive(Debug)]
struct AmqpSettle(lapin::Acker);

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(self: Box<Self>) {
        // Not multiple: only this message; others on the channel may still be in progress.
        if let Err(error) = self.0.ack(BasicAckOptions { multiple: false }).await {
            tracing::warn!(%error, "ack failed; the broker will redeliver the message");
        }
    }

    async fn requeue(self: Box<Self>) {
        // Requeue: back to the queue for any consumer (counts towards the delivery limit); not multiple:
        // only this message.
        let options = BasicNackOptions { multiple: false, requeue: true };
        if let Err(error) = self.0.nack(options).await {
            tracing::warn!(%error, "nack failed; the broker will redeliver the message");
        }
    }

    async fn dead_letter(self: Box<Self>) {
        // No requeue: the queue's dead-letter exchange takes it.
        let options = BasicRejectOptions { requeue: false };
        if let Err(error) = self.0.reject(options).await {
            tracing::warn!(%error, "reject failed; the broker will redeliver the message");
        }
    }
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn publish_events(&self, events: &[EventMessage]) -> Result<(), QueueError> {
        let exchange = &self.supervisor.names.events_exchange;
        self.publish_all(exchange, events.iter().map(codec::encode_event)).await
    }

    async fn publish_deliveries(&self, lane: Lane, tasks: &[DeliveryTask]) -> Result<(), QueueError> {
        let exchange = &self.supervisor.names.deliveries_exchange;
        self.publish_all(exchange, tasks.iter().map(|task| codec::encode_task(lane, task))).await
    }

    async fn consume_events(&self, prefetch: u16) -> Result<Consumer<EventMessage>, QueueError> {
        let queue = self.supervisor.names.fanout_queue.clone();
        Ok(self.register(queue, prefetch, codec::decode_event).await)
    }

    async fn consume_deliveries(
        &self,
        lane: Lane,
        prefetch: u16,
    ) -> Result<Consumer<DeliveryTask>, QueueError> {
        let names = &self.supervisor.names;
        let queue = match lane {
            Lane::Live => names.deliveries_queue.clone(),
            Lane::Scheduled => names.scheduled_queue.clone(),
        };
        Ok(self.register(queue, prefetch, codec::decode_task).await)
    }

    async fn check(&self) -> Result<(), QueueError> {
        if self.supervisor.is_connected() { Ok(()) } else { Err(unavailable("not connected to RabbitMQ")) }
    }

    async fn depths(&self) -> Vec<(&'static str, u64)> {
        match self.supervisor.depths().await {
            Ok(depths) => depths,
            Err(error) => {
                tracing::debug!(%error, "cannot read the queue depths");
                Vec::new()
            }
        }
    }

    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn close(&self) {
        self.supervisor.close().await;
    }
}
