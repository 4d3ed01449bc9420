//! CPU per event of every process, from /proc, over Herald's part of the run: the service groups
//! (`postgres`: every process named `postgres`, the postmaster and its backends; `rabbitmq`: `beam.smp`,
//! `epmd`, `erl_child_setup`), and the machine's busy CPU from /proc/stat minus the bench's own
//! (/proc/self/stat): "everything but the bench", the cross-check of the per-group figures.
//!
//! Processes come and go (PostgreSQL forks a backend per connection): each group is read at the start
//! and at the end. A process present at both counts its ticks in between; one present at the end that
//! started after the run began (/proc/PID/stat field 22) counts all its ticks; one gone by the end is
//! lost (its ticks are not counted, only that it exited).

use std::{fmt::Write as _, fs, time::Instant};

use anyhow::bail;
use serde::Serialize;

use crate::procstat::{clock_ticks, parse_stat_ticks};

/// A `--services` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceArg {
    /// Every process named postgres (postmaster, backends, background workers).
    Postgres,
    /// beam.smp, plus epmd and erl_child_setup.
    Rabbitmq,
    /// No service group (the machine's busy CPU is still reported).
    None,
}

/// A service group measured beside Herald.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    Rabbitmq,
}

impl Service {
    const ALL: [Service; 2] = [Service::Postgres, Service::Rabbitmq];

    pub fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Rabbitmq => "rabbitmq",
        }
    }

    /// The process names (`comm`, exact match) of the group.
    fn comms(self) -> &'static [&'static str] {
        match self {
            Service::Postgres => &["postgres"],
            Service::Rabbitmq => &["beam.smp", "epmd", "erl_child_setup"],
        }
    }

    /// The group among `services` a process named `comm` belongs to.
    pub fn of(comm: &str, services: &[Service]) -> Option<Service> {
        services.iter().copied().find(|service| service.comms().contains(&comm))
    }
}

/// The groups to measure: `explicit` when `--services` named them (then they are reported even when
/// no process is found), else both, reported only if found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub services: Vec<Service>,
    pub explicit: bool,
}

/// Resolves `--services`.
pub fn select(args: &[ServiceArg]) -> anyhow::Result<Selection> {
    if args.is_empty() {
        return Ok(Selection { services: Service::ALL.to_vec(), explicit: false });
    }
    if args.contains(&ServiceArg::None) {
        if args.len() > 1 {
            bail!("--services none cannot be combined with a service");
        }
        return Ok(Selection { services: Vec::new(), explicit: true });
    }
    let services = Service::ALL
        .into_iter()
        .filter(|service| {
            let arg = match service {
                Service::Postgres => ServiceArg::Postgres,
                Service::Rabbitmq => ServiceArg::Rabbitmq,
            };
            args.contains(&arg)
        })
        .collect();
    Ok(Selection { services, explicit: true })
}

/// The fields of /proc/PID/stat the accounting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 2, without its parentheses.
    pub comm: String,
    /// utime + stime (fields 14 and 15), clock ticks.
    pub ticks: u64,
    /// Field 22: when the process started, clock ticks since boot.
    pub start_time: u64,
}

/// Parses a /proc/PID/stat line. The name (field 2) may hold spaces and parentheses, so it runs from
/// the first '(' to the last ')' and the fields are counted after it.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_string();
    let ticks = parse_stat_ticks(stat)?;
    // After the name, field 3 (state) is index 0, so field 22 is index 19.
    let start_time = stat[close + 1..].split_whitespace().nth(19)?.parse().ok()?;
    Some(Stat { comm, ticks, start_time })
}

/// The machine's busy clock ticks from /proc/stat's `cpu` line: user + nice + system + irq + softirq +
/// steal (idle and iowait are not busy; guest time is already inside user).
pub fn parse_busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|line| line.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let at = |i: usize| fields.get(i).copied();
    Some(at(0)? + at(1)? + at(2)? + at(5)? + at(6)? + at(7).unwrap_or(0))
}

/// One process of a group, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub service: Service,
    pub start_time: u64,
    pub ticks: u64,
}

/// A group's accounting over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Ticks counted: deltas of the processes seen at both ends, all ticks of those born in the window.
    pub ticks: u64,
    /// Processes at the end.
    pub processes: usize,
    /// Processes at the end that started after the run began.
    pub born: usize,
    /// Processes at the start gone by the end (their ticks in the window are lost).
    pub exited: usize,
}

