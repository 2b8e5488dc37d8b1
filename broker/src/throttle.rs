//! What keeps one peer from making the broker work or write without bound
//! on its behalf: failed logins per source address (LIMIT-26), and log
//! lines that a peer can cause (LIMIT-27).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Source addresses remembered at once. Past it, expired windows are
/// dropped; an address that still finds no room is treated as over its
/// budget (its failures are delayed, which costs a correct client nothing).
const MAX_TRACKED_ADDRESSES: usize = 16 * 1024;

/// Failed Hellos per source address over a fixed window.
pub(crate) struct LoginFailures {
    max_failures: u32,
    window: Duration,
    delay: Duration,
    /// Address -> (start of its window, failures in it).
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginFailures {
    pub fn new(max_failures: u32, window: Duration, delay: Duration) -> LoginFailures {
        LoginFailures {
            max_failures,
            window,
            delay,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Record a failed Hello from `address`; how long to wait before
    /// answering it (zero while the address is within its budget).
    pub fn failed(&self, address: IpAddr, now: Instant) -> Duration {
        let mut by_address = self.by_address.lock();
        if by_address.len() >= MAX_TRACKED_ADDRESSES && !by_address.contains_key(&address) {
            let window = self.window;
            by_address.retain(|_, (start, _)| now.duration_since(*start) < window);
            if by_address.len() >= MAX_TRACKED_ADDRESSES {
                return self.delay;
            }
        }
        let (start, failures) = by_address.entry(address).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            (*start, *failures) = (now, 0);
        }
        *failures = failures.saturating_add(1);
        if *failures > self.max_failures {
            self.delay
        } else {
            Duration::ZERO
        }
    }
}

/// At most one line per interval for one kind of event a peer can cause;
/// the lines it holds back are counted into the next one it lets through.
pub(crate) struct LogGate {
    interval: Duration,
    /// When the last line went out, and the lines suppressed since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogGate {
    pub const fn new(interval: Duration) -> LogGate {
        LogGate {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last line)` if a line may go out now.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

/// A peer-chosen string for a log line: at most `max` bytes (cut at a
/// character boundary), marked when cut.
pub(crate) fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_delayed_only_past_the_budget_and_the_window_resets() {
        let throttle = LoginFailures::new(2, Duration::from_secs(60), Duration::from_secs(1));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(throttle.failed(a, t0), Duration::ZERO);
        assert_eq!(throttle.failed(a, t0), Duration::ZERO);
        assert_eq!(throttle.failed(a, t0), Duration::from_secs(1));
        assert_eq!(throttle.failed(b, t0), Duration::ZERO, "per address");
        let later = t0 + Duration::from_secs(61);
        assert_eq!(throttle.failed(a, later), Duration::ZERO, "a new window");
    }

    #[test]
    fn a_gate_lets_one_line_through_per_interval_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(gate.admit(t0), Some(0));
        assert_eq!(gate.admit(t0 + Duration::from_millis(10)), None);
        assert_eq!(gate.admit(t0 + Duration::from_millis(20)), None);
        assert_eq!(gate.admit(t0 + Duration::from_secs(1)), Some(2));
    }

    #[test]
    fn clipped_text_keeps_whole_characters() {
        assert_eq!(clip("short", 8), "short");
        assert_eq!(clip("ééééé", 3), "é... (10 bytes)");
    }
}
