//! A small client of Herald's API: list, create and delete webhooks, send events. Errors are turned into
//! messages that say what to do (wrong key, plain-http targets refused, Herald not running).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use reqwest::{
    Method, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::scenario::EVENT_TYPE;

/// The message shown when Herald refuses the receiver's plain-http loopback URL.
pub const PRIVATE_TARGETS_HINT: &str = "Herald refused the bench receiver's URL (plain http on 127.0.0.1). \
    Restart Herald with HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true and run the bench again.";

/// A pooled HTTP/1.1 client (reqwest without its http2 feature), for the API and the raw ceiling.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    auth: HeaderValue,
}

/// A webhook as listed.
#[derive(Debug, Deserialize)]
pub struct ListedWebhook {
    pub id: Uuid,
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// The description the bench gives its webhooks, to recognize leftovers of an interrupted run.
pub const BENCH_DESCRIPTION: &str = "herald-bench (deleted at the end of the run)";

#[derive(Debug, Deserialize)]
struct WebhookList {
    webhooks: Vec<ListedWebhook>,
}

/// A webhook the bench created, with its signing secret.
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedWebhook {
    pub id: Uuid,
    pub secret: String,
}

#[derive(Debug, Deserialize)]
struct Accepted {
    id: Uuid,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    code: String,
}

/// The outcome of one `POST /api/v1/events`.
#[derive(Debug)]
pub enum Sent {
    Accepted(Uuid),
    /// 429: try again after this long.
    RateLimited(Duration),
    Refused(String),
}

impl Api {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let auth = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .context("the API key contains characters not allowed in a header")?;
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must start with http:// or https:// (got {base})");
        }
        Ok(Self { client: http_client(Duration::from_secs(30))?, base, auth })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.client.request(method, &url).header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.with_context(|| format!("could not reach Herald at {url}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.with_context(|| format!("reading Herald's answer from {url}"))?;
        Ok((status, headers, body))
    }

    pub async fn list_webhooks(&self) -> anyhow::Result<Vec<ListedWebhook>> {
        let (status, _, body) = self.call(Method::GET, "/webhooks", None).await?;
        if status != StatusCode::OK {
            return Err(api_error("listing webhooks", status, &body));
        }
        let list: WebhookList = serde_json::from_slice(&body).context("unexpected webhook list")?;
        Ok(list.webhooks)
    }

    pub async fn create_webhook(&self, url: &str) -> anyhow::Result<CreatedWebhook> {
        let request = serde_json::json!({
            "url": url,
            "events": [EVENT_TYPE],
            "description": BENCH_DESCRIPTION,
        });
        let request = serde_json::to_vec(&request).context("encoding the webhook")?;
        let (status, _, body) = self.call(Method::POST, "/webhooks", Some(request)).await?;
        if status != StatusCode::CREATED {
            return Err(api_error("creating a webhook", status, &body));
        }
        serde_json::from_slice(&body).context("unexpected answer to the webhook creation")
    }

    pub async fn delete_webhook(&self, id: Uuid) -> anyhow::Result<()> {
        let (status, _, body) = self.call(Method::DELETE, &format!("/webhooks/{id}"), None).await?;
        match status {
            StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(api_error("deleting a webhook", status, &body)),
        }
    }

    /// Sends one event; transport errors are refusals too (the caller counts them).
    pub async fn send_event(&self, body: Vec<u8>) -> Sent {
        let (status, headers, answer) = match self.call(Method::POST, "/events", Some(body)).await {
            Ok(exchange) => exchange,
            Err(error) => return Sent::Refused(format!("{error:#}")),
        };
        match status {
            StatusCode::ACCEPTED | StatusCode::OK => match serde_json::from_slice::<Accepted>(&answer) {
                Ok(accepted) => Sent::Accepted(accepted.id),
                Err(error) => Sent::Refused(format!("unexpected answer to an accepted event: {error}")),
            },
            StatusCode::TOO_MANY_REQUESTS => Sent::RateLimited(retry_after(&headers)),
            _ => Sent::Refused(api_error("sending an event", status, &answer).to_string()),
        }
    }
}

/// The `Retry-After` delay in seconds (1 s when absent or unreadable).
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map_or(Duration::from_secs(1), Duration::from_secs_f64)
}

/// A readable error from Herald's `{"error", "code"}` answer, with advice for the usual causes.
fn api_error(action: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    if let Some(error) = &parsed
        && error.code == "url_not_allowed"
    {
        return anyhow!("{PRIVATE_TARGETS_HINT}\n(Herald said: {})", error.error);
    }
    let detail = match parsed {
        Some(error) => format!("{} ({})", error.error, error.code),
        None => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    let advice = match status {
        StatusCode::UNAUTHORIZED => " — check --key / HERALD_KEY",
        StatusCode::FORBIDDEN => " — the bench needs an admin API key",
        _ => "",
    };
    anyhow!("{action}: Herald answered {status}: {detail}{advice}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_refusal_explains_the_fix() {
        let body = br#"{"error":"plain http is not allowed","code":"url_not_allowed"}"#;
        let message = api_error("creating a webhook", StatusCode::UNPROCESSABLE_ENTITY, body).to_string();
        assert!(message.contains("HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS=true"), "{message}");
        let message = api_error("listing webhooks", StatusCode::UNAUTHORIZED, b"{}").to_string();
        assert!(message.contains("--key"), "{message}");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), Duration::from_secs(1));
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Duration::from_secs(3));
    }
}
