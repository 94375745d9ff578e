//! The connection table behind `stats conns`. A worker sees only its own
//! sockets, so each one publishes them in its own part of the segment (a
//! fixed number of entries per worker slot), and whichever worker answers
//! `stats conns` reads every slot's part.
//!
//! Only the owning worker writes its entries; readers are other processes.
//! The address fields are written under a sequence count (odd while they
//! change), so that a reader never prints half of one connection and half of
//! the next one in the same entry. State and last-command time are single
//! words, stored as they change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Entries per worker slot: connections beyond this are served but not listed.
pub const CONNS_PER_WORKER: usize = 1024;

/// What a connection is doing, as memcached names it in `stats conns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ConnState {
    /// A listening socket.
    Listening = 1,
    /// Accepted, nothing received yet.
    NewCmd = 2,
    /// Between requests, or inside a request line.
    Read = 3,
    /// Inside a storage command's data block.
    Nread = 4,
    /// Dropping the data block of a refused value.
    Swallow = 5,
    /// Replies waiting for the client to read them.
    Mwrite = 6,
    /// Closing after its last reply.
    Closing = 7,
    /// Running a command (the connection that asked for `stats conns`).
    ParseCmd = 8,
}

impl ConnState {
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Listening => "conn_listening",
            ConnState::NewCmd => "conn_new_cmd",
            ConnState::Read => "conn_read",
            ConnState::Nread => "conn_nread",
            ConnState::Swallow => "conn_swallow",
            ConnState::Mwrite => "conn_mwrite",
            ConnState::Closing => "conn_closing",
            ConnState::ParseCmd => "conn_parse_cmd",
        }
    }

    fn from_word(w: u32) -> Option<ConnState> {
        Some(match w {
            1 => ConnState::Listening,
            2 => ConnState::NewCmd,
            3 => ConnState::Read,
            4 => ConnState::Nread,
            5 => ConnState::Swallow,
            6 => ConnState::Mwrite,
            7 => ConnState::Closing,
            8 => ConnState::ParseCmd,
            _ => return None,
        })
    }
}

/// The addresses of a published socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAddrs {
    /// `peer` is the client's address (the socket's own, for a listener);
    /// `local` the address the client connected to.
    Tcp { peer: SocketAddr, local: SocketAddr },
    /// The unix socket (`-s`): its path is in the settings, and a client has
    /// no address worth showing.
    Unix,
}

/// One published socket (one cache line).
#[repr(C, align(64))]
pub struct ConnEntry {
    /// Even when the address fields are stable, odd while they are written.
    seq: AtomicU32,
    /// 0 = free, else a [`ConnState`].
    state: AtomicU32,
    fd: AtomicU32,
    /// Unix second of the last command (of start-up, for a listener).
    last_cmd: AtomicU32,
    peer_ip: [AtomicU64; 2],
    local_ip: [AtomicU64; 2],
    /// peer port | local port << 16 | peer is v6 << 32 | local is v6 << 33
    /// | unix socket << 34.
    ports: AtomicU64,
}

const _: () = assert!(size_of::<ConnEntry>() == 64);

/// A consistent copy of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub fd: u32,
    pub state: ConnState,
    pub addrs: ConnAddrs,
    pub last_cmd: u32,
}

fn ip_words(ip: IpAddr) -> ([u64; 2], bool) {
    let bytes = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let (hi, lo) = bytes.split_at(8);
    (
        [
            u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        ],
        ip.is_ipv6(),
    )
}

fn ip_from_words(words: [u64; 2], v6: bool) -> IpAddr {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&words[0].to_be_bytes());
    bytes[8..].copy_from_slice(&words[1].to_be_bytes());
    let ip = Ipv6Addr::from(bytes);
    match ip.to_ipv4_mapped() {
        Some(v4) if !v6 => IpAddr::V4(v4),
        _ if !v6 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V6(ip),
    }
}

