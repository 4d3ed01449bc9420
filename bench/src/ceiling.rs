//! The raw HTTP ceiling: the same number of deliveries, same payload shape and size, signed by the bench
//! itself and posted straight from its own client to a twin set of receiver endpoints, with the same load.
//! Herald cannot deliver faster than this machine can post to and verify in this receiver.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use reqwest::header::CONTENT_TYPE;
use uuid::Uuid;

use crate::{
    api::http_client,
    driver::drive,
    receiver::{Endpoint, EndpointResult, now_micros},
    scenario::{EVENT_TYPE, Load, event_data},
};

/// What the ceiling run measured.
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// Posts that failed or were not answered 2xx.
    pub failed: u64,
    pub deliveries_per_sec: f64,
    pub latencies_ms: Vec<f64>,
}

/// One signed request to `/hook/{n}`, as Herald would send it.
#[derive(Debug)]
struct Target {
    url: String,
    endpoint: Arc<Endpoint>,
}

/// Posts `events` × endpoints payloads to the twin endpoints (`indices` into the receiver) with `load`:
/// a closed loop keeps its concurrency; an open loop's rate (and its bound on sends in flight) is
/// multiplied by the endpoint count, as Herald's fan-out multiplies deliveries.
pub async fn run(
    address: std::net::SocketAddr,
    twins: Vec<(usize, Arc<Endpoint>)>,
    events: u64,
    load: Load,
) -> anyhow::Result<Ceiling> {
    let client = http_client(std::time::Duration::from_secs(30))?;
    let endpoints: Vec<Arc<Endpoint>> = twins.iter().map(|(_, e)| e.clone()).collect();
    let targets: Arc<Vec<Target>> = Arc::new(
        twins
            .into_iter()
            .map(|(n, endpoint)| Target { url: format!("http://{address}/hook/{n}"), endpoint })
            .collect(),
    );
    let fan = targets.len() as u64;
    let ids: Arc<Vec<Uuid>> = Arc::new((0..events).map(|_| Uuid::now_v7()).collect());
    let failed = Arc::new(AtomicU64::new(0));
    let load = match load {
        Load::Open { rate, in_flight } => {
            Load::Open { rate: rate * fan as f64, in_flight: in_flight.saturating_mul(fan as usize) }
        }
        closed => closed,
    };
    let started_micros = now_micros();
    {
        let (ids, failed, targets) = (ids.clone(), failed.clone(), targets.clone());
        drive(load, events * fan, move |k| {
            let (client, ids, failed, targets) =
                (client.clone(), ids.clone(), failed.clone(), targets.clone());
            async move {
                let target = &targets[(k % fan) as usize];
                let seq = k / fan;
                if !post(&client, target, ids[seq as usize], seq).await {
                    failed.fetch_add(1, Relaxed);
                }
            }
        })
        .await;
    }
    let mut result = EndpointResult::default();
    for endpoint in &endpoints {
        let one = endpoint.collect(&ids);
        result.delivered += one.delivered;
        result.latencies_ms.extend(one.latencies_ms);
        result.last_arrival_micros = result.last_arrival_micros.max(one.last_arrival_micros);
    }
    let deliveries_per_sec = match result.last_arrival_micros {
        Some(last) if last > started_micros => {
            result.delivered as f64 / ((last - started_micros) as f64 / 1e6)
        }
        _ => 0.0,
    };
    Ok(Ceiling { failed: failed.load(Relaxed), deliveries_per_sec, latencies_ms: result.latencies_ms })
}

/// Signs and posts one payload; true when answered 2xx.
async fn post(client: &reqwest::Client, target: &Target, event: Uuid, seq: u64) -> bool {
    let secret = target.endpoint.secret().unwrap_or_default();
    let now = chrono::Utc::now();
    let payload = serde_json::json!({
        "id": event,
        "event": EVENT_TYPE,
        "timestamp": now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "organization_id": Uuid::nil(),
        "data": event_data(seq),
    });
    let Ok(body) = serde_json::to_vec(&payload) else { return false };
    let delivery_id = Uuid::now_v7().to_string();
    let timestamp = now.timestamp();
    let request = client
        .post(&target.url)
        .header(CONTENT_TYPE, "application/json")
        .header("x-signature", herald::signature::x_signature(secret, &body))
        .header("webhook-id", &delivery_id)
        .header("webhook-timestamp", timestamp)
        .header(
            "webhook-signature",
            herald::signature::standard_signature_header(&[secret], &delivery_id, timestamp, &body),
        )
        .body(body);
    match request.send().await {
        // Reading the (empty) body hands the connection back to the pool.
        Ok(response) => {
            let success = response.status().is_success();
            response.bytes().await.is_ok() && success
        }
        Err(_) => false,
    }
}
