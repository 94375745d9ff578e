//! `-o idle_timeout=1`: idle connections are closed and counted in
//! `stats idle_kicks`; busy ones stay. The same checks run against memcached
//! 1.6.18, which agrees on what is idle:
//! - a connection that sends nothing, or only bytes that never complete a
//!   request line, is idle;
//! - one that sends a request every 300 ms is not;
//! - one whose data block is still arriving is not.
//!
//! They differ on when: memcached judges by a one-second clock and sweeps its
//! connections about once a second, so with `idle_timeout=1` it closes after 2
//! to 5 s (seen live); shmcached closes after 1 to 1.2 s.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, Ending, Kind, Server, escape};

/// Requests of the busy client, and bytes of the trickling one, this far apart.
const PACE: Duration = Duration::from_millis(300);

/// The latest a server may close an idle connection, after it went idle.
fn deadline(kind: Kind) -> Duration {
    match kind {
        Kind::Shmcached => Duration::from_secs(3),
        Kind::Memcached => Duration::from_secs(7),
    }
}

/// `STAT <name> <value>` of a `stats` reply.
fn stat(reply: &[u8], name: &str) -> Option<u64> {
    String::from_utf8_lossy(reply).lines().find_map(|line| {
        let rest = line.strip_prefix("STAT ")?.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The `STAT` names of a `stats` reply, in order.
fn stat_names(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .lines()
        .filter_map(|l| Some(l.strip_prefix("STAT ")?.split(' ').next()?.to_string()))
        .collect()
}

/// How long `conn` stays open (reading nothing) after `since`, up to `limit`;
/// `None` if it is still open then.
fn closed_after(conn: &mut Conn, since: Instant, limit: Duration) -> Option<Duration> {
    conn.set_timeout(limit);
    let reply = conn.read_to_eof();
    assert_eq!(
        escape(&reply.bytes),
        "",
        "a kicked connection gets no reply"
    );
    (reply.ending == Ending::Closed).then(|| since.elapsed())
}

/// Everything one server does under `-o idle_timeout=1`; panics on a failed
/// check, naming the server.
fn check(server: &Server) {
    let name = server.kind().name();
    let limit = deadline(server.kind());
    let started = Instant::now();

    // Sends nothing.
    let mut idle = server.connect();
    let idle = thread::spawn(move || closed_after(&mut idle, started, limit));
    // Sends a byte at a time, never finishing its line.
    let mut trickle = server.connect();
    let trickle = thread::spawn(move || {
        for &b in b"get slowly_but_never_finished" {
            if trickle.try_send(&[b]).is_err() {
                break;
            }
            trickle.set_timeout(PACE);
            let reply = trickle.read_to_eof();
            if reply.ending == Ending::Closed {
                return Some(started.elapsed());
            }
        }
        None
    });
    // Its data block is on the way.
    let mut uploading = server.connect();
    uploading.send(b"set idle_upload 0 0 10\r\nabc");
    // Sends a request every PACE.
    let mut busy = server.connect();
    let mut requests = 0;
    while !(idle.is_finished() && trickle.is_finished()) && started.elapsed() < limit + PACE {
        let reply = busy.roundtrip(b"version\r\n");
        assert_eq!(reply, b"VERSION 1.6.18\r\n", "{name}: the busy connection");
        requests += 1;
        thread::sleep(PACE);
    }
    let idle = idle.join().unwrap();
    let trickle = trickle.join().unwrap();
    let Some(idle) = idle else {
        panic!("{name}: the idle connection is still open after {limit:?}");
    };
    assert!(
        idle >= Duration::from_secs(1),
        "{name}: an idle connection closed after {idle:?}, before the timeout"
    );
    let Some(trickle) = trickle else {
        panic!("{name}: the trickling connection was never closed");
    };
    assert!(
        trickle >= Duration::from_secs(1) && trickle <= limit,
        "{name}: the trickling connection closed after {trickle:?}"
    );
    eprintln!("{name}: idle connection closed after {idle:?}, trickling one after {trickle:?}");
    // The upload was never idle: it completes.
    uploading.send(b"defghij\r\n");
    assert_eq!(
        escape(&uploading.read_exact_reply(8)),
        "STORED\\r\\n",
        "{name}: the connection whose data block was arriving"
    );
    assert!(requests >= 3, "{name}: the busy loop ran {requests} times");
    let stats = busy.roundtrip(b"stats\r\n");
    assert_eq!(
        stat(&stats, "idle_kicks"),
        Some(2),
        "{name}: idle_kicks after the idle and the trickling connections"
    );
    // Where memcached prints it: after the auth counters.
    let names = stat_names(&stats);
    let at = names.iter().position(|n| n == "idle_kicks").unwrap();
    assert_eq!(names[at - 1], "auth_errors", "{name}: stats order");
}

#[test]
fn idle_connections_are_closed_busy_ones_stay() {
    let args = ["-t", "2", "-o", "idle_timeout=1"];
    thread::scope(|s| {
        let theirs = s.spawn(|| check(&Server::memcached(&args)));
        let ours = s.spawn(|| check(&Server::target(&args)));
        let theirs = theirs.join();
        let ours = ours.join();
        if let Err(e) = ours {
            std::panic::resume_unwind(e);
        }
        theirs.expect("memcached no longer behaves as this test expects");
    });
}

/// Without `idle_timeout`, `stats` has no `idle_kicks` line, as in memcached.
#[test]
fn no_idle_kicks_without_the_timeout() {
    for kind in [Kind::Memcached, Kind::target()] {
        let server = Server::start(kind, &["-t", "1"]);
        let stats = server.connect().roundtrip(b"stats\r\n");
        assert_eq!(stat(&stats, "auth_cmds"), Some(0), "{}", kind.name());
        assert!(
            !stat_names(&stats).iter().any(|n| n == "idle_kicks"),
            "{}: idle_kicks without idle_timeout",
            kind.name()
        );
    }
}
