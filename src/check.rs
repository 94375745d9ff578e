//! `shmcached check`: is the instance up and are all its workers alive?
//!
//! ```text
//! shmcached check [--host H] [--port P] [--socket PATH] [--timeout MS]
//! ```
//!
//! It connects, sends `version` (expects `VERSION <v>`), then `stats`, and
//! prints one line on stdout:
//!
//! ```text
//! ok: shmcached at 127.0.0.1:11211, version 1.6.18, workers 4/4 alive, 12 items, uptime 35 s
//! ok: shmcached at unix:/run/shmcached/shmcached.sock, version 1.6.18, workers 4/4 alive, ...
//! degraded: shmcached at 127.0.0.1:11211, version 1.6.18, workers 3/4 alive, 12 items, uptime 35 s
//! down: 127.0.0.1:11211: connection refused
//! ```
//!
//! A server without a `workers` stat (memcached) is reported without the
//! worker part. `--timeout` bounds the whole check, connecting included.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lexopt::{Arg, Parser};

/// Exit codes: monitoring tools read 0 / 1 / 2 as ok / warning / critical.
pub const EXIT_OK: i32 = 0;
pub const EXIT_DEGRADED: i32 = 1;
pub const EXIT_DOWN: i32 = 2;
/// A bad `check` command line (sysexits.h EX_USAGE, as for the daemon's flags).
pub const EXIT_USAGE: i32 = 64;

/// `shmcached check --help`; the man page renders it too.
pub const HELP: &str = "\
usage: shmcached check [--host <addr>] [--port <num>] [--socket <path>] [--timeout <ms>]
--host=<addr>             address or host name of the instance (default: 127.0.0.1)
--port=<num>              its TCP port (default: 11211)
--socket=<path>           its unix socket (-s) instead of --host and --port
--timeout=<ms>            give up after that many milliseconds, connecting
                          included (default: 1000)
--help                    print this help and exit

Sends `version` and `stats`, prints one status line and exits 0 when the
instance answers and all its workers are alive (workers_alive = workers),
1 when some workers are down, 2 when it does not answer or answers wrongly.
";

/// The largest `stats` reply read; a real one is a few KiB.
const MAX_REPLY: usize = 1 << 20;

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `--socket`: a unix socket, in place of `host` and `port`.
    pub socket: Option<PathBuf>,
    pub timeout: Duration,
}

impl Default for Target {
    fn default() -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: 11211,
            socket: None,
            timeout: Duration::from_millis(1000),
        }
    }
}

impl fmt::Display for Target {
    /// `127.0.0.1:11211`, `[::1]:11211`, `cache.example:11211`,
    /// `unix:/run/shmcached/shmcached.sock`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.socket {
            write!(f, "unix:{}", path.display())
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Help,
    Check(Target),
}

/// What a server that answered told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub version: String,
    /// `(alive, total)` from `workers_alive` and `workers`; None for a server
    /// that has no such stats (memcached).
    pub workers: Option<(u64, u64)>,
    pub items: u64,
    pub uptime: u64,
}

impl Health {
    pub fn all_alive(&self) -> bool {
        self.workers.is_none_or(|(alive, total)| alive >= total)
    }
}

/// Why a server is not serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// No address for the host name.
    Resolve(String),
    Refused,
    /// Connect, send or read did not finish within the timeout.
    Timeout {
        during: &'static str,
        ms: u128,
    },
    /// The server closed the connection.
    Closed {
        during: &'static str,
    },
    /// Another I/O error.
    Io {
        during: &'static str,
        error: String,
    },
    /// An answer that is not what a memcached server says.
    BadReply {
        to: &'static str,
        line: String,
    },
    /// The instance asks for `-Y` authentication, which check cannot do yet.
    AuthRequired,
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Down::Resolve(why) => write!(f, "cannot resolve the host: {why}"),
            Down::Refused => f.write_str("connection refused"),
            Down::Timeout { during, ms } => write!(f, "timed out after {ms} ms ({during})"),
            Down::Closed { during } => write!(f, "connection closed by the server ({during})"),
            Down::Io { during, error } => write!(f, "{during}: {error}"),
            Down::BadReply { to, line } => write!(f, "bad reply to {to}: {line:?}"),
            Down::AuthRequired => {
                f.write_str("the server requires authentication (-Y), which check does not do yet")
            }
        }
    }
}

