//! A worker can die at any instruction: workers are SIGKILLed in a loop while
//! clients run sets, gets, deletes and incrs, and no acknowledged write may be
//! lost, no torn value seen, no counter skip, no request hang.
//!
//! The check itself is `shmcached-soak` (src/bin/shmcached-soak.rs): the test
//! runs that binary against a daemon of its own, so that the soak an operator
//! runs for an hour and this test are one implementation.
//!
//! `SHMCACHED_TEST_SEED=<n>` replays a run's operations (not the kill timing).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;

const SOAK: &str = env!("CARGO_BIN_EXE_shmcached-soak");
const SECONDS: u64 = 10;
/// The soak bounds every wait of its own; this only catches a soak that hangs.
const SOAK_TIMEOUT: Duration = Duration::from_secs(SECONDS + 80);

/// Each run keeps both cores busy: one at a time, so neither starves the other
/// into timeouts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The summary line's figures.
#[derive(Debug)]
struct Summary {
    kills: u64,
    requests: u64,
    violations: u64,
    hangs: u64,
}

/// Run the soak against a fresh daemon with `workers` workers; fail the test
/// with the soak's and the daemon's output unless the soak passed.
fn soak(workers: usize, killer: &[&str]) -> Summary {
    soak_beside(workers, killer, |_, _| ()).0
}

/// [`soak`], with `side(port, stop)` running in a thread of its own until the
/// soak ends (it returns once `stop` is set); also returns the daemon's
/// `stats` after the soak.
fn soak_beside<T: Send + 'static>(
    workers: usize,
    killer: &[&str],
    side: impl FnOnce(u16, Arc<AtomicBool>) -> T + Send + 'static,
) -> (Summary, T, HashMap<String, u64>) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::shmcached(&["-t", &workers.to_string(), "-m", "64"]);
    let stop = Arc::new(AtomicBool::new(false));
    let side = {
        let (port, stop) = (server.port(), stop.clone());
        thread::spawn(move || side(port, stop))
    };
    let (port, pid) = (server.port().to_string(), server.pid().to_string());
    let mut args = vec!["--port", &port, "--server-pid", &pid, "--clients", "8"];
    let seconds = SECONDS.to_string();
    args.extend(["--seconds", &seconds]);
    args.extend_from_slice(killer);
    let seed = std::env::var("SHMCACHED_TEST_SEED").ok();
    if let Some(seed) = &seed {
        args.extend(["--seed", seed]);
    }
    let (status, output) = run(&args);
    stop.store(true, Relaxed);
    let side = side.join().expect("the side load panicked");
    print!("{output}");
    let daemon = || {
        format!(
            "`{SOAK} {}` against `{}`:\n{output}\n--- daemon output ---\n{}",
            args.join(" "),
            server.command_line(),
            server.stderr()
        )
    };
    let Some(status) = status else {
        panic!("the soak did not end within {SOAK_TIMEOUT:?}: {}", daemon());
    };
    let summary = parse_summary(&output).unwrap_or_else(|| panic!("no summary: {}", daemon()));
    assert!(
        status.success() && summary.violations == 0 && summary.hangs == 0,
        "the soak failed ({status}): {}",
        daemon()
    );
    let stats = exchange(&mut connect(server.port()), b"stats\r\n", b"END\r\n")
        .expect("stats after the soak");
    let stats = String::from_utf8_lossy(&stats)
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("STAT ")?.split(' ');
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect();
    (summary, side, stats)
}

