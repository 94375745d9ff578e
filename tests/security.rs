//! Security defaults, checked from outside: the segment's owner and mode,
//! the privilege drop, the loopback-only default bind, no UDP.

mod common;

use common::{Server, children, free_port};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `/dev/shm/shmcached-<pid>-*` of the instance whose supervisor is `pid`.
fn segment_of(pid: u32) -> Option<fs::Metadata> {
    let prefix = format!("shmcached-{pid}-");
    fs::read_dir("/dev/shm")
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .and_then(|e| e.metadata().ok())
}

/// The effective uid of a process (second field of `Uid:` in its status).
fn euid(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn uid_of(user: &str) -> u32 {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .unwrap_or_else(|| panic!("no user {user}"));
    line.split(':').nth(2).unwrap().parse().unwrap()
}

/// Local addresses of sockets on `port` in a /proc/net table (hex ip:port).
fn bound_addresses(table: &str, port: u16) -> Vec<String> {
    let text = fs::read_to_string(table).unwrap_or_default();
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|local| local.ends_with(&want))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_segment_is_private_to_the_running_user() {
    let server = Server::shmcached(&["-t", "2"]);
    let meta = segment_of(server.pid()).expect("the instance's segment in /dev/shm");
    assert_eq!(meta.mode() & 0o777, 0o600, "segment mode");
    assert_eq!(meta.uid(), euid(server.pid()), "segment owner");
}

#[test]
fn as_root_it_drops_to_the_given_user_after_binding() {
    if euid(std::process::id()) != 0 {
        eprintln!("not root: the privilege drop cannot be tested here (CI runs as root)");
        return;
    }
    let nobody = uid_of("nobody");
    // The harness passes `-u root`; a later -u wins, as with memcached's getopt.
    let server = Server::shmcached(&["-t", "2", "-u", "nobody"]);
    // The port accepts (queues) before the workers are forked: wait for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut workers = children(server.pid());
    while workers.len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
        workers = children(server.pid());
    }
    assert_eq!(workers.len(), 2);
    for pid in std::iter::once(server.pid()).chain(workers) {
        assert_eq!(euid(pid), nobody, "process {pid} runs as nobody");
    }
    let meta = segment_of(server.pid()).expect("segment");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (nobody, 0o600));
    // It still serves, and it could bind before dropping privileges.
    let mut conn = server.connect();
    assert_eq!(conn.roundtrip(b"set k 0 0 1\r\nv\r\n"), b"STORED\r\n");
}

#[test]
fn the_default_config_listens_on_loopback_only_and_without_udp() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmcached"))
        .args(["--config", "config/shmcached.toml", "-p", &port.to_string()])
        .args(["-u", "root", "-t", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tcp = Vec::new();
    while Instant::now() < deadline {
        tcp = bound_addresses("/proc/net/tcp", port);
        if !tcp.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let tcp6 = bound_addresses("/proc/net/tcp6", port);
    let udp = bound_addresses("/proc/net/udp", port);
    let udp6 = bound_addresses("/proc/net/udp6", port);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert!(!tcp.is_empty(), "nothing listened on port {port}");
    assert!(
        tcp.iter().all(|a| a.starts_with("0100007F:")),
        "TCP sockets not on 127.0.0.1: {tcp:?}"
    );
    assert!(tcp6.is_empty(), "IPv6 sockets: {tcp6:?}");
    assert!(
        udp.is_empty() && udp6.is_empty(),
        "UDP sockets: {udp:?} {udp6:?}"
    );
}