/// `shmcached check <args>` (args after `check`): print one line, return the
/// exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let target = match parse(args) {
        Ok(Request::Check(t)) => t,
        Ok(Request::Help) => {
            print!("{HELP}");
            return EXIT_OK;
        }
        Err(e) => {
            eprintln!("shmcached check: {e}");
            return EXIT_USAGE;
        }
    };
    let (line, code) = report(&target, probe(&target));
    println!("{line}");
    code
}

/// The status line and exit code for what `probe` found.
pub fn report(target: &Target, found: Result<Health, Down>) -> (String, i32) {
    let health = match found {
        Ok(h) => h,
        Err(why) => return (format!("down: {target}: {why}"), EXIT_DOWN),
    };
    let (status, code) = if health.all_alive() {
        ("ok", EXIT_OK)
    } else {
        ("degraded", EXIT_DEGRADED)
    };
    let (server, workers) = match health.workers {
        Some((alive, total)) => ("shmcached", format!(", workers {alive}/{total} alive")),
        None => ("memcached", String::new()),
    };
    (
        format!(
            "{status}: {server} at {target}, version {}{workers}, {} items, uptime {} s",
            health.version, health.items, health.uptime
        ),
        code,
    )
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Request, String> {
    let mut parser = Parser::from_args(args);
    let mut target = Target::default();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Long("host") => {
                target.host = value(&mut parser, "--host")?;
                if target.host.is_empty() {
                    return Err("--host: empty".into());
                }
            }
            Arg::Long("port") => {
                let text = value(&mut parser, "--port")?;
                target.port = match text.parse() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(format!("--port {text}: not a port (1..65535)")),
                };
            }
            Arg::Long("timeout") => {
                let text = value(&mut parser, "--timeout")?;
                target.timeout = match text.parse() {
                    Ok(ms) if ms > 0 => Duration::from_millis(ms),
                    _ => {
                        return Err(format!(
                            "--timeout {text}: not a number of milliseconds (> 0)"
                        ));
                    }
                };
            }
            Arg::Long("socket") => {
                let path = parser.value().map_err(|e| e.to_string())?;
                if path.is_empty() {
                    return Err("--socket: empty".into());
                }
                target.socket = Some(path.into());
            }
            Arg::Long("help") | Arg::Short('h') => return Ok(Request::Help),
            other => {
                return Err(format!(
                    "{}; see shmcached check --help",
                    other.unexpected()
                ));
            }
        }
    }
    Ok(Request::Check(target))
}

fn value(parser: &mut Parser, name: &str) -> Result<String, String> {
    parser
        .value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|v| format!("{name} {}: not UTF-8", v.to_string_lossy()))
}

/// Connect, ask `version` and `stats`, all within `target.timeout`.
pub fn probe(target: &Target) -> Result<Health, Down> {
    let deadline = Instant::now() + target.timeout;
    let ms = target.timeout.as_millis();
    let mut stream = connect(target, deadline)?;
    let mut reader = LineReader::default();

    send(&mut stream, b"version\r\n", deadline, ms)?;
    let line = reader.line(&mut stream, deadline, ms, "reading the version")?;
    let version = match line.strip_prefix("VERSION ") {
        Some(v) if !v.is_empty() => v.to_string(),
        _ if line.starts_with("CLIENT_ERROR unauthenticated") => return Err(Down::AuthRequired),
        _ => {
            return Err(Down::BadReply {
                to: "version",
                line,
            });
        }
    };

    send(&mut stream, b"stats\r\n", deadline, ms)?;
    let mut stats = Vec::new();
    loop {
        let line = reader.line(&mut stream, deadline, ms, "reading stats")?;
        if line == "END" {
            break;
        }
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("STAT"), Some(name), Some(value)) => {
                stats.push((name.to_string(), value.to_string()))
            }
            _ => return Err(Down::BadReply { to: "stats", line }),
        }
    }
    let _ = stream.write_all(b"quit\r\n");

    let number = |name: &str| -> Result<Option<u64>, Down> {
        match stats.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, v)) => v.parse().map(Some).map_err(|_| Down::BadReply {
                to: "stats",
                line: format!("STAT {name} {v}"),
            }),
        }
    };
    let required = |name: &'static str| -> Result<u64, Down> {
        number(name)?.ok_or(Down::BadReply {
            to: "stats",
            line: format!("(no {name})"),
        })
    };
    let workers = match (number("workers_alive")?, number("workers")?) {
        (Some(alive), Some(total)) => Some((alive, total)),
        _ => None,
    };
    Ok(Health {
        version,
        workers,
        items: required("curr_items")?,
        uptime: required("uptime")?,
    })
}

