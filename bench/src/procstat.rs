//! Herald's process statistics from /proc: which processes (the `--pid`s, else every process named
//! exactly `herald` or `herald-worker`; when several are named `herald`, as on a shared machine, only the
//! one listening on the API's port), their CPU seconds (utime + stime of /proc/PID/stat) over Herald's
//! part of the run, and their peak resident memory (VmRSS of /proc/PID/status, sampled every 100 ms).

use std::{
    fs,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::receiver::lock;

/// The process names taken when no `--pid` is given (`/proc/PID/comm`, exact match).
const NAMES: [&str; 2] = ["herald", "herald-worker"];

const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub name: String,
}

/// One process's numbers for the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessStats {
    pub pid: u32,
    pub name: String,
    /// CPU time used during Herald's part of the run; null if /proc could not be read.
    pub cpu_seconds: Option<f64>,
    /// Largest VmRSS seen; null if never read.
    pub peak_rss_mib: Option<f64>,
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|name| name.trim_end().to_string())
}

/// The processes to watch: `pids` if given, else every `herald` and `herald-worker`. When several are
/// named `herald` and one of them listens on `api_port`, the other `herald`s are left out (another
/// instance on a shared machine). Returns the processes and the `herald`s left out.
pub fn discover(pids: &[u32], api_port: Option<u16>) -> (Vec<Proc>, Vec<Proc>) {
    if !pids.is_empty() {
        let given = pids.iter().map(|&pid| Proc { pid, name: comm(pid).unwrap_or_else(|| "?".into()) });
        return (given.collect(), Vec::new());
    }
    let Ok(entries) = fs::read_dir("/proc") else { return (Vec::new(), Vec::new()) };
    let mut found: Vec<Proc> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some(Proc { pid, name: comm(pid)? }))
        .filter(|proc| NAMES.contains(&proc.name.as_str()))
        .collect();
    found.sort_by_key(|proc| proc.pid);
    let apis = found.iter().filter(|p| p.name == "herald").count();
    let listening = api_port.map(listening_inodes).unwrap_or_default();
    if apis < 2 || listening.is_empty() {
        return (found, Vec::new());
    }
    let is_ours = |proc: &Proc| proc.name != "herald" || owns_a_socket(proc.pid, &listening);
    if !found.iter().any(|p| p.name == "herald" && is_ours(p)) {
        return (found, Vec::new());
    }
    found.into_iter().partition(is_ours)
}

/// Inodes of the sockets listening on TCP `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|table| parse_listening_inodes(&table, port))
        .collect()
}

/// From a /proc/net/tcp table: the inodes of sockets in state LISTEN (0A) on `port`.
pub fn parse_listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *fields.get(3)? == "0A").then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

fn owns_a_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok()).any(|target| {
        let target = target.to_string_lossy();
        let inode = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']'));
        inode.and_then(|i| i.parse().ok()).is_some_and(|i: u64| inodes.contains(&i))
    })
}

/// utime + stime (clock ticks) from a /proc/PID/stat line. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from /proc/PID/status.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    parse_vmrss_kib(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// Watches processes from `start` to `stop`.
#[derive(Debug)]
pub struct Monitor {
    procs: Vec<Proc>,
    ticks_per_sec: u64,
    start_ticks: Vec<Option<u64>>,
    peaks_kib: Arc<Mutex<Vec<Option<u64>>>>,
    running: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

impl Monitor {
    pub fn start(procs: Vec<Proc>) -> Monitor {
        let ticks_per_sec = clock_ticks();
        let start_ticks = procs.iter().map(|p| cpu_ticks(p.pid)).collect();
        let peaks_kib = Arc::new(Mutex::new(vec![None; procs.len()]));
        let running = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (pids, peaks, running) =
                (procs.iter().map(|p| p.pid).collect::<Vec<_>>(), peaks_kib.clone(), running.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                while running.load(Relaxed) {
                    tick.tick().await;
                    sample(&pids, &peaks);
                }
            })
        };
        Monitor { procs, ticks_per_sec, start_ticks, peaks_kib, running, sampler }
    }

    pub async fn stop(self) -> Vec<ProcessStats> {
        self.running.store(false, Relaxed);
        drop(self.sampler.await);
        let pids: Vec<u32> = self.procs.iter().map(|p| p.pid).collect();
        sample(&pids, &self.peaks_kib);
        let peaks = lock(&self.peaks_kib).clone();
        self.procs
            .into_iter()
            .zip(self.start_ticks)
            .zip(peaks)
            .map(|((proc, start), peak)| {
                let used = start.zip(cpu_ticks(proc.pid)).map(|(start, end)| end.saturating_sub(start));
                ProcessStats {
                    pid: proc.pid,
                    name: proc.name,
                    cpu_seconds: used.map(|ticks| ticks as f64 / self.ticks_per_sec as f64),
                    peak_rss_mib: peak.map(|kib| kib as f64 / 1024.0),
                }
            })
            .collect()
    }
}

fn sample(pids: &[u32], peaks: &Mutex<Vec<Option<u64>>>) {
    let mut peaks = lock(peaks);
    for (pid, peak) in pids.iter().zip(peaks.iter_mut()) {
        if let Some(rss) = rss_kib(*pid) {
            *peak = Some(peak.map_or(rss, |p| p.max(rss)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_after_the_last_parenthesis() {
        // comm "her ald) (x" holds spaces and parentheses; utime 1234, stime 567.
        let line = "4242 (her ald) (x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 1234 567 0 0 20 0 9 0 \
                    123456 987654321 10240 18446744073709551615 1 1 0 0 0 0 0 4096 17728 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_ticks(line), Some(1801));
        let plain = "7 (herald) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_ticks(plain), Some(30));
        assert_eq!(parse_stat_ticks("7 (herald) R 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn listening_sockets_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:46A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6016 1 0 100 0 0 10 0
   1: 0100007F:46A0 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 7001 1 0 100 0 0 10 0
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6759 1 0 100 0 0 10 0
";
        // 0x46A0 = 18080; the second line is an established connection, not a listener.
        assert_eq!(parse_listening_inodes(table, 18080), vec![6016]);
        assert_eq!(parse_listening_inodes(table, 8080), vec![6759]);
        assert!(parse_listening_inodes(table, 9999).is_empty());
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\therald\nVmPeak:\t  900000 kB\nVmRSS:\t   42240 kB\nThreads:\t9\n";
        assert_eq!(parse_vmrss_kib(status), Some(42_240));
        assert_eq!(parse_vmrss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(clock_ticks() > 0);
        assert_eq!(discover(&[me], None).0[0].pid, me);
    }
}
