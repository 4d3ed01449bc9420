//! Configuration: the compiled-in `config/default.toml`, then `config/default.toml` and
//! `config/{HERALD_ENV}.toml` from the configuration folder, then `HERALD__SECTION__KEY` environment
//! variables. [`Settings::load`] validates everything once, so a bad value stops the process at start-up
//! with one line naming the key; nothing later re-checks it.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

mod duration;
mod log_level;
mod mode;
mod retention;
mod secret;

pub use duration::HumanDuration;
use ipnet::IpNet;
pub use mode::Mode;
pub use retention::{MAX_BATCH_SIZE, RetentionSettings};
pub use secret::{Secret, SecretKey, parse_secret_keys, redact_url};
use serde::{Deserialize, Deserializer, de};

/// The compiled-in defaults, so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything Herald can be told, one section per concern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub queue: QueueSettings,
    pub auth: AuthSettings,
    pub secrets: SecretSettings,
    pub events: EventSettings,
    pub delivery: DeliverySettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    /// Optional in configuration files: every key in it is.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub admin: AdminSettings,
    /// Optional in configuration files: every key in it is.
    #[serde(default)]
    pub console: ConsoleSettings,
}

/// The web console served at `/console` (`crate::console`): its sessions and cookies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Serve the console at all.
    pub enabled: bool,
    /// A session unused for this long is signed out.
    pub idle_timeout: HumanDuration,
    /// A session ends this long after sign-in, however busy.
    pub absolute_timeout: HumanDuration,
    /// Always mark the session cookie `Secure` (Herald behind a TLS-terminating proxy).
    pub secure_cookies: bool,
    /// Believe `X-Forwarded-Proto: https` from the proxy in front and then mark the cookie `Secure`.
    pub trust_forwarded_proto: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout: HumanDuration(Duration::from_secs(30 * 60)),
            absolute_timeout: HumanDuration(Duration::from_secs(12 * 3600)),
            secure_cookies: false,
            trust_forwarded_proto: false,
        }
    }
}

/// The admin listener (`/metrics`, `/healthz`, `/readyz`) every process serves beside its work.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Its address; unset: [`AdminSettings::API_BIND`] for `herald serve`, [`AdminSettings::WORKER_BIND`]
    /// for `herald-worker` (two ports, so both run on one machine).
    pub bind: Option<SocketAddr>,
    /// Also serve `GET /metrics` on the public API port.
    pub public_metrics: bool,
}

