//! Domain types. Each is built only through a `parse` or `generate` function, so code past the HTTP
//! boundary never handles an unchecked string (an API key, an event type, a role, a webhook URL).

mod api_key;
mod delivery_id;
mod event_type;
mod payload;
mod roles;
mod webhook_secret;
mod webhook_url;

pub use api_key::{ApiKeyError, ApiKeySecret, KeyPurpose};
pub use delivery_id::delivery_id;
pub use event_type::{
    DELIVERY_DEAD, EventCatalog, EventFilter, EventType, OPERATIONAL_EVENTS, TEST_EVENT, WEBHOOK_DISABLED,
    WEBHOOK_RECOVERED, is_operational, is_reserved,
};
pub use payload::render_payload;
pub use roles::Role;
pub use webhook_secret::WebhookSecret;
pub use webhook_url::{UrlPolicy, WebhookUrl};

use chrono::{DateTime, SubsecRound, Utc};

/// The current time at the precision both databases keep (microseconds), so that what is written is
/// exactly what is read back.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The time since a UUIDv7 id was made (its timestamp is the row's creation time; a delivery's is its
/// event's, see [`delivery_id`]); `None` for an id without a timestamp or one in the future.
pub fn age_of(id: uuid::Uuid) -> Option<std::time::Duration> {
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    let created = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos);
    std::time::SystemTime::now().duration_since(created).ok()
}

/// RFC 3339 with microseconds and `Z`: the format of every timestamp in payloads and responses.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `#[serde(serialize_with)]` for a timestamp that must read exactly as in the payload (six digits).
pub fn serialize_timestamp<S: serde::Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_timestamp(*at))
}

/// A light check that a string looks like an email address (one `@`, a dot in the domain, no spaces);
/// delivery of mail is not Herald's business, catching typos is.
pub fn is_plausible_email(text: &str) -> bool {
    let Some((local, domain)) = text.trim().split_once('@') else { return false };
    !local.is_empty()
        && text.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.trim().chars().any(char::is_whitespace)
}
