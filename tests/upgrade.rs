//! Binary upgrade (SIGUSR2): the supervisor executes the binary installed now
//! in its place and replaces its workers one by one. Under load from several
//! connections nothing is refused and no acknowledged write is lost; the pid
//! stays, the workers are the new binary's, no zombie is left; a binary that
//! cannot take over leaves the old one serving.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{SHMCACHED, SIGKILL, SIGTERM, children, descendants, free_port, is_alive, signal};

/// SIGUSR2 on Linux.
const SIGUSR2: i32 = 12;

/// One test at a time: a test writing a binary while another forks would
/// leave the file open for writing in that child until it execs, and
/// executing the file then fails with ETXTBSY ("Text file busy").
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory holding the "installed" binary, which the tests replace.
struct Install {
    dir: PathBuf,
}

impl Install {
    fn new(tag: &str) -> Install {
        let dir = std::env::temp_dir().join(format!(
            "shmcached-upgrade-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let install = Install { dir };
        install.replace_with(Path::new(SHMCACHED));
        install
    }

    fn binary(&self) -> PathBuf {
        self.dir.join("shmcached")
    }

    /// Install `from` as a package manager does: a new file renamed over the
    /// old one (the running process keeps the old, now deleted, inode).
    fn replace_with(&self, from: &Path) {
        let aside = self.dir.join("shmcached.new");
        fs::copy(from, &aside).unwrap();
        fs::set_permissions(&aside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&aside, self.binary()).unwrap();
    }

    /// Install a "binary" that cannot start.
    fn replace_with_broken(&self) {
        let aside = self.dir.join("shmcached.new");
        fs::write(
            &aside,
            "#!/bin/sh\necho 'cannot start: broken build' >&2\nexit 3\n",
        )
        .unwrap();
        fs::set_permissions(&aside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&aside, self.binary()).unwrap();
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(binary: &Path, args: &[&str]) -> Daemon {
        Daemon::start_with(binary, args, &[])
    }

    fn start_with(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = binary.with_file_name(format!("log-{port}"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["-p", &port.to_string(), "-l", "127.0.0.1", "-u", "root"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn");
        let d = Daemon { child, port, log };
        d.wait_log("INFO ready", 0, Duration::from_secs(10));
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the `n`+1-th line containing `text`.
    fn wait_log(&self, text: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.stderr().matches(text).count() <= n {
            assert!(
                Instant::now() < deadline,
                "no {text:?} (#{}) within {timeout:?}:\n{}",
                n + 1,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn workers(&self) -> Vec<u32> {
        children(self.pid())
    }

    /// The file the process runs now.
    fn exe(&self) -> (u64, u64) {
        let m = fs::metadata(format!("/proc/{}/exe", self.pid())).unwrap();
        (m.dev(), m.ino())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let forked = descendants(self.pid());
        let _ = signal(self.pid(), SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in forked {
            let _ = signal(p, SIGKILL);
        }
        if thread::panicking() {
            eprintln!("--- daemon output ---\n{}", self.stderr());
        }
    }
}

/// What the load clients saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    /// connect() failed.
    refused: u64,
    /// A request sent on a connection that then closed without a reply.
    unanswered: u64,
    /// An acknowledged write found missing or different at the end.
    lost: u64,
    notes: Vec<String>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.requests += o.requests;
        self.refused += o.refused;
        self.unanswered += o.unanswered;
        self.lost += o.lost;
        self.notes.extend(o.notes.into_iter().take(5));
    }
}

fn connect(port: u16) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(BufReader::new(s))
}

/// One request, one reply line.
fn ask(conn: &mut BufReader<TcpStream>, request: &[u8]) -> Option<String> {
    conn.get_mut().write_all(request).ok()?;
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

/// A client that keeps one connection (or `fresh`: opens one per request)
/// and sets new keys `<name>:<n>` = n; the acknowledged ones must all be
/// there at the end. A connection the server closes after a reply (the old
/// worker's drain) is reopened; one that closes before the reply counts as
/// unanswered (and that write is not counted as acknowledged).
fn writer(port: u16, name: String, fresh: bool, stop: Arc<AtomicBool>) -> Outcome {
    let mut t = Tally::default();
    let mut acked = Vec::new();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match connect(port) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    t.refused += 1;
                    t.notes.push(format!("{name}: connect: {e}"));
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        n += 1;
        t.requests += 1;
        let value = n.to_string();
        let request = format!("set {name}:{n} 0 0 {}\r\n{value}\r\n", value.len());
        match ask(conn.as_mut().unwrap(), request.as_bytes()) {
            Some(line) if line == "STORED\r\n" => acked.push(n),
            Some(line) => {
                t.lost += 1;
                t.notes.push(format!("{name}:{n}: {line:?}"));
            }
            None => {
                t.unanswered += 1;
                conn = None;
            }
        }
        if fresh {
            conn = None;
        }
    }
    (t, acked)
}

/// A client's tally and the numbers of its acknowledged writes.
type Outcome = (Tally, Vec<u64>);

struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<(String, thread::JoinHandle<Outcome>)>,
}

impl Load {
    fn start(port: u16, steady: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..steady + fresh)
            .map(|i| {
                let name = format!("c{i}");
                let (s, n) = (stop.clone(), name.clone());
                (name, thread::spawn(move || writer(port, n, i >= steady, s)))
            })
            .collect();
        Load { stop, clients }
    }

    fn finish(self, port: u16) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        let mut check = connect(port).expect("connect to check");
        for (name, handle) in self.clients {
            let (mut t, acked) = handle.join().expect("client");
            for chunk in acked.chunks(100) {
                let keys: Vec<String> = chunk.iter().map(|n| format!("{name}:{n}")).collect();
                check
                    .get_mut()
                    .write_all(format!("get {}\r\n", keys.join(" ")).as_bytes())
                    .unwrap();
                let mut found = HashMap::new();
                loop {
                    let mut line = String::new();
                    check.read_line(&mut line).unwrap();
                    if line == "END\r\n" {
                        break;
                    }
                    let key = line.split_whitespace().nth(1).unwrap().to_string();
                    let mut value = String::new();
                    check.read_line(&mut value).unwrap();
                    found.insert(key, value.trim_end().to_string());
                }
                for n in chunk {
                    if found.get(&format!("{name}:{n}")) != Some(&n.to_string()) {
                        t.lost += 1;
                        if t.notes.len() < 5 {
                            t.notes
                                .push(format!("{name}:{n} acknowledged, then missing"));
                        }
                    }
                }
            }
            total.add(t);
        }
        total
    }
}

/// The daemon's children that are zombies.
fn zombies(d: &Daemon) -> Vec<u32> {
    children(d.pid())
        .into_iter()
        .filter(|&p| common::proc_stat(p).is_some_and(|s| s.state == 'Z'))
        .collect()
}

/// SIGUSR2 and wait for the `n`+1-th "upgrade complete"; check the process
/// is the same, runs the installed file, and every worker is new.
fn upgrade(d: &Daemon, install: &Install, n: usize) {
    let before = d.workers();
    let installed = fs::metadata(install.binary()).unwrap();
    assert_ne!(d.exe(), (installed.dev(), installed.ino()), "a new file");
    signal(d.pid(), SIGUSR2).unwrap();
    d.wait_log("upgrade complete", n, Duration::from_secs(30));
    assert_eq!(
        d.exe(),
        (installed.dev(), installed.ino()),
        "the process runs the installed binary now"
    );
    let after = d.workers();
    assert_eq!(after.len(), before.len(), "{before:?} -> {after:?}");
    assert!(
        before.iter().all(|p| !is_alive(*p) && !after.contains(p)),
        "every worker replaced: {before:?} -> {after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !zombies(d).is_empty() {
        assert!(Instant::now() < deadline, "zombies: {:?}", zombies(d));
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr2_under_load_refuses_no_connection_and_loses_no_write() {
    let _turn = one_at_a_time();
    let install = Install::new("load");
    let memory_file = format!("/dev/shm/upgradetest-{}", std::process::id());
    let _ = fs::remove_file(&memory_file);
    let d = Daemon::start(
        &install.binary(),
        &["-t", "3", "-m", "256", "-e", &memory_file],
    );
    let pid = d.pid();
    let load = Load::start(d.port, 6, 3);
    thread::sleep(Duration::from_millis(500));
    for round in 0..2 {
        install.replace_with(Path::new(SHMCACHED));
        upgrade(&d, &install, round);
        assert_eq!(d.pid(), pid);
        thread::sleep(Duration::from_millis(500));
    }
    let t = load.finish(d.port);
    println!(
        "upgrade under load (2 upgrades, 9 clients): {} requests, {} refused, {} unanswered, {} lost",
        t.requests, t.refused, t.unanswered, t.lost
    );
    assert!(t.requests > 500, "the load ran: {t:?}");
    assert_eq!(
        (t.refused, t.unanswered, t.lost),
        (0, 0, 0),
        "{:?}\n{}",
        t.notes,
        d.stderr()
    );
    drop(d);
    let _ = fs::remove_file(&memory_file);
}

#[test]
fn a_binary_that_cannot_take_over_leaves_the_old_one_serving() {
    let _turn = one_at_a_time();
    let install = Install::new("broken");
    let d = Daemon::start(&install.binary(), &["-t", "2", "-m", "16"]);
    let mut c = connect(d.port).unwrap();
    assert_eq!(
        ask(&mut c, b"set kept 7 0 2\r\nok\r\n").as_deref(),
        Some("STORED\r\n")
    );
    let workers = d.workers();
    let exe = d.exe();

    install.replace_with_broken();
    signal(d.pid(), SIGUSR2).unwrap();
    d.wait_log("upgrade refused", 0, Duration::from_secs(15));
    assert!(
        d.stderr().contains("broken build"),
        "the reason is the new binary's: {}",
        d.stderr()
    );
    assert_eq!(d.exe(), exe, "still the old binary");
    assert_eq!(d.workers(), workers, "the same workers");
    assert_eq!(
        ask(&mut c, b"get kept\r\n").as_deref(),
        Some("VALUE kept 7 2\r\n")
    );

    // Then a good one: the cache (a private segment here) is kept.
    install.replace_with(Path::new(SHMCACHED));
    upgrade(&d, &install, 0);
    let mut c = connect(d.port).unwrap();
    assert_eq!(
        ask(&mut c, b"get kept\r\n").as_deref(),
        Some("VALUE kept 7 2\r\n")
    );
    let segment = format!("/dev/shm/shmcached-{}-", d.pid());
    let segments = || {
        fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .filter(|e| e.path().to_string_lossy().starts_with(&segment))
            .count()
    };
    assert_eq!(segments(), 1);
    let mut d = d;
    signal(d.pid(), SIGTERM).unwrap();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{}", d.stderr());
    assert_eq!(
        segments(),
        0,
        "the upgraded image removes the segment at exit"
    );
}

/// The notifications a fake systemd received.
fn notifications(socket: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        got.extend(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string),
        );
    }
    got
}

fn has_variable(pid: u32, name: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .any(|entry| entry.starts_with(format!("{name}=").as_bytes()))
}

#[test]
fn under_systemd_the_main_pid_stays_and_ready_follows_the_upgrade() {
    let _turn = one_at_a_time();
    let install = Install::new("notify");
    let path = install.dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let d = Daemon::start_with(
        &install.binary(),
        &["-t", "2", "-m", "16"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !seen.iter().any(|l| l == "READY=1") {
        assert!(Instant::now() < deadline, "no READY=1: {seen:?}");
        seen.extend(notifications(&socket));
        thread::sleep(Duration::from_millis(20));
    }
    install.replace_with(Path::new(SHMCACHED));
    upgrade(&d, &install, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = Vec::new();
    while !after.iter().any(|l| l == "READY=1") {
        assert!(
            Instant::now() < deadline,
            "no READY=1 after the upgrade: {after:?}"
        );
        after.extend(notifications(&socket));
        thread::sleep(Duration::from_millis(20));
    }
    let reloading = after.iter().position(|l| l == "RELOADING=1");
    let ready = after.iter().position(|l| l == "READY=1");
    assert!(reloading.is_some() && reloading < ready, "{after:?}");
    // The new image took NOTIFY_SOCKET again, and keeps it from its workers.
    for w in d.workers() {
        assert!(
            !has_variable(w, "NOTIFY_SOCKET"),
            "worker {w} has NOTIFY_SOCKET"
        );
    }
    assert!(!has_variable(d.pid(), "NOTIFY_SOCKET"));
}

#[test]
fn a_settings_change_that_needs_a_restart_refuses_the_upgrade() {
    let _turn = one_at_a_time();
    let install = Install::new("settings");
    let config = install.dir.join("shmcached.toml");
    fs::write(&config, "memory_limit_mb = 16\nworkers = 2\n").unwrap();
    let d = Daemon::start(&install.binary(), &["--config", config.to_str().unwrap()]);
    let workers = d.workers();
    fs::write(&config, "memory_limit_mb = 32\nworkers = 2\n").unwrap();
    install.replace_with(Path::new(SHMCACHED));
    signal(d.pid(), SIGUSR2).unwrap();
    d.wait_log("upgrade refused", 0, Duration::from_secs(15));
    assert!(
        d.stderr().contains("memory_limit changed"),
        "the reason names the setting: {}",
        d.stderr()
    );
    assert_eq!(d.workers(), workers, "the same workers serve");
    // Put the file back: the upgrade goes through.
    fs::write(&config, "memory_limit_mb = 16\nworkers = 2\n").unwrap();
    upgrade(&d, &install, 0);
}

/// With a unix socket (`-s`) the socket is handed over too: a connection
/// opened before the upgrade is served after it, new ones are accepted, the
/// socket file stays, and the upgraded image removes it at exit.
#[test]
fn with_a_unix_socket_the_upgrade_hands_the_socket_over() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    fn ask_unix(c: &mut UnixStream, request: &[u8], end: &[u8]) -> Vec<u8> {
        c.write_all(request).unwrap();
        let mut reply = Vec::new();
        while !reply.ends_with(end) {
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        reply
    }
    let _turn = one_at_a_time();
    let install = Install::new("unix");
    let socket = install.binary().with_file_name("upgrade.sock");
    let mut d = Daemon::start(
        &install.binary(),
        &["-t", "2", "-s", socket.to_str().unwrap()],
    );
    let mut before = UnixStream::connect(&socket).unwrap();
    assert_eq!(
        ask_unix(&mut before, b"set u 0 0 1\r\nx\r\n", b"\r\n"),
        b"STORED\r\n"
    );
    let old_workers = d.workers();
    install.replace_with(Path::new(SHMCACHED));
    upgrade(&d, &install, 0);
    assert!(
        d.workers().iter().all(|w| !old_workers.contains(w)),
        "every worker replaced"
    );
    assert_eq!(
        ask_unix(&mut before, b"get u\r\n", b"END\r\n"),
        b"VALUE u 0 1\r\nx\r\nEND\r\n",
        "the connection made before the upgrade"
    );
    let mut after = UnixStream::connect(&socket).unwrap();
    assert_eq!(
        ask_unix(&mut after, b"get u\r\n", b"END\r\n"),
        b"VALUE u 0 1\r\nx\r\nEND\r\n"
    );
    drop((before, after));
    signal(d.pid(), SIGTERM).unwrap();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{}", d.stderr());
    assert!(
        !socket.exists(),
        "the upgraded image removes the socket file"
    );
}
