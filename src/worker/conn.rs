//! One client connection: its socket (TCP or unix) and its two buffers.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};

use crate::store::conns::{ConnAddrs, ConnState};

/// A client's socket: accepted from a TCP or a unix listener, or passed on
/// by another worker. The rest of the worker does not care which.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// A connected socket received as a bare descriptor (SCM_RIGHTS): its
    /// family says which kind; made non-blocking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Stream> {
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())?.family();
        let stream = if family == Some(AddressFamily::Unix) {
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            Stream::Unix(UnixStream::from_std(std))
        } else {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true)?;
            Stream::Tcp(TcpStream::from_std(std))
        };
        Ok(stream)
    }

    /// What `stats conns` shows of it; `peer` as accept() returned it, if known.
    pub fn addrs(&self, peer: Option<SocketAddr>) -> ConnAddrs {
        match self {
            Stream::Tcp(s) => {
                let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
                let peer = peer.or_else(|| s.peer_addr().ok()).unwrap_or(unknown);
                let local = s.local_addr().unwrap_or(peer);
                ConnAddrs::Tcp { peer, local }
            }
            Stream::Unix(_) => ConnAddrs::Unix,
        }
    }

    /// The client has gone (a passed connection whose client left meanwhile).
    pub fn is_disconnected(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.peer_addr().is_err(),
            Stream::Unix(s) => s.peer_addr().is_err(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// A listening socket the supervisor made: the slot's own TCP socket, or the
/// unix socket every worker shares (all of them wake up for a connection;
/// the ones that lose the race get EAGAIN).
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// One waiting connection, with the client's address for TCP.
    pub fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Some(peer)))
            }
            Listener::Unix(l) => Ok((Stream::Unix(l.accept()?.0), None)),
        }
    }

    /// What `stats conns` shows for it.
    pub fn addrs(&self) -> Option<ConnAddrs> {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .ok()
                .map(|a| ConnAddrs::Tcp { peer: a, local: a }),
            Listener::Unix(_) => Some(ConnAddrs::Unix),
        }
    }

    /// The TCP port, if it is a TCP socket.
    pub fn port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(_) => None,
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}

/// Bytes read per read() call at most; the buffer grows only for large values.
const READ_CHUNK: usize = 16 * 1024;
/// Spare buffers a worker keeps, of each kind (at most 4 MiB of each).
const SPARES_KEPT: usize = 256;

thread_local! {
    /// Read buffers (READ_CHUNK long) and reply buffers of connections that
    /// wait for their next request: a worker holds buffers for its busy
    /// connections, not for every open one (10,000 idle connections held
    /// 16 KiB each). Each worker is a single-threaded process; after warm-up
    /// taking and parking allocates nothing.
    static SPARE_INPUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static SPARE_OUTPUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_spare(pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>) -> Option<Vec<u8>> {
    pool.with_borrow_mut(Vec::pop)
}

fn park_spare(pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>, buf: Vec<u8>) {
    pool.with_borrow_mut(|spares| {
        if spares.len() < SPARES_KEPT {
            spares.push(buf);
        }
    });
}

/// A byte buffer consumed from the front: `data[start..end]` is pending.
#[derive(Default)]
pub struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for at least `n` more bytes at the end, moving pending bytes to
    /// the front first when that frees enough.
    fn reserve(&mut self, n: usize) {
        if self.data.is_empty()
            && n <= READ_CHUNK
            && let Some(spare) = take_spare(&SPARE_INPUT)
        {
            self.data = spare;
        }
        if self.data.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < n {
            self.data.resize(self.end + n, 0);
        }
    }

    /// Give memory back after a large value went through.
    pub fn shrink(&mut self) {
        if self.is_empty() && self.data.len() > 4 * READ_CHUNK {
            self.data = Vec::new();
        }
    }

    /// Nothing pending: hand the storage to the worker's spares (done each
    /// time a connection waits: reads reuse a few buffers, however many
    /// connections are open).
    pub fn park(&mut self) {
        if self.is_empty() && !self.data.is_empty() {
            let data = std::mem::take(&mut self.data);
            if data.len() == READ_CHUNK {
                park_spare(&SPARE_INPUT, data);
            }
        }
    }
}

/// A moment by the monotonic clock (timeouts) and in unix seconds (what
/// `stats conns` shows), read together.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub at: Instant,
    pub unix: u32,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            at: Instant::now(),
            unix: crate::store::unix_now(),
        }
    }
}

/// What reading found.
pub enum ReadOutcome {
    /// Some bytes arrived (maybe more remain in the socket).
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
}

