//! How queue messages look on the wire. The AMQP body is the event's payload exactly as stored: never
//! re-encoded, so it arrives byte for byte and costs no copy on the way in. One header, [`HEADER`],
//! carries everything else as a versioned, tagged JSON object (`{"type":"delivery.v1",...}`); a consumer
//! decodes the versions it knows and refuses the rest, which go to the dead-letter queue. The standard
//! properties repeat the id (`message_id`) and event type (`type`, and the routing key of events) for
//! routing and for whoever inspects the broker; decoding reads only the header.
//!
//! Messages published before the header existed (Herald 0.1: plain `x-herald-*` headers) still decode
//! ([`legacy`]), so that an upgrade with messages in the broker loses none of them.

use std::borrow::Cow;

use bytes::Bytes;
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::topology::{DELIVERY_KEY, SCHEDULED_KEY};
use crate::queue::Lane;
use crate::queue::{DeliveryTask, EventMessage};

/// The header holding a message's versioned metadata.
const HEADER: &str = "x-herald";

/// An event on its way to fan-out, without its payload (the body).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum FanoutMessage<'a> {
    #[serde(rename = "event.v1")]
    EventV1 {
        id: Uuid,
        organization_id: Uuid,
        event_type: Cow<'a, str>,
        /// Absent (every subscriber) unless the event is for one webhook; older messages never have it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        only_webhook: Option<Uuid>,
    },
}

/// A delivery task, without its payload (the body).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum TaskMessage<'a> {
    #[serde(rename = "delivery.v1")]
    DeliveryV1 {
        delivery_id: Uuid,
        event_id: Uuid,
        webhook_id: Uuid,
        organization_id: Uuid,
        attempt: u32,
        event_type: Cow<'a, str>,
    },
}

/// Why a received message cannot be decoded (it is dead-lettered with this reason).
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("no x-herald header (not published by this version of Herald)")]
    MissingHeader,
    #[error("the x-herald header is not a string")]
    NotText,
    #[error("the x-herald header does not decode: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// A message ready to publish.
#[derive(Debug)]
pub(super) struct Outgoing<'a> {
    pub routing_key: &'a str,
    pub properties: BasicProperties,
    pub body: Bytes,
}

pub(super) fn encode_event(event: &EventMessage) -> Outgoing<'_> {
    let metadata = FanoutMessage::EventV1 {
        id: event.id,
        organization_id: event.organization_id,
        event_type: Cow::Borrowed(&event.event_type),
        only_webhook: event.only_webhook,
    };
    Outgoing {
        // The events exchange is a topic exchange: consumers bind by event type.
        routing_key: &event.event_type,
        properties: properties(event.id, &event.event_type, &metadata),
        body: event.payload.clone(),
    }
}

pub(super) fn encode_task(lane: Lane, task: &DeliveryTask) -> Outgoing<'_> {
    let metadata = TaskMessage::DeliveryV1 {
        delivery_id: task.delivery_id,
        event_id: task.event_id,
        webhook_id: task.webhook_id,
        organization_id: task.organization_id,
        attempt: task.attempt,
        event_type: Cow::Borrowed(&task.event_type),
    };
    let routing_key = match lane {
        Lane::Live => DELIVERY_KEY,
        Lane::Scheduled => SCHEDULED_KEY,
    };
    Outgoing {
        routing_key,
        properties: properties(task.delivery_id, &task.event_type, &metadata),
        body: task.payload.clone(),
    }
}

pub(super) fn decode_event(properties: &BasicProperties, body: Vec<u8>) -> Result<EventMessage, DecodeError> {
    let metadata = match header(properties) {
        Err(DecodeError::MissingHeader) => return legacy::event(properties, body),
        metadata => metadata?,
    };
    let FanoutMessage::EventV1 { id, organization_id, event_type, only_webhook } =
        serde_json::from_slice(metadata)?;
    Ok(EventMessage {
        id,
        organization_id,
        event_type: event_type.into_owned(),
        payload: Bytes::from(body),
        only_webhook,
    })
}

pub(super) fn decode_task(properties: &BasicProperties, body: Vec<u8>) -> Result<DeliveryTask, DecodeError> {
    let metadata = match header(properties) {
        Err(DecodeError::MissingHeader) => return legacy::task(properties, body),
        metadata => metadata?,
    };
    let TaskMessage::DeliveryV1 { delivery_id, event_id, webhook_id, organization_id, attempt, event_type } =
        serde_json::from_slice(metadata)?;
    Ok(DeliveryTask {
        delivery_id,
        event_id,
        webhook_id,
        organization_id,
        attempt,
        event_type: event_type.into_owned(),
        payload: Bytes::from(body),
        unstored: false,
    })
}

