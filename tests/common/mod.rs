//! Shared harness of the integration tests: a daemon on an ephemeral port that
//! is cleaned up on drop ([`Server`]), a raw TCP client ([`Conn`]), and the few
//! process helpers the process tests need ([`signal`], [`children`]).
//!
//! std only: signals go through a one-line `extern "C"` binding of `kill(2)`.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const MEMCACHED: &str = "/usr/bin/memcached";
pub const SHMCACHED: &str = env!("CARGO_BIN_EXE_shmcached");

pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGINT: i32 = 2;
pub const SIGHUP: i32 = 1;
pub const SIGUSR1: i32 = 10;

/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Drop waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at finding a free port (another process may take it between our
/// probe bind and the server's bind).
const PORT_ATTEMPTS: usize = 5;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Send `sig` to `pid`. Errors (no such process) are returned, not panicked on.
pub fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { kill(pid as i32, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match proc_stat(pid) {
        Some(stat) => stat.state != 'Z' && stat.state != 'X',
        None => false,
    }
}

/// The fields of /proc/<pid>/stat the harness needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    /// Start time in clock ticks since boot: tells a pid from a reused one.
    pub start_time: u64,
}

/// Parse /proc/<pid>/stat (the command name may hold spaces and parentheses,
/// so the fields are counted after the last `)`).
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 4 is ppid; field 22 is starttime.
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The direct children of `pid`: from /proc/<pid>/task/*/children when the
/// kernel has it, else by scanning /proc/*/stat for the parent pid.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut kernel_lists = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                kernel_lists = true;
                found.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if !kernel_lists && let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if proc_stat(child).is_some_and(|s| s.ppid == pid) {
                found.push(child);
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// `pid`'s children, grandchildren, ... (not `pid` itself).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut queue = children(pid);
    while let Some(p) = queue.pop() {
        if !all.contains(&p) {
            all.push(p);
            queue.extend(children(p));
        }
    }
    all
}

/// A unique path in the temp dir for this process.
fn temp_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "shmcached-test-{}-{n}-{nanos}-{tag}.log",
        std::process::id()
    ))
}

