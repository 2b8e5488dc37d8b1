//! The standard `process_*` metrics every Prometheus client library exports
//! (so the usual dashboards and alerts work unchanged): CPU time, resident
//! and virtual memory, open and allowed file descriptors, start time. Read
//! from /proc at scrape time; on other systems the family is left out.

use std::fmt::Write;

/// Appends the process families to `out`. Nothing on a system without /proc.
pub fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    if let Some(process) = linux::read() {
        process.render(out);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

/// What one scrape read about the process.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    start_time_seconds: f64,
}

impl Process {
    fn render(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            &self.cpu_seconds,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &self.resident_bytes,
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            &self.virtual_bytes,
        );
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            &self.open_fds,
        );
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            &self.max_fds,
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            &self.start_time_seconds,
        );
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::Process;

    pub(super) fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut process = parse_stat(&stat, ticks as f64, page_size as u64, boot_time)?;
        process.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            process.max_fds = limit.rlim_cur;
        }
        Some(process)
    }

    /// `btime` of /proc/stat: the boot time in seconds since the epoch.
    pub(super) fn boot_time(proc_stat: &str) -> Option<f64> {
        proc_stat
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Fields of /proc/self/stat (proc(5)). The command name, field 2, is in
    /// parentheses and may itself hold spaces and parentheses, so fields are
    /// counted from after its last `)`.
    pub(super) fn parse_stat(
        stat: &str,
        ticks_per_second: f64,
        page_size: u64,
        boot_time: f64,
    ) -> Option<Process> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        // Field 3 (state) is the first after the name.
        let field = |n: usize| after_name.split_whitespace().nth(n - 3);
        let number = |n: usize| field(n)?.parse::<u64>().ok();
        let cpu_ticks = number(14)? + number(15)?;
        Some(Process {
            cpu_seconds: cpu_ticks as f64 / ticks_per_second,
            start_time_seconds: boot_time + number(22)? as f64 / ticks_per_second,
            virtual_bytes: number(23)?,
            resident_bytes: number(24)? * page_size,
            ..Process::default()
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_a_stat_line_whose_name_has_spaces_and_parentheses() {
            let stat = "4242 (blip (mq) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 2048 18446744073709551615";
            let process = parse_stat(stat, 100.0, 4096, 1_700_000_000.0).unwrap();
            assert_eq!(process.cpu_seconds, 3.0);
            assert_eq!(process.start_time_seconds, 1_700_000_010.0);
            assert_eq!(process.virtual_bytes, 123_456_789);
            assert_eq!(process.resident_bytes, 2048 * 4096);
        }

        #[test]
        fn reads_this_process() {
            let process = read().expect("/proc is readable");
            assert!(process.resident_bytes > 0);
            assert!(process.open_fds > 0 && process.open_fds <= process.max_fds);
            assert!(process.start_time_seconds > 1_600_000_000.0);
            assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        }
    }
}
