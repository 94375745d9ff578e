//! Hostile and broken clients: garbage, over-long lines, abandoned data
//! blocks, values over `-I`, invalid keys, too many connections, a client
//! that never reads, idle and half-closed sockets.
//!
//! Where the behaviour is memcached's, the same bytes go to memcached 1.6.18
//! and to shmcached and the outcomes (reply bytes, and whether the server
//! closed) must be equal; the expected bytes written here were checked
//! against memcached, and each test checks them against it again.
//! `SHMCACHED_TEST_SEED=<n>` replays the random garbage;
//! `SHMCACHED_HOSTILE_DUMP=1` prints memcached's side of every comparison.

mod common;

use common::{Conn, Ending, Kind, Server, XorShift, escape, test_seed};
use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// memcached and shmcached with the same arguments, started side by side.
fn pair(args: &[&str]) -> (Server, Server) {
    thread::scope(|s| {
        let reference = s.spawn(|| Server::start(Kind::Memcached, args));
        let target = s.spawn(|| Server::start(Kind::Shmcached, args));
        (
            reference.join().expect("start memcached"),
            target.join().expect("start shmcached"),
        )
    })
}

/// What one step of a case saw: the reply bytes (escaped) and how the read
/// ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    step: String,
    reply: String,
    ending: Ending,
}

impl Outcome {
    fn new(step: impl Into<String>, bytes: &[u8], ending: Ending) -> Outcome {
        Outcome {
            step: step.into(),
            reply: escape(bytes),
            ending,
        }
    }
}

/// shmcached's outcomes must be memcached's, step by step.
fn assert_same(test: &str, memcached: &[Outcome], shmcached: &[Outcome]) {
    if std::env::var_os("SHMCACHED_HOSTILE_DUMP").is_some() {
        for m in memcached {
            eprintln!("{test}: {}: {:?} {}", m.step, m.ending, m.reply);
        }
    }
    let mut report = String::new();
    for (i, m) in memcached.iter().enumerate() {
        match shmcached.get(i) {
            Some(s) if s == m => {}
            Some(s) => report.push_str(&format!(
                "\n  step {i}: {}\n    memcached: {:?} {}\n    shmcached: {:?} {}",
                m.step, m.ending, m.reply, s.ending, s.reply
            )),
            None => report.push_str(&format!(
                "\n  step {i}: {}: shmcached has no outcome",
                m.step
            )),
        }
    }
    assert!(
        report.is_empty() && memcached.len() == shmcached.len(),
        "{test}: shmcached differs from memcached:{report}"
    );
}

/// `stats` on `conn`, as name -> value.
fn stats_on(conn: &mut Conn) -> HashMap<String, String> {
    let reply = conn.exchange(b"stats\r\n");
    assert_eq!(
        reply.ending,
        Ending::Sentinel,
        "stats: {}",
        escape(&reply.bytes)
    );
    String::from_utf8_lossy(&reply.bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn stat_u64(conn: &mut Conn, name: &str) -> u64 {
    let stats = stats_on(conn);
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("stats has no numeric `{name}`: {stats:?}"))
}

/// Poll `stat` on `conn` until it equals `want` (or `timeout`); its last value.
fn wait_for_stat(conn: &mut Conn, name: &str, want: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = stat_u64(conn, name);
        if v == want || Instant::now() >= deadline {
            return v;
        }
        thread::sleep(POLL);
    }
}

/// A fresh connection can store and read back a value.
fn assert_serves(server: &Server, key: &str) {
    let reply = server
        .connect()
        .exchange(format!("set {key} 0 0 2\r\nok\r\nget {key}\r\n").as_bytes());
    assert_eq!(
        (escape(&reply.bytes), reply.ending),
        (
            escape(format!("STORED\r\nVALUE {key} 0 2\r\nok\r\nEND\r\n").as_bytes()),
            Ending::Sentinel
        ),
        "{} should still serve a new connection",
        server.kind().name()
    );
}

/// Random bytes, never `\n` or NUL (memcached compares command names with
/// strcmp, so a NUL makes it read `mn\0x` as `mn`: a quirk of its own, kept
/// out of this test), and never 0x80 first (the binary protocol's magic).
fn garbage(rng: &mut XorShift, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let b = rng.below(256) as u8;
        if b == b'\n' || b == 0 || (out.is_empty() && b == 0x80) {
            continue;
        }
        out.push(b);
    }
    out
}

