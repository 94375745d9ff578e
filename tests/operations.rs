//! Operating the daemon (DESIGN.md "Processes", ANCHORS.md §6): what systemd
//! hears on NOTIFY_SOCKET (READY=1 once every worker accepts, STATUS=,
//! WATCHDOG=1 while the workers can be kept up, RELOADING=1 then READY=1
//! around a SIGHUP, STOPPING=1), that no worker inherits NOTIFY_SOCKET, what
//! a SIGHUP reload changes (under load: no connection refused, no request
//! lost), and `-d`.
//!
//! systemd is played by a Unix datagram socket the test binds; the daemon is
//! started by the test itself, with that socket in its environment.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Conn, SHMCACHED, SIGHUP, SIGKILL, SIGTERM, children, descendants, free_port, is_alive,
    listening_inodes, proc_stat, signal,
};

/// Each test keeps both cores busy for a while: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// systemd's side
// ---------------------------------------------------------------------------

/// The notification socket, and every line received on it, in order.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
    lines: Vec<(Instant, String)>,
}

impl Systemd {
    fn new(tag: &str) -> Systemd {
        let path = std::env::temp_dir().join(format!(
            "shmcached-notify-{}-{tag}.sock",
            std::process::id()
        ));
        let _ = fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Systemd {
            socket,
            path,
            lines: Vec::new(),
        }
    }

    /// Take in whatever arrives within `time`.
    fn listen(&mut self, time: Duration) {
        let until = Instant::now() + time;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let now = Instant::now();
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    self.lines.push((now, line.to_string()));
                }
            }
        }
    }

    /// Wait until a line starting with `prefix` arrives at index `from` or
    /// later; its index.
    fn wait_for(&mut self, prefix: &str, from: usize, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = (from..self.lines.len()).find(|&i| self.lines[i].1.starts_with(prefix))
            {
                return Some(i);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.listen(Duration::from_millis(20));
        }
    }

    /// The lines other than WATCHDOG=1, from index `from`.
    fn events(&self, from: usize) -> Vec<String> {
        self.lines[from..]
            .iter()
            .map(|(_, l)| l.clone())
            .filter(|l| l != "WATCHDOG=1")
            .collect()
    }

    fn pings_between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.lines
            .iter()
            .filter(|(t, l)| l == "WATCHDOG=1" && *t >= from && *t <= to)
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// A daemon the test started with an environment of its choosing; stopped
/// (and everything it forked killed) on drop.
struct Daemon {
    child: Option<Child>,
    port: u16,
    stderr_path: PathBuf,
}

