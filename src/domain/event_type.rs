//! Event types and the catalog of those Herald accepts, plus a webhook's subscription filter.

use std::{collections::BTreeSet, fmt, sync::Arc};

/// The event type Herald sends itself to test an endpoint; always in the catalog.
pub const TEST_EVENT: &str = "webhook.test";

/// Herald's operational events, emitted into the owning organization as outcomes are recorded
/// (`worker/operational.rs`): always in the catalog, subscribable like any type, never accepted from
/// applications (`POST /events` answers 422 `reserved_event_type`).
pub const WEBHOOK_DISABLED: &str = "webhook.disabled";
pub const DELIVERY_DEAD: &str = "delivery.dead";
pub const WEBHOOK_RECOVERED: &str = "webhook.recovered";
pub const OPERATIONAL_EVENTS: [&str; 3] = [DELIVERY_DEAD, WEBHOOK_DISABLED, WEBHOOK_RECOVERED];

/// Whether Herald alone sends events of this type (`webhook.test` and the operational events).
pub fn is_reserved(event_type: &str) -> bool {
    event_type == TEST_EVENT || is_operational(event_type)
}

/// Whether this is one of Herald's operational events (the loop rule: no operational event is emitted
/// about a delivery of one).
pub fn is_operational(event_type: &str) -> bool {
    OPERATIONAL_EVENTS.contains(&event_type)
}

/// An event type from the catalog, such as `item.created`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(String);

impl EventType {
    /// Lowercase dot-separated words of letters, digits, `_` and `-`, at most 100 characters.
    pub fn check_syntax(text: &str) -> Result<(), &'static str> {
        let valid_word = |w: &str| {
            !w.is_empty()
                && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if text.len() > 100 || !text.split('.').all(valid_word) {
            return Err("event types are lowercase words separated by dots, e.g. item.created");
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The configured event types. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventCatalog(Arc<BTreeSet<String>>);

impl EventCatalog {
    /// The configured types plus the reserved ones (`webhook.test`, the operational events). The
    /// configuration was validated at start-up.
    pub fn new(types: &[String]) -> Self {
        let mut set: BTreeSet<String> = types.iter().cloned().collect();
        set.insert(TEST_EVENT.to_string());
        set.extend(OPERATIONAL_EVENTS.map(str::to_string));
        Self(Arc::new(set))
    }

    /// The event type, if the catalog has it; the error lists the valid ones.
    pub fn parse(&self, text: &str) -> Result<EventType, String> {
        if self.0.contains(text) {
            Ok(EventType(text.to_string()))
        } else {
            Err(format!("unknown event type '{text}'; valid types: {}", self.list().join(", ")))
        }
    }

    /// Every type, sorted.
    pub fn list(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }

    /// Parses a subscription: a list of catalog types, `["*"]`, or one comma-separated string.
    pub fn parse_filter(&self, items: &[String]) -> Result<EventFilter, String> {
        let items: Vec<&str> = items
            .iter()
            .flat_map(|item| item.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect();
        if items.is_empty() {
            return Err(format!(
                "events must name at least one event type or \"*\"; valid types: {}",
                self.list().join(", ")
            ));
        }
        if items.contains(&"*") {
            return Ok(EventFilter::All);
        }
        let types = items.into_iter().map(|item| self.parse(item)).collect::<Result<BTreeSet<_>, _>>()?;
        Ok(EventFilter::Only(types))
    }
}

/// Which events a webhook receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<EventType>),
}

impl EventFilter {
    /// Whether a webhook with this filter gets a delivery of an event: an event restricted to one
    /// webhook (`only_webhook`, the `webhook.test` event) goes to that webhook alone, whatever its
    /// types; any other goes to every webhook whose filter matches its type. Fan-out, recovery and
    /// re-fan-out all decide by it.
    pub fn receives(
        &self,
        webhook_id: uuid::Uuid,
        event_type: &str,
        only_webhook: Option<uuid::Uuid>,
    ) -> bool {
        match only_webhook {
            Some(only) => only == webhook_id,
            None => self.matches(event_type),
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Only(types) => types.iter().any(|t| t.as_str() == event_type),
        }
    }

    /// The stored form: `*` or the sorted types joined by commas (the seed's representation).
    pub fn to_stored(&self) -> String {
        match self {
            EventFilter::All => "*".into(),
            EventFilter::Only(types) => types.iter().map(EventType::as_str).collect::<Vec<_>>().join(","),
        }
    }

    /// Reads the stored form back without consulting the catalog: types removed from the catalog
    /// later stay visible on the webhook, they simply never occur.
    pub fn from_stored(stored: &str) -> Self {
        if stored == "*" {
            return EventFilter::All;
        }
        EventFilter::Only(
            stored.split(',').filter(|s| !s.is_empty()).map(|s| EventType(s.to_string())).collect(),
        )
    }

    /// The list form used in API responses.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            EventFilter::All => vec!["*".into()],
            EventFilter::Only(types) => types.iter().map(|t| t.0.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> EventCatalog {
        EventCatalog::new(&["item.created".into(), "comment.created".into()])
    }

    #[test]
    fn catalog_includes_the_test_event() {
        assert_eq!(
            catalog().list(),
            vec![
                "comment.created",
                "delivery.dead",
                "item.created",
                "webhook.disabled",
                "webhook.recovered",
                "webhook.test"
            ]
        );
        assert!(catalog().parse("webhook.test").is_ok());
        assert!(
            is_reserved("delivery.dead")
                && is_operational("webhook.recovered")
                && !is_reserved("item.created")
        );
    }

    #[test]
    fn unknown_types_list_the_valid_ones() {
        let error = catalog().parse("item.exploded").expect_err("unknown");
        assert!(
            error.contains("item.exploded") && error.contains("comment.created, delivery.dead, item.created"),
            "{error}"
        );
    }

    #[test]
    fn filters_accept_lists_strings_and_star() {
        let catalog = catalog();
        let from_string = catalog.parse_filter(&["item.created, comment.created".into()]).expect("ok");
        let from_list = catalog.parse_filter(&["comment.created".into(), "item.created".into()]).expect("ok");
        assert_eq!(from_string, from_list);
        assert_eq!(from_list.to_stored(), "comment.created,item.created");
        assert_eq!(EventFilter::from_stored(&from_list.to_stored()), from_list);
        assert_eq!(catalog.parse_filter(&["*".into()]), Ok(EventFilter::All));
        assert!(EventFilter::All.matches("anything"));
        assert!(!from_list.matches("item.deleted"));
        assert!(catalog.parse_filter(&[]).is_err());
        assert!(catalog.parse_filter(&[" , ".into()]).is_err());
    }

    #[test]
    fn syntax_is_checked() {
        assert!(EventType::check_syntax("item.created").is_ok());
        assert!(EventType::check_syntax("Item.Created").is_err());
        assert!(EventType::check_syntax("item..created").is_err());
        assert!(EventType::check_syntax("").is_err());
    }
}
