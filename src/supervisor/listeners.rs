//! The listening sockets: one SO_REUSEPORT socket per worker slot and
//! address, all on one port, made once by the supervisor before it drops
//! privileges (a socket made later, as another user, could not join them).
//!
//! Slots past the number of workers in service are dormant: their sockets stay
//! open but get no connection, because a classic BPF program attached to each
//! address's reuseport group picks the socket: `hash(source port) % workers`,
//! and a group's sockets are numbered in the order they started listening,
//! which is the slot order. Changing the number of workers is then a matter of
//! reattaching the program: no socket is ever closed, so no queued connection
//! is ever reset.
//!
//! With `-s` there is no TCP (as in memcached) but one unix socket, which
//! Linux cannot split by SO_REUSEPORT: every worker in service accepts on it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::Settings;

/// The longest path a unix socket can have (`sun_path` less its NUL).
const UNIX_PATH_MAX: usize = 107;

/// `listeners[slot][address]`, for `slots` slots: none with `-s`.
pub fn bind(s: &Settings, slots: u32) -> Result<Vec<Vec<TcpListener>>, String> {
    if s.unix_socket.is_some() {
        return Ok((0..slots).map(|_| Vec::new()).collect());
    }
    let mut port = s.port;
    let mut all = Vec::new();
    for _ in 0..slots {
        let mut per_slot = Vec::new();
        for &ip in &s.listen {
            let addr = SocketAddr::new(ip, port);
            if all.is_empty() && port != 0 {
                ensure_free(addr)
                    .map_err(|e| format!("failed to listen on TCP port {port} at {ip}: {e}"))?;
            }
            let sock = listener(addr, s.backlog)
                .map_err(|e| format!("failed to listen on TCP port {port} at {ip}: {e}"))?;
            if port == 0 {
                // -p -1: the first socket picked a port; the rest join it.
                port = sock.local_addr().map_err(|e| e.to_string())?.port();
            }
            per_slot.push(sock);
        }
        all.push(per_slot);
    }
    Ok(all)
}

/// Send new connections to the first `workers` slots only.
pub fn steer(listeners: &[Vec<TcpListener>], workers: u32) -> std::io::Result<()> {
    steer_around(listeners, workers, &[])
}

/// Send new connections to the first `workers` slots except those in `skip`
/// (ascending; slots whose worker is dead or not ready yet): what a dead
/// slot's socket already queued waits for its successor, nothing new joins it.
pub fn steer_around(
    listeners: &[Vec<TcpListener>],
    workers: u32,
    skip: &[u32],
) -> std::io::Result<()> {
    let Some(first) = listeners.first() else {
        return Ok(());
    };
    let skip: Vec<u32> = skip.iter().copied().filter(|&s| s < workers).collect();
    if skip.len() >= workers as usize {
        return Ok(()); // nowhere else to go: leave the program as it is
    }
    for sock in first {
        let v6 = sock.local_addr()?.is_ipv6();
        let program = pick_slot(v6, workers.max(1), &skip);
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: setsockopt reads `fprog` and the program it points to, both
        // alive for the call; the kernel copies them.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&raw const fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The reuseport program: the index of the socket for a SYN.
///
/// ```text
/// A = TCP source port      (after the IPv4 header, whatever its length, or the IPv6 one)
/// A = A * 2654435761 >> 16 (Linux picks even ports for connect(): mix before the modulo)
/// A = A % (workers - skipped)
/// for each skipped slot s, ascending: if A >= s then A = A + 1
/// return A
/// ```
fn pick_slot(v6: bool, workers: u32, skip: &[u32]) -> Vec<libc::sock_filter> {
    const NET: u32 = libc::SKF_NET_OFF as u32;
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = if v6 {
        vec![op(
            libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
            NET.wrapping_add(40),
        )]
    } else {
        vec![
            // X = 4 * (IHL): the IPv4 header's length.
            op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, NET),
            op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, NET),
        ]
    };
    program.extend([
        op(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, 2_654_435_761),
        op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
        op(
            libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
            workers - skip.len() as u32,
        ),
    ]);
    for &s in skip {
        // Jump over the add unless A >= s.
        let mut jump = op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, s);
        jump.jf = 1;
        program.extend([jump, op(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K, 1)]);
    }
    program.push(op(libc::BPF_RET | libc::BPF_A, 0));
    program
}

/// memcached's `MEMCACHED_PORT_FILENAME`: a line per listening address,
/// `TCP INET: <port>` or `TCP INET6: <port>`, so that tooling can learn the
/// port that `-p -1` picked. Written aside and renamed, so a reader never
/// sees half a file.
pub fn write_port_file(path: &Path, slot: &[TcpListener]) -> Result<(), String> {
    let mut text = String::new();
    for l in slot {
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let family = if addr.is_ipv6() { "INET6" } else { "INET" };
        text.push_str(&format!("TCP {family}: {}\n", addr.port()));
    }
    let aside = path.with_extension("lck");
    std::fs::write(&aside, text)
        .and_then(|_| std::fs::rename(&aside, path))
        .map_err(|e| {
            format!(
                "cannot write MEMCACHED_PORT_FILENAME {}: {e}",
                path.display()
            )
        })
}

/// The unix socket of `-s` and the file it made. Dropping it in the
/// supervisor (at the end of a shutdown, or when start-up fails after it was
/// made) removes the file: memcached leaves it behind, and the next start
/// would replace it anyway, but a file nobody answers on misleads clients
/// and tooling meanwhile.
pub struct UnixSocket {
    pub listener: UnixListener,
    path: PathBuf,
    /// The file's (device, inode): only this very file is removed, never one
    /// that another instance has put in its place since.
    file: (u64, u64),
    /// The process that made it: a forked worker never removes the file.
    owner: u32,
}

