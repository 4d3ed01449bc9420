//! Publishing to RabbitMQ through the outbox: a consumer bound to the events exchange receives every
//! accepted event exactly as stored, and an outage of Herald's broker connection loses nothing: accepted
//! events stay unpublished and are published once the broker is reachable again (once, not by every
//! relay pass that waited for it).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::{
    events::send,
    support::{
        app::{Mode, TestApp},
        proxy::broker_proxy,
        receiver::Receiver,
    },
};

/// An exclusive queue bound to the test app's events exchange, and its consumer.
async fn bind_consumer(app: &TestApp) -> (Connection, lapin::Consumer) {
    let amqp = std::env::var("HERALD_TEST_AMQP_URL").expect("services mode");
    let connection = Connection::connect(&amqp, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let names = herald::queue::rabbitmq::Names::new(app.queue_prefix().expect("services mode"));
    let options =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.expect("declare");
    channel
        .queue_bind(
            queue.name().clone(),
            names.events_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let consumer = channel
        .basic_consume(queue.name().clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    (connection, consumer)
}

/// Receives messages until every id in `expected` has arrived; checks each body against the store.
async fn receive_all(app: &TestApp, consumer: &mut lapin::Consumer, expected: &[Uuid]) {
    let mut missing: std::collections::HashSet<Uuid> = expected.iter().copied().collect();
    while !missing.is_empty() {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("every event arrives within 20 s")
            .expect("stream open")
            .expect("delivery");
        let id: Uuid =
            delivery.properties.message_id().as_ref().expect("message_id").as_str().parse().expect("uuid");
        assert!(missing.contains(&id) || !expected.contains(&id), "event {id} was published twice");
        let stored = app.state.store.get_event(id).await.expect("read").expect("published events are stored");
        assert_eq!(delivery.data, stored.payload.as_bytes(), "the body is exactly the stored payload");
        assert_eq!(delivery.routing_key.as_str(), stored.event_type, "routed by event type");
        assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
        missing.remove(&id);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

/// Fails if any of `published` arrives again within `window`: published once it was, not again.
async fn assert_not_published_again(consumer: &mut lapin::Consumer, published: &[Uuid], window: Duration) {
    while let Ok(Some(delivery)) = tokio::time::timeout(window, consumer.next()).await {
        let delivery = delivery.expect("delivery");
        let id = delivery.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default();
        assert!(
            !published.iter().any(|p| p.to_string() == id),
            "event {id} was published again after it had arrived (a relay pass before its mark)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_consumer_receives_events_as_stored() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn(Mode::Services).await;
    let (_connection, mut consumer) = bind_consumer(&app).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let event = ["item.created", "item.updated", "comment.created"][i % 3];
        let (status, accepted) =
            send(&app, json!({"event": event, "data": {"i": i, "text": "caf\u{e9} \"quoted\""}})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(accepted["id"].as_str().expect("id").parse().expect("uuid"));
    }
    receive_all(&app, &mut consumer, &ids).await;
    // Marks are written a moment after the confirms, gathered (`outbox::MARK_GATHERING`).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for id in &ids {
        while app.state.store.get_event(*id).await.expect("read").expect("stored").published_at.is_none() {
            assert!(std::time::Instant::now() < deadline, "confirmed event {id} is not marked published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing() {
    if !Mode::services_available() {
        return;
    }
    let (proxy, through_proxy) = broker_proxy().await;
    let app = TestApp::spawn_with(Mode::Services, |settings| {
        settings.queue.url = Some(herald::config::Secret::new(through_proxy.to_string()));
        settings.events.relay_after = herald::config::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let (_connection, mut consumer) = bind_consumer(&app).await;

    proxy.down();
    // Once Herald knows the broker is gone: a publish racing the cut may reach the broker with its
    // confirm lost, and be published again by the relay (at least once, but not what this test is about).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.call(reqwest::Method::GET, "/readyz", None, None).await.0 != StatusCode::SERVICE_UNAVAILABLE {
        assert!(std::time::Instant::now() < deadline, "Herald notices the broker is gone within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, accepted) = send(&app, json!({"event": "item.created", "data": {"i": i}})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "events are accepted while the broker is unreachable");
        ids.push(accepted["id"].as_str().expect("id").parse::<Uuid>().expect("uuid"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let stored = app.state.store.get_event(*id).await.expect("read").expect("committed");
        assert!(stored.published_at.is_none(), "nothing can be confirmed during the outage");
    }
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "readiness names the broker: {ready}");
    assert!(ready["error"].as_str().unwrap_or_default().contains("rabbitmq"), "{ready}");

    proxy.up();
    receive_all(&app, &mut consumer, &ids).await;
    // The relay's passes during the outage each waited for the broker; the one that published the
    // events is not followed at once by another that finds them still unmarked.
    assert_not_published_again(&mut consumer, &ids, Duration::from_secs(3)).await;
    for _ in 0..100 {
        let mut published = 0;
        for id in &ids {
            published += usize::from(
                app.state.store.get_event(*id).await.expect("read").expect("e").published_at.is_some(),
            );
        }
        if published == ids.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the events were delivered but not marked published");
}

/// RabbitMQ unreachable when Herald starts (API and in-process workers, as `herald serve` and
/// `herald-worker` start): it starts anyway, is not ready (naming the broker), accepts events into the
/// outbox, and publishes and delivers them once the broker is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_starts_while_the_broker_is_down() {
    if !Mode::services_available() {
        return;
    }
    let (proxy, through_proxy) = broker_proxy().await;
    proxy.down();
    let starting = TestApp::spawn_with(Mode::Services, |settings| {
        settings.queue.url = Some(herald::config::Secret::new(through_proxy.to_string()));
        settings.events.relay_after = herald::config::HumanDuration(Duration::from_secs(1));
    });
    let app = tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("Herald starts without the broker");
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not ready without the broker: {ready}");
    assert!(ready["error"].as_str().unwrap_or_default().contains("rabbitmq"), "names the broker: {ready}");
    let receiver = Receiver::ok().await;
    app.subscribe(&receiver, json!(["item.created"])).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, accepted) = send(&app, json!({"event": "item.created", "data": {"i": i}})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "events are accepted into the outbox: {accepted}");
        ids.push(accepted["id"].as_str().expect("id").parse::<Uuid>().expect("uuid"));
    }

    proxy.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut published = 0;
        for id in &ids {
            let event = app.state.store.get_event(*id).await.expect("read").expect("committed");
            published += usize::from(event.published_at.is_some());
        }
        if published == ids.len() && receiver.arrivals().len() >= ids.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{published} of {} published, {} delivered",
            ids.len(),
            receiver.arrivals().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "ready once connected: {ready}");
}

/// `herald serve` itself, in production mode with RabbitMQ unreachable as it starts: it stays up, not
/// ready, retrying; the outage is logged once when it starts and once when it ends; then it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_the_broker_and_logs_the_outage_once() {
    if !Mode::services_available() {
        return;
    }
    let database = crate::support::db::TestDatabase::postgres().await.expect("services");
    let (proxy, through_proxy) = broker_proxy().await;
    proxy.down();
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
        .env("HERALD__ADMIN__BIND", "127.0.0.1:0")
        .env("HERALD__DATABASE__URL", &database.url)
        .env("HERALD__QUEUE__URL", through_proxy.as_str())
        .env("HERALD__QUEUE__PREFIX", &prefix)
        .env("HERALD__SECRETS__KEYS", crate::support::db::TEST_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve starts");
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let ready = || async {
        let response = client.get(&readyz).send().await.ok()?;
        Some((response.status(), crate::support::json_of(response).await))
    };
    // Several reconnection attempts (200 ms, doubling) while the broker stays unreachable.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "serve keeps running: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (status, body) = ready().await.expect("serve answers while the broker is down");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("rabbitmq"), "{body}");

    proxy.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ready().await.map(|(status, _)| status) != Some(StatusCode::OK) {
        assert!(std::time::Instant::now() < deadline, "ready once the broker is reachable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status());
    let status = child.wait().expect("serve exits");
    let stderr = std::fs::read_to_string(&log).expect("log");
    crate::support::app::delete_queues(&std::env::var("HERALD_TEST_AMQP_URL").expect("amqp"), &prefix);
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr.matches("RabbitMQ unavailable").count(), 1, "one line when lost: {stderr}");
    assert_eq!(stderr.matches("RabbitMQ back").count(), 1, "one line when back: {stderr}");
    // (The HTTP layer logs each 503 of /readyz itself: those lines are the probes', not the broker's.)
    let warnings = stderr
        .lines()
        .filter(|line| !line.contains("tower_http") && (line.contains(" WARN ") || line.contains(" ERROR ")))
        .count();
    assert_eq!(warnings, 1, "nothing else is logged per attempt: {stderr}");
}
