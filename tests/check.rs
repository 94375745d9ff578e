//! `shmcached check`: the health check an operator or a monitor runs.
//! Against a real shmcached and memcached, nothing listening, a server that
//! never answers, and scripted servers for the answers the real ones do not
//! give on demand (workers down, garbage).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::{SHMCACHED, Server, free_port};

/// `shmcached check <args>`: (exit code, stdout, stderr, how long it took).
fn check(args: &[&str]) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(SHMCACHED)
        .arg("check")
        .args(args)
        .output()
        .expect("run shmcached check");
    (
        status.code().expect("check exits, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        start.elapsed(),
    )
}

/// The line up to `uptime `, and the uptime; panics if the line does not end
/// with `uptime <n> s`.
fn split_uptime(line: &str) -> (&str, u64) {
    let line = line
        .strip_suffix(" s\n")
        .unwrap_or_else(|| panic!("{line:?}"));
    let at = line.rfind("uptime ").unwrap_or_else(|| panic!("{line:?}"));
    let (head, tail) = line.split_at(at + "uptime ".len());
    (head, tail.parse().unwrap_or_else(|_| panic!("{line:?}")))
}

#[test]
fn up_with_all_workers_is_ok() {
    let server = Server::shmcached(&["-t", "2"]);
    assert_eq!(
        server.connect().roundtrip(b"set k 0 0 1\r\nv\r\n"),
        b"STORED\r\n"
    );
    let port = server.port().to_string();
    let (code, out, err, _) = check(&["--port", &port]);
    assert_eq!(code, 0, "stdout {out:?} stderr {err:?}");
    let (head, uptime) = split_uptime(&out);
    assert_eq!(
        head,
        format!(
            "ok: shmcached at 127.0.0.1:{port}, version 1.6.18, workers 2/2 alive, 1 items, uptime "
        )
    );
    assert!(uptime < 60, "{out:?}");
    assert_eq!(err, "");
}

#[test]
fn host_name_and_long_forms() {
    let server = Server::shmcached(&["-t", "1"]);
    let (code, out, _, _) = check(&[
        "--host=localhost",
        &format!("--port={}", server.port()),
        "--timeout=2000",
    ]);
    assert_eq!(code, 0, "{out:?}");
    assert!(
        out.starts_with(&format!("ok: shmcached at localhost:{}, ", server.port())),
        "{out:?}"
    );
}

#[test]
fn nothing_listening_fails_fast() {
    let port = free_port().to_string();
    let (code, out, _, took) = check(&["--port", &port]);
    assert_eq!(code, 2, "{out:?}");
    assert_eq!(out, format!("down: 127.0.0.1:{port}: connection refused\n"));
    assert!(took < Duration::from_millis(900), "took {took:?}");
}

#[test]
fn silent_server_times_out() {
    // Accepts (the kernel completes the handshake) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let (code, out, _, took) = check(&["--port", &port, "--timeout", "300"]);
    assert_eq!(code, 2, "{out:?}");
    assert_eq!(
        out,
        format!("down: 127.0.0.1:{port}: timed out after 300 ms (reading the version)\n")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "took {took:?}"
    );
}

#[test]
fn memcached_is_ok_without_workers() {
    let server = Server::memcached(&[]);
    let port = server.port().to_string();
    let (code, out, err, _) = check(&["--port", &port]);
    assert_eq!(code, 0, "stdout {out:?} stderr {err:?}");
    let (head, _) = split_uptime(&out);
    assert_eq!(
        head,
        format!("ok: memcached at 127.0.0.1:{port}, version 1.6.18, 0 items, uptime ")
    );
}

/// How a scripted server answers one request line.
type Answer = fn(&str) -> String;

/// A one-connection server that answers each request line with `answer(line)`.
fn scripted(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut writer: TcpStream = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if writer
                .write_all(answer(line.trim_end()).as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    port.to_string()
}

#[test]
fn workers_down_is_degraded() {
    let port = scripted(|line| match line {
        "version" => "VERSION 1.6.18\r\n".into(),
        "stats" => "STAT pid 1\r\nSTAT uptime 7\r\nSTAT curr_items 3\r\n\
                    STAT workers 4\r\nSTAT workers_alive 3\r\nEND\r\n"
            .into(),
        _ => String::new(),
    });
    let (code, out, _, _) = check(&["--port", &port]);
    assert_eq!(code, 1, "{out:?}");
    assert_eq!(
        out,
        format!(
            "degraded: shmcached at 127.0.0.1:{port}, version 1.6.18, workers 3/4 alive, 3 items, uptime 7 s\n"
        )
    );
}

#[test]
fn bad_replies_are_down() {
    let cases: &[(Answer, &str)] = &[
        (|_| "ERROR\r\n".into(), "bad reply to version: \"ERROR\""),
        (
            |_| "CLIENT_ERROR unauthenticated\r\n".into(),
            "the server requires authentication (-Y), which check does not do yet",
        ),
        (
            |line| match line {
                "version" => "VERSION 1.6.18\r\n".into(),
                _ => "STAT uptime 1\r\nnonsense\r\n".into(),
            },
            "bad reply to stats: \"nonsense\"",
        ),
        (
            |line| match line {
                "version" => "VERSION 1.6.18\r\n".into(),
                _ => "STAT uptime 1\r\nEND\r\n".into(),
            },
            "bad reply to stats: \"(no curr_items)\"",
        ),
    ];
    for (answer, why) in cases {
        let port = scripted(*answer);
        let (code, out, _, _) = check(&["--port", &port]);
        assert_eq!(code, 2, "{out:?}");
        assert_eq!(out, format!("down: 127.0.0.1:{port}: {why}\n"));
    }
}

#[test]
fn closed_connection_is_down() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let (code, out, _, _) = check(&["--port", &port]);
    assert_eq!(code, 2, "{out:?}");
    assert!(
        out.starts_with(&format!("down: 127.0.0.1:{port}: ")),
        "{out:?}"
    );
}

/// A unix socket path with nothing behind it is down, with the reason; a
/// served one is checked in tests/unix_socket.rs.
#[test]
fn missing_unix_socket_is_down() {
    let path = std::env::temp_dir().join(format!("shmcached-check-{}.sock", std::process::id()));
    let (code, out, err, _) = check(&["--socket", path.to_str().unwrap()]);
    assert_eq!(code, 2, "stdout {out:?} stderr {err:?}");
    assert_eq!(
        out,
        format!(
            "down: unix:{}: connecting: No such file or directory (os error 2)\n",
            path.display()
        )
    );
}
