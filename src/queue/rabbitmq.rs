//! The RabbitMQ queue. Topology, declared idempotently by every process (names carry `queue.prefix`):
//!
//! ```text
//! {p}.events (topic) --#--> {p}.fanout (quorum) ----------------------------+
//! {p}.deliveries (direct) --delivery--> {p}.deliveries (quorum) -------------+--> {p}.deliveries.dead
//!                                         (dead-letter exchange, fanout) --> {p}.deliveries.dead (quorum)
//! ```
//!
//! Messages are persistent and published with `mandatory` on a confirm-mode channel; a batch of publishes
//! is sent first and its confirms awaited together. Consumers use manual acks and a prefetch. lapin does
//! not recover reliably on its own, so a supervisor task owns the connection: it connects with backoff,
//! declares the topology, opens the publishing channel, starts every registered consumer, and on any
//! connection or channel failure tears everything down and starts again. Consumers hand messages to
//! in-process channels that survive reconnections; publishers wait briefly for a connection, then fail
//! (the store keeps the work and it is retried).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use backon::BackoffBuilder;
use bytes::Bytes;
use futures_util::{StreamExt, future::BoxFuture};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Acker, Consumer, DeliveryTask, EventMessage, Queue, QueueError, Received};
use crate::config::redact_url;

/// How long a publisher waits for a connection before giving up (the work stays in the store).
const PUBLISH_WAIT: Duration = Duration::from_secs(2);
/// Routing key of delivery tasks on the direct exchange.
const DELIVERY_KEY: &str = "delivery";
/// Message header names.
const H_ORGANIZATION: &str = "x-herald-organization-id";
const H_EVENT: &str = "x-herald-event-id";
const H_WEBHOOK: &str = "x-herald-webhook-id";
const H_ATTEMPT: &str = "x-herald-attempt";
const H_VERSION: &str = "x-herald-version";
/// Version of the delivery task format; a consumer dead-letters versions it does not know.
const TASK_VERSION: i64 = 1;

/// Exchange and queue names under a prefix.
#[derive(Debug, Clone)]
pub struct Names {
    pub events_exchange: String,
    pub fanout_queue: String,
    pub deliveries_exchange: String,
    pub deliveries_queue: String,
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
            dead_exchange: format!("{prefix}.deliveries.dead"),
            dead_queue: format!("{prefix}.deliveries.dead"),
        }
    }
}

/// A live connection and its publishing channel.
#[derive(Debug)]
struct Link {
    connection: Connection,
    publisher: Channel,
    /// Cancelled when anything on this connection fails; the supervisor then reconnects.
    broken: CancellationToken,
}

/// Hands a broker message to its consumer (or dead-letters it if it cannot be parsed); resolves to
/// `false` once the consumer is gone.
type Forward = Arc<dyn Fn(lapin::message::Delivery) -> BoxFuture<'static, bool> + Send + Sync>;

struct ConsumerSpec {
    queue: String,
    prefetch: u16,
    forward: Forward,
}

#[derive(Debug)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

struct Inner {
    names: Names,
    link: watch::Sender<Option<Arc<Link>>>,
    consumers: Mutex<Vec<Arc<ConsumerSpec>>>,
    /// Tells the supervisor a consumer was registered.
    consumers_changed: tokio::sync::Notify,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue").field("names", &self.names).finish_non_exhaustive()
    }
}

