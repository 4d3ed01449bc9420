//! The webhook payload (contract): `{"id", "event", "timestamp", "organization_id", "data"}`. It is
//! rendered once, when the event is accepted, and stored; every endpoint and every retry receives exactly
//! those bytes, so signatures over them stay reproducible.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::format_timestamp;

/// Renders the payload. `data_json` must be a JSON object's text (checked by the caller).
pub fn render_payload(
    id: Uuid,
    event_type: &str,
    timestamp: DateTime<Utc>,
    organization_id: Uuid,
    data_json: &str,
) -> String {
    let event_type = serde_json::to_string(event_type).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{{"id":"{id}","event":{event_type},"timestamp":"{}","organization_id":"{organization_id}","data":{data_json}}}"#,
        format_timestamp(timestamp)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_has_the_contract_fields() {
        let id = Uuid::nil();
        let at = DateTime::from_timestamp(1_735_732_800, 5_000).expect("time");
        let text = render_payload(id, "item.created", at, Uuid::max(), r#"{"name": "x"}"#);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["id"], id.to_string());
        assert_eq!(value["event"], "item.created");
        assert_eq!(value["timestamp"], "2025-01-01T12:00:00.000005Z");
        assert_eq!(value["organization_id"], Uuid::max().to_string());
        assert_eq!(value["data"]["name"], "x");
        assert_eq!(value.as_object().map(serde_json::Map::len), Some(5));
    }
}
