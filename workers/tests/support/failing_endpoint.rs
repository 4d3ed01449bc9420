//! An endpoint that answers each delivery 500 a given number of times before it succeeds. It stands in
//! front of a verifying test receiver (`tests/it/support/receiver.rs`): it counts the requests of each
//! delivery (by `webhook-id`), answers 500 while a delivery has been seen at most `failures` times, and
//! passes the later ones on to the receiver, which records them and checks their signatures with its own
//! HMAC code, and answers with the receiver's status.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode, header},
};

use crate::support::receiver::{Accepts, Receiver};

#[derive(Clone)]
pub struct FailingEndpoint {
    /// The URL to subscribe.
    pub url: String,
    /// Where the requests it does not fail end up.
    pub receiver: Receiver,
}

impl FailingEndpoint {
    pub async fn start(failures: usize) -> Self {
        let receiver = Receiver::verifying(Accepts::XSignature).await;
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let client = reqwest::Client::new();
        let target = receiver.url.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (seen, client, target) = (seen.clone(), client.clone(), target.clone());
            // Spawned, so that a worker killed in the middle of a request does not cancel the count and
            // the hand-over half-way (axum drops a handler whose client went away).
            let handled = tokio::spawn(async move {
                let delivery = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let times = {
                    let mut seen = seen.lock().expect("lock");
                    let times = seen.entry(delivery.to_string()).or_default();
                    *times += 1;
                    *times
                };
                if times <= failures {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let mut forwarded = headers.clone();
                forwarded.remove(header::HOST);
                forwarded.remove(header::CONTENT_LENGTH);
                match client.post(&target).headers(forwarded).body(body).send().await {
                    Ok(answer) => StatusCode::from_u16(answer.status().as_u16()).expect("status"),
                    Err(_) => StatusCode::BAD_GATEWAY,
                }
            });
            async move { handled.await.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind endpoint");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, receiver }
    }
}