/// A port nobody listens on right now. Picked at random from 20000..60000
/// (not the kernel's pick for port 0, which tends to hand the same port that
/// was just released to the next caller, so parallel tests collided).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = XorShift::new(
        nanos ^ ((std::process::id() as u64) << 32) ^ DRAWS.fetch_add(1, Ordering::Relaxed),
    );
    loop {
        let port = 20000 + rng.below(40000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Which daemon a [`Server`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shmcached,
    Memcached,
}

impl Kind {
    /// `SHMCACHED_DIFF_AGAINST=memcached` (or `SHMCACHED_TEST_SERVER=memcached`)
    /// makes the tests run memcached where they would run shmcached, to check
    /// the harness itself.
    pub fn target() -> Kind {
        for var in ["SHMCACHED_DIFF_AGAINST", "SHMCACHED_TEST_SERVER"] {
            if std::env::var(var).is_ok_and(|v| v == "memcached") {
                return Kind::Memcached;
            }
        }
        Kind::Shmcached
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Shmcached => "shmcached",
            Kind::Memcached => "memcached",
        }
    }
}

/// A running daemon on 127.0.0.1 and a port of its own. Dropping it sends
/// SIGTERM, waits up to 5 s, then SIGKILLs it and every process it had forked,
/// and reaps it.
pub struct Server {
    kind: Kind,
    child: Option<Child>,
    port: u16,
    stderr_path: PathBuf,
    command_line: String,
}

impl Server {
    /// `shmcached -p <port> -l 127.0.0.1 -u root <args>`.
    pub fn shmcached(args: &[&str]) -> Server {
        Server::start(Kind::Shmcached, args)
    }

    /// `memcached -U 0 -l 127.0.0.1 -p <port> -u root <args>`.
    pub fn memcached(args: &[&str]) -> Server {
        Server::start(Kind::Memcached, args)
    }

    /// The daemon under test ([`Kind::target`]).
    pub fn target(args: &[&str]) -> Server {
        Server::start(Kind::target(), args)
    }

    /// Start `kind` on a free port, once the port is the server's own: two
    /// tests starting at once can still draw one port, and then the harness
    /// could take the other daemon's accepting port for this one's
    /// readiness. Such a start is retried on another port.
    pub fn start(kind: Kind, args: &[&str]) -> Server {
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Server::try_start(kind, free_port(), args) {
                Ok(server) => {
                    // A second instance that drew the same port joins (or
                    // fails) within moments.
                    thread::sleep(Duration::from_millis(50));
                    if server.owns_its_port() {
                        return server;
                    }
                    last_failure = format!("port {} is not its own", server.port());
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!(
            "{} did not start after {PORT_ATTEMPTS} attempts:\n{last_failure}",
            kind.name()
        );
    }

    fn try_start(kind: Kind, port: u16, args: &[&str]) -> Result<Server, String> {
        let port_arg = port.to_string();
        let (program, mut argv): (&str, Vec<&str>) = match kind {
            Kind::Shmcached => (
                SHMCACHED,
                vec!["-p", &port_arg, "-l", "127.0.0.1", "-u", "root"],
            ),
            Kind::Memcached => (
                MEMCACHED,
                vec!["-U", "0", "-l", "127.0.0.1", "-p", &port_arg, "-u", "root"],
            ),
        };
        argv.extend_from_slice(args);
        let command_line = format!("{program} {}", argv.join(" "));
        let stderr_path = temp_path(kind.name());
        let log = File::create(&stderr_path).map_err(|e| format!("create {stderr_path:?}: {e}"))?;
        let log_out = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {command_line}: {e}"))?;
        let mut server = Server {
            kind,
            child: Some(child),
            port,
            stderr_path,
            command_line,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Poll until the port accepts connections while our child still runs
    /// (a connect that succeeds after the child died reached someone else).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child_mut().try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "`{}` exited with {status} before accepting connections; its output:\n{}",
                    self.command_line,
                    self.stderr()
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.child_mut().try_wait().ok().flatten().is_none()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let output = self.stderr();
                self.stop();
                return Err(format!(
                    "`{}` did not accept connections on port {} within {READY_TIMEOUT:?}; its output:\n{output}",
                    self.command_line, self.port
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("server already stopped")
    }

    /// Every socket listening on the port is held by this server's process.
    pub fn owns_its_port(&self) -> bool {
        let listeners = listening_inodes(self.port());
        let own = socket_inodes(self.pid());
        !listeners.is_empty() && listeners.iter().all(|i| own.contains(i))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already stopped").id()
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Everything the server wrote on stdout and stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {:?}: {e})", self.stderr_path))
    }

    /// A new connection to this server.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.port)
    }

    /// The exit status if the process has ended (reaps it), else None.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, up to 5 s for the process to end, then SIGKILL; reap it, then
    /// SIGKILL whatever it had forked that outlived it. Idempotent.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let forked: Vec<ProcStat> = descendants(pid).into_iter().filter_map(proc_stat).collect();
        let mut status = child.try_wait().ok().flatten();
        if status.is_none() {
            let _ = signal(pid, SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while status.is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
                status = child.try_wait().ok().flatten();
            }
        }
        if status.is_none() {
            let _ = child.kill();
            status = child.wait().ok();
        }
        for orphan in forked {
            // Only the very process we saw (same start time), never a reused pid.
            if proc_stat(orphan.pid).is_some_and(|s| s.start_time == orphan.start_time) {
                let _ = signal(orphan.pid, SIGKILL);
            }
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- output of `{}` ---\n{}",
                self.command_line,
                self.stderr()
            );
        }
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// How a read of a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The sentinel's `VERSION ...` reply arrived (and was cut off).
    Sentinel,
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Neither within the read timeout.
    TimedOut,
}

/// A reply and how reading it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub ending: Ending,
}

/// What `roundtrip` appends to know where the reply ends.
pub const SENTINEL: &[u8] = b"version\r\n";

/// A raw TCP client.
pub struct Conn {
    stream: TcpStream,
    timeout: Duration,
}

impl Conn {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut conn = Conn {
            stream,
            timeout: Conn::DEFAULT_TIMEOUT,
        };
        conn.set_timeout(Conn::DEFAULT_TIMEOUT);
        conn
    }

    /// How long a read waits for the next bytes before giving up.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
        self.stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("set_write_timeout");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Like `send`, but a server that already closed is not a panic.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Close our write side (the server reads EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// One read of whatever is there: Ok(0) = EOF; a reset counts as EOF.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Ending> {
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Ending::TimedOut);
                }
                Err(_) => return Ok(0),
            }
        }
    }

    /// Read until `done(bytes so far)` holds, EOF, or a read times out.
    pub fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> (Vec<u8>, Ending) {
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if done(&bytes) {
                return (bytes, Ending::Sentinel);
            }
            match self.read_some(&mut buf) {
                Ok(0) => return (bytes, Ending::Closed),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(ending) => return (bytes, ending),
            }
        }
    }

    /// Read exactly `len` bytes, or fewer if the server closes or goes quiet.
    pub fn read_exact_reply(&mut self, len: usize) -> Vec<u8> {
        self.read_until(|b| b.len() >= len).0
    }

    /// Read until the server closes the connection (or a read times out:
    /// see `Reply::ending`).
    pub fn read_to_eof(&mut self) -> Reply {
        let (bytes, ending) = self.read_until(|_| false);
        Reply { bytes, ending }
    }

    /// Read one `\r\n`-terminated line (with its terminator).
    pub fn read_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match self.read_some(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => break,
            }
        }
        line
    }

    /// Send `request` followed by `version\r\n` and read until that sentinel's
    /// `VERSION ...\r\n` line ends the reply; return the reply without it.
    /// A request that closes the connection returns what came before the close.
    pub fn exchange(&mut self, request: &[u8]) -> Reply {
        let mut wire = request.to_vec();
        wire.extend_from_slice(SENTINEL);
        if self.try_send(&wire).is_err() {
            return self.read_to_eof();
        }
        // `version` lines inside the request answer with VERSION too: the
        // sentinel's is the one after theirs.
        let wanted = count_version_lines(request) + 1;
        let (mut bytes, ending) =
            self.read_until(|b| ends_with_version_line(b) && count_version_replies(b) >= wanted);
        if ending == Ending::Sentinel {
            let cut = last_line_start(&bytes);
            bytes.truncate(cut);
        }
        Reply { bytes, ending }
    }

    /// `exchange`, bytes only.
    pub fn roundtrip(&mut self, request: &[u8]) -> Vec<u8> {
        self.exchange(request).bytes
    }
}

