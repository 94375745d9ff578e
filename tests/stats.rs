//! `stats` and its groups, against the real daemon, and the same checks
//! against memcached 1.6.18 where both define a value the same way.
//!
//! - the general counters after a known sequence spread over 48 connections
//!   (so that it lands on all of `-t 4`'s workers): every counter the sequence
//!   defines has its exact value, `bytes_read`/`bytes_written` equal what the
//!   client sent and received, and memcached ends with the same values;
//! - `stats reset`; `stats settings` after flags; `stats items`/`slabs`
//!   after N items of a known size; `stats detail`; `stats conns`.
//!
//! Differences from memcached, each explained in docs/compatibility.md:
//! memcached's `total_connections` also counts its listening socket; item
//! sizes (`bytes`, `mem_requested`) and slab class numbers follow each
//! server's own item header and class sizes.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;

use common::{Conn, Kind, Server, escape};

/// Connections the sequence is spread over.
const CONNS: usize = 48;
/// Connections that also send a value over `-I` (1 MiB), and its size.
const TOO_LARGE_EVERY: usize = 12;
const TOO_LARGE: usize = 1_100_000;
/// memcached's reply to the `version` sentinel that `Conn::exchange` sends.
const VERSION_REPLY: &[u8] = b"VERSION 1.6.18\r\n";

/// A `stats` reply as name -> value.
type Stats = BTreeMap<String, String>;

