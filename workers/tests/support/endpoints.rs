//! The storm's endpoints and what they received: real receivers on 127.0.0.1 (`tests/it/support`'s,
//! verifying every signature with their own HMAC code), one of them behind a [`FailingEndpoint`], each
//! subscribed to every event type through the API; and, per endpoint, when each event's delivery
//! succeeded (the first request its receiver got) and when requests came again after.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use super::failing_endpoint::FailingEndpoint;
use crate::support::receiver::{Accepts, Receiver};

/// One subscribed endpoint: the receiver its successful requests end up at.
pub struct Endpoint {
    pub receiver: Receiver,
    pub webhook: String,
}

impl Endpoint {
    /// `count` endpoints, the first failing each delivery `failures` times, the others answering 200.
    pub async fn start_all(base: &str, key: &str, count: usize, failures: usize) -> Vec<Endpoint> {
        let client = reqwest::Client::new();
        let mut endpoints = Vec::new();
        for n in 0..count {
            let (url, receiver) = if n == 0 {
                let failing = FailingEndpoint::start(failures).await;
                (failing.url, failing.receiver)
            } else {
                let receiver = Receiver::verifying(Accepts::XSignature).await;
                (receiver.url.clone(), receiver)
            };
            let response = client
                .post(format!("{base}/api/v1/webhooks"))
                .header("Authorization", format!("Bearer {key}"))
                .header("Content-Type", "application/json")
                .body(serde_json::json!({"url": url, "events": ["*"]}).to_string())
                .send()
                .await
                .expect("create a webhook");
            assert_eq!(response.status().as_u16(), 201, "webhook created");
            let created = crate::support::json_of(response).await;
            receiver.trust(created["secret"].as_str().expect("secret"));
            let webhook = created["id"].as_str().expect("id").to_string();
            endpoints.push(Endpoint { receiver, webhook });
        }
        endpoints
    }

    /// What it received so far.
    pub fn tally(&self) -> Tally {
        let mut per_event: HashMap<String, Vec<Instant>> = HashMap::new();
        let mut tally = Tally::default();
        for arrival in self.receiver.arrivals() {
            tally.requests += 1;
            if !(arrival.x_signature_ok && arrival.standard_ok) {
                tally.unsigned += 1;
            }
            let id = arrival.json()["id"].as_str().expect("the payload has an id").to_string();
            per_event.entry(id).or_default().push(arrival.at);
        }
        for (id, arrivals) in per_event {
            let duplicate =
                |at: &Instant| Duplicate { event_id: id.clone(), first_success: arrivals[0], at: *at };
            tally.duplicates.extend(arrivals[1..].iter().map(duplicate));
            tally.first_success.insert(id, arrivals[0]);
        }
        tally
    }
}

/// What one endpoint received.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per event id, when the request that succeeded arrived.
    pub first_success: HashMap<String, Instant>,
    pub requests: usize,
    /// Requests for a delivery that had already succeeded.
    pub duplicates: Vec<Duplicate>,
    /// Requests whose signatures did not verify.
    pub unsigned: usize,
}

/// A request for a delivery that had already succeeded.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub event_id: String,
    /// When the delivery's first successful request arrived.
    pub first_success: Instant,
    /// When this one arrived.
    pub at: Instant,
}

impl Duplicate {
    pub fn gap(&self) -> std::time::Duration {
        self.at.duration_since(self.first_success)
    }
}

pub fn tally_all(endpoints: &[Endpoint]) -> Vec<Tally> {
    endpoints.iter().map(Endpoint::tally).collect()
}

/// (webhook id, event id) of every expected delivery that has not succeeded.
pub fn missing(endpoints: &[Endpoint], tallies: &[Tally], expected: &HashSet<&str>) -> Vec<(String, String)> {
    let mut missing = Vec::new();
    for (endpoint, tally) in endpoints.iter().zip(tallies) {
        for event in expected.iter().filter(|event| !tally.first_success.contains_key(**event)) {
            missing.push((endpoint.webhook.clone(), event.to_string()));
        }
    }
    missing
}
