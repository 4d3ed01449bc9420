//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_start_time_seconds`), read from `/proc/self` on Linux; elsewhere they are left out. A few
//! lines of parsing instead of a crate: `metrics-process` pulls in `procfs` and its dependencies.

use super::metrics::names;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `/proc/self` and sets the three metrics; does nothing where `/proc` is missing.
pub fn sample() {
    let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok() else { return };
    let Some(fields) = stat_fields(&stat) else { return };
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<u64>().ok());
    // Fields after the command name, 0-based: utime is field 14 of proc(5), i.e. index 11 here.
    if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
        metrics::gauge!(names::PROCESS_CPU_SECONDS).set((user + system) as f64 / TICKS_PER_SECOND);
    }
    if let Some(rss) = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(vm_rss_bytes) {
        metrics::gauge!(names::PROCESS_RESIDENT_MEMORY).set(rss as f64);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time);
    if let (Some(boot), Some(start)) = (boot, ticks(19)) {
        metrics::gauge!(names::PROCESS_START_TIME).set(boot as f64 + start as f64 / TICKS_PER_SECOND);
    }
}

/// The fields of `/proc/PID/stat` after `(comm)`, which may itself hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().collect())
}

/// `VmRSS:  1234 kB` of `/proc/PID/status`, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|line| line.strip_prefix("btime ")).and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat =
            "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 12345 1000 300";
        let fields = stat_fields(stat).expect("fields");
        assert_eq!((fields[11], fields[12], fields[19]), ("250", "50", "12345"));
        assert_eq!(vm_rss_bytes("Name:\therald\nVmRSS:\t  2048 kB\n"), Some(2048 * 1024));
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1_700_000_000));
    }
}
