//! Chaos soak: clients hammer a running shmcached while a killer thread
//! SIGKILLs its workers, and every reply is checked against a model of what
//! the store may hold.
//!
//! ```text
//! shmcached-soak --port P [--host 127.0.0.1] [--seconds 10] [--clients 8]
//!                [--keys 50] [--server-pid PID] [--kill-min-ms 50]
//!                [--kill-max-ms 200] [--max-backoff-ms 400] [--seed N]
//! ```
//!
//! Each client owns its keys (`r<run>:c<client>:k<n>` and a counter
//! `r<run>:c<client>:ctr`), so the only writer of a key is one client and
//! one request at a time: the model per key is the last acknowledged value
//! plus the writes whose reply never came (the connection was reset by a
//! worker's death), which may or may not have been applied. A value encodes
//! its key and sequence number, random padding and an FNV-1a checksum, so a
//! torn, mixed or stale value is told from the right one.
//!
//! The killer SIGKILLs a random live worker every 50..200 ms, sparing a
//! worker whose death would push its slot's respawn back-off past
//! `--max-backoff-ms` (the supervisor waits 50 ms doubling up to 1 s before
//! respawning a worker that lived under 1 s, and the connections queued on a
//! dead slot's socket wait as long). `--max-backoff-ms 1000` kills blindly.
//!
//! Violations: a get or delete that disagrees with the model, a bad
//! checksum, a counter that skips or repeats, an unexpected reply, a
//! reconnect that fails for 5 s, evictions, workers that are not all back
//! within 5 s once the killer stopped, fewer restarts than kills. A request without
//! a reply for 2 s is a hang (we keep waiting, up to 10 s, to learn its
//! latency). The last line is the summary; the exit code is 1 if any
//! violation or hang was seen.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A read or write without progress for this long is a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A hung request is abandoned after this long.
const GIVE_UP: Duration = Duration::from_secs(10);
/// How long a client tries to reconnect before it counts a violation.
const RECONNECT_FOR: Duration = Duration::from_secs(5);
/// How long the workers may take to be all back once the killer stopped.
const RECOVERY_FOR: Duration = Duration::from_secs(5);
/// Details are printed for this many problems; the rest are only counted.
const MAX_PRINTED: u64 = 40;
/// Operations remembered per key, printed with a violation on that key.
const HISTORY: usize = 12;
const MAX_LINE: usize = 4096;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;

struct Opts {
    host: String,
    port: u16,
    seconds: u64,
    clients: usize,
    keys: usize,
    server_pid: Option<u32>,
    kill_min_ms: u64,
    kill_max_ms: u64,
    max_backoff_ms: u64,
    seed: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        host: "127.0.0.1".into(),
        port: 11211,
        seconds: 10,
        clients: 8,
        keys: 50,
        server_pid: None,
        kill_min_ms: 50,
        kill_max_ms: 200,
        max_backoff_ms: 400,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args.next().ok_or(format!("{flag} needs a value"))?;
        let n = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--host" => o.host = v,
            "--port" => o.port = n(&v)? as u16,
            "--seconds" => o.seconds = n(&v)?,
            "--clients" => o.clients = n(&v)? as usize,
            "--keys" => o.keys = n(&v)?.max(1) as usize,
            "--server-pid" => o.server_pid = Some(n(&v)? as u32),
            "--kill-min-ms" => o.kill_min_ms = n(&v)?,
            "--kill-max-ms" => o.kill_max_ms = n(&v)?,
            "--max-backoff-ms" => o.max_backoff_ms = n(&v)?,
            "--seed" => o.seed = n(&v)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.kill_max_ms < o.kill_min_ms {
        return Err("--kill-max-ms is below --kill-min-ms".into());
    }
    Ok(o)
}

// ---- randomness and values ----

/// xorshift64*: seeded, so a run's operations replay from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed).max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Who a key or value belongs to.
#[derive(Clone, Copy)]
struct Owner {
    run: u64,
    client: usize,
}

impl Owner {
    fn key(self, k: usize) -> String {
        format!("r{:x}:c{}:k{k}", self.run, self.client)
    }

    fn counter(self) -> String {
        format!("r{:x}:c{}:ctr", self.run, self.client)
    }

