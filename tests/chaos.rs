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

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
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
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::shmcached(&["-t", &workers.to_string(), "-m", "64"]);
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
    summary
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