fn connect(port: u16) -> TcpStream {
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            return s;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Send `req`, read until the reply ends with `end`.
fn exchange(s: &mut TcpStream, req: &[u8], end: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    while !buf.ends_with(end) {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// Page moves nonstop beside the soak: a filler gives one class (100-byte
/// values) four pages, keeps one item in eight of them, and adds a rolling
/// set of keys: the class stays about a quarter full, so that a page's items
/// always find free chunks elsewhere in it; a second client moves that
/// class's pages to the pool and back.
/// Returns the moves the server accepted.
fn keep_pages_moving(port: u16, stop: Arc<AtomicBool>) -> u64 {
    let ready = Arc::new(AtomicBool::new(false));
    let filler = {
        let (stop, ready) = (stop.clone(), ready.clone());
        thread::spawn(move || {
            let value = [b'f'; 100];
            let set_and_delete =
                |s: &mut TcpStream,
                 keys: std::ops::Range<usize>,
                 gone: &mut dyn Iterator<Item = usize>| {
                    let mut req = Vec::new();
                    for i in keys {
                        req.extend_from_slice(
                            format!("set f{i:06} 0 0 100 noreply\r\n").as_bytes(),
                        );
                        req.extend_from_slice(&value);
                        req.extend_from_slice(b"\r\n");
                    }
                    for i in gone {
                        req.extend_from_slice(format!("delete f{i:06} noreply\r\n").as_bytes());
                    }
                    req.extend_from_slice(b"mn\r\n");
                    exchange(s, &req, b"MN\r\n").map(|_| ())
                };
            let mut s = connect(port);
            // One in eight of these stays for the whole run: every page
            // moved holds some items that must be rescued.
            while set_and_delete(
                &mut s,
                20_000..45_000,
                &mut (20_000..45_000).filter(|i| i % 8 != 0),
            )
            .is_err()
            {
                s = connect(port);
            }
            ready.store(true, Relaxed);
            let mut cycle = 0;
            while !stop.load(Relaxed) {
                let base = (cycle % 20) * 1000;
                let prev = ((cycle + 19) % 20) * 1000;
                match set_and_delete(&mut s, base..base + 1000, &mut (prev..prev + 1000)) {
                    Ok(()) => cycle += 1,
                    Err(_) => s = connect(port),
                }
            }
        })
    };
    while !ready.load(Relaxed) && !stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(20));
    }
    // The class with the most pages is the filler's.
    let class = loop {
        let mut s = connect(port);
        let Ok(slabs) = exchange(&mut s, b"stats slabs\r\n", b"END\r\n") else {
            continue;
        };
        let text = String::from_utf8_lossy(&slabs).into_owned();
        let most = text
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("STAT ")?.split(' ');
                let (class, key) = w.next()?.split_once(':')?;
                (key == "total_pages")
                    .then_some((w.next()?.parse::<u64>().ok()?, class.to_string()))
            })
            .max();
        break most.expect("a class with pages").1;
    };
    let mut accepted = 0;
    let mut s = connect(port);
    let mut to_pool = true;
    while !stop.load(Relaxed) {
        let req = if to_pool {
            format!("slabs reassign {class} 0\r\n")
        } else {
            format!("slabs reassign 0 {class}\r\n")
        };
        match exchange(&mut s, req.as_bytes(), b"\r\n") {
            Ok(reply) if reply == b"OK\r\n" => {
                accepted += 1;
                to_pool = !to_pool;
            }
            Ok(reply) if reply.starts_with(b"NOSPARE") => to_pool = !to_pool,
            Ok(_) => {}
            Err(_) => s = connect(port),
        }
        thread::sleep(Duration::from_millis(20));
    }
    filler.join().expect("the filler panicked");
    accepted
}

/// Run the soak; its exit status (None if it had to be killed) and stdout.
fn run(args: &[&str]) -> (Option<std::process::ExitStatus>, String) {
    let mut child = Command::new(SOAK)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start shmcached-soak");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SOAK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for shmcached-soak") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap_or_default())
}

/// `soak: seconds=.. clients=.. kills=.. requests=.. resets=.. violations=.. hangs=..`
fn parse_summary(output: &str) -> Option<Summary> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with("soak: seconds="))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Summary {
        kills: field("kills")?,
        requests: field("requests")?,
        violations: field("violations")?,
        hangs: field("hangs")?,
    })
}

