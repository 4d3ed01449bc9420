//! The connection supervisor. lapin does not recover reliably on its own, so one task owns the
//! connection: it connects with backoff, declares the topology, opens the publishing channel, starts
//! every registered consumer, and on any connection or channel failure tears everything down and starts
//! again. Consumers hand messages to in-process channels that survive reconnections; publishers wait
//! briefly for a connection, then fail (the store keeps the work and it is retried).

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt, future::BoxFuture};
use lapin::{
    Channel, Connection, ConnectionProperties,
    options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tokio::sync::{Mutex, Notify, watch};
use tokio_util::sync::CancellationToken;

use super::topology::{self, Names};
use crate::{
    config::redact_url, outage::Outage, queue::QueueError, stages::Stages, telemetry::metrics::names,
};

/// How long a publisher waits for a connection before giving up (the work stays in the store).
const PUBLISH_WAIT: Duration = Duration::from_secs(2);
/// How long start-up waits for a first connection before going on without one.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(3);

/// A live connection and its publishing channel.
#[derive(Debug)]
pub(super) struct Link {
    pub connection: Connection,
    /// In confirm mode: every publish is acknowledged by the broker once it has the message.
    pub publisher: Channel,
    /// Cancelled when anything on this connection fails; the supervisor then reconnects.
    pub broken: CancellationToken,
}

/// Hands a broker message to its consumer (or dead-letters it if it cannot be decoded); resolves to
/// `false` once the consumer is gone.
pub(super) type Forward = Arc<dyn Fn(lapin::message::Delivery) -> BoxFuture<'static, bool> + Send + Sync>;

/// A consumer to (re)start on every connection.
pub(super) struct ConsumerSpec {
    pub queue: String,
    pub prefetch: u16,
    pub forward: Forward,
}

/// The connection state, shared by the queue handle and the supervising task.
pub(super) struct Supervisor {
    pub names: Names,
    link: watch::Sender<Option<Arc<Link>>>,
    consumers: Mutex<Vec<Arc<ConsumerSpec>>>,
    /// Tells the supervisor a consumer was registered.
    consumers_changed: Notify,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue").field("names", &self.names).finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Starts the supervising task. A first connection is tried for up to [`FIRST_CONNECT_WAIT`], so
    /// that with the broker up the topology exists once this returns; a broker that is down at start-up
    /// is an outage like any other (logged once, `readyz` answers 503 naming it, publishers fail and the
    /// outbox keeps the work, consumers start once connected), retried in the background. Only a URL that
    /// cannot be parsed fails start-up. The task is the support stage `rabbitmq-supervisor`: it stops at
    /// [`Self::close`] or once every working stage has drained (their last acks and publishes still go
    /// through).
    pub async fn start(url: &str, names: Names, stages: &Stages) -> anyhow::Result<Arc<Self>> {
        url.parse::<lapin::uri::AMQPUri>().map_err(|error| {
            anyhow::anyhow!("configuration: queue.url: {} is not an AMQP URL: {error}", redact_url(url))
        })?;
        // A failure here is not logged: the supervising task tries again at once and reports it.
        let first = match tokio::time::timeout(FIRST_CONNECT_WAIT, establish(url, &names)).await {
            Ok(Ok(link)) => Some(Arc::new(link)),
            Ok(Err(_)) | Err(_) => None,
        };
        let connected = first.is_some();
        let (link, _) = watch::channel(first);
        let this = Arc::new(Self {
            names,
            link,
            consumers: Mutex::new(Vec::new()),
            consumers_changed: Notify::new(),
            shutdown: stages.drained().child_token(),
        });
        metrics::gauge!(names::BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
        stages.spawn_support("rabbitmq-supervisor", supervise(this.clone(), url.to_string()));
        Ok(this)
    }

    /// The current connection, waiting up to [`PUBLISH_WAIT`] for one.
    pub async fn link(&self) -> Result<Arc<Link>, QueueError> {
        let mut watcher = self.link.subscribe();
        let wait = watcher.wait_for(|link| link.as_ref().is_some_and(|l| !l.broken.is_cancelled()));
        match tokio::time::timeout(PUBLISH_WAIT, wait).await {
            Ok(Ok(link)) => link.clone().ok_or_else(|| unavailable("not connected")),
            _ => Err(unavailable("not connected to RabbitMQ")),
        }
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.link
            .borrow()
            .as_ref()
            .is_some_and(|link| !link.broken.is_cancelled() && link.connection.status().connected())
    }

    /// Messages waiting in Herald's queues, by passive declarations on a short-lived channel of the
    /// current connection (a channel of its own: a failed declaration closes the channel it ran on).
    pub async fn depths(&self) -> Result<Vec<(&'static str, u64)>, lapin::Error> {
        let Some(link) = self.link.borrow().clone() else { return Ok(Vec::new()) };
        let channel = link.connection.create_channel().await?;
        // Passive: only asks; a queue that is missing is an error, not created with other arguments.
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let mut depths = Vec::with_capacity(4);
        for (label, queue) in [
            ("fanout", &self.names.fanout_queue),
            ("deliveries", &self.names.deliveries_queue),
            ("deliveries_scheduled", &self.names.scheduled_queue),
            ("dead_letter", &self.names.dead_queue),
        ] {
            let declared =
                channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
            depths.push((label, u64::from(declared.message_count())));
        }
        drop(channel.close(200, "depths read".into()).await);
        Ok(depths)
    }

    /// Adds a consumer, started on the current connection and on every later one.
    pub async fn register(&self, spec: ConsumerSpec) {
        self.consumers.lock().await.push(Arc::new(spec));
        self.consumers_changed.notify_one();
    }

    /// Stops the supervising task, which closes the connection (unacknowledged messages go back).
    pub async fn close(&self) {
        self.shutdown.cancel();
        let mut watcher = self.link.subscribe();
        drop(tokio::time::timeout(Duration::from_secs(5), watcher.wait_for(Option::is_none)).await);
    }
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(error.to_string())
}

/// Connects, declares the topology and opens the confirm channel.
async fn establish(url: &str, names: &Names) -> Result<Link, lapin::Error> {
    // Named, so an operator can tell Herald's connections apart in the management UI.
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("herald {}", env!("CARGO_PKG_VERSION")).into());
    let connection = Connection::connect(url, properties).await?;
    // A channel of its own: a failed declaration closes the channel it ran on.
    let channel = connection.create_channel().await?;
    topology::declare(&channel, names).await?;
    drop(channel.close(200, "declared".into()).await);
    let publisher = connection.create_channel().await?;
    // Publisher confirms: a publish is done only once the broker has the message (written to disk, for
    // persistent messages on durable queues).
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(Link { connection, publisher, broken: CancellationToken::new() })
}

/// Owns the connection: keeps one up, with its consumers, until shutdown.
async fn supervise(this: Arc<Supervisor>, url: String) {
    let _gone = GoneOnExit(this.clone());
    let mut delays = backoff();
    // "RabbitMQ unavailable" once when the connection is lost, "RabbitMQ back" once it is up again; the
    // failed reconnection attempts in between are logged at debug.
    let broker = Outage::new("RabbitMQ");
    loop {
        let current = this.link.borrow().clone();
        let link = match current {
            Some(link) if !link.broken.is_cancelled() => link,
            _ => {
                this.link.send_replace(None);
                let attempt = tokio::select! {
                    () = this.shutdown.cancelled() => break,
                    attempt = establish(&url, &this.names) => attempt,
                };
                match attempt.map_err(|error| format!("{error} ({})", redact_url(&url))) {
                    Ok(link) => {
                        broker.succeeded();
                        delays = backoff();
                        let link = Arc::new(link);
                        this.link.send_replace(Some(link.clone()));
                        metrics::gauge!(names::BROKER_CONNECTED).set(1.0);
                        link
                    }
                    Err(error) => {
                        let delay = delays.next().unwrap_or(Duration::from_secs(10));
                        broker.failed(&error);
                        tracing::debug!(%error, retry_in = ?delay, "RabbitMQ unreachable");
                        tokio::select! {
                            () = this.shutdown.cancelled() => break,
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        run_link(&this, &link).await;
        link.broken.cancel();
        this.link.send_replace(None);
        metrics::gauge!(names::BROKER_CONNECTED).set(0.0);
        close_within(&link, "reconnecting").await;
        if this.shutdown.is_cancelled() {
            break;
        }
        broker.failed(&"lost the connection; reconnecting");
    }
    metrics::gauge!(names::BROKER_CONNECTED).set(0.0);
    if let Some(link) = this.link.send_replace(None) {
        link.broken.cancel();
        close_within(&link, "shutting down").await;
    }
}

/// The longest a connection's close may take: a connection the broker dropped without a word may never
/// answer the close, and the supervisor must go on reconnecting (or stop) regardless.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

async fn close_within(link: &Link, reason: &str) {
    if tokio::time::timeout(CLOSE_WAIT, link.connection.close(200, reason.into())).await.is_err() {
        tracing::debug!(reason, "RabbitMQ did not answer the close in time; the connection is abandoned");
    }
}

/// Marks the connection gone when the supervising task ends, however it ends (a failed stage is
/// dropped), so that publishers stop waiting for it and [`Supervisor::close`] returns at once.
struct GoneOnExit(Arc<Supervisor>);

impl Drop for GoneOnExit {
    fn drop(&mut self) {
        if let Some(link) = self.0.link.send_replace(None) {
            link.broken.cancel();
        }
    }
}

/// Runs the consumers on one connection until it breaks or shutdown.
async fn run_link(this: &Arc<Supervisor>, link: &Arc<Link>) {
    let mut started = 0;
    let mut events = link.connection.events_listener();
    loop {
        let specs: Vec<Arc<ConsumerSpec>> =
            this.consumers.lock().await.iter().skip(started).cloned().collect();
        for spec in specs {
            started += 1;
            tokio::spawn(consume(link.clone(), spec));
        }
        tokio::select! {
            () = this.shutdown.cancelled() => return,
            () = link.broken.cancelled() => return,
            () = this.consumers_changed.notified() => {}
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
        // Not global: the limit is this consumer's, on its own channel.
        channel.basic_qos(spec.prefetch, BasicQosOptions { global: false }).await?;
        let consumer = channel
            .basic_consume(
                spec.queue.as_str().into(),
                // The broker names the consumer.
                "".into(),
                // Manual acks: a message is settled only once its outcome is recorded, so a consumer
                // that dies holding it hands it back.
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

/// Reconnection delays: from 200 ms doubling to 10 s, jittered so that workers do not reconnect in step.
fn backoff() -> impl Iterator<Item = Duration> {
    crate::retrying::delays(Duration::from_millis(200), Duration::from_secs(10))
}
