//! Load generator for side-by-side runs of shmcached against memcached
//! (`bench/compare` drives it; `docs/benchmarks.md` explains the method).
//!
//! ```text
//! shmcached-bench --port P [--host 127.0.0.1] [--conns 50] [--threads 1]
//!                 [--depth 1] [--ratio 1:10] [--keys 100000] [--key-size 32]
//!                 [--value-size 100] [--secs 5 | --requests N] [--rate OPS]
//!                 [--miss] [--prefill] [--server-pid PID] [--seed N]
//! ```
//!
//! Each of `--threads` threads runs one `mio` event loop over its share of
//! the `--conns` connections (dealt round-robin).
//!
//! - **Closed loop** (default): every connection keeps `--depth` requests in
//!   flight, sending one as soon as a reply comes back. A latency runs from
//!   the moment its request entered the send buffer to the moment its reply
//!   was read.
//! - **Open loop** (`--rate OPS`): requests are scheduled at even intervals,
//!   OPS in total, split over the threads and dealt round-robin over each
//!   thread's connections. A connection holds at most `--depth` in flight and
//!   queues the rest; every latency runs from the *intended* send time, so a
//!   server that stalls is charged for each request that should have gone out
//!   meanwhile (no coordinated omission). epoll's timeout has millisecond
//!   resolution, so the loop polls without waiting while the next send is
//!   less than 1 ms away: that spins the client's core, never the server's.
//!
//! Keys are `k` and a zero-padded index (`m` under `--miss`, whose gets all
//! ask for keys never set), drawn uniformly from `--keys`. Each request is a
//! set with probability sets/(sets+gets) from `--ratio SETS:GETS`. A value is
//! its 8-byte little-endian version followed by a byte stream derived from
//! (key, version, length); the flags are derived from (key, version) too.
//! The prefill writes version 0, connection `c` writes `c << 40 | n`. Every
//! hit is regenerated from the key and the version it carries and compared
//! byte for byte, so a torn value, another key's value or flipped bytes are
//! verification errors.
//!
//! Before measuring: `--prefill` sets every key once (pipelined, over
//! `--threads` blocking connections), then all `--conns` connections are
//! opened and each does one `version` round trip, so the server has accepted
//! every one before the clock starts. With `--server-pid`, the CPU time
//! (utime + stime from `/proc/<pid>/stat`) of that process and all its
//! descendants is read at the start and the end of the measured window, and
//! so is the machine's busy time (`/proc/stat`): what neither the client nor
//! the server used is `other_cpu_util`, the load other programs put on the
//! machine meanwhile, in cores.
//!
//! Output is one JSON line on stdout; details of the first errors go to
//! stderr. Exit status: 0 clean, 1 if any error was counted (verification,
//! server, protocol, I/O, unanswered), 2 on bad usage or failed setup.
//! `--requests 0` with `--prefill` only prefills.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lexopt::{Arg, Parser, ValueExt};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const USAGE: &str = "\
usage: shmcached-bench --port P [options]
  --host H          server address (default 127.0.0.1)
  --port P          server port (required)
  --conns N         connections (default 50)
  --threads T       event-loop threads (default 1)
  --depth D         requests in flight per connection (default 1)
  --ratio S:G       set:get ratio (default 1:10)
  --keys K          key space (default 100000)
  --key-size B      key length in bytes (default 32)
  --value-size B    value length in bytes, at least 8 (default 100)
  --secs S          measure for S seconds (default 5)
  --requests N      measure N requests instead
  --rate OPS        open loop at OPS requests/s in total
  --miss            every request is a get of a key never set
  --multiget N      with --miss: each get asks N keys (a server-heavy request:
                    N lookups, a 5-byte reply)
  --prefill         set every key once before measuring
  --server-pid PID  report the CPU time of PID and its descendants
  --seed N          seed of the key and operation choices (default 1)";

/// With requests outstanding and no reply for this long, the server is
/// stuck: what is still owed counts as unanswered and the run ends.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply line longer than this without `\r\n` means we lost the stream.
const MAX_LINE: usize = 1024;
/// Pipelined sets per batch while prefilling.
const PREFILL_BATCH: u64 = 64;
/// Errors described on stderr, per thread.
const ERRORS_SHOWN: usize = 5;

/// When measuring stops.
#[derive(Clone, Copy, Debug)]
enum Length {
    Secs(f64),
    Requests(u64),
}

#[derive(Clone, Debug)]
struct Settings {
    host: String,
    port: u16,
    addr: SocketAddr,
    conns: usize,
    threads: usize,
    depth: usize,
    sets: u64,
    gets: u64,
    keys: u64,
    key_size: usize,
    value_size: usize,
    length: Length,
    rate: Option<f64>,
    miss: bool,
    /// Keys per get (only with `miss`).
    multiget: u64,
    prefill: bool,
    server_pid: Option<u32>,
    seed: u64,
}

impl Settings {
    fn keyspace(&self) -> KeySpace {
        KeySpace {
            prefix: if self.miss { b'm' } else { b'k' },
            size: self.key_size,
        }
    }

    /// This thread's share of `--requests` (`u64::MAX` when timed).
    fn budget(&self, thread: usize) -> u64 {
        match self.length {
            Length::Secs(_) => u64::MAX,
            Length::Requests(n) => {
                let t = self.threads as u64;
                n / t + u64::from((thread as u64) < n % t)
            }
        }
    }
}