impl AdminSettings {
    pub const API_BIND: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
    pub const WORKER_BIND: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the HTTP API listens on.
    pub bind: SocketAddr,
    /// Longest a request may take before it is answered 408.
    pub request_timeout: HumanDuration,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`; may hold a password, hence [`Secret`].
    pub url: Secret<String>,
    pub max_connections: u32,
    pub connect_timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// RabbitMQ URL; `None` selects the embedded queue.
    pub url: Option<Secret<String>>,
    /// Prefix of every exchange and queue name, so several Herald installations (or tests) can share a
    /// broker.
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret of accepted JWTs; `None` disables JWT authentication.
    pub jwt_secret: Option<Secret<String>>,
    /// Required `aud` of user JWTs.
    pub jwt_audience: String,
    /// Bound on how long a revoked key may still be accepted by another instance.
    pub key_cache_ttl: HumanDuration,
    /// Period of the batched write of key usage counters.
    pub usage_flush_interval: HumanDuration,
    /// Requests per second per API key; 0 disables the limit.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// `ID:BASE64,ID:BASE64`: the first key encrypts, all decrypt.
    pub keys: Option<Secret<String>>,
    /// Key file used when `keys` is unset.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// The catalog of event types (a list, or one comma-separated string from the environment).
    #[serde(deserialize_with = "string_or_list")]
    pub types: Vec<String>,
    pub idempotency_window: HumanDuration,
    /// Age after which an unpublished event is published again by the relay.
    pub relay_after: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub concurrency: usize,
    /// Requests in flight at once to one endpoint.
    pub per_endpoint_concurrency: usize,
    /// Tasks of the scheduled lane (retries, recoveries, replays, sweeps) unsettled at once per worker,
    /// within `concurrency` (a larger value counts as `concurrency`): the rest of the slots stay for
    /// first attempts.
    pub scheduled_concurrency: usize,
    pub retry_schedule: RetrySchedule,
    /// Fraction of each retry delay added or removed at random (0.2 = +/- 20 %).
    pub jitter: f64,
    /// Least wait after a 429 or a timeout.
    pub slow_down_floor: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub timeout: HumanDuration,
    pub max_response_bytes: usize,
    pub allow_private_targets: bool,
    #[serde(deserialize_with = "cidr_list")]
    pub allowed_cidrs: Vec<IpNet>,
    pub disable_after_dead: u32,
    /// How long a confirmed delivery may stay queued before the sweeper hands it over again.
    pub stuck_after: HumanDuration,
    /// How long the scheduler's claim on a due delivery lasts until the broker confirms its task; a
    /// worker that dies in between leaves the delivery to be claimed again after this, not after
    /// `stuck_after` (docs/architecture.md, "Claims and the longest wait after a crash").
    pub claim_lease: HumanDuration,
    pub scheduler_interval: HumanDuration,
    pub webhook_cache_ttl: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Trace export (`telemetry_otlp`; needs a build with the `otlp` feature).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP collector URL (`http://HOST:4318`; spans go to `/v1/traces` under it); `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// The exported `service.name`; `None`: the binary's name (`herald`, `herald-worker`).
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

/// Parsed from a string so that a wrong value is named in Herald's words, not the config crate's.
impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log.format must be text or json, not '{other}'")),
        }
    }
}

/// Which store a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// Holds the message only: `{:#}` would otherwise print it twice, as the error and as its source.
    #[error("configuration: {0}")]
    Load(String),
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> Self {
        ConfigError::Load(error.to_string())
    }
}

/// A `--config-dir` given on the command line must exist: a mistyped folder would otherwise mean the
/// built-in defaults without a word. (The default `config`, or `HERALD_CONFIG_DIR`, may be absent.)
pub fn check_config_dir_flag(config_dir: &std::path::Path) -> Result<(), ConfigError> {
    if config_dir.is_dir() {
        return Ok(());
    }
    Err(ConfigError::Load(format!(
        "--config-dir (HERALD_CONFIG_DIR) {} does not exist; leave it unset for the built-in defaults",
        config_dir.display()
    )))
}

impl Settings {
    /// Loads the layered configuration from `config_dir` and the environment, then validates it.
    pub fn load(config_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let environment = std::env::var("HERALD_ENV").ok().filter(|name| !name.is_empty());
        Self::load_from(config_dir, environment.as_deref(), config::Environment::default())
    }