    /// `<run>:c<client>:k<key>:s<seq>:<10..2000 padding bytes>:<fnv1a hex>`,
    /// the same bytes every time for the same (owner, key, seq).
    fn value(self, k: usize, seq: u64) -> Vec<u8> {
        let mut rng = Rng::new(self.run ^ ((self.client as u64) << 48) ^ ((k as u64) << 32) ^ seq);
        let mut v = format!("{:x}:c{}:k{k}:s{seq}:", self.run, self.client).into_bytes();
        let pad = rng.range(10, 2000);
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        v.extend((0..pad).map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize]));
        let sum = fnv1a(&v);
        v.extend_from_slice(format!(":{sum:016x}").as_bytes());
        v
    }

    /// The sequence number of a value read back from key `k`, if it is
    /// exactly a value this owner wrote to `k` (flags carry the seq too).
    fn decode(self, k: usize, flags: u32, data: &[u8]) -> Result<u64, String> {
        let body_len = data.len().checked_sub(17).ok_or("too short")?;
        let (body, tail) = data.split_at(body_len);
        let sum = std::str::from_utf8(&tail[1..])
            .ok()
            .filter(|_| tail[0] == b':')
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or("no checksum at the end")?;
        if fnv1a(body) != sum {
            return Err("checksum mismatch (torn or mixed value)".into());
        }
        let text = String::from_utf8_lossy(body);
        let fields: Vec<&str> = text.splitn(5, ':').collect();
        let wanted = [
            format!("{:x}", self.run),
            format!("c{}", self.client),
            format!("k{k}"),
        ];
        if fields.len() < 5 || fields[..3] != wanted {
            return Err(format!(
                "value of another key ({})",
                fields[..fields.len().min(3)].join(":")
            ));
        }
        let seq = fields[3]
            .strip_prefix('s')
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("no sequence number")?;
        if self.value(k, seq) != data {
            return Err(format!("checksum ok but bytes differ from s{seq}"));
        }
        if flags != seq as u32 {
            return Err(format!("flags {flags} do not match s{seq}"));
        }
        Ok(seq)
    }
}

/// Bytes as a short readable string.
fn show(bytes: &[u8]) -> String {
    let cut = bytes.len().min(100);
    let mut s = bytes[..cut].escape_ascii().to_string();
    if cut < bytes.len() {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

// ---- what all threads count ----

struct Tally {
    start: Instant,
    requests: AtomicU64,
    resets: AtomicU64,
    violations: AtomicU64,
    hangs: AtomicU64,
    kills: AtomicU64,
    printed: AtomicU64,
    /// (seconds since start, slot, pid) of every kill, printed if anything failed.
    kill_log: Mutex<Vec<(f64, usize, u32)>>,
}

impl Tally {
    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn violation(&self, what: impl fmt::Display) {
        self.violations.fetch_add(1, Relaxed);
        self.print("VIOLATION", what);
    }

    fn hang(&self, what: impl fmt::Display) {
        self.hangs.fetch_add(1, Relaxed);
        self.print("HANG", what);
    }

    fn print(&self, kind: &str, what: impl fmt::Display) {
        if self.printed.fetch_add(1, Relaxed) < MAX_PRINTED {
            println!("soak: {kind} at t={:.3}s: {what}", self.secs());
        }
    }
}

// ---- the connection ----

/// Why a request got no (usable) reply.
#[derive(Debug)]
enum Failure {
    /// EOF, reset, refused: the worker died; the request may have been applied.
    Reset(String),
    /// No reply within GIVE_UP; the request may still be applied later.
    Hang(String),
    /// A reply that is not what the protocol allows here.
    Garbled(String),
}

/// A blocking connection that reads replies line by line.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// When the current request was sent, and whether it waited past IO_TIMEOUT.
    sent: Instant,
    stalled: bool,
    /// When it was opened and how many replies it carried: a hang on a
    /// connection that never carried one was queued for a worker.
    opened: Instant,
    replies: u64,
}

impl Conn {
    fn connect(addr: &SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            sent: Instant::now(),
            stalled: false,
            opened: Instant::now(),
            replies: 0,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.sent = Instant::now();
        self.stalled = false;
        self.stream.write_all(bytes).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Hang(format!("write: {e}")),
            _ => Failure::Reset(format!("write: {e}")),
        })
    }

    fn fill(&mut self) -> Result<(), Failure> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Failure::Reset("EOF".into())),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    // Keep waiting to learn how long it takes; the caller
                    // counts the hang.
                    self.stalled = true;
                    if self.sent.elapsed() >= GIVE_UP {
                        return Err(Failure::Hang(format!(
                            "no reply after {:.1}s",
                            self.sent.elapsed().as_secs_f64()
                        )));
                    }
                }
                Err(e) => return Err(Failure::Reset(format!("read: {e}"))),
            }
        }
    }

    /// One reply line, without its `\r\n`.
    fn line(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_LINE {
                return Err(Failure::Garbled(format!(
                    "no line end in {}",
                    show(&self.buf[self.pos..])
                )));
            }
            self.fill()?;
        }
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, Failure> {
        while self.buf.len() - self.pos < n {
            self.fill()?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// One-line reply to `request`.
    fn simple(&mut self, request: &[u8]) -> Result<Vec<u8>, Failure> {
        self.send(request)?;
        self.line()
    }

    /// `get key`: the flags and data, or None on a miss.
    fn get(&mut self, key: &str) -> Result<Option<(u32, Vec<u8>)>, Failure> {
        self.send(format!("get {key}\r\n").as_bytes())?;
        let line = self.line()?;
        if line == b"END" {
            return Ok(None);
        }
        let garbled = |why: &str, line: &[u8]| Failure::Garbled(format!("{why}: {}", show(line)));
        let text = String::from_utf8_lossy(&line).into_owned();
        let words: Vec<&str> = text.split(' ').collect();
        let (flags, len) = match words[..] {
            ["VALUE", k, flags, len] if k == key => (flags.parse::<u32>(), len.parse::<usize>()),
            _ => return Err(garbled("unexpected reply to get", &line)),
        };
        let (Ok(flags), Ok(len)) = (flags, len) else {
            return Err(garbled("bad VALUE line", &line));
        };
        let mut data = self.exact(len + 2)?;
        if !data.ends_with(b"\r\n") {
            return Err(garbled("data block not ended by \\r\\n", &data));
        }
        data.truncate(len);
        let end = self.line()?;
        if end != b"END" {
            return Err(garbled("no END after the value", &end));
        }
        Ok(Some((flags, data)))
    }

    /// `stats [args]` as (name, value) pairs.
    fn stats(&mut self, args: &str) -> Result<Vec<(String, String)>, Failure> {
        self.send(format!("stats{args}\r\n").as_bytes())?;
        let mut out = Vec::new();
        loop {
            let line = self.line()?;
            if line == b"END" {
                return Ok(out);
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let mut words = text.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("STAT"), Some(name), Some(value)) => out.push((name.into(), value.into())),
                _ => return Err(Failure::Garbled(format!("stats line {}", show(&line)))),
            }
        }
    }
}