/// The connection to the instance.
enum Link {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Link {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) {
        let _ = match self {
            Link::Tcp(s) => s.set_read_timeout(read).and(s.set_write_timeout(write)),
            Link::Unix(s) => s.set_read_timeout(read).and(s.set_write_timeout(write)),
        };
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.read(buf),
            Link::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.write(buf),
            Link::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn connect(target: &Target, deadline: Instant) -> Result<Link, Down> {
    match &target.socket {
        Some(path) => connect_unix(path, target.timeout.as_millis(), deadline).map(Link::Unix),
        None => connect_tcp(target, deadline).map(Link::Tcp),
    }
}

/// A unix socket whose backlog is full refuses a non-blocking connect with
/// EAGAIN: try again until the deadline.
fn connect_unix(path: &std::path::Path, ms: u128, deadline: Instant) -> Result<UnixStream, Down> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let during = "connecting";
    let io_error = |e: io::Error| Down::Io {
        during,
        error: e.to_string(),
    };
    let addr = SockAddr::unix(path).map_err(io_error)?;
    loop {
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_error)?;
        sock.set_nonblocking(true).map_err(io_error)?;
        match sock.connect(&addr) {
            Ok(()) => {
                sock.set_nonblocking(false).map_err(io_error)?;
                return Ok(UnixStream::from(std::os::fd::OwnedFd::from(sock)));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(Down::Refused),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if remaining(deadline).is_none() {
                    return Err(Down::Timeout { during, ms });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// Try each address of the host until one connects or the deadline passes.
fn connect_tcp(target: &Target, deadline: Instant) -> Result<TcpStream, Down> {
    let ms = target.timeout.as_millis();
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| Down::Resolve(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(Down::Resolve("no address".into()));
    }
    let mut last = Down::Refused;
    for addr in addrs {
        let Some(left) = remaining(deadline) else {
            return Err(Down::Timeout {
                during: "connecting",
                ms,
            });
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => last = Down::Refused,
            Err(e) if is_timeout(&e) => {
                last = Down::Timeout {
                    during: "connecting",
                    ms,
                }
            }
            Err(e) => {
                last = Down::Io {
                    during: "connecting",
                    error: e.to_string(),
                }
            }
        }
    }
    Err(last)
}

fn send(stream: &mut Link, bytes: &[u8], deadline: Instant, ms: u128) -> Result<(), Down> {
    let during = "sending";
    let left = remaining(deadline).ok_or(Down::Timeout { during, ms })?;
    stream.set_timeouts(None, Some(left));
    stream.write_all(bytes).map_err(|e| match e.kind() {
        _ if is_timeout(&e) => Down::Timeout { during, ms },
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Down::Closed { during },
        _ => Down::Io {
            during,
            error: e.to_string(),
        },
    })
}

/// `\r\n`-terminated lines from a stream, with a deadline.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
    total: usize,
}

impl LineReader {
    /// The next line, without its `\r\n`, lossily decoded.
    fn line(
        &mut self,
        stream: &mut Link,
        deadline: Instant,
        ms: u128,
        during: &'static str,
    ) -> Result<String, Down> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.total > MAX_REPLY {
                return Err(Down::BadReply {
                    to: "stats",
                    line: format!("(more than {MAX_REPLY} bytes)"),
                });
            }
            let left = remaining(deadline).ok_or(Down::Timeout { during, ms })?;
            stream.set_timeouts(Some(left), None);
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(Down::Closed { during }),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(Down::Timeout { during, ms }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Down::Closed { during });
                }
                Err(e) => {
                    return Err(Down::Io {
                        during,
                        error: e.to_string(),
                    });
                }
            }
        }
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Request, String> {
        parse(args.iter().map(Into::into))
    }

