//! The scenarios: how many events each one sends, at which load (a fixed number of sends in flight, or
//! a fixed rate), and to how many endpoints behaving how. Command-line overrides are resolved here.

use std::fmt;

use anyhow::{Context, bail};
use serde::Serialize;

/// The event type every scenario sends and subscribes to.
pub const EVENT_TYPE: &str = "item.created";

/// Bytes of filler in each event's data, so payloads have a realistic size.
const PADDING_BYTES: usize = 200;

/// The retry-scenario hint: Herald's default schedule starts at 5 s.
pub const RETRY_HINT: &str = "start Herald with a short retry schedule, e.g. \
    HERALD__DELIVERY__RETRY_SCHEDULE=100ms,200ms,400ms,800ms HERALD__DELIVERY__SCHEDULER_INTERVAL=100ms";

/// Duration of a rate scenario when neither its defaults nor `--duration` give one.
const FALLBACK_DURATION_S: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 10,000 events to 1 endpoint, 32 sends in flight
    Single,
    /// 1,000 events to 10 endpoints, 32 sends in flight
    Fanout,
    /// 1,000 events/s for 30 s to 1 endpoint (open loop); latency percentiles
    Steady,
    /// 500 events/s for 20 s to 1 endpoint (open loop), at most --concurrency (32) sends in flight: when
    /// that many are in flight the next scheduled send waits (the report counts the late ones). With the
    /// CPU per event of every process (Herald, PostgreSQL, RabbitMQ, the whole machine but the bench)
    Paced,
    /// 100 events/s for 20 s to 9 fast endpoints and 1 answering after 1 s; fast and slow latency apart.
    /// The fast endpoints get 900 deliveries/s, comparable with `steady`'s 1,000, so their p99 can be set
    /// against `steady`'s: what remains is the slow endpoint's effect.
    Noisy,
    /// 1,000 events to 1 endpoint answering 500 to ~10% of first attempts. Start Herald with
    /// HERALD__DELIVERY__RETRY_SCHEDULE=100ms,200ms,400ms,800ms (and HERALD__DELIVERY__SCHEDULER_INTERVAL=100ms)
    Retry,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Single => "single",
            Scenario::Fanout => "fanout",
            Scenario::Steady => "steady",
            Scenario::Paced => "paced",
            Scenario::Noisy => "noisy",
            Scenario::Retry => "retry",
        }
    }

    fn defaults(self) -> Defaults {
        let closed = |events| Defaults { events: Some(events), rate: None, duration_s: None, bounded: false };
        let open = |rate, duration_s| Defaults {
            events: None,
            rate: Some(rate),
            duration_s: Some(duration_s),
            bounded: false,
        };
        match self {
            Scenario::Single => closed(10_000),
            Scenario::Fanout | Scenario::Retry => closed(1_000),
            Scenario::Steady => open(1_000.0, 30.0),
            Scenario::Noisy => open(100.0, 20.0),
            Scenario::Paced => Defaults { bounded: true, ..open(500.0, 20.0) },
        }
    }

    fn endpoints(self) -> Vec<Behavior> {
        match self {
            Scenario::Single | Scenario::Steady | Scenario::Paced => vec![Behavior::Fast],
            Scenario::Fanout => vec![Behavior::Fast; 10],
            Scenario::Noisy => std::iter::once(Behavior::Slow).chain([Behavior::Fast; 9]).collect(),
            Scenario::Retry => vec![Behavior::FailFirst],
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy)]
struct Defaults {
    events: Option<u64>,
    rate: Option<f64>,
    duration_s: Option<f64>,
    /// An open loop bounded by --concurrency sends in flight (else by OPEN_LOOP_IN_FLIGHT).
    bounded: bool,
}

/// Sends in flight at most in an unbounded open loop ("enough capacity" to keep the schedule while
/// Herald answers).
pub const OPEN_LOOP_IN_FLIGHT: usize = 4096;

/// How a receiver endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// 200 at once.
    Fast,
    /// 200 after one second.
    Slow,
    /// 500 to the first attempt of ~10% of deliveries (chosen by their `webhook-id`), else 200 at once.
    FailFirst,
}

impl Behavior {
    /// The behaviour of the raw-ceiling twin: the ceiling sender does not retry, so nothing fails.
    pub fn for_ceiling(self) -> Behavior {
        match self {
            Behavior::FailFirst => Behavior::Fast,
            other => other,
        }
    }
}

/// How events are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` sends in flight at all times (closed loop).
    Closed { concurrency: usize },
    /// Sends scheduled at t0 + i/rate whatever the answers (open loop), at most `in_flight` at a time:
    /// when that many are in flight, the next scheduled send waits for one to finish.
    Open { rate: f64, in_flight: usize },
}

/// Command-line values that override a scenario's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub events: Option<u64>,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub duration_s: Option<f64>,
}