    /// Like [`Settings::load`] with the environment layer given explicitly (tests use a map).
    pub fn load_from(
        config_dir: &std::path::Path,
        environment: Option<&str>,
        env_source: config::Environment,
    ) -> Result<Self, ConfigError> {
        use config::{File, FileFormat};
        let mut builder = config::Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from(config_dir.join("default.toml")).required(false));
        if let Some(environment) = environment {
            // Named explicitly, so a missing file is an error rather than silently the defaults.
            let path = config_dir.join(format!("{environment}.toml"));
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "HERALD_ENV={environment} but {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path));
        }
        let settings: Settings = builder
            .add_source(env_source.prefix("HERALD").prefix_separator("__").separator("__"))
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone (tests start from these).
    pub fn defaults() -> Self {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .expect("config/default.toml is valid");
        settings.validate().expect("config/default.toml passes validation");
        settings
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid { key, message: message.into() }
        }
        self.database_kind()?;
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if let Some(url) = &self.queue.url {
            let scheme = url.expose().split("://").next().unwrap_or_default();
            if !matches!(scheme, "amqp" | "amqps") || !url.expose().contains("://") {
                return Err(invalid(
                    "queue.url",
                    format!("unsupported scheme '{scheme}' (expected amqp:// or amqps://)"),
                ));
            }
        }
        if self.queue.prefix.is_empty()
            || !self.queue.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid("queue.prefix", "must be non-empty ASCII letters, digits, '.', '_' or '-'"));
        }
        if self.console.idle_timeout.get().is_zero()
            || self.console.absolute_timeout.get() < self.console.idle_timeout.get()
        {
            return Err(invalid(
                "console.idle_timeout",
                "must be more than zero and at most console.absolute_timeout",
            ));
        }
        if self.events.types.is_empty() {
            return Err(invalid("events.types", "the event catalog must list at least one type"));
        }
        for event_type in &self.events.types {
            if let Err(message) = crate::domain::EventType::check_syntax(event_type) {
                return Err(invalid("events.types", format!("'{event_type}': {message}")));
            }
        }
        if !(0.0..1.0).contains(&self.delivery.jitter) {
            return Err(invalid("delivery.jitter", "must be at least 0 and below 1"));
        }
        if self.delivery.concurrency == 0 || self.delivery.concurrency > usize::from(u16::MAX / 2) {
            return Err(invalid("delivery.concurrency", "must be between 1 and 32767"));
        }
        if self.delivery.per_endpoint_concurrency == 0 {
            return Err(invalid("delivery.per_endpoint_concurrency", "must be at least 1"));
        }
        if self.delivery.scheduled_concurrency == 0 {
            return Err(invalid("delivery.scheduled_concurrency", "must be at least 1"));
        }
        if self.delivery.claim_lease.get().is_zero()
            || self.delivery.claim_lease.get() > self.delivery.stuck_after.get()
        {
            return Err(invalid("delivery.claim_lease", "must be above 0 and at most delivery.stuck_after"));
        }
        self.retention.check().map_err(|(key, message)| invalid(key, message))?;
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.auth.rate_limit_per_second > 0 && self.auth.rate_limit_burst == 0 {
            return Err(invalid("auth.rate_limit_burst", "must be at least 1 when a rate limit is set"));
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose().len() < 16
        {
            return Err(invalid("auth.jwt_secret", "must be at least 16 characters"));
        }
        if let Some(keys) = &self.secrets.keys {
            parse_secret_keys(keys.expose()).map_err(|message| invalid("secrets.keys", message))?;
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && !url::Url::parse(endpoint).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
        {
            return Err(invalid("telemetry.otlp_endpoint", "must be an http:// or https:// URL"));
        }
        log_level::check(&self.log.level).map_err(|message| invalid("log.level", message))
    }

    /// The store the database URL selects.
    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.database.url.expose();
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("sqlite") => Ok(DatabaseKind::Sqlite),
            Some("postgres" | "postgresql") => Ok(DatabaseKind::Postgres),
            Some(scheme) => Err(ConfigError::Invalid {
                key: "database.url",
                message: format!("unsupported scheme '{scheme}' (expected sqlite:// or postgres://)"),
            }),
            None => Err(ConfigError::Invalid {
                key: "database.url",
                message: "not a URL (expected sqlite://PATH or postgres://USER@HOST/DB)".into(),
            }),
        }
    }
}

/// The delays between delivery attempts, e.g. `5s,30s,2m`: three retries, four attempts in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// Attempts in all: the first one plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX).saturating_add(1)
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|part| part.parse::<HumanDuration>().map(HumanDuration::get))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl<'de> Deserialize<'de> for RetrySchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = string_or_list(deserializer)?;
        items.join(",").parse().map_err(de::Error::custom)
    }
}

/// Accepts `["a", "b"]` (TOML) or `"a,b"` (environment variables).
fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::One(text) => {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        }
        Either::Many(items) => items,
    })
}

fn cidr_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    string_or_list(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| de::Error::custom(format!("'{text}' is not a CIDR such as 10.0.0.0/8")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