// ---- the model ----

/// What a key may hold: nothing, or the value written with this seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Miss,
    Seq(u64),
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Miss => write!(f, "miss"),
            Val::Seq(s) => write!(f, "s{s}"),
        }
    }
}

/// One key as its client knows it.
struct KeyModel {
    /// The state after the last acknowledged write or successful read.
    acked: Val,
    /// Writes sent after it whose connection was reset before the reply:
    /// any one of them may be the current state (the latest applied wins).
    maybe: Vec<Val>,
    /// Writes abandoned after GIVE_UP: they may be applied at any time.
    late: Vec<Val>,
    /// An unexpected reply left the state unknown: the next read decides.
    unknown: bool,
    history: History,
}

impl KeyModel {
    fn new() -> KeyModel {
        KeyModel {
            acked: Val::Miss,
            maybe: Vec::new(),
            late: Vec::new(),
            unknown: false,
            history: History::default(),
        }
    }

    fn allows(&self, v: Val) -> bool {
        self.unknown || self.acked == v || self.maybe.contains(&v) || self.late.contains(&v)
    }

    fn allowed(&self) -> String {
        let mut all = vec![self.acked.to_string()];
        all.extend(self.maybe.iter().map(|v| format!("{v}?")));
        all.extend(self.late.iter().map(|v| format!("{v}(late)")));
        if self.unknown {
            all.push("anything".into());
        }
        format!("{{{}}}", all.join(", "))
    }

    fn collapse(&mut self, v: Val) {
        self.acked = v;
        self.maybe.clear();
        self.unknown = false;
    }

    fn note(&mut self, t: f64, entry: String) {
        self.history.note(t, entry);
    }

    fn history(&self) -> String {
        self.history.text()
    }
}

/// The last HISTORY operations on a key, for violation reports.
#[derive(Default)]
struct History(VecDeque<String>);