/// A second client that stores and reads back a value in a loop until told
/// to stop, counting its round trips in `rounds`; returns the first wrong
/// reply.
fn watch(server: &Server, stop: &AtomicBool, rounds: &AtomicUsize) -> Option<String> {
    let mut conn = server.connect();
    while !stop.load(Ordering::Relaxed) {
        let n = rounds.load(Ordering::Relaxed);
        let value = format!("watched-{n}");
        let request = format!("set watch 0 0 {}\r\n{value}\r\nget watch\r\n", value.len());
        let expected = format!(
            "STORED\r\nVALUE watch 0 {}\r\n{value}\r\nEND\r\n",
            value.len()
        );
        let reply = conn.exchange(request.as_bytes());
        if reply.bytes != expected.as_bytes() || reply.ending != Ending::Sentinel {
            return Some(format!(
                "round {n}: expected {}, got {} ({:?})",
                escape(expected.as_bytes()),
                escape(&reply.bytes),
                reply.ending
            ));
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    None
}

/// Wait until the watcher has made two more round trips (one fully inside
/// this wait); false if it did not within 2 s.
fn watcher_progresses(rounds: &AtomicUsize) -> bool {
    let before = rounds.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(2);
    while rounds.load(Ordering::Relaxed) < before + 2 {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// VmRSS of `pid` in KiB (0 if it is gone).
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident memory of the daemon: its supervisor and every worker.
fn server_rss_mib(server: &Server) -> u64 {
    let mut total = rss_kib(server.pid());
    for p in common::descendants(server.pid()) {
        total += rss_kib(p);
    }
    total / 1024
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Random binary without a newline (a few KB) closes the connection with no
/// reply; random lines answer memcached's ERROR lines; meanwhile a second
/// client of the same worker (`-t 1`) is served correctly throughout.
#[test]
fn garbage_gets_memcacheds_answers_while_another_client_is_served() {
    let seed = test_seed();
    eprintln!("garbage: SHMCACHED_TEST_SEED={seed}");
    let (memcached, shmcached) = pair(&["-t", "1", "-m", "16"]);

    let run = |server: &Server| -> Vec<Outcome> {
        let mut rng = XorShift::new(seed);
        let stop = AtomicBool::new(false);
        let rounds = AtomicUsize::new(0);
        let mut outcomes = Vec::new();
        let mut stalls = Vec::new();
        let failure = thread::scope(|s| {
            let watcher = s.spawn(|| watch(server, &stop, &rounds));
            for size in [3000, 4096, 8000] {
                let blob = garbage(&mut rng, size);
                let step = format!("{size} random bytes without a newline");
                let mut conn = server.connect();
                let _ = conn.try_send(&blob);
                if !watcher_progresses(&rounds) {
                    stalls.push(step.clone());
                }
                let reply = conn.read_to_eof();
                outcomes.push(Outcome::new(step, &reply.bytes, reply.ending));
            }
            for batch in 0..5 {
                let mut lines = Vec::new();
                let count = 50 + rng.below(100) as usize;
                for _ in 0..count {
                    let len = rng.below(300) as usize;
                    lines.extend_from_slice(&garbage(&mut rng, len));
                    lines.extend_from_slice(if rng.chance(80) { b"\r\n" } else { b"\n" });
                }
                let step = format!(
                    "batch {batch}: {count} random lines ({} bytes)",
                    lines.len()
                );
                let mut conn = server.connect();
                conn.send(&lines);
                if !watcher_progresses(&rounds) {
                    stalls.push(step.clone());
                }
                let reply = conn.exchange(b"");
                outcomes.push(Outcome::new(step, &reply.bytes, reply.ending));
                // The connection is still usable after its garbage.
                let reply = conn.exchange(b"get nothing_here\r\n");
                outcomes.push(Outcome::new(
                    format!("batch {batch}: a get after the garbage"),
                    &reply.bytes,
                    reply.ending,
                ));
            }
            stop.store(true, Ordering::Relaxed);
            watcher.join().expect("watcher thread")
        });
        assert!(
            failure.is_none(),
            "{}: the second client was answered wrongly during the garbage: {}",
            server.kind().name(),
            failure.unwrap_or_default()
        );
        assert!(
            stalls.is_empty(),
            "{}: the second client (same worker) made no progress for 2 s during: {stalls:?}",
            server.kind().name()
        );
        assert_serves(server, "after_garbage");
        outcomes
    };

    let expected = run(&memcached);
    for o in &expected[..3] {
        assert_eq!(
            (o.reply.as_str(), o.ending),
            ("", Ending::Closed),
            "memcached itself: {}",
            o.step
        );
    }
    let got = run(&shmcached);
    assert_same("garbage", &expected, &got);
}

/// A 1 MB line without a newline: memcached sends nothing and closes (past
/// 2048 bytes a line that is not a `get`/`gets` is cut off); the server goes
/// on serving.
#[test]
fn a_megabyte_line_without_newline_closes_the_connection() {
    let (memcached, shmcached) = pair(&["-t", "2", "-m", "16"]);
    let line = vec![b'x'; 1 << 20];
    let run = |server: &Server| -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut conn = server.connect();
        let _ = conn.try_send(&line);
        let reply = conn.read_to_eof();
        outcomes.push(Outcome::new(
            "1 MB of 'x' on a new connection",
            &reply.bytes,
            reply.ending,
        ));

        // On a connection that has been served (nothing left to answer).
        let mut conn = server.connect();
        let reply = conn.exchange(b"set mb 0 0 1\r\n1\r\n");
        outcomes.push(Outcome::new("a set first", &reply.bytes, reply.ending));
        let _ = conn.try_send(&line);
        let reply = conn.read_to_eof();
        outcomes.push(Outcome::new("then 1 MB of 'x'", &reply.bytes, reply.ending));

        assert_serves(server, "after_megabyte_line");
        let reply = server.connect().exchange(b"get mb\r\n");
        outcomes.push(Outcome::new(
            "get mb on a new connection",
            &reply.bytes,
            reply.ending,
        ));
        outcomes
    };
    let expected = run(&memcached);
    assert_eq!(
        (expected[0].reply.as_str(), expected[0].ending),
        ("", Ending::Closed),
        "memcached itself sends nothing and closes"
    );
    let got = run(&shmcached);
    assert_same("1 MB line", &expected, &got);
}

/// `set k 0 0 100` and 50 of the 100 bytes, then the client goes away, 100
/// times: nothing is stored, and `curr_connections` comes back to where it
/// was (no connection leaks).
#[test]
fn abandoned_data_blocks_store_nothing_and_leak_no_connection() {
    let (memcached, shmcached) = pair(&["-t", "2", "-m", "16"]);
    let run = |server: &Server| -> Vec<Outcome> {
        let mut watcher = server.connect();
        // Let the harness's readiness probe be closed first.
        thread::sleep(Duration::from_millis(100));
        let baseline = stat_u64(&mut watcher, "curr_connections");
        for i in 0..100 {
            let mut conn = server.connect();
            let mut request = format!("set half{i} 0 0 100\r\n").into_bytes();
            request.extend_from_slice(&[b'h'; 50]);
            conn.send(&request);
            drop(conn);
        }
        let keys: Vec<String> = (0..100).map(|i| format!("half{i}")).collect();
        let reply = watcher.exchange(format!("get {}\r\n", keys.join(" ")).as_bytes());
        let outcomes = vec![Outcome::new(
            "get of the 100 half-sent keys",
            &reply.bytes,
            reply.ending,
        )];
        let now = wait_for_stat(
            &mut watcher,
            "curr_connections",
            baseline,
            Duration::from_secs(3),
        );
        assert_eq!(
            now,
            baseline,
            "{}: curr_connections should return to {baseline} after 100 abandoned connections",
            server.kind().name()
        );
        assert_serves(server, "after_abandoned");
        outcomes
    };
    let expected = run(&memcached);
    assert_eq!(expected[0].reply, "END\\r\\n", "memcached itself");
    let got = run(&shmcached);
    assert_same("abandoned data blocks", &expected, &got);
}

/// With `-I 1m`, a 2 MB value: `SERVER_ERROR object too large for cache`, its
/// data swallowed, the connection still usable, the old value gone (with and
/// without noreply).
#[test]
fn a_value_over_the_item_size_limit_is_refused_and_swallowed() {
    let (memcached, shmcached) = pair(&["-t", "2", "-m", "16", "-I", "1m"]);
    let mut too_big = b"set big 0 0 2097152\r\n".to_vec();
    too_big.resize(too_big.len() + 2 * 1024 * 1024, b'v');
    too_big.extend_from_slice(b"\r\n");
    let mut too_big_quiet = b"set big2 0 0 2097152 noreply\r\n".to_vec();
    too_big_quiet.resize(too_big_quiet.len() + 2 * 1024 * 1024, b'w');
    too_big_quiet.extend_from_slice(b"\r\n");

    let table: Vec<(&str, &[u8], &[u8])> = vec![
        (
            "store an old value",
            b"set big 0 0 3\r\nold\r\n",
            b"STORED\r\n",
        ),
        (
            "a 2 MB value",
            &too_big,
            b"SERVER_ERROR object too large for cache\r\n",
        ),
        ("the old value is gone", b"get big\r\n", b"END\r\n"),
        (
            "the connection is still usable",
            b"set next 0 0 2\r\nok\r\nget next\r\n",
            b"STORED\r\nVALUE next 0 2\r\nok\r\nEND\r\n",
        ),
        (
            "store an old value",
            b"set big2 0 0 3\r\nold\r\n",
            b"STORED\r\n",
        ),
        ("a 2 MB value with noreply", &too_big_quiet, b""),
        ("the old value is gone", b"get big2\r\n", b"END\r\n"),
        (
            "still usable",
            b"get next\r\n",
            b"VALUE next 0 2\r\nok\r\nEND\r\n",
        ),
    ];
    check_table("value over -I", &memcached, &shmcached, &table);
}

/// Run `table` (step, request, expected reply) on one connection to each
/// server: memcached must give the table's bytes (else the table is wrong)
/// and shmcached memcached's.
fn check_table(test: &str, memcached: &Server, shmcached: &Server, table: &[(&str, &[u8], &[u8])]) {
    let run = |server: &Server| -> Vec<Outcome> {
        let mut conn = server.connect();
        table
            .iter()
            .map(|(step, request, _)| {
                let reply = conn.exchange(request);
                Outcome::new(
                    format!("{step}: {}", escape(request)),
                    &reply.bytes,
                    reply.ending,
                )
            })
            .collect()
    };
    let expected: Vec<Outcome> = table
        .iter()
        .map(|(step, request, reply)| {
            Outcome::new(
                format!("{step}: {}", escape(request)),
                reply,
                Ending::Sentinel,
            )
        })
        .collect();
    assert_same(
        &format!("{test} (memcached vs this table: the table is wrong)"),
        &expected,
        &run(memcached),
    );
    assert_same(test, &expected, &run(shmcached));
}

/// Keys of 251 bytes and keys with control bytes, for get/set/delete/incr/
/// touch and friends: memcached's replies, byte for byte.
#[test]
fn invalid_keys_get_memcacheds_replies() {
    let (memcached, shmcached) = pair(&["-t", "2", "-m", "16"]);
    let k251 = "k".repeat(251);
    let k250 = "k".repeat(250);
    let bad = b"CLIENT_ERROR bad command line format\r\n";
    let requests: Vec<(String, Vec<u8>, Vec<u8>)> = vec![
        // 251 bytes: one over KEY_MAX_LENGTH.
        (format!("get {k251}\r\n").into(), bad.to_vec()),
        (format!("gets {k251}\r\n").into(), bad.to_vec()),
        (format!("get a {k251} b\r\n").into(), bad.to_vec()),
        (format!("gat 10 {k251}\r\n").into(), bad.to_vec()),
        // The command line is refused, so the data line is read as a command.
        (
            format!("set {k251} 0 0 1\r\nx\r\n").into(),
            [&bad[..], b"ERROR\r\n"].concat(),
        ),
        (
            format!("set {k251} 0 0 1 noreply\r\nx\r\n").into(),
            b"ERROR\r\n".to_vec(),
        ),
        (
            format!("add {k251} 0 0 1\r\nx\r\n").into(),
            [&bad[..], b"ERROR\r\n"].concat(),
        ),
        (
            format!("cas {k251} 0 0 1 1\r\nx\r\n").into(),
            [&bad[..], b"ERROR\r\n"].concat(),
        ),
        (format!("delete {k251}\r\n").into(), bad.to_vec()),
        (format!("delete {k251} noreply\r\n").into(), b"".to_vec()),
        (format!("incr {k251} 1\r\n").into(), bad.to_vec()),
        (format!("decr {k251} 1\r\n").into(), bad.to_vec()),
        (format!("touch {k251} 10\r\n").into(), bad.to_vec()),
        // 250 bytes is fine.
        (
            format!("set {k250} 0 0 1\r\nx\r\n").into(),
            b"STORED\r\n".to_vec(),
        ),
        (
            format!("get {k250}\r\n").into(),
            format!("VALUE {k250} 0 1\r\nx\r\nEND\r\n").into(),
        ),
        (format!("delete {k250}\r\n").into(), b"DELETED\r\n".to_vec()),
    ]
    .into_iter()
    .map(|(req, reply): (Vec<u8>, Vec<u8>)| ("251-byte key".to_string(), req, reply))
    .chain(
        [
            // Control bytes: memcached only refuses space, CR-LF, and (by
            // strcmp) NUL in the command word.
            (&b"set a\x01b 0 0 1\r\nx\r\n"[..], &b"STORED\r\n"[..]),
            (b"get a\x01b\r\n", b"VALUE a\x01b 0 1\r\nx\r\nEND\r\n"),
            (
                b"incr a\x01b 1\r\n",
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            ),
            (b"touch a\x01b 10\r\n", b"TOUCHED\r\n"),
            (b"delete a\x01b\r\n", b"DELETED\r\n"),
            (b"get a\x01b\r\n", b"END\r\n"),
            (b"set c\x7f 0 0 1\r\n5\r\n", b"STORED\r\n"),
            (b"incr c\x7f 2\r\n", b"7\r\n"),
            (b"decr c\x7f 1\r\n", b"6\r\n"),
            (b"get c\x7f\r\n", b"VALUE c\x7f 0 1\r\n6\r\nEND\r\n"),
            (b"set t\tk 0 0 1\r\nz\r\n", b"STORED\r\n"),
            (b"get t\tk\r\n", b"VALUE t\tk 0 1\r\nz\r\nEND\r\n"),
            (b"get t\r\n", b"END\r\n"),
            (b"set a\rb 0 0 1\r\nr\r\n", b"STORED\r\n"),
            (b"get a\rb\r\n", b"VALUE a\rb 0 1\r\nr\r\nEND\r\n"),
            (b"set \x1b[0m 0 0 1\r\ne\r\n", b"STORED\r\n"),
            (b"get \x1b[0m\r\n", b"VALUE \x1b[0m 0 1\r\ne\r\nEND\r\n"),
            (b"set \xff\xfe 0 0 1\r\nh\r\n", b"STORED\r\n"),
            (b"get \xff\xfe\r\n", b"VALUE \xff\xfe 0 1\r\nh\r\nEND\r\n"),
            // A NUL in a key.
            (b"set a\x00b 0 0 1\r\ny\r\n", b"ERROR\r\nERROR\r\n"),
            (b"get a\x00b\r\n", b"END\r\n"),
            (b"delete a\x00b\r\n", b"NOT_FOUND\r\n"),
            (b"incr a\x00b 1\r\n", b"ERROR\r\n"),
            (b"touch a\x00b 1\r\n", b"ERROR\r\n"),
        ]
        .into_iter()
        .map(|(req, reply)| {
            (
                "control byte in a key".to_string(),
                req.to_vec(),
                reply.to_vec(),
            )
        }),
    )
    .collect();
    let table: Vec<(&str, &[u8], &[u8])> = requests
        .iter()
        .map(|(step, req, reply)| (step.as_str(), req.as_slice(), reply.as_slice()))
        .collect();
    check_table("invalid keys", &memcached, &shmcached, &table);
}

/// `-c 10`: connections past ten get `ERROR Too many open connections\r\n`
/// and are closed (memcached's words; memcached itself cannot run with
/// `-c 10`, it needs more descriptors than that); `rejected_connections`
/// counts them; once some close, new ones are accepted again.
#[test]
fn connections_over_the_limit_are_told_and_closed() {
    const REFUSAL: &[u8] = b"ERROR Too many open connections\r\n";
    let server = Server::start(Kind::Shmcached, &["-t", "2", "-m", "16", "-c", "10"]);
    let mut first = server.connect();
    // Wait until the harness's readiness probe is closed: only `first` open.
    let open = wait_for_stat(&mut first, "curr_connections", 1, Duration::from_secs(3));
    assert_eq!(open, 1, "curr_connections with one client");
    let mut open_conns = vec![first];
    for i in 1..10 {
        let mut conn = server.connect();
        let reply = conn.exchange(b"");
        assert_eq!(
            (escape(&reply.bytes), reply.ending),
            (String::new(), Ending::Sentinel),
            "connection {} of 10 should be served",
            i + 1
        );
        open_conns.push(conn);
    }
    for i in 11..=13 {
        let mut conn = server.connect();
        let reply = conn.read_to_eof();
        assert_eq!(
            (escape(&reply.bytes), reply.ending),
            (escape(REFUSAL), Ending::Closed),
            "connection {i} (over -c 10)"
        );
    }
    assert_eq!(stat_u64(&mut open_conns[0], "rejected_connections"), 3);
    assert_eq!(stat_u64(&mut open_conns[0], "curr_connections"), 10);

    // Close two; their slots come back.
    open_conns.truncate(8);
    let now = wait_for_stat(
        &mut open_conns[0],
        "curr_connections",
        8,
        Duration::from_secs(3),
    );
    assert_eq!(now, 8, "curr_connections after closing two of ten");
    for i in 0..2 {
        let mut conn = server.connect();
        let reply = conn.exchange(b"get k\r\n");
        assert_eq!(
            (escape(&reply.bytes), reply.ending),
            ("END\\r\\n".to_string(), Ending::Sentinel),
            "new connection {i} after two closed should be served"
        );
        open_conns.push(conn);
    }
    let reply = server.connect().read_to_eof();
    assert_eq!(
        (escape(&reply.bytes), reply.ending),
        (escape(REFUSAL), Ending::Closed),
        "the 11th connection again"
    );
    assert_eq!(stat_u64(&mut open_conns[0], "rejected_connections"), 4);
}

/// A client that pipelines `get`s of a 100 KB value without reading: the
/// server stops reading it rather than buffer replies, so its memory stays
/// bounded; closing that client frees everything. A smaller pipeline read in
/// full afterwards gets every reply right.
#[test]
fn a_client_that_never_reads_costs_bounded_memory() {
    const VALUE_LEN: usize = 100 * 1024;
    const PUSH_TOTAL: usize = 50 << 20;
    const BOUND_MIB: u64 = 200;
    let server = Server::start(Kind::Shmcached, &["-t", "2", "-m", "64"]);
    let value: Vec<u8> = (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect();
    let mut set = format!("set big 0 0 {VALUE_LEN}\r\n").into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let mut one_reply = format!("VALUE big 0 {VALUE_LEN}\r\n").into_bytes();
    one_reply.extend_from_slice(&value);
    one_reply.extend_from_slice(b"\r\nEND\r\n");
    let mut watcher = server.connect();
    assert_eq!(watcher.roundtrip(&set), b"STORED\r\n");
    // Warm every worker's mapping of the value, then measure.
    for _ in 0..6 {
        assert!(
            server.connect().roundtrip(b"get big\r\n") == one_reply,
            "get big"
        );
    }
    thread::sleep(Duration::from_millis(100));
    let baseline_conns = stat_u64(&mut watcher, "curr_connections");
    let baseline = server_rss_mib(&server);

    // Phase 1: push up to 50 MB of `get big\r\n` and never read.
    let chunk = b"get big\r\n".repeat((1 << 20) / 9);
    let stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream.set_nonblocking(true).expect("nonblocking");
    let mut stream_ref = &stream;
    let mut pushed = 0usize;
    let mut offset = 0usize;
    let mut peak = baseline;
    let mut last_progress = Instant::now();
    let mut last_sample = Instant::now();
    let started = Instant::now();
    while pushed < PUSH_TOTAL && last_progress.elapsed() < Duration::from_secs(1) {
        match stream_ref.write(&chunk[offset..]) {
            Ok(n) => {
                pushed += n;
                offset = (offset + n) % chunk.len();
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("writing the pipeline: {e} after {pushed} bytes"),
        }
        if last_sample.elapsed() >= Duration::from_millis(50) {
            last_sample = Instant::now();
            peak = peak.max(server_rss_mib(&server));
            if peak > baseline + BOUND_MIB {
                break; // stop before the machine suffers
            }
        }
    }
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(50));
        peak = peak.max(server_rss_mib(&server));
    }
    eprintln!(
        "pushed {} KiB of gets in {:?} (stalled: {}); RSS baseline {baseline} MiB, peak {peak} MiB",
        pushed >> 10,
        started.elapsed(),
        pushed < PUSH_TOTAL
    );
    assert!(
        peak <= baseline + BOUND_MIB,
        "a client pipelining gets of a 100 KB value without reading ({} KiB sent): \
         server RSS rose from {baseline} MiB to {peak} MiB (bound: +{BOUND_MIB} MiB)",
        pushed >> 10
    );
    drop(stream);
    let now = wait_for_stat(
        &mut watcher,
        "curr_connections",
        baseline_conns,
        Duration::from_secs(3),
    );
    assert_eq!(
        now, baseline_conns,
        "curr_connections after the non-reader closed"
    );
    assert_serves(&server, "after_non_reader");

    // Phase 2: 300 gets (30 MB of replies) sent at once, read only later.
    const GETS: usize = 300;
    let mut conn = server.connect();
    conn.set_timeout(Duration::from_secs(10));
    conn.send(&b"get big\r\n".repeat(GETS));
    thread::sleep(Duration::from_millis(300));
    let waiting = server_rss_mib(&server);
    assert!(
        waiting <= baseline + BOUND_MIB,
        "{GETS} unread gets: RSS {waiting} MiB, baseline {baseline} MiB"
    );
    let expected = one_reply.repeat(GETS);
    let got = conn.read_exact_reply(expected.len());
    assert!(
        got == expected,
        "{GETS} pipelined gets of the 100 KB value, read late: expected {} bytes, got {} bytes{}",
        expected.len(),
        got.len(),
        expected
            .iter()
            .zip(&got)
            .position(|(a, b)| a != b)
            .map(|i| format!(", first difference at byte {i}"))
            .unwrap_or_default()
    );
    assert!(conn.roundtrip(b"").is_empty(), "the connection goes on");
}

/// Idle clients (nothing sent, or half a command) and half-closed clients
/// (write side shut) do not disturb anyone: each half-closed one gets
/// memcached's answer to what it sent, then EOF, and a client of the same
/// worker (`-t 1`) is served at once throughout.
#[test]
fn idle_and_half_closed_clients_do_not_disturb_others() {
    let (memcached, shmcached) = pair(&["-t", "1", "-m", "16"]);
    let run = |server: &Server| -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut idle: Vec<Conn> = (0..5).map(|_| server.connect()).collect();
        let mut half_command = server.connect();
        half_command.send(b"get hc");
        let mut other = server.connect();
        let cases: [(&str, &[u8]); 5] = [
            ("complete requests", b"set hc 0 0 2\r\nhi\r\nget hc\r\n"),
            ("nothing", b""),
            ("a command without its newline", b"get hc"),
            ("half a data block", b"set hd 0 0 10\r\nabc"),
            ("a request then half of another", b"get hc\r\nget hc"),
        ];
        for (what, bytes) in cases {
            let mut conn = server.connect();
            conn.send(bytes);
            conn.shutdown_write();
            let reply = conn.read_to_eof();
            outcomes.push(Outcome::new(
                format!("half-closed after {what}"),
                &reply.bytes,
                reply.ending,
            ));
            let asked = Instant::now();
            let reply = other.exchange(b"get hc hd\r\n");
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{}: the other client waited {:?}",
                server.kind().name(),
                asked.elapsed()
            );
            outcomes.push(Outcome::new(
                format!("the other client, after: {what}"),
                &reply.bytes,
                reply.ending,
            ));
        }
        for (i, conn) in idle.iter_mut().enumerate() {
            let reply = conn.exchange(b"get hc\r\n");
            outcomes.push(Outcome::new(
                format!("idle client {i}, finally asking"),
                &reply.bytes,
                reply.ending,
            ));
        }
        let reply = half_command.exchange(b"\r\n");
        outcomes.push(Outcome::new(
            "the client idle after `get hc`, finishing its line",
            &reply.bytes,
            reply.ending,
        ));
        outcomes
    };
    let expected = run(&memcached);
    assert_eq!(
        expected[0].reply, "STORED\\r\\nVALUE hc 0 2\\r\\nhi\\r\\nEND\\r\\n",
        "memcached itself answers a half-closed client"
    );
    let got = run(&shmcached);
    assert_same("idle and half-closed clients", &expected, &got);
}
