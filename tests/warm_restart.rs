//! Warm restart (`-e <memory file>`): what a stop and a start with the same
//! file keep, what a start refuses, and what SIGKILL of every process in the
//! middle of writes leaves (a consistent cache, or an empty one with the
//! reason logged: never a wrong value).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{SHMCACHED, SIGKILL, SIGTERM, SIGUSR1, Server, XorShift, descendants, signal};

/// A memory file on /dev/shm, removed at the end of the test.
struct MemoryFile(PathBuf);

impl MemoryFile {
    fn new(tag: &str) -> MemoryFile {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = PathBuf::from(format!(
            "/dev/shm/warmtest-{tag}-{}-{nanos:x}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        MemoryFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A buffered client for bulk work.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        line
    }

    /// `gets` of `keys` in one request: key -> (flags, cas, value).
    fn gets(&mut self, keys: &[String]) -> HashMap<String, (u32, u64, Vec<u8>)> {
        self.send(format!("gets {}\r\n", keys.join(" ")).as_bytes());
        let mut found = HashMap::new();
        loop {
            let line = self.line();
            if line == "END\r\n" {
                return found;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert!(
                parts.len() == 5 && parts[0] == "VALUE",
                "unexpected line {line:?}"
            );
            let len: usize = parts[3].parse().unwrap();
            let mut data = vec![0u8; len + 2];
            std::io::Read::read_exact(&mut self.reader, &mut data).expect("value");
            assert_eq!(&data[len..], b"\r\n");
            data.truncate(len);
            found.insert(
                parts[1].to_string(),
                (parts[2].parse().unwrap(), parts[4].parse().unwrap(), data),
            );
        }
    }

    fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let mut value = None;
        loop {
            let line = self.line();
            if line == "END\r\n" {
                return value.unwrap_or_else(|| panic!("no stat {name}"));
            }
            let mut parts = line.split_whitespace().skip(1);
            if parts.next() == Some(name) {
                value = parts.next().and_then(|v| v.parse().ok());
            }
        }
    }
}

/// The value of `key` at `version`, `len` bytes: its key and version, then
/// bytes picked by both from a fixed random block, so that any byte out of
/// place shows (and making one costs a copy, not a generator per byte).
fn value_of(key: &str, version: u64, len: usize) -> Vec<u8> {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut rng = XorShift::new(0x5eed);
        (0..512 * 1024)
            .map(|_| b'a' + rng.below(26) as u8)
            .collect()
    });
    let mut v = format!("{key}:{version}:").into_bytes();
    let start = (version.wrapping_mul(7919) ^ key.len() as u64) as usize % (block.len() / 2);
    let rest = len.saturating_sub(v.len());
    v.extend_from_slice(&block[start..start + rest]);
    v
}