/// `Ok(None)`: help was asked for.
fn parse_args() -> Result<Option<Settings>, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port: Option<u16> = None;
    let (mut conns, mut threads, mut depth) = (50usize, 1usize, 1usize);
    let (mut sets, mut gets) = (1u64, 10u64);
    let (mut keys, mut key_size, mut value_size) = (100_000u64, 32usize, 100usize);
    let mut length = Length::Secs(5.0);
    let mut rate = None;
    let (mut miss, mut prefill) = (false, false);
    let mut multiget = 1u64;
    let mut server_pid = None;
    let mut seed = 1u64;

    let mut p = Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Arg::Long("host") => host = p.value().map_err(e)?.string().map_err(e)?,
            Arg::Long("port") => port = Some(p.value().map_err(e)?.parse().map_err(e)?),
            Arg::Long("conns") => conns = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("threads") => threads = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("depth") => depth = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("ratio") => {
                let v = p.value().map_err(e)?.string().map_err(e)?;
                let parsed = v
                    .split_once(':')
                    .and_then(|(s, g)| Some((s.parse().ok()?, g.parse().ok()?)));
                match parsed {
                    Some((s, g)) if s + g > 0 => (sets, gets) = (s, g),
                    _ => return Err(format!("--ratio {v}: expected SETS:GETS, e.g. 1:10")),
                }
            }
            Arg::Long("keys") => keys = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("key-size") => key_size = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("value-size") => value_size = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("secs") => length = Length::Secs(p.value().map_err(e)?.parse().map_err(e)?),
            Arg::Long("requests") => {
                length = Length::Requests(p.value().map_err(e)?.parse().map_err(e)?)
            }
            Arg::Long("rate") => rate = Some(p.value().map_err(e)?.parse::<f64>().map_err(e)?),
            Arg::Long("miss") => miss = true,
            Arg::Long("multiget") => multiget = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("prefill") => prefill = true,
            Arg::Long("server-pid") => server_pid = Some(p.value().map_err(e)?.parse().map_err(e)?),
            Arg::Long("seed") => seed = p.value().map_err(e)?.parse().map_err(e)?,
            Arg::Long("help") | Arg::Short('h') => return Ok(None),
            other => return Err(other.unexpected().to_string()),
        }
    }

    let port = port.ok_or("--port is required")?;
    if conns == 0 || threads == 0 || depth == 0 || keys == 0 || multiget == 0 {
        return Err("--conns, --threads, --depth, --keys and --multiget must be at least 1".into());
    }
    if multiget > 1 && !miss {
        return Err("--multiget needs --miss (a multi-key reply is not verified)".into());
    }
    let threads = threads.min(conns);
    let digits = keys.saturating_sub(1).to_string().len();
    if key_size < 1 + digits || key_size > 250 {
        return Err(format!(
            "--key-size {key_size}: {keys} keys need {}..=250 bytes",
            1 + digits
        ));
    }
    if value_size < 8 {
        return Err("--value-size must be at least 8 (the version stamp)".into());
    }
    if let Length::Secs(s) = length
        && !(s.is_finite() && s >= 0.0)
    {
        return Err(format!("--secs {s}: not a duration"));
    }
    if let Some(r) = rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(format!("--rate {r}: must be positive"));
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|err| format!("{host}:{port}: {err}"))?
        .next()
        .ok_or(format!("{host}:{port}: no address"))?;
    Ok(Some(Settings {
        host,
        port,
        addr,
        conns,
        threads,
        depth,
        multiget,
        sets,
        gets,
        keys,
        key_size,
        value_size,
        length,
        rate,
        miss,
        prefill,
        server_pid,
        seed,
    }))
}

/// Keys of one fixed length: a prefix byte and a zero-padded decimal index.
#[derive(Clone, Copy, Debug)]
struct KeySpace {
    prefix: u8,
    size: usize,
}