/// How many `version` commands `request` holds, skipping the data blocks of
/// storage commands (whose bytes may say anything).
fn count_version_lines(request: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = request;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
        match tokens.next() {
            Some(b"version") => count += 1,
            Some(b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas") => {
                let bytes = tokens
                    .nth(3)
                    .and_then(|t| std::str::from_utf8(t).ok()?.parse::<usize>().ok());
                if let Some(bytes) = bytes {
                    rest = &rest[(bytes + 2).min(rest.len())..];
                }
            }
            _ => {}
        }
    }
    count
}

fn count_version_replies(reply: &[u8]) -> usize {
    reply
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"VERSION "))
        .count()
}

fn last_line_start(bytes: &[u8]) -> usize {
    let body = &bytes[..bytes.len().saturating_sub(1)];
    body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

fn ends_with_version_line(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\r\n") && bytes[last_line_start(bytes)..].starts_with(b"VERSION ")
}

/// Bytes as a readable, escaped string (`\r`, `\n`, `\t`, `\xNN`), long runs
/// of one byte folded as `<'v' x 1047552>`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == bytes[i]).count();
        if run > 16 {
            out.push_str(&format!("<{} x {run}>", escape(&bytes[i..=i])));
            i += run;
            continue;
        }
        out.extend(std::ascii::escape_default(bytes[i]).map(char::from));
        i += 1;
    }
    out
}

/// A tiny seeded PRNG (xorshift64*), so random tests replay from their seed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seed of a random test: `SHMCACHED_TEST_SEED` if set, else from the clock.
pub fn test_seed() -> u64 {
    std::env::var("SHMCACHED_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Inodes of the TCP sockets listening on `port` (IPv4 and IPv6).
pub fn listening_inodes(port: u16) -> Vec<u64> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                found.extend(inode.parse::<u64>().ok());
            }
        }
    }
    found
}

/// Inodes of the sockets `pid` holds open.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}