/// Start shmcached and wait for its "ready" line: the port accepts (the
/// listeners come first) while the memory file is still being checked.
fn start(args: &[&str]) -> Server {
    let server = Server::shmcached(args);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.stderr().contains("INFO ready") {
        assert!(Instant::now() < deadline, "not ready: {}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    server
}

/// SIGTERM and wait for a clean exit.
fn stop(server: &mut Server) {
    signal(server.pid(), SIGTERM).unwrap();
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server stops");
    assert!(status.success(), "exit {status:?}\n{}", server.stderr());
}

/// A start that must fail: its exit code and output.
fn refused(args: &[&str]) -> (i32, String) {
    let port = common::free_port().to_string();
    let mut argv = vec!["-p", &port, "-l", "127.0.0.1", "-u", "root"];
    argv.extend_from_slice(args);
    let mut child = Command::new(SHMCACHED)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "started although it should refuse: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ITEMS: usize = 100_000;

#[test]
fn sigterm_then_start_serves_every_item_with_its_flags_cas_and_ttl() {
    let file = MemoryFile::new("fill");
    let args = ["-m", "256", "-t", "2", "-e", file.arg()];
    let first_start = now();
    let mut server = start(&args);
    let mut c = Client::connect(server.port());
    let mut rng = XorShift::new(common::test_seed());
    // key -> (flags, value, exptime as sent)
    let mut want: Vec<(String, u32, Vec<u8>, u64)> = Vec::with_capacity(ITEMS);
    let set_at = now();
    for i in 0..ITEMS {
        let key = format!("warm:{i}");
        let flags = rng.next_u64() as u32;
        let exptime = match i % 10 {
            0 => 3600,
            1 => set_at + 7200, // an absolute time
            _ => 0,
        };
        let value = value_of(&key, i as u64, 1 + rng.below(300) as usize);
        want.push((key, flags, value, exptime));
    }
    for batch in want.chunks(1000) {
        set_all(&mut c, batch);
    }
    // A batch with a short TTL, set just before the stop: they must expire
    // 8 s after they were set, restart or not.
    let short: Vec<(String, u32, Vec<u8>, u64)> = (0..1000)
        .map(|i| (format!("short:{i}"), i, value_of("short", i as u64, 20), 8))
        .collect();
    let short_from = now();
    set_all(&mut c, &short);
    let short_to = now();
    let keys: Vec<String> = want.iter().map(|w| w.0.clone()).collect();
    let mut before = HashMap::new();
    for batch in keys.chunks(500) {
        before.extend(c.gets(batch));
    }
    assert_eq!(before.len(), ITEMS, "every item stored before the stop");
    assert_eq!(c.stat("evictions"), 0);
    drop(c);
    stop(&mut server);
    assert!(
        server.stderr().contains("memory file saved"),
        "{}",
        server.stderr()
    );

    let server = start(&args);
    let log = server.stderr();
    assert!(
        log.contains("warm restart: cache restored") && log.contains("stopped_cleanly: true"),
        "{log}"
    );
    let mut c = Client::connect(server.port());
    let mut after = HashMap::new();
    for batch in keys.chunks(500) {
        after.extend(c.gets(batch));
    }
    for (key, flags, value, _) in &want {
        let got = after
            .get(key)
            .unwrap_or_else(|| panic!("{key} lost across the restart"));
        assert_eq!(got.0, *flags, "{key}: flags");
        assert_eq!(got.1, before[key].1, "{key}: cas");
        assert_eq!(&got.2, value, "{key}: value");
    }
    assert_eq!(after.len(), ITEMS);
    println!(
        "warm restart: {} of {ITEMS} items restored with flags, cas and value",
        after.len()
    );
    // The short-TTL items count until the sweep frees them, which it may
    // already have begun on a machine slow enough to take 8 s to get here.
    let curr = c.stat("curr_items");
    if now() < short_from + 7 {
        assert_eq!(curr, ITEMS as u64 + short.len() as u64);
    } else {
        assert!(
            (ITEMS as u64..=(ITEMS + short.len()) as u64).contains(&curr),
            "{curr}"
        );
    }
    // As memcached: restored items count in total_items; uptime goes on
    // from the first start.
    assert_eq!(c.stat("total_items"), ITEMS as u64 + short.len() as u64);
    assert!(c.stat("uptime") + 1 >= now() - first_start);
    // The remaining TTL came through, within a second.
    let short_keys: Vec<String> = short.iter().map(|w| w.0.clone()).collect();
    let alive = |c: &mut Client| -> usize { short_keys.chunks(500).map(|b| c.gets(b).len()).sum() };
    if now() <= short_from + 7 {
        assert_eq!(alive(&mut c), short.len(), "8 s items alive before 7 s");
    }
    while now() < short_to + 9 {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(alive(&mut c), 0, "8 s items gone at 9 s");
    let long: Vec<String> = keys.iter().step_by(7).cloned().collect();
    let still: usize = long.chunks(500).map(|b| c.gets(b).len()).sum();
    assert_eq!(still, long.len(), "the other items stay");
    // A new write after the restart gets a cas past every old one.
    c.send(b"set fresh 0 0 1\r\nx\r\n");
    assert_eq!(c.line(), "STORED\r\n");
    let fresh = c.gets(&["fresh".to_string()])["fresh"].1;
    assert!(before.values().all(|v| v.1 < fresh), "cas counter kept");
}

/// Pipelined sets of `(key, flags, value, exptime)`, each answered STORED.
fn set_all(c: &mut Client, items: &[(String, u32, Vec<u8>, u64)]) {
    let mut wire = Vec::new();
    for (key, flags, value, exptime) in items {
        wire.extend_from_slice(
            format!("set {key} {flags} {exptime} {}\r\n", value.len()).as_bytes(),
        );
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    }
    c.send(&wire);
    for _ in items {
        assert_eq!(c.line(), "STORED\r\n");
    }
}

#[test]
fn sigusr1_is_a_graceful_stop_that_saves_too() {
    let file = MemoryFile::new("usr1");
    let args = ["-m", "16", "-t", "1", "-e", file.arg()];
    let mut server = start(&args);
    let mut c = Client::connect(server.port());
    c.send(b"set k 3 0 2\r\nhi\r\n");
    assert_eq!(c.line(), "STORED\r\n");
    drop(c);
    signal(server.pid(), SIGUSR1).unwrap();
    let status = server.wait_exit(Duration::from_secs(10)).expect("stops");
    assert!(status.success());
    let server = start(&args);
    let mut c = Client::connect(server.port());
    let got = c.gets(&["k".to_string()]);
    assert_eq!(got["k"].0, 3);
    assert_eq!(got["k"].2, b"hi");
}

#[test]
fn a_file_of_another_layout_or_another_program_is_refused() {
    let file = MemoryFile::new("layout");
    let mut server = start(&["-m", "16", "-t", "2", "-e", file.arg()]);
    // A second instance on the same file while the first runs.
    let (code, out) = refused(&["-m", "16", "-t", "2", "-e", file.arg()]);
    assert_ne!(code, 0);
    assert!(out.contains("in use by another shmcached"), "{out}");
    stop(&mut server);
    for (args, names) in [
        (vec!["-m", "32", "-t", "2"], "memory_limit"),
        (vec!["-m", "16", "-t", "3"], "worker slots"),
        (vec!["-m", "16", "-t", "2", "-C"], "cas_enabled"),
        (vec!["-m", "16", "-t", "2", "-I", "2m"], "item_size_max"),
        (vec!["-m", "16", "-t", "2", "-f", "1.25"], "slab classes"),
        (vec!["-m", "16", "-t", "2", "-n", "48"], "slab classes"),
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["-e", file.arg()]);
        let (code, out) = refused(&all);
        assert_ne!(code, 0, "{args:?}");
        assert_eq!(out.lines().count(), 1, "one line: {out}");
        assert!(
            out.contains(names) && out.contains(file.arg()),
            "{args:?}: {out}"
        );
    }
    // The file is untouched by the refusals: the right settings still attach.
    let server = start(&["-m", "16", "-t", "2", "-e", file.arg()]);
    assert!(server.stderr().contains("cache restored"));
    drop(server);

    let foreign = MemoryFile::new("foreign");
    std::fs::write(&foreign.0, b"precious data that is not a cache").unwrap();
    let mut perms = std::fs::metadata(&foreign.0).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&foreign.0, perms).unwrap();
    let (code, out) = refused(&["-m", "16", "-e", foreign.arg()]);
    assert_ne!(code, 0);
    assert!(out.contains("not a shmcached memory file"), "{out}");
    assert_eq!(
        std::fs::read(&foreign.0).unwrap(),
        b"precious data that is not a cache"
    );
}

/// Bytes of the file with `needle` replaced: a corruption no crash can make.
fn corrupt(path: &Path, needle: &[u8]) -> bool {
    let mut bytes = std::fs::read(path).unwrap();
    let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return false;
    };
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).is_ok()
}