impl History {
    fn note(&mut self, t: f64, entry: String) {
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(format!("t={t:.3} {entry}"));
    }

    fn text(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join("; ")
    }
}

/// The client's counter: `acked` is the last value seen; `unacked` incrs
/// were sent since without a reply (each applied or not).
struct CounterModel {
    acked: u64,
    unacked: u64,
    late: u64,
    history: History,
}

impl CounterModel {
    fn note(&mut self, t: f64, entry: String) {
        self.history.note(t, entry);
    }

    fn history(&self) -> String {
        self.history.text()
    }
}

// ---- a client ----

struct Client {
    owner: Owner,
    addr: SocketAddr,
    rng: Rng,
    conn: Option<Conn>,
    keys: Vec<KeyModel>,
    counter: CounterModel,
    seq: u64,
    tally: Arc<Tally>,
}

/// What a write's failure means for the model.
enum Outcome<T> {
    Reply(T),
    /// Maybe applied, before anything else we send on this key.
    Maybe,
    /// Maybe applied, at any later time.
    Late,
    /// Unexpected reply; already counted.
    Garbled,
}

impl Client {
    fn new(o: &Opts, addr: SocketAddr, run: u64, client: usize, tally: Arc<Tally>) -> Client {
        Client {
            owner: Owner { run, client },
            addr,
            rng: Rng::new(o.seed ^ ((client as u64 + 1) << 40)),
            conn: None,
            keys: (0..o.keys).map(|_| KeyModel::new()).collect(),
            counter: CounterModel {
                acked: 0,
                unacked: 0,
                late: 0,
                history: History::default(),
            },
            seq: 0,
            tally,
        }
    }

    /// The open connection, reconnecting for up to RECONNECT_FOR if needed.
    fn conn(&mut self) -> Option<&mut Conn> {
        if self.conn.is_none() {
            let since = Instant::now();
            let mut last = String::new();
            while since.elapsed() < RECONNECT_FOR {
                match Conn::connect(&self.addr) {
                    Ok(c) => {
                        self.conn = Some(c);
                        break;
                    }
                    Err(e) => last = e.to_string(),
                }
                thread::sleep(Duration::from_millis(20));
            }
            if self.conn.is_none() {
                self.tally.violation(format_args!(
                    "client {} cannot reconnect for {RECONNECT_FOR:?}: {last}",
                    self.owner.client
                ));
            }
        }
        self.conn.as_mut()
    }

    /// Run `op` on the connection, turning failures into outcomes (and
    /// counting them). `what` names the request in messages.
    fn request<T>(
        &mut self,
        what: &str,
        op: impl FnOnce(&mut Conn) -> Result<T, Failure>,
    ) -> Outcome<T> {
        let tally = self.tally.clone();
        let client = self.owner.client;
        let Some(conn) = self.conn() else {
            return Outcome::Maybe;
        };
        tally.requests.fetch_add(1, Relaxed);
        let result = op(conn);
        let (stalled, waited) = (conn.stalled, conn.sent.elapsed());
        let what = format!(
            "client {}: {what} (on a connection opened {:.3}s before, after {} replies)",
            client,
            conn.opened.elapsed().as_secs_f64() - waited.as_secs_f64(),
            conn.replies
        );
        conn.replies += 1;
        match result {
            Ok(reply) => {
                if stalled {
                    tally.hang(format_args!(
                        "{what}: reply after {:.3}s",
                        waited.as_secs_f64()
                    ));
                }
                Outcome::Reply(reply)
            }
            Err(Failure::Reset(why)) => {
                tally.resets.fetch_add(1, Relaxed);
                self.conn = None;
                if stalled {
                    tally.hang(format_args!(
                        "{what}: {why} after {:.3}s",
                        waited.as_secs_f64()
                    ));
                }
                Outcome::Maybe
            }
            Err(Failure::Hang(why)) => {
                self.conn = None;
                tally.hang(format_args!("{what}: {why}"));
                Outcome::Late
            }
            Err(Failure::Garbled(why)) => {
                self.conn = None;
                tally.violation(format_args!("{what}: {why}"));
                Outcome::Garbled
            }
        }
    }

    fn run(mut self, deadline: Instant) -> Client {
        self.create_counter(deadline);
        while Instant::now() < deadline {
            let k = (self.rng.next_u64() % self.keys.len() as u64) as usize;
            match self.rng.next_u64() % 100 {
                0..35 => self.set(k),
                35..70 => self.get(k),
                70..80 => self.delete(k),
                80..95 => self.incr(),
                _ => self.get_counter(),
            }
        }
        self
    }

