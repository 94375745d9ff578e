//! The supervisor: settings, listening sockets, the segment, then fork the
//! workers and only supervise: reap, respawn, reload on SIGHUP, drain on
//! SIGTERM, tell systemd, clean up. It never touches client bytes.

mod daemon;
mod listeners;
mod notify;
mod reload;
mod upgrade;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use slog::{Logger, error, info, warn};

use crate::config::{self, Action, Settings};
use crate::store::segment::LayoutParams;
use crate::store::{Opened, Store, StoreParams};
use crate::worker::handoff::Mailboxes;
use crate::worker::{self, Worker};
use daemon::{Detached, StartReport};
use notify::Systemd;

/// Exit codes (sysexits.h) of start-up failures; bad flags and config files
/// exit with `ConfigError::exit_code`.
const EX_USAGE: i32 = 64;
const EX_SOFTWARE: i32 = 70;
const EX_OSERR: i32 = 71;

/// How long start-up (and a reload) waits for every worker to accept.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A slot whose worker died this many times in a row, each time within a
/// second of its start, cannot be kept up: start-up gives up, and the
/// watchdog stops being answered.
const FAILURES_IN_A_ROW: u32 = 5;
/// A worker whose loop has not ticked for this long is stuck.
const HEARTBEAT_STALE: Duration = Duration::from_secs(10);
/// The loop wakes up at least this often.
const TICK: Duration = Duration::from_millis(200);
/// A dormant slot gets a worker for connections left on its sockets at most
/// this often.
const DORMANT_WAKE_EVERY: Duration = Duration::from_secs(1);

/// Entry point of the `shmcached` binary; returns the process exit code.
pub fn main_entry() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "check") {
        return crate::check::main(args.into_iter().skip(1));
    }
    if let Some(segment) = std::env::var_os(upgrade::CHECK_ENV) {
        return upgrade::check_mode(args, &segment);
    }
    // An in-place upgrade (SIGUSR2): what the previous image left us.
    let handover = std::env::var(upgrade::HANDOVER_ENV).ok();
    if handover.is_some() {
        // SAFETY: one thread: nothing has been started yet.
        unsafe { std::env::remove_var(upgrade::HANDOVER_ENV) };
    }
    let handover = match handover.as_deref().map(upgrade::Handover::decode) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(e)) => {
            eprintln!("shmcached: {e}");
            return EX_SOFTWARE;
        }
    };
    let mut settings = match config::load(args.clone()) {
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
    let cwd = std::env::current_dir().ok();
    anchor_paths(&mut settings, cwd.as_deref());
    let mut report = None;
    if settings.daemonize && handover.is_some() {
        // Already detached; the previous image ran in /, as a daemon does.
        let _ = std::env::set_current_dir("/");
    } else if settings.daemonize {
        match daemon::detach() {
            Ok(Detached::Command(code)) => return code,
            Ok(Detached::Daemon(r)) => report = Some(r),
            Err(e) => {
                eprintln!("shmcached: {e}");
                return EX_OSERR;
            }
        }
    }
    // SAFETY: one thread: nothing has been started yet.
    let systemd = unsafe { Systemd::from_env() };
    let log = crate::log::logger(settings.verbosity);
    let origin = Origin { args, cwd };
    match Supervisor::start(settings, log, systemd, origin, handover) {
        Ok(sup) => sup.run(report),
        Err((code, e)) => {
            match &mut report {
                Some(r) => r.failed(code, &e),
                None => eprintln!("shmcached: {e}"),
            }
            code
        }
    }
}

/// The command line and the directory it was given in, read again on SIGHUP.
struct Origin {
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
}

/// A daemon runs in /: the pid file and unix socket it was told of are
/// relative to where it was started.
fn anchor_paths(settings: &mut Settings, cwd: Option<&Path>) {
    for path in [
        &mut settings.pid_file,
        &mut settings.memory_file,
        &mut settings.unix_socket,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(cwd) = cwd
            && path.is_relative()
        {
            *path = cwd.join(&*path);
        }
    }
}

