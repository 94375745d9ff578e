//! Per-prefix counters behind `stats detail on|off|dump`, shared by all
//! workers: a fixed table in the segment, entries claimed with
//! compare-and-swap, counters bumped with atomic adds. No lock anywhere.
//!
//! A key's prefix is its bytes up to the first delimiter (`:` unless `-D`);
//! a key without one is not counted (memcached's rule). The first
//! [`PREFIX_ENTRIES`] distinct prefixes get an entry each; later ones are
//! counted together in one overflow entry.
//!
//! `stats reset` empties the table by moving to a new epoch: an entry whose
//! epoch is not the current one is free. A worker that dies while claiming
//! leaves one entry that nobody uses until the next reset; a second worker
//! that gives up waiting for a claim may make a twin entry for the same
//! prefix, which [`Store::prefix_dump`] folds into one line.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::Store;

/// Prefixes with an entry of their own.
pub const PREFIX_ENTRIES: usize = 1024;
/// Longest prefix (a key is at most 250 bytes, and the delimiter follows).
const PREFIX_MAX: usize = 256;
/// How long a lookup waits for another worker's claim to finish.
const CLAIM_SPINS: u32 = 100_000;

const EMPTY: u32 = 0;
const CLAIMING: u32 = 1;
const READY: u32 = 2;

/// What a command did to a key, for its prefix's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixOp {
    /// A retrieval (get/gets/gat/gats); `hit` if the key was found.
    Get { hit: bool },
    /// A storage command (set/add/replace/append/prepend/cas), whatever its outcome.
    Set,
    /// A delete, whatever its outcome.
    Delete,
}

/// One prefix's counters.
#[repr(C, align(64))]
pub struct PrefixEntry {
    /// epoch << 2 | EMPTY / CLAIMING / READY.
    word: AtomicU32,
    hash: AtomicU32,
    /// Claim order: memcached lists the newest prefix of a hash bucket first.
    order: AtomicU32,
    len: AtomicU32,
    /// get, hit, set, del.
    counts: [AtomicU64; 4],
    bytes: [AtomicU8; PREFIX_MAX],
}

/// One line of `stats detail dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixLine {
    pub prefix: Vec<u8>,
    pub get: u64,
    pub hit: u64,
    pub set: u64,
    pub del: u64,
}

impl PrefixEntry {
    fn add(&self, op: PrefixOp) {
        let bump = |i: usize| self.counts[i].fetch_add(1, Ordering::Relaxed);
        match op {
            PrefixOp::Get { hit } => {
                bump(0);
                if hit {
                    bump(1);
                }
            }
            PrefixOp::Set => {
                bump(2);
            }
            PrefixOp::Delete => {
                bump(3);
            }
        }
    }