impl KeySpace {
    fn push(&self, out: &mut Vec<u8>, index: u64) {
        let start = out.len();
        out.resize(start + self.size, b'0');
        out[start] = self.prefix;
        let (mut i, mut n) = (start + self.size, index);
        loop {
            i -= 1;
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The byte stream after the version stamp depends on all three, so a value
/// of another key, version or length never passes for this one.
fn value_seed(key: u64, version: u64, len: usize) -> u64 {
    let mut s = key
        .wrapping_mul(0xA24B_AED4_963E_E407)
        .wrapping_add(version.rotate_left(29))
        ^ (len as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25);
    splitmix(&mut s)
}

fn flags_for(key: u64, version: u64) -> u32 {
    let mut s = key ^ version.rotate_left(17);
    (splitmix(&mut s) >> 32) as u32
}

fn push_value(out: &mut Vec<u8>, key: u64, version: u64, len: usize) {
    out.extend_from_slice(&version.to_le_bytes());
    let mut state = value_seed(key, version, len);
    let mut left = len - 8;
    while left > 0 {
        let word = splitmix(&mut state).to_le_bytes();
        let n = left.min(8);
        out.extend_from_slice(&word[..n]);
        left -= n;
    }
}

/// The version `data` carries if it is exactly what a set of `key` at that
/// version stored.
fn stamped_version(data: &[u8], key: u64) -> Option<u64> {
    let (stamp, rest) = data.split_first_chunk::<8>()?;
    let version = u64::from_le_bytes(*stamp);
    let mut state = value_seed(key, version, data.len());
    rest.chunks(8)
        .all(|chunk| chunk == &splitmix(&mut state).to_le_bytes()[..chunk.len()])
        .then_some(version)
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn parse_decimal<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// ```text
/// set <key> <flags> 0 <bytes>\r\n<data>\r\n
/// ```
fn push_set(out: &mut Vec<u8>, keys: KeySpace, key: u64, version: u64, len: usize) {
    out.extend_from_slice(b"set ");
    keys.push(out, key);
    out.push(b' ');
    push_decimal(out, u64::from(flags_for(key, version)));
    out.extend_from_slice(b" 0 ");
    push_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
    push_value(out, key, version, len);
    out.extend_from_slice(b"\r\n");
}

/// ```text
/// get <key> [<key+1> ...]\r\n
/// ```
fn push_get(out: &mut Vec<u8>, keys: KeySpace, key: u64, count: u64) {
    out.extend_from_slice(b"get ");
    for i in 0..count {
        if i > 0 {
            out.push(b' ');
        }
        keys.push(out, key + i);
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Set,
    Get,
}

/// A request sent (or, open loop, scheduled) and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    op: Op,
    key: u64,
    /// Where its latency starts: the send time closed loop, the intended
    /// send time open loop.
    start: Instant,
}

/// What one complete reply says about the request at the head of the queue.
#[derive(Debug)]
enum Outcome {
    Stored,
    Hit,
    Miss,
    ServerError(String),
    Wrong(String),
}

#[derive(Debug)]
enum Parse {
    Incomplete,
    /// The reply took this many bytes.
    Complete(usize, Outcome),
    /// The stream no longer makes sense; the connection is dropped.
    Desync(String),
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
}

/// The first line of `buf` without its `\r\n`, and the bytes it spans.
fn split_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    match buf.iter().take(MAX_LINE).position(|&b| b == b'\n') {
        Some(nl) if nl > 0 && buf[nl - 1] == b'\r' => Ok(Some((&buf[..nl - 1], nl + 1))),
        Some(_) => Err(format!("line without \\r: {:?}", show(buf))),
        None if buf.len() >= MAX_LINE => Err(format!("runaway line: {:?}", show(buf))),
        None => Ok(None),
    }
}

fn is_error_line(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR")
}

/// Reads the reply to `pending` from the front of `buf`.
///
/// ```text
/// set: STORED\r\n
/// get: VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n   or   END\r\n
/// ```
fn parse_reply(buf: &[u8], pending: &Pending, keys: KeySpace, scratch: &mut Vec<u8>) -> Parse {
    let (line, after) = match split_line(buf) {
        Ok(Some(found)) => found,
        Ok(None) => return Parse::Incomplete,
        Err(why) => return Parse::Desync(why),
    };
    if is_error_line(line) {
        return Parse::Complete(after, Outcome::ServerError(show(line)));
    }
    match pending.op {
        Op::Set if line == b"STORED" => Parse::Complete(after, Outcome::Stored),
        Op::Get if line == b"END" => Parse::Complete(after, Outcome::Miss),
        Op::Get if line.starts_with(b"VALUE ") => {
            let mut fields = line[6..].split(|&b| b == b' ');
            let (Some(key), Some(flags), Some(len)) = (
                fields.next(),
                fields.next().and_then(parse_decimal::<u32>),
                fields.next().and_then(parse_decimal::<usize>),
            ) else {
                return Parse::Desync(format!("bad VALUE line: {:?}", show(line)));
            };
            let end = after + len + 2 + 5;
            if buf.len() < end {
                return Parse::Incomplete;
            }
            let data = &buf[after..after + len];
            if &buf[after + len..end] != b"\r\nEND\r\n" {
                return Parse::Desync(format!("no \\r\\nEND\\r\\n after {len} bytes"));
            }
            scratch.clear();
            keys.push(scratch, pending.key);
            let outcome = if key != scratch.as_slice() {
                Outcome::Wrong(format!("asked {:?}, got {:?}", show(scratch), show(key)))
            } else if keys.prefix == b'm' {
                Outcome::Wrong(format!("hit on {:?}, a key never set", show(key)))
            } else {
                match stamped_version(data, pending.key) {
                    None => Outcome::Wrong(format!(
                        "{:?}: {len} bytes that no set of this key wrote",
                        show(key)
                    )),
                    Some(v) if flags != flags_for(pending.key, v) => Outcome::Wrong(format!(
                        "{:?}: flags {flags}, version {v} was set with {}",
                        show(key),
                        flags_for(pending.key, v)
                    )),
                    Some(_) => Outcome::Hit,
                }
            };
            Parse::Complete(end, outcome)
        }
        _ => Parse::Desync(format!("{:?} to a {:?}", show(line), pending.op)),
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    ops: u64,
    sets: u64,
    gets: u64,
    hits: u64,
    misses: u64,
    verify_errors: u64,
    server_errors: u64,
    protocol_errors: u64,
    io_errors: u64,
    unanswered: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.ops += o.ops;
        self.sets += o.sets;
        self.gets += o.gets;
        self.hits += o.hits;
        self.misses += o.misses;
        self.verify_errors += o.verify_errors;
        self.server_errors += o.server_errors;
        self.protocol_errors += o.protocol_errors;
        self.io_errors += o.io_errors;
        self.unanswered += o.unanswered;
    }

    fn errors(&self) -> u64 {
        self.verify_errors
            + self.server_errors
            + self.protocol_errors
            + self.io_errors
            + self.unanswered
    }
}

/// Counts plus the first few error descriptions.
#[derive(Debug, Default)]
struct Tally {
    counts: Counts,
    shown: Vec<String>,
}

impl Tally {
    fn note(&mut self, what: String) {
        if self.shown.len() < ERRORS_SHOWN {
            self.shown.push(what);
        }
    }
}

/// xorshift64*: the key and operation choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut s = seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Rng(splitmix(&mut s) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((u128::from(self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)) * u128::from(n)) >> 64) as u64
    }
}

struct Conn {
    stream: TcpStream,
    /// Top bits of the versions this connection writes.
    uid: u64,
    sent_sets: u64,
    out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    filled: usize,
    in_flight: VecDeque<Pending>,
    /// Open loop: intended send times not yet sent (depth was reached).
    backlog: VecDeque<Instant>,
    alive: bool,
}

/// One thread's loop and what it has seen.
struct Driver<'a> {
    s: &'a Settings,
    keys: KeySpace,
    conns: Vec<Conn>,
    rng: Rng,
    tally: Tally,
    hist: Histogram<u64>,
    scratch: Vec<u8>,
    budget: u64,
    /// Requests sent or scheduled and not yet answered.
    outstanding: u64,
    max_send_lag: Duration,
    /// When the last reply was settled (or the run started).
    last_reply: Instant,
}

