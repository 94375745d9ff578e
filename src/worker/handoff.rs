//! Passing client connections from a worker that retires to the worker of
//! another slot (or to its own successor) on a reload, so that no client sees
//! its connection closed: only idle connections travel (nothing buffered in
//! either direction), so the socket alone is the whole state, plus whether it
//! had authenticated (`-Y`). TCP and unix sockets travel alike; the receiver
//! tells them apart by their address family. A request the client sends meanwhile waits in
//! the kernel for the new owner.
//!
//! Each slot has a mailbox, a Unix SOCK_SEQPACKET socket pair made by the
//! supervisor before any fork and kept open by it: any process sends on the
//! slot's outbox, the slot's worker reads its inbox. Messages wait there while
//! the slot has no worker, so a worker can hand its connections to the one
//! that replaces it.
//!
//! ```text
//! message: one byte per socket (1 = authenticated) + SCM_RIGHTS with the sockets
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use slog::{debug, warn};

/// Sockets per message: the kernel's SCM_MAX_FD.
pub const BATCH: usize = 253;

/// Every slot's mailbox, as the supervisor makes them.
pub struct Mailboxes {
    /// (inbox, outbox) by slot.
    pairs: Vec<(OwnedFd, OwnedFd)>,
}

impl Mailboxes {
    pub fn new(slots: usize) -> std::io::Result<Mailboxes> {
        let pairs = (0..slots)
            .map(|_| {
                socketpair(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    None,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Mailboxes { pairs })
    }

    /// Mailboxes an earlier image of the supervisor made: after an in-place
    /// upgrade (execve) the workers it left pass their connections on
    /// through them to the new image's workers.
    pub fn from_fds(pairs: Vec<(OwnedFd, OwnedFd)>) -> Mailboxes {
        Mailboxes { pairs }
    }

    /// Every slot's (inbox, outbox), for the next image to inherit.
    pub fn raw_fds(&self) -> Vec<(RawFd, RawFd)> {
        self.pairs
            .iter()
            .map(|(i, o)| (i.as_raw_fd(), o.as_raw_fd()))
            .collect()
    }

    /// Slot `slot`'s inbox (the supervisor watches a dormant slot's).
    pub fn inbox(&self, slot: usize) -> BorrowedFd<'_> {
        self.pairs[slot].0.as_fd()
    }

    /// In a worker: its own inbox and everyone's outbox.
    pub fn for_worker(&self, slot: usize) -> std::io::Result<Handoff> {
        let inbox = self.pairs[slot].0.try_clone()?;
        let outboxes = self
            .pairs
            .iter()
            .map(|(_, out)| out.try_clone())
            .collect::<Result<_, _>>()?;
        Ok(Handoff { inbox, outboxes })
    }
}

/// A worker's end of the mailboxes.
pub struct Handoff {
    inbox: OwnedFd,
    outboxes: Vec<OwnedFd>,
}

/// A connection received from another worker.
pub struct Passed {
    pub socket: OwnedFd,
    pub authenticated: bool,
}

impl Handoff {
    pub fn inbox_fd(&self) -> RawFd {
        self.inbox.as_raw_fd()
    }