#[test]
fn two_workers_killed_in_a_loop_lose_nothing() {
    // The supervisor respawns a worker that lived under 1 s only after a
    // back-off (100 ms doubling), and the killer spares a worker whose death
    // would push its slot's back-off past 400 ms (a longer one stalls the
    // connections queued on that slot's socket past the clients' 2 s
    // timeout). That leaves two slots about 3 kills a second, so the killer
    // looks every 20..80 ms to strike as soon as one is allowed.
    let s = soak(2, &["--kill-min-ms", "20", "--kill-max-ms", "80"]);
    assert!(s.kills >= 30, "only {} kills: {s:?}", s.kills);
    assert!(s.requests > 1000, "only {} requests: {s:?}", s.requests);
}

#[test]
fn four_workers_killed_in_a_loop_lose_nothing() {
    let s = soak(4, &[]);
    assert!(s.kills >= 30, "only {} kills: {s:?}", s.kills);
    assert!(s.requests > 1000, "only {} requests: {s:?}", s.requests);
}

/// Pages move between a class and the pool nonstop while workers die: the
/// mover (worker 0) is killed among the others, mid-move included, and no
/// item the soak wrote may be lost or torn. The filler keeps its class a
/// quarter full, so every item of a moved page is rescued, not evicted.
#[test]
fn pages_moving_while_workers_die_lose_nothing() {
    let (s, accepted, stats) = soak_beside(
        2,
        &["--kill-min-ms", "20", "--kill-max-ms", "80"],
        keep_pages_moving,
    );
    assert!(s.kills >= 30, "only {} kills: {s:?}", s.kills);
    assert!(accepted >= 3, "only {accepted} moves accepted");
    assert!(stats["slabs_moved"] >= 3, "{stats:?}");
    assert!(stats["slab_reassign_rescues"] > 0, "{stats:?}");
    println!(
        "moves accepted {accepted}, slabs_moved {}, rescues {}, evictions_nomem {}",
        stats["slabs_moved"],
        stats["slab_reassign_rescues"],
        stats["slab_reassign_evictions_nomem"]
    );
}

/// The value of `key` at `version`: `len` bytes no other (key, version) has,
/// so that a torn or misplaced value cannot pass for it.
fn wide_value(key: u64, version: u32, len: usize) -> Vec<u8> {
    let mut x = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(version) << 17)) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// Each key's value size: log-uniform from 64 B to 16 KiB.
fn wide_size(key: u64) -> usize {
    let h = key.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 40;
    (64.0 * 256f64.powf(h as f64 / (1u64 << 24) as f64)) as usize
}

