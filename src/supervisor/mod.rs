//! The supervisor: settings, listening sockets, the segment, then fork the
//! workers and only supervise: reap, respawn, drain on SIGTERM, clean up.
//! It never touches client bytes.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use slog::{Logger, error, info, warn};
use socket2::{Domain, Socket, Type};

use crate::config::{self, Action, Settings};
use crate::store::segment::LayoutParams;
use crate::store::{Store, StoreParams};
use crate::worker::{self, Worker};

/// Exit codes (sysexits.h) of start-up failures; bad flags and config files
/// exit with `ConfigError::exit_code`.
const EX_USAGE: i32 = 64;
const EX_OSERR: i32 = 71;

/// Entry point of the `shmcached` binary; returns the process exit code.
pub fn main_entry() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let settings = match config::load(args) {
        Ok(Action::Run(s)) => *s,
        Ok(Action::Print(text)) => {
            print!("{text}");
            return 0;
        }
        Err(e) => {
            eprintln!("shmcached: {e}");
            return e.exit_code();
        }
    };
    let log = crate::log::logger(settings.verbosity);
    match Supervisor::start(settings, log) {
        Ok(sup) => sup.run(),
        Err((code, e)) => {
            eprintln!("shmcached: {e}");
            code
        }
    }
}

/// Signals the supervisor has seen, delivered through a self-pipe.
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

    pub static TERM: AtomicBool = AtomicBool::new(false);
    pub static CHILD: AtomicBool = AtomicBool::new(false);
    pub static HUP: AtomicBool = AtomicBool::new(false);
    pub static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

    /// Async-signal-safe: atomic stores and one write(2).
    pub extern "C" fn handler(sig: libc::c_int) {
        match sig {
            libc::SIGTERM | libc::SIGINT => TERM.store(true, SeqCst),
            libc::SIGCHLD => CHILD.store(true, SeqCst),
            libc::SIGHUP => HUP.store(true, SeqCst),
            _ => {}
        }
        let fd = PIPE_WRITE.load(SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; a full pipe just drops the byte.
            unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
        }
    }
}

struct Slot {
    pid: Option<Pid>,
    started: Instant,
    respawn_at: Option<Instant>,
    backoff: Duration,
}

pub struct Supervisor {
    settings: Settings,
    log: Logger,
    /// Always Some in the supervisor; a forked child takes it for its worker.
    store: Option<Store>,
    /// listeners[slot][address]
    listeners: Vec<Vec<TcpListener>>,
    slots: Vec<Slot>,
    wake: (OwnedFd, OwnedFd),
    me: Pid,
}

impl Supervisor {
    /// Everything up to, not including, the first fork.
    /// A failure comes with its exit code.
    pub fn start(settings: Settings, log: Logger) -> Result<Supervisor, (i32, String)> {
        let user = check_user(&settings).map_err(|e| (EX_USAGE, e))?;
        Self::start_as(settings, log, user).map_err(|e| (EX_OSERR, e))
    }

    fn start_as(
        settings: Settings,
        log: Logger,
        user: Option<nix::unistd::User>,
    ) -> Result<Supervisor, String> {
        let listeners = bind_listeners(&settings)?;
        if let Some(user) = user {
            drop_privileges(&user)?;
        }
        let store = Store::create(StoreParams {
            layout: LayoutParams {
                memory_limit: settings.memory_limit,
                item_size_max: settings.item_size_max as u64,
                workers: settings.workers,
            },
            evictions: settings.evictions,
            cas_enabled: settings.cas_enabled,
        })?;
        if let Some(path) = &settings.pid_file {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        }
        let wake = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("pipe: {e}"))?;
        signals::PIPE_WRITE.store(wake.1.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
        install(
            signals::handler,
            &[
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGCHLD,
                Signal::SIGHUP,
            ],
        )?;
        let port = listeners[0][0].local_addr().map(|a| a.port()).unwrap_or(0);
        info!(log, "shmcached starting";
            "version" => env!("CARGO_PKG_VERSION"),
            "pid" => std::process::id(),
            "workers" => settings.workers,
            "memory_mb" => settings.memory_limit >> 20,
            "listen" => format!("{:?}", settings.listen),
            "port" => port,
            "segment" => store.segment_path());
        let slots = (0..settings.workers)
            .map(|_| Slot {
                pid: None,
                started: Instant::now(),
                respawn_at: None,
                backoff: Duration::ZERO,
            })
            .collect();
        Ok(Supervisor {
            settings,
            log,
            store: Some(store),
            listeners,
            slots,
            wake,
            me: nix::unistd::getpid(),
        })
    }

