//! Real webhook receivers on 127.0.0.1 for tests: each verifies `X-Signature` (and `X-Signature-Next`)
//! and the Standard Webhooks signature with its own HMAC code (not Herald's), records every request, and
//! answers as the test says (with `received`, or with the raw bytes of a [`Receiver::answering`] one), or,
//! for a [`Receiver::verifying`] one, 401 to a request it cannot verify.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{KeyInit, Mac};
use tokio::sync::Notify;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What receivers answer unless told otherwise.
const RECEIVED: &[u8] = b"received";

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `X-Signature` matched one of the receiver's secrets (the seed contract: one header).
    pub x_signature_ok: bool,
    /// `X-Signature-Next` (sent during a secret rotation) matched one of the receiver's secrets.
    pub x_signature_next_ok: bool,
    /// `webhook-signature` had a `v1,` entry matching one of the receiver's secrets.
    pub standard_ok: bool,
}

impl Arrival {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// How to answer request number `n` (0-based): status, extra headers, delay before answering.
pub type Reply = (u16, Vec<(&'static str, String)>, Duration);

/// Which hex signature header a [`Receiver::verifying`] receiver checks (besides `webhook-signature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// The seed contract: `X-Signature` only.
    XSignature,
    /// `X-Signature` or `X-Signature-Next`, as docs/receivers.md tells receivers to check.
    XSignatureOrNext,
}

struct Shared {
    secrets: Mutex<Vec<String>>,
    /// A verifying receiver answers 401 to a request whose signatures it cannot verify.
    verify: Option<Accepts>,
    arrivals: Mutex<Vec<Arrival>>,
    reply: Box<dyn Fn(usize) -> Reply + Send + Sync>,
    /// The body of every answer, sent byte for byte.
    body: Bytes,
    arrived: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn ok() -> Self {
        Self::start(|_| (200, vec![], Duration::ZERO)).await
    }

    pub async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::spawn(None, Box::new(reply), Bytes::from_static(RECEIVED)).await
    }

    /// A receiver answering as `reply` says, with `body` (any bytes, not necessarily UTF-8) as the body.
    pub async fn answering(
        body: &'static [u8],
        reply: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::spawn(None, Box::new(reply), Bytes::from_static(body)).await
    }

    /// A receiver answering 200 to what it verifies with its secrets (the `accepts` header and
    /// `webhook-signature`) and 401 to anything else, as a real receiver does.
    pub async fn verifying(accepts: Accepts) -> Self {
        Self::spawn(Some(accepts), Box::new(|_| (200, vec![], Duration::ZERO)), Bytes::from_static(RECEIVED))
            .await
    }

    async fn spawn(
        verify: Option<Accepts>,
        reply: Box<dyn Fn(usize) -> Reply + Send + Sync>,
        body: Bytes,
    ) -> Self {
        let shared = Arc::new(Shared {
            secrets: Mutex::new(Vec::new()),
            verify,
            arrivals: Mutex::new(Vec::new()),
            reply,
            body,
            arrived: Notify::new(),
        });
        let handler_shared = shared.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let shared = handler_shared.clone();
            async move { receive(shared, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// The secrets signatures are checked against (set once the webhook is created).
    pub fn trust(&self, secret: &str) {
        self.shared.secrets.lock().expect("lock").push(secret.to_string());
    }

    /// Forgets every secret and trusts `secret` only (a receiver switched to a rotated secret).
    pub fn switch_to(&self, secret: &str) {
        *self.shared.secrets.lock().expect("lock") = vec![secret.to_string()];
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().expect("lock").clone()
    }

    /// Waits until at least `count` requests arrived.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let arrivals = self.arrivals();
            if arrivals.len() >= count {
                return arrivals;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "expected {count} requests at {}, got {} within {timeout:?}",
                self.url,
                arrivals.len()
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

async fn receive(shared: Arc<Shared>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let secrets = shared.secrets.lock().expect("lock").clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let hex_matches = |name: &str| {
        let given = header(name);
        secrets.iter().any(|secret| {
            let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("key");
            mac.update(&body);
            hex::encode(mac.finalize().into_bytes()) == given
        })
    };
    let x_signature_ok = hex_matches("x-signature");
    let x_signature_next_ok = hex_matches("x-signature-next");
    let signed = format!("{}.{}.", header("webhook-id"), header("webhook-timestamp"));
    let standard_ok = secrets.iter().any(|secret| {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .unwrap_or_else(|| secret.as_bytes().to_vec());
        let mut mac = HmacSha256::new_from_slice(&key).expect("key");
        mac.update(signed.as_bytes());
        mac.update(&body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        header("webhook-signature").split(' ').any(|candidate| candidate == expected)
    });
    let index = {
        let mut arrivals = shared.arrivals.lock().expect("lock");
        arrivals.push(Arrival {
            at: Instant::now(),
            headers: headers.clone(),
            body,
            x_signature_ok,
            x_signature_next_ok,
            standard_ok,
        });
        arrivals.len() - 1
    };
    shared.arrived.notify_waiters();
    let verified = match shared.verify {
        None => true,
        Some(Accepts::XSignature) => x_signature_ok && standard_ok,
        Some(Accepts::XSignatureOrNext) => (x_signature_ok || x_signature_next_ok) && standard_ok,
    };
    let (status, extra, delay) = if verified { (shared.reply)(index) } else { (401, vec![], Duration::ZERO) };
    tokio::time::sleep(delay).await;
    let mut response = (StatusCode::from_u16(status).expect("status"), shared.body.clone()).into_response();
    for (name, value) in extra {
        response.headers_mut().insert(name, value.parse().expect("header value"));
    }
    response
}

/// A listener that only counts the connections made to it (for the SSRF tests).
pub struct Canary {
    pub port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Canary {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind canary");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { port, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}
