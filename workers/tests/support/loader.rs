//! A client sending `POST /events` at a steady pace with a few requests in flight, through refusals (503
//! while the database is down) and connection errors, recording every answer and when it came.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

/// What one `POST /events` got.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 202, with the event's id.
    Accepted(String),
    /// Any other status.
    Refused(u16),
    /// No answer: the connection failed or the request timed out.
    Failed,
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub sent_at: Instant,
    pub answered_at: Instant,
    pub answer: Answer,
}

/// How hard the loader sends.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub per_second: u32,
    /// Requests open at once at most; the pace slows down rather than open more.
    pub in_flight: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    authorization: String,
}

impl Client {
    pub fn new(base: &str, key: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Self { http, url: format!("{base}/api/v1/events"), authorization: format!("Bearer {key}") }
    }

    /// Sends event number `n` once.
    pub async fn send(&self, n: usize) -> Sent {
        let sent_at = Instant::now();
        let body = serde_json::json!({"event": "item.created", "data": {"n": n}}).to_string();
        let response = self
            .http
            .post(&self.url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await;
        let answer = match response {
            Ok(response) if response.status().as_u16() == 202 => match response.bytes().await {
                Ok(bytes) => {
                    let accepted: serde_json::Value =
                        serde_json::from_slice(&bytes).expect("202 has a JSON body");
                    Answer::Accepted(accepted["id"].as_str().expect("202 names the event").to_string())
                }
                Err(_) => Answer::Failed,
            },
            Ok(response) => Answer::Refused(response.status().as_u16()),
            Err(_) => Answer::Failed,
        };
        Sent { sent_at, answered_at: Instant::now(), answer }
    }

    /// Sends at `pace` until its duration has passed; returns every answer. A send that is late (slots
    /// all taken, the process not scheduled in time) goes at once, but the loader never runs more than a
    /// second behind its schedule: the requests an outage held up are not all sent after it.
    pub async fn run(&self, pace: Pace) -> Vec<Sent> {
        let slots = Arc::new(Semaphore::new(pace.in_flight));
        let period = Duration::from_secs(1) / pace.per_second;
        let (start, mut due) = (Instant::now(), Instant::now());
        let mut requests = Vec::new();
        while due < start + pace.duration {
            tokio::time::sleep_until(due.into()).await;
            let slot = slots.clone().acquire_owned().await.expect("semaphore open");
            let (client, n) = (self.clone(), requests.len());
            requests.push(tokio::spawn(async move {
                let sent = client.send(n).await;
                drop(slot);
                sent
            }));
            due = (due + period).max(Instant::now() - Duration::from_secs(1));
        }
        let mut sent = Vec::with_capacity(requests.len());
        for request in requests {
            sent.push(request.await.expect("a request task"));
        }
        sent
    }
}