/// A scenario with its numbers resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub events: u64,
    pub endpoints: Vec<Behavior>,
    pub load: Load,
}

impl Plan {
    pub fn resolve(scenario: Scenario, overrides: &Overrides) -> anyhow::Result<Plan> {
        let defaults = scenario.defaults();
        if overrides.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let rate = overrides.rate.or(defaults.rate);
        let (events, load) = match rate {
            Some(rate) => {
                if !(rate.is_finite() && rate > 0.0) {
                    bail!("--rate must be a positive number of events per second");
                }
                let from_duration = |d: f64| (rate * d).round() as u64;
                let events = overrides
                    .events
                    .or(overrides.duration_s.map(from_duration))
                    .or(defaults.events)
                    .unwrap_or_else(|| from_duration(defaults.duration_s.unwrap_or(FALLBACK_DURATION_S)));
                let in_flight = if defaults.bounded { overrides.concurrency } else { OPEN_LOOP_IN_FLIGHT };
                (events, Load::Open { rate, in_flight })
            }
            None => {
                if overrides.duration_s.is_some() {
                    bail!(
                        "--duration needs a rate: give --rate too (steady, noisy and paced have one by default)"
                    );
                }
                let events =
                    overrides.events.or(defaults.events).context("the scenario has no event count")?;
                (events, Load::Closed { concurrency: overrides.concurrency })
            }
        };
        if events == 0 {
            bail!("the run would send no event: give --events (or a longer --duration)");
        }
        Ok(Plan { scenario, events, endpoints: scenario.endpoints(), load })
    }

    /// Deliveries expected if every event is accepted.
    pub fn deliveries(&self) -> u64 {
        self.events * self.endpoints.len() as u64
    }
}

/// The `data` of event `seq`: a marker, the sequence number and ~200 bytes of filler.
pub fn event_data(seq: u64) -> serde_json::Value {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    let padding: String = ALPHABET
        .iter()
        .cycle()
        .skip((seq % 61) as usize)
        .take(PADDING_BYTES)
        .map(|&b| char::from(b))
        .collect();
    serde_json::json!({ "bench": true, "seq": seq, "padding": padding })
}

/// The body of `POST /api/v1/events` for event `seq`.
pub fn event_body(seq: u64) -> Vec<u8> {
    let body = serde_json::json!({ "event": EVENT_TYPE, "data": event_data(seq) });
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides() -> Overrides {
        Overrides { concurrency: 32, ..Overrides::default() }
    }

    #[test]
    fn defaults_follow_the_scenario() {
        let single = Plan::resolve(Scenario::Single, &overrides()).expect("plan");
        assert_eq!((single.events, single.load), (10_000, Load::Closed { concurrency: 32 }));
        let steady = Plan::resolve(Scenario::Steady, &overrides()).expect("plan");
        assert_eq!(
            (steady.events, steady.load),
            (30_000, Load::Open { rate: 1_000.0, in_flight: OPEN_LOOP_IN_FLIGHT })
        );
        let paced = Plan::resolve(Scenario::Paced, &overrides()).expect("plan");
        assert_eq!((paced.events, paced.load), (10_000, Load::Open { rate: 500.0, in_flight: 32 }));
        assert_eq!(paced.endpoints, vec![Behavior::Fast]);
        let noisy = Plan::resolve(Scenario::Noisy, &overrides()).expect("plan");
        assert_eq!(noisy.endpoints.iter().filter(|b| **b == Behavior::Slow).count(), 1);
        assert_eq!(noisy.deliveries(), 20_000);
    }

    #[test]
    fn overrides_win() {
        let o = Overrides { rate: Some(100.0), duration_s: Some(3.0), ..overrides() };
        let steady = Plan::resolve(Scenario::Steady, &o).expect("plan");
        assert_eq!(
            (steady.events, steady.load),
            (300, Load::Open { rate: 100.0, in_flight: OPEN_LOOP_IN_FLIGHT })
        );
        let o = Overrides { rate: Some(1_000.0), concurrency: 8, ..overrides() };
        let paced = Plan::resolve(Scenario::Paced, &o).expect("plan");
        assert_eq!((paced.events, paced.load), (20_000, Load::Open { rate: 1_000.0, in_flight: 8 }));
        let o = Overrides { events: Some(50), ..overrides() };
        assert_eq!(Plan::resolve(Scenario::Fanout, &o).expect("plan").deliveries(), 500);
        assert!(
            Plan::resolve(Scenario::Single, &Overrides { duration_s: Some(2.0), ..overrides() }).is_err()
        );
    }

    #[test]
    fn event_bodies_are_about_300_bytes() {
        let body = event_body(7);
        assert!((250..400).contains(&body.len()), "{} bytes", body.len());
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["data"]["seq"], 7);
    }
}