    /// Fork the workers, then supervise until drained. Returns the exit code.
    pub fn run(mut self) -> i32 {
        for i in 0..self.slots.len() {
            if let Err(e) = self.spawn(i) {
                error!(self.log, "cannot fork a worker"; "slot" => i, "error" => %e);
                self.drain();
                return EX_OSERR;
            }
        }
        loop {
            self.wait_for_signal(Duration::from_millis(200));
            if signals::CHILD.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.reap(true);
            }
            if signals::HUP.swap(false, std::sync::atomic::Ordering::SeqCst) {
                info!(self.log, "SIGHUP: reload is not supported yet; ignored");
            }
            if signals::TERM.load(std::sync::atomic::Ordering::SeqCst) {
                return self.drain();
            }
            self.respawn_due();
        }
    }

    fn spawn(&mut self, i: usize) -> nix::Result<()> {
        // Block signals across fork so that none runs the supervisor's handler
        // in the child before the child has installed its own.
        let all = SigSet::all();
        let mut old = SigSet::empty();
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old))?;
        // SAFETY: the supervisor is single-threaded (no runtime, synchronous
        // logging), so the child may run arbitrary code after fork.
        let forked = unsafe { nix::unistd::fork() };
        match forked {
            Ok(ForkResult::Child) => {
                let code = self.become_worker(i, &old);
                // Leave without running the supervisor's destructors (which
                // would remove the segment and pid file).
                // SAFETY: _exit ends the process at once; nothing is shared.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
                let slot = &mut self.slots[i];
                slot.pid = Some(child);
                slot.started = Instant::now();
                slot.respawn_at = None;
                let s = self.store().slot_at(i);
                s.pid
                    .store(child.as_raw() as u32, std::sync::atomic::Ordering::Relaxed);
                s.started.store(
                    crate::store::unix_now() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                info!(self.log, "worker started"; "slot" => i, "pid" => child.as_raw());
                Ok(())
            }
            Err(e) => {
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
                Err(e)
            }
        }
    }

    /// In the child right after fork: become slot `i`'s worker and serve.
    fn become_worker(&mut self, i: usize, mask: &SigSet) -> i32 {
        signals::PIPE_WRITE.store(-1, std::sync::atomic::Ordering::SeqCst);
        if install(worker::on_drain_signal, &[Signal::SIGTERM, Signal::SIGINT]).is_err()
            || reset(&[Signal::SIGCHLD, Signal::SIGHUP]).is_err()
            || signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None).is_err()
        {
            return 1;
        }
        // Never outlive the supervisor; if it died before this line, go now.
        if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
            || nix::unistd::getppid() != self.me
        {
            return 0;
        }
        let Some(mut store) = self.store.take() else {
            return 1;
        };
        store.become_worker(i);
        let listeners = std::mem::take(&mut self.listeners[i]);
        // The other slots' sockets are not ours to accept on.
        self.listeners.clear();
        let log = self.log.new(slog::o!("slot" => i));
        match Worker::new(store, self.settings.clone(), i, listeners, log.clone()) {
            Ok(w) => w.run(),
            Err(e) => {
                error!(log, "worker cannot start"; "error" => %e);
                1
            }
        }
    }

    /// Reap every exited child; schedule respawns unless draining.
    fn reap(&mut self, respawn: bool) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
            let Some(i) = self.slots.iter().position(|s| s.pid == Some(pid)) else {
                continue;
            };
            let how = match status {
                WaitStatus::Exited(_, code) => format!("exited with code {code}"),
                WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
                _ => continue,
            };
            self.slots[i].pid = None;
            let shared = self.store().slot_at(i);
            shared.pid.store(0, std::sync::atomic::Ordering::Relaxed);
            // Settle what the dead worker had half done before anyone reuses
            // its slot.
            self.store().recover_slot(i);
            if !respawn {
                info!(self.log, "worker exited"; "slot" => i, "pid" => pid.as_raw(), "how" => how);
                continue;
            }
            self.store()
                .slot_at(i)
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let slot = &mut self.slots[i];
            let lived = slot.started.elapsed();
            // A worker that keeps dying young is crash-looping: wait before
            // the next try, but never long, since its slot's queued
            // connections wait with it.
            slot.backoff = if lived < Duration::from_secs(1) {
                (slot.backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
            } else {
                Duration::ZERO
            };
            slot.respawn_at = Some(Instant::now() + slot.backoff);
            warn!(self.log, "worker died; respawning"; "slot" => i, "pid" => pid.as_raw(),
                  "how" => how, "after_ms" => slot.backoff.as_millis() as u64);
        }
    }

    fn respawn_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].pid.is_none()
                && self.slots[i].respawn_at.is_some_and(|t| t <= now)
                && let Err(e) = self.spawn(i)
            {
                error!(self.log, "cannot respawn a worker"; "slot" => i, "error" => %e);
                self.slots[i].respawn_at = Some(now + Duration::from_secs(1));
            }
        }
    }

    /// SIGTERM: every worker finishes what it received and exits; after the
    /// drain timeout the rest are killed. Then remove what we created.
    fn drain(mut self) -> i32 {
        info!(self.log, "shutting down"; "workers" => self.live_workers());
        for s in &self.slots {
            if let Some(pid) = s.pid {
                let _ = signal::kill(pid, Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + self.settings.drain_timeout + Duration::from_secs(1);
        while self.live_workers() > 0 && Instant::now() < deadline {
            self.wait_for_signal(Duration::from_millis(50));
            self.reap(false);
        }
        if self.live_workers() > 0 {
            warn!(self.log, "drain timed out; killing workers"; "left" => self.live_workers());
            for s in &self.slots {
                if let Some(pid) = s.pid {
                    let _ = signal::kill(pid, Signal::SIGKILL);
                }
            }
            while self.live_workers() > 0 {
                if let Ok(status) = waitpid(Pid::from_raw(-1), None)
                    && let Some(pid) = status.pid()
                    && let Some(s) = self.slots.iter_mut().find(|s| s.pid == Some(pid))
                {
                    s.pid = None;
                } else {
                    break;
                }
            }
        }
        if let Some(path) = &self.settings.pid_file {
            let _ = std::fs::remove_file(path);
        }
        info!(self.log, "shutdown complete");
        0 // dropping `self.store` removes the segment
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the supervisor keeps the store")
    }

    fn live_workers(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }

    /// Sleep until a signal arrives (or `timeout`), then empty the self-pipe.
    fn wait_for_signal(&self, timeout: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.wake.0.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::NONE);
        let _ = poll(&mut fds, ms);
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.wake.0, &mut buf), Ok(n) if n > 0) {}
    }
}