/// Signals the supervisor has seen, delivered through a self-pipe.
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

    pub static TERM: AtomicBool = AtomicBool::new(false);
    pub static CHILD: AtomicBool = AtomicBool::new(false);
    pub static HUP: AtomicBool = AtomicBool::new(false);
    pub static USR2: AtomicBool = AtomicBool::new(false);
    pub static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

    /// Async-signal-safe: atomic stores and one write(2).
    pub extern "C" fn handler(sig: libc::c_int) {
        match sig {
            // SIGUSR1: memcached's graceful stop (which saves the cache with -e).
            libc::SIGTERM | libc::SIGINT | libc::SIGUSR1 => TERM.store(true, SeqCst),
            libc::SIGCHLD => CHILD.store(true, SeqCst),
            libc::SIGHUP => HUP.store(true, SeqCst),
            libc::SIGUSR2 => USR2.store(true, SeqCst),
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
    /// Deaths in a row, each within a second of the worker's start.
    failures: u32,
    /// When the worker was told to pass its connections on and stop.
    retiring: Option<Instant>,
    /// When a dormant slot last got a worker for what waited on its sockets.
    woken: Option<Instant>,
}

/// A SIGHUP reload in progress: the workers still to replace, one at a time.
struct Reload {
    pending: VecDeque<usize>,
    /// The slot being replaced, and since when.
    current: Option<(usize, Instant)>,
    started: Instant,
    /// Replacing the workers of the previous binary (SIGUSR2).
    upgrade: bool,
}

/// Why start-up did not complete.
enum StartFailure {
    /// SIGTERM came first.
    Stopped,
    Failed(String),
}

pub struct Supervisor {
    settings: Settings,
    origin: Origin,
    log: Logger,
    /// Always Some in the supervisor; a forked child takes it for its worker.
    store: Option<Store>,
    /// listeners[slot][address], for every slot made at start (none with -s).
    listeners: Vec<Vec<TcpListener>>,
    /// `-s`: the one unix socket, shared by every worker in service.
    unix: Option<listeners::UnixSocket>,
    mailboxes: Mailboxes,
    slots: Vec<Slot>,
    wake: (OwnedFd, OwnedFd),
    me: Pid,
    port: u16,
    systemd: Systemd,
    reload: Option<Reload>,
    /// This image was executed by SIGUSR2: the previous image's workers are
    /// still serving and are to be replaced.
    takeover: bool,
    /// The slots new connections are steered around now (see
    /// `steer_around_dead`); None: not yet, or the reload's program holds.
    steered_around: Option<Vec<u32>>,
    /// False once the kernel refused the reuseport program.
    steering: bool,
}

impl Supervisor {
    /// Everything up to, not including, the first fork.
    /// A failure comes with its exit code.
    fn start(
        settings: Settings,
        log: Logger,
        systemd: Systemd,
        origin: Origin,
        handover: Option<upgrade::Handover>,
    ) -> Result<Supervisor, (i32, String)> {
        let user = check_user(&settings).map_err(|e| (EX_USAGE, e))?;
        Self::start_as(settings, log, systemd, origin, user, handover).map_err(|e| (EX_OSERR, e))
    }

    fn start_as(
        mut settings: Settings,
        log: Logger,
        systemd: Systemd,
        origin: Origin,
        user: Option<nix::unistd::User>,
        handover: Option<upgrade::Handover>,
    ) -> Result<Supervisor, String> {
        let slots = settings.worker_slots();
        // From now on the slots are fixed, whatever a reload says of `workers`.
        settings.max_workers = Some(slots);
        let listeners = match &handover {
            Some(h) => inherited_listeners(h, slots, &settings)?,
            None => listeners::bind(&settings, slots)?,
        };
        // As memcached: with -s there is no TCP port to tell of.
        if let Some(path) = std::env::var_os("MEMCACHED_PORT_FILENAME")
            && settings.unix_socket.is_none()
        {
            listeners::write_port_file(std::path::Path::new(&path), &listeners[0])?;
        }
        if slots > settings.workers {
            listeners::steer(&listeners, settings.workers).map_err(|e| {
                format!("cannot keep the slots over -t dormant (max_workers needs SO_ATTACH_REUSEPORT_CBPF): {e}")
            })?;
        }
        if let Some(user) = user {
            drop_privileges(&user)?;
        }
        // After the privilege drop, as memcached: the file belongs to the
        // user the daemon runs as. An upgrade inherits the socket instead.
        let inherited = handover.as_ref().map(|h| h.unix);
        let unix = match (&settings.unix_socket, inherited) {
            (Some(path), None) => Some(listeners::UnixSocket::bind(
                path,
                settings.unix_socket_mode,
                settings.backlog,
            )?),
            (Some(path), Some(Some(fd))) => Some(listeners::UnixSocket::adopt(fd, path)?),
            (Some(_), Some(None)) => {
                return Err(
                    "the running instance has no unix socket; these settings say -s".into(),
                );
            }
            (None, Some(Some(_))) => {
                return Err(
                    "the running instance listens on a unix socket; these settings do not say -s"
                        .into(),
                );
            }
            (None, _) => None,
        };
        let (store, mailboxes) = match &handover {
            Some(h) => adopt(h, &settings, slots)?,
            None => (
                open_store(&settings, slots, &log)?,
                Mailboxes::new(slots as usize).map_err(|e| format!("socketpair: {e}"))?,
            ),
        };
        // The segment keeps what a client set last; a start (cold, warm or an
        // upgrade) begins from the settings.
        apply_automove(&store, &settings);
        apply_crawler(&store, &settings);
        if settings.track_sizes {
            apply_track_sizes(&store, &settings);
        }
        if let Some(path) = &settings.pid_file {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        }
        let wake = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("pipe: {e}"))?;
        signals::PIPE_WRITE.store(wake.1.as_raw_fd(), SeqCst);
        install(
            signals::handler,
            &[
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGCHLD,
                Signal::SIGHUP,
                Signal::SIGUSR1,
                Signal::SIGUSR2,
            ],
        )?;
        if handover.is_some() {
            // The previous image blocked every signal across execve; what
            // came meanwhile is pending and runs our handlers now.
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(|e| format!("sigprocmask: {e}"))?;
        }
        let port = listeners[0]
            .first()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port());
        info!(log, "shmcached starting";
            "version" => env!("CARGO_PKG_VERSION"),
            "pid" => std::process::id(),
            "workers" => settings.workers,
            "worker_slots" => slots,
            "memory_mb" => settings.memory_limit >> 20,
            // With -s there is no TCP: neither addresses nor a port.
            "listen" => match unix {
                Some(_) => "none (unix socket)".to_string(),
                None => format!("{:?}", settings.listen),
            },
            "port" => port,
            "unix_socket" => unix.as_ref().map(|u| u.path().display().to_string()),
            "segment" => store.segment_path());
        let slots = (0..slots)
            .map(|i| Slot {
                // After an upgrade: the previous image's worker, if any.
                pid: match (&handover, store.slot_at(i as usize).pid.load(Relaxed)) {
                    (Some(_), pid) if pid != 0 => Some(Pid::from_raw(pid as i32)),
                    _ => None,
                },
                started: Instant::now(),
                respawn_at: None,
                backoff: Duration::ZERO,
                failures: 0,
                retiring: None,
                woken: None,
            })
            .collect();
        let sup = Supervisor {
            settings,
            origin,
            log,
            store: Some(store),
            listeners,
            unix,
            mailboxes,
            slots,
            wake,
            me: nix::unistd::getpid(),
            port,
            systemd,
            reload: None,
            takeover: handover.is_some(),
            steered_around: None,
            steering: true,
        };
        sup.publish_live();
        Ok(sup)
    }

    /// Fork the workers, wait until they all accept, then supervise until
    /// drained. Returns the exit code.
    fn run(mut self, mut report: Option<StartReport>) -> i32 {
        if self.takeover {
            self.take_over();
            return self.supervise();
        }
        let started = self.fork_workers().and_then(|()| self.wait_until_ready());
        match started {
            Ok(()) => {}
            Err(StartFailure::Stopped) => return self.drain(),
            Err(StartFailure::Failed(why)) => {
                error!(self.log, "start-up failed"; "error" => &why);
                if let Some(r) = &mut report {
                    r.failed(EX_SOFTWARE, &why);
                }
                self.drain();
                return EX_SOFTWARE;
            }
        }
        info!(self.log, "ready"; "workers" => self.settings.workers, "port" => self.port);
        self.systemd.ready(self.status_line());
        if let Some(r) = &mut report {
            r.ready();
        }
        self.supervise()
    }

    /// The supervisor's loop, until drained. Returns the exit code.
    fn supervise(mut self) -> i32 {
        loop {
            let dormant = self.wait_for_signal(self.next_wakeup());
            if signals::CHILD.swap(false, SeqCst) {
                self.reap(true);
            }
            if signals::TERM.load(SeqCst) {
                return self.drain();
            }
            if self.reload.is_none() && signals::HUP.swap(false, SeqCst) {
                self.begin_reload();
            }
            if signals::USR2.swap(false, SeqCst) {
                self.begin_upgrade();
            }
            self.respawn_due();
            self.stop_overdue_retirees();
            self.advance_reload();
            self.steer_around_dead();
            for i in dormant {
                self.wake_dormant(i);
            }
            let status = self.status_line();
            self.systemd.status(status);
            let healthy = self.healthy();
            self.systemd.watchdog(healthy);
        }
    }

    fn fork_workers(&mut self) -> Result<(), StartFailure> {
        for i in 0..self.settings.workers as usize {
            self.spawn(i)
                .map_err(|e| StartFailure::Failed(format!("cannot fork a worker: {e}")))?;
        }
        Ok(())
    }

    /// Until every worker in service accepts (READY=1 waits for this).
    fn wait_until_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if signals::TERM.load(SeqCst) {
                return Err(StartFailure::Stopped);
            }
            if signals::CHILD.swap(false, SeqCst) {
                self.reap(true);
            }
            self.respawn_due();
            let waiting: Vec<usize> = (0..self.settings.workers as usize)
                .filter(|&i| !self.accepts(i))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if let Some(&i) = waiting
                .iter()
                .find(|&&i| self.slots[i].failures >= FAILURES_IN_A_ROW)
            {
                return Err(StartFailure::Failed(format!(
                    "the worker of slot {i} died {FAILURES_IN_A_ROW} times in a row while starting"
                )));
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Failed(format!(
                    "the workers of slots {waiting:?} did not accept connections within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
            self.wait_for_signal(Duration::from_millis(20));
        }
    }

    /// Slot `i` has a worker whose event loop is set up.
    fn accepts(&self, i: usize) -> bool {
        self.slots[i].pid.is_some() && self.store().slot_at(i).ready.load(Relaxed) == 1
    }

    fn spawn(&mut self, i: usize) -> nix::Result<()> {
        self.store().slot_at(i).ready.store(0, Relaxed);
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
                s.pid.store(child.as_raw() as u32, Relaxed);
                s.started.store(crate::store::unix_now() as u64, Relaxed);
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
        signals::PIPE_WRITE.store(-1, SeqCst);
        if install(worker::on_drain_signal, &[Signal::SIGTERM, Signal::SIGINT]).is_err()
            || reset(&[Signal::SIGCHLD, Signal::SIGHUP]).is_err()
            // The supervisor's signals; one sent to every process of the
            // unit (`systemctl kill`) must not end a worker.
            || ignore(&[Signal::SIGUSR1, Signal::SIGUSR2]).is_err()
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
        // The unix socket is every worker's in service (a dormant slot's
        // worker only passes its connections on).
        let unix = match &self.unix {
            Some(u) if i < self.settings.workers as usize => match u.listener.try_clone() {
                Ok(l) => Some(l),
                Err(e) => {
                    error!(self.log, "worker cannot start"; "error" => %e);
                    return 1;
                }
            },
            _ => None,
        };
        let log = self.log.new(slog::o!("slot" => i));
        let handoff = match self.mailboxes.for_worker(i) {
            Ok(h) => h,
            Err(e) => {
                error!(log, "worker cannot start"; "error" => %e);
                return 1;
            }
        };
        match Worker::new(
            store,
            self.settings.clone(),
            i,
            listeners,
            unix,
            handoff,
            log.clone(),
        ) {
            Ok(w) => w.run(),
            Err(e) => {
                error!(log, "worker cannot start"; "error" => %e);
                1
            }
        }
    }

    /// Reap every exited child. A worker that was told to retire is replaced
    /// at once if its slot stays in service; one that died is respawned
    /// after a back-off (unless `respawn` is false: draining).
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
            shared.pid.store(0, Relaxed);
            shared.ready.store(0, Relaxed);
            shared.handoff.store(0, Relaxed);
            // Settle what the dead worker had half done before anyone reuses
            // its slot.
            self.store().recover_slot(i);
            let in_service = i < self.settings.workers as usize;
            let planned = self.slots[i].retiring.take().is_some();
            if !respawn || planned || !in_service {
                info!(self.log, "worker exited"; "slot" => i, "pid" => pid.as_raw(), "how" => how,
                      "replaced" => respawn && in_service);
                if respawn && in_service {
                    // Its successor takes over the connections it passed on.
                    self.slots[i].respawn_at = Some(Instant::now());
                }
                continue;
            }
            self.store().slot_at(i).restarts.fetch_add(1, Relaxed);
            let slot = &mut self.slots[i];
            let lived = slot.started.elapsed();
            // A worker that keeps dying young is crash-looping: wait before
            // the next try, but never long, since its slot's queued
            // connections wait with it.
            if lived < Duration::from_secs(1) {
                slot.backoff =
                    (slot.backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
                slot.failures += 1;
            } else {
                slot.backoff = Duration::ZERO;
                slot.failures = 0;
            }
            slot.respawn_at = Some(Instant::now() + slot.backoff);
            warn!(self.log, "worker died; respawning"; "slot" => i, "pid" => pid.as_raw(),
                  "how" => how, "after_ms" => slot.backoff.as_millis() as u64,
                  "failures_in_a_row" => slot.failures);
            if slot.failures == FAILURES_IN_A_ROW {
                error!(self.log, "a worker slot cannot be kept up; the watchdog is no longer answered";
                       "slot" => i);
            }
        }
    }

    /// New connections go to the slots whose worker serves now: a slot whose
    /// worker died (or is not ready yet) gets none until its successor is,
    /// so a slow respawn (a crash-loop back-off, a fork stalled by the
    /// machine) delays only what its socket had already queued.
    fn steer_around_dead(&mut self) {
        if !self.steering || self.reload.is_some() {
            return;
        }
        let workers = self.settings.workers;
        let waiting: Vec<u32> = (0..workers)
            .filter(|&i| self.store().slot_at(i as usize).ready.load(Relaxed) == 0)
            .collect();
        if self.steered_around.as_ref() == Some(&waiting) {
            return;
        }
        match listeners::steer_around(&self.listeners, workers, &waiting) {
            Ok(()) => self.steered_around = Some(waiting),
            Err(e) => {
                // The program could not be attached (no SO_ATTACH_REUSEPORT_CBPF):
                // the kernel's own spread stays, dead slots included.
                info!(self.log, "cannot steer connections away from dead workers"; "error" => %e);
                self.steering = false;
            }
        }
    }

    fn respawn_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.settings.workers as usize {
            if self.slots[i].pid.is_none()
                && self.slots[i].respawn_at.is_some_and(|t| t <= now)
                && let Err(e) = self.spawn(i)
            {
                error!(self.log, "cannot respawn a worker"; "slot" => i, "error" => %e);
                self.slots[i].respawn_at = Some(now + Duration::from_secs(1));
            }
        }
    }

    // ---- reload ----

    /// SIGHUP: read the same command line (and config file) again; apply what
    /// can change live, log what needs a restart, replace the workers one by
    /// one if they hold settings of the past.
    fn begin_reload(&mut self) {
        self.systemd.reloading();
        let wanted = match self.read_settings() {
            Ok(s) => s,
            Err(e) => {
                error!(self.log, "reload refused; the running settings stay"; "error" => %e);
                self.systemd.ready(self.status_line());
                return;
            }
        };
        let plan = reload::plan(&self.settings, wanted);
        for n in &plan.needs_restart {
            warn!(self.log, "reload: this change needs a restart; the running value stays";
                  "key" => n.key, "running" => &n.running, "wanted" => &n.wanted);
        }
        for a in &plan.applied {
            info!(self.log, "reload: applied"; "key" => a.key, "from" => &a.from, "to" => &a.to);
        }
        let before = self.settings.workers;
        let verbosity = self.settings.verbosity;
        let automove = (
            self.settings.slab_automove,
            self.settings.slab_automove_ratio,
        );
        let track_sizes = self.settings.track_sizes;
        let crawler = crawler_settings(&self.settings);
        self.settings = plan.settings;
        if crawler_settings(&self.settings) != crawler {
            // As a client's `lru_crawler enable|disable|sleep|tocrawl` would.
            apply_crawler(self.store(), &self.settings);
        }
        if self.settings.track_sizes != track_sizes {
            // As a client's `stats sizes_enable` / `sizes_disable` would.
            apply_track_sizes(self.store(), &self.settings);
        }
        if (
            self.settings.slab_automove,
            self.settings.slab_automove_ratio,
        ) != automove
        {
            // As a client's `slabs automove` would.
            apply_automove(self.store(), &self.settings);
        }
        if self.settings.verbosity != verbosity {
            // As a client's `verbosity` command would (stored plus one).
            let h = self.store().header();
            h.verbosity
                .store(u32::from(self.settings.verbosity) + 1, Relaxed);
            crate::log::set_verbosity(self.settings.verbosity);
        }
        let wanted_workers = self.settings.workers;
        if wanted_workers != before && !self.resize(before, wanted_workers) {
            self.settings.workers = before;
        }
        self.publish_live();
        // The slots that kept their worker; new slots start with the new settings.
        let kept = before.min(self.settings.workers) as usize;
        let pending = if plan.roll {
            info!(
                self.log,
                "reload: workers copy changed settings at fork; replacing them one by one"
            );
            (0..kept).collect()
        } else {
            VecDeque::new()
        };
        self.reload = Some(Reload {
            pending,
            current: None,
            started: Instant::now(),
            upgrade: false,
        });
        self.advance_reload();
    }

    /// Grow or shrink the workers in service. New connections go to the
    /// slots in service only (the reuseport program), so a surplus worker
    /// passes on its connections and stops while nothing new reaches it.
    fn resize(&mut self, before: u32, after: u32) -> bool {
        // What steer_around_dead applied last no longer holds.
        self.steered_around = None;
        if let Err(e) = listeners::steer(&self.listeners, after) {
            error!(self.log, "reload: cannot steer connections; the number of workers stays";
                   "workers" => before, "error" => %e);
            return false;
        }
        for i in after as usize..before as usize {
            self.slots[i].respawn_at = None;
            self.retire(i, i % after as usize);
        }
        self.settings.workers = after;
        for i in before as usize..after as usize {
            let slot = &mut self.slots[i];
            slot.failures = 0;
            slot.backoff = Duration::ZERO;
            if slot.pid.is_some() {
                // Still passing its connections on: replaced once it is gone.
                continue;
            }
            if let Err(e) = self.spawn(i) {
                error!(self.log, "cannot fork a worker"; "slot" => i, "error" => %e);
                self.slots[i].respawn_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        true
    }

    /// Tell slot `i`'s worker to pass its connections to slot `heir` (itself:
    /// its successor) and stop.
    fn retire(&mut self, i: usize, heir: usize) {
        let Some(pid) = self.slots[i].pid else {
            return;
        };
        self.store()
            .slot_at(i)
            .handoff
            .store(heir as u32 + 1, Relaxed);
        let _ = signal::kill(pid, Signal::SIGTERM);
        self.slots[i].retiring = Some(Instant::now());
    }

    /// One step of the reload's roll: once the slot being replaced has a new
    /// worker that accepts, retire the next one. READY=1 when done.
    fn advance_reload(&mut self) {
        let Some(mut reload) = self.reload.take() else {
            return;
        };
        if let Some((i, since)) = reload.current {
            let replaced = self.slots[i].retiring.is_none() && self.accepts(i);
            let gone = i >= self.settings.workers as usize;
            if !(replaced || gone) {
                if since.elapsed() < self.settings.drain_timeout + START_TIMEOUT {
                    self.reload = Some(reload);
                    return;
                }
                warn!(self.log, "reload: a worker was not replaced in time; going on"; "slot" => i);
            }
            reload.current = None;
        }
        while let Some(i) = reload.pending.pop_front() {
            // A slot without a worker gets the new settings with its next one.
            if i < self.settings.workers as usize && self.slots[i].pid.is_some() {
                self.retire(i, i);
                reload.current = Some((i, Instant::now()));
                self.reload = Some(reload);
                return;
            }
        }
        let all_accept = (0..self.settings.workers as usize)
            .all(|i| self.slots[i].pid.is_none() || self.accepts(i));
        if !all_accept && reload.started.elapsed() < START_TIMEOUT {
            self.reload = Some(reload);
            return;
        }
        if reload.upgrade {
            info!(self.log, "upgrade complete: every worker runs the new binary";
                  "workers" => self.settings.workers);
        } else {
            info!(self.log, "reload complete"; "workers" => self.settings.workers);
        }
        self.systemd.ready(self.status_line());
    }

    /// A worker told to retire that is still there after the drain timeout
    /// is killed (its successor takes over the socket and the mailbox).
    fn stop_overdue_retirees(&mut self) {
        let limit = self.settings.drain_timeout + Duration::from_secs(1);
        for s in &self.slots {
            if let (Some(pid), Some(since)) = (s.pid, s.retiring)
                && since.elapsed() > limit
            {
                let _ = signal::kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// A dormant slot with connections on its sockets (their handshake was
    /// under way when its worker retired) or in its mailbox: a worker comes,
    /// passes them to a slot in service, and goes.
    fn wake_dormant(&mut self, i: usize) {
        let heir = i % self.settings.workers as usize;
        self.store()
            .slot_at(i)
            .handoff
            .store(heir as u32 + 1, Relaxed);
        self.slots[i].woken = Some(Instant::now());
        match self.spawn(i) {
            Ok(()) => {
                info!(self.log, "connections wait on a dormant slot; passing them on";
                      "slot" => i, "to" => heir);
                self.retire(i, heir);
            }
            Err(e) => error!(self.log, "cannot fork a worker"; "slot" => i, "error" => %e),
        }
    }

    /// The settings the command line gives now.
    fn read_settings(&self) -> Result<Settings, String> {
        // A daemon runs in /: read relative paths from where it was started.
        let cwd = self
            .origin
            .cwd
            .as_deref()
            .filter(|_| self.settings.daemonize);
        if let Some(dir) = cwd {
            std::env::set_current_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let loaded = config::load(self.origin.args.clone());
        if cwd.is_some() {
            let _ = std::env::set_current_dir("/");
        }
        match loaded {
            Ok(Action::Run(s)) => {
                let mut s = *s;
                anchor_paths(&mut s, self.origin.cwd.as_deref());
                Ok(s)
            }
            Ok(Action::Print(_)) => Err("the command line does not start a daemon".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// What the workers load from the header at every tick.
    fn publish_live(&self) {
        let s = &self.settings;
        let live = &self.store().header().live;
        live.max_connections.store(s.max_connections, Relaxed);
        live.reqs_per_event.store(s.reqs_per_event, Relaxed);
        live.idle_timeout_ms
            .store(s.idle_timeout.as_millis() as u64, Relaxed);
        live.workers.store(s.workers, Relaxed);
    }

    // ---- upgrade ----

    /// SIGUSR2: check the binary installed now, then execute it in place of
    /// this one (upgrade.rs). Returns only if the upgrade did not happen; the
    /// running binary goes on serving.
    fn begin_upgrade(&mut self) {
        if self.reload.is_some() {
            warn!(
                self.log,
                "upgrade refused: a reload or upgrade is under way; send SIGUSR2 again once it is over"
            );
            return;
        }
        self.systemd.reloading();
        if let Err(why) = self.prepare_upgrade() {
            error!(self.log, "upgrade refused; the running binary goes on serving"; "reason" => why);
            self.systemd.ready(self.status_line());
        }
    }

    fn prepare_upgrade(&mut self) -> Result<(), String> {
        let exe = upgrade::installed_binary()?;
        // What the sockets and the segment were made from must stay.
        let wanted = self.read_settings()?;
        if let Some(n) = reload::plan(&self.settings, wanted).needs_restart.first() {
            return Err(format!(
                "{} changed from {} to {}, which needs a restart",
                n.key, n.running, n.wanted
            ));
        }
        let cwd = self.origin.cwd.clone();
        if self.settings.daemonize
            && let Some(dir) = &cwd
        {
            // The new image reads relative paths as the first one did.
            std::env::set_current_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let checked = upgrade::preflight(&exe, &self.origin.args, &self.store().segment_path());
        let handover = upgrade::Handover {
            listeners: self
                .listeners
                .iter()
                .map(|slot| slot.iter().map(|l| l.as_raw_fd()).collect())
                .collect(),
            mailboxes: self.mailboxes.raw_fds(),
            unix: self.unix.as_ref().map(|u| u.raw_fd()),
            segment: self.store().handover(),
        };
        let why = match checked {
            Ok(()) => {
                info!(self.log, "upgrade: executing the new binary"; "binary" => exe.display().to_string());
                // Signals wait, blocked, for the new image's handlers (the
                // mask and pending signals survive execve).
                let mut old = SigSet::empty();
                let blocked = signal::sigprocmask(
                    SigmaskHow::SIG_BLOCK,
                    Some(&SigSet::all()),
                    Some(&mut old),
                );
                let why = match blocked {
                    Ok(()) => upgrade::exec(
                        &exe,
                        &self.origin.args,
                        &handover,
                        self.systemd.environment(),
                    ),
                    Err(e) => format!("sigprocmask: {e}"),
                };
                let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                why
            }
            Err(why) => why,
        };
        if self.settings.daemonize {
            let _ = std::env::set_current_dir("/");
        }
        Err(why)
    }

    /// In the image SIGUSR2 executed: replace the previous binary's workers
    /// one by one, as a reload does; READY=1 once all are ours.
    fn take_over(&mut self) {
        let workers = self.settings.workers as usize;
        info!(self.log, "upgrade: the new binary runs; replacing the workers one by one";
              "pid" => std::process::id(), "workers" => self.live_workers());
        for i in 0..self.slots.len() {
            match self.slots[i].pid {
                // A dormant slot's worker was passing its connections on.
                Some(_) if i >= workers => self.slots[i].retiring = Some(Instant::now()),
                None if i < workers => self.slots[i].respawn_at = Some(Instant::now()),
                _ => {}
            }
        }
        self.reload = Some(Reload {
            pending: (0..workers)
                .filter(|&i| self.slots[i].pid.is_some())
                .collect(),
            current: None,
            started: Instant::now(),
            upgrade: true,
        });
        // Workers that ended while the image changed.
        self.reap(true);
        self.respawn_due();
        self.advance_reload();
    }

    // ---- health ----

    /// Every slot in service has a worker whose loop ticks, or one on the
    /// way that has not failed too often in a row.
    fn healthy(&self) -> bool {
        (0..self.settings.workers as usize).all(|i| {
            let slot = &self.slots[i];
            let settled = slot.failures < FAILURES_IN_A_ROW;
            match slot.pid {
                None => settled,
                Some(_) if self.accepts(i) => {
                    self.store().slot_at(i).since_beat() < HEARTBEAT_STALE
                        && (settled || slot.started.elapsed() >= Duration::from_secs(1))
                }
                Some(_) => settled && slot.started.elapsed() < START_TIMEOUT,
            }
        })
    }

    /// systemd's STATUS= line.
    fn status_line(&self) -> String {
        let workers = self.settings.workers as usize;
        let up = (0..workers).filter(|&i| self.accepts(i)).count();
        let restarts: u64 = self
            .store()
            .slots()
            .iter()
            .map(|s| s.restarts.load(Relaxed))
            .sum();
        let listening = match &self.unix {
            Some(u) => format!("unix socket {}", u.path().display()),
            None => format!("port {}", self.port),
        };
        format!(
            "workers {up}/{workers} up, {listening}, memory {} MiB, restarts {restarts}{}",
            self.settings.memory_limit >> 20,
            if self.reload.is_some() {
                ", reloading"
            } else {
                ""
            }
        )
    }

    // ---- stop ----

    /// SIGTERM: every worker finishes what it received and exits; after the
    /// drain timeout the rest are killed. Then remove what we created.
    fn drain(mut self) -> i32 {
        self.systemd.stopping();
        info!(self.log, "shutting down"; "workers" => self.live_workers());
        for (i, s) in self.slots.iter().enumerate() {
            // Nobody is left to take connections over: close them.
            self.store().slot_at(i).handoff.store(0, Relaxed);
            if let Some(pid) = s.pid {
                let _ = signal::kill(pid, Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + self.settings.drain_timeout + Duration::from_secs(1);
        while self.live_workers() > 0 && Instant::now() < deadline {
            self.wait_for_signal(Duration::from_millis(50));
            self.reap(false);
        }
        let killed = self.live_workers() > 0;
        if killed {
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
        if self.store().is_persistent() {
            if killed {
                warn!(self.log, "memory file left unclean: workers were killed; the next start checks it";
                      "memory_file" => self.store().segment_path());
            } else {
                self.store().mark_clean();
                info!(self.log, "memory file saved: the next start serves its items";
                      "memory_file" => self.store().segment_path());
            }
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

    /// How long the loop may sleep.
    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut at = now + TICK;
        if self.reload.is_some() {
            at = at.min(now + Duration::from_millis(20));
        }
        if let Some(ping) = self.systemd.next_ping() {
            at = at.min(ping);
        }
        for s in &self.slots[..self.settings.workers as usize] {
            if let Some(t) = s.respawn_at {
                at = at.min(t);
            }
        }
        at.saturating_duration_since(now)
    }

    /// Sleep until a signal arrives (or `timeout`), then empty the self-pipe.
    /// Returns the dormant slots with something waiting on their sockets.
    fn wait_for_signal(&self, timeout: Duration) -> Vec<usize> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let watched: Vec<usize> = (self.settings.workers as usize..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.pid.is_none() && s.woken.is_none_or(|t| t.elapsed() >= DORMANT_WAKE_EVERY)
            })
            .collect();
        let mut fds = vec![PollFd::new(self.wake.0.as_fd(), PollFlags::POLLIN)];
        let mut owners = vec![usize::MAX];
        for &i in &watched {
            for l in &self.listeners[i] {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                owners.push(i);
            }
            fds.push(PollFd::new(self.mailboxes.inbox(i), PollFlags::POLLIN));
            owners.push(i);
        }
        let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::NONE);
        let _ = poll(&mut fds, ms);
        let mut ready: Vec<usize> = fds
            .iter()
            .zip(&owners)
            .skip(1)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .map(|(_, &i)| i)
            .collect();
        ready.dedup();
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.wake.0, &mut buf), Ok(n) if n > 0) {}
        ready
    }
}

/// The listening sockets a previous image left (upgrade), checked against
/// the settings: as many slots and addresses, close-on-exec again.
fn inherited_listeners(
    h: &upgrade::Handover,
    slots: u32,
    settings: &Settings,
) -> Result<Vec<Vec<TcpListener>>, String> {
    // With -s there is no TCP socket in any slot.
    let per_slot = match settings.unix_socket {
        Some(_) => 0,
        None => settings.listen.len(),
    };
    if h.listeners.len() != slots as usize || h.listeners.iter().any(|s| s.len() != per_slot) {
        return Err(format!(
            "the running instance has {} slots of {} sockets; these settings need {slots} of {per_slot}",
            h.listeners.len(),
            h.listeners.first().map_or(0, |s| s.len()),
        ));
    }
    let listeners: Vec<Vec<TcpListener>> = h
        .listeners
        .iter()
        .map(|slot| {
            slot.iter()
                .map(|&fd| {
                    upgrade::set_cloexec(fd, true);
                    // SAFETY: the previous image left `fd` open for us alone
                    // (named in the handover): a listening TCP socket no other
                    // object of this process owns.
                    unsafe { TcpListener::from_raw_fd(fd) }
                })
                .collect()
        })
        .collect();
    for (l, &ip) in listeners[0].iter().zip(&settings.listen) {
        let addr = l
            .local_addr()
            .map_err(|e| format!("an inherited socket: {e}"))?;
        if addr.ip() != ip || (settings.port != 0 && addr.port() != settings.port) {
            return Err(format!(
                "the running instance listens on {addr}, these settings on {ip} port {}",
                settings.port
            ));
        }
    }
    Ok(listeners)
}

/// The segment and the mailboxes a previous image left (upgrade).
fn adopt(
    h: &upgrade::Handover,
    settings: &Settings,
    slots: u32,
) -> Result<(Store, Mailboxes), String> {
    use crate::store::segment::{Handover as Seg, Inherited};
    let inherited = match &h.segment {
        Seg::Shm(name) => Inherited::Shm(name.clone()),
        Seg::File(fd, path) => {
            upgrade::set_cloexec(*fd, true);
            // SAFETY: the memory file's descriptor, left open for us alone by
            // the previous image (named in the handover).
            let file = unsafe { std::fs::File::from_raw_fd(*fd) };
            Inherited::File {
                file,
                path: path.clone(),
            }
        }
    };
    if h.mailboxes.len() != slots as usize {
        return Err(format!(
            "the running instance has {} mailboxes for {slots} slots",
            h.mailboxes.len()
        ));
    }
    let store = Store::adopt(store_params(settings, slots), inherited)?;
    let pairs = h
        .mailboxes
        .iter()
        .map(|&(i, o)| {
            upgrade::set_cloexec(i, true);
            upgrade::set_cloexec(o, true);
            // SAFETY: the previous image left both ends of each mailbox open
            // for us alone (named in the handover).
            unsafe { (OwnedFd::from_raw_fd(i), OwnedFd::from_raw_fd(o)) }
        })
        .collect();
    Ok((store, Mailboxes::from_fds(pairs)))
}

/// What the store is made from, for these settings and slots.
fn store_params(settings: &Settings, slots: u32) -> StoreParams {
    StoreParams {
        layout: LayoutParams {
            memory_limit: settings.memory_limit,
            item_size_max: settings.item_size_max as u64,
            workers: slots,
            growth_factor: settings.growth_factor,
            chunk_size: settings.chunk_size,
        },
        evictions: settings.evictions,
        cas_enabled: settings.cas_enabled,
    }
}

/// `-o slab_automove`, `-o slab_automove_ratio` into the segment, where
/// `slabs automove` changes them and the mover reads them.
fn apply_automove(store: &Store, settings: &Settings) {
    store.set_automove(settings.slab_automove);
    store.set_automove_ratio(settings.slab_automove_ratio);
}

/// `-o lru_crawler`, `lru_crawler_sleep`, `lru_crawler_tocrawl` into the
/// segment, where the `lru_crawler` commands change them and the sweep reads
/// them.
fn apply_crawler(store: &Store, settings: &Settings) {
    store.set_crawler(settings.lru_crawler);
    store.set_crawler_sleep(settings.lru_crawler_sleep);
    store.set_crawler_tocrawl(settings.lru_crawler_tocrawl);
}

fn crawler_settings(s: &Settings) -> (bool, u32, u32) {
    (s.lru_crawler, s.lru_crawler_sleep, s.lru_crawler_tocrawl)
}

/// `-o track_sizes`: the histogram on, as `stats sizes_enable` turns it on
/// (already on after an upgrade: left as it is). With `-C` it stays off.
fn apply_track_sizes(store: &Store, settings: &Settings) {
    if settings.track_sizes {
        store.sizes_enable();
    } else {
        store.sizes_disable();
    }
}

/// A private segment, or (`-e`) the memory file, attached if a previous
/// instance left one with this layout.
fn open_store(settings: &Settings, slots: u32, log: &Logger) -> Result<Store, String> {
    let params = store_params(settings, slots);
    let Some(path) = &settings.memory_file else {
        return Store::create(params);
    };
    let (store, opened) = Store::open_file(params, path)?;
    let file = path.display().to_string();
    match opened {
        Opened::New => info!(log, "memory file created"; "memory_file" => file),
        Opened::Restored {
            clean,
            items,
            settled,
        } => {
            info!(log, "warm restart: cache restored"; "memory_file" => file, "items" => items,
                  "stopped_cleanly" => clean, "chunks_settled" => settled)
        }
        Opened::Discarded(why) => {
            warn!(log, "warm restart: memory file discarded; starting with an empty cache";
                  "memory_file" => file, "reason" => why)
        }
    }
    Ok(store)
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

fn ignore(sigs: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for &s in sigs {
        // SAFETY: ignoring a signal runs no code of ours.
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