    fn create_counter(&mut self, deadline: Instant) {
        let key = self.owner.counter();
        let request = format!("set {key} 0 0 1\r\n0\r\n");
        // Setting 0 again is harmless: no incr was sent yet.
        while Instant::now() < deadline {
            match self.request("create counter", |c| c.simple(request.as_bytes())) {
                Outcome::Reply(line) if line == b"STORED" => return,
                Outcome::Reply(line) => {
                    self.tally
                        .violation(format_args!("set {key} 0: {}", show(&line)));
                    return;
                }
                _ => {}
            }
        }
    }

    fn set(&mut self, k: usize) {
        self.seq += 1;
        let seq = self.seq;
        let key = self.owner.key(k);
        let data = self.owner.value(k, seq);
        let mut request = format!("set {key} {} 0 {}\r\n", seq as u32, data.len()).into_bytes();
        request.extend_from_slice(&data);
        request.extend_from_slice(b"\r\n");
        let outcome = self.request(&format!("set {key} s{seq}"), |c| c.simple(&request));
        let t = self.tally.secs();
        let m = &mut self.keys[k];
        match outcome {
            Outcome::Reply(line) if line == b"STORED" => {
                m.note(t, format!("set s{seq} -> STORED"));
                m.collapse(Val::Seq(seq));
            }
            Outcome::Reply(line) => {
                m.note(t, format!("set s{seq} -> {}", show(&line)));
                m.maybe.push(Val::Seq(seq));
                m.unknown = true;
                self.tally.violation(format_args!(
                    "set {key} s{seq}: reply {}; history: {}",
                    show(&line),
                    m.history()
                ));
            }
            Outcome::Maybe => {
                m.note(t, format!("set s{seq} -> reset"));
                m.maybe.push(Val::Seq(seq));
            }
            Outcome::Late => {
                m.note(t, format!("set s{seq} -> abandoned"));
                m.late.push(Val::Seq(seq));
            }
            Outcome::Garbled => {
                m.note(t, format!("set s{seq} -> garbled"));
                m.maybe.push(Val::Seq(seq));
                m.unknown = true;
            }
        }
    }

    fn delete(&mut self, k: usize) {
        let key = self.owner.key(k);
        let request = format!("delete {key}\r\n");
        let outcome = self.request(&format!("delete {key}"), |c| c.simple(request.as_bytes()));
        let t = self.tally.secs();
        let m = &mut self.keys[k];
        match outcome {
            Outcome::Reply(line) => {
                let expected = m.allowed();
                let ok = match &line[..] {
                    b"DELETED" => {
                        m.unknown
                            || m.acked != Val::Miss
                            || m.maybe.iter().chain(&m.late).any(|v| *v != Val::Miss)
                    }
                    b"NOT_FOUND" => m.allows(Val::Miss),
                    _ => false,
                };
                m.note(t, format!("delete -> {}", show(&line)));
                if !ok {
                    self.tally.violation(format_args!(
                        "delete {key}: reply {} but the key may hold {expected}; history: {}",
                        show(&line),
                        m.history()
                    ));
                }
                m.collapse(Val::Miss);
            }
            Outcome::Maybe => {
                m.note(t, "delete -> reset".into());
                m.maybe.push(Val::Miss);
            }
            Outcome::Late => {
                m.note(t, "delete -> abandoned".into());
                m.late.push(Val::Miss);
            }
            Outcome::Garbled => {
                m.note(t, "delete -> garbled".into());
                m.unknown = true;
            }
        }
    }

    fn get(&mut self, k: usize) {
        let key = self.owner.key(k);
        if let Outcome::Reply(got) = self.request(&format!("get {key}"), |c| c.get(&key)) {
            self.check_value(k, got, "get");
        }
    }