#[test]
fn a_corrupted_file_is_discarded_with_the_reason_and_never_served() {
    let file = MemoryFile::new("corrupt");
    let args = ["-m", "16", "-t", "1", "-e", file.arg()];
    let mut server = start(&args);
    let mut c = Client::connect(server.port());
    for i in 0..100 {
        c.send(format!("set key{i} 0 0 5\r\nvalue\r\n").as_bytes());
        assert_eq!(c.line(), "STORED\r\n");
    }
    c.send(b"set corruptme 0 0 5\r\nvalue\r\n");
    assert_eq!(c.line(), "STORED\r\n");
    drop(c);
    stop(&mut server);
    assert!(corrupt(&file.0, b"corruptme"));
    let server = start(&args);
    let log = server.stderr();
    assert!(
        log.contains("memory file discarded") && log.contains("does not hash to its bucket"),
        "{log}"
    );
    let mut c = Client::connect(server.port());
    let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
    assert!(c.gets(&keys).is_empty(), "an empty cache after a discard");
    c.send(b"set after 0 0 1\r\nx\r\n");
    assert_eq!(c.line(), "STORED\r\n");
}

/// Writers that record, per key, the last version acknowledged and the
/// highest one sent.
fn writer(port: u16, run: u64, id: usize, stop: Arc<AtomicBool>) -> HashMap<String, (u64, u64)> {
    let mut versions: HashMap<String, (u64, u64)> = HashMap::new();
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return versions;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut rng = XorShift::new(common::test_seed() ^ id as u64 ^ run << 8);
    let mut version = 0u64;
    // Pipelined batches keep the workers busy in the store, where the kill
    // should land.
    'run: while !stop.load(Ordering::Relaxed) {
        let mut wire = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..32 {
            let key = format!("r{run}w{id}:{}", rng.below(2000));
            version += 1;
            // Some large values: copying them widens the window between a
            // chunk's allocation and its publication.
            let len = if rng.chance(25) {
                50_000 + rng.below(200_000) as usize
            } else {
                20 + rng.below(400) as usize
            };
            let value = value_of(&key, version, len);
            versions.entry(key.clone()).or_default().1 = version;
            wire.extend_from_slice(format!("set {key} {id} 0 {}\r\n", value.len()).as_bytes());
            wire.extend_from_slice(&value);
            wire.extend_from_slice(b"\r\n");
            batch.push((key, version));
        }
        if reader.get_mut().write_all(&wire).is_err() {
            break;
        }
        for (key, v) in batch {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 && line == "STORED\r\n" => {
                    let acked = &mut versions.get_mut(&key).expect("sent").0;
                    *acked = (*acked).max(v);
                }
                _ => break 'run,
            }
        }
    }
    versions
}

