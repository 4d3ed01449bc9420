//! A running Herald for a test: its own database, its own queue names (RabbitMQ) and a random port on
//! 127.0.0.1, served by the same code as `herald serve`, plus an admin API key and HTTP helpers.

use std::time::Duration;

use herald::{app::App, config::Settings, http::AppState, queue::DynQueue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::db::TestDatabase;

/// The HS256 secret test apps accept JWTs signed with.
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough";

/// A JWT signed with [`JWT_SECRET`] carrying `claims`.
pub fn jwt(claims: &Value) -> String {
    jwt_with(&serde_json::json!({"alg": "HS256", "typ": "JWT"}), claims, JWT_SECRET)
}

pub fn jwt_with(header: &Value, claims: &Value, secret: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use hmac::{KeyInit, Mac};
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Which backends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQLite and the in-process queue.
    Embedded,
    /// PostgreSQL and RabbitMQ (`HERALD_TEST_DATABASE_URL`, `HERALD_TEST_AMQP_URL`).
    Services,
}

impl Mode {
    /// Whether the services variant can run (panics if it must and cannot).
    pub fn services_available() -> bool {
        super::service_env("HERALD_TEST_DATABASE_URL").is_some()
            && super::service_env("HERALD_TEST_AMQP_URL").is_some()
    }
}

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub organization_id: uuid::Uuid,
    pub admin_id: uuid::Uuid,
    pub state: AppState,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub database: TestDatabase,
    queue_prefix: Option<(String, String)>,
}

impl TestApp {
    pub async fn spawn(mode: Mode) -> Self {
        Self::spawn_with(mode, |_| {}).await
    }

    /// Starts Herald with test settings, adjusted by `configure`.
    pub async fn spawn_with(mode: Mode, configure: impl FnOnce(&mut Settings)) -> Self {
        Self::launch(mode, configure, true, |queue| queue).await
    }

    /// Like [`Self::spawn_with`], with the queue that the API and the workers use replaced by
    /// `wrap(queue)` (a queue that fails or stalls where a test needs it to).
    pub async fn spawn_with_queue(
        mode: Mode,
        configure: impl FnOnce(&mut Settings),
        wrap: impl FnOnce(DynQueue) -> DynQueue,
    ) -> Self {
        Self::launch(mode, configure, true, wrap).await
    }

    /// The API alone, for tests that run `herald-worker` processes themselves (services mode).
    pub async fn spawn_api_only(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::launch(Mode::Services, configure, false, |queue| queue).await
    }

    async fn launch(
        mode: Mode,
        configure: impl FnOnce(&mut Settings),
        in_process_workers: bool,
        wrap: impl FnOnce(DynQueue) -> DynQueue,
    ) -> Self {
        herald::install_tls_provider();
        let database = match mode {
            Mode::Embedded => TestDatabase::sqlite(),
            Mode::Services => TestDatabase::postgres().await.expect("services are available"),
        };
        let mut settings = database.settings();
        let mut queue_prefix = None;
        if mode == Mode::Services {
            let amqp = std::env::var("HERALD_TEST_AMQP_URL").expect("HERALD_TEST_AMQP_URL");
            let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
            settings.queue.url = Some(herald::config::Secret::new(amqp.clone()));
            settings.queue.prefix = prefix.clone();
            queue_prefix = Some((amqp, prefix));
        }
        settings.server.bind = "127.0.0.1:0".parse().expect("addr");
        settings.delivery.allow_private_targets = true;
        settings.auth.jwt_secret = Some(herald::config::Secret::new(JWT_SECRET.to_string()));
        settings.auth.usage_flush_interval = herald::config::HumanDuration(Duration::from_millis(100));
        // Fast, deterministic retries: tests that time them know the schedule exactly.
        settings.delivery.retry_schedule = "1s,2s,4s".parse().expect("schedule");
        settings.delivery.jitter = 0.0;
        settings.delivery.slow_down_floor = herald::config::HumanDuration(Duration::from_secs(1));
        settings.delivery.scheduler_interval = herald::config::HumanDuration(Duration::from_millis(100));
        settings.delivery.webhook_cache_ttl = herald::config::HumanDuration(Duration::from_millis(200));
        settings.server.shutdown_grace = herald::config::HumanDuration(Duration::from_secs(5));
        settings.log.level = "warn".into();
        configure(&mut settings);
        drop(herald::telemetry::init(&settings.log, &settings.telemetry));
        let shutdown = CancellationToken::new();
        let stages = herald::stages::Stages::new(shutdown.clone(), settings.server.shutdown_grace.get());
        let mut services =
            herald::services::Services::connect(settings, &stages).await.expect("Herald connects");
        services.queue = wrap(services.queue);
        let app = App::start(services.clone(), stages.clone()).await.expect("Herald starts");
        let state = app.state.clone();
        let (bootstrap, key) = herald::app::bootstrap(&state.store, "test org", "admin@test.example", false)
            .await
            .expect("bootstrap")
            .expect("created");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(app.serve(listener));
        if mode == Mode::Services && in_process_workers {
            // What `herald-worker` runs, in this process (embedded mode runs it inside the App).
            herald::worker::start(services, herald::worker::Roles::ALL, &stages)
                .await
                .expect("workers start");
        }
        Self {
            base,
            admin_key: key.expose().to_string(),
            organization_id: bootstrap.organization.id,
            admin_id: bootstrap.admin.id,
            state,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            shutdown,
            server: Some(server),
            database,
            queue_prefix,
        }
    }