impl UnixSocket {
    /// Listen on `path` with permissions `mode` (-a). A socket file already
    /// there is replaced if nothing answers on it (a crashed instance's), and
    /// refused if something does: memcached would silently take the path
    /// over from a running instance, which then serves nobody.
    pub fn bind(path: &Path, mode: u32, backlog: u32) -> Result<UnixSocket, String> {
        let fail =
            |why: String| format!("failed to listen on unix socket {}: {why}", path.display());
        let len = path.as_os_str().as_bytes().len();
        if len > UNIX_PATH_MAX {
            return Err(fail(format!(
                "the path is too long ({len} bytes, at most {UNIX_PATH_MAX})"
            )));
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e.to_string())),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(fail("the path exists and is not a socket".into()));
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(fail(
                        "another process listens on it (stop it, or choose another path)".into(),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Stale: left by an instance that is gone.
                    std::fs::remove_file(path)
                        .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
                }
                Err(e) => {
                    return Err(fail(format!(
                        "a socket file is there and cannot be checked: {e}"
                    )));
                }
            },
        }
        let listener = unix_listener(path, mode, backlog).map_err(|e| fail(e.to_string()))?;
        UnixSocket::owning(listener, path).map_err(fail)
    }

    /// This process owns `listener` and the file at `path` it is bound to
    /// (removed at exit if it is still that file).
    fn owning(listener: UnixListener, path: &Path) -> Result<UnixSocket, String> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        Ok(UnixSocket {
            listener,
            path: path.to_path_buf(),
            file: (meta.dev(), meta.ino()),
            owner: std::process::id(),
        })
    }

    /// The socket a previous image of this process listened on (upgrade):
    /// `fd`, named in the hand-over, must be a listening unix socket bound to
    /// `path`, and the file at `path` this image removes at exit.
    pub fn adopt(fd: RawFd, path: &Path) -> Result<UnixSocket, String> {
        let fail = |why: String| format!("the inherited unix socket {}: {why}", path.display());
        super::upgrade::set_cloexec(fd, true);
        // SAFETY: the previous image left `fd` open for us alone (named in the
        // hand-over), and no other object of this process owns it.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        if bound.as_pathname() != Some(path) {
            return Err(fail(format!(
                "it is bound to {bound:?}, these settings say -s"
            )));
        }
        UnixSocket::owning(listener, path).map_err(fail)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.file
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind with the permissions given from the first instant (through the umask,
/// as memcached does: no window in which the socket is more open), then listen.
fn unix_listener(path: &Path, mode: u32, backlog: u32) -> io::Result<UnixListener> {
    use nix::sys::stat::{Mode, umask};
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let addr = SockAddr::unix(path)?;
    let before = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = sock.bind(&addr);
    umask(before);
    bound?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(UnixListener::from(OwnedFd::from(sock)))
}

/// SO_REUSEPORT would let us join another process's sockets on the port (of
/// the same user) and split its connections: bind once without it first, as
/// memcached would, so that a busy port is refused.
fn ensure_free(addr: SocketAddr) -> std::io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

fn listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, TcpStream};

    /// Connections to each listener after `connections` connects.
    fn spread(ip: IpAddr, slots: u32, workers: u32, connections: usize) -> Option<Vec<usize>> {
        spread_around(ip, slots, workers, &[], connections)
    }

    fn spread_around(
        ip: IpAddr,
        slots: u32,
        workers: u32,
        skip: &[u32],
        connections: usize,
    ) -> Option<Vec<usize>> {
        let settings = Settings {
            port: 0,
            listen: vec![ip],
            ..Settings::default()
        };
        let listeners = bind(&settings, slots).ok()?;
        steer_around(&listeners, workers, skip).expect("attach the reuseport program");
        let addr = listeners[0][0].local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..connections)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let counts = listeners
            .iter()
            .map(|l| {
                l[0].set_nonblocking(true).unwrap();
                std::iter::from_fn(|| l[0].accept().ok()).count()
            })
            .collect();
        drop(clients);
        Some(counts)
    }

    #[test]
    fn connections_go_to_the_slots_in_service_only() {
        let counts = spread("127.0.0.1".parse().unwrap(), 4, 3, 90).unwrap();
        assert_eq!(counts[3], 0, "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 90);
        assert!(counts[..3].iter().all(|&c| c >= 15), "{counts:?}");
        let counts = spread("127.0.0.1".parse().unwrap(), 4, 1, 20).unwrap();
        assert_eq!(counts, [20, 0, 0, 0]);
    }

    #[test]
    fn connections_go_around_dead_slots() {
        let ip = "127.0.0.1".parse().unwrap();
        let counts = spread_around(ip, 4, 4, &[1], 90).unwrap();
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!([0, 2, 3].iter().all(|&i| counts[i] >= 15), "{counts:?}");
        let counts = spread_around(ip, 4, 3, &[0, 2], 30).unwrap();
        assert_eq!(counts, [0, 30, 0, 0]);
        // Every slot dead: nothing to steer to; the kernel's spread stays.
        let counts = spread_around(ip, 2, 2, &[0, 1], 40).unwrap();
        assert_eq!(counts.iter().sum::<usize>(), 40);
    }

    #[test]
    fn ipv6_too() {
        // Skipped where the machine has no IPv6 loopback.
        if let Some(counts) = spread("::1".parse().unwrap(), 3, 2, 40) {
            assert_eq!(counts[2], 0, "{counts:?}");
            assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
        }
    }
}
