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