fn install(handler: extern "C" fn(libc::c_int), sigs: &[Signal]) -> Result<(), String> {
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &s in sigs {
        // SAFETY: the handlers only touch atomics and write(2).
        unsafe { signal::sigaction(s, &action) }.map_err(|e| format!("sigaction {s}: {e}"))?;
    }
    Ok(())
}

fn reset(sigs: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &s in sigs {
        // SAFETY: restoring the default disposition.
        unsafe { signal::sigaction(s, &action) }?;
    }
    Ok(())
}

/// As memcached: root must name a user to run as; anyone else runs as itself.
fn check_user(settings: &Settings) -> Result<Option<nix::unistd::User>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let Some(name) = &settings.user else {
        return Err("can't run as root without the -u switch".into());
    };
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(Some(u)),
        _ => Err(format!("can't find the user {name} to switch to")),
    }
}

fn drop_privileges(user: &nix::unistd::User) -> Result<(), String> {
    if user.uid.is_root() {
        return Ok(());
    }
    let name = std::ffi::CString::new(user.name.as_str()).map_err(|e| e.to_string())?;
    nix::unistd::initgroups(&name, user.gid)
        .and_then(|_| nix::unistd::setgid(user.gid))
        .and_then(|_| nix::unistd::setuid(user.uid))
        .map_err(|e| format!("failed to assume identity of user {}: {e}", user.name))
}

/// One SO_REUSEPORT socket per worker slot and address, all on one port.
fn bind_listeners(s: &Settings) -> Result<Vec<Vec<TcpListener>>, String> {
    let mut port = s.port;
    let mut all = Vec::new();
    for _ in 0..s.workers {
        let mut per_slot = Vec::new();
        for &ip in &s.listen {
            let addr = SocketAddr::new(ip, port);
            if all.is_empty() && port != 0 {
                ensure_free(addr)
                    .map_err(|e| format!("failed to listen on TCP port {port} at {ip}: {e}"))?;
            }
            let sock = listener(addr, s.backlog)
                .map_err(|e| format!("failed to listen on TCP port {port} at {ip}: {e}"))?;
            if port == 0 {
                // -p -1: the first socket picked a port; the rest join it.
                port = sock.local_addr().map_err(|e| e.to_string())?.port();
            }
            per_slot.push(sock);
        }
        all.push(per_slot);
    }
    Ok(all)
}

/// SO_REUSEPORT would let us join another process's sockets on the port (of
/// the same user) and split its connections: bind once without it first, as
/// memcached would, so that a busy port is refused.
fn ensure_free(addr: SocketAddr) -> std::io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

fn listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}