    fn counts(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.counts[i].load(Ordering::Relaxed))
    }

    fn is(&self, hash: u32, prefix: &[u8]) -> bool {
        self.hash.load(Ordering::Relaxed) == hash
            && self.len.load(Ordering::Relaxed) as usize == prefix.len()
            && prefix
                .iter()
                .zip(&self.bytes)
                .all(|(&b, a)| a.load(Ordering::Relaxed) == b)
    }

    fn prefix(&self) -> Vec<u8> {
        let len = (self.len.load(Ordering::Relaxed) as usize).min(PREFIX_MAX);
        self.bytes[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The prefix of `key`: the bytes before the first `delimiter`. memcached
/// stops looking at a NUL byte, and a key without the delimiter has none.
pub fn prefix_of(key: &[u8], delimiter: u8) -> Option<&[u8]> {
    for (i, &b) in key.iter().enumerate() {
        if b == delimiter {
            return Some(&key[..i]);
        }
        if b == 0 {
            return None;
        }
    }
    None
}

impl Store {
    /// `stats detail on|off`: shared by every worker.
    pub fn set_detail(&self, on: bool) {
        self.header()
            .detail_enabled
            .store(if on { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// `stats detail` as a client last set it; None if none did (then the
    /// settings decide: `-D` turns it on). One load of a line that is almost
    /// never written.
    #[inline]
    pub fn detail(&self) -> Option<bool> {
        match self.header().detail_enabled.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        }
    }

    /// Count `op` for `key`'s prefix.
    pub fn record_prefix(&self, key: &[u8], delimiter: u8, op: PrefixOp) {
        if let Some(prefix) = prefix_of(key, delimiter) {
            self.prefix_entry(prefix).add(op);
        }
    }

    /// The entry for `prefix`, claiming a free one if it has none; the
    /// overflow entry when the table is full.
    fn prefix_entry(&self, prefix: &[u8]) -> &PrefixEntry {
        let table = &self.prefixes[..PREFIX_ENTRIES];
        let overflow = &self.prefixes[PREFIX_ENTRIES];
        let hash = super::hash_key(prefix);
        let epoch = self.header().prefix_epoch.load(Ordering::Acquire) & (u32::MAX >> 2);
        let start = hash as usize % PREFIX_ENTRIES;
        'probe: for i in 0..PREFIX_ENTRIES {
            let e = &table[(start + i) % PREFIX_ENTRIES];
            let mut spins = 0;
            loop {
                let word = e.word.load(Ordering::Acquire);
                let state = if word >> 2 == epoch { word & 3 } else { EMPTY };
                match state {
                    EMPTY => {
                        let mine = epoch << 2 | CLAIMING;
                        if e.word
                            .compare_exchange(word, mine, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                        {
                            continue;
                        }
                        for c in &e.counts {
                            c.store(0, Ordering::Relaxed);
                        }
                        for (dst, &b) in e.bytes.iter().zip(prefix) {
                            dst.store(b, Ordering::Relaxed);
                        }
                        e.len.store(prefix.len() as u32, Ordering::Relaxed);
                        e.hash.store(hash, Ordering::Relaxed);
                        let order = self.header().prefix_order.fetch_add(1, Ordering::Relaxed);
                        e.order.store(order, Ordering::Relaxed);
                        e.word.store(epoch << 2 | READY, Ordering::Release);
                        return e;
                    }
                    CLAIMING if spins < CLAIM_SPINS => {
                        spins += 1;
                        std::hint::spin_loop();
                    }
                    // A claim that never finishes (its worker died) is skipped.
                    CLAIMING => continue 'probe,
                    _ if e.is(hash, prefix) => return e,
                    _ => continue 'probe,
                }
            }
        }
        overflow
    }

    /// `stats reset`: forget every prefix.
    pub fn clear_prefixes(&self) {
        self.header().prefix_epoch.fetch_add(1, Ordering::AcqRel);
        for c in &self.prefixes[PREFIX_ENTRIES].counts {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The lines of `stats detail dump` in memcached's order (its hash table's:
    /// murmur3 of the prefix modulo 256, newest first within a bucket), then
    /// the overflow line (`None` prefix) if anything was counted there.
    pub fn prefix_dump(&self) -> (Vec<PrefixLine>, Option<[u64; 4]>) {
        let epoch = self.header().prefix_epoch.load(Ordering::Acquire) & (u32::MAX >> 2);
        let mut lines: Vec<(u32, PrefixLine)> = Vec::new();
        for e in &self.prefixes[..PREFIX_ENTRIES] {
            if e.word.load(Ordering::Acquire) != epoch << 2 | READY {
                continue;
            }
            let prefix = e.prefix();
            let [get, hit, set, del] = e.counts();
            let order = e.order.load(Ordering::Relaxed);
            match lines.iter_mut().find(|(_, l)| l.prefix == prefix) {
                Some((o, twin)) => {
                    *o = (*o).min(order);
                    twin.get += get;
                    twin.hit += hit;
                    twin.set += set;
                    twin.del += del;
                }
                None => lines.push((
                    order,
                    PrefixLine {
                        prefix,
                        get,
                        hit,
                        set,
                        del,
                    },
                )),
            }
        }
        lines.sort_by_key(|(order, l)| (murmur3_32(&l.prefix) % 256, std::cmp::Reverse(*order)));
        let overflow = self.prefixes[PREFIX_ENTRIES].counts();
        (
            lines.into_iter().map(|(_, l)| l).collect(),
            (overflow != [0; 4]).then_some(overflow),
        )
    }
}

/// MurmurHash3_x86_32 with seed 0: memcached's default hash, which orders
/// its prefix table.
pub fn murmur3_32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    let mut h: u32 = 0;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        h ^= mix(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        h ^= mix(k);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_orders_as_memcached() {
        // live: memcached 1.6.18 dumped these prefixes in this order.
        let order: &[&[u8]] = &[b"", b"zz", b"x", b"a", b"q"];
        let buckets: Vec<u32> = order.iter().map(|p| murmur3_32(p) % 256).collect();
        assert_eq!(buckets, [0, 24, 27, 178, 232]);
        assert_eq!(murmur3_32(b""), 0);
    }

    #[test]
    fn prefixes_stop_at_the_delimiter_or_a_nul() {
        assert_eq!(prefix_of(b"user:1", b':'), Some(&b"user"[..]));
        assert_eq!(prefix_of(b":x", b':'), Some(&b""[..]));
        assert_eq!(prefix_of(b"a:b:c", b':'), Some(&b"a"[..]));
        assert_eq!(prefix_of(b"nocolon", b':'), None);
        assert_eq!(prefix_of(b"a\0b:c", b':'), None);
        assert_eq!(prefix_of(b"a#b", b'#'), Some(&b"a"[..]));
    }
}
