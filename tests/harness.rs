//! Checks of the test harness itself (tests/common), run against memcached so
//! that they hold whatever state shmcached is in.

mod common;

use common::{Conn, Ending, SIGKILL, Server, children, is_alive, proc_stat, signal};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stopped_server_is_reaped() {
    let mut server = Server::memcached(&[]);
    let pid = server.pid();
    assert!(is_alive(pid));
    assert!(server.stop().is_some(), "no exit status");
    assert!(server.stop().is_none(), "stop is idempotent");
    assert!(
        proc_stat(pid).is_none(),
        "pid {pid} still in /proc (zombie?)"
    );
    drop(server);
}

#[test]
fn a_dropped_server_is_gone() {
    let server = Server::memcached(&[]);
    let (pid, port) = (server.pid(), server.port());
    drop(server);
    assert!(proc_stat(pid).is_none(), "pid {pid} still in /proc");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
#[should_panic(expected = "exited")]
fn a_server_that_cannot_start_is_reported_with_its_output() {
    Server::memcached(&["-t", "0"]);
}

#[test]
fn children_lists_forked_processes() {
    let mut shell = Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30 & wait"])
        .spawn()
        .expect("spawn sh");
    let pid = shell.id();
    let mut kids = Vec::new();
    wait_for("two children", || {
        kids = children(pid);
        kids.len() == 2
    });
    for &kid in &kids {
        assert_eq!(proc_stat(kid).map(|s| s.ppid), Some(pid));
        signal(kid, SIGKILL).expect("kill child");
    }
    shell.wait().expect("reap sh");
    assert!(children(pid).is_empty());
}

#[test]
fn exchange_reads_up_to_the_sentinel() {
    let server = Server::memcached(&[]);
    let mut conn: Conn = server.connect();
    assert_eq!(conn.roundtrip(b"set h 0 0 7\r\nversion\r\n"), b"STORED\r\n");
    // A `version` of its own comes back; only the sentinel's is cut off.
    assert_eq!(
        conn.roundtrip(b"version\r\nget h\r\n"),
        b"VERSION 1.6.18\r\nVALUE h 0 7\r\nversion\r\nEND\r\n"
    );
    let reply = conn.exchange(b"get h\r\nquit\r\n");
    assert_eq!(
        (reply.bytes.as_slice(), reply.ending),
        (&b"VALUE h 0 7\r\nversion\r\nEND\r\n"[..], Ending::Closed)
    );
}
