//! [`HumanDuration`]: the durations of the settings, written as `250ms`, `5s`, `2m`, `6h`, `1d`.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};

/// A duration written as `250ms`, `5s`, `2m`, `6h`, `1d` (or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 =
            number.parse().map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 5s, 2m, 1h)"))?;
        let seconds = match unit.trim() {
            "ms" => number / 1000.0,
            "" | "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86_400.0,
            other => return Err(format!("unknown unit '{other}' in '{text}' (use ms, s, m, h or d)")),
        };
        if !seconds.is_finite() || !(0.0..=10.0 * 365.0 * 86_400.0).contains(&seconds) {
            return Err(format!("'{text}' is out of range"));
        }
        Ok(Self(Duration::from_secs_f64(seconds)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v).map(|v| HumanDuration(Duration::from_secs(v))).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