impl Daemon {
    /// `shmcached -p <free port> -l 127.0.0.1 -u root <args>` with `env`.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let stderr_path = temp_file("stderr.log");
        let log = fs::File::create(&stderr_path).unwrap();
        let port_arg = port.to_string();
        let mut argv = vec!["-p", &port_arg, "-l", "127.0.0.1", "-u", "root"];
        argv.extend_from_slice(args);
        let child = Command::new(SHMCACHED)
            .args(&argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shmcached");
        Daemon {
            child: Some(child),
            port,
            stderr_path,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        signal(self.pid(), sig).expect("signal the daemon");
    }

    /// Wait for the exit status (None: still running after `timeout`).
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `stats` (or `stats <group>`) as name -> value.
    fn stats(&self, group: &str) -> HashMap<String, String> {
        let request = if group.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {group}\r\n")
        };
        let reply = Conn::connect(self.port).roundtrip(request.as_bytes());
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn stat(&self, name: &str) -> u64 {
        let stats = self.stats("");
        stats
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric `{name}` in stats: {stats:?}"))
    }

    /// The pids `stats workers` lists, by slot (0 = none).
    fn worker_pids(&self) -> Vec<u32> {
        let stats = self.stats("workers");
        (0..)
            .map_while(|i| stats.get(&format!("worker:{i}:pid")))
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let forked = descendants(child.id());
            let _ = signal(child.id(), SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            for p in forked {
                let _ = signal(p, SIGKILL);
            }
        }
        if thread::panicking() {
            eprintln!("--- daemon output ---\n{}", self.stderr());
        }
        let _ = fs::remove_file(&self.stderr_path);
    }
}

fn temp_file(tag: &str) -> PathBuf {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "shmcached-operations-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Poll `probe` every 10 ms until it holds or `timeout` passes.
fn eventually(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Start a daemon with a notify socket and wait for its READY=1.
fn start_notified(systemd: &Systemd, args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let path = systemd.path.to_string_lossy().into_owned();
    let mut all = vec![("NOTIFY_SOCKET", path.as_str())];
    all.extend_from_slice(env);
    Daemon::start(args, &all)
}

fn ready(systemd: &mut Systemd, daemon: &Daemon) -> usize {
    systemd
        .wait_for("READY=1", 0, Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "no READY=1 within 10 s; received {:?}; daemon output:\n{}",
                systemd.events(0),
                daemon.stderr()
            )
        })
}

fn has_variable(pid: u32, name: &str) -> bool {
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ
        .split(|&b| b == 0)
        .any(|entry| entry.starts_with(format!("{name}=").as_bytes()))
}

// ---------------------------------------------------------------------------
// systemd notifications
// ---------------------------------------------------------------------------

/// READY=1 (with STATUS=) once all three workers accept; STOPPING=1 on
/// SIGTERM, last; exit 0.
#[test]
fn ready_status_then_stopping_in_that_order() {
    let _turn = one_at_a_time();
    let mut systemd = Systemd::new("order");
    let mut daemon = start_notified(&systemd, &["-t", "3", "-m", "16"], &[]);
    let at = ready(&mut systemd, &daemon);

    // At READY=1 every worker is there and serves.
    assert_eq!(daemon.stat("workers_alive"), 3, "workers_alive at READY=1");
    assert_eq!(children(daemon.pid()).len(), 3, "workers at READY=1");
    for _ in 0..12 {
        assert_eq!(
            Conn::connect(daemon.port).roundtrip(b"set k 0 0 1\r\nv\r\n"),
            b"STORED\r\n"
        );
    }
    let status = systemd.events(at);
    assert!(
        status
            .get(1)
            .is_some_and(|s| s.starts_with("STATUS=workers 3/3 up")
                && s.contains(&format!("port {}", daemon.port))
                && s.contains("memory 16 MiB")
                && s.contains("restarts 0")),
        "STATUS= right after READY=1: {status:?}"
    );

    daemon.signal(SIGTERM);
    let stopping = systemd.wait_for("STOPPING=1", at, Duration::from_secs(5));
    let status = daemon.wait_exit(Duration::from_secs(5));
    let events = systemd.events(0);
    assert!(stopping.is_some(), "no STOPPING=1: {events:?}");
    assert_eq!(
        events.first().map(String::as_str),
        Some("READY=1"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("STOPPING=1"),
        "{events:?}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}

/// Without NOTIFY_SOCKET nothing is sent and nothing breaks (the rest of
/// the suites run that way); with it, no worker (nor the supervisor's
/// /proc/<pid>/environ) shows NOTIFY_SOCKET or WATCHDOG_*; WATCHDOG=1 comes
/// every 100 ms for WATCHDOG_USEC=200000 and stops when a slot's worker dies
/// young five times in a row (here: killed as soon as it appears), then comes
/// back once a worker stays up.
#[test]
fn watchdog_pings_only_while_the_workers_can_be_kept_up() {
    let _turn = one_at_a_time();
    let mut systemd = Systemd::new("watchdog");
    let daemon = start_notified(
        &systemd,
        &["-t", "2", "-m", "16"],
        &[("WATCHDOG_USEC", "200000")],
    );
    ready(&mut systemd, &daemon);
    let workers = daemon.worker_pids();
    assert_eq!(workers.len(), 2);
    for &pid in workers.iter().chain([daemon.pid()].iter()) {
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(!has_variable(pid, name), "{name} in /proc/{pid}/environ");
        }
    }

    let start = Instant::now();
    systemd.listen(Duration::from_secs(1));
    let pings = systemd.pings_between(start, Instant::now()).len();
    assert!((6..=14).contains(&pings), "{pings} WATCHDOG=1 in 1 s");

    // Slot 0's worker, and every worker that replaces it, killed at once.
    let spared = workers[1];
    let killing = Instant::now();
    while killing.elapsed() < Duration::from_secs(4) {
        for pid in children(daemon.pid()) {
            if pid != spared {
                let _ = signal(pid, SIGKILL);
            }
        }
        systemd.listen(Duration::from_millis(2));
    }
    let stopped_killing = Instant::now();
    let last_ping = systemd
        .pings_between(killing, stopped_killing)
        .last()
        .copied()
        .unwrap_or(killing);
    assert!(
        stopped_killing - last_ping >= Duration::from_millis(1500),
        "WATCHDOG=1 went on while slot 0 could not be kept up (last one {:?} before the end)",
        stopped_killing - last_ping
    );
    assert!(
        daemon.stderr().contains("cannot be kept up"),
        "the log names the failing slot:\n{}",
        daemon.stderr()
    );

    // Left alone, the next worker stays up and the pings come back.
    let back = systemd.wait_for("WATCHDOG=1", systemd.lines.len(), Duration::from_secs(5));
    assert!(back.is_some(), "WATCHDOG=1 did not come back");
    assert_eq!(daemon.stat("workers_alive"), 2);
}

// ---------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------

/// What a load client saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    requests: u64,
    /// Requests answered: the key's value the client expects at the end.
    acked: u64,
    /// connect() failed.
    refused: u64,
    /// A request sent without a reply (closed, reset or timed out).
    lost: u64,
    /// A reply that was not the next value.
    wrong: u64,
    notes: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.acked += other.acked;
        self.refused += other.refused;
        self.lost += other.lost;
        self.wrong += other.wrong;
        self.notes.extend(other.notes.iter().take(5).cloned());
    }
}

/// One `incr <key> 1` on `stream`: the new value, or None when no reply came.
fn incr(stream: &mut BufReader<TcpStream>, key: &str) -> Option<u64> {
    stream
        .get_mut()
        .write_all(format!("incr {key} 1\r\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    match stream.read_line(&mut line) {
        Ok(n) if n > 0 => line.trim_end().parse().ok(),
        _ => None,
    }
}

fn connect(port: u16) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(BufReader::new(stream))
}

/// A client on one connection for its whole life, `incr`s one after the
/// other: a closed connection is a lost request (no reconnect hides it).
fn steady_client(port: u16, key: String, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let mut conn = match connect(port) {
        Ok(c) => c,
        Err(e) => {
            t.refused += 1;
            t.notes.push(format!("{key}: connect: {e}"));
            return t;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        t.requests += 1;
        match incr(&mut conn, &key) {
            Some(v) if v == t.acked + 1 => t.acked = v,
            Some(v) => {
                t.wrong += 1;
                t.notes.push(format!("{key}: {v} after {}", t.acked));
                t.acked = v;
            }
            None => {
                t.lost += 1;
                t.notes.push(format!("{key}: no reply after {}", t.acked));
                return t;
            }
        }
    }
    t
}

/// A client that opens a connection for every `incr`.
fn connecting_client(port: u16, key: String, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let mut conn = match connect(port) {
            Ok(c) => c,
            Err(e) => {
                t.refused += 1;
                t.notes.push(format!("{key}: connect: {e}"));
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        t.requests += 1;
        match incr(&mut conn, &key) {
            Some(v) if v == t.acked + 1 => t.acked = v,
            Some(v) => {
                t.wrong += 1;
                t.acked = v;
            }
            None => {
                t.lost += 1;
                t.notes.push(format!("{key}: no reply after {}", t.acked));
                // The value tells whether it was counted.
                let value = Conn::connect(port).roundtrip(format!("get {key}\r\n").as_bytes());
                let text = String::from_utf8_lossy(&value).into_owned();
                if let Some(v) = text.lines().nth(1).and_then(|l| l.parse().ok()) {
                    t.acked = v;
                }
            }
        }
    }
    t
}

/// Steady and connecting clients on `keys`, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<(String, thread::JoinHandle<Tally>)>,
}

impl Load {
    fn start(port: u16, steady: usize, connecting: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut setup = Conn::connect(port);
        let mut clients = Vec::new();
        for i in 0..steady + connecting {
            let key = format!("load{i}");
            assert_eq!(
                setup.roundtrip(format!("set {key} 0 0 1\r\n0\r\n").as_bytes()),
                b"STORED\r\n"
            );
            let stop = stop.clone();
            let k = key.clone();
            let handle = if i < steady {
                thread::spawn(move || steady_client(port, k, stop))
            } else {
                thread::spawn(move || connecting_client(port, k, stop))
            };
            clients.push((key, handle));
        }
        Load { stop, clients }
    }

    /// Stop the clients; their tally, checked against the values stored.
    fn finish(self, port: u16) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        let mut check = Conn::connect(port);
        for (key, handle) in self.clients {
            let t = handle.join().expect("load client");
            let reply = check.roundtrip(format!("get {key}\r\n").as_bytes());
            let text = String::from_utf8_lossy(&reply).into_owned();
            let stored: u64 = text
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(u64::MAX);
            if stored != t.acked {
                total.wrong += 1;
                total
                    .notes
                    .push(format!("{key}: {stored} stored, {} acknowledged", t.acked));
            }
            total.add(&t);
        }
        total
    }
}

fn write_config(path: &Path, text: &str) {
    fs::write(path, text).expect("write the config file");
}

/// Send SIGHUP and wait for RELOADING=1 then READY=1; the lines between.
fn reload(systemd: &mut Systemd, daemon: &Daemon) -> Vec<String> {
    let from = systemd.lines.len();
    daemon.signal(SIGHUP);
    let reloading = systemd.wait_for("RELOADING=1", from, Duration::from_secs(5));
    let done = reloading.and_then(|i| systemd.wait_for("READY=1", i, Duration::from_secs(20)));
    assert!(
        done.is_some(),
        "no RELOADING=1 then READY=1 after SIGHUP: {:?}\n{}",
        systemd.events(from),
        daemon.stderr()
    );
    systemd.events(from)
}

/// The workers in service once surplus ones are gone: `threads` (the
/// live `-t`), `workers_alive` and the pids `stats workers` lists agree.
fn assert_workers(daemon: &Daemon, n: usize) {
    let settled = eventually(Duration::from_secs(10), || {
        let listed = daemon.worker_pids().iter().filter(|&&p| p != 0).count();
        daemon.stat("threads") == n as u64
            && daemon.stat("workers_alive") == n as u64
            && listed == n
            && children(daemon.pid()).len() == n
    });
    assert!(
        settled,
        "expected {n} workers: threads {}, workers_alive {}, stats workers {:?}, children {:?}",
        daemon.stat("threads"),
        daemon.stat("workers_alive"),
        daemon.worker_pids(),
        children(daemon.pid())
    );
}

/// SIGHUP with a new worker count, under load from steady and connecting
/// clients: 2 -> 3 workers (and a new drain_timeout, which the workers copy
/// at fork: all of them are replaced one by one), 3 -> 1, 1 -> 4. No
/// connection refused, no request without its reply, every acknowledged incr
/// counted once.
#[test]
fn sighup_resizes_and_replaces_workers_under_load_losing_nothing() {
    let _turn = one_at_a_time();
    let config = temp_file("reload.toml");
    let config_arg = config.to_string_lossy().into_owned();
    let base = "memory_limit_mb = 16\nmax_workers = 4\n";
    write_config(&config, &format!("{base}workers = 2\n"));
    let mut systemd = Systemd::new("resize");
    let daemon = start_notified(&systemd, &["--config", &config_arg], &[]);
    ready(&mut systemd, &daemon);
    assert_workers(&daemon, 2);
    let port = daemon.port;

    let load = Load::start(port, 6, 2);
    thread::sleep(Duration::from_millis(500));

    let before = daemon.worker_pids();
    write_config(
        &config,
        &format!("{base}workers = 3\ndrain_timeout_secs = 6\n"),
    );
    let events = reload(&mut systemd, &daemon);
    assert_workers(&daemon, 3);
    let after = daemon.worker_pids();
    assert!(
        before[..2].iter().all(|p| !after.contains(p)),
        "every worker replaced after a change they copy at fork: {before:?} -> {after:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("workers 3/3 up")),
        "STATUS= follows the reload: {events:?}"
    );
    thread::sleep(Duration::from_millis(500));

    write_config(
        &config,
        &format!("{base}workers = 1\ndrain_timeout_secs = 6\n"),
    );
    reload(&mut systemd, &daemon);
    assert_workers(&daemon, 1);
    thread::sleep(Duration::from_millis(500));

    write_config(
        &config,
        &format!("{base}workers = 4\ndrain_timeout_secs = 6\n"),
    );
    reload(&mut systemd, &daemon);
    assert_workers(&daemon, 4);
    thread::sleep(Duration::from_millis(500));

    let tally = load.finish(port);
    println!(
        "reload under load: {} requests, {} refused, {} lost, {} wrong",
        tally.requests, tally.refused, tally.lost, tally.wrong
    );
    assert!(tally.requests > 100, "the load ran: {tally:?}");
    assert_eq!(
        (tally.refused, tally.lost, tally.wrong),
        (0, 0, 0),
        "{:?}\n{}",
        tally.notes,
        daemon.stderr()
    );
    let _ = fs::remove_file(&config);
}

/// `slab_automove` and `slab_automove_ratio` are live: a reload sets them
/// as a client's `slabs automove` does, without replacing a worker; a reload
/// that does not change them leaves what a client set.
#[test]
fn sighup_sets_the_automove_settings_live() {
    let _turn = one_at_a_time();
    let config = temp_file("automove.toml");
    let config_arg = config.to_string_lossy().into_owned();
    let base = "memory_limit_mb = 16\nworkers = 2\n";
    write_config(&config, base);
    let mut systemd = Systemd::new("automove");
    let daemon = start_notified(&systemd, &["--config", &config_arg], &[]);
    ready(&mut systemd, &daemon);
    let automove = |d: &Daemon| {
        let s = d.stats("settings");
        (s["slab_automove"].clone(), s["slab_automove_ratio"].clone())
    };
    assert_eq!(automove(&daemon), ("1".into(), "0.80".into()));
    let mut c = Conn::connect(daemon.port);
    assert_eq!(c.roundtrip(b"slabs automove 0\r\n"), b"OK\r\n");
    reload(&mut systemd, &daemon);
    assert_eq!(automove(&daemon), ("0".into(), "0.80".into()));

    let before = daemon.worker_pids();
    write_config(
        &config,
        &format!("{base}slab_automove = 2\nslab_automove_ratio = 0.5\n"),
    );
    reload(&mut systemd, &daemon);
    assert_eq!(automove(&daemon), ("2".into(), "0.50".into()));
    assert_eq!(daemon.worker_pids(), before, "no worker replaced");
    let _ = fs::remove_file(&config);
}

/// Connections queued on the socket of a slot that goes dormant are served
/// by a slot in service: taken by the retiring worker itself (here held
/// stopped until after the reload), or, when that worker died without
/// taking them, by a worker the supervisor sends to the dormant slot.
#[test]
fn connections_queued_on_a_retired_slot_are_still_served() {
    const SIGSTOP: i32 = 19;
    const SIGCONT: i32 = 18;
    let _turn = one_at_a_time();
    let config = temp_file("dormant.toml");
    let config_arg = config.to_string_lossy().into_owned();
    let two = "memory_limit_mb = 16\nworkers = 2\n";
    let one = "memory_limit_mb = 16\nworkers = 1\n";
    write_config(&config, two);
    let mut systemd = Systemd::new("dormant");
    let daemon = start_notified(&systemd, &["--config", &config_arg], &[]);
    ready(&mut systemd, &daemon);

    for (round, end_of_the_retiree) in [(1, SIGCONT), (2, SIGKILL)] {
        let worker = daemon.worker_pids()[1];
        signal(worker, SIGSTOP).unwrap();
        // Some of these land on the stopped worker's socket and wait there.
        let mut conns: Vec<Conn> = (0..12).map(|_| Conn::connect(daemon.port)).collect();
        for c in &mut conns {
            c.send(b"version\r\n");
        }
        thread::sleep(Duration::from_millis(300));
        let mut waiting = Vec::new();
        for mut c in conns {
            c.set_timeout(Duration::from_millis(50));
            if c.read_line().is_empty() {
                waiting.push(c);
            }
        }
        assert!(
            !waiting.is_empty(),
            "round {round}: none on the stopped worker"
        );

        write_config(&config, one);
        reload(&mut systemd, &daemon);
        signal(worker, end_of_the_retiree).unwrap();
        for c in &mut waiting {
            c.set_timeout(Duration::from_secs(5));
            let line = c.read_line();
            assert!(
                line.starts_with(b"VERSION "),
                "round {round}: a queued connection got {:?}\n{}",
                String::from_utf8_lossy(&line),
                daemon.stderr()
            );
            assert_eq!(c.roundtrip(b"set q 0 0 1\r\nq\r\n"), b"STORED\r\n");
        }
        assert_workers(&daemon, 1);
        write_config(&config, two);
        reload(&mut systemd, &daemon);
        assert_workers(&daemon, 2);
    }
    assert!(
        daemon
            .stderr()
            .contains("connections wait on a dormant slot"),
        "round 2 took the supervisor's way:\n{}",
        daemon.stderr()
    );
    let _ = fs::remove_file(&config);
}

/// A file that no longer parses: one log line with the error, RELOADING=1
/// then READY=1, the same workers serving on.
#[test]
fn sighup_with_an_invalid_file_logs_one_line_and_runs_on() {
    let _turn = one_at_a_time();
    let config = temp_file("invalid.toml");
    let config_arg = config.to_string_lossy().into_owned();
    write_config(&config, "workers = 2\nmemory_limit_mb = 16\n");
    let mut systemd = Systemd::new("invalid");
    let daemon = start_notified(&systemd, &["--config", &config_arg], &[]);
    ready(&mut systemd, &daemon);
    let workers = daemon.worker_pids();
    assert_eq!(
        Conn::connect(daemon.port).roundtrip(b"set kept 0 0 2\r\nok\r\n"),
        b"STORED\r\n"
    );
    let log_before = daemon.stderr().lines().count();

    write_config(&config, "workers = \"two\"\nmemory_limit_mb = 16\n");
    reload(&mut systemd, &daemon);

    let log = daemon.stderr();
    let new_lines: Vec<&str> = log.lines().skip(log_before).collect();
    assert_eq!(new_lines.len(), 1, "one log line: {new_lines:?}");
    assert!(
        new_lines[0].contains("reload refused")
            && new_lines[0].contains("config error")
            && new_lines[0].contains("workers"),
        "the line names the error: {new_lines:?}"
    );
    assert_eq!(daemon.worker_pids(), workers, "the same workers");
    assert_eq!(
        Conn::connect(daemon.port).roundtrip(b"get kept\r\n"),
        b"VALUE kept 0 2\r\nok\r\nEND\r\n"
    );
    let _ = fs::remove_file(&config);
}

/// Live settings change without replacing a worker; a setting the segment
/// or the sockets were made from is logged by name and keeps its value.
#[test]
fn sighup_applies_live_settings_and_names_what_needs_a_restart() {
    let _turn = one_at_a_time();
    let config = temp_file("live.toml");
    let config_arg = config.to_string_lossy().into_owned();
    write_config(
        &config,
        "workers = 2\nmemory_limit_mb = 16\nmax_connections = 100\n",
    );
    let mut systemd = Systemd::new("live");
    let daemon = start_notified(&systemd, &["--config", &config_arg], &[]);
    ready(&mut systemd, &daemon);
    let workers = daemon.worker_pids();

    write_config(
        &config,
        "workers = 2\nmemory_limit_mb = 32\nmax_connections = 3\n",
    );
    reload(&mut systemd, &daemon);

    assert!(
        eventually(Duration::from_secs(2), || daemon.stat("max_connections")
            == 3),
        "max_connections applied live"
    );
    assert_eq!(daemon.stat("limit_maxbytes"), 16 << 20, "memory kept");
    assert_eq!(daemon.worker_pids(), workers, "no worker replaced");
    let mut conn = Conn::connect(daemon.port);
    let settings = conn.roundtrip(b"stats settings\r\n");
    assert!(
        String::from_utf8_lossy(&settings).contains("STAT maxconns 3\r\n"),
        "stats settings shows the live -c: {}",
        String::from_utf8_lossy(&settings)
    );
    drop(conn);
    let log = daemon.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("needs a restart") && l.contains("memory_limit")),
        "the log names memory_limit:\n{log}"
    );
    // The new -c holds: three connections at most (once the ones `stats`
    // used are closed, and the three are served).
    assert!(eventually(Duration::from_secs(2), || daemon
        .stat("curr_connections")
        == 1));
    let held: Vec<Conn> = (0..3)
        .map(|_| {
            let mut c = Conn::connect(daemon.port);
            c.send(b"version\r\n");
            assert!(c.read_line().starts_with(b"VERSION "));
            c
        })
        .collect();
    let mut fourth = Conn::connect(daemon.port);
    let reply = fourth.read_to_eof();
    assert!(
        reply.bytes.starts_with(b"ERROR Too many open connections"),
        "the fourth connection: {:?}",
        String::from_utf8_lossy(&reply.bytes)
    );
    drop(held);
    let _ = fs::remove_file(&config);
}