/// A client of [`lent_and_borrowed_chunks_stay_whole_while_workers_die`]:
/// sets and gets over its own keys until `stop`; returns (requests, hits,
/// what was wrong with each value read that was not whole, the largest
/// value read whole).
fn wide_client(
    port: u16,
    me: u64,
    keys: u64,
    size: fn(u64) -> usize,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Vec<String>, usize) {
    use std::io::BufRead;
    let (mut requests, mut hits, mut torn, mut largest) = (0, 0, Vec::new(), 0);
    let mut x = me * 7 + 3;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut stream = connect(port);
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    while !stop.load(Relaxed) {
        let key = (me << 32) | (next() % keys);
        let len = size(key);
        let one = (|| -> std::io::Result<()> {
            if next() % 2 == 0 {
                let version = (next() % 1_000_000) as u32;
                let mut req = format!("set w{key} {version} 0 {len}\r\n").into_bytes();
                req.extend(wide_value(key, version, len));
                req.extend_from_slice(b"\r\n");
                stream.write_all(&req)?;
                let mut line = String::new();
                reader.read_line(&mut line)?;
                if line.is_empty() {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                // Out of memory (every candidate busy) is an answer, not a fault.
                if line != "STORED\r\n" && !line.starts_with("SERVER_ERROR out of memory") {
                    torn.push(format!("set w{key}: {line:?}"));
                }
            } else {
                stream.write_all(format!("get w{key}\r\n").as_bytes())?;
                let mut line = String::new();
                reader.read_line(&mut line)?;
                if line.is_empty() {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if line == "END\r\n" {
                    return Ok(());
                }
                let parts: Vec<&str> = line.split_whitespace().collect();
                let (version, n) = match parts[..] {
                    ["VALUE", k, f, n] if k == format!("w{key}") => {
                        (f.parse::<u32>().unwrap(), n.parse::<usize>().unwrap())
                    }
                    _ => {
                        torn.push(format!("get w{key}: {line:?}"));
                        return Err(std::io::ErrorKind::InvalidData.into());
                    }
                };
                let mut data = vec![0u8; n + 2];
                std::io::Read::read_exact(&mut reader, &mut data)?;
                let mut end = String::new();
                reader.read_line(&mut end)?;
                hits += 1;
                if n != len || data[..n] != wide_value(key, version, len)[..] || end != "END\r\n" {
                    torn.push(format!(
                        "get w{key}: version {version}, {n} bytes, not whole"
                    ));
                } else {
                    largest = largest.max(n);
                }
            }
            Ok(())
        })();
        requests += 1;
        if one.is_err() {
            // The worker died under us (or the reply made no sense): anew.
            stream = connect(port);
            reader = std::io::BufReader::new(stream.try_clone().unwrap());
        }
    }
    (requests, hits, torn, largest)
}

/// More sizes in use than pages (`-m 4`: four pages; values of 64 B to
/// 16 KiB: some 60 classes): items take chunks of other classes (a class
/// with no page borrows a larger one's; a full class takes a little larger
/// one's free chunk before evicting) while workers are SIGKILLed at any
/// instant. Evictions are the point here, so nothing may be asserted lost;
/// every value read back must be whole and its key's, and the daemon must
/// stay consistent enough to keep serving and stop cleanly.
#[test]
fn lent_and_borrowed_chunks_stay_whole_while_workers_die() {
    wide_chaos(&["-t", "2", "-m", "4"], 2000, wide_size, None);
}

/// Items of a larger class stored across consecutive chunks at the
/// uncarved end of a smaller class's page (`-m 32 -f 1.25`: some 25
/// classes, each with a page it fills slowly, and 16,000 keys of 64 B to
/// 16 KiB, half as much again as the memory): stored, read, overwritten,
/// evicted and moved with their pages (`slab_automove=2`; cache_memlimit
/// going down and up) while workers are SIGKILLed at any instant. Every value read back must be whole; the run
/// must have seen such items.
#[test]
fn items_spanning_chunks_stay_whole_while_workers_die() {
    let mut most = 0;
    wide_chaos(
        &["-t", "2", "-m", "32", "-f", "1.25", "-o", "slab_automove=2"],
        8000,
        wide_size,
        Some((&mut most, 0)),
    );
    assert!(most > 0, "no item ever spanned chunks");
}

/// Each key's value size for [`items_chained_over_pages_stay_whole_while_workers_die`]:
/// log-uniform from 1 KiB to 4 MiB (a little under, for `-I 4m`).
fn chained_size(key: u64) -> usize {
    let h = key.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 40;
    (1024.0 * 4000f64.powf(h as f64 / (1u64 << 24) as f64)) as usize
}

/// Items larger than a page, chained over several (`-I 4m`, values of
/// 1 KiB to 4 MiB, 48 MiB of them in `-m 32`): stored, read, overwritten,
/// evicted whole, and evicted with a page that holds a piece of them as pages
/// move (`slab_automove=2`, cache_memlimit going down and up) while workers
/// are SIGKILLed at any instant, a store's pieces half allocated or
/// written included. Every value read back must be whole.
#[test]
fn items_chained_over_pages_stay_whole_while_workers_die() {
    let mut most = 0;
    let largest = wide_chaos(
        &["-t", "2", "-m", "32", "-I", "4m", "-o", "slab_automove=2"],
        24,
        chained_size,
        Some((&mut most, 1 << 20)),
    );
    assert!(
        largest > 1 << 20,
        "no value larger than a page was read back whole"
    );
}

/// Chunks held beyond one per item (`stats slabs` used_chunks against
/// `stats items` number) in the classes of chunks of `min_chunk` bytes or
/// more: the bodies of items spanning chunks, the pieces of items chained
/// over pages.
fn extra_chunks(port: u16, min_chunk: u64) -> u64 {
    let mut c = connect(port);
    let mut read = |req: &[u8]| -> std::collections::HashMap<String, u64> {
        let reply = exchange(&mut c, req, b"END\r\n").unwrap_or_default();
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("STAT ")?.split(' ');
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect()
    };
    let slabs = read(b"stats slabs\r\n");
    let items = read(b"stats items\r\n");
    slabs
        .iter()
        .filter_map(|(k, &used)| {
            let class = k.strip_suffix(":used_chunks")?;
            if slabs.get(&format!("{class}:chunk_size")).copied()? < min_chunk {
                return None;
            }
            Some(used.saturating_sub(*items.get(&format!("items:{class}:number")).unwrap_or(&0)))
        })
        .sum()
}

/// Two [`wide_client`]s of `keys` keys each against a daemon started with
/// `args`, a worker SIGKILLed every 250-500 ms; with `spans`, the most
/// [`extra_chunks`] seen between kills. Returns the largest value read
/// back whole.
fn wide_chaos(
    args: &[&str],
    keys: u64,
    size: fn(u64) -> usize,
    mut spans: Option<(&mut u64, u64)>,
) -> usize {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = Server::shmcached(args);
    let (port, pid) = (server.port(), server.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=2)
        .map(|me| {
            let stop = stop.clone();
            thread::spawn(move || wide_client(port, me, keys, size, stop))
        })
        .collect();
    // With `spans`, pages keep leaving and joining classes: cache_memlimit
    // goes down (classes give pages back, the pages they carve included)
    // and up (classes carve pages anew, their ends uncarved) twice a second.
    let toggler = spans.is_some().then(|| {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut low = true;
            while !stop.load(Relaxed) {
                let mut c = connect(port);
                let req = if low {
                    &b"cache_memlimit 16\r\n"[..]
                } else {
                    b"cache_memlimit 32\r\n"
                };
                let _ = exchange(&mut c, req, b"\r\n");
                low = !low;
                thread::sleep(Duration::from_millis(500));
            }
        })
    });
    let started = Instant::now();
    let mut kills = 0;
    let mut x: u64 = 0x2545_F491;
    // SHMCACHED_CHAOS_SECONDS=<s> for a longer run by hand.
    let seconds = std::env::var("SHMCACHED_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SECONDS);
    while started.elapsed() < Duration::from_secs(seconds) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // A worker that lived under a second comes back after a back-off
        // (100 ms doubling): 250..500 ms apart keeps it short.
        thread::sleep(Duration::from_millis(250 + x % 250));
        if let Some((most, min_chunk)) = spans.as_mut() {
            **most = (**most).max(extra_chunks(port, *min_chunk));
        }
        let workers = common::children(pid);
        if let Some(&w) = workers.get(x as usize / 7 % workers.len().max(1))
            && common::signal(w, 9).is_ok()
        {
            kills += 1;
        }
    }
    stop.store(true, Relaxed);
    if let Some(t) = toggler {
        t.join().expect("the cache_memlimit client panicked");
    }
    let (mut requests, mut hits, mut torn, mut largest) = (0, 0, Vec::new(), 0);
    for c in clients {
        let (r, h, t, l) = c.join().expect("a client panicked");
        requests += r;
        hits += h;
        torn.extend(t);
        largest = largest.max(l);
    }
    let most = spans.map_or(0, |(m, _)| *m);
    println!(
        "{kills} kills, {requests} requests, {hits} hits, at most {most} chunks held by items' bodies, \
         largest value read whole {largest} bytes"
    );
    assert!(
        torn.is_empty(),
        "values not whole: {torn:?}\n{}",
        server.stderr()
    );
    assert!(kills >= 15, "only {kills} kills");
    assert!(hits > 100, "only {hits} hits of {requests} requests");
    let mut c = connect(port);
    let stats = exchange(&mut c, b"stats\r\n", b"END\r\n").unwrap();
    let stats = String::from_utf8_lossy(&stats);
    assert!(stats.contains("STAT evictions "), "{stats}");
    assert!(!stats.contains("STAT curr_items 0\r\n"), "{stats}");
    let status = server.stop();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        server.stderr()
    );
    largest
}
