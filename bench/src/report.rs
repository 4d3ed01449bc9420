//! The report: latency percentiles, the table printed on stdout, the JSON document of `--json`, the one
//! summary line and the pass/fail verdict (the exit status). The CPU per event lines come from `cpu`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    cpu::CpuPerEvent,
    procstat::ProcessStats,
    scenario::{OPEN_LOOP_IN_FLIGHT, Scenario},
};

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// The percentiles of `values`, `None` when empty. Sorts `values`.
pub fn latency(values: &mut [f64]) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = (p / 100.0 * values.len() as f64).ceil() as usize;
        values[index.clamp(1, values.len()) - 1]
    };
    Some(Latency { p50: rank(50.0), p95: rank(95.0), p99: rank(99.0), max: values[values.len() - 1] })
}

/// Everything measured, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub mode: String,
    pub events: u64,
    pub endpoints: usize,
    /// Sends in flight (closed-loop scenarios), else null.
    pub concurrency: Option<usize>,
    /// Events per second (open-loop scenarios), else null.
    pub rate: Option<f64>,
    /// Open loop: the most sends in flight (paced: --concurrency), else null.
    pub max_in_flight: Option<usize>,
    /// Open loop: sends that started more than 10 ms after their scheduled time (a saturated run has
    /// many), else null.
    pub late_sends: Option<u64>,
    /// Open loop: the worst delay of a send after its scheduled time, else null.
    pub worst_lag_ms: Option<f64>,
    pub accepted: u64,
    pub send_failures: u64,
    pub rate_limited: u64,
    pub ingest_events_per_sec: f64,
    /// Time from an event's POST to its 202, accepted events only.
    pub ingest_latency_ms: Option<Latency>,
    pub deliveries_expected: u64,
    pub deliveries_delivered: u64,
    /// Deliveries per second, from the first send to the last first arrival.
    pub deliveries_per_sec: f64,
    pub ceiling_deliveries_per_sec: Option<f64>,
    /// The ceiling's posts in flight (closed loop; its rate is the scenario's otherwise).
    pub ceiling_concurrency: Option<usize>,
    pub ceiling_failures: Option<u64>,
    /// deliveries_per_sec / ceiling_deliveries_per_sec.
    pub ratio: Option<f64>,
    /// Arrival − the payload's timestamp, over every endpoint.
    pub latency_ms: Option<Latency>,
    /// Noisy scenario: the fast endpoints only, and the slow one.
    pub fast_latency_ms: Option<Latency>,
    pub slow_latency_ms: Option<Latency>,
    pub ceiling_latency_ms: Option<Latency>,
    pub lost: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    /// Requests bearing a `webhook-id` already seen.
    pub retries: u64,
    /// First attempts the receiver answered 500 on purpose (retry scenario).
    pub injected_failures: u64,
    /// Requests whose body was not a Herald payload (no `id` or `timestamp`).
    pub malformed: u64,
    /// Arrivals of events this run did not expect.
    pub unexpected: u64,
    pub processes: Vec<ProcessStats>,
    pub cpu_seconds_total: Option<f64>,
    /// CPU per delivered event of Herald, the service groups and everything but the bench.
    pub cpu_per_event: CpuPerEvent,
    /// When the bench started (RFC 3339), and how long it ran in all.
    pub started_at: String,
    pub duration_s: f64,
    /// Herald's part: from the first event sent until every delivery arrived (or the deadline).
    pub herald_part_s: f64,
    pub passed: bool,
}

impl Report {
    /// Nothing lost, every signature valid, every event accepted.
    pub fn verdict(&self) -> bool {
        self.lost == 0 && self.bad_signatures == 0 && self.malformed == 0 && self.send_failures == 0
    }