/// Accounts `service`'s processes between the `start` and `end` readings; `run_began` is the start of
/// the window in clock ticks since boot. A process is the same one when its pid and start time match.
pub fn tally(service: Service, start: &[Sample], end: &[Sample], run_began: u64) -> Tally {
    let same = |a: &Sample, b: &Sample| a.pid == b.pid && a.start_time == b.start_time;
    let mut tally = Tally::default();
    for now in end.iter().filter(|s| s.service == service) {
        tally.processes += 1;
        if let Some(before) = start.iter().find(|s| same(s, now)) {
            tally.ticks += now.ticks.saturating_sub(before.ticks);
        } else if now.start_time >= run_began {
            tally.born += 1;
            tally.ticks += now.ticks;
        }
        // Else it started before the run but was not read at the start: its ticks are unknown.
    }
    tally.exited = start.iter().filter(|s| s.service == service && !end.iter().any(|e| same(s, e))).count();
    tally
}

/// Reads every process of `services` in /proc.
fn scan(services: &[Service]) -> Vec<Sample> {
    if services.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
            let service = Service::of(&stat.comm, services)?;
            Some(Sample { pid, service, start_time: stat.start_time, ticks: stat.ticks })
        })
        .collect()
}

/// Seconds since boot from /proc/uptime, in clock ticks.
fn uptime_ticks(ticks_per_sec: u64) -> Option<u64> {
    let uptime = fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some((seconds * ticks_per_sec as f64) as u64)
}

fn machine_busy_ticks() -> Option<u64> {
    parse_busy_ticks(&fs::read_to_string("/proc/stat").ok()?)
}

fn own_ticks() -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// The readings at the start of the window.
#[derive(Debug)]
pub struct Watch {
    selection: Selection,
    ticks_per_sec: u64,
    run_began: u64,
    start: Vec<Sample>,
    busy: Option<u64>,
    bench: Option<u64>,
    started: Instant,
}

/// What the window measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub groups: Vec<(Service, Tally)>,
    pub ticks_per_sec: u64,
    pub machine_busy_ticks: Option<u64>,
    pub bench_ticks: Option<u64>,
    pub window_s: f64,
}

impl Watch {
    pub fn start(selection: Selection) -> Watch {
        let ticks_per_sec = clock_ticks();
        let run_began = uptime_ticks(ticks_per_sec).unwrap_or(0);
        let start = scan(&selection.services);
        for service in &selection.services {
            if selection.explicit && !start.iter().any(|s| s.service == *service) {
                eprintln!("warning: no {} process found ({:?})", service.name(), service.comms());
            }
        }
        let (busy, bench) = (machine_busy_ticks(), own_ticks());
        Watch { selection, ticks_per_sec, run_began, start, busy, bench, started: Instant::now() }
    }

    pub fn stop(self) -> Measured {
        let (busy, bench) = (machine_busy_ticks(), own_ticks());
        let end = scan(&self.selection.services);
        let groups = self
            .selection
            .services
            .iter()
            .map(|&service| (service, tally(service, &self.start, &end, self.run_began)))
            .filter(|(service, tally)| {
                self.selection.explicit
                    || tally.processes > 0
                    || self.start.iter().any(|s| s.service == *service)
            })
            .collect();
        let delta = |before: Option<u64>, after: Option<u64>| {
            before.zip(after).map(|(before, after)| after.saturating_sub(before))
        };
        Measured {
            groups,
            ticks_per_sec: self.ticks_per_sec,
            machine_busy_ticks: delta(self.busy, busy),
            bench_ticks: delta(self.bench, bench),
            window_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// One group's line of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuGroup {
    pub name: String,
    /// Processes at the end of the window.
    pub processes: usize,
    /// Of those, started during the window (all their ticks count).
    pub born: usize,
    /// Processes gone by the end: their CPU in the window is not counted.
    pub exited: usize,
    pub cpu_seconds: f64,
    /// cpu_seconds in milliseconds per delivered event; null when nothing was delivered.
    pub cpu_ms_per_event: Option<f64>,
}

/// CPU per event: Herald, the service groups, and everything but the bench.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuPerEvent {
    /// The divisor: deliveries that arrived (with one endpoint, the events delivered).
    pub delivered: u64,
    /// The window: Herald's part of the run, seconds.
    pub window_s: f64,
    pub groups: Vec<CpuGroup>,
    /// The machine's busy CPU over the window (/proc/stat, all cores).
    pub machine_busy_seconds: Option<f64>,
    /// herald-bench's own CPU (sender, receiver) over the window.
    pub bench_seconds: Option<f64>,
    /// machine_busy_seconds − bench_seconds.
    pub everything_but_bench_seconds: Option<f64>,
    pub everything_but_bench_ms_per_event: Option<f64>,
}

impl CpuPerEvent {
    /// Herald's processes (`herald`: their count and CPU seconds, if measured) first, then the groups.
    pub fn new(herald: Option<(usize, f64)>, measured: &Measured, delivered: u64) -> CpuPerEvent {
        let per_event = |seconds: f64| (delivered > 0).then(|| seconds * 1e3 / delivered as f64);
        let seconds = |ticks: u64| ticks as f64 / measured.ticks_per_sec.max(1) as f64;
        let group = |name: &str, processes, born, exited, cpu_seconds| CpuGroup {
            name: name.into(),
            processes,
            born,
            exited,
            cpu_seconds,
            cpu_ms_per_event: per_event(cpu_seconds),
        };
        let mut groups: Vec<CpuGroup> =
            herald.map(|(processes, cpu)| group("herald", processes, 0, 0, cpu)).into_iter().collect();
        groups.extend(
            measured
                .groups
                .iter()
                .map(|(service, t)| group(service.name(), t.processes, t.born, t.exited, seconds(t.ticks))),
        );
        let machine = measured.machine_busy_ticks.map(seconds);
        let bench = measured.bench_ticks.map(seconds);
        let rest = machine.zip(bench).map(|(machine, bench)| (machine - bench).max(0.0));
        CpuPerEvent {
            delivered,
            window_s: measured.window_s,
            groups,
            machine_busy_seconds: machine,
            bench_seconds: bench,
            everything_but_bench_seconds: rest,
            everything_but_bench_ms_per_event: rest.and_then(per_event),
        }
    }

