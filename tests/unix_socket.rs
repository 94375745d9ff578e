//! `-s <path>` / `-a <mode>`: the daemon on a unix socket, as real processes
//! over real sockets. What memcached defines (the replies, `stats settings`,
//! `stats conns`) is checked against memcached started the same way; where
//! shmcached chooses otherwise (a busy path is refused, not taken over; the
//! file is removed at shutdown) the test says so.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{MEMCACHED, SHMCACHED, SIGHUP, SIGKILL, SIGTERM, descendants, proc_stat, signal};

/// A fresh directory for one test's sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shmcached-unix-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A daemon started with `-s <path>`: killed (with what it forked) on drop.
struct Daemon {
    child: Option<Child>,
    path: PathBuf,
    log: PathBuf,
    name: &'static str,
}

impl Daemon {
    /// `program -u root -s <path> <args>`, once the socket accepts.
    fn start(program: &str, path: &Path, args: &[&str]) -> Daemon {
        let log = path.with_extension(format!("{}.log", program.rsplit('/').next().unwrap()));
        let mut cmd = Command::new(program);
        cmd.args(["-u", "root", "-s"]).arg(path).args(args);
        if program == MEMCACHED {
            cmd.args(["-U", "0"]);
        }
        let out = File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            path: path.to_path_buf(),
            log,
            name: if program == MEMCACHED {
                "memcached"
            } else {
                "shmcached"
            },
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", d.name, d.output());
            }
            if UnixStream::connect(path).is_ok() {
                return d;
            }
            assert!(Instant::now() < deadline, "{} never accepted", d.name);
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn shmcached(path: &Path, args: &[&str]) -> Daemon {
        Daemon::start(SHMCACHED, path, args)
    }

    fn memcached(path: &Path, args: &[&str]) -> Daemon {
        Daemon::start(MEMCACHED, path, args)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> Client {
        Client::connect(&self.path)
    }

    fn signal(&self, sig: i32) {
        signal(self.pid(), sig).unwrap();
    }

    /// Wait for the process to end by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let forked: Vec<_> = descendants(child.id())
                .into_iter()
                .filter_map(proc_stat)
                .collect();
            let _ = child.kill();
            let _ = child.wait();
            for p in forked {
                if proc_stat(p.pid).is_some_and(|s| s.start_time == p.start_time) {
                    let _ = signal(p.pid, SIGKILL);
                }
            }
        }
        if thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output());
        }
    }
}

/// A raw client over a unix socket.
struct Client {
    stream: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        Client { stream }
    }

    /// Send `request` then `version`, and read up to the `VERSION` line the
    /// latter answers with; the reply without that line.
    fn roundtrip(&mut self, request: &[u8]) -> Vec<u8> {
        let mut wire = request.to_vec();
        wire.extend_from_slice(b"version\r\n");
        self.stream.write_all(&wire).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            if got.ends_with(b"\r\n") {
                let body = &got[..got.len() - 2];
                let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if got[start..].starts_with(b"VERSION ") {
                    got.truncate(start);
                    return got;
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed after {:?}", String::from_utf8_lossy(&got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&got)),
            }
        }
    }

    fn text(&mut self, request: &str) -> String {
        String::from_utf8(self.roundtrip(request.as_bytes())).unwrap()
    }

    /// True once the server has closed this connection (within 3 s).
    fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.stream.read(&mut buf), Ok(0))
            || matches!(self.stream.read(&mut buf), Err(e) if e.kind() == ErrorKind::ConnectionReset)
    }
}