    /// Check what a get of key `k` returned against the model; collapse it.
    fn check_value(&mut self, k: usize, got: Option<(u32, Vec<u8>)>, what: &str) {
        let t = self.tally.secs();
        let key = self.owner.key(k);
        let decoded = match &got {
            None => Ok(Val::Miss),
            Some((flags, data)) => self.owner.decode(k, *flags, data).map(Val::Seq),
        };
        let m = &mut self.keys[k];
        match decoded {
            Ok(v) => {
                m.note(t, format!("{what} -> {v}"));
                if !m.allows(v) {
                    self.tally.violation(format_args!(
                        "{what} {key}: expected one of {} got {v}; history: {}",
                        m.allowed(),
                        m.history()
                    ));
                }
                m.collapse(v);
            }
            Err(why) => {
                let (flags, data) = got.unwrap_or_default();
                m.note(t, format!("{what} -> bad value"));
                self.tally.violation(format_args!(
                    "{what} {key}: {why}: expected one of {} got flags {flags} data {}; history: {}",
                    m.allowed(),
                    show(&data),
                    m.history()
                ));
                m.unknown = true;
            }
        }
    }

    fn incr(&mut self) {
        let key = self.owner.counter();
        let request = format!("incr {key} 1\r\n");
        let outcome = self.request(&format!("incr {key}"), |c| c.simple(request.as_bytes()));
        let t = self.tally.secs();
        let c = &mut self.counter;
        match outcome {
            Outcome::Reply(line) => {
                let (lo, hi) = (c.acked + 1, c.acked + 1 + c.unacked + c.late);
                let n = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                c.note(t, format!("incr -> {}", show(&line)));
                match n {
                    Some(n) if (lo..=hi).contains(&n) => {
                        c.acked = n;
                        c.unacked = 0;
                    }
                    Some(n) => {
                        let kind = if n < lo { "repeat" } else { "skip" };
                        self.tally.violation(format_args!(
                            "incr {key}: counter {kind}: expected {lo}..={hi} got {n}; history: {}",
                            c.history()
                        ));
                        c.acked = n;
                        c.unacked = 0;
                    }
                    None => self.tally.violation(format_args!(
                        "incr {key}: reply {}; history: {}",
                        show(&line),
                        c.history()
                    )),
                }
            }
            Outcome::Maybe | Outcome::Garbled => {
                c.note(t, "incr -> reset".into());
                c.unacked += 1;
            }
            Outcome::Late => {
                c.note(t, "incr -> abandoned".into());
                c.late += 1;
            }
        }
    }

    fn get_counter(&mut self) {
        let key = self.owner.counter();
        if let Outcome::Reply(got) = self.request(&format!("get {key}"), |c| c.get(&key)) {
            self.check_counter(got, "get");
        }
    }

    /// A read counter is between the last acked value and that plus every
    /// incr that may have been applied since.
    fn check_counter(&mut self, got: Option<(u32, Vec<u8>)>, what: &str) {
        let t = self.tally.secs();
        let key = self.owner.counter();
        let c = &mut self.counter;
        let (lo, hi) = (c.acked, c.acked + c.unacked + c.late);
        let n = got.as_ref().and_then(|(_, d)| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| s.trim_end_matches(' ').parse::<u64>().ok())
        });
        c.note(t, format!("{what} -> {n:?}"));
        match n {
            Some(n) if (lo..=hi).contains(&n) => {
                c.acked = n;
                c.unacked = 0;
            }
            _ => {
                let shown = got.map_or("miss".into(), |(_, d)| show(&d));
                self.tally.violation(format_args!(
                    "{what} {key}: expected {lo}..={hi} got {shown}; history: {}",
                    c.history()
                ));
                if let Some(n) = n {
                    c.acked = n;
                    c.unacked = 0;
                }
            }
        }
    }

    /// After the chaos: every key must read back as the model says. Reads
    /// have no effect, so a reset read is simply retried.
    fn verify(&mut self) {
        for k in 0..self.keys.len() {
            let key = self.owner.key(k);
            if let Some(got) = self.read_back(&key) {
                self.check_value(k, got, "final get");
            }
        }
        let key = self.owner.counter();
        if let Some(got) = self.read_back(&key) {
            self.check_counter(got, "final get");
        }
    }

    fn read_back(&mut self, key: &str) -> Option<Option<(u32, Vec<u8>)>> {
        for _ in 0..5 {
            match self.request(&format!("final get {key}"), |c| c.get(key)) {
                Outcome::Reply(got) => return Some(got),
                Outcome::Garbled => return None,
                _ => {}
            }
        }
        self.tally
            .violation(format_args!("final get {key}: no reply in 5 attempts"));
        None
    }
}

// ---- the killer ----

/// The supervisor's back-off rule (src/supervisor): a worker that lived
/// under 1 s is respawned after 100 ms doubling up to 5 s, else at once.
const LONG_LIFE: Duration = Duration::from_millis(1100); // 1 s, plus a margin
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;