/// Persistent JSON message with an id, a type and its metadata header.
fn properties(id: Uuid, kind: &str, metadata: &impl Serialize) -> BasicProperties {
    // Uuids, strings and integers always serialize.
    let metadata = serde_json::to_vec(metadata).expect("queue metadata serializes");
    let mut headers = FieldTable::default();
    headers.insert(HEADER.into(), AMQPValue::LongString(metadata.into()));
    BasicProperties::default()
        // The body is the event's JSON payload.
        .with_content_type("application/json".into())
        // 2 = persistent: written to disk by the broker before it confirms.
        .with_delivery_mode(2)
        // For broker tools and bound consumers; decoding reads the header.
        .with_message_id(id.to_string().into())
        .with_type(kind.into())
        .with_headers(headers)
}

fn header(properties: &BasicProperties) -> Result<&[u8], DecodeError> {
    let value = properties.headers().as_ref().and_then(|headers| headers.inner().get(HEADER));
    match value.ok_or(DecodeError::MissingHeader)? {
        AMQPValue::LongString(value) => Ok(value.as_bytes()),
        AMQPValue::ByteArray(value) => Ok(value.as_slice()),
        _ => Err(DecodeError::NotText),
    }
}

/// The format of Herald 0.1: the id in `message_id`, the event type in `type`, the rest in one header
/// each; tasks carry `x-herald-version: 1`. Only decoded, never written.
mod legacy {
    use bytes::Bytes;
    use lapin::{BasicProperties, types::AMQPValue};
    use uuid::Uuid;

    use super::DecodeError;
    use crate::queue::{DeliveryTask, EventMessage};

    const ORGANIZATION: &str = "x-herald-organization-id";
    const EVENT: &str = "x-herald-event-id";
    const WEBHOOK: &str = "x-herald-webhook-id";
    const ATTEMPT: &str = "x-herald-attempt";
    const VERSION: &str = "x-herald-version";

    pub(super) fn event(properties: &BasicProperties, body: Vec<u8>) -> Result<EventMessage, DecodeError> {
        Ok(EventMessage {
            id: message_id(properties)?,
            organization_id: uuid(properties, ORGANIZATION)?,
            event_type: event_type(properties)?,
            payload: Bytes::from(body),
            only_webhook: None,
        })
    }

    pub(super) fn task(properties: &BasicProperties, body: Vec<u8>) -> Result<DeliveryTask, DecodeError> {
        if integer(properties, VERSION) != Some(1) {
            return Err(DecodeError::MissingHeader);
        }
        let attempt = integer(properties, ATTEMPT).and_then(|attempt| u32::try_from(attempt).ok());
        Ok(DeliveryTask {
            delivery_id: message_id(properties)?,
            event_id: uuid(properties, EVENT)?,
            webhook_id: uuid(properties, WEBHOOK)?,
            organization_id: uuid(properties, ORGANIZATION)?,
            attempt: attempt.ok_or(DecodeError::MissingHeader)?,
            event_type: event_type(properties)?,
            payload: Bytes::from(body),
            unstored: false,
        })
    }

    fn message_id(properties: &BasicProperties) -> Result<Uuid, DecodeError> {
        let id = properties.message_id().as_ref().ok_or(DecodeError::MissingHeader)?;
        Uuid::parse_str(id.as_str()).map_err(|_| DecodeError::MissingHeader)
    }

    fn event_type(properties: &BasicProperties) -> Result<String, DecodeError> {
        Ok(properties.kind().as_ref().ok_or(DecodeError::MissingHeader)?.as_str().to_string())
    }

    fn uuid(properties: &BasicProperties, name: &str) -> Result<Uuid, DecodeError> {
        let text = match properties.headers().as_ref().and_then(|headers| headers.inner().get(name)) {
            Some(AMQPValue::LongString(value)) => std::str::from_utf8(value.as_bytes()).ok(),
            Some(AMQPValue::ShortString(value)) => Some(value.as_str()),
            _ => None,
        };
        text.and_then(|text| Uuid::parse_str(text).ok()).ok_or(DecodeError::MissingHeader)
    }