    /// The queue name prefix of a services-mode app (for binding test consumers).
    pub fn queue_prefix(&self) -> Option<&str> {
        self.queue_prefix.as_ref().map(|(_, prefix)| prefix.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with `key` as bearer token and an optional JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, json)
    }

    /// `call` as the bootstrap admin.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin_key.clone()), body).await
    }

    /// Adds a user through the API and returns their id and a new API key of theirs.
    pub async fn user_with_key(&self, email: &str, role: &str) -> (uuid::Uuid, String) {
        let (status, user) = self
            .admin(Method::POST, "/api/v1/users", Some(serde_json::json!({"email": email, "role": role})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let id: uuid::Uuid = user["id"].as_str().expect("id").parse().expect("uuid");
        let (status, key) = self
            .admin(
                Method::POST,
                &format!("/api/v1/api-keys?user_id={id}"),
                Some(serde_json::json!({"name": "k", "purpose": "custom"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        (id, key["key"].as_str().expect("key").to_string())
    }

    /// Environment variables giving a `herald-worker` process this app's settings.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let s = &self.state.settings;
        let d = &s.delivery;
        let duration = |value: herald::config::HumanDuration| format!("{}ms", value.get().as_millis());
        let schedule: Vec<String> =
            d.retry_schedule.0.iter().map(|delay| format!("{}ms", delay.as_millis())).collect();
        vec![
            ("HERALD__DATABASE__URL".into(), self.database.url.clone()),
            (
                "HERALD__QUEUE__URL".into(),
                s.queue.url.as_ref().map(|u| u.expose().clone()).unwrap_or_default(),
            ),
            ("HERALD__QUEUE__PREFIX".into(), s.queue.prefix.clone()),
            ("HERALD__SECRETS__KEYS".into(), super::db::TEST_KEY.into()),
            ("HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS".into(), d.allow_private_targets.to_string()),
            ("HERALD__DELIVERY__RETRY_SCHEDULE".into(), schedule.join(",")),
            ("HERALD__DELIVERY__JITTER".into(), d.jitter.to_string()),
            ("HERALD__DELIVERY__CONCURRENCY".into(), d.concurrency.to_string()),
            ("HERALD__DELIVERY__SCHEDULER_INTERVAL".into(), duration(d.scheduler_interval)),
            ("HERALD__DELIVERY__STUCK_AFTER".into(), duration(d.stuck_after)),
            ("HERALD__DELIVERY__CLAIM_LEASE".into(), duration(d.claim_lease)),
            ("HERALD__DELIVERY__WEBHOOK_CACHE_TTL".into(), duration(d.webhook_cache_ttl)),
            ("HERALD__SERVER__SHUTDOWN_GRACE".into(), duration(s.server.shutdown_grace)),
            ("HERALD__LOG__LEVEL".into(), "warn".into()),
            ("HERALD__ADMIN__BIND".into(), "127.0.0.1:0".into()),
        ]
    }

    /// Stores a webhook subscribed to every type directly, past the API's checks (a URL the API would
    /// refuse, a secret sealed under another key); `seal` may change the sealed secret. Returns its id.
    pub async fn store_webhook(
        &self,
        url: &str,
        seal: impl FnOnce(herald::crypto::Sealed) -> herald::crypto::Sealed,
    ) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        let sealed = self.state.secrets.seal("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==", id.as_bytes());
        let webhook = herald::store::NewWebhook {
            id,
            organization_id: self.organization_id,
            url: url.to_string(),
            events: "*".into(),
            secret: seal(sealed),
            description: None,
            created_at: herald::domain::now(),
        };
        self.state.store.create_webhook(&webhook).await.expect("stored");
        id
    }

    /// Creates a webhook for `receiver` through the API and tells the receiver its secret.
    pub async fn subscribe(&self, receiver: &super::receiver::Receiver, events: Value) -> uuid::Uuid {
        let (status, created) = self
            .admin(
                Method::POST,
                "/api/v1/webhooks",
                Some(serde_json::json!({"url": receiver.url, "events": events})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        receiver.trust(created["secret"].as_str().expect("secret"));
        created["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// Sends an event through the API; returns its id.
    pub async fn send_event(&self, event_type: &str, data: Value) -> uuid::Uuid {
        let (status, accepted) = self
            .admin(
                Method::POST,
                "/api/v1/events",
                Some(serde_json::json!({"event": event_type, "data": data})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        accepted["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// The deliveries of a webhook (newest first), through the API.
    pub async fn deliveries(&self, webhook: uuid::Uuid) -> Vec<Value> {
        let (status, page) =
            self.admin(Method::GET, &format!("/api/v1/webhooks/{webhook}/deliveries?limit=200"), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["deliveries"].as_array().expect("deliveries").clone()
    }

    /// Waits until a webhook has at least `count` deliveries; returns them (newest first).
    pub async fn wait_deliveries(&self, webhook: uuid::Uuid, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let deliveries = self.deliveries(webhook).await;
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} deliveries expected, {} found",
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls one delivery until `done` says so (or panics after `timeout`).
    pub async fn wait_delivery(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (status, delivery) = self.admin(Method::GET, &format!("/api/v1/deliveries/{id}"), None).await;
            assert_eq!(status, StatusCode::OK, "{delivery}");
            if done(&delivery) {
                return delivery;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "delivery {id} did not reach the expected state: {delivery}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the store holds on disk, as text: the SQLite file and its WAL, or a `pg_dump`.
    pub fn store_dump(&self) -> String {
        let bytes: Vec<u8> = if self.database.url.starts_with("sqlite://") {
            let path = self.database.url.trim_start_matches("sqlite://").to_string();
            ["", "-wal"]
                .iter()
                .filter_map(|suffix| std::fs::read(format!("{path}{suffix}")).ok())
                .flatten()
                .collect()
        } else {
            let output =
                std::process::Command::new("pg_dump").arg(&self.database.url).output().expect("pg_dump runs");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            output.stdout
        };
        assert!(bytes.len() > 1000, "the dump has the data");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let Some((amqp, prefix)) = self.queue_prefix.take() else { return };
        delete_queues(&amqp, &prefix);
    }
}

/// Removes the exchanges and queues of `prefix` from the shared broker.
pub fn delete_queues(amqp: &str, prefix: &str) {
    let (amqp, prefix) = (amqp.to_string(), prefix.to_string());
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let Ok(connection) =
                lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await
            else {
                return;
            };
            let Ok(channel) = connection.create_channel().await else { return };
            let names = herald::queue::rabbitmq::Names::new(&prefix);
            for queue in
                [&names.fanout_queue, &names.deliveries_queue, &names.scheduled_queue, &names.dead_queue]
            {
                drop(channel.queue_delete(queue.as_str().into(), Default::default()).await);
            }
            for exchange in [&names.events_exchange, &names.deliveries_exchange, &names.dead_exchange] {
                drop(channel.exchange_delete(exchange.as_str().into(), Default::default()).await);
            }
            drop(connection.close(200, "test done".into()).await);
        });
    });
    drop(cleanup.join());
}
