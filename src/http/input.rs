//! What a client's text and times may be, checked once, at the boundary, so that every value a handler
//! passes on can be stored by both databases (PostgreSQL's `text` cannot hold U+0000 and its
//! `timestamptz` starts in 4713 BC; chrono reads years from -262143 to 262142).
//!
//! Every string field of a request body or query string is a [`Line`] (names, emails, URLs, event types,
//! keys, filters: no control character at all) or a [`Prose`] (free text, a webhook's description: tab,
//! newline and carriage return allowed, no other control character). Every time a client sends is a
//! [`Timestamp`] (a body field or a query parameter): RFC 3339, from [`EARLIEST`] to [`LATEST`]. A
//! refusal is a `400` whose message names the field (serde's path, through the extractors of
//! [`super::extract`]); a header goes through [`check_line`]. Event data (`POST /events`) is JSON kept
//! as sent: a NUL in it can only be the escape `\u0000`, plain ASCII in the stored text; it may nest
//! [`MAX_JSON_DEPTH`] levels ([`check_depth`]).

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, de::Error as _};

use super::{ApiError, ApiResult};

/// The earliest time accepted: 1970-01-01T00:00:00Z.
pub(crate) const EARLIEST: DateTime<Utc> = DateTime::UNIX_EPOCH;
/// The latest time accepted: the end of year 9999 (the last year RFC 3339 can write).
pub(crate) const LATEST: DateTime<Utc> = NaiveDate::from_ymd_opt(9999, 12, 31)
    .expect("a date")
    .and_hms_micro_opt(23, 59, 59, 999_999)
    .expect("a time")
    .and_utc();

/// Why a time is refused: outside [`EARLIEST`]..=[`LATEST`].
fn time_problem(time: DateTime<Utc>) -> Option<&'static str> {
    (!(EARLIEST..=LATEST).contains(&time))
        .then_some("must be a time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z")
}

/// The first control character a value may not hold, described for the client (`U+0000`). `prose`
/// allows tab, newline and carriage return.
fn control_problem(text: &str, prose: bool) -> Option<String> {
    let allowed = |c: char| prose && matches!(c, '\t' | '\n' | '\r');
    let found = text.chars().find(|&c| c.is_control() && !allowed(c))?;
    let kind = if prose { "control characters other than tab and newline" } else { "control characters" };
    Some(format!("must not contain {kind} (found U+{:04X})", u32::from(found)))
}

/// Checks a text that arrived outside a body or query structure (a header): `name` is named in the
/// refusal.
pub(crate) fn check_line(name: &str, text: &str) -> ApiResult<()> {
    match control_problem(text, false) {
        Some(problem) => Err(ApiError::invalid(format!("{name} {problem}"))),
        None => Ok(()),
    }
}

/// One line of text from a client: no control character (C0, DEL, C1).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Line(String);

/// Free text from a client: a [`Line`] that may also hold tab, newline and carriage return.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Prose(String);

macro_rules! checked_text {
    ($name:ident, $prose:expr) => {
        impl $name {
            pub(crate) fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                match control_problem(&text, $prose) {
                    Some(problem) => Err(D::Error::custom(problem)),
                    None => Ok(Self(text)),
                }
            }
        }

        /// The text as it is (a client's own text, shown in their own errors and views).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}
checked_text!(Line, false);
checked_text!(Prose, true);

/// A time from a request body or query string: what chrono reads as a `DateTime` (RFC 3339), from
/// [`EARLIEST`] to [`LATEST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub(crate) fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let time = DateTime::<Utc>::deserialize(deserializer)?;
        match time_problem(time) {
            Some(problem) => Err(D::Error::custom(problem)),
            None => Ok(Self(time)),
        }
    }
}

/// How deep JSON event data may nest, so that the payload around it (one level more) parses with the
/// common JSON libraries' default limits (serde_json 128 levels, Python about 1,000): receivers and
/// Herald's readers can read what is delivered. A 10,000-deep body is valid JSON, and otherwise stored.
pub(crate) const MAX_JSON_DEPTH: usize = 100;

/// Refuses JSON text (already known to be valid) whose arrays and objects nest deeper than
/// [`MAX_JSON_DEPTH`]; `name` is named in the refusal.
pub(crate) fn check_depth(name: &str, json: &str) -> ApiResult<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::invalid(format!(
                        "{name} must not nest arrays and objects more than {MAX_JSON_DEPTH} levels deep"
                    )));
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_every_control_character_and_prose_keeps_tabs_and_newlines() {
        for text in ["a\0b", "\u{1b}[31m", "tab\there", "new\nline", "del\u{7f}", "c1\u{85}"] {
            let json = serde_json::to_string(text).expect("json");
            assert!(serde_json::from_str::<Line>(&json).is_err(), "{text:?} as a line");
        }
        for text in ["tab\there", "new\nline\r\n"] {
            let json = serde_json::to_string(text).expect("json");
            assert_eq!(&*serde_json::from_str::<Prose>(&json).expect("prose"), text);
        }
        let error = serde_json::from_str::<Prose>(r#""a\u0000b""#).expect_err("NUL");
        assert!(error.to_string().contains("U+0000"), "{error}");
        assert_eq!(&*serde_json::from_str::<Line>(r#""Zoë ✓""#).expect("line"), "Zoë ✓");
    }

    #[test]
    fn json_nested_deeper_than_100_levels_is_refused() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(check_depth("data", &nested(MAX_JSON_DEPTH)).is_ok());
        assert!(check_depth("data", &nested(MAX_JSON_DEPTH + 1)).is_err());
        assert!(check_depth("data", &nested(10_000)).is_err());
        let in_strings =
            format!(r#"{{"a": "{}", "b": "\"[[[", "c": {}}}"#, "[".repeat(500), nested(MAX_JSON_DEPTH - 1));
        assert!(check_depth("data", &in_strings).is_ok(), "brackets in strings do not count");
    }

    #[test]
    fn times_outside_1970_to_9999_are_refused() {
        for text in ["-262143-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "+10000-01-01T00:00:00Z"] {
            let json = serde_json::to_string(text).expect("json");
            assert!(serde_json::from_str::<Timestamp>(&json).is_err(), "{text}");
        }
        for text in ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2030-01-31T12:00:00+02:00"] {
            let json = serde_json::to_string(text).expect("json");
            assert!(serde_json::from_str::<Timestamp>(&json).is_ok(), "{text}");
        }
        assert_eq!(LATEST.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
    }
}