impl ConnEntry {
    /// Take the entry for a socket (owner only).
    pub fn publish(&self, fd: u32, addrs: ConnAddrs, state: ConnState, now: u32) {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let (peer, local, unix) = match addrs {
            ConnAddrs::Tcp { peer, local } => (peer, local, false),
            ConnAddrs::Unix => (unspecified, unspecified, true),
        };
        let (peer_ip, peer_v6) = ip_words(peer.ip());
        let (local_ip, local_v6) = ip_words(local.ip());
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.fd.store(fd, Ordering::Relaxed);
        self.peer_ip[0].store(peer_ip[0], Ordering::Relaxed);
        self.peer_ip[1].store(peer_ip[1], Ordering::Relaxed);
        self.local_ip[0].store(local_ip[0], Ordering::Relaxed);
        self.local_ip[1].store(local_ip[1], Ordering::Relaxed);
        self.ports.store(
            u64::from(peer.port())
                | u64::from(local.port()) << 16
                | u64::from(peer_v6) << 32
                | u64::from(local_v6) << 33
                | u64::from(unix) << 34,
            Ordering::Relaxed,
        );
        self.last_cmd.store(now, Ordering::Relaxed);
        self.state.store(state as u32, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// What the connection is doing now (owner only; cheap: two stores).
    #[inline]
    pub fn update(&self, state: ConnState, last_cmd: u32) {
        self.state.store(state as u32, Ordering::Relaxed);
        self.last_cmd.store(last_cmd, Ordering::Relaxed);
    }

    /// The socket is gone.
    pub fn clear(&self) {
        self.state.store(0, Ordering::Relaxed);
    }

    /// A consistent copy, or None for a free entry (or one that keeps
    /// changing under us: it is skipped).
    pub fn read(&self) -> Option<ConnInfo> {
        for _ in 0..4 {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let state = ConnState::from_word(self.state.load(Ordering::Relaxed));
            let fd = self.fd.load(Ordering::Relaxed);
            let peer_ip = [
                self.peer_ip[0].load(Ordering::Relaxed),
                self.peer_ip[1].load(Ordering::Relaxed),
            ];
            let local_ip = [
                self.local_ip[0].load(Ordering::Relaxed),
                self.local_ip[1].load(Ordering::Relaxed),
            ];
            let ports = self.ports.load(Ordering::Relaxed);
            let last_cmd = self.last_cmd.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            let state = state?;
            let addrs = if ports >> 34 & 1 == 1 {
                ConnAddrs::Unix
            } else {
                ConnAddrs::Tcp {
                    peer: SocketAddr::new(
                        ip_from_words(peer_ip, ports >> 32 & 1 == 1),
                        ports as u16,
                    ),
                    local: SocketAddr::new(
                        ip_from_words(local_ip, ports >> 33 & 1 == 1),
                        (ports >> 16) as u16,
                    ),
                }
            };
            return Some(ConnInfo {
                fd,
                state,
                addrs,
                last_cmd,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ConnEntry {
        // SAFETY: ConnEntry is all atomics; all-zero is a free entry.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn publish_read_update_clear() {
        let e = entry();
        assert_eq!(e.read(), None);
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let local: SocketAddr = "[::1]:11211".parse().unwrap();
        let addrs = ConnAddrs::Tcp { peer, local };
        e.publish(12, addrs, ConnState::NewCmd, 100);
        let got = e.read().unwrap();
        assert_eq!(
            got,
            ConnInfo {
                fd: 12,
                state: ConnState::NewCmd,
                addrs,
                last_cmd: 100
            }
        );
        e.update(ConnState::Nread, 105);
        let got = e.read().unwrap();
        assert_eq!((got.state, got.last_cmd), (ConnState::Nread, 105));
        e.clear();
        assert_eq!(e.read(), None);
        // The entry's next socket: a unix one leaves nothing of the TCP one.
        e.publish(13, ConnAddrs::Unix, ConnState::Listening, 110);
        assert_eq!(
            e.read().map(|i| (i.fd, i.addrs)),
            Some((13, ConnAddrs::Unix))
        );
        e.publish(14, addrs, ConnState::NewCmd, 120);
        assert_eq!(e.read().map(|i| i.addrs), Some(addrs));
    }
}