    /// The report's lines.
    pub fn lines(&self) -> Vec<String> {
        let ms = |v: Option<f64>| v.map_or("-".into(), |ms| format!("{ms:.2}"));
        let mut lines: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let mut text = format!(
                    "{:<18}{} ms/event  ({:.2} s, {} process{}",
                    format!("cpu {}", g.name),
                    ms(g.cpu_ms_per_event),
                    g.cpu_seconds,
                    g.processes,
                    if g.processes == 1 { "" } else { "es" }
                );
                if g.born > 0 {
                    write!(text, ", {} started in the run", g.born).expect("writing to a String cannot fail");
                }
                if g.exited > 0 {
                    write!(text, ", {} exited: their CPU is not counted", g.exited)
                        .expect("writing to a String cannot fail");
                }
                text.push(')');
                text
            })
            .collect();
        lines.push(match (self.everything_but_bench_seconds, self.machine_busy_seconds, self.bench_seconds) {
            (Some(rest), Some(machine), Some(bench)) => format!(
                "{:<18}{} ms/event  ({rest:.2} s: machine busy {machine:.2} s − bench {bench:.2} s, over {:.1} s)",
                "cpu all but bench",
                ms(self.everything_but_bench_ms_per_event),
                self.window_s
            ),
            _ => format!("{:<18}? (/proc/stat or /proc/self/stat unreadable)", "cpu all but bench"),
        });
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_gives_the_name_the_ticks_and_the_start_time() {
        // A backend: utime 1234, stime 567, start time (field 22) 456789.
        let line = "4242 (postgres) S 2212 2212 2212 0 -1 4194560 1200 0 0 0 1234 567 0 0 20 0 1 0 \
                    456789 987654321 10240 18446744073709551615 1 1 0 0 0 0 0 4096 17728 0 0 0 17 1 0 0";
        let stat = parse_stat(line).expect("stat");
        assert_eq!(stat, Stat { comm: "postgres".into(), ticks: 1801, start_time: 456_789 });
        // A name with spaces and parentheses.
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 99 1 1";
        assert_eq!(parse_stat(odd), Some(Stat { comm: "a (b) c".into(), ticks: 30, start_time: 99 }));
        assert_eq!(parse_stat("7 (x) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        let text = "cpu  100 2 30 5000 40 6 7 8 0 0\ncpu0 50 1 15 2500 20 3 3 4 0 0\nintr 1 2 3\n";
        assert_eq!(parse_busy_ticks(text), Some(100 + 2 + 30 + 6 + 7 + 8));
        // An old kernel without steal.
        assert_eq!(parse_busy_ticks("cpu 1 2 3 4 5 6 7\n"), Some(1 + 2 + 3 + 6 + 7));
        assert_eq!(parse_busy_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse_busy_ticks("cpu 1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn processes_are_grouped_by_name() {
        let both = [Service::Postgres, Service::Rabbitmq];
        assert_eq!(Service::of("postgres", &both), Some(Service::Postgres));
        for comm in ["beam.smp", "epmd", "erl_child_setup"] {
            assert_eq!(Service::of(comm, &both), Some(Service::Rabbitmq), "{comm}");
        }
        assert_eq!(Service::of("postgres", &[Service::Rabbitmq]), None);
        assert_eq!(Service::of("herald", &both), None);
        assert_eq!(Service::of("postgres: 15/main", &both), None);
    }

    #[test]
    fn services_flag_selects_the_groups() {
        let both = vec![Service::Postgres, Service::Rabbitmq];
        assert_eq!(select(&[]).expect("ok"), Selection { services: both.clone(), explicit: false });
        let named = select(&[ServiceArg::Rabbitmq, ServiceArg::Postgres]).expect("ok");
        assert_eq!(named, Selection { services: both, explicit: true });
        let none = select(&[ServiceArg::None]).expect("ok");
        assert_eq!(none, Selection { services: Vec::new(), explicit: true });
        assert!(select(&[ServiceArg::None, ServiceArg::Postgres]).is_err());
    }

    #[test]
    fn backends_that_come_and_go_are_accounted() {
        let pg = |pid, start_time, ticks| Sample { pid, service: Service::Postgres, start_time, ticks };
        let rabbit = Sample { pid: 50, service: Service::Rabbitmq, start_time: 10, ticks: 700 };
        let start = [pg(1, 10, 500), pg(2, 900, 40), pg(3, 950, 5), rabbit];
        let end = [
            pg(1, 10, 520),                  // the postmaster: 20 ticks in the window
            pg(3, 950, 9),                   // a backend at both ends: 4
            pg(4, 1_001, 30),                // born in the window: all 30
            pg(2, 1_200, 7),                 // pid 2 reused by a new backend: all 7
            pg(5, 500, 80),                  // older but not read at the start: not counted
            Sample { ticks: 760, ..rabbit }, // another group
        ];
        let t = tally(Service::Postgres, &start, &end, 1_000);
        assert_eq!(t, Tally { ticks: 20 + 4 + 30 + 7, processes: 5, born: 2, exited: 1 });
        let r = tally(Service::Rabbitmq, &start, &end, 1_000);
        assert_eq!(r, Tally { ticks: 60, processes: 1, born: 0, exited: 0 });
    }

    #[test]
    fn cpu_per_event_divides_by_the_deliveries() {
        let measured = Measured {
            groups: vec![(Service::Postgres, Tally { ticks: 1_340, processes: 6, born: 1, exited: 2 })],
            ticks_per_sec: 100,
            machine_busy_ticks: Some(6_000),
            bench_ticks: Some(1_500),
            window_s: 21.0,
        };
        let cpu = CpuPerEvent::new(Some((2, 12.5)), &measured, 10_000);
        assert_eq!(cpu.groups[0].name, "herald");
        assert_eq!(cpu.groups[0].cpu_ms_per_event, Some(1.25));
        assert_eq!(cpu.groups[1].name, "postgres");
        assert_eq!(cpu.groups[1].cpu_seconds, 13.4);
        assert_eq!(cpu.everything_but_bench_seconds, Some(45.0));
        assert_eq!(cpu.everything_but_bench_ms_per_event, Some(4.5));
        let lines = cpu.lines();
        assert_eq!(lines[0], "cpu herald        1.25 ms/event  (12.50 s, 2 processes)");
        assert!(lines[1].contains("1 started in the run, 2 exited: their CPU is not counted"), "{lines:?}");
        assert!(lines[2].starts_with("cpu all but bench 4.50 ms/event  (45.00 s: machine busy 60.00 s"));
        let none = CpuPerEvent::new(None, &measured, 0);
        assert_eq!((none.groups.len(), none.everything_but_bench_ms_per_event), (1, None));
        let json = serde_json::to_value(&cpu).expect("serializable");
        let postgres_ms = json["groups"][1]["cpu_ms_per_event"].as_f64().expect("a number");
        assert!((postgres_ms - 1.34).abs() < 1e-9, "{postgres_ms}");
        assert_eq!(json["everything_but_bench_seconds"], 45.0);
    }

    #[test]
    fn this_machine_can_be_read() {
        assert!(machine_busy_ticks().is_some());
        assert!(own_ticks().is_some());
        assert!(uptime_ticks(100).is_some_and(|t| t > 0));
        let me = parse_stat(&fs::read_to_string("/proc/self/stat").expect("stat")).expect("parsed");
        assert!(me.start_time > 0);
    }
}