/// The live workers as (slot, pid), from `stats workers`; with the
/// supervisor's pid, only its live children.
fn live_workers(o: &Opts, addr: &SocketAddr, stats: &mut Option<Conn>) -> Vec<(usize, u32)> {
    let Some(lines) = stats_of(addr, stats, " workers") else {
        return Vec::new();
    };
    lines
        .iter()
        .filter_map(|(name, v)| {
            let slot = name
                .strip_prefix("worker:")?
                .strip_suffix(":pid")?
                .parse()
                .ok()?;
            Some((slot, v.parse::<u32>().ok()?))
        })
        .filter(|&(_, pid)| {
            pid != 0
                && proc_stat(pid)
                    .is_some_and(|s| s.state != 'Z' && o.server_pid.is_none_or(|sup| s.ppid == sup))
        })
        .collect()
}

/// Every 50..200 ms, SIGKILL a random live worker, but only one whose death
/// keeps its slot's respawn back-off within `--max-backoff-ms`: a slot left
/// dead for seconds holds the connections queued on its socket for as long,
/// which the clients would (rightly) report as hangs, and which says nothing
/// about the store.
fn killer(o: Arc<Opts>, addr: SocketAddr, tally: Arc<Tally>, deadline: Instant) {
    let mut rng = Rng::new(o.seed ^ 0x6b69_6c6c);
    let mut stats = None;
    // Per slot, the back-off the supervisor applied at its last death.
    let mut backoff_ms: Vec<u64> = Vec::new();
    // Per slot, the pid we killed last: it stays listed, and is not yet a
    // zombie, for a moment after SIGKILL; it must not be counted twice.
    let mut killed: Vec<u32> = Vec::new();
    loop {
        let tick = Duration::from_millis(rng.range(o.kill_min_ms, o.kill_max_ms));
        thread::sleep(tick.min(deadline.saturating_duration_since(Instant::now())));
        if Instant::now() >= deadline {
            return;
        }
        let mut candidates = Vec::new();
        for (slot, pid) in live_workers(&o, &addr, &mut stats) {
            if backoff_ms.len() <= slot {
                backoff_ms.resize(slot + 1, 0);
                killed.resize(slot + 1, 0);
            }
            if killed[slot] == pid {
                continue;
            }
            let next = if age(pid).is_some_and(|a| a >= LONG_LIFE) {
                0
            } else {
                (backoff_ms[slot] * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS)
            };
            if next <= o.max_backoff_ms {
                candidates.push((slot, pid, next));
            }
        }
        // `stats workers` may have waited for a respawn past the deadline.
        if candidates.is_empty() || Instant::now() >= deadline {
            continue;
        }
        let (slot, pid, next) = candidates[(rng.next_u64() % candidates.len() as u64) as usize];
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        if unsafe { kill(pid as i32, SIGKILL) } == 0 {
            backoff_ms[slot] = next;
            killed[slot] = pid;
            tally.kills.fetch_add(1, Relaxed);
            if let Ok(mut log) = tally.kill_log.lock() {
                log.push((tally.secs(), slot, pid));
            }
        }
    }
}

