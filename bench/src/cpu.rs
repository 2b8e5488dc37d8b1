//! CPU time of a process (a server, or this load generator) from
//! `/proc/<pid>/stat`: on a shared, noisy machine, CPU seconds per message
//! vary far less than messages per second, and they say which side spends
//! the time.

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds used so far by `pid` ("self" for this process).
pub fn cpu_secs(pid: &str) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_stat(&stat).ok_or_else(|| format!("{path}: unexpected format"))
}

/// utime + stime (fields 14 and 15) in seconds. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its
/// closing parenthesis.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// CPU seconds a server and this process used over one run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuUse {
    pub server_secs: f64,
    pub client_secs: f64,
}

/// Reads the server's and this process's CPU time before a run, to subtract
/// after it.
pub struct CpuMeter {
    server: String,
    at_start: (f64, f64),
}

impl CpuMeter {
    pub fn start(server_pid: u32) -> Result<CpuMeter, String> {
        let server = server_pid.to_string();
        let at_start = (cpu_secs(&server)?, cpu_secs("self")?);
        Ok(CpuMeter { server, at_start })
    }

    pub fn stop(self) -> Result<CpuUse, String> {
        Ok(CpuUse {
            server_secs: cpu_secs(&self.server)? - self.at_start.0,
            client_secs: cpu_secs("self")? - self.at_start.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 3000 0 0 0 \
                    250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(stat), Some(3.0));
        assert_eq!(parse_stat("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let mut spent = 0u64;
        let meter = CpuMeter::start(std::process::id()).unwrap();
        // Burn ~30 ms so that the 10 ms ticks move.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
        while std::time::Instant::now() < until {
            spent = spent.wrapping_add(1);
        }
        let used = meter.stop().unwrap();
        assert!(spent > 0);
        assert!(used.client_secs >= 0.0 && used.server_secs >= 0.0);
        assert!(cpu_secs("0").is_err());
    }
}