fn stats(client: &mut Client, group: &str) -> Vec<(String, String)> {
    client
        .text(&format!("stats {group}\r\n"))
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("STAT ")?.splitn(2, ' ');
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

fn stat(client: &mut Client, group: &str, name: &str) -> String {
    stats(client, group)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in stats {group}"))
        .1
}

/// Socket inodes of every TCP socket on the machine (/proc/net/tcp, tcp6).
fn tcp_socket_inodes() -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            if let Some(inode) = line.split_whitespace().nth(9).and_then(|i| i.parse().ok()) {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// Socket inodes held by `pid` and every process it forked.
fn socket_inodes_of_tree(pid: u32) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for p in std::iter::once(pid).chain(descendants(pid)) {
        inodes.extend(common::socket_inodes(p));
    }
    inodes
}

/// What `shmcached` prints and exits with when it does not start.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(SHMCACHED)
        .args(["-u", "root"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().expect("exits, not killed"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serves_many_connections_over_the_socket_with_two_workers_and_no_tcp() {
    let dir = TempDir::new("serve");
    let path = dir.join("s.sock");
    let server = Daemon::shmcached(&path, &["-t", "2"]);
    let mut clients: Vec<Client> = (0..12).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let value = format!("value-{i}");
        let req = format!("set k{i} {i} 0 {}\r\n{value}\r\n", value.len());
        assert_eq!(c.text(&req), "STORED\r\n");
    }
    // Every connection reads what every other one wrote.
    for (i, c) in clients.iter_mut().enumerate() {
        let j = (i + 5) % 12;
        let value = format!("value-{j}");
        assert_eq!(
            c.text(&format!("get k{j}\r\n")),
            format!("VALUE k{j} {j} {}\r\n{value}\r\nEND\r\n", value.len())
        );
    }
    let mut c = server.connect();
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let reply = c.text(&format!("get {}\r\n", keys.join(" ")));
    assert_eq!(reply.matches("VALUE ").count(), 12, "{reply}");
    // 13 open (the start-up probe's connection is closed by now).
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat(&mut c, "", "curr_connections") != "13" {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
    // Both workers are up and serve the socket; neither listens on TCP.
    assert_eq!(common::children(server.pid()).len(), 2);
    let tcp = tcp_socket_inodes();
    let ours = socket_inodes_of_tree(server.pid());
    assert!(!ours.is_empty());
    assert!(
        ours.is_disjoint(&tcp),
        "TCP sockets held: {:?}",
        ours.intersection(&tcp).collect::<Vec<_>>()
    );
    // A worker killed mid-service: the socket stays served by the other and
    // by its replacement.
    let victim = common::children(server.pid())[0];
    signal(victim, SIGKILL).unwrap();
    // (A connection made before it is gone could be accepted by it, and cut.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::is_alive(victim) {
        assert!(Instant::now() < deadline, "SIGKILL did not end {victim}");
        thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..20 {
        let mut c = server.connect();
        assert_eq!(c.text("get k3\r\n"), "VALUE k3 3 7\r\nvalue-3\r\nEND\r\n");
    }
}

#[test]
fn permissions_come_from_dash_a() {
    let dir = TempDir::new("mode");
    for (args, want) in [
        (&[][..], 0o700),
        (&["-a", "0770"][..], 0o770),
        (&["-a", "666"][..], 0o666),
        (&["-a", "0"][..], 0),
    ] {
        let path = dir.join("m.sock");
        let mut server = Daemon::shmcached(&path, args);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, want, "{args:?}");
        let mut c = server.connect();
        assert_eq!(
            stat(&mut c, "settings", "umask"),
            format!("{want:o}"),
            "{args:?}"
        );
        server.signal(SIGTERM);
        assert!(server.wait_exit(Duration::from_secs(10)).unwrap().success());
    }
}

#[test]
fn the_socket_file_is_removed_after_sigterm_and_left_after_sigkill() {
    let dir = TempDir::new("cleanup");
    let path = dir.join("c.sock");
    let mut server = Daemon::shmcached(&path, &["-t", "2"]);
    let mut c = server.connect();
    assert_eq!(c.text("set a 0 0 1\r\nx\r\n"), "STORED\r\n");
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).expect("drains");
    assert!(status.success(), "{status}");
    assert!(!path.exists(), "the socket file outlived a clean shutdown");
    assert!(c.closed_by_server());

    // SIGKILL leaves it behind (nothing can run then): a stale socket, which
    // the next start replaces.
    let server = Daemon::shmcached(&path, &[]);
    let pid = server.pid();
    let workers = common::children(pid);
    signal(pid, SIGKILL).unwrap();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|&w| common::is_alive(w)) {
        assert!(
            Instant::now() < deadline,
            "workers outlived their supervisor"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    assert_eq!(
        UnixStream::connect(&path).map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionRefused)
    );
    let server = Daemon::shmcached(&path, &[]);
    assert_eq!(server.connect().text("get a\r\n"), "END\r\n");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Daemon::shmcached(&path, &["-a", "0750"]);
    assert_eq!(
        fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777,
        0o750
    );
    assert_eq!(server.connect().text("get x\r\n"), "END\r\n");
}

#[test]
fn a_path_in_use_is_refused_and_its_owner_keeps_it() {
    let dir = TempDir::new("busy");
    let path = dir.join("busy.sock");
    // Another program's socket.
    let other = UnixListener::bind(&path).unwrap();
    let (code, err) = refused(&["-s", path.to_str().unwrap()]);
    assert_eq!(code, 71, "{err}");
    assert_eq!(
        err,
        format!(
            "shmcached: failed to listen on unix socket {}: another process listens on it \
             (stop it, or choose another path)\n",
            path.display()
        )
    );
    // Still the other program's: a client reaches it.
    let _client = UnixStream::connect(&path).unwrap();
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_ok());
    drop(other);
    fs::remove_file(&path).unwrap();

    // A running shmcached's socket: a second one is refused, the first serves on.
    let first = Daemon::shmcached(&path, &[]);
    let (code, err) = refused(&["-s", path.to_str().unwrap(), "-t", "1"]);
    assert_eq!(code, 71, "{err}");
    assert!(err.contains("another process listens on it"), "{err}");
    assert_eq!(first.connect().text("get x\r\n"), "END\r\n");
}

#[test]
fn a_path_that_is_not_a_socket_is_refused_and_left_alone() {
    let dir = TempDir::new("file");
    let file = dir.join("data.txt");
    fs::write(&file, "precious\n").unwrap();
    let (code, err) = refused(&["-s", file.to_str().unwrap()]);
    assert_eq!(code, 71);
    assert_eq!(
        err,
        format!(
            "shmcached: failed to listen on unix socket {}: the path exists and is not a socket\n",
            file.display()
        )
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");
    let (code, err) = refused(&["-s", dir.0.to_str().unwrap()]);
    assert_eq!(code, 71);
    assert!(
        err.ends_with(": the path exists and is not a socket\n"),
        "{err}"
    );
    let missing = dir.join("no/such/dir.sock");
    let (code, err) = refused(&["-s", missing.to_str().unwrap()]);
    assert_eq!(code, 71);
    assert_eq!(
        err,
        format!(
            "shmcached: failed to listen on unix socket {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    // memcached cuts a long path short and listens elsewhere: refused here.
    let long = dir.join(&"x".repeat(120));
    let (code, err) = refused(&["-s", long.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.ends_with(&format!(
            "too long for a unix socket ({} bytes, at most 107)\n",
            long.as_os_str().len()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!long.exists());
}

#[test]
fn port_zero_is_accepted_with_a_unix_socket_only() {
    let dir = TempDir::new("port0");
    let path = dir.join("p.sock");
    let server = Daemon::shmcached(&path, &["-p", "0"]);
    assert_eq!(server.connect().text("get x\r\n"), "END\r\n");
    let (code, err) = refused(&["-p", "0"]);
    assert_eq!(code, 64);
    assert!(
        err.starts_with("shmcached: -p 0: port 0 turns TCP off"),
        "{err}"
    );
}

/// Requests whose replies memcached defines, sent to both over unix sockets.
const DIFFERENTIAL: &[&str] = &[
    "set a 5 0 3\r\nabc\r\n",
    "get a\r\n",
    "add a 0 0 1\r\nx\r\n",
    "replace nope 0 0 1\r\nx\r\n",
    "append a 0 0 2\r\nde\r\n",
    "prepend a 0 0 2\r\nzz\r\n",
    "get a nope a\r\n",
    "set n 0 0 2\r\n10\r\n",
    "incr n 5\r\n",
    "decr n 100\r\n",
    "incr a 1\r\n",
    "touch n 100\r\n",
    "touch nope 100\r\n",
    "delete a\r\n",
    "delete a\r\n",
    "set q 0 0 1 noreply\r\nq\r\n",
    "get q\r\n",
    "set big 0 0 2\r\nabc\r\n",
    "bogus command\r\n",
    "get aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    "flush_all\r\n",
    "get n\r\n",
];

#[test]
fn replies_over_unix_sockets_match_memcached() {
    let dir = TempDir::new("diff");
    let ours = Daemon::shmcached(&dir.join("ours.sock"), &["-t", "2"]);
    let theirs = Daemon::memcached(&dir.join("theirs.sock"), &["-t", "2"]);
    let (mut o, mut t) = (ours.connect(), theirs.connect());
    for req in DIFFERENTIAL {
        let (a, b) = (o.text(req), t.text(req));
        assert_eq!(a, b, "request {req:?}");
    }
    // gets/cas: the cas values differ between servers, not their use.
    for c in [&mut o, &mut t] {
        assert_eq!(c.text("set c 0 0 1\r\n1\r\n"), "STORED\r\n");
        let reply = c.text("gets c\r\n");
        let cas: u64 = reply.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert_eq!(
            c.text(&format!("cas c 0 0 1 {}\r\n2\r\n", cas + 1000)),
            "EXISTS\r\n"
        );
        assert_eq!(c.text(&format!("cas c 0 0 1 {cas}\r\n2\r\n")), "STORED\r\n");
        assert_eq!(c.text("get c\r\n"), "VALUE c 0 1\r\n2\r\nEND\r\n");
    }
}

/// `stats conns` lines with the socket path as `<path>` and ids and times
/// dropped: (addr, listen_addr, state) per connection, in id order.
fn conns(client: &mut Client, path: &Path) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut last_id = String::new();
    let path = path.display().to_string();
    for (name, value) in stats(client, "conns") {
        let (id, field) = name.split_once(':').unwrap();
        if id != last_id {
            rows.push(Default::default());
            last_id = id.to_string();
        }
        let value = value.replace(&path, "<path>");
        let row = rows.last_mut().unwrap();
        match field {
            "addr" => row.0 = value,
            "listen_addr" => row.1 = value,
            "state" => row.2 = value,
            "secs_since_last_cmd" => {}
            other => panic!("unexpected field {other}"),
        }
    }
    rows
}

/// memcached prints a listener's path from an address buffer of 28 bytes
/// (a sockaddr_in6): only the first 26 bytes of the path are right, then
/// garbage. shmcached prints the whole path; the comparison uses short paths.
#[test]
fn stats_settings_and_conns_match_memcached_for_a_unix_socket() {
    let dir = TempDir(PathBuf::from(format!("/tmp/shc{}", std::process::id())));
    fs::create_dir_all(&dir.0).unwrap();
    let (our_path, their_path) = (dir.join("o.sock"), dir.join("t.sock"));
    assert!(our_path.as_os_str().len() <= 26);
    let args = ["-a", "0750", "-t", "2"];
    let ours = Daemon::shmcached(&our_path, &args);
    let theirs = Daemon::memcached(&their_path, &args);
    for (server, path) in [(&ours, &our_path), (&theirs, &their_path)] {
        let mut c = server.connect();
        let settings = stats(&mut c, "settings");
        let get = |k: &str| {
            settings
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.replace(&path.display().to_string(), "<path>"))
        };
        let name = server.name;
        assert_eq!(get("domain_socket").as_deref(), Some("<path>"), "{name}");
        assert_eq!(get("umask").as_deref(), Some("750"), "{name}");
        assert_eq!(get("tcpport").as_deref(), Some("11211"), "{name}");
        assert_eq!(get("udpport").as_deref(), Some("0"), "{name}");
        assert_eq!(get("inter").as_deref(), Some("NULL"), "{name}");
        // One listener, this connection running the command (once the
        // start-up probe's connection is closed on the server's side too).
        let want: [(String, String, String); 2] = [
            ("unix:<path>".into(), String::new(), "conn_listening".into()),
            (
                "?:<AF 0>".into(),
                "unix:<path>".into(),
                "conn_parse_cmd".into(),
            ),
        ];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = conns(&mut c, path);
            if rows == want {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {rows:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn shmcached_check_over_the_socket() {
    let dir = TempDir::new("check");
    let path = dir.join("k.sock");
    let server = Daemon::shmcached(&path, &["-t", "2"]);
    assert_eq!(server.connect().text("set a 0 0 1\r\nx\r\n"), "STORED\r\n");
    let out = Command::new(SHMCACHED)
        .args(["check", "--socket"])
        .arg(&path)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{line}");
    let prefix = format!(
        "ok: shmcached at unix:{}, version 1.6.18, workers 2/2 alive, 1 items, uptime ",
        path.display()
    );
    assert!(line.starts_with(&prefix), "{line}");
    let memcached = Daemon::memcached(&dir.join("m.sock"), &[]);
    let out = Command::new(SHMCACHED)
        .args(["check", "--socket"])
        .arg(&memcached.path)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{line}");
    assert!(line.starts_with("ok: memcached at unix:"), "{line}");
}

#[test]
fn connection_limit_idle_timeout_and_auth_apply_to_unix_connections() {
    let dir = TempDir::new("limits");
    let auth = dir.join("auth");
    fs::write(&auth, "user:pass\n").unwrap();

    // -c: over the limit, memcached's line then close.
    let path = dir.join("c.sock");
    let server = Daemon::shmcached(&path, &["-c", "3", "-t", "1"]);
    let mut first = server.connect();
    // The start-up probe's connection is gone once only this one is counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat(&mut first, "", "curr_connections") != "1" {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
    let mut held: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    for c in &mut held {
        assert_eq!(c.text("get x\r\n"), "END\r\n");
    }
    let mut extra = UnixStream::connect(&path).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut got = String::new();
    extra.read_to_string(&mut got).unwrap();
    assert_eq!(got, "ERROR Too many open connections\r\n");
    drop(server);

    // idle_timeout: an idle unix connection is closed, and counted.
    let path = dir.join("i.sock");
    let server = Daemon::shmcached(&path, &["-o", "idle_timeout=1"]);
    let mut idle = server.connect();
    assert_eq!(idle.text("get x\r\n"), "END\r\n");
    let start = Instant::now();
    assert!(idle.closed_by_server());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(stat(&mut server.connect(), "", "idle_kicks"), "1");
    drop(server);

    // -Y: nothing before credentials.
    let path = dir.join("y.sock");
    let server = Daemon::shmcached(&path, &["-Y", auth.to_str().unwrap()]);
    let mut c = server.connect();
    c.stream.write_all(b"get x\r\n").unwrap();
    let mut got = [0u8; 30];
    c.stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"CLIENT_ERROR unauthenticated\r\n");
    let mut c = server.connect();
    assert_eq!(
        c.text("set u 0 0 9\r\nuser pass\r\nget x\r\n"),
        "STORED\r\nEND\r\n"
    );
}

/// A reload that retires a worker passes its unix connections to another
/// one over SCM_RIGHTS: none of them is closed, all are served after.
#[test]
fn sighup_resize_passes_unix_connections_on() {
    let dir = TempDir::new("resize");
    let path = dir.join("r.sock");
    let config = dir.join("shmcached.toml");
    fs::write(&config, "workers = 3\nmax_workers = 3\n").unwrap();
    let server = Daemon::shmcached(&path, &["--config", config.to_str().unwrap()]);
    let mut clients: Vec<Client> = (0..30).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.text(&format!("set k{i} 0 0 1\r\n{}\r\n", i % 10)),
            "STORED\r\n"
        );
    }
    // The socket accepts (and queues) before the workers are forked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::children(server.pid()).len() != 3 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
    // Which slot each connection is on: its id is slot * 1000000 + fd. The
    // workers race for each connection: open more until the retiring slots
    // won some.
    let on_retiring = |server: &Daemon| {
        let mut c = server.connect();
        stats(&mut c, "conns")
            .iter()
            // Not the listener, nor this asking connection.
            .filter(|(n, v)| {
                n.ends_with(":state") && v != "conn_listening" && v != "conn_parse_cmd"
            })
            .filter_map(|(n, _)| n.split(':').next()?.parse::<u64>().ok())
            .filter(|&id| id >= 1_000_000)
            .count()
    };
    while on_retiring(&server) == 0 {
        assert!(clients.len() < 300, "every connection went to slot 0");
        let i = clients.len();
        let mut c = server.connect();
        assert_eq!(
            c.text(&format!("set k{i} 0 0 1\r\n{}\r\n", i % 10)),
            "STORED\r\n"
        );
        clients.push(c);
    }
    fs::write(&config, "workers = 1\nmax_workers = 3\n").unwrap();
    server.signal(SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    while common::children(server.pid()).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "still {:?}",
            common::children(server.pid())
        );
        thread::sleep(Duration::from_millis(20));
    }
    let worker = common::children(server.pid())[0];
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.text(&format!("get k{i}\r\n")),
            format!("VALUE k{i} 0 1\r\n{}\r\nEND\r\n", i % 10)
        );
    }
    let mut c = server.connect();
    let open = clients.len() + 1;
    // All are in the one worker's table now, each once, with the listener
    // once (the probing connections above may take a moment to be closed).
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = conns(&mut c, &path);
        let count = stat(&mut c, "", "curr_connections");
        if rows.len() == open + 1 && count == open.to_string() {
            break rows;
        }
        assert!(Instant::now() < deadline, "{count} open: {rows:?}");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        rows.iter().filter(|r| r.2 == "conn_listening").count(),
        1,
        "{rows:?}"
    );
    assert_eq!(common::children(server.pid()), [worker]);
}