    #[test]
    fn command_line() {
        assert_eq!(run(&[]), Ok(Request::Check(Target::default())));
        assert_eq!(
            run(&["--host", "::1", "--port=11311", "--timeout", "250"]),
            Ok(Request::Check(Target {
                host: "::1".into(),
                port: 11311,
                socket: None,
                timeout: Duration::from_millis(250),
            }))
        );
        assert_eq!(
            run(&["--socket", "/run/shmcached/shmcached.sock"]),
            Ok(Request::Check(Target {
                socket: Some("/run/shmcached/shmcached.sock".into()),
                ..Target::default()
            }))
        );
        assert_eq!(run(&["--help"]), Ok(Request::Help));
        let errors: &[(&[&str], &str)] = &[
            (&["--port", "0"], "--port 0: not a port (1..65535)"),
            (&["--port", "x"], "--port x: not a port (1..65535)"),
            (
                &["--timeout", "0"],
                "--timeout 0: not a number of milliseconds (> 0)",
            ),
            (&["--socket", ""], "--socket: empty"),
            (&["--host", ""], "--host: empty"),
            (
                &["--bogus"],
                "invalid option '--bogus'; see shmcached check --help",
            ),
            (
                &["stray"],
                "unexpected argument \"stray\"; see shmcached check --help",
            ),
        ];
        for (args, want) in errors {
            assert_eq!(run(args), Err(want.to_string()), "{args:?}");
        }
    }

    #[test]
    fn status_lines() {
        let t = Target::default();
        let health = |workers| Health {
            version: "1.6.18".into(),
            workers,
            items: 12,
            uptime: 35,
        };
        let table: &[(Result<Health, Down>, &str, i32)] = &[
            (
                Ok(health(Some((4, 4)))),
                "ok: shmcached at 127.0.0.1:11211, version 1.6.18, workers 4/4 alive, 12 items, uptime 35 s",
                EXIT_OK,
            ),
            (
                Ok(health(Some((3, 4)))),
                "degraded: shmcached at 127.0.0.1:11211, version 1.6.18, workers 3/4 alive, 12 items, uptime 35 s",
                EXIT_DEGRADED,
            ),
            (
                Ok(health(None)),
                "ok: memcached at 127.0.0.1:11211, version 1.6.18, 12 items, uptime 35 s",
                EXIT_OK,
            ),
            (
                Err(Down::Refused),
                "down: 127.0.0.1:11211: connection refused",
                EXIT_DOWN,
            ),
            (
                Err(Down::Timeout {
                    during: "reading the version",
                    ms: 1000,
                }),
                "down: 127.0.0.1:11211: timed out after 1000 ms (reading the version)",
                EXIT_DOWN,
            ),
            (
                Err(Down::BadReply {
                    to: "version",
                    line: "ERROR".into(),
                }),
                "down: 127.0.0.1:11211: bad reply to version: \"ERROR\"",
                EXIT_DOWN,
            ),
        ];
        for (found, line, code) in table {
            assert_eq!(report(&t, found.clone()), (line.to_string(), *code));
        }
        let v6 = Target {
            host: "::1".into(),
            ..Target::default()
        };
        assert_eq!(v6.to_string(), "[::1]:11211");
        let unix = Target {
            socket: Some("/run/x.sock".into()),
            ..Target::default()
        };
        assert_eq!(unix.to_string(), "unix:/run/x.sock");
    }
}