#[test]
fn sigkill_of_every_process_mid_writes_recovers_or_starts_empty_never_wrong() {
    let file = MemoryFile::new("kill");
    // Big values evict some keys: the kill lands in allocations, evictions
    // and publications alike.
    let args = ["-m", "64", "-t", "3", "-e", file.arg()];
    let (mut restored_runs, mut discarded_runs, mut checked) = (0, 0, 0);
    let (mut lost_acked, mut settled) = (0, 0);
    for run in 0..8u64 {
        let mut server = start(&args);
        let port = server.port();
        let stop_flag = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..6)
            .map(|id| {
                let s = stop_flag.clone();
                thread::spawn(move || writer(port, run, id, s))
            })
            .collect();
        thread::sleep(Duration::from_millis(600 + 150 * run));
        // Everything at once, in the middle of the writes.
        let pid = server.pid();
        let mut all = descendants(pid);
        all.push(pid);
        for p in &all {
            let _ = signal(*p, SIGKILL);
        }
        stop_flag.store(true, Ordering::Relaxed);
        let written: Vec<HashMap<String, (u64, u64)>> =
            writers.into_iter().map(|w| w.join().unwrap()).collect();
        server.wait_exit(Duration::from_secs(5)).expect("killed");
        drop(server);

        // Start again and read every key written: each value present must be
        // byte for byte one that was sent for that key.
        let server = start(&args);
        let log = server.stderr();
        let restored = log.contains("cache restored");
        if restored {
            settled += log
                .split("chunks_settled: ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            restored_runs += 1;
        } else {
            discarded_runs += 1;
        }
        assert!(
            restored || (log.contains("discarded") && log.contains("reason")),
            "{log}"
        );
        let mut c = Client::connect(server.port());
        for (id, versions) in written.iter().enumerate() {
            let keys: Vec<String> = versions.keys().cloned().collect();
            for batch in keys.chunks(200) {
                for (key, (flags, _, data)) in c.gets(batch) {
                    assert_eq!(flags, id as u32, "{key}: flags");
                    let text = String::from_utf8_lossy(&data);
                    let version: u64 = text
                        .split(':')
                        .nth(2)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("{key}: garbled value {text:?}"));
                    let (_, sent) = versions[&key];
                    assert!(version <= sent, "{key}: version {version} never sent");
                    assert_eq!(
                        data,
                        value_of(&key, version, data.len()),
                        "{key}: wrong bytes"
                    );
                    if restored && version < versions[&key].0 {
                        lost_acked += 1;
                    }
                    checked += 1;
                }
            }
        }
        drop(c);
        drop(server);
    }
    println!(
        "kill -9 mid-writes: {restored_runs} restored, {discarded_runs} discarded, \
         {settled} half-done chunks settled, {checked} values checked byte for byte, \
         {lost_acked} older than acknowledged"
    );
    assert!(checked > 0, "something was read back");
    assert_eq!(lost_acked, 0, "a restored cache lost no acknowledged write");
}
