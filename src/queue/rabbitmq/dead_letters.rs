//! Reading the broker's dead-letter queue (`{prefix}.deliveries.dead`) for `herald dlq drain`. Two
//! kinds of message land there: fan-out events that hit the delivery limit on `{prefix}.fanout` (their
//! deliveries were never created) and delivery tasks that hit it on `{prefix}.deliveries` (their
//! deliveries are in the store). [`DeadLetters`] takes them one at a time on a channel of its own, with
//! manual acks: a message is gone from the queue only once [`DeadLetters::settle`] acknowledges it; a
//! message kept (or every message, if the process dies) goes back to the queue when the channel closes.

use lapin::{
    Acker, Channel, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions},
    types::FieldTable,
};

use super::{Names, codec};
use crate::queue::{DeliveryTask, EventMessage};

/// What a dead-lettered message holds.
#[derive(Debug)]
pub enum DeadLetter {
    /// A fan-out event: none of its deliveries were created.
    Event(EventMessage),
    /// A delivery task: its delivery is in the store.
    Task(DeliveryTask),
    /// Not a message this version of Herald reads (another version's, or not Herald's); the reason.
    Undecodable(String),
}

/// A message taken off the dead-letter queue, not yet settled.
#[derive(Debug)]
pub struct Taken {
    pub letter: DeadLetter,
    acker: Acker,
}

/// What to do with a taken message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Handled: remove it from the queue.
    Remove,
    /// Leave it in the queue (it goes back when the drain ends).
    Keep,
}

/// A channel on the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetters {
    connection: Connection,
    channel: Channel,
    queue: String,
    kept: Vec<Acker>,
}

impl DeadLetters {
    /// Connects and checks that the dead-letter queue exists (passively: the topology is declared by
    /// the running processes, never by this command).
    pub async fn open(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("herald dlq drain {}", env!("CARGO_PKG_VERSION")).into());
        let connection = Connection::connect(url, properties)
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to RabbitMQ: {error}"))?;
        let channel = connection.create_channel().await?;
        let queue = Names::new(prefix).dead_queue;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await.map_err(
            |error| anyhow::anyhow!("no dead-letter queue {queue} (is queue.prefix right?): {error}"),
        )?;
        Ok(Self { connection, channel, queue, kept: Vec::new() })
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next message not taken yet, or None when the queue has no other.
    pub async fn next(&mut self) -> anyhow::Result<Option<Taken>> {
        let options = BasicGetOptions { no_ack: false };
        let Some(message) = self.channel.basic_get(self.queue.as_str().into(), options).await? else {
            return Ok(None);
        };
        let delivery = message.delivery;
        let letter = decode(&delivery.properties, delivery.data);
        Ok(Some(Taken { letter, acker: delivery.acker }))
    }

    /// Removes a handled message, or keeps it (held unacknowledged, so [`next`](Self::next) moves on to
    /// the others, and put back in the queue by [`close`](Self::close)).
    pub async fn settle(&mut self, taken: Taken, settlement: Settlement) -> anyhow::Result<()> {
        match settlement {
            Settlement::Remove => {
                taken.acker.ack(BasicAckOptions::default()).await?;
            }
            Settlement::Keep => self.kept.push(taken.acker),
        }
        Ok(())
    }

    /// Puts the kept messages back in the queue and closes the connection.
    pub async fn close(self) -> anyhow::Result<()> {
        for acker in self.kept {
            acker.nack(BasicNackOptions { multiple: false, requeue: true }).await?;
        }
        drop(self.channel.close(200, "drained".into()).await);
        drop(self.connection.close(200, "drained".into()).await);
        Ok(())
    }
}

/// A task's header says `delivery.v1`, an event's `event.v1`; messages of Herald 0.1 are told apart the
/// same way by their own headers (see [`codec`]).
fn decode(properties: &lapin::BasicProperties, body: Vec<u8>) -> DeadLetter {
    match codec::decode_task(properties, body.clone()) {
        Ok(task) => DeadLetter::Task(task),
        Err(task_error) => match codec::decode_event(properties, body) {
            Ok(event) => DeadLetter::Event(event),
            Err(event_error) => DeadLetter::Undecodable(format!(
                "not a delivery task ({task_error}), not an event ({event_error})"
            )),
        },
    }
}
