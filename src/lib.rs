//! Herald: a webhook dispatcher. Applications send activity events; Herald signs each payload with the
//! subscribed endpoint's secret and delivers it with retries, a dead-letter queue and replay.
//!
//! The library holds everything; the `herald` binary (API) and `herald-worker` (workers) are thin.
//! See `docs/architecture.md` for the map of modules.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod batch;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod net_guard;
pub mod outbox;
pub mod queue;
pub mod shutdown;
pub mod signature;
pub mod store;
pub mod telemetry;
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