/// The fields of /proc/<pid>/stat the killer needs.
struct ProcStat {
    state: char,
    ppid: u32,
    /// Clock ticks (USER_HZ, 100 on Linux) since boot.
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: count fields after its last `)`.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// How long `pid` has been running.
fn age(pid: u32) -> Option<Duration> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let started = proc_stat(pid)?.start_ticks as f64 / 100.0;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

// ---- the server's own view ----

/// `stats<args>` on a reusable connection, retried over a few reconnects.
fn stats_of(
    addr: &SocketAddr,
    conn: &mut Option<Conn>,
    args: &str,
) -> Option<Vec<(String, String)>> {
    for _ in 0..3 {
        if conn.is_none() {
            *conn = Conn::connect(addr).ok();
        }
        let c = conn.as_mut()?;
        match c.stats(args) {
            Ok(lines) => return Some(lines),
            Err(_) => *conn = None,
        }
    }
    None
}

fn stat(lines: &[(String, String)], name: &str) -> Option<u64> {
    lines
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The `stats` counters the soak checks.
#[derive(Debug, Clone, Copy)]
struct Health {
    workers: u64,
    alive: u64,
    restarts: u64,
    evictions: u64,
}

fn health(addr: &SocketAddr, conn: &mut Option<Conn>) -> Option<Health> {
    let lines = stats_of(addr, conn, "")?;
    Some(Health {
        workers: stat(&lines, "workers")?,
        alive: stat(&lines, "workers_alive")?,
        restarts: stat(&lines, "worker_restarts")?,
        evictions: stat(&lines, "evictions")?,
    })
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("shmcached-soak: {e}");
            return ExitCode::from(64);
        }
    };
    let addr = match (o.host.as_str(), o.port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        _ => {
            eprintln!("shmcached-soak: cannot resolve {}:{}", o.host, o.port);
            return ExitCode::from(64);
        }
    };
    let run = splitmix(o.seed) & 0xffff_ffff;
    println!(
        "soak: seed={} run={run:x} port={} seconds={} clients={} keys={} kill={}..{}ms max-backoff={}ms",
        o.seed,
        o.port,
        o.seconds,
        o.clients,
        o.keys,
        o.kill_min_ms,
        o.kill_max_ms,
        o.max_backoff_ms
    );
    let mut stats = None;
    let Some(before) = health(&addr, &mut stats) else {
        eprintln!("shmcached-soak: no stats from {addr}");
        return ExitCode::from(69);
    };
    let tally = Arc::new(Tally {
        start: Instant::now(),
        requests: AtomicU64::new(0),
        resets: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        hangs: AtomicU64::new(0),
        kills: AtomicU64::new(0),
        printed: AtomicU64::new(0),
        kill_log: Mutex::new(Vec::new()),
    });
    let deadline = tally.start + Duration::from_secs(o.seconds);

    let clients: Vec<_> = (0..o.clients)
        .map(|i| {
            let client = Client::new(&o, addr, run, i, tally.clone());
            thread::spawn(move || client.run(deadline))
        })
        .collect();
    let killer = {
        let (o, tally) = (o.clone(), tally.clone());
        thread::spawn(move || killer(o, addr, tally, deadline))
    };
    let mut finished = Vec::new();
    for c in clients {
        match c.join() {
            Ok(c) => finished.push(c),
            Err(_) => tally.violation("a client thread panicked"),
        }
    }
    let _ = killer.join();
    let kills = tally.kills.load(Relaxed);

    // Every killed worker reaped, counted and replaced.
    let since = Instant::now();
    let mut after = None;
    while since.elapsed() < RECOVERY_FOR {
        after = health(&addr, &mut stats);
        if after.is_some_and(|h| h.alive == h.workers && h.restarts - before.restarts >= kills) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let recovered = since.elapsed();
    match after {
        Some(h) if h.alive == h.workers && h.restarts - before.restarts >= kills => {
            println!(
                "soak: {} workers alive {:.3}s after the chaos; restarts={} kills={kills}",
                h.workers,
                recovered.as_secs_f64(),
                h.restarts - before.restarts
            );
        }
        Some(h) => tally.violation(format_args!(
            "{RECOVERY_FOR:?} after the chaos: workers_alive={}/{} restarts={} kills={kills}",
            h.alive,
            h.workers,
            h.restarts - before.restarts
        )),
        None => tally.violation("no stats after the chaos"),
    }
    if let Some(sup) = o.server_pid {
        let live = live_workers(&o, &addr, &mut stats).len() as u64;
        if live != before.workers {
            tally.violation(format_args!(
                "supervisor {sup} has {live} live children, expected {}",
                before.workers
            ));
        }
    }

    for c in &mut finished {
        c.verify();
    }
    match health(&addr, &mut stats) {
        Some(h) if h.evictions != before.evictions => tally.violation(format_args!(
            "{} evictions during the soak: the model assumes none (raise -m)",
            h.evictions - before.evictions
        )),
        Some(_) => {}
        None => tally.violation("no stats at the end"),
    }

    let (violations, hangs) = (tally.violations.load(Relaxed), tally.hangs.load(Relaxed));
    if violations + hangs > 0
        && let Ok(log) = tally.kill_log.lock()
    {
        let kills: Vec<String> = log
            .iter()
            .map(|(t, slot, pid)| format!("{t:.3}:{slot}:{pid}"))
            .collect();
        println!("soak: kills (t:slot:pid): {}", kills.join(" "));
    }
    println!(
        "soak: seconds={} clients={} kills={kills} requests={} resets={} violations={violations} hangs={hangs}",
        o.seconds,
        o.clients,
        tally.requests.load(Relaxed),
        tally.resets.load(Relaxed),
    );
    if violations + hangs > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
