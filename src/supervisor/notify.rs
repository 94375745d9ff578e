//! systemd's notification protocol (sd_notify(3)): READY=1, STATUS=,
//! WATCHDOG=1, RELOADING=1, STOPPING=1 on the datagram socket named by
//! `NOTIFY_SOCKET`. Nothing is sent when that variable is unset.
//!
//! The workers must not inherit `NOTIFY_SOCKET` or `WATCHDOG_*` (systemd
//! would take a worker's message for the service's, or refuse it). So the
//! supervisor reads them once, before the first fork, removes them from its
//! environment and keeps the socket address itself: sd-notify's `notify`
//! looks the variable up at each call, which is why the messages (the crate's
//! [`NotifyState`]) are sent from here.

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
const WATCHDOG_VARS: [&str; 2] = ["WATCHDOG_USEC", "WATCHDOG_PID"];

/// The service manager, as seen from the supervisor.
pub struct Systemd {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// `WATCHDOG_USEC`, when it was set for this process.
    watchdog: Option<Duration>,
    next_ping: Instant,
    /// The last STATUS= sent, to send only changes.
    status: String,
    /// The variables as they were given, for an upgraded image (execve) to
    /// find again.
    given: Vec<(&'static str, OsString)>,
}

impl Systemd {
    /// Take `NOTIFY_SOCKET` and `WATCHDOG_*` out of the environment.
    ///
    /// # Safety
    /// Changes the environment: call it while the process has one thread.
    pub unsafe fn from_env() -> Systemd {
        let path = std::env::var_os(NOTIFY_SOCKET);
        let given = [NOTIFY_SOCKET, WATCHDOG_VARS[0], WATCHDOG_VARS[1]]
            .into_iter()
            .filter_map(|name| Some((name, std::env::var_os(name)?)))
            .collect();
        // SAFETY: the caller guarantees a single thread (the precondition of
        // std::env::remove_var, which this calls).
        let watchdog = unsafe { sd_notify::watchdog_enabled_and_unset_env() };
        // SAFETY: as above.
        unsafe { std::env::remove_var(NOTIFY_SOCKET) };
        scrub_environment_block(&[NOTIFY_SOCKET, WATCHDOG_VARS[0], WATCHDOG_VARS[1]]);
        let socket = path.and_then(|p| {
            let addr = notify_address(&p)?;
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Systemd {
            watchdog: watchdog.filter(|d| !d.is_zero() && socket.is_some()),
            socket,
            next_ping: Instant::now(),
            status: String::new(),
            given,
        }
    }

    /// `NOTIFY_SOCKET` and `WATCHDOG_*` as this process was given them (the
    /// pid stays the same across an in-place upgrade, so they still hold).
    pub fn environment(&self) -> &[(&'static str, OsString)] {
        &self.given
    }

    /// Start-up is over, or a reload is: READY=1 with the status line.
    pub fn ready(&mut self, status: String) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.status = status;
    }

    /// A SIGHUP reload begins (MONOTONIC_USEC is what systemd 253+ asks for).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// STATUS=, only when it changed.
    pub fn status(&mut self, status: String) {
        if status != self.status {
            self.send(&[NotifyState::Status(&status)]);
            self.status = status;
        }
    }

    /// WATCHDOG=1 at half the interval systemd asked for, while `healthy`.
    pub fn watchdog(&mut self, healthy: bool) {
        let Some(interval) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        if healthy && now >= self.next_ping {
            self.send(&[NotifyState::Watchdog]);
            self.next_ping = now + interval / 2;
        }
    }

    /// When the loop must wake up next for the watchdog.
    pub fn next_ping(&self) -> Option<Instant> {
        self.watchdog.map(|_| self.next_ping)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some((socket, addr)) = &self.socket else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        // A manager that is gone or busy must not stop the service: the next
        // message (status, ping) is tried anew.
        let _ = socket.send_to_addr(message.as_bytes(), addr);
    }
}

/// `NOTIFY_SOCKET` is a path, or `@name` for the abstract namespace.
fn notify_address(value: &OsString) -> Option<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.first()? {
        b'@' => SocketAddr::from_abstract_name(&bytes[1..]).ok(),
        b'/' => SocketAddr::from_pathname(value).ok(),
        _ => None,
    }
}

/// remove_var only drops the entries from `environ`; the strings the kernel
/// copied at exec stay in place, and /proc/<pid>/environ shows them, in the
/// supervisor and in every worker forked from it. Blank them too.
fn scrub_environment_block(names: &[&str]) {
    let Some((start, end)) = environment_block() else {
        return;
    };
    let len = end - start;
    // SAFETY: [start, end) is this process's environment block, which the
    // kernel placed at exec on the stack mapping: mapped, writable and never
    // unmapped. The process is single-threaded (see `from_env`), and the
    // entries blanked here are the ones just removed from `environ`, so no
    // pointer libc or std keeps refers to them any more.
    let block = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    let mut at = 0;
    while at < block.len() {
        let entry_len = block[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(block.len() - at);
        let entry = &block[at..at + entry_len];
        let blank = names.iter().any(|name| {
            entry.len() > name.len()
                && entry.starts_with(name.as_bytes())
                && entry[name.len()] == b'='
        });
        if blank {
            block[at..at + entry_len].fill(0);
        }
        at += entry_len + 1;
    }
}

/// `env_start` and `env_end` from /proc/self/stat (fields 50 and 51).
fn environment_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3.
    let start: usize = fields.get(50 - 3)?.parse().ok()?;
    let end: usize = fields.get(51 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(notify_address(&"/run/systemd/notify".into()).is_some());
        let abs = notify_address(&"@/org/freedesktop/systemd1/notify".into()).unwrap();
        assert_eq!(
            abs.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        assert!(notify_address(&"relative".into()).is_none());
        assert!(notify_address(&"".into()).is_none());
    }

    #[test]
    fn the_environment_block_is_found() {
        let (start, end) = environment_block().expect("env_start/env_end");
        assert!(end > start);
    }
}