impl Driver<'_> {
    fn next_op(&mut self) -> (Op, u64) {
        let key = self.rng.below(self.s.keys);
        if !self.s.miss && self.rng.below(self.s.sets + self.s.gets) < self.s.sets {
            (Op::Set, key)
        } else {
            (Op::Get, key)
        }
    }

    /// Puts one request in connection `i`'s send buffer.
    fn send(&mut self, i: usize, start: Instant) {
        let (op, key) = self.next_op();
        let (keys, len) = (self.keys, self.s.value_size);
        let c = &mut self.conns[i];
        match op {
            Op::Set => {
                c.sent_sets += 1;
                push_set(&mut c.out, keys, key, c.uid << 40 | c.sent_sets, len);
            }
            Op::Get => push_get(&mut c.out, keys, key, self.s.multiget),
        }
        c.in_flight.push_back(Pending { op, key, start });
    }

    /// Closed loop: tops connection `i` up to `--depth` in flight.
    fn top_up(&mut self, i: usize, now: Instant) {
        while self.budget > 0 && self.conns[i].in_flight.len() < self.s.depth {
            self.budget -= 1;
            self.outstanding += 1;
            self.send(i, now);
        }
    }

    /// Open loop: sends what connection `i` has queued, as depth allows.
    fn send_backlog(&mut self, i: usize, now: Instant) {
        while self.conns[i].in_flight.len() < self.s.depth {
            let Some(intended) = self.conns[i].backlog.pop_front() else {
                break;
            };
            self.max_send_lag = self
                .max_send_lag
                .max(now.saturating_duration_since(intended));
            self.send(i, intended);
        }
    }

    /// Writes until done or the socket is full (a short write: writable
    /// readiness will come back).
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let mut failed = None;
        while c.alive && c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => failed = Some("write returned 0".to_string()),
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => failed = Some(format!("write: {e}")),
            }
            break;
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
        if let Some(what) = failed {
            self.kill(i, what);
        }
    }

    /// Reads what has arrived and settles every complete reply.
    fn receive(&mut self, i: usize, now: Instant) {
        loop {
            let c = &mut self.conns[i];
            if !c.alive {
                return;
            }
            if c.filled == c.input.len() {
                let grown = (c.input.len() * 2).max(4096);
                c.input.resize(grown, 0);
            }
            let room = c.input.len() - c.filled;
            match c.stream.read(&mut c.input[c.filled..]) {
                Ok(0) => return self.kill(i, "server closed the connection".into()),
                Ok(n) => {
                    c.filled += n;
                    self.settle(i, now);
                    // A short read emptied the socket; edge-triggered epoll
                    // reports the next arrival.
                    if n < room {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.kill(i, format!("read: {e}")),
            }
        }
    }

    fn settle(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let mut pos = 0;
        while pos < c.filled {
            let Some(&pending) = c.in_flight.front() else {
                let what = format!("unasked-for bytes: {:?}", show(&c.input[pos..c.filled]));
                return self.kill_desync(i, what);
            };
            match parse_reply(
                &c.input[pos..c.filled],
                &pending,
                self.keys,
                &mut self.scratch,
            ) {
                Parse::Incomplete => break,
                Parse::Desync(what) => return self.kill_desync(i, what),
                Parse::Complete(used, outcome) => {
                    pos += used;
                    let ns = now.saturating_duration_since(pending.start).as_nanos();
                    self.hist.saturating_record(ns.max(1) as u64);
                    let counts = &mut self.tally.counts;
                    counts.ops += 1;
                    match pending.op {
                        Op::Set => counts.sets += 1,
                        Op::Get => counts.gets += 1,
                    }
                    match outcome {
                        Outcome::Stored => {}
                        Outcome::Hit => counts.hits += 1,
                        Outcome::Miss => counts.misses += 1,
                        Outcome::ServerError(line) => {
                            counts.server_errors += 1;
                            self.tally.note(format!("server: {line}"));
                        }
                        Outcome::Wrong(what) => {
                            counts.hits += 1;
                            counts.verify_errors += 1;
                            self.tally.note(format!("verification: {what}"));
                        }
                    }
                    c.in_flight.pop_front();
                    self.outstanding -= 1;
                    self.last_reply = now;
                }
            }
        }
        c.input.copy_within(pos..c.filled, 0);
        c.filled -= pos;
    }

    fn kill_desync(&mut self, i: usize, what: String) {
        self.tally.counts.protocol_errors += 1;
        self.tally.note(format!("protocol: {what}"));
        self.drop_conn(i);
    }

    fn kill(&mut self, i: usize, what: String) {
        self.tally.counts.io_errors += 1;
        self.tally.note(format!("connection: {what}"));
        self.drop_conn(i);
    }

    /// Everything the connection still owed is unanswered.
    fn drop_conn(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.alive = false;
        let lost = (c.in_flight.len() + c.backlog.len()) as u64;
        c.in_flight.clear();
        c.backlog.clear();
        self.outstanding -= lost;
        self.tally.counts.unanswered += lost;
    }

    fn run(&mut self, poll: &mut Poll, t0: Instant) -> io::Result<()> {
        let deadline = match self.s.length {
            Length::Secs(secs) => Some(t0 + Duration::from_secs_f64(secs)),
            Length::Requests(_) => None,
        };
        // Requests per second of this thread; request k is due at t0 + k/rate.
        let open = self.s.rate.map(|rate| rate / self.s.threads as f64);
        let due_at = |k: u64, rate: f64| t0 + Duration::from_secs_f64(k as f64 / rate);
        let mut events = Events::with_capacity(1024);
        let mut next_k: u64 = 0;
        let mut next_conn = 0usize;
        let mut touched: Vec<usize> = Vec::new();
        let mut draining = false;
        self.last_reply = t0;

        if open.is_none() {
            for i in 0..self.conns.len() {
                self.top_up(i, t0);
                self.flush(i);
            }
        }
        loop {
            let now = Instant::now();
            // Open loop: deal every request due by now, none due at or after
            // the deadline.
            let mut next_due = None;
            if let Some(rate) = open {
                let mut due = due_at(next_k, rate);
                while self.budget > 0 && due <= now && deadline.is_none_or(|d| due < d) {
                    // To the next live connection, round-robin.
                    let n = self.conns.len();
                    let i = (0..n)
                        .map(|k| (next_conn + k) % n)
                        .find(|&i| self.conns[i].alive)
                        .unwrap_or(next_conn);
                    next_conn = (i + 1) % n;
                    self.budget -= 1;
                    self.outstanding += 1;
                    self.conns[i].backlog.push_back(due);
                    touched.push(i);
                    next_k += 1;
                    due = due_at(next_k, rate);
                }
                if deadline.is_some_and(|d| due >= d) {
                    self.budget = 0;
                }
                for i in touched.drain(..) {
                    self.send_backlog(i, now);
                    self.flush(i);
                }
                next_due = (self.budget > 0).then_some(due);
            }
            let past_deadline = open.is_none() && deadline.is_some_and(|d| now >= d);
            if self.budget == 0 || past_deadline {
                self.budget = 0;
                draining = true;
            }
            if draining && self.outstanding == 0 {
                return Ok(());
            }
            let stalled_at = self.last_reply + STALL_TIMEOUT;
            if self.outstanding > 0 && now >= stalled_at {
                self.tally.note(format!(
                    "no reply for {}s with {} requests outstanding",
                    STALL_TIMEOUT.as_secs(),
                    self.outstanding
                ));
                for i in 0..self.conns.len() {
                    if self.conns[i].alive {
                        self.drop_conn(i);
                    }
                }
                return Ok(());
            }
            if self.conns.iter().all(|c| !c.alive) {
                return Ok(());
            }

            let mut timeout = match deadline {
                Some(d) if !draining => d - now.min(d),
                _ => Duration::from_millis(100),
            };
            if self.outstanding > 0 {
                timeout = timeout.min(stalled_at - now);
            }
            if let Some(due) = next_due {
                // Sleep in epoll only while the next send is a millisecond
                // or more away (its timeout rounds up to whole milliseconds).
                let wait = due.saturating_duration_since(Instant::now());
                let sleep = wait.saturating_sub(Duration::from_millis(1));
                timeout = timeout.min(sleep);
            }
            let timeout = timeout.min(Duration::from_millis(100));

            match poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                let i = event.token().0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.receive(i, now);
                    if !self.conns[i].alive {
                        continue;
                    }
                    if open.is_some() {
                        self.send_backlog(i, now);
                    } else {
                        self.top_up(i, now);
                    }
                }
                self.flush(i);
            }
        }
    }
}