    fn header(&self) -> String {
        let endpoints =
            if self.endpoints == 1 { "1 endpoint".into() } else { format!("{} endpoints", self.endpoints) };
        let load = match (self.concurrency, self.rate) {
            (Some(concurrency), _) => format!("concurrency {concurrency}"),
            (None, Some(rate)) => match self.max_in_flight {
                Some(n) if n < OPEN_LOOP_IN_FLIGHT => {
                    format!("{} events/s, ≤ {n} in flight", thousands(rate))
                }
                _ => format!("{} events/s", thousands(rate)),
            },
            (None, None) => String::new(),
        };
        format!(
            "scenario {} · mode {} · {} events × {endpoints} · {load}",
            self.scenario, self.mode, self.events
        )
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(self.header());
        line(format!(
            "{:<18}{} events/s accepted ({} failed, {} rate-limited)",
            "ingest",
            thousands(self.ingest_events_per_sec),
            self.send_failures,
            self.rate_limited
        ));
        let ceiling = match (self.ceiling_deliveries_per_sec, self.ratio) {
            (Some(ceiling), Some(ratio)) => {
                format!("   (raw HTTP ceiling {} /s, Herald at {:.0}%)", thousands(ceiling), ratio * 100.0)
            }
            _ => String::new(),
        };
        if self.ingest_latency_ms.is_some() {
            line(format!("{:<18}{}", "  ingest (ms)", latency_text(self.ingest_latency_ms)));
        }
        if let (Some(late), Some(worst)) = (self.late_sends, self.worst_lag_ms) {
            line(format!("{:<18}{late} sends late by > 10 ms (worst {worst:.1} ms)", "  schedule"));
        }
        line(format!("{:<18}{} /s end to end{ceiling}", "deliveries", thousands(self.deliveries_per_sec)));
        line(format!("{:<18}{}", "latency (ms)", latency_text(self.latency_ms)));
        if self.scenario == Scenario::Noisy {
            line(format!("{:<18}{}", "  fast endpoints", latency_text(self.fast_latency_ms)));
            line(format!("{:<18}{}", "  slow endpoint", latency_text(self.slow_latency_ms)));
        }
        if self.ceiling_latency_ms.is_some() {
            line(format!("{:<18}{}", "  raw ceiling", latency_text(self.ceiling_latency_ms)));
        }
        let mut counts = format!(
            "lost {} · duplicates {} · bad signatures {} · retries {}",
            self.lost, self.duplicates, self.bad_signatures, self.retries
        );
        if self.scenario == Scenario::Retry {
            write!(counts, " (after {} injected 500s)", self.injected_failures)
                .expect("writing to a String cannot fail");
        }
        for (count, what) in [(self.malformed, "malformed"), (self.unexpected, "unexpected")] {
            if count > 0 {
                write!(counts, " · {what} {count}").expect("writing to a String cannot fail");
            }
        }
        line(counts);
        if self.processes.is_empty() {
            line("herald  no process found (pass --pid)".into());
        }
        for process in &self.processes {
            let mut text = format!("{:<7} pid {}", process.name, process.pid);
            match process.cpu_seconds {
                Some(cpu) => write!(text, "  cpu {cpu:.2} s"),
                None => write!(text, "  cpu ?"),
            }
            .expect("writing to a String cannot fail");
            match process.peak_rss_mib {
                Some(rss) => write!(text, "  peak rss {rss:.1} MiB"),
                None => write!(text, "  peak rss ?"),
            }
            .expect("writing to a String cannot fail");
            line(text);
        }
        if self.processes.len() > 1
            && let Some(total) = self.cpu_seconds_total
        {
            line(format!("total cpu {total:.2} s"));
        }
        self.cpu_per_event.lines().into_iter().for_each(line);
        out
    }