    /// Send up to [`BATCH`] connections to slot `to`: all of them or none.
    pub fn send(&self, to: usize, conns: &[(RawFd, bool)]) -> std::io::Result<()> {
        let Some(outbox) = self.outboxes.get(to) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let fds: Vec<RawFd> = conns.iter().map(|&(fd, _)| fd).collect();
        let flags: Vec<u8> = conns.iter().map(|&(_, auth)| u8::from(auth)).collect();
        sendmsg::<()>(
            outbox.as_raw_fd(),
            &[IoSlice::new(&flags)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Everything waiting in the inbox.
    pub fn receive(&self) -> std::io::Result<Vec<Passed>> {
        let mut passed = Vec::new();
        let mut flags = [0u8; BATCH];
        let mut space = nix::cmsg_space!([RawFd; BATCH]);
        loop {
            let mut iov = [IoSliceMut::new(&mut flags)];
            let msg = match recvmsg::<()>(
                self.inbox.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(Errno::EAGAIN) => return Ok(passed),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let bytes = msg.bytes;
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    fds.extend(received);
                }
            }
            for (i, fd) in fds.into_iter().enumerate() {
                // SAFETY: SCM_RIGHTS installed `fd` in this process for us
                // alone; nothing else owns it.
                let socket = unsafe { OwnedFd::from_raw_fd(fd) };
                let authenticated = i < bytes && flags[i] == 1;
                passed.push(Passed {
                    socket,
                    authenticated,
                });
            }
        }
    }
}

/// The worker's side of a reload: live settings, the heartbeat, and passing
/// connections on when it retires.
impl super::Worker {
    /// Every tick: tell the supervisor the loop is alive, and load what a
    /// reload (or a client's `verbosity`) may have changed.
    pub(super) fn tick(&mut self) {
        let store = &self.ctx.store;
        store.slot().beat();
        let header = store.header();
        let live = &header.live;
        // Nothing published: a store made without a supervisor.
        if live.workers.load(Relaxed) == 0 {
            return;
        }
        let s = &mut self.ctx.settings;
        s.max_connections = live.max_connections.load(Relaxed);
        s.reqs_per_event = live.reqs_per_event.load(Relaxed);
        s.idle_timeout = Duration::from_millis(live.idle_timeout_ms.load(Relaxed));
        s.workers = live.workers.load(Relaxed);
        // Stored plus one; 0 = never set since start.
        if let Some(v) = header.verbosity.load(Relaxed).checked_sub(1) {
            let v = v.min(u8::MAX as u32) as u8;
            if v != s.verbosity {
                s.verbosity = v;
                crate::log::set_verbosity(v);
            }
        }
    }

    /// The slot whose worker takes this one's connections when it drains:
    /// None at shutdown (they are closed).
    fn heir(&self) -> Option<usize> {
        match self.ctx.store.slot().handoff.load(Relaxed) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    /// SIGTERM: stop accepting. A worker that retires for good (its slot goes
    /// dormant) first takes what waits on its sockets and in its mailbox, to
    /// pass it on; one that is replaced leaves both to its successor.
    pub(super) fn begin_drain(&mut self) {
        match self.heir() {
            Some(heir) if heir != self.ctx.slot => {
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
                self.receive_passed();
            }
            _ => {
                let inbox = self.handoff.inbox_fd();
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut mio::unix::SourceFd(&inbox));
            }
        }
        self.stop_accepting();
    }

    /// While draining: connections with nothing received and nothing to send
    /// are done here: passed on to the heir, or closed at shutdown.
    pub(super) fn end_idle(&mut self) {
        let Some(heir) = self.heir() else {
            self.close_idle();
            return;
        };
        let mut idle = Vec::new();
        for i in 0..self.conns.len() {
            let Some(c) = &self.conns[i] else { continue };
            let quiet = c.input.is_empty()
                && c.output_pending() == 0
                && c.swallow == 0
                && !c.closing
                && c.dump.is_none();
            if quiet && c.eof {
                self.close(i);
            } else if quiet {
                idle.push((i, c.stream.as_raw_fd(), c.authenticated));
            }
        }
        for batch in idle.chunks(BATCH) {
            let socks: Vec<(RawFd, bool)> = batch.iter().map(|&(_, fd, a)| (fd, a)).collect();
            if let Err(e) = self.handoff.send(heir, &socks) {
                // The heir's mailbox is full: again at the next tick.
                debug!(self.log, "cannot pass connections on yet"; "to" => heir, "error" => %e);
                return;
            }
            // Only this process's descriptor closes: the socket is the heir's.
            for &(i, _, _) in batch {
                self.close(i);
            }
            self.passed += batch.len();
        }
    }

    /// Take the connections other workers passed to this slot.
    pub(super) fn receive_passed(&mut self) {
        let passed = match self.handoff.receive() {
            Ok(p) => p,
            Err(e) => {
                warn!(self.log, "cannot receive passed connections"; "error" => %e);
                return;
            }
        };
        for p in passed {
            let Ok(stream) = super::conn::Stream::from_fd(p.socket) else {
                continue;
            };
            // A client that left meanwhile: dropping the socket closes it.
            if stream.is_disconnected() {
                continue;
            }
            if let Some(idx) = self.adopt(stream, None, p.authenticated) {
                // Whatever its client sent while it travelled.
                self.service(idx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_connection_moves_with_what_its_client_sent_meanwhile() {
        let boxes = Mailboxes::new(2).unwrap();
        let (from, to) = (boxes.for_worker(0).unwrap(), boxes.for_worker(1).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served_too, _) = listener.accept().unwrap();

        from.send(
            1,
            &[(served.as_raw_fd(), true), (served_too.as_raw_fd(), false)],
        )
        .unwrap();
        drop((served, served_too));
        client.write_all(b"version\r\n").unwrap();

        let got = to.receive().unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].authenticated && !got[1].authenticated);
        let mut stream = TcpStream::from(got[0].socket.try_clone().unwrap());
        let mut buf = [0u8; 9];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"version\r\n");
        stream.write_all(b"VERSION x\r\n").unwrap();
        let mut reply = [0u8; 11];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"VERSION x\r\n");
        assert!(to.receive().unwrap().is_empty());
        drop(other);
    }

    #[test]
    fn unix_and_tcp_connections_come_out_as_what_they_are() {
        let boxes = Mailboxes::new(1).unwrap();
        let worker = boxes.for_worker(0).unwrap();
        let (mut client, served) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _tcp_client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp_served, _) = listener.accept().unwrap();
        worker
            .send(
                0,
                &[(served.as_raw_fd(), false), (tcp_served.as_raw_fd(), true)],
            )
            .unwrap();
        drop((served, tcp_served));
        let got = worker.receive().unwrap();
        assert_eq!(got.len(), 2);
        let mut streams = got
            .into_iter()
            .map(|p| super::super::conn::Stream::from_fd(p.socket).unwrap());
        let Some(super::super::conn::Stream::Unix(mut unix)) = streams.next() else {
            panic!("the unix socket came out as TCP");
        };
        assert!(matches!(
            streams.next(),
            Some(super::super::conn::Stream::Tcp(_))
        ));
        client.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        // Non-blocking now: the byte is already there.
        unix.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }
}
