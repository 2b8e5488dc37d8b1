//! systemd's service notifications (sd_notify(3)), without libsystemd:
//! when `NOTIFY_SOCKET` names a socket, the broker sends it `READY=1` once
//! it serves, `RELOADING=1` and `READY=1` around a SIGHUP reload, and
//! `STOPPING=1` when shutdown begins. Each is one datagram; a failed send
//! is logged and changes nothing else (the broker does not depend on its
//! supervisor listening).

use std::io;
use std::os::unix::net::UnixDatagram;

pub struct Notifier {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    target: String,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, when it is set.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|t| !t.is_empty())?;
        match UnixDatagram::unbound() {
            Ok(socket) => Some(Notifier { socket, target }),
            Err(error) => {
                tracing::warn!(%error, "NOTIFY_SOCKET is set but no socket can be made to notify it");
                None
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins; [`Notifier::ready`] ends it. systemd's
    /// `Type=notify-reload` wants the monotonic time with it.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            monotonic_micros()
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining connections");
    }

    fn send(&self, state: &str) {
        if let Err(error) = self.send_to_target(state.as_bytes()) {
            tracing::warn!(%error, target = %self.target, "could not notify NOTIFY_SOCKET");
        }
    }

    fn send_to_target(&self, datagram: &[u8]) -> io::Result<usize> {
        match self.target.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                self.socket.send_to_addr(datagram, &addr)
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets are Linux only",
            )),
            None => self.socket.send_to(datagram, &self.target),
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares with.
fn monotonic_micros() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}