fn parse_stats(reply: &[u8]) -> Stats {
    String::from_utf8_lossy(reply)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.strip_prefix("STAT ")?.split_once(' ')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

fn num(stats: &Stats, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no STAT {name} in {stats:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("STAT {name} {}: {e}", stats[name]))
}

/// A client connection that counts the bytes it sends and receives.
struct Counted {
    conn: Conn,
    sent: u64,
    received: u64,
}

impl Counted {
    fn new(server: &Server) -> Counted {
        Counted {
            conn: server.connect(),
            sent: 0,
            received: 0,
        }
    }

    /// Send `request` (plus the `version` sentinel) and return the reply.
    fn exchange(&mut self, request: &[u8]) -> Vec<u8> {
        let reply = self.conn.exchange(request);
        self.sent += (request.len() + common::SENTINEL.len()) as u64;
        self.received += (reply.bytes.len() + VERSION_REPLY.len()) as u64;
        reply.bytes
    }

    /// `exchange`, and check the reply.
    fn expect(&mut self, request: &[u8], want: &[u8]) {
        let got = self.exchange(request);
        assert_eq!(
            escape(&got),
            escape(want),
            "request {}",
            escape(&request[..request.len().min(80)])
        );
    }
}

/// The cas-unique of the one `VALUE` line of a `gets` reply.
fn cas_of(reply: &[u8]) -> u64 {
    let line = String::from_utf8_lossy(reply);
    let first = line.lines().next().unwrap_or_default();
    first
        .split(' ')
        .nth(4)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no cas in {first:?}"))
}

/// The script connection `i` runs: each connection has keys of its own, so
/// outcomes do not depend on which worker or connection ran first.
fn run_script(c: &mut Counted, i: usize) {
    let (k, m, n, d, q, b) = (
        format!("k{i}"),
        format!("m{i}"),
        format!("n{i}"),
        format!("d{i}"),
        format!("q{i}"),
        format!("b{i}"),
    );
    let f = |s: String| s.into_bytes();
    c.expect(&f(format!("set {k} 0 0 5\r\nhello\r\n")), b"STORED\r\n");
    c.expect(
        &f(format!("get {k} {m}\r\n")),
        &f(format!("VALUE {k} 0 5\r\nhello\r\nEND\r\n")),
    );
    let cas = cas_of(&c.exchange(&f(format!("gets {k}\r\n"))));
    c.expect(&f(format!("cas {k} 0 0 1 {cas}\r\nx\r\n")), b"STORED\r\n");
    c.expect(&f(format!("cas {k} 0 0 1 {cas}\r\nx\r\n")), b"EXISTS\r\n");
    c.expect(&f(format!("cas {m} 0 0 1 1\r\nx\r\n")), b"NOT_FOUND\r\n");
    c.expect(&f(format!("set {n} 0 0 2\r\n10\r\n")), b"STORED\r\n");
    c.expect(&f(format!("incr {n} 5\r\n")), b"15\r\n");
    c.expect(&f(format!("incr {n} 100\r\n")), b"115\r\n");
    c.expect(&f(format!("decr {n} 200\r\n")), b"0\r\n");
    c.expect(&f(format!("incr {m} 1\r\n")), b"NOT_FOUND\r\n");
    c.expect(&f(format!("decr {m} 1\r\n")), b"NOT_FOUND\r\n");
    c.expect(&f(format!("touch {k} 100\r\n")), b"TOUCHED\r\n");
    c.expect(&f(format!("touch {m} 100\r\n")), b"NOT_FOUND\r\n");
    c.expect(
        &f(format!("gat 100 {k} {m}\r\n")),
        &f(format!("VALUE {k} 0 1\r\nx\r\nEND\r\n")),
    );
    c.expect(&f(format!("delete {m}\r\n")), b"NOT_FOUND\r\n");
    c.expect(
        &f(format!("set {d} 0 0 1\r\nx\r\ndelete {d}\r\n")),
        b"STORED\r\nDELETED\r\n",
    );
    c.expect(&f(format!("add {k} 0 0 1\r\nx\r\n")), b"NOT_STORED\r\n");
    c.expect(&f(format!("append {k} 0 0 2\r\nyz\r\n")), b"STORED\r\n");
    c.expect(&f(format!("set {q} 0 0 1 noreply\r\nx\r\n")), b"");
    // Three data bytes are taken ("xy\r"); the "\n" left is an empty line.
    c.expect(
        &f(format!("set {b} 0 0 1\r\nxy\r\n")),
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    if i.is_multiple_of(TOO_LARGE_EVERY) {
        let mut big = f(format!("set big{i} 0 0 {TOO_LARGE} noreply\r\n"));
        big.resize(big.len() + TOO_LARGE, b'v');
        big.extend_from_slice(b"\r\n");
        c.expect(&big, b"");
    }
}

/// Per connection, what the script adds to each counter.
const PER_CONN: &[(&str, u64)] = &[
    ("cmd_get", 3), // get k m, gets k
    ("get_hits", 2),
    ("get_misses", 1),
    ("cmd_set", 10),  // set k, cas x3, set n, set d, add, append, set q, bad chunk
    ("cmd_touch", 4), // touch x2, gat of two keys
    ("touch_hits", 2),
    ("touch_misses", 2),
    ("cas_hits", 1),
    ("cas_badval", 1),
    ("cas_misses", 1),
    ("incr_hits", 2),
    ("incr_misses", 1),
    ("decr_hits", 1),
    ("decr_misses", 1),
    ("delete_hits", 1),
    ("delete_misses", 1),
    // set k, cas hit, set n, incr to 3 digits, set d, append, set q: the
    // other arithmetic results fit in place.
    ("total_items", 7),
    ("curr_items", 3), // k, n, q
];

/// Counters the sequence leaves at 0.
const ZERO: &[&str] = &[
    "get_expired",
    "get_flushed",
    "store_no_memory",
    "rejected_connections",
    "auth_cmds",
    "auth_errors",
    "evictions",
    "reclaimed",
    "expired_unfetched",
    "evicted_unfetched",
];

/// Run the whole sequence; return `stats` read on a fresh connection after
/// it, with the traffic the client counted.
fn run_sequence(server: &Server) -> (Stats, u64, u64) {
    let mut conns: Vec<Counted> = (0..CONNS).map(|_| Counted::new(server)).collect();
    // An empty cache to start from (memcached's too), counted once.
    conns[0].expect(b"flush_all\r\n", b"OK\r\n");
    for (i, c) in conns.iter_mut().enumerate() {
        run_script(c, i);
    }
    let sent: u64 = conns.iter().map(|c| c.sent).sum();
    let received: u64 = conns.iter().map(|c| c.received).sum();
    // A server counts bytes written just after the write that we have read:
    // give the last ones that instant.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut asker = server.connect();
    let stats = parse_stats(&asker.roundtrip(b"stats\r\n"));
    drop(conns);
    (stats, sent, received)
}

fn expected_counter(name: &str) -> Option<u64> {
    if let Some(&(_, per)) = PER_CONN.iter().find(|(n, _)| *n == name) {
        return Some(per * CONNS as u64);
    }
    match name {
        "cmd_flush" => Some(1),
        "store_too_large" => Some(CONNS.div_ceil(TOO_LARGE_EVERY) as u64),
        // The script's connections and the one asking.
        "curr_connections" => Some(CONNS as u64 + 1),
        _ if ZERO.contains(&name) => Some(0),
        _ => None,
    }
}

/// Every counter the sequence defines, on either server.
fn check_sequence(kind: Kind, stats: &Stats, sent: u64, received: u64) -> Vec<String> {
    let mut wrong = Vec::new();
    let names = PER_CONN
        .iter()
        .map(|(n, _)| *n)
        .chain(ZERO.iter().copied())
        .chain(["cmd_flush", "store_too_large", "curr_connections"]);
    for name in names {
        let want = expected_counter(name).expect("a counter of the sequence");
        if num(stats, name) != want {
            wrong.push(format!("{name}: {} want {want}", num(stats, name)));
        }
    }
    // The script's, the asker's, and the harness's readiness probe; memcached
    // also counts its listening socket as a connection.
    let listeners = if kind == Kind::Memcached { 1 } else { 0 };
    let total_connections = CONNS as u64 + 2 + listeners;
    if num(stats, "total_connections") != total_connections {
        wrong.push(format!(
            "total_connections: {} want {total_connections}",
            num(stats, "total_connections")
        ));
    }
    // The final `stats\r\nversion\r\n` is read before the counters are;
    // its replies are written after.
    let asked = (7 + common::SENTINEL.len()) as u64;
    if num(stats, "bytes_read") != sent + asked {
        wrong.push(format!(
            "bytes_read: {} want {sent} (sent) + {asked}",
            num(stats, "bytes_read"),
        ));
    }
    if num(stats, "bytes_written") != received {
        wrong.push(format!(
            "bytes_written: {} want {received} (received)",
            num(stats, "bytes_written")
        ));
    }
    wrong
}

#[test]
fn general_counters_are_exact_across_workers() {
    let server = Server::shmcached(&["-t", "4"]);
    let (stats, sent, received) = run_sequence(&server);
    let wrong = check_sequence(Kind::Shmcached, &stats, sent, received);
    assert!(wrong.is_empty(), "shmcached:\n  {}", wrong.join("\n  "));
    // The sequence really was spread over every worker.
    let mut asker = server.connect();
    let per_worker = parse_stats(&asker.roundtrip(b"stats workers\r\n"));
    for w in 0..4 {
        assert!(
            num(&per_worker, &format!("worker:{w}:requests")) > 0,
            "worker {w} served nothing: {per_worker:?}"
        );
    }
    // bytes: our items are a 48-byte header, the key and the value.
    let item = |key: String, value: usize| (48 + key.len() + value) as u64;
    let bytes: u64 = (0..CONNS)
        .map(|i| item(format!("k{i}"), 3) + item(format!("n{i}"), 3) + item(format!("q{i}"), 1))
        .sum();
    assert_eq!(num(&stats, "bytes"), bytes);
}

#[test]
fn memcached_counts_the_sequence_the_same() {
    let servers = [
        Server::shmcached(&["-t", "4"]),
        Server::memcached(&["-t", "4"]),
    ];
    let mut all = Vec::new();
    for server in &servers {
        let (stats, sent, received) = run_sequence(server);
        let wrong = check_sequence(server.kind(), &stats, sent, received);
        assert!(
            wrong.is_empty(),
            "{}:\n  {}",
            server.kind().name(),
            wrong.join("\n  ")
        );
        all.push((stats, sent));
    }
    // Beyond the expectations: every counter both keep the same way is equal.
    let same = [
        "cmd_get",
        "cmd_set",
        "cmd_flush",
        "cmd_touch",
        "cmd_meta",
        "get_hits",
        "get_misses",
        "get_expired",
        "get_flushed",
        "delete_misses",
        "delete_hits",
        "incr_misses",
        "incr_hits",
        "decr_misses",
        "decr_hits",
        "cas_misses",
        "cas_hits",
        "cas_badval",
        "touch_hits",
        "touch_misses",
        "store_too_large",
        "store_no_memory",
        "auth_cmds",
        "auth_errors",
        "curr_items",
        "total_items",
        "curr_connections",
        "rejected_connections",
        "evictions",
        "reclaimed",
        "bytes_read",
    ];
    let (ours, theirs) = (&all[0].0, &all[1].0);
    let differ: Vec<String> = same
        .iter()
        .filter(|n| num(ours, n) != num(theirs, n))
        .map(|n| format!("{n}: shmcached {} memcached {}", ours[*n], theirs[*n]))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert_eq!(all[0].1, all[1].1, "the two clients sent different bytes");
}

#[test]
fn reset_zeroes_counters_but_not_items() {
    let server = Server::shmcached(&["-t", "4"]);
    let (before, _, _) = run_sequence(&server);
    let mut c = server.connect();
    // The sequence's connections are closed: wait until the workers saw it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while num(&parse_stats(&c.roundtrip(b"stats\r\n")), "curr_connections") > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections not closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(c.roundtrip(b"stats reset\r\n"), b"RESET\r\n");
    let after = parse_stats(&c.roundtrip(b"stats\r\n"));
    for name in [
        "cmd_get",
        "cmd_set",
        "get_hits",
        "cas_hits",
        "incr_hits",
        "touch_hits",
        "delete_hits",
        "store_too_large",
        "total_items",
        "total_connections",
    ] {
        assert_eq!(num(&after, name), 0, "{name} after reset");
    }
    for name in ["curr_items", "bytes"] {
        assert_eq!(num(&after, name), num(&before, name), "{name} after reset");
    }
    assert_eq!(num(&after, "curr_connections"), 1);
    // Since the reset: this `stats\r\nversion\r\n` read, the `RESET\r\n`
    // and the sentinel's reply written.
    assert_eq!(
        num(&after, "bytes_read"),
        (7 + common::SENTINEL.len()) as u64
    );
    assert_eq!(
        num(&after, "bytes_written"),
        (7 + VERSION_REPLY.len()) as u64
    );
    let slabs = parse_stats(&c.roundtrip(b"stats slabs\r\n"));
    assert!(
        slabs
            .iter()
            .filter(|(k, _)| k.ends_with(":cmd_set") || k.ends_with(":get_hits"))
            .all(|(_, v)| v == "0"),
        "per-class counters after reset: {slabs:?}"
    );
}

/// Flags under test, and the `stats settings` values they give.
const FLAGS: &[&str] = &[
    "-m",
    "32",
    "-c",
    "77",
    "-t",
    "3",
    "-I",
    "2m",
    "-C",
    "-M",
    "-b",
    "99",
    "-R",
    "7",
    "-A",
    "-F",
    "-D",
    "#",
    "-o",
    "idle_timeout=9",
    "-o",
    "slab_automove=0,slab_automove_ratio=0.5,slab_automove_window=7",
    "-o",
    "no_lru_crawler,lru_crawler_sleep=50,lru_crawler_tocrawl=9",
];
const SETTINGS: &[(&str, &str)] = &[
    ("maxbytes", "33554432"),
    ("maxconns", "77"),
    ("udpport", "0"),
    ("inter", "127.0.0.1"),
    ("verbosity", "0"),
    ("oldest", "0"),
    ("evictions", "off"),
    ("domain_socket", "NULL"),
    ("shutdown_command", "yes"),
    ("num_threads", "3"),
    ("stat_key_prefix", "#"),
    ("detail_enabled", "yes"),
    ("reqs_per_event", "7"),
    ("cas_enabled", "no"),
    ("tcp_backlog", "99"),
    ("binding_protocol", "auto-negotiate"),
    ("auth_enabled_sasl", "no"),
    ("auth_enabled_ascii", "no"),
    ("item_size_max", "2097152"),
    ("maxconns_fast", "yes"),
    ("slab_reassign", "yes"),
    ("slab_automove", "0"),
    ("slab_automove_ratio", "0.50"),
    ("slab_automove_window", "7"),
    ("lru_crawler", "no"),
    ("lru_crawler_sleep", "50"),
    ("lru_crawler_tocrawl", "9"),
    ("flush_enabled", "no"),
    ("idle_timeout", "9"),
    ("track_sizes", "no"),
    ("ssl_enabled", "no"),
];

/// `stats settings` names in order.
fn names(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .lines()
        .filter_map(|l| Some(l.strip_prefix("STAT ")?.split(' ').next()?.to_string()))
        .collect()
}

#[test]
fn settings_reflect_flags_as_memcached_does() {
    let ours = Server::shmcached(FLAGS);
    let theirs = Server::memcached(FLAGS);
    let ours_reply = ours.connect().roundtrip(b"stats settings\r\n");
    let theirs_reply = theirs.connect().roundtrip(b"stats settings\r\n");
    assert!(ours_reply.ends_with(b"END\r\n"));
    let (o, t) = (parse_stats(&ours_reply), parse_stats(&theirs_reply));
    for &(name, want) in SETTINGS {
        assert_eq!(o.get(name).map(String::as_str), Some(want), "ours: {name}");
        assert_eq!(
            t.get(name).map(String::as_str),
            Some(want),
            "memcached: {name}"
        );
    }
    assert_eq!(num(&o, "tcpport"), u64::from(ours.port()));
    // A knowing difference (docs/memory.md): finer slab classes by default.
    assert_eq!(t.get("growth_factor").map(String::as_str), Some("1.25"));
    assert_eq!(o.get("growth_factor").map(String::as_str), Some("1.08"));
    // Our keys are memcached's, in memcached's order.
    let theirs_names = names(&theirs_reply);
    let mut at = 0;
    for name in names(&ours_reply) {
        match theirs_names[at..].iter().position(|n| *n == name) {
            Some(i) => at += i + 1,
            None => panic!("{name} is not a memcached key, or out of its order"),
        }
    }
    // `verbosity <n>` changes it for every worker, capped at 2 as memcached.
    for server in [&ours, &theirs] {
        let mut c = server.connect();
        assert_eq!(c.roundtrip(b"verbosity 5\r\n"), b"OK\r\n");
        for _ in 0..8 {
            let s = parse_stats(&server.connect().roundtrip(b"stats settings\r\n"));
            assert_eq!(s["verbosity"], "2", "{}", server.kind().name());
        }
        assert_eq!(c.roundtrip(b"verbosity 0\r\n"), b"OK\r\n");
    }
    // So do `slabs automove <level>` and `slabs automove ratio <r>`.
    for server in [&ours, &theirs] {
        let mut c = server.connect();
        assert_eq!(c.roundtrip(b"slabs automove 2\r\n"), b"OK\r\n");
        assert_eq!(c.roundtrip(b"slabs automove ratio 0.25\r\n"), b"OK\r\n");
        for _ in 0..8 {
            let s = parse_stats(&server.connect().roundtrip(b"stats settings\r\n"));
            let name = server.kind().name();
            assert_eq!(s["slab_automove"], "2", "{name}");
            assert_eq!(s["slab_automove_ratio"], "0.25", "{name}");
        }
        assert_eq!(c.roundtrip(b"slabs automove 0\r\n"), b"OK\r\n");
    }
}

/// `-f` and `-n` as memcached: with memcached's own values the smallest
/// class is memcached's (96 bytes) and `stats settings` says what it says.
#[test]
fn slab_flags_give_memcacheds_grid() {
    let args = ["-f", "1.25", "-n", "48"];
    let ours = Server::shmcached(&args);
    let theirs = Server::memcached(&args);
    for server in [&ours, &theirs] {
        let mut c = server.connect();
        let settings = parse_stats(&c.roundtrip(b"stats settings\r\n"));
        assert_eq!(
            settings["growth_factor"],
            "1.25",
            "{}",
            server.kind().name()
        );
        assert_eq!(settings["chunk_size"], "48", "{}", server.kind().name());
        assert_eq!(c.roundtrip(b"set a 0 0 1\r\nx\r\n"), b"STORED\r\n");
        let slabs = parse_stats(&c.roundtrip(b"stats slabs\r\n"));
        assert_eq!(
            slabs.get("1:chunk_size").map(String::as_str),
            Some("96"),
            "{}: {slabs:?}",
            server.kind().name()
        );
    }
}

#[test]
fn items_and_slabs_after_known_items() {
    let server = Server::shmcached(&["-t", "4"]);
    const ITEMS: usize = 100;
    const VALUE: usize = 200;
    let mut conns: Vec<Conn> = (0..40).map(|_| server.connect()).collect();
    for i in 0..ITEMS {
        let mut req = format!("set item{i:03} 0 0 {VALUE}\r\n").into_bytes();
        req.extend(std::iter::repeat_n(b'v', VALUE));
        req.extend_from_slice(b"\r\n");
        assert_eq!(conns[i % 40].roundtrip(&req), b"STORED\r\n");
    }
    for i in 0..ITEMS / 2 {
        let reply = conns[(i + 7) % 40].roundtrip(format!("get item{i:03}\r\n").as_bytes());
        assert!(reply.starts_with(b"VALUE"));
    }
    for (i, c) in conns.iter_mut().take(10).enumerate() {
        let reply = c.roundtrip(format!("delete item{:03}\r\n", 90 + i).as_bytes());
        assert_eq!(reply, b"DELETED\r\n");
    }
    let left = (ITEMS - 10) as u64;
    // 48-byte header + 7-byte key + value.
    let size = (48 + 7 + VALUE) as u64;
    let mut c = server.connect();
    let items = parse_stats(&c.roundtrip(b"stats items\r\n"));
    let class: String = {
        let numbers: Vec<&String> = items.keys().filter(|k| k.ends_with(":number")).collect();
        assert_eq!(numbers.len(), 1, "one class holds the items: {items:?}");
        numbers[0].split(':').nth(1).unwrap().to_string()
    };
    let item = |k: &str| num(&items, &format!("items:{class}:{k}"));
    assert_eq!(item("number"), left);
    assert_eq!(item("mem_requested"), left * size);
    assert_eq!(item("evicted"), 0);
    assert_eq!(item("outofmemory"), 0);
    assert!(item("age") <= 5);
    let slabs = parse_stats(&c.roundtrip(b"stats slabs\r\n"));
    let slab = |k: &str| num(&slabs, &format!("{class}:{k}"));
    let chunk = slab("chunk_size");
    assert!(chunk >= size && chunk * 4 / 5 < size + 8, "chunk {chunk}");
    assert_eq!(slab("chunks_per_page"), (1 << 20) / chunk);
    assert_eq!(slab("total_pages"), 1);
    assert_eq!(slab("total_chunks"), slab("chunks_per_page"));
    assert_eq!(slab("used_chunks"), left);
    assert_eq!(
        slab("free_chunks") + slab("free_chunks_end"),
        slab("total_chunks") - left
    );
    assert_eq!(slab("cmd_set"), ITEMS as u64);
    assert_eq!(slab("get_hits"), (ITEMS / 2) as u64);
    assert_eq!(slab("delete_hits"), 10);
    assert_eq!(num(&slabs, "active_slabs"), 1);
    assert_eq!(num(&slabs, "total_malloced"), 1 << 20);
    // Classes are numbered from 1, as memcached's.
    assert!(class.parse::<u32>().unwrap() >= 1);
    // No histogram until a client asks for one (tests/differential.rs
    // compares it with memcached's).
    assert_eq!(
        c.roundtrip(b"stats sizes\r\n"),
        b"STAT sizes_status disabled\r\nEND\r\n"
    );
}

/// One size histogram for all workers: enabled through one connection, it
/// counts the items stored through every worker, and every worker shows it.
#[test]
fn size_histogram_is_shared_by_all_workers() {
    let server = Server::shmcached(&["-t", "4"]);
    let mut conns: Vec<Conn> = (0..16).map(|_| server.connect()).collect();
    let workers = parse_stats(&conns[0].roundtrip(b"stats workers\r\n"));
    let busy = (0..4)
        .filter(|w| num(&workers, &format!("worker:{w}:curr_connections")) > 0)
        .count();
    assert!(busy > 1, "connections on {busy} worker(s)");
    assert_eq!(
        conns[0].roundtrip(b"stats sizes_enable\r\n"),
        b"STAT sizes_status enabled\r\n"
    );
    for (i, c) in conns.iter_mut().enumerate() {
        let set = format!("set w{i:02} 0 0 5\r\nvalue\r\n");
        assert_eq!(c.roundtrip(set.as_bytes()), b"STORED\r\n");
    }
    // memcached's size of a 3-byte key, 5 bytes, flags 0: 48 + 8 + 4 + 7.
    for c in &mut conns {
        assert_eq!(c.roundtrip(b"stats sizes\r\n"), b"STAT 96 16\r\nEND\r\n");
        let settings = parse_stats(&c.roundtrip(b"stats settings\r\n"));
        assert_eq!(settings["track_sizes"], "yes");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let delete = format!("delete w{:02}\r\n", (i + 5) % 16);
        assert_eq!(c.roundtrip(delete.as_bytes()), b"DELETED\r\n");
    }
    assert_eq!(conns[3].roundtrip(b"stats sizes\r\n"), b"END\r\n");
    assert_eq!(
        conns[7].roundtrip(b"stats sizes_disable\r\n"),
        b"STAT sizes_status disabled\r\n"
    );
    for c in &mut conns {
        assert_eq!(
            c.roundtrip(b"stats sizes\r\n"),
            b"STAT sizes_status disabled\r\nEND\r\n"
        );
    }
}

/// `-o track_sizes`: the histogram counts from the start, as memcached's
/// (same bytes from both servers), and `stats settings` says so.
#[test]
fn track_sizes_counts_from_the_start_as_memcached() {
    let theirs = Server::memcached(&["-o", "track_sizes"]);
    let ours = Server::shmcached(&["-o", "track_sizes"]);
    let mut replies = Vec::new();
    for server in [&theirs, &ours] {
        let mut c = server.connect();
        let mut got = c.roundtrip(b"stats sizes\r\n");
        for (key, flags, len) in [("a", 0, 5), ("bb", 7, 300), ("ccc", 0, 3000), ("a", 0, 6)] {
            let set = format!("set {key} {flags} 0 {len}\r\n{}\r\n", "v".repeat(len));
            assert_eq!(c.roundtrip(set.as_bytes()), b"STORED\r\n");
        }
        got.extend(c.roundtrip(b"stats sizes\r\n"));
        assert_eq!(c.roundtrip(b"delete bb\r\n"), b"DELETED\r\n");
        got.extend(c.roundtrip(b"stats sizes\r\n"));
        let settings = parse_stats(&c.roundtrip(b"stats settings\r\n"));
        assert_eq!(settings["track_sizes"], "yes", "{}", server.command_line());
        replies.push(String::from_utf8_lossy(&got).into_owned());
    }
    assert_eq!(replies[1], replies[0]);
    assert!(replies[1].contains("STAT 96 1"), "{}", replies[1]);
}

/// Keys of each prefix, spread over many connections: (key, command).
fn detail_traffic() -> Vec<Vec<u8>> {
    let mut reqs = Vec::new();
    for i in 0..40 {
        let p = ["user", "session", "", "x"][i % 4];
        reqs.push(format!("set {p}:{i} 0 0 1\r\nv\r\n").into_bytes());
        reqs.push(format!("get {p}:{i} {p}:missing{i} plain{i}\r\n").into_bytes());
        if i.is_multiple_of(3) {
            reqs.push(format!("delete {p}:{i}\r\n").into_bytes());
        }
        // incr and touch are not counted per prefix.
        reqs.push(format!("incr {p}:{i} 1\r\ntouch {p}:{i} 0\r\n").into_bytes());
    }
    reqs
}

#[test]
fn detail_counts_prefixes_over_all_workers_as_memcached() {
    let mut dumps = Vec::new();
    for server in [
        Server::shmcached(&["-t", "4"]),
        Server::memcached(&["-t", "4"]),
    ] {
        let mut c = server.connect();
        assert_eq!(c.roundtrip(b"stats detail dump\r\n"), b"END\r\n");
        assert_eq!(c.roundtrip(b"stats detail on\r\n"), b"OK\r\n");
        assert_eq!(c.roundtrip(b"stats detail dump\r\n"), b"END\r\n");
        let mut conns: Vec<Conn> = (0..40).map(|_| server.connect()).collect();
        for (i, req) in detail_traffic().iter().enumerate() {
            conns[i % 40].roundtrip(req);
        }
        let dump = c.roundtrip(b"stats detail dump\r\n");
        // Off stops counting but keeps what was counted.
        assert_eq!(c.roundtrip(b"stats detail off\r\n"), b"OK\r\n");
        conns[3].roundtrip(b"get user:1\r\n");
        assert_eq!(c.roundtrip(b"stats detail dump\r\n"), dump);
        dumps.push(String::from_utf8_lossy(&dump).into_owned());
        // A reset forgets every prefix.
        assert_eq!(c.roundtrip(b"stats reset\r\n"), b"RESET\r\n");
        assert_eq!(c.roundtrip(b"stats detail dump\r\n"), b"END\r\n");
    }
    // memcached's order: murmur3 of the prefix modulo 256 ("" 0, "user" 13,
    // "x" 27, "session" 96).
    let want = "PREFIX  get 20 hit 10 set 10 del 3\r\n\
                PREFIX user get 20 hit 10 set 10 del 4\r\n\
                PREFIX x get 20 hit 10 set 10 del 4\r\n\
                PREFIX session get 20 hit 10 set 10 del 3\r\n\
                END\r\n";
    assert_eq!(dumps[0], want, "shmcached");
    assert_eq!(dumps[1], want, "memcached");
}

#[test]
fn detail_usage_and_delimiter_flag() {
    let server = Server::shmcached(&["-D", "/"]);
    let mut c = server.connect();
    c.roundtrip(b"set a/1 0 0 1\r\nx\r\nget a:1 a/1\r\n");
    assert_eq!(
        c.roundtrip(b"stats detail dump\r\n"),
        b"PREFIX a get 1 hit 1 set 1 del 0\r\nEND\r\n"
    );
    for bad in [
        &b"stats detail\r\n"[..],
        b"stats detail ON\r\n",
        b"stats detail x\r\n",
    ] {
        assert_eq!(
            c.roundtrip(bad),
            b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
        );
    }
}

#[test]
fn conns_lists_every_workers_connections() {
    let server = Server::shmcached(&["-t", "4"]);
    let mut clients: Vec<TcpStream> = Vec::new();
    let mut conns: Vec<Conn> = Vec::new();
    for i in 0..40usize {
        if i.is_multiple_of(2) {
            // Connected, nothing sent.
            clients.push(TcpStream::connect(("127.0.0.1", server.port())).unwrap());
        } else {
            let mut c = server.connect();
            c.roundtrip(b"version\r\n");
            conns.push(c);
        }
    }
    // Half a data block: conn_nread.
    let mut nread = server.connect();
    nread.send(b"set half 0 0 10\r\nabc");
    let mut asker = server.connect();
    // Until every connection is accepted, the half block read, and each
    // `version` connection's entry updated: a worker writes its reply, then
    // updates the shared table, so a client can see the reply a moment before
    // another worker's `stats conns` sees the new state.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let reply = loop {
        let reply = asker.roundtrip(b"stats conns\r\n");
        let text = String::from_utf8_lossy(&reply);
        if text.matches(":addr ").count() == 4 + 42
            && text.contains("conn_nread")
            && text.matches(" conn_read\r\n").count() == 20
        {
            break reply;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(reply.ends_with(b"END\r\n"));
    let stats = parse_stats(&reply);
    let ids: std::collections::BTreeSet<&str> =
        stats.keys().filter_map(|k| k.split(':').next()).collect();
    let state = |id: &str| stats[&format!("{id}:state")].as_str();
    let listening = ids
        .iter()
        .filter(|id| state(id) == "conn_listening")
        .count();
    assert_eq!(listening, 4, "one listener per worker");
    // 40 clients, the half-sent one, and the asker.
    assert_eq!(ids.len() - listening, 42, "{reply:?}");
    let by_state = |s: &str| ids.iter().filter(|id| state(id) == s).count();
    assert_eq!(by_state("conn_new_cmd"), 20);
    assert_eq!(by_state("conn_read"), 20);
    assert_eq!(by_state("conn_nread"), 1);
    assert_eq!(by_state("conn_parse_cmd"), 1);
    for id in &ids {
        assert!(num(&stats, &format!("{id}:secs_since_last_cmd")) < 60);
        if state(id) != "conn_listening" {
            assert_eq!(
                stats[&format!("{id}:listen_addr")],
                format!("tcp:127.0.0.1:{}", server.port())
            );
        }
    }
    // Every client is listed under its own address.
    let addrs: Vec<&String> = ids.iter().map(|id| &stats[&format!("{id}:addr")]).collect();
    for client in &clients {
        let me = format!("tcp:{}", client.local_addr().unwrap());
        assert!(addrs.contains(&&me), "{me} not listed");
    }
    // Closed connections leave the table.
    drop(clients);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stats = parse_stats(&asker.roundtrip(b"stats conns\r\n"));
        let left = stats.keys().filter(|k| k.ends_with(":addr")).count();
        if left == 4 + 20 + 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} entries left");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `lru_crawler metadump` lines as key -> (exp - la or -1, cas, fetch); `la`
/// itself checked against the clock, since each server's clock second
/// differs. `cls` and `size` are each server's own class and item size
/// (ours differ from memcached's as our classes and header do): see
/// [`metadump_classes`].
fn metadump_lines(reply: &[u8]) -> BTreeMap<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut out = BTreeMap::new();
    for fields in metadump_fields(reply) {
        let la: i64 = fields["la"].parse().unwrap();
        assert!((now - 30..=now).contains(&la), "{fields:?}");
        let exp: i64 = fields["exp"].parse().unwrap();
        let ttl = if exp == -1 { -1 } else { exp - la };
        out.insert(
            fields["key"].to_string(),
            format!("ttl={ttl} cas={} fetch={}", fields["cas"], fields["fetch"]),
        );
    }
    out
}

fn metadump_fields(reply: &[u8]) -> Vec<BTreeMap<String, String>> {
    let text = String::from_utf8_lossy(reply);
    assert!(text.ends_with("END\r\n"), "{text:?}");
    text.strip_suffix("END\r\n")
        .unwrap()
        .split_terminator('\n')
        .map(|line| {
            line.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// key -> (cls, size) of a metadump.
fn metadump_classes(reply: &[u8]) -> BTreeMap<String, (u64, u64)> {
    metadump_fields(reply)
        .into_iter()
        .map(|f| {
            (
                f["key"].clone(),
                (f["cls"].parse().unwrap(), f["size"].parse().unwrap()),
            )
        })
        .collect()
}

/// The class `me <key>` gives (each server's own numbering).
fn class_of(c: &mut Conn, key: &str) -> String {
    let reply =
        String::from_utf8_lossy(&c.roundtrip(format!("me {key}\r\n").as_bytes())).into_owned();
    reply
        .split(' ')
        .find_map(|f| f.strip_prefix("cls="))
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string()
}

/// A `stats cachedump` reply with each absolute expiry time checked against
/// the clock and written as its distance from now, in tens of seconds (each
/// server's clock second differs).
fn cachedump_lines(reply: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let text = escape(reply);
    let mut out = String::new();
    for line in text.split_inclusive("\\r\\n") {
        match line.rsplit_once("; ").and_then(|(head, tail)| {
            let exp: i64 = tail.strip_suffix(" s]\\r\\n")?.parse().ok()?;
            Some((head, exp))
        }) {
            Some((head, 0)) => out.push_str(&format!("{head}; never]\n")),
            Some((head, exp)) => {
                assert!((now - 5..now + 1000).contains(&exp), "{line}");
                out.push_str(&format!("{head}; in {}0 s]\n", (exp - now + 5) / 10));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// `lru_crawler metadump` against memcached: the same lines (up to order,
/// each server's clock and class numbering), keys URI-encoded, expired and
/// flushed items left out, class filters, and its errors. Then ours alone:
/// `cls` is the class `stats items` counts the item in, and a dump of each
/// class `stats items` lists gives every key once (what scripts that list
/// keys do).
#[test]
fn metadump_matches_memcached() {
    let setup: &[u8] = b"set plain 0 0 5\r\nhello\r\nset k/\xc3\xa9%~x 7 100 3\r\nabc\r\n\
get k/\xc3\xa9%~x\r\nset big 9 0 3000\r\n";
    let mut setup = setup.to_vec();
    setup.extend(std::iter::repeat_n(b'b', 3000));
    setup.extend_from_slice(
        b"\r\nset gone 0 -1 1\r\nx\r\nset flushed 0 0 1\r\nx\r\nmd flushed q\r\n\
ms bin 2 b\r\nhi\r\nset mid 0 0 700\r\n",
    );
    setup.extend(std::iter::repeat_n(b'm', 700));
    setup.extend_from_slice(b"\r\n");
    // `{big}`: the class of key `big` on the server asked.
    let asks: &[&str] = &[
        "lru_crawler metadump all\r\n",
        "lru_crawler metadump hash\r\n",
        "lru_crawler metadump {big}\r\n",
        "lru_crawler metadump {big},,{big}\r\n",
        "lru_crawler metadump ,\r\n",
        "lru_crawler metadump 255\r\n",
        "lru_crawler metadump 0\r\n",
        "lru_crawler metadump x\r\n",
        "lru_crawler metadump\r\n",
        "lru_crawler metadump all noreply\r\n",
        "lru_crawler bogus\r\n",
    ];
    let mut replies = Vec::new();
    let mut ours = Vec::new();
    for server in [Server::memcached(&[]), Server::shmcached(&[])] {
        let mut c = server.connect();
        c.roundtrip(&setup);
        let big = class_of(&mut c, "big");
        let mut got = Vec::new();
        for ask in asks {
            // memcached's crawler thread writes the dump: a sentinel request
            // behind it may be answered first. Read to END or an error line.
            c.send(ask.replace("{big}", &big).as_bytes());
            let (reply, _) = c.read_until(|b| {
                b.ends_with(b"END\r\n") || (!b.starts_with(b"key=") && b.ends_with(b"\r\n"))
            });
            if reply.ends_with(b"END\r\n") && !reply.starts_with(b"ITEM ") && reply != b"END\r\n" {
                got.push(format!("{:?}", metadump_lines(&reply)));
            } else {
                got.push(escape(&reply));
            }
            ours.push(reply);
        }
        replies.push(got);
        if server.kind().name() == "shmcached" {
            check_metadump_classes(&mut c, &ours[asks.len()..]);
        }
    }
    for (i, ask) in asks.iter().enumerate() {
        assert_eq!(replies[0][i], replies[1][i], "{ask}");
    }
    assert!(
        replies[1][0].contains("k%2F%C3%A9%25~x"),
        "{}",
        replies[1][0]
    );
    assert!(!replies[1][0].contains("gone") && !replies[1][0].contains("flushed"));
}

/// Our metadump's `cls` and `size` are those `stats items` counts: each
/// listed class dumped alone gives its `number` of keys, every key once, of
/// `mem_requested` bytes in all.
fn check_metadump_classes(c: &mut Conn, replies: &[Vec<u8>]) {
    let all = metadump_classes(&replies[0]);
    // `gone` is counted until reclaimed; a crawl reclaims it now.
    assert_eq!(c.roundtrip(b"lru_crawler crawl all\r\n"), b"OK\r\n");
    wait_for_crawl(c);
    let items = parse_stats(&c.roundtrip(b"stats items\r\n"));
    let mut seen = std::collections::BTreeSet::new();
    for (name, number) in items.iter().filter(|(k, _)| k.ends_with(":number")) {
        let class: u64 = name.split(':').nth(1).unwrap().parse().unwrap();
        c.send(format!("lru_crawler metadump {class}\r\n").as_bytes());
        let (reply, _) = c.read_until(|b| b.ends_with(b"END\r\n"));
        let dumped = metadump_classes(&reply);
        assert_eq!(
            dumped.len() as u64,
            number.parse::<u64>().unwrap(),
            "{name}"
        );
        let bytes: u64 = dumped.values().map(|&(_, size)| size).sum();
        assert_eq!(bytes, num(&items, &format!("items:{class}:mem_requested")));
        for (key, &(cls, size)) in &dumped {
            assert_eq!(cls, class, "{key}");
            assert_eq!(all[key].0, class, "{key}");
            assert!(seen.insert(key.clone()), "{key} twice");
            // `me` says the same (`bin` was set base64: its key is `AAEC`-ish).
            if !key.contains('%') && key != "bin" {
                let me = String::from_utf8_lossy(&c.roundtrip(format!("me {key}\r\n").as_bytes()))
                    .into_owned();
                assert!(me.contains(&format!(" cls={cls} size={size}\r\n")), "{me}");
            }
        }
    }
    assert_eq!(seen.len(), all.len());
    // 48-byte header, key, value.
    assert_eq!(all["big"].1, 48 + 3 + 3000);
}

/// `stats cachedump` against memcached: the same lines (keys raw, newest
/// first, each server's clock aside), limits, class ids and errors.
/// memcached lists its class's HOT LRU only, linked expired items included,
/// and its LRU maintainer thread moves items on to COLD and reaps expired
/// ones as they age (under CI load its dump came back empty): so memcached
/// runs without the maintainer, and nothing here expires.
#[test]
fn cachedump_matches_memcached() {
    let mut setup = b"set a 5 100 1\r\n1\r\nset k/\xc3\xa9 0 0 3\r\nabc\r\n\
set c 0 0 4\r\nabcd\r\nset big 0 0 3000\r\n"
        .to_vec();
    setup.extend(std::iter::repeat_n(b'x', 3000));
    setup.extend_from_slice(b"\r\n");
    // `{a}`, `{big}`: the class of that key on the server asked (ours are
    // numbered as `stats items` numbers them, not as memcached's).
    let asks: &[&str] = &[
        "stats cachedump {a} 0\r\n",
        "stats cachedump {a} 2\r\n",
        "stats cachedump {big} 0\r\n",
        "stats cachedump 5 0\r\n",
        "stats cachedump 0 1\r\n",
        "stats cachedump 63 1\r\n",
        "stats cachedump 255 1\r\n",
        "stats cachedump\r\n",
        "stats cachedump 1\r\n",
        "stats cachedump x 1\r\n",
        "stats cachedump 1 -1\r\n",
        "stats cachedump 1 0 extra\r\n",
    ];
    let args = ["-o", "no_lru_maintainer"];
    let mut replies = Vec::new();
    for server in [Server::memcached(&args), Server::shmcached(&args)] {
        let mut c = server.connect();
        c.roundtrip(&setup);
        let (a, big) = (class_of(&mut c, "a"), class_of(&mut c, "big"));
        let got: Vec<String> = asks
            .iter()
            .map(|ask| {
                let ask = ask.replace("{a}", &a).replace("{big}", &big);
                cachedump_lines(&c.roundtrip(ask.as_bytes()))
            })
            .collect();
        replies.push(got);
    }
    for (i, ask) in asks.iter().enumerate() {
        assert_eq!(replies[0][i], replies[1][i], "{ask}");
    }
    assert!(
        replies[1][0].contains("ITEM a [1 b; in 100 s]"),
        "{}",
        replies[1][0]
    );
}

/// A dump larger than a worker's output high-water mark (1 MiB) goes out a
/// slice at a time as the client reads, every item once, and a request
/// pipelined behind it is answered after its END.
#[test]
fn a_large_metadump_streams_every_item_once() {
    let server = Server::shmcached(&["-t", "2", "-m", "64"]);
    let mut c = server.connect();
    let n = 40_000;
    for start in (0..n).step_by(1000) {
        let mut req = Vec::new();
        for i in start..start + 1000 {
            req.extend_from_slice(
                format!("set key:{i:08} 0 0 10 noreply\r\n0123456789\r\n").as_bytes(),
            );
        }
        c.roundtrip(&req);
    }
    let reply = c.roundtrip(b"lru_crawler metadump all\r\nget key:00000007\r\n");
    let text = String::from_utf8_lossy(&reply);
    let (dump, after) = text.split_once("END\r\n").expect("an END");
    assert_eq!(after, "VALUE key:00000007 0 10\r\n0123456789\r\nEND\r\n");
    let keys: std::collections::BTreeSet<&str> = dump
        .lines()
        .map(|l| l.split(' ').next().unwrap().strip_prefix("key=").unwrap())
        .collect();
    assert_eq!(dump.lines().count(), n);
    assert_eq!(keys.len(), n);
    assert!(keys.contains("key%3A00039999"));
}

/// `-X`: both dumps refused with memcached's replies (checked before their
/// arguments, after the command's form), and `stats settings` says so.
#[test]
fn disable_dumping_refuses_both_dumps_as_memcached() {
    let asks: &[&[u8]] = &[
        b"lru_crawler metadump all\r\n",
        b"lru_crawler metadump 99\r\n",
        b"lru_crawler metadump\r\n",
        b"stats cachedump 1 0\r\n",
        b"stats cachedump 1\r\n",
        b"stats cachedump x 1\r\n",
    ];
    let mut replies = Vec::new();
    for server in [Server::memcached(&["-X"]), Server::shmcached(&["-X"])] {
        let mut c = server.connect();
        c.roundtrip(b"set k 0 0 1\r\nx\r\n");
        let mut got: Vec<String> = asks.iter().map(|a| escape(&c.roundtrip(a))).collect();
        let settings = String::from_utf8_lossy(&c.roundtrip(b"stats settings\r\n")).into_owned();
        got.extend(
            settings
                .lines()
                .filter(|l| l.contains("dump_enabled"))
                .map(str::to_string),
        );
        replies.push(got);
    }
    assert_eq!(replies[0], replies[1]);
    assert!(
        replies[1].contains(&"STAT dump_enabled no".to_string()),
        "{:?}",
        replies[1]
    );
    assert_eq!(replies[1][0], "ERROR metadump not allowed\\r\\n");
}

/// `lru_crawler crawl|sleep|tocrawl|enable|disable` against memcached: the
/// same replies, byte for byte, in the same states (a disabled crawler
/// refuses crawls and dumps before it looks at their class ids), and `stats
/// settings` shows what they set. A crawl is let finish before the next one,
/// so that neither answers `BUSY`.
#[test]
fn lru_crawler_commands_answer_as_memcached() {
    let asks: &[&[u8]] = &[
        b"lru_crawler crawl all\r\n",
        b"lru_crawler crawl 1,2\r\n",
        b"lru_crawler crawl 1,,63\r\n",
        b"lru_crawler crawl 01\r\n",
        b"lru_crawler crawl 0\r\n",
        b"lru_crawler crawl 255\r\n",
        b"lru_crawler crawl 1,x\r\n",
        b"lru_crawler crawl ALL\r\n",
        b"lru_crawler crawl hash\r\n",
        b"lru_crawler crawl ,\r\n",
        b"lru_crawler crawl\r\n",
        b"lru_crawler crawl all noreply\r\n",
        b"lru_crawler\r\n",
        b"lru_crawler bogus\r\n",
        b"lru_crawler enable extra\r\n",
        b"lru_crawler sleep\r\n",
        b"lru_crawler sleep 0\r\n",
        b"lru_crawler sleep 1000000\r\n",
        b"lru_crawler sleep 1000001\r\n",
        b"lru_crawler sleep x\r\n",
        b"lru_crawler sleep -1\r\n",
        b"lru_crawler tocrawl\r\n",
        b"lru_crawler tocrawl 4294967296\r\n",
        b"lru_crawler tocrawl -1\r\n",
        b"lru_crawler tocrawl 12\r\n",
        b"lru_crawler enable\r\n",
        b"lru_crawler disable\r\n",
        b"lru_crawler disable\r\n",
        b"lru_crawler crawl all\r\n",
        b"lru_crawler crawl 255\r\n",
        b"lru_crawler crawl hash\r\n",
        b"lru_crawler metadump all\r\n",
        b"lru_crawler metadump 99\r\n",
        b"lru_crawler sleep 5\r\n",
        b"lru_crawler enable\r\n",
        b"lru_crawler enable\r\n",
        b"lru_crawler crawl 1\r\n",
    ];
    let mut replies = Vec::new();
    for server in [Server::memcached(&[]), Server::shmcached(&[])] {
        let mut c = server.connect();
        c.roundtrip(b"set k 0 0 1\r\nx\r\nset gone 0 1 1\r\ny\r\n");
        let mut got = Vec::new();
        for ask in asks {
            let reply = c.roundtrip(ask);
            if reply == b"OK\r\n" && ask.starts_with(b"lru_crawler crawl") {
                wait_for_crawl(&mut c);
            }
            // memcached's crawler thread marks itself stopped as it exits;
            // until then a crawl is `ERROR an unknown error happened`.
            if ask == b"lru_crawler disable\r\n" {
                wait_for_setting(&mut c, "STAT lru_crawler no");
            }
            got.push(format!("{} -> {}", escape(ask), escape(&reply)));
        }
        let settings = String::from_utf8_lossy(&c.roundtrip(b"stats settings\r\n")).into_owned();
        got.extend(
            settings
                .lines()
                .filter(|l| l.contains("lru_crawler"))
                .map(str::to_string),
        );
        replies.push(got);
    }
    for (theirs, ours) in replies[0].iter().zip(&replies[1]) {
        assert_eq!(theirs, ours);
    }
    assert_eq!(replies[0].len(), replies[1].len());
    assert!(replies[1].contains(&"STAT lru_crawler_sleep 5".to_string()));
    // Our class ids, as `stats items` gives them, go past memcached's 63 (a
    // knowing difference): 64 is a class at the default growth factor, 200
    // is past the last.
    let ours = Server::shmcached(&[]);
    let mut c = ours.connect();
    assert_eq!(c.roundtrip(b"lru_crawler crawl 64\r\n"), b"OK\r\n");
    wait_for_crawl(&mut c);
    for ask in [
        &b"lru_crawler crawl 1,200\r\n"[..],
        b"lru_crawler metadump 200\r\n",
    ] {
        assert_eq!(c.roundtrip(ask), b"BADCLASS invalid class id\r\n");
    }
    assert_eq!(
        c.roundtrip(b"stats cachedump 200 1\r\n"),
        b"CLIENT_ERROR Illegal slab id\r\n"
    );
    assert_eq!(c.roundtrip(b"lru_crawler metadump 64\r\n"), b"END\r\n");
}

/// Until `stats` says no crawl runs (memcached's crawler thread, our workers'
/// shares of the index).
fn wait_for_crawl(c: &mut Conn) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while num(
        &parse_stats(&c.roundtrip(b"stats\r\n")),
        "lru_crawler_running",
    ) != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the crawl never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn wait_for_setting(c: &mut Conn, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&c.roundtrip(b"stats settings\r\n")).contains(line) {
        assert!(std::time::Instant::now() < deadline, "never: {line}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
