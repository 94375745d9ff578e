//! The process model, from outside: the supervisor and its workers as /proc
//! shows them, a worker's death and replacement, SIGTERM's drain, the
//! supervisor's death, and start-up refusals (DESIGN.md "Processes").
//!
//! Every test starts its own daemon and owns every process it signals.
//! `SHMCACHED_TEST_SEED=<n>` replays the random choice of victims.

mod common;

use common::{
    Conn, Ending, SHMCACHED, SIGKILL, SIGTERM, Server, XorShift, children, escape, free_port,
    is_alive, listening_inodes, proc_stat, signal, socket_inodes, test_seed,
};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often the polling helpers look again.
const POLL: Duration = Duration::from_millis(10);
/// A killed worker's slot has a new worker within this (DESIGN.md: back-off
/// 0 s after a life over 1 s, else from 100 ms).
const RESPAWN_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Poll `probe` until it returns Some or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// A path in the temp dir for a pid file, unique to this test process and tag.
fn pid_file_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "shmcached-processes-{}-{tag}.pid",
        std::process::id()
    ))
}

/// `stats` (or `stats <group>`) on a new connection, as name -> value.
fn stats(server: &Server, group: &str) -> HashMap<String, String> {
    let request = if group.is_empty() {
        "stats\r\n".to_string()
    } else {
        format!("stats {group}\r\n")
    };
    let reply = server.connect().exchange(request.as_bytes());
    assert_eq!(
        reply.ending,
        Ending::Sentinel,
        "`{}` got no complete reply: {}",
        request.trim_end(),
        escape(&reply.bytes)
    );
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    assert!(
        text.ends_with("END\r\n"),
        "`{}` reply does not end with END: {}",
        request.trim_end(),
        escape(&reply.bytes)
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn stat_u64(stats: &HashMap<String, String>, name: &str) -> u64 {
    let value = stats
        .get(name)
        .unwrap_or_else(|| panic!("stats has no `{name}`: {stats:?}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("stats `{name}` is not a number: {value:?}"))
}

/// The supervisor's `t` workers, once it has forked them all.
fn wait_for_workers(server: &Server, t: usize) -> Vec<u32> {
    wait_for(RESPAWN_WITHIN, || {
        let kids = children(server.pid());
        (kids.len() == t).then_some(kids)
    })
    .unwrap_or_else(|| {
        panic!(
            "supervisor {} should have {t} children; it has {:?}",
            server.pid(),
            children(server.pid())
        )
    })
}

/// The segments of the instance whose supervisor is `pid`.
fn segments_of(pid: u32) -> Vec<String> {
    let prefix = format!("shmcached-{pid}-");
    fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// True while the very process `stat` describes exists and is not a zombie
/// (a reused pid has another start time).
fn still_running(stat: &common::ProcStat) -> bool {
    is_alive(stat.pid) && proc_stat(stat.pid).is_some_and(|s| s.start_time == stat.start_time)
}

/// True while `stat`'s process has an entry in /proc at all (a zombie too).
fn still_in_proc(stat: &common::ProcStat) -> bool {
    proc_stat(stat.pid).is_some_and(|s| s.start_time == stat.start_time)
}

/// `set` of every (key, value), pipelined, each answered STORED.
fn store_all(conn: &mut Conn, items: &[(String, String)]) {
    let mut request = Vec::new();
    for (k, v) in items {
        request.extend_from_slice(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
    }
    let reply = conn.roundtrip(&request);
    assert_eq!(
        reply,
        b"STORED\r\n".repeat(items.len()),
        "storing {} items",
        items.len()
    );
}

/// The exact reply of `get` for these items, all hits.
fn get_reply(items: &[(String, String)]) -> Vec<u8> {
    let mut reply = Vec::new();
    for (k, v) in items {
        reply.extend_from_slice(format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()).as_bytes());
    }
    reply.extend_from_slice(b"END\r\n");
    reply
}

/// Every item reads back, on a new connection, with one multi-get.
fn assert_all_read_back(server: &Server, items: &[(String, String)], when: &str) {
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    let request = format!("get {}\r\n", keys.join(" "));
    let reply = server.connect().roundtrip(request.as_bytes());
    let expected = get_reply(items);
    assert!(
        reply == expected,
        "{when}: the {} items stored before do not all read back\n{}",
        items.len(),
        first_difference(&expected, &reply)
    );
}

/// Where two long replies part, with some context, both escaped.
fn first_difference(expected: &[u8], got: &[u8]) -> String {
    let at = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    let from = at.saturating_sub(60);
    format!(
        "expected {} bytes, got {} bytes; first difference at byte {at}\n  \
         expected: ...{}...\n  got:      ...{}...",
        expected.len(),
        got.len(),
        escape(&expected[from..(at + 60).min(expected.len())]),
        escape(&got[from.min(got.len())..(at + 60).min(got.len())]),
    )
}

/// A fresh connection can store and read back a value.
fn assert_serves(server: &Server, key: &str) {
    let reply = server
        .connect()
        .roundtrip(format!("set {key} 0 0 2\r\nok\r\nget {key}\r\n").as_bytes());
    assert_eq!(
        escape(&reply),
        escape(format!("STORED\r\nVALUE {key} 0 2\r\nok\r\nEND\r\n").as_bytes()),
        "a new connection should be served"
    );
}

/// Nothing listens on `port`.
fn nothing_listens(port: u16) -> bool {
    listening_inodes(port).is_empty()
}

/// `server`'s port has exactly `sockets` listeners, all held by `server`.
fn owns_its_port(server: &Server, sockets: usize) -> bool {
    let listeners = listening_inodes(server.port());
    let own = socket_inodes(server.pid());
    listeners.len() == sockets && listeners.iter().all(|i| own.contains(i))
}

/// What a daemon run that should end by itself left.
struct Run {
    pid: u32,
    status: ExitStatus,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

/// Run the binary with exactly `args` (no harness defaults) and wait up to
/// `timeout` for it to exit; a process still running then is killed (with
/// what it forked) and the test fails.
fn run_to_exit(args: &[&str], timeout: Duration) -> Run {
    try_run_to_exit(args, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// `run_to_exit`, with the failure as an error.
fn try_run_to_exit(args: &[&str], timeout: Duration) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = Command::new(SHMCACHED)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmcached");
    let pid = child.id();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > timeout {
            // SIGTERM first, so that it removes what it created.
            let forked = common::descendants(pid);
            let _ = signal(pid, SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
            for p in forked {
                let _ = signal(p, SIGKILL);
            }
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return Err(format!(
                "`shmcached {}` still ran after {timeout:?} (killed); its output: {stderr:?}",
                args.join(" ")
            ));
        }
        thread::sleep(POLL);
    };
    let elapsed = started.elapsed();
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    Ok(Run {
        pid,
        status,
        elapsed,
        stdout,
        stderr,
    })
}

/// Effective uid of this test process, from /proc/self/status.
fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Assert what a refused start-up must look like: non-zero exit, quickly,
/// one line on stderr, no segment, no listener.
fn assert_refused(run: &Run, port: u16, what: &str) {
    assert!(
        !run.status.success(),
        "{what}: should exit non-zero, got {}; stderr: {:?}",
        run.status,
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "{what}: stderr should be exactly one line, got {} line(s): {:?} (stdout: {:?})",
        lines.len(),
        run.stderr,
        run.stdout
    );
    assert_eq!(
        segments_of(run.pid),
        Vec::<String>::new(),
        "{what}: left a segment in /dev/shm"
    );
    assert!(
        nothing_listens(port),
        "{what}: something listens on port {port}"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// `-t 3`: three direct children named shmcached; `stats pid`, the pid file
/// and the supervisor's pid agree; `stats workers` names the same pids.
#[test]
fn workers_are_the_supervisors_children() {
    let pid_file = pid_file_path("children");
    let pid_file_arg = pid_file.to_string_lossy().into_owned();
    let server = Server::shmcached(&["-t", "3", "-m", "16", "-P", &pid_file_arg]);
    let supervisor = server.pid();
    let workers = wait_for_workers(&server, 3);

    for &w in &workers {
        let comm = fs::read_to_string(format!("/proc/{w}/comm")).unwrap_or_default();
        assert_eq!(comm.trim_end(), "shmcached", "worker {w}'s name");
        assert_eq!(
            proc_stat(w).map(|s| s.ppid),
            Some(supervisor),
            "worker {w}'s parent"
        );
    }

    let general = stats(&server, "");
    assert_eq!(
        stat_u64(&general, "pid"),
        u64::from(supervisor),
        "stats pid"
    );
    assert_eq!(stat_u64(&general, "workers"), 3, "stats workers");
    assert_eq!(
        stat_u64(&general, "workers_alive"),
        3,
        "stats workers_alive"
    );
    assert_eq!(
        stat_u64(&general, "worker_restarts"),
        0,
        "stats worker_restarts"
    );

    let in_file = fs::read_to_string(&pid_file).expect("read the -P pid file");
    assert_eq!(
        in_file.trim(),
        supervisor.to_string(),
        "the -P pid file holds the supervisor's pid"
    );

    let per_worker = stats(&server, "workers");
    let mut listed: Vec<u32> = (0..3)
        .map(|i| stat_u64(&per_worker, &format!("worker:{i}:pid")) as u32)
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed, workers,
        "`stats workers` pids vs the supervisor's children"
    );
}

/// kill -9 of a worker: a new child in its place within 2 s, the restart
/// counted, the table intact; then five more kills of random workers.
#[test]
fn a_killed_worker_is_replaced_and_the_data_survives() {
    const T: usize = 3;
    let seed = test_seed();
    eprintln!("a_killed_worker_is_replaced_and_the_data_survives: SHMCACHED_TEST_SEED={seed}");
    let mut rng = XorShift::new(seed);
    let server = Server::shmcached(&["-t", "3", "-m", "16"]);
    let mut workers = wait_for_workers(&server, T);

    let items: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("before:{i}"),
                format!("value-{i}-{}", rng.below(1 << 40)),
            )
        })
        .collect();
    store_all(&mut server.connect(), &items);

    for round in 1..=6 {
        let victim = *rng.pick(&workers);
        signal(victim, SIGKILL).expect("kill -9 a worker");
        // A slot killed again soon after its respawn waits out a doubled
        // back-off (100, 200, 400, 800, 1600 ms), so later rounds get more.
        let within = if round == 1 {
            RESPAWN_WITHIN
        } else {
            RESPAWN_WITHIN + Duration::from_secs(2)
        };
        workers = wait_for(within, || {
            let kids = children(server.pid());
            // (A pid reused this soon would be a remarkable coincidence.)
            let replaced =
                kids.len() == T && !kids.contains(&victim) && kids.iter().all(|&k| is_alive(k));
            replaced.then_some(kids)
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: after kill -9 of worker {victim}, no replacement within \
                 {within:?}; children now {:?}",
                children(server.pid())
            )
        });

        let restarts_and_alive = wait_for(Duration::from_secs(1), || {
            let s = stats(&server, "");
            let pair = (
                stat_u64(&s, "worker_restarts"),
                stat_u64(&s, "workers_alive"),
            );
            (pair.0 >= round && pair.1 == T as u64).then_some(pair)
        });
        let s = stats(&server, "");
        assert!(
            restarts_and_alive.is_some(),
            "round {round}: stats should show worker_restarts >= {round} and workers_alive == \
             {T}; got worker_restarts {} workers_alive {}",
            stat_u64(&s, "worker_restarts"),
            stat_u64(&s, "workers_alive")
        );

        assert_serves(&server, &format!("after:{round}"));
        if round == 1 {
            assert_all_read_back(&server, &items, "after the first kill");
        }
    }
    assert_all_read_back(&server, &items, "after six kills");
}

/// `-t 1`: connections made while the only worker is dead wait in the
/// supervisor's socket and are all answered by the replacement.
#[test]
fn connections_made_while_a_slot_is_empty_are_not_lost() {
    let server = Server::shmcached(&["-t", "1", "-m", "16"]);
    let worker = wait_for_workers(&server, 1)[0];
    assert_serves(&server, "warm");
    let killed_at = Instant::now();
    signal(worker, SIGKILL).expect("kill -9 the worker");
    // Connect only once the worker can no longer accept anything.
    wait_for(Duration::from_secs(1), || (!is_alive(worker)).then_some(()))
        .expect("the killed worker should die at once");

    let mut conns: Vec<Conn> = (0..20).map(|_| server.connect()).collect();
    for conn in &mut conns {
        conn.send(b"version\r\n");
    }
    let deadline = killed_at + Duration::from_secs(3);
    for (i, conn) in conns.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        conn.set_timeout(left);
        let line = conn.read_line();
        assert!(
            line.starts_with(b"VERSION ") && line.ends_with(b"\r\n"),
            "connection {i} of 20 made while the slot was empty: expected `VERSION ...\\r\\n` \
             within 3 s of the kill, got {:?}",
            escape(&line)
        );
    }
    let replacement = children(server.pid());
    assert!(
        replacement.len() == 1 && replacement[0] != worker,
        "a new worker should have replaced {worker}; children {replacement:?}"
    );
}

/// SIGTERM while a pipelined stream is in the worker: every request received
/// is answered, then EOF; exit 0 within 5 s; no process, segment or pid file
/// left.
#[test]
fn sigterm_answers_a_pipelined_stream_then_cleans_up() {
    const SETS: usize = 2000;
    let pid_file = pid_file_path("sigterm-stream");
    let pid_file_arg = pid_file.to_string_lossy().into_owned();
    let mut server = Server::shmcached(&["-t", "2", "-m", "16", "-P", &pid_file_arg]);
    let supervisor = server.pid();
    let workers: Vec<common::ProcStat> = wait_for_workers(&server, 2)
        .into_iter()
        .filter_map(proc_stat)
        .collect();
    assert_eq!(segments_of(supervisor).len(), 1, "the instance's segment");
    assert!(pid_file.exists(), "the pid file exists while running");

    let items: Vec<(String, String)> = (0..SETS)
        .map(|i| (format!("s{i}"), format!("stream-value-{i}")))
        .collect();
    let mut stream = Vec::new();
    for (k, v) in &items {
        stream.extend_from_slice(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
    }
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    stream.extend_from_slice(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let mut expected = b"STORED\r\n".repeat(SETS);
    expected.extend_from_slice(&get_reply(&items));

    let mut conn = server.connect();
    // The connection is accepted (a worker owns it) before the stream goes.
    assert!(conn.roundtrip(b"").is_empty(), "version round trip");
    conn.set_timeout(Duration::from_secs(5));
    conn.send(&stream);
    let signalled = Instant::now();
    signal(supervisor, SIGTERM).expect("SIGTERM the supervisor");

    let reply = conn.read_to_eof();
    assert!(
        reply.bytes == expected,
        "{SETS} pipelined sets and a get of their keys, sent in one write before SIGTERM: \
         the reply up to EOF should be {SETS} STORED then every value and END\n{}",
        first_difference(&expected, &reply.bytes)
    );
    assert_eq!(
        reply.ending,
        Ending::Closed,
        "the server closes the connection after the drain"
    );

    let status = server
        .wait_exit(Duration::from_secs(5).saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("the supervisor still runs 5 s after SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let left = wait_for(Duration::from_millis(500), || {
        let left: Vec<u32> = workers
            .iter()
            .filter(|w| still_in_proc(w))
            .map(|w| w.pid)
            .collect();
        left.is_empty().then_some(())
    });
    let states: Vec<(u32, Option<char>)> = workers
        .iter()
        .filter(|w| still_in_proc(w))
        .map(|w| (w.pid, proc_stat(w.pid).map(|s| s.state)))
        .collect();
    assert!(
        left.is_some(),
        "workers still in /proc after the supervisor exited (pid, state): {states:?}"
    );
    assert_eq!(
        segments_of(supervisor),
        Vec::<String>::new(),
        "segments of {supervisor} left in /dev/shm"
    );
    assert!(
        !pid_file.exists(),
        "the pid file {pid_file:?} should be removed"
    );
}

/// SIGTERM with only idle connections: exit 0 within 2 s; each sees EOF.
#[test]
fn sigterm_with_idle_connections_exits_within_two_seconds() {
    let mut server = Server::shmcached(&["-t", "2", "-m", "16"]);
    wait_for_workers(&server, 2);
    let mut idle: Vec<Conn> = (0..10).map(|_| server.connect()).collect();
    for conn in &mut idle {
        // Accepted and served once, then idle.
        assert!(conn.roundtrip(b"").is_empty(), "version round trip");
    }
    let signalled = Instant::now();
    signal(server.pid(), SIGTERM).expect("SIGTERM the supervisor");
    let status = server
        .wait_exit(Duration::from_secs(2))
        .unwrap_or_else(|| panic!("still running 2 s after SIGTERM with 10 idle connections"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    for (i, conn) in idle.iter_mut().enumerate() {
        conn.set_timeout(Duration::from_millis(500));
        let reply = conn.read_to_eof();
        assert_eq!(
            (escape(&reply.bytes), reply.ending),
            (String::new(), Ending::Closed),
            "idle connection {i} should see EOF and nothing else"
        );
    }
}

/// kill -9 of the supervisor: its workers die with it (PR_SET_PDEATHSIG)
/// within 0.5 s and the port stops accepting; the next instance removes the
/// dead one's segment and serves.
#[test]
fn workers_die_with_a_killed_supervisor_and_the_next_start_cleans_up() {
    let mut server = Server::shmcached(&["-t", "3", "-m", "16"]);
    let dead = server.pid();
    let port = server.port();
    let workers: Vec<common::ProcStat> = wait_for_workers(&server, 3)
        .into_iter()
        .filter_map(proc_stat)
        .collect();
    assert_serves(&server, "before");

    signal(dead, SIGKILL).expect("kill -9 the supervisor");
    let gone = wait_for(Duration::from_millis(500), || {
        workers.iter().all(|w| !still_running(w)).then_some(())
    });
    let survivors: Vec<u32> = workers
        .iter()
        .filter(|w| still_running(w))
        .map(|w| w.pid)
        .collect();
    assert!(
        gone.is_some(),
        "workers still alive 0.5 s after kill -9 of their supervisor: {survivors:?}"
    );
    assert!(
        wait_for(Duration::from_millis(100), || nothing_listens(port)
            .then_some(()))
        .is_some(),
        "port {port} still accepts connections after the supervisor and its workers died"
    );

    // Reap the supervisor: a zombie's pid still "exists" for kill(pid, 0).
    server
        .wait_exit(Duration::from_secs(1))
        .expect("reap the killed supervisor");
    let stale = segments_of(dead);
    if stale.is_empty() {
        // Another instance started by a test running in parallel may have
        // removed it already, which is the behaviour under test too.
        eprintln!("note: the segment of {dead} was already removed by another start");
    }

    // On another port: the kernel may hand the freed port out again.
    let next = (0..5)
        .map(|_| Server::shmcached(&["-t", "2", "-m", "16"]))
        .find(|s| s.port() != port)
        .expect("an instance on a port other than the dead one's");
    assert_eq!(
        segments_of(dead),
        Vec::<String>::new(),
        "the dead instance's segment (was {stale:?}) should be removed by the next start"
    );
    assert_eq!(
        segments_of(next.pid()).len(),
        1,
        "the new instance's segment"
    );
    assert_serves(&next, "after");
}

/// As root, without `-u`: memcached's refusal, non-zero, within 2 s (the
/// bound of `run_to_exit`).
#[test]
fn root_without_dash_u_is_refused() {
    if euid() != Some(0) {
        eprintln!("note: root_without_dash_u_is_refused skipped: the tests do not run as root");
        return;
    }
    let port = free_port();
    let port_arg = port.to_string();
    let run = run_to_exit(
        &["-p", &port_arg, "-l", "127.0.0.1", "-t", "2", "-m", "16"],
        Duration::from_secs(2),
    );
    assert_refused(&run, port, "root without -u");
    assert!(
        run.stderr
            .contains("can't run as root without the -u switch"),
        "the message should say `can't run as root without the -u switch`; stderr: {:?}",
        run.stderr
    );
    eprintln!("root without -u: refused in {:?}", run.elapsed);
}

/// Bad flags: non-zero exit, one line on stderr, nothing in /dev/shm, nothing
/// listening.
#[test]
fn bad_flags_are_refused_with_one_line() {
    let cases: &[&[&str]] = &[
        &["-c", "0"],
        &["-t", "0"],
        &["-I", "512"],
        &["-B", "xx"],
        &["-o", "nosuch"],
        &["--config", "/nonexistent"],
    ];
    for bad in cases {
        let port = free_port();
        let port_arg = port.to_string();
        let mut args = vec!["-p", &port_arg, "-l", "127.0.0.1", "-u", "root", "-m", "16"];
        args.extend_from_slice(bad);
        let run = run_to_exit(&args, Duration::from_secs(2));
        assert_refused(&run, port, &bad.join(" "));
    }
}

/// A port another instance listens on: memcached exits (71, `failed to
/// listen on one of interface(s) 127.0.0.1: Address already in use`). A
/// second shmcached must not join the first one's SO_REUSEPORT sockets: both
/// would then take connections, each with its own table.
#[test]
fn a_second_instance_on_a_busy_port_is_refused() {
    let first = Server::shmcached(&["-t", "2", "-m", "16"]);
    let port = first.port();
    let port_arg = port.to_string();
    let args = [
        "-p",
        &port_arg,
        "-l",
        "127.0.0.1",
        "-u",
        "root",
        "-t",
        "2",
        "-m",
        "16",
    ];
    let listeners_before = listening_inodes(port).len();
    // Killed after 2 s if it does start; look at the port before that.
    let started = thread::scope(|s| {
        let second = s.spawn(|| try_run_to_exit(&args, Duration::from_secs(2)));
        let mut listeners_during = 0;
        let deadline = Instant::now() + Duration::from_millis(1500);
        while !second.is_finished() && Instant::now() < deadline {
            listeners_during = listeners_during.max(listening_inodes(port).len());
            thread::sleep(POLL);
        }
        (
            second.join().expect("second instance thread"),
            listeners_during,
        )
    });
    let (run, listeners_during) = started;
    let run = run.unwrap_or_else(|e| {
        panic!(
            "a second shmcached on port {port}, where a first one listens, started and shared \
             the port (sockets listening on it: {listeners_before} before, up to \
             {listeners_during} while the second ran): {e}"
        )
    });
    assert!(
        !run.status.success(),
        "the second instance should exit non-zero, got {}",
        run.status
    );
    assert!(
        run.stderr.lines().count() == 1 && run.stderr.contains("Address already in use"),
        "one line naming `Address already in use` expected on stderr, got {:?}",
        run.stderr
    );
    assert_eq!(
        segments_of(run.pid),
        Vec::<String>::new(),
        "segment of the refused instance"
    );
    assert!(
        owns_its_port(&first, 2),
        "the first instance still owns its port alone"
    );
    assert_serves(&first, "still_first");
}

/// `-p -1` picks a free port and `MEMCACHED_PORT_FILENAME` tells it, in
/// memcached's format (`TCP INET: <port>`), so that tooling can find it; the
/// same check runs against memcached to pin the format.
#[test]
fn an_ephemeral_port_is_written_to_the_port_file() {
    for program in [SHMCACHED, "/usr/bin/memcached"] {
        let port_file = std::env::temp_dir().join(format!(
            "shmcached-test-portfile-{}-{}",
            std::process::id(),
            program.len()
        ));
        let _ = fs::remove_file(&port_file);
        let mut child = Command::new(program)
            .args([
                "-p",
                "-1",
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-u",
                "root",
                "-t",
                "1",
            ])
            .env("MEMCACHED_PORT_FILENAME", &port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let text = wait_for(Duration::from_secs(5), || {
            fs::read_to_string(&port_file)
                .ok()
                .filter(|t| t.ends_with('\n'))
        });
        let port: Option<u16> = text.as_deref().and_then(|t| {
            t.strip_prefix("TCP INET: ")
                .and_then(|p| p.trim_end().parse().ok())
        });
        // The port it names serves.
        let answer = port.map(|p| Conn::connect(p).roundtrip(b""));
        let _ = signal(child.id(), SIGTERM);
        let _ = child.wait();
        let _ = fs::remove_file(&port_file);
        let text = text.unwrap_or_else(|| panic!("{program} wrote no port file"));
        let port = port.unwrap_or_else(|| panic!("{program}'s port file: {text:?}"));
        assert_eq!(text, format!("TCP INET: {port}\n"), "{program}");
        assert_ne!(port, 0);
        assert_eq!(
            answer,
            Some(Vec::new()),
            "{program} on port {port}: a version round trip"
        );
    }
}

/// The pid in `stats workers` of worker slot `slot` (0 while it is dead).
fn slot_pid(server: &Server, slot: usize) -> u32 {
    let reply = server.connect().roundtrip(b"stats workers\r\n");
    let key = format!("STAT worker:{slot}:pid ");
    String::from_utf8_lossy(&reply)
        .lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A slot whose worker is dead gets no new connections while it waits for
/// its successor: here a crash-looping slot 0 is held back a second by the
/// respawn back-off, and every connection made meanwhile is answered at once
/// by slot 1 (before: about half of them waited out the back-off).
#[test]
fn new_connections_go_around_a_dead_slot() {
    let server = Server::shmcached(&["-t", "2", "-m", "16"]);
    wait_for_workers(&server, 2);
    // Kill slot 0's worker as soon as each successor serves: young deaths
    // double the back-off, 50 ms up to 1 s.
    let mut last = 0;
    for _ in 0..8 {
        let pid = wait_for(Duration::from_secs(3), || {
            let pid = slot_pid(&server, 0);
            (pid != 0 && pid != last).then_some(pid)
        })
        .expect("slot 0 gets a new worker");
        signal(pid, SIGKILL).expect("kill -9 slot 0's worker");
        wait_for(Duration::from_secs(1), || (!is_alive(pid)).then_some(()))
            .expect("the killed worker dies");
        last = pid;
    }
    // Let the supervisor reap it and steer around its slot.
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut conns: Vec<Conn> = (0..20).map(|_| server.connect()).collect();
    for conn in &mut conns {
        conn.send(b"version\r\n");
    }
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.set_timeout(Duration::from_secs(3));
        let line = conn.read_line();
        assert!(
            line.starts_with(b"VERSION "),
            "connection {i}: {:?}",
            escape(&line)
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "20 connections made while slot 0 was dead took {took:?} to be answered"
    );
    // Slot 0 comes back and serves again.
    wait_for(Duration::from_secs(3), || {
        let pid = slot_pid(&server, 0);
        (pid != 0 && pid != last).then_some(pid)
    })
    .expect("slot 0 respawned");
    assert_serves(&server, "after");
}