    fn integer(properties: &BasicProperties, name: &str) -> Option<i64> {
        match properties.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongLongInt(value) => Some(*value),
            AMQPValue::LongInt(value) => Some(i64::from(*value)),
            AMQPValue::LongUInt(value) => Some(i64::from(*value)),
            AMQPValue::ShortInt(value) => Some(i64::from(*value)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(only_webhook: Option<Uuid>) -> EventMessage {
        EventMessage {
            id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            event_type: "item.created".into(),
            payload: Bytes::from_static(br#"{"a": 1,  "b":[true, null]}"#),
            only_webhook,
        }
    }

    fn task() -> DeliveryTask {
        DeliveryTask {
            event_type: "comment.created".into(),
            payload: Bytes::from_static(br#"{"x" :"y"}"#),
            ..DeliveryTask::for_test(7)
        }
    }

    /// Properties carrying only the given metadata header.
    fn with_header(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(HEADER.into(), value);
        BasicProperties::default().with_headers(headers)
    }

    fn text(json: &str) -> BasicProperties {
        with_header(AMQPValue::LongString(json.into()))
    }

    #[test]
    fn events_round_trip_with_their_payload_byte_for_byte() {
        for only_webhook in [None, Some(Uuid::now_v7())] {
            let event = event(only_webhook);
            let outgoing = encode_event(&event);
            assert_eq!(outgoing.routing_key, "item.created");
            assert_eq!(outgoing.body, event.payload, "the body is the payload as stored");
            let decoded = decode_event(&outgoing.properties, outgoing.body.to_vec()).expect("decodes");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn tasks_round_trip() {
        let task = task();
        for (lane, key) in [(Lane::Live, DELIVERY_KEY), (Lane::Scheduled, SCHEDULED_KEY)] {
            let outgoing = encode_task(lane, &task);
            assert_eq!(outgoing.routing_key, key);
            assert_eq!(*outgoing.properties.delivery_mode(), Some(2), "persistent");
            let decoded = decode_task(&outgoing.properties, outgoing.body.to_vec()).expect("decodes");
            assert_eq!(decoded, task);
        }
    }

    #[test]
    fn an_event_without_only_webhook_is_for_every_subscriber() {
        let json = format!(
            r#"{{"type":"event.v1","id":"{}","organization_id":"{}","event_type":"item.created"}}"#,
            Uuid::now_v7(),
            Uuid::now_v7()
        );
        let decoded = decode_event(&text(&json), b"{}".to_vec()).expect("decodes");
        assert_eq!(decoded.only_webhook, None);
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let task = task();
        let outgoing = encode_task(Lane::Live, &task);
        let json = String::from_utf8(header(&outgoing.properties).expect("header").to_vec()).expect("utf-8");
        let json = json.replace("delivery.v1", "delivery.v2");
        let error = decode_task(&text(&json), b"{}".to_vec()).expect_err("refused");
        assert!(error.to_string().contains("delivery.v2"), "names the version: {error}");
        let error = decode_event(&outgoing.properties, b"{}".to_vec()).expect_err("a task is no event");
        assert!(matches!(error, DecodeError::Invalid(_)));
    }

    #[test]
    fn messages_of_herald_0_1_still_decode() {
        let (id, organization, event_id, webhook) =
            (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut headers = FieldTable::default();
        headers.insert(
            "x-herald-organization-id".into(),
            AMQPValue::LongString(organization.to_string().into()),
        );
        let old_event = BasicProperties::default()
            .with_message_id(id.to_string().into())
            .with_type("item.created".into())
            .with_headers(headers.clone());
        let decoded = decode_event(&old_event, b"{}".to_vec()).expect("an old event decodes");
        assert_eq!(
            (decoded.id, decoded.organization_id, decoded.event_type.as_str()),
            (id, organization, "item.created")
        );
        assert_eq!(decoded.only_webhook, None);

        headers.insert("x-herald-version".into(), AMQPValue::LongLongInt(1));
        headers.insert("x-herald-event-id".into(), AMQPValue::LongString(event_id.to_string().into()));
        headers.insert("x-herald-webhook-id".into(), AMQPValue::LongString(webhook.to_string().into()));
        headers.insert("x-herald-attempt".into(), AMQPValue::LongLongInt(3));
        let old_task = old_event.clone().with_headers(headers.clone());
        let decoded = decode_task(&old_task, b"{}".to_vec()).expect("an old task decodes");
        assert_eq!(
            (decoded.delivery_id, decoded.event_id, decoded.webhook_id, decoded.attempt),
            (id, event_id, webhook, 3)
        );

        headers.insert("x-herald-version".into(), AMQPValue::LongLongInt(2));
        assert!(
            decode_task(&old_event.with_headers(headers), Vec::new()).is_err(),
            "an unknown old version is refused"
        );
    }

    #[test]
    fn garbage_is_refused() {
        let missing = r#"{"type":"delivery.v1","delivery_id":"0191c6c4-0000-7000-8000-000000000000"}"#;
        for properties in [
            BasicProperties::default(),
            with_header(AMQPValue::LongLongInt(1)),
            text("not json"),
            text(r#"{"no":"type"}"#),
            text(missing),
            text(r#"{"type":"delivery.v1","delivery_id":"not-a-uuid"}"#),
        ] {
            assert!(decode_task(&properties, Vec::new()).is_err(), "refused: {properties:?}");
            assert!(decode_event(&properties, Vec::new()).is_err(), "refused: {properties:?}");
        }
    }
}
