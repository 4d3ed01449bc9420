//! Delivery ids. A delivery's id is its `webhook-id` header, on which receivers deduplicate, so fan-out
//! gives an event's delivery to a webhook the same id every time it is done: fan-out done again after a
//! crash finds the delivery it made before, and a first attempt sent before its delivery was stored (the
//! worker's direct lane) keeps its id when it is sent again.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The id of `event_id`'s delivery to `webhook_id`: a UUIDv7 that carries the event's timestamp (so
/// deliveries sort with their events, and a delivery's age read off its id is its event's), its other
/// bits taken from SHA-256 of both ids.
pub fn delivery_id(event_id: Uuid, webhook_id: Uuid) -> Uuid {
    let millis = event_id.get_timestamp().map_or(0, |at| {
        let (seconds, nanos) = at.to_unix();
        seconds.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000))
    });
    let digest =
        Sha256::new().chain_update(event_id.as_bytes()).chain_update(webhook_id.as_bytes()).finalize();
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_pair_always_gets_the_same_id_and_another_pair_another() {
        let (event, webhook, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(delivery_id(event, webhook), delivery_id(event, webhook));
        assert_ne!(delivery_id(event, webhook), delivery_id(event, other));
        assert_ne!(delivery_id(event, webhook), delivery_id(other, webhook));
    }

    #[test]
    fn the_id_is_a_uuidv7_with_its_events_timestamp() {
        let event = Uuid::now_v7();
        let id = delivery_id(event, Uuid::now_v7());
        assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
        let millis = |id: Uuid| {
            let (seconds, nanos) = id.get_timestamp().expect("v7").to_unix();
            seconds * 1000 + u64::from(nanos / 1_000_000)
        };
        assert_eq!(millis(id), millis(event));
    }
}
