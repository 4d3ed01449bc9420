//! Herald: a webhook dispatcher. Applications send activity events; Herald signs each payload with the
//! subscribed endpoint's secret and delivers it with retries, a dead-letter queue and replay.
//!
//! The library holds everything; the `herald` binary (API) and `herald-worker` (workers) are thin.
//!
//! # Layout
//! Dependencies point down this list, never up:
//! - [`cli`] and `herald-worker`'s `main`: parse arguments, load [`config`], start [`telemetry`] (logs,
//!   the metrics recorder and the sampled gauges) and the admin listener ([`http::admin`]).
//! - [`services`]: the composition root: the handles every process shares (store, queue, secret box,
//!   SSRF policy, webhook cache, outbox publisher), built once for the running [`config::Mode`].
//! - `console`: the web console at `/console` (server-rendered pages over the same handlers as the API).
//! - [`app`]: the API process (HTTP state and background tasks); `http`: the routes, extractors and
//!   error answers, and the admin listener; `auth`: API keys, JWTs, rate limits, usage counting;
//!   [`readiness`]: what `/readyz` checks.
//! - `emit`: the one way an event enters (store commit + outbox); `outbox`: publisher and relay;
//!   [`retention`]: the job that removes expired data in bounded batches (run by `herald serve`).
//! - [`worker`]: fan-out, delivery (signing, sending, retry policy, the disable rule, the operational
//!   events recorded with outcomes), the scheduler;
//!   `webhook_cache`: webhooks as deliveries need them (URL, decrypted secrets, subscriptions), cached.
//! - [`queue`]: moves work between stages (RabbitMQ or the embedded queue); [`store`]: everything
//!   Herald keeps (SQLite or PostgreSQL), behind role-sized traits, endpoint statistics included.
//! - [`domain`] (parsed types: event types, URLs, secrets, API keys), [`crypto`] (sealed secrets),
//!   [`signature`] (the public signing functions), and the small tools `batch` (group commit),
//!   `retrying` (backoff for transient failures), `outage` (a lost database or broker logged once),
//!   `net_guard` (SSRF policy), `private_fs` (owner-only data files), [`shutdown`], [`stages`] (the owner of every long-running task: the first
//!   failure stops the process); `telemetry_otlp` (the optional trace exporter).
//!
//! `docs/architecture.md` walks an event's journey through them.

#![forbid(unsafe_code)]

pub mod app;
pub(crate) mod auth;
pub(crate) mod batch;
pub mod cli;
pub mod config;
pub(crate) mod console;
pub mod crypto;
pub mod domain;
pub(crate) mod emit;
pub mod http;
pub(crate) mod net_guard;
pub(crate) mod outage;
pub(crate) mod outbox;
pub(crate) mod private_fs;
pub mod queue;
pub mod readiness;
pub mod retention;
pub(crate) mod retrying;
pub mod services;
pub mod shutdown;
pub mod signature;
pub mod stages;
pub mod store;
pub mod telemetry;
pub(crate) mod telemetry_otlp;
#[cfg(test)]
pub(crate) mod test_store;
pub(crate) mod webhook_cache;
pub mod worker;

/// Installs the process-wide TLS crypto provider (rustls on ring) for outgoing HTTPS. Idempotent; every
/// binary calls it at start-up, before the first HTTP client is built.
pub fn install_tls_provider() {
    drop(rustls::crypto::ring::default_provider().install_default());
}

/// The receiver guide's Rust example runs as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../docs/receivers.md")]
pub struct ReceiversGuide;