    /// The last line of the output, for CI logs and comparisons.
    pub fn summary(&self) -> String {
        let p99 = |latency: Option<Latency>| latency.map_or("-".into(), |l| format!("{:.1}", l.p99));
        let mut text = format!(
            "summary: {} {} {:.0} deliveries/s p99 {} ms",
            self.scenario,
            self.mode,
            self.deliveries_per_sec,
            p99(self.latency_ms)
        );
        if self.scenario == Scenario::Noisy {
            write!(
                text,
                " (fast p99 {} ms, slow p99 {} ms)",
                p99(self.fast_latency_ms),
                p99(self.slow_latency_ms)
            )
            .expect("writing to a String cannot fail");
        }
        write!(
            text,
            " lost {} dup {} bad-sig {} send-failures {}",
            self.lost, self.duplicates, self.bad_signatures, self.send_failures
        )
        .expect("writing to a String cannot fail");
        if let Some(ms) = self.cpu_per_event.everything_but_bench_ms_per_event {
            write!(text, " cpu {ms:.2} ms/event").expect("writing to a String cannot fail");
        }
        match self.ratio {
            Some(ratio) => write!(text, " (ceiling ratio {ratio:.2})"),
            None => write!(text, " (no ceiling)"),
        }
        .expect("writing to a String cannot fail");
        text.push_str(if self.passed { " OK" } else { " FAILED" });
        text
    }
}

fn latency_text(latency: Option<Latency>) -> String {
    match latency {
        Some(l) => format!("p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}", l.p50, l.p95, l.p99, l.max),
        None => "no deliveries".into(),
    }
}