// ---------------------------------------------------------------------------
// -d
// ---------------------------------------------------------------------------

/// `-d`: the command returns at once with 0; the pid file names the daemon
/// (another process, in its own session) which serves; SIGTERM stops it and
/// it removes its pid file.
#[test]
fn daemon_mode_returns_and_the_pid_file_names_a_serving_daemon() {
    let _turn = one_at_a_time();
    let port = free_port();
    let port_arg = port.to_string();
    let pid_file = temp_file("daemon.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut command = Command::new(SHMCACHED)
        .args([
            "-d",
            "-p",
            &port_arg,
            "-l",
            "127.0.0.1",
            "-u",
            "root",
            "-t",
            "2",
            "-m",
            "16",
            "-P",
            &pid_arg,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmcached -d");
    let command_pid = command.id();
    // Whatever happens next, the daemon goes.
    struct Reap<'a>(&'a Path);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let Some(pid) = fs::read_to_string(self.0)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            else {
                return;
            };
            if is_alive(pid) {
                let forked = descendants(pid);
                let _ = signal(pid, SIGKILL);
                for p in forked {
                    let _ = signal(p, SIGKILL);
                }
            }
        }
    }
    let _reap = Reap(&pid_file);
    let status = loop {
        if let Some(status) = command.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = command.kill();
            let _ = command.wait();
            panic!("shmcached -d did not return within 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let daemon: u32 = fs::read_to_string(&pid_file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(status.success(), "shmcached -d exited with {status}");
    assert!(took < Duration::from_secs(3), "shmcached -d took {took:?}");
    assert_ne!(daemon, command_pid, "the pid file names the daemon");
    assert!(is_alive(daemon), "the daemon runs");
    let stat = fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap();
    let session: u32 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(session, daemon, "the daemon leads its own session");
    assert_eq!(
        fs::read_link(format!("/proc/{daemon}/cwd")).unwrap(),
        PathBuf::from("/")
    );
    assert_eq!(children(daemon).len(), 2, "its workers");

    let mut conn = Conn::connect(port);
    assert_eq!(conn.roundtrip(b"set d 0 0 2\r\nhi\r\n"), b"STORED\r\n");
    assert_eq!(
        conn.roundtrip(b"get d\r\n"),
        b"VALUE d 0 2\r\nhi\r\nEND\r\n"
    );
    drop(conn);

    signal(daemon, SIGTERM).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(daemon)
            && proc_stat(daemon).is_none()),
        "the daemon stops on SIGTERM"
    );
    assert!(listening_inodes(port).is_empty(), "the port is free");
    assert!(!pid_file.exists(), "the pid file is removed");
}

/// `-d` on a busy port: the command says why, on one line, and fails.
#[test]
fn daemon_mode_reports_a_failed_start() {
    let _turn = one_at_a_time();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = Command::new(SHMCACHED)
        .args([
            "-d",
            "-p",
            &port,
            "-l",
            "127.0.0.1",
            "-u",
            "root",
            "-m",
            "16",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run shmcached -d");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("Address already in use"), "{stderr:?}");
}