/// What a thread hands back.
struct ThreadReport {
    tally: Tally,
    hist: Histogram<u64>,
    max_send_lag: Duration,
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant bounds are valid")
}

/// Start, end and release: the main thread reads the CPU counters between
/// `end` and `release`, before any connection closes.
struct Gates {
    start: Barrier,
    end: Barrier,
    release: Barrier,
}

fn drive(
    s: &Settings,
    thread: usize,
    streams: Vec<(u64, StdTcpStream)>,
    gates: &Gates,
) -> Result<ThreadReport, String> {
    let setup = || -> io::Result<(Poll, Vec<Conn>)> {
        let poll = Poll::new()?;
        let mut conns = Vec::with_capacity(streams.len());
        for (i, (uid, std_stream)) in streams.into_iter().enumerate() {
            std_stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                stream,
                uid,
                sent_sets: 0,
                out: Vec::new(),
                out_pos: 0,
                input: Vec::new(),
                filled: 0,
                in_flight: VecDeque::new(),
                backlog: VecDeque::new(),
                alive: true,
            });
        }
        Ok((poll, conns))
    };
    let prepared = setup();
    gates.start.wait();
    let t0 = Instant::now();
    let outcome = prepared.and_then(|(mut poll, conns)| {
        let mut d = Driver {
            s,
            keys: s.keyspace(),
            conns,
            rng: Rng::new(s.seed, thread as u64),
            tally: Tally::default(),
            hist: new_histogram(),
            scratch: Vec::new(),
            budget: s.budget(thread),
            outstanding: 0,
            max_send_lag: Duration::ZERO,
            last_reply: t0,
        };
        d.run(&mut poll, t0)?;
        Ok(d)
    });
    gates.end.wait();
    gates.release.wait();
    let d = outcome.map_err(|e| format!("thread {thread}: {e}"))?;
    Ok(ThreadReport {
        tally: d.tally,
        hist: d.hist,
        max_send_lag: d.max_send_lag,
    })
}