impl RabbitQueue {
    /// Starts the supervisor and waits for the first connection, so that a wrong URL or a broker that is
    /// down fails start-up with a clear message.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let first = establish(url, &Names::new(prefix))
            .await
            .map_err(|error| anyhow::anyhow!("connecting to RabbitMQ at {}: {error}", redact_url(url)))?;
        let (link, _) = watch::channel(Some(Arc::new(first)));
        let inner = Arc::new(Inner {
            names: Names::new(prefix),
            link,
            consumers: Mutex::new(Vec::new()),
            consumers_changed: tokio::sync::Notify::new(),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(supervise(inner.clone(), url.to_string()));
        Ok(Self { inner })
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// The current connection, waiting up to [`PUBLISH_WAIT`] for one.
    async fn link(&self) -> Result<Arc<Link>, QueueError> {
        let mut watcher = self.inner.link.subscribe();
        let wait = watcher.wait_for(|link| link.as_ref().is_some_and(|l| !l.broken.is_cancelled()));
        match tokio::time::timeout(PUBLISH_WAIT, wait).await {
            Ok(Ok(link)) => link.clone().ok_or_else(|| unavailable("not connected")),
            _ => Err(unavailable("not connected to RabbitMQ")),
        }
    }

    /// Publishes messages on the confirm channel, then awaits every confirm.
    async fn publish_all(
        &self,
        exchange: &str,
        messages: impl Iterator<Item = (String, BasicProperties, Bytes)>,
    ) -> Result<(), QueueError> {
        let link = self.link().await?;
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let mut confirms = Vec::new();
        for (routing_key, properties, body) in messages {
            match link
                .publisher
                .basic_publish(exchange.into(), routing_key.as_str().into(), options, &body, properties)
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
            match confirm.await {
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

    async fn register<T: Send + 'static>(
        &self,
        queue: String,
        prefetch: u16,
        parse: fn(&lapin::message::Delivery) -> Result<T, String>,
    ) -> Consumer<T> {
        let (sender, receiver) = mpsc::channel(usize::from(prefetch.max(1)));
        let forward: Forward = Arc::new(move |delivery| {
            let sender = sender.clone();
            Box::pin(async move {
                match parse(&delivery) {
                    Ok(message) => {
                        let received =
                            Received::new(message, Acker::Amqp(delivery.acker), delivery.redelivered);
                        sender.send(received).await.is_ok()
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "unparseable message sent to the dead-letter queue");
                        let options = lapin::options::BasicRejectOptions { requeue: false };
                        drop(delivery.acker.reject(options).await);
                        true
                    }
                }
            })
        });
        self.inner.consumers.lock().await.push(Arc::new(ConsumerSpec { queue, prefetch, forward }));
        self.inner.consumers_changed.notify_one();
        Consumer::new(receiver)
    }
}

fn unavailable(error: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(error.to_string())
}

/// Connects, declares the topology and opens the confirm channel.
async fn establish(url: &str, names: &Names) -> Result<Link, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("herald {}", env!("CARGO_PKG_VERSION")).into());
    let connection = Connection::connect(url, properties).await?;
    let channel = connection.create_channel().await?;
    declare_topology(&channel, names).await?;
    drop(channel.close(200, "declared".into()).await);
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(Link { connection, publisher, broken: CancellationToken::new() })
}

/// Declares exchanges, queues and bindings; idempotent while the arguments stay the same.
pub async fn declare_topology(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    let none = FieldTable::default();
    channel
        .exchange_declare(names.events_exchange.as_str().into(), ExchangeKind::Topic, durable, none.clone())
        .await?;
    channel
        .exchange_declare(
            names.deliveries_exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            none.clone(),
        )
        .await?;
    channel
        .exchange_declare(names.dead_exchange.as_str().into(), ExchangeKind::Fanout, durable, none.clone())
        .await?;

    let queue_options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    // The dead-letter queue keeps a week of poison messages and dead deliveries for inspection; the store
    // is what `herald dlq` and the API replay from.
    let mut dead_arguments = quorum();
    dead_arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(7 * 24 * 3600 * 1000));
    dead_arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(100_000));
    channel.queue_declare(names.dead_queue.as_str().into(), queue_options, dead_arguments).await?;
    channel
        .queue_bind(
            names.dead_queue.as_str().into(),
            names.dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            none.clone(),
        )
        .await?;

    for (queue, exchange, key) in [
        (&names.fanout_queue, &names.events_exchange, "#"),
        (&names.deliveries_queue, &names.deliveries_exchange, DELIVERY_KEY),
    ] {
        let mut arguments = quorum();
        // Rejected messages (unparseable) and messages redelivered too often go to the DLQ instead of
        // looping forever.
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(names.dead_exchange.as_str().into()),
        );
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(50));
        channel.queue_declare(queue.as_str().into(), queue_options, arguments).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                none.clone(),
            )
            .await?;
    }
    Ok(())
}

