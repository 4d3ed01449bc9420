//! `herald dlq drain` against the real broker: a fan-out event in RabbitMQ's dead-letter queue gets its
//! missing deliveries created (and they arrive, signed), a delivery task there (a retry's) whose
//! delivery finished is removed without another attempt, a message Herald cannot read stays in the
//! queue; `--dry-run` changes nothing. The dead-lettered messages are real ones, taken off the app's own exchanges and republished
//! to the dead-letter exchange as the broker does when a message hits its delivery limit.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use serde_json::json;

use crate::{
    recover::{herald, run_herald},
    support::{
        app::{Mode, TestApp},
        receiver::{Accepts, Receiver},
    },
};

const WAIT: Duration = Duration::from_secs(20);

/// A copy of every message routed by `exchange` with `key`, on an exclusive queue.
async fn tap(channel: &Channel, exchange: &str, key: &str) -> lapin::Consumer {
    let options =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.expect("declare");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .basic_consume(queue.name().clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume")
}

async fn next_message(consumer: &mut lapin::Consumer) -> (BasicProperties, Vec<u8>) {
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a message")
        .expect("open")
        .expect("delivery");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    (delivery.properties, delivery.data)
}

async fn dead_letter_count(channel: &Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .expect("queue exists")
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_fans_dead_lettered_events_out_and_leaves_unreadable_messages() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn(Mode::Services).await;
    let amqp = std::env::var("HERALD_TEST_AMQP_URL").expect("services mode");
    let connection = Connection::connect(&amqp, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let names = herald::queue::rabbitmq::Names::new(app.queue_prefix().expect("services mode"));
    let mut events = tap(&channel, &names.events_exchange, "#").await;
    // The in-process worker fans out and delivers, so a first attempt skips the broker (the direct
    // lane); the retry the scheduler hands over is a real task message.
    let mut tasks = tap(&channel, &names.deliveries_exchange, "scheduled").await;

    let first = Receiver::start(|arrival| match arrival {
        0 => (500, vec![], Duration::ZERO),
        _ => (200, vec![], Duration::ZERO),
    })
    .await;
    let first_webhook = app.subscribe(&first, json!(["*"])).await;
    let event = app.send_event("item.created", json!({"n": 1})).await;
    first.wait_for(2, WAIT).await;
    let event_message = next_message(&mut events).await;
    let task_message = next_message(&mut tasks).await;
    // The delivery is recorded as succeeded (on its retry) before its task is drained.
    let delivery = app.wait_deliveries(first_webhook, 1).await[0]["id"].as_str().expect("id").to_string();
    app.wait_delivery(&delivery, WAIT, |d| d["status"] == "succeeded").await;
    let added = Receiver::verifying(Accepts::XSignature).await;
    app.subscribe(&added, json!(["item.created"])).await;

    // As the broker does when a message hits the delivery limit: onto the dead-letter exchange.
    let unreadable = (BasicProperties::default().with_message_id("not-herald".into()), b"{}".to_vec());
    for (properties, body) in [event_message, task_message, unreadable] {
        channel
            .basic_publish(
                names.dead_exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
    let until_queued = tokio::time::Instant::now() + WAIT;
    while dead_letter_count(&channel, &names.dead_queue).await < 3 {
        assert!(tokio::time::Instant::now() < until_queued, "the dead-letter queue holds the three messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let printed = herald(&app, &["dlq", "drain", "--dry-run"]).await;
    assert!(
        printed.contains(&format!("event {event} (item.created): would be fanned out again")),
        "{printed}"
    );
    assert!(printed.contains("1 delivery tasks: 0 would be made due at once"), "{printed}");
    assert!(printed.contains("1 messages this version cannot read"), "{printed}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(added.arrivals().is_empty(), "a dry run delivers nothing");
    assert_eq!(dead_letter_count(&channel, &names.dead_queue).await, 3, "a dry run puts every message back");

    let printed = herald(&app, &["dlq", "drain"]).await;
    assert!(
        printed.contains(&format!("event {event} (item.created): 1 deliveries created, 0 made due again")),
        "{printed}"
    );
    let arrivals = added.wait_for(1, WAIT).await;
    assert_eq!(arrivals[0].json()["id"], event.to_string());
    assert!(arrivals[0].x_signature_ok && arrivals[0].standard_ok, "signed with the new webhook's secret");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.arrivals().len(), 2, "the first subscriber, which had it, gets nothing more");
    assert_eq!(dead_letter_count(&channel, &names.dead_queue).await, 1, "only the unreadable message stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_in_embedded_mode_says_there_is_no_broker_queue() {
    let app = TestApp::spawn(Mode::Embedded).await;
    let output = run_herald(&app, &["dlq", "drain"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("embedded mode (no queue.url) has no broker dead-letter queue"), "{stderr}");
}