fn connect(s: &Settings) -> io::Result<StdTcpStream> {
    let stream = StdTcpStream::connect(s.addr)?;
    stream.set_nodelay(true)?;
    // Close with RST: thousands of TIME_WAITs per run would eat the
    // ephemeral ports that later runs need.
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    Ok(stream)
}

/// Opens every connection and does one `version` round trip on each, so the
/// server has accepted them all before the clock starts.
fn open_connections(s: &Settings) -> Result<Vec<StdTcpStream>, String> {
    let mut streams = Vec::with_capacity(s.conns);
    for n in 0..s.conns {
        let stream = connect(s).map_err(|e| format!("connection {n} of {}: {e}", s.conns))?;
        streams.push(stream);
    }
    for (n, mut stream) in streams.iter().enumerate() {
        stream
            .write_all(b"version\r\n")
            .map_err(|e| format!("connection {n}: version: {e}"))?;
    }
    for (n, stream) in streams.iter().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") && reply.len() < MAX_LINE {
            match (&*stream).read(&mut byte) {
                Ok(1) => reply.push(byte[0]),
                Ok(_) => return Err(format!("connection {n}: closed before VERSION")),
                Err(e) => return Err(format!("connection {n}: version: {e}")),
            }
        }
        if !reply.starts_with(b"VERSION ") {
            return Err(format!("connection {n}: {:?} to version", show(&reply)));
        }
        stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    }
    Ok(streams)
}

/// Sets every key at version 0, `--threads` connections in parallel, in
/// pipelined batches.
fn prefill(s: &Settings) -> Tally {
    let fill = |thread: u64| -> Tally {
        let mut tally = Tally::default();
        let t = s.threads as u64;
        let (from, to) = (s.keys * thread / t, s.keys * (thread + 1) / t);
        let stream = match connect(s) {
            Ok(stream) => stream,
            Err(e) => {
                tally.counts.io_errors += 1;
                tally.note(format!("prefill: connect: {e}"));
                return tally;
            }
        };
        let mut reader = BufReader::new(&stream);
        let (mut batch, mut line) = (Vec::new(), Vec::new());
        let keys = KeySpace {
            prefix: b'k',
            size: s.key_size,
        };
        let mut key = from;
        while key < to {
            let end = (key + PREFILL_BATCH).min(to);
            batch.clear();
            for k in key..end {
                push_set(&mut batch, keys, k, 0, s.value_size);
            }
            if let Err(e) = (&stream).write_all(&batch) {
                tally.counts.io_errors += 1;
                tally.note(format!("prefill: write: {e}"));
                return tally;
            }
            for _ in key..end {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        tally.counts.io_errors += 1;
                        tally.note("prefill: no reply".into());
                        return tally;
                    }
                    Ok(_) if line == b"STORED\r\n" => {}
                    Ok(_) => {
                        tally.counts.server_errors += 1;
                        tally.note(format!("prefill: {:?}", show(&line)));
                    }
                }
            }
            key = end;
        }
        tally
    };
    thread::scope(|scope| {
        let handles: Vec<_> = (0..s.threads as u64)
            .map(|t| scope.spawn(move || fill(t)))
            .collect();
        let mut all = Tally::default();
        for h in handles {
            let part = h.join().unwrap_or_else(|_| {
                let mut t = Tally::default();
                t.note("prefill thread panicked".into());
                t.counts.io_errors += 1;
                t
            });
            all.counts.add(&part.counts);
            all.shown.extend(part.shown);
        }
        all
    })
}

/// utime + stime (and cutime + cstime when `reaped`) of one process, in
/// clock ticks, and its parent.
fn stat_ticks(pid: u32, reaped: bool) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state ppid ... utime(14) stime cutime cstime.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let mut ticks = field(14)? + field(15)?;
    if reaped {
        ticks += field(16)? + field(17)?;
    }
    Some((u32::try_from(field(4)?).ok()?, ticks))
}

/// CPU seconds used so far by `root` and every process below it (the
/// supervisor's workers). Children it already reaped count through its
/// cutime/cstime.
fn tree_cpu_secs(root: u32) -> Option<f64> {
    let (_, mut ticks) = stat_ticks(root, true)?;
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            && let Some((ppid, t)) = stat_ticks(pid, false)
        {
            procs.push((pid, ppid, t));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(pid, ppid, t) in &procs {
            if ppid == parent && pid != root {
                tree.push(pid);
                ticks += t;
            }
        }
        i += 1;
    }
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        _ => 100.0,
    }
}

/// CPU seconds the whole machine has been busy, all cores together
/// (`/proc/stat`: user nice system irq softirq steal; guest time is inside
/// user).
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<u64>();
    Some(busy as f64 / clock_ticks())
}

