//! The HTTP side of a delivery: one shared client (a connection pool per host), connect timeout
//! `delivery.connect_timeout`, total `delivery.timeout`, no redirects (a 3xx is a failure), no proxy,
//! response bodies read up to `delivery.max_response_bytes`. The SSRF guard sits in the client's DNS
//! resolver (every address a name resolves to is checked) and before the request for IP-literal URLs.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::HeaderMap,
};
use url::{Host, Url};

use crate::{config::DeliverySettings, net_guard::TargetPolicy};

/// What an attempt's HTTP exchange produced.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub status: Option<u16>,
    pub headers: HeaderMap,
    /// The response body's first bytes (up to the limit) as they came, not necessarily UTF-8; made
    /// storable with the error text when the attempt is recorded ([`super::storable`]).
    pub body: Option<Bytes>,
    /// Why there is no status (connection refused, blocked address, timeout...), or what else went wrong
    /// (a redirect, a body cut short).
    pub error: Option<String>,
    /// The kind of `error` in one word (`blocked`, `unknown_host`, `timeout`, `connect`, `request`,
    /// `response`), for logs and traces: unlike `error`, it never holds a host name or a URL.
    pub error_class: Option<&'static str>,
    pub timed_out: bool,
    pub duration_ms: i64,
}

impl Exchange {
    /// Whether waiting cannot help: the SSRF policy refuses every address, or DNS says the name does
    /// not exist. Only a change of the webhook's URL (then a replay) can.
    pub fn is_permanent_failure(&self) -> bool {
        self.status.is_none() && matches!(self.error_class, Some("blocked" | "unknown_host"))
    }

    /// The attempt's outcome class, as `herald_attempts_total` labels it.
    pub fn outcome_class(&self) -> &'static str {
        match self.status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
            None if self.timed_out => "timeout",
            None if self.error_class == Some("blocked") => "ssrf_refused",
            None => "connect_error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    target_policy: Arc<TargetPolicy>,
    max_response_bytes: usize,
}

impl Sender {
    pub fn new(settings: &DeliverySettings, target_policy: Arc<TargetPolicy>) -> anyhow::Result<Self> {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(settings.connect_timeout.get())
            .timeout(settings.timeout.get())
            .pool_max_idle_per_host(settings.concurrency)
            .tcp_nodelay(true)
            .dns_resolver(GuardedResolver { target_policy: target_policy.clone() })
            .build()?;
        Ok(Self { client, target_policy, max_response_bytes: settings.max_response_bytes })
    }

    /// The most bytes of a response body kept, and of an error text stored.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// POSTs `body` to `url` with `headers`. Never fails: problems are described in the exchange.
    pub async fn post(&self, url: &Url, headers: HeaderMap, body: Bytes) -> Exchange {
        let started = Instant::now();
        let mut exchange = self.exchange(url, headers, body).await;
        exchange.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        exchange
    }

    async fn exchange(&self, url: &Url, headers: HeaderMap, body: Bytes) -> Exchange {
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(ip.into()),
            Some(Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(blocked) = self.target_policy.check(ip)
        {
            return Exchange {
                error: Some(blocked.to_string()),
                error_class: Some("blocked"),
                ..Exchange::default()
            };
        }
        let sent = self.client.post(url.clone()).headers(headers).body(body).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                return Exchange {
                    timed_out: error.is_timeout(),
                    error: Some(describe(&error)),
                    error_class: Some(classify(&error)),
                    ..Exchange::default()
                };
            }
        };
        let status = response.status();
        let mut exchange = Exchange {
            status: Some(status.as_u16()),
            headers: std::mem::take(response.headers_mut()),
            ..Exchange::default()
        };
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_bytes.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= self.max_response_bytes {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    exchange.timed_out = error.is_timeout();
                    exchange.error = Some(format!("reading the response: {}", describe(&error)));
                    exchange.error_class = Some(if error.is_timeout() { "timeout" } else { "response" });
                    break;
                }
            }
        }
        if status.is_redirection() {
            let location = exchange.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("?");
            exchange.error = Some(format!("redirects are not followed ({status} to {location})"));
        }
        exchange.body = (!body.is_empty()).then(|| Bytes::from(body));
        exchange
    }
}

/// The class of an error that left no status.
fn classify(error: &reqwest::Error) -> &'static str {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<AllBlocked>() {
            return "blocked";
        }
        if cause.is::<NoSuchName>() {
            return "unknown_host";
        }
        source = cause.source();
    }
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// An error and its causes on one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timed out".to_string() } else { String::new() };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.is_empty() { error.to_string() } else { text }
}

/// Resolves names and drops every address the SSRF policy refuses; a name left with none fails.
#[derive(Debug, Clone)]
struct GuardedResolver {
    target_policy: Arc<TargetPolicy>,
}

#[derive(Debug, thiserror::Error)]
#[error("every address of {name} is blocked: {reason}")]
struct AllBlocked {
    name: String,
    reason: String,
}

/// DNS answered that the name does not exist (not a timeout or a server failure, which may pass).
#[derive(Debug, thiserror::Error)]
#[error("the host {name} does not exist ({answer}); fix the webhook's URL, then replay")]
struct NoSuchName {
    name: String,
    answer: String,
}

/// getaddrinfo's "no such name" (`EAI_NONAME`, and `EAI_NODATA` for a name without addresses), as
/// the standard library words it on Linux and macOS; temporary failures (`EAI_AGAIN`) are not.
fn name_does_not_exist(error: &std::io::Error) -> bool {
    let text = error.to_string();
    ["Name or service not known", "No address associated with hostname", "nodename nor servname"]
        .iter()
        .any(|answer| text.contains(answer))
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let target_policy = self.target_policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((host.clone(), 0)).await {
                Ok(addresses) => addresses.collect(),
                Err(error) if name_does_not_exist(&error) => {
                    let error = NoSuchName { name: host, answer: error.to_string() };
                    return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>);
                }
                Err(error) => return Err(error.into()),
            };
            let mut reason = String::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match target_policy.check(address.ip()) {
                    Ok(()) => true,
                    Err(blocked) => {
                        reason = blocked.to_string();
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(
                    Box::new(AllBlocked { name: host, reason }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