/// A rate rounded to a whole number, with thousands separators: 12345.6 → "12,346".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            scenario: Scenario::Noisy,
            mode: "embedded".into(),
            events: 1000,
            endpoints: 10,
            concurrency: None,
            rate: Some(500.0),
            max_in_flight: Some(32),
            late_sends: Some(3),
            worst_lag_ms: Some(14.5),
            accepted: 1000,
            send_failures: 0,
            rate_limited: 2,
            ingest_events_per_sec: 499.7,
            ingest_latency_ms: Some(Latency { p50: 1.0, p95: 2.0, p99: 3.0, max: 4.0 }),
            deliveries_expected: 10_000,
            deliveries_delivered: 9_999,
            deliveries_per_sec: 4321.4,
            ceiling_deliveries_per_sec: Some(12_345.0),
            ceiling_concurrency: None,
            ceiling_failures: Some(0),
            ratio: Some(0.35),
            latency_ms: Some(Latency { p50: 12.1, p95: 35.2, p99: 61.0, max: 210.3 }),
            fast_latency_ms: Some(Latency { p50: 10.0, p95: 20.0, p99: 30.0, max: 40.0 }),
            slow_latency_ms: None,
            ceiling_latency_ms: None,
            lost: 1,
            duplicates: 0,
            bad_signatures: 0,
            retries: 0,
            injected_failures: 0,
            malformed: 0,
            unexpected: 0,
            processes: vec![
                ProcessStats {
                    pid: 1234,
                    name: "herald".into(),
                    cpu_seconds: Some(8.12),
                    peak_rss_mib: Some(41.2),
                },
                ProcessStats {
                    pid: 1300,
                    name: "herald-worker".into(),
                    cpu_seconds: None,
                    peak_rss_mib: Some(20.0),
                },
            ],
            cpu_seconds_total: Some(8.12),
            cpu_per_event: CpuPerEvent {
                delivered: 9_999,
                window_s: 20.4,
                groups: Vec::new(),
                machine_busy_seconds: Some(30.0),
                bench_seconds: Some(10.0),
                everything_but_bench_seconds: Some(20.0),
                everything_but_bench_ms_per_event: Some(2.0),
            },
            started_at: "2026-11-22T22:05:21Z".into(),
            duration_s: 31.5,
            herald_part_s: 20.4,
            passed: false,
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = latency(&mut values).expect("values");
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        let mut few = vec![3.0, 1.0, 2.0];
        assert_eq!(latency(&mut few), Some(Latency { p50: 2.0, p95: 3.0, p99: 3.0, max: 3.0 }));
        assert_eq!(latency(&mut [7.5]).map(|l| l.p50), Some(7.5));
        assert_eq!(latency(&mut []), None);
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let value = serde_json::to_value(sample()).expect("serializable");
        assert_eq!(value["scenario"], "noisy");
        assert_eq!(value["mode"], "embedded");
        assert_eq!(value["events"], 1000);
        assert_eq!(value["endpoints"], 10);
        assert!(value["concurrency"].is_null());
        assert_eq!(value["rate"], 500.0);
        assert_eq!(value["ingest_events_per_sec"], 499.7);
        assert_eq!(value["deliveries_per_sec"], 4321.4);
        assert_eq!(value["ceiling_deliveries_per_sec"], 12_345.0);
        assert_eq!(value["ratio"], 0.35);
        assert_eq!(value["latency_ms"]["p99"], 61.0);
        assert_eq!(value["fast_latency_ms"]["p50"], 10.0);
        assert!(value["slow_latency_ms"].is_null());
        for key in ["lost", "duplicates", "bad_signatures", "retries"] {
            assert!(value[key].is_u64(), "{key}");
        }
        assert_eq!(value["processes"][0]["pid"], 1234);
        assert_eq!(value["processes"][0]["name"], "herald");
        assert_eq!(value["processes"][0]["cpu_seconds"], 8.12);
        assert_eq!(value["processes"][0]["peak_rss_mib"], 41.2);
        assert_eq!(value["started_at"], "2026-11-22T22:05:21Z");
        assert_eq!((value["max_in_flight"].as_u64(), value["late_sends"].as_u64()), (Some(32), Some(3)));
        assert_eq!(value["cpu_per_event"]["everything_but_bench_ms_per_event"], 2.0);
        assert_eq!(value["duration_s"], 31.5);
    }

    #[test]
    fn the_table_and_summary_show_the_numbers() {
        let report = sample();
        let table = report.table();
        assert!(table.starts_with(
            "scenario noisy · mode embedded · 1000 events × 10 endpoints · 500 events/s, ≤ 32 in flight"
        ));
        assert!(
            table.contains("4,321 /s end to end   (raw HTTP ceiling 12,345 /s, Herald at 35%)"),
            "{table}"
        );
        assert!(table.contains("  fast endpoints  p50 10.0  p95 20.0  p99 30.0  max 40.0"), "{table}");
        assert!(table.contains("  slow endpoint   no deliveries"), "{table}");
        assert!(table.contains("\nherald  pid 1234  cpu 8.12 s  peak rss 41.2 MiB\n"), "{table}");
        assert!(table.contains("\nherald-worker pid 1300  cpu ?  peak rss 20.0 MiB\n"), "{table}");
        assert!(table.contains("\ntotal cpu 8.12 s\n"), "{table}");
        assert!(table.contains("\n  schedule        3 sends late by > 10 ms (worst 14.5 ms)\n"), "{table}");
        assert!(
            table.contains("\ncpu all but bench 2.00 ms/event  (20.00 s: machine busy 30.00 s"),
            "{table}"
        );
        let summary = report.summary();
        assert!(summary.starts_with("summary: noisy embedded 4321 deliveries/s p99 61.0 ms"), "{summary}");
        assert!(
            summary.contains("lost 1 dup 0")
                && summary.ends_with("cpu 2.00 ms/event (ceiling ratio 0.35) FAILED"),
            "{summary}"
        );
    }

    #[test]
    fn anything_lost_fails_the_run() {
        let mut report = sample();
        assert!(!report.verdict());
        report.lost = 0;
        assert!(report.verdict());
        report.bad_signatures = 1;
        assert!(!report.verdict());
        report.bad_signatures = 0;
        report.malformed = 1;
        assert!(!report.verdict());
        report.malformed = 0;
        report.send_failures = 3;
        assert!(!report.verdict());
    }

    #[test]
    fn rates_get_thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(4321.4), "4,321");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
