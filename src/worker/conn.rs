//! One client connection: its socket and its two buffers.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use crate::store::conns::ConnState;

/// Bytes read per read() call at most; the buffer grows only for large values.
const READ_CHUNK: usize = 16 * 1024;

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
    pub stream: TcpStream,
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
    /// The poller saw the peer's FIN: read on until EOF even after a short read.
    pub peer_closed: bool,
    /// When the last request was handled (`-o idle_timeout`): as in memcached,
    /// bytes that do not complete a request are no sign of life.
    pub last_active: Instant,
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
}

impl Conn {
    /// `authenticated`: false when `-Y` asks every connection to authenticate.
    pub fn new(stream: TcpStream, authenticated: bool) -> Conn {
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
            last_active: Instant::now(),
            seed_wait_since: None,
            authenticated,
            handled: false,
            entry: None,
            binary: None,
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
}