/// Quorum queues: replicated, durable, with poison-message handling.
fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments
}

/// Owns the connection: keeps one up, with its consumers, until shutdown.
async fn supervise(inner: Arc<Inner>, url: String) {
    let mut delays = backoff();
    loop {
        let current = inner.link.borrow().clone();
        let link = match current {
            Some(link) if !link.broken.is_cancelled() => link,
            _ => {
                inner.link.send_replace(None);
                let attempt = tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    attempt = establish(&url, &inner.names) => attempt,
                };
                match attempt {
                    Ok(link) => {
                        tracing::info!("connected to RabbitMQ");
                        delays = backoff();
                        let link = Arc::new(link);
                        inner.link.send_replace(Some(link.clone()));
                        link
                    }
                    Err(error) => {
                        let delay = delays.next().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(%error, retry_in = ?delay, "RabbitMQ unreachable");
                        tokio::select! {
                            () = inner.shutdown.cancelled() => break,
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        run_link(&inner, &link).await;
        link.broken.cancel();
        inner.link.send_replace(None);
        drop(link.connection.close(200, "reconnecting".into()).await);
        if inner.shutdown.is_cancelled() {
            break;
        }
        tracing::warn!("lost the RabbitMQ connection; reconnecting");
    }
    if let Some(link) = inner.link.send_replace(None) {
        link.broken.cancel();
        drop(link.connection.close(200, "shutting down".into()).await);
    }
}

/// Runs the consumers on one connection until it breaks or shutdown.
async fn run_link(inner: &Arc<Inner>, link: &Arc<Link>) {
    let mut started = 0;
    let mut events = link.connection.events_listener();
    loop {
        let specs: Vec<Arc<ConsumerSpec>> =
            inner.consumers.lock().await.iter().skip(started).cloned().collect();
        for spec in specs {
            started += 1;
            tokio::spawn(consume(link.clone(), spec));
        }
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = link.broken.cancelled() => return,
            () = inner.consumers_changed.notified() => {}
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => {
                    tracing::warn!(%error, "RabbitMQ connection error");
                    return;
                }
                None => return,
                Some(_) => {}
            },
        }
    }
}

/// One consumer on its own channel, forwarding messages until the link breaks.
async fn consume(link: Arc<Link>, spec: Arc<ConsumerSpec>) {
    let result = async {
        let channel = link.connection.create_channel().await?;
        // Prefetch bounds the unacknowledged messages this consumer holds: the worker's concurrency.
        channel.basic_qos(spec.prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                spec.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions { no_ack: false, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    }
    .await;
    let (_channel, mut consumer) = match result {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, queue = %spec.queue, "could not start consuming");
            link.broken.cancel();
            return;
        }
    };
    loop {
        let delivery = tokio::select! {
            () = link.broken.cancelled() => return,
            delivery = consumer.next() => delivery,
        };
        match delivery {
            Some(Ok(delivery)) => {
                if !(spec.forward)(delivery).await {
                    // The consumer is gone (shutdown): closing the channel hands unacked messages back.
                    return;
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, queue = %spec.queue, "consumer failed");
                link.broken.cancel();
                return;
            }
            None => {
                link.broken.cancel();
                return;
            }
        }
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

#[async_trait]
impl Queue for RabbitQueue {
    async fn publish_events(&self, events: &[EventMessage]) -> Result<(), QueueError> {
        let messages = events.iter().map(|event| {
            let mut headers = FieldTable::default();
            headers.insert(
                H_ORGANIZATION.into(),
                AMQPValue::LongString(event.organization_id.to_string().into()),
            );
            (
                event.event_type.clone(),
                properties(event.id, &event.event_type, headers),
                event.payload.clone(),
            )
        });
        self.publish_all(&self.inner.names.events_exchange, messages).await
    }

    async fn publish_deliveries(&self, tasks: &[DeliveryTask]) -> Result<(), QueueError> {
        let messages = tasks.iter().map(|task| {
            let mut headers = FieldTable::default();
            headers.insert(H_VERSION.into(), AMQPValue::LongLongInt(TASK_VERSION));
            headers.insert(H_EVENT.into(), AMQPValue::LongString(task.event_id.to_string().into()));
            headers.insert(H_WEBHOOK.into(), AMQPValue::LongString(task.webhook_id.to_string().into()));
            headers.insert(
                H_ORGANIZATION.into(),
                AMQPValue::LongString(task.organization_id.to_string().into()),
            );
            headers.insert(H_ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(task.attempt)));
            (
                DELIVERY_KEY.to_string(),
                properties(task.delivery_id, &task.event_type, headers),
                task.payload.clone(),
            )
        });
        self.publish_all(&self.inner.names.deliveries_exchange, messages).await
    }

    async fn consume_events(&self, prefetch: u16) -> Result<Consumer<EventMessage>, QueueError> {
        Ok(self.register(self.inner.names.fanout_queue.clone(), prefetch, parse_event).await)
    }

    async fn consume_deliveries(&self, prefetch: u16) -> Result<Consumer<DeliveryTask>, QueueError> {
        Ok(self.register(self.inner.names.deliveries_queue.clone(), prefetch, parse_task).await)
    }

    async fn check(&self) -> Result<(), QueueError> {
        match self.inner.link.borrow().as_ref() {
            Some(link) if !link.broken.is_cancelled() && link.connection.status().connected() => Ok(()),
            _ => Err(unavailable("not connected to RabbitMQ")),
        }
    }

    fn confirms_publication(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn close(&self) {
        self.inner.shutdown.cancel();
        let mut watcher = self.inner.link.subscribe();
        drop(tokio::time::timeout(Duration::from_secs(5), watcher.wait_for(Option::is_none)).await);
    }
}

/// Persistent JSON message with an id and a type.
fn properties(id: Uuid, kind: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        // 2 = persistent: written to disk by the broker before it confirms.
        .with_delivery_mode(2)
        .with_message_id(id.to_string().into())
        .with_type(kind.into())
        .with_headers(headers)
}

fn parse_event(delivery: &lapin::message::Delivery) -> Result<EventMessage, String> {
    let properties = &delivery.properties;
    Ok(EventMessage {
        id: uuid_from(properties.message_id().as_ref().map(ShortString::as_str), "message_id")?,
        organization_id: uuid_from(header_str(properties, H_ORGANIZATION), H_ORGANIZATION)?,
        event_type: properties.kind().as_ref().ok_or("missing type")?.as_str().to_string(),
        payload: Bytes::copy_from_slice(&delivery.data),
    })
}

fn parse_task(delivery: &lapin::message::Delivery) -> Result<DeliveryTask, String> {
    let properties = &delivery.properties;
    let version = header_int(properties, H_VERSION).ok_or("missing x-herald-version")?;
    if version != TASK_VERSION {
        return Err(format!("unknown task version {version}"));
    }
    let attempt = header_int(properties, H_ATTEMPT).ok_or("missing x-herald-attempt")?;
    Ok(DeliveryTask {
        delivery_id: uuid_from(properties.message_id().as_ref().map(ShortString::as_str), "message_id")?,
        event_id: uuid_from(header_str(properties, H_EVENT), H_EVENT)?,
        webhook_id: uuid_from(header_str(properties, H_WEBHOOK), H_WEBHOOK)?,
        organization_id: uuid_from(header_str(properties, H_ORGANIZATION), H_ORGANIZATION)?,
        attempt: u32::try_from(attempt).map_err(|_| format!("bad attempt {attempt}"))?,
        event_type: properties.kind().as_ref().ok_or("missing type")?.as_str().to_string(),
        payload: Bytes::copy_from_slice(&delivery.data),
    })
}

fn header_str<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}

fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(value) => Some(*value),
        AMQPValue::LongInt(value) => Some(i64::from(*value)),
        AMQPValue::LongUInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortInt(value) => Some(i64::from(*value)),
        _ => None,
    }
}

fn uuid_from(value: Option<&str>, what: &str) -> Result<Uuid, String> {
    let value = value.ok_or_else(|| format!("missing {what}"))?;
    Uuid::parse_str(value).map_err(|_| format!("{what} is not a UUID"))
}