pub struct Conn {
    pub stream: Stream,
    pub input: Buffer,
    /// Replies waiting to be written.
    pub output: Vec<u8>,
    written: usize,
    /// Bytes still to drop as they arrive (a refused value's data block).
    pub swallow: usize,
    /// Close once `output` is written.
    pub closing: bool,
    /// The peer has shut down its side.
    pub eof: bool,
    /// Edge-triggered readiness not yet used up.
    pub readable: bool,
    pub writable: bool,
    /// Registered for writability: only while replies wait for room.
    pub write_interest: bool,
    /// The poller saw the peer's FIN: read on until EOF even after a short read.
    pub peer_closed: bool,
    /// When the last request was handled (`-o idle_timeout`): as in memcached,
    /// bytes that do not complete a request are no sign of life.
    pub last_active: Moment,
    /// When a seed `SET` started waiting for its data (for `ERR TOO_SMALL`).
    pub seed_wait_since: Option<Instant>,
    /// `-Y`: false until the client has sent valid credentials.
    pub authenticated: bool,
    /// A request was handled (memcached's conn_new_cmd until then).
    pub handled: bool,
    /// This connection's entry in the worker's connection table, if it got one.
    pub entry: Option<usize>,
    /// Speaks the binary protocol; `None` until its first byte decides (`-B`).
    pub binary: Option<bool>,
    /// An `lru_crawler metadump` under way: its lines go out a slice at a time
    /// as the client reads them, before any later request is handled.
    pub dump: Option<super::meta::Dump>,
}

impl Conn {
    /// `authenticated`: false when `-Y` asks every connection to authenticate.
    pub fn new(stream: Stream, authenticated: bool) -> Conn {
        Conn {
            stream,
            input: Buffer::default(),
            output: Vec::new(),
            written: 0,
            swallow: 0,
            closing: false,
            eof: false,
            readable: true,
            peer_closed: false,
            writable: true,
            write_interest: false,
            last_active: Moment::now(),
            seed_wait_since: None,
            authenticated,
            handled: false,
            entry: None,
            binary: None,
            dump: None,
        }
    }

    /// The buffer starts with a whole command line (binary: a whole header).
    /// Only the line's possible length is searched, not a large data block
    /// behind it (this runs after every event).
    fn command_line_complete(&self) -> bool {
        let pending = self.input.pending();
        if self.binary == Some(true) {
            return pending.len() >= crate::protocol::binary::HEADER_LEN;
        }
        pending[..pending.len().min(crate::protocol::LINE_MAX + 2)].contains(&b'\n')
    }

    /// What `stats conns` shows for this connection between events, in
    /// memcached's names.
    pub fn state(&self) -> ConnState {
        if self.closing {
            ConnState::Closing
        } else if self.output_pending() > 0 {
            ConnState::Mwrite
        } else if self.swallow > 0 {
            ConnState::Swallow
        } else if self.command_line_complete() {
            // A whole command line is waiting for the rest of its data block.
            ConnState::Nread
        } else if !self.handled && self.input.is_empty() {
            ConnState::NewCmd
        } else {
            ConnState::Read
        }
    }

    /// One read() into the input buffer, dropping swallowed bytes.
    pub fn read_some(&mut self) -> io::Result<(ReadOutcome, usize)> {
        self.input.reserve(READ_CHUNK);
        let buf = &mut self.input.data[self.input.end..];
        match self.stream.read(buf) {
            Ok(0) => {
                self.eof = true;
                self.readable = false;
                Ok((ReadOutcome::Eof, 0))
            }
            Ok(n) => {
                // A short read drained the socket: the next bytes raise a new
                // edge, so skip the read() that would only say EAGAIN (as
                // memcached does). Unless a FIN came with them: no edge follows.
                if n < buf.len() && !self.peer_closed {
                    self.readable = false;
                }
                self.input.end += n;
                if self.swallow > 0 {
                    let drop = self.swallow.min(self.input.len());
                    self.swallow -= drop;
                    self.input.consume(drop);
                }
                Ok((ReadOutcome::Data, n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok((ReadOutcome::WouldBlock, 0))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((ReadOutcome::Data, 0)),
            Err(e) => Err(e),
        }
    }

    /// Write as much pending output as the socket takes; returns bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            if self.output.capacity() > 4 * READ_CHUNK {
                self.output = Vec::new();
            }
            self.input.shrink();
        }
        Ok(total)
    }

    pub fn output_pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// Before replies are appended: a reply buffer from the spares if this
    /// connection parked its own.
    pub fn unpark(&mut self) {
        if self.output.capacity() == 0
            && let Some(spare) = take_spare(&SPARE_OUTPUT)
        {
            self.output = spare;
        }
    }

    /// The connection waits for its next request with nothing buffered:
    /// its buffers go to the worker's spares until it has work again.
    pub fn park(&mut self) {
        self.input.park();
        if self.output_pending() == 0 && self.output.capacity() > 0 {
            let mut output = std::mem::take(&mut self.output);
            output.clear();
            self.written = 0;
            // A buffer a large reply grew is not worth keeping.
            if output.capacity() <= READ_CHUNK {
                park_spare(&SPARE_OUTPUT, output);
            }
        }
    }
}