fn self_cpu_secs() -> f64 {
    stat_ticks(std::process::id(), false).map_or(0.0, |(_, t)| t as f64 / clock_ticks())
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(v: Option<f64>, decimals: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("null".into(), |v| format!("{v:.decimals$}"))
}

struct Measured {
    counts: Counts,
    prefill: Counts,
    prefill_secs: f64,
    elapsed: f64,
    hist: Histogram<u64>,
    server_cpu: Option<f64>,
    client_cpu: f64,
    /// CPU seconds the rest of the machine (neither this client nor the
    /// server's processes) used in the window: how noisy the run was.
    other_cpu: Option<f64>,
    max_send_lag: Duration,
}

fn report(s: &Settings, m: &Measured) -> String {
    let c = &m.counts;
    let us = |q: f64| {
        if m.hist.is_empty() {
            "null".into()
        } else {
            format!("{:.1}", m.hist.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    let per_sec = |x: f64| (m.elapsed > 0.0).then(|| x / m.elapsed);
    let per_op = |x: f64| (c.ops > 0).then(|| x / c.ops as f64);
    let length = match s.length {
        Length::Secs(secs) => format!("\"secs\": {secs}"),
        Length::Requests(n) => format!("\"requests\": {n}"),
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg.split(' ').take(3).collect::<Vec<_>>().join(" ");
    format!(
        concat!(
            "{{\"ops_per_sec\": {}, \"ops\": {}, \"sets\": {}, \"gets\": {}, ",
            "\"get_hits\": {}, \"get_misses\": {}, \"errors\": {}, ",
            "\"verify_errors\": {}, \"server_errors\": {}, \"protocol_errors\": {}, ",
            "\"io_errors\": {}, \"unanswered\": {}, \"prefill_errors\": {}, ",
            "\"elapsed_s\": {:.3}, \"prefill_s\": {:.3}, ",
            "\"latency_us\": {{\"p50\": {}, \"p90\": {}, \"p99\": {}, \"p999\": {}, ",
            "\"max\": {}, \"mean\": {}}}, ",
            "\"max_send_lag_us\": {}, ",
            "\"server_cpu_s\": {}, \"server_cpu_us_per_op\": {}, \"server_cpu_util\": {}, ",
            "\"client_cpu_util\": {}, \"other_cpu_util\": {}, \"loadavg\": {}, ",
            "\"settings\": {{\"host\": {}, \"port\": {}, \"conns\": {}, \"threads\": {}, ",
            "\"depth\": {}, \"ratio\": \"{}:{}\", \"keys\": {}, \"key_size\": {}, ",
            "\"value_size\": {}, {}, \"rate\": {}, \"mode\": \"{}\", \"miss\": {}, ",
            "\"prefill\": {}, \"server_pid\": {}, \"seed\": {}}}}}"
        ),
        json_opt(per_sec(c.ops as f64), 0),
        c.ops,
        c.sets,
        c.gets,
        c.hits,
        c.misses,
        c.errors(),
        c.verify_errors,
        c.server_errors,
        c.protocol_errors,
        c.io_errors,
        c.unanswered,
        m.prefill.errors(),
        m.elapsed,
        m.prefill_secs,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        us(1.0),
        if m.hist.is_empty() {
            "null".into()
        } else {
            format!("{:.1}", m.hist.mean() / 1000.0)
        },
        if s.rate.is_some() {
            format!("{:.1}", m.max_send_lag.as_secs_f64() * 1e6)
        } else {
            "null".into()
        },
        json_opt(m.server_cpu, 3),
        json_opt(m.server_cpu.and_then(|cpu| per_op(cpu * 1e6)), 3),
        json_opt(m.server_cpu.and_then(per_sec), 3),
        json_opt(per_sec(m.client_cpu), 3),
        json_opt(m.other_cpu.and_then(per_sec), 3),
        json_str(&loadavg),
        json_str(&s.host),
        s.port,
        s.conns,
        s.threads,
        s.depth,
        s.sets,
        s.gets,
        s.keys,
        s.key_size,
        s.value_size,
        length,
        json_opt(s.rate, 0),
        if s.rate.is_some() { "open" } else { "closed" },
        s.miss,
        s.prefill,
        s.server_pid.map_or("null".into(), |p| p.to_string()),
        s.seed,
    )
}

fn measure(s: &Settings) -> Result<Measured, String> {
    let mut prefilled = Tally::default();
    let mut prefill_secs = 0.0;
    if s.prefill {
        let t = Instant::now();
        prefilled = prefill(s);
        prefill_secs = t.elapsed().as_secs_f64();
        for what in &prefilled.shown {
            eprintln!("shmcached-bench: {what}");
        }
    }
    let mut m = Measured {
        counts: Counts::default(),
        prefill: prefilled.counts,
        prefill_secs,
        elapsed: 0.0,
        hist: new_histogram(),
        server_cpu: None,
        client_cpu: 0.0,
        other_cpu: None,
        max_send_lag: Duration::ZERO,
    };
    if matches!(s.length, Length::Requests(0)) {
        return Ok(m);
    }

    let mut shares: Vec<Vec<(u64, StdTcpStream)>> = (0..s.threads).map(|_| Vec::new()).collect();
    for (n, stream) in open_connections(s)?.into_iter().enumerate() {
        shares[n % s.threads].push((n as u64 + 1, stream));
    }
    let gates = Gates {
        start: Barrier::new(s.threads + 1),
        end: Barrier::new(s.threads + 1),
        release: Barrier::new(s.threads + 1),
    };
    let reports = thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(t, streams)| {
                let gates = &gates;
                scope.spawn(move || drive(s, t, streams, gates))
            })
            .collect();
        gates.start.wait();
        let (t0, client0, busy0) = (Instant::now(), self_cpu_secs(), machine_busy_secs());
        let server0 = s.server_pid.and_then(tree_cpu_secs);
        gates.end.wait();
        let elapsed = t0.elapsed().as_secs_f64();
        let server1 = s.server_pid.and_then(tree_cpu_secs);
        let (client1, busy1) = (self_cpu_secs(), machine_busy_secs());
        m.client_cpu = client1 - client0;
        m.elapsed = elapsed;
        m.server_cpu = server0.zip(server1).map(|(a, b)| b - a);
        m.other_cpu = busy0
            .zip(busy1)
            .zip(m.server_cpu)
            .map(|((a, b), server)| (b - a - server - m.client_cpu).max(0.0));
        gates.release.wait();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect::<Vec<_>>()
    });
    for r in reports {
        let r = r?;
        m.counts.add(&r.tally.counts);
        m.hist.add(&r.hist).map_err(|e| format!("{e:?}"))?;
        m.max_send_lag = m.max_send_lag.max(r.max_send_lag);
        for what in r.tally.shown {
            eprintln!("shmcached-bench: {what}");
        }
    }
    Ok(m)
}

fn main() -> ExitCode {
    let s = match parse_args() {
        Ok(Some(s)) => s,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("shmcached-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match measure(&s) {
        Ok(m) => {
            println!("{}", report(&s, &m));
            if m.counts.errors() + m.prefill.errors() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("shmcached-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(op: Op, key: u64) -> Pending {
        Pending {
            op,
            key,
            start: Instant::now(),
        }
    }

    const KEYS: KeySpace = KeySpace {
        prefix: b'k',
        size: 10,
    };

    /// A get reply carrying what a set of `key` at `version` stored.
    fn hit(key: u64, version: u64, len: usize) -> Vec<u8> {
        let mut set = Vec::new();
        push_set(&mut set, KEYS, key, version, len);
        let header_end = set.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut reply = b"VALUE ".to_vec();
        reply.extend_from_slice(&set[4..header_end - 2]);
        // Drop the " 0 <len>" exptime: VALUE has flags then bytes.
        let line = String::from_utf8(reply).unwrap();
        let mut parts: Vec<&str> = line.split(' ').collect();
        parts.remove(3);
        let mut reply = parts.join(" ").into_bytes();
        reply.extend_from_slice(b"\r\n");
        reply.extend_from_slice(&set[header_end..]);
        reply.extend_from_slice(b"END\r\n");
        reply
    }

    #[test]
    fn keys_are_fixed_length_and_padded() {
        let mut out = Vec::new();
        KEYS.push(&mut out, 42);
        assert_eq!(out, b"k000000042");
    }

    #[test]
    fn values_verify_only_for_their_key() {
        let mut v = Vec::new();
        push_value(&mut v, 7, 99, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(stamped_version(&v, 7), Some(99));
        assert_eq!(stamped_version(&v, 8), None);
        v[50] ^= 1;
        assert_eq!(stamped_version(&v, 7), None);
    }

    #[test]
    fn replies_parse_as_specified() {
        let mut scratch = Vec::new();
        let get = pending(Op::Get, 3);
        let set = pending(Op::Set, 3);
        let good = hit(3, 5, 20);
        let complete_hit = format!("Complete({}, Hit)", good.len());
        let cases: Vec<(&Pending, Vec<u8>, &str)> = vec![
            (&set, b"STORED\r\n".to_vec(), "Complete(8, Stored)"),
            (&get, b"END\r\n".to_vec(), "Complete(5, Miss)"),
            (&get, good.clone(), &complete_hit),
            (&get, good[..good.len() - 1].to_vec(), "Incomplete"),
            (&get, b"STOR".to_vec(), "Incomplete"),
            (&set, b"NOT_STORED\r\n".to_vec(), "Desync"),
            (
                &set,
                b"SERVER_ERROR out of memory\r\n".to_vec(),
                "ServerError",
            ),
            (&get, hit(4, 5, 20), "Wrong(\"asked"),
        ];
        for (p, bytes, want) in cases {
            let got = format!("{:?}", parse_reply(&bytes, p, KEYS, &mut scratch));
            assert!(
                got.starts_with(want) || got.contains(want),
                "{bytes:?}: {got}"
            );
        }
    }

    #[test]
    fn corrupted_or_misflagged_hits_are_wrong() {
        let mut scratch = Vec::new();
        let get = pending(Op::Get, 3);
        let mut flipped = hit(3, 5, 20);
        let at = flipped.len() - 10;
        flipped[at] ^= 0x20;
        let got = format!("{:?}", parse_reply(&flipped, &get, KEYS, &mut scratch));
        assert!(got.contains("no set of this key wrote"), "{got}");
    }

    #[test]
    fn miss_keys_never_hit() {
        let mut scratch = Vec::new();
        let miss_keys = KeySpace {
            prefix: b'm',
            size: 10,
        };
        let mut reply = hit(3, 5, 20);
        reply[6] = b'm';
        let got = format!(
            "{:?}",
            parse_reply(&reply, &pending(Op::Get, 3), miss_keys, &mut scratch)
        );
        assert!(got.contains("never set"), "{got}");
    }
}
