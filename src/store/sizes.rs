//! memcached's item size histogram: `stats sizes_enable` starts it, `stats
//! sizes` shows the live items per 32 bytes of item size, `stats
//! sizes_disable` drops it.
//!
//! The counters sit in the segment, shared by every worker. The header's
//! `sizes_since` is both the switch and memcached's `stats_sizes_cas_min`:
//! enabling draws a cas-unique, and only items whose cas-unique is at least
//! that one are counted in and out, so an item stored before is never taken
//! away. Sizes are memcached's (its ITEM_ntotal), not ours, so that the
//! buckets are memcached's for the same key, value and flags.
//!
//! An item is counted in when memcached links it (a store, the new item of
//! an append or an incr) and out when it leaves the hash table (delete,
//! replace, expiry seen by a read or the sweep, eviction, a page move that
//! cannot rescue it); memcached counts an incr rewritten in place out and in
//! again, with its new cas-unique. A touch and a rescue copy change no
//! count. Counts are memcached's unsigned 32-bit: an item from before
//! enabling that `md <key> I` gave a new cas-unique wraps its bucket when it
//! goes, as in memcached. Like memcached's, the counts are not exact under
//! races: an enable or disable while items come and go, or a worker killed
//! between counting an item and linking it, or between unlinking and
//! uncounting it (the count stays one too high; it never wraps).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, fence};

use super::Store;
use super::item::Item;

/// Width of a bucket, in bytes of item.
pub const BUCKET_BYTES: u64 = 32;
/// memcached's sizeof(item) on 64-bit systems.
const MEMCACHED_ITEM: u64 = 48;
/// `sizes_since` while an enable clears the counters: no item counts.
const CLEARING: u64 = u64::MAX;

/// memcached's ITEM_ntotal for an item of this key, value and flags: its
/// header, the cas-unique when cas is on, the key and a NUL, the client
/// flags when they are not 0, the value and its `\r\n`.
pub fn memcached_item_size(nkey: usize, nbytes: usize, flags: u32, cas: bool) -> u64 {
    MEMCACHED_ITEM
        + if cas { 8 } else { 0 }
        + nkey as u64
        + 1
        + if flags != 0 { 4 } else { 0 }
        + nbytes as u64
        + 2
}

impl Store {
    /// `stats sizes_enable`: false when cas is off (`-C`), which memcached
    /// needs to tell the items stored before from those after.
    pub fn sizes_enable(&self) -> bool {
        if !self.cas_enabled {
            return false;
        }
        let since = &self.header().sizes_since;
        if since
            .compare_exchange(0, CLEARING, Relaxed, Relaxed)
            .is_ok()
        {
            for n in self.sizes {
                n.store(0, Relaxed);
            }
            // Whoever sees the switch on sees the counters cleared.
            since.store(self.next_cas(), Release);
        }
        true
    }

    /// `stats sizes_disable`.
    pub fn sizes_disable(&self) {
        self.header().sizes_since.store(0, Relaxed);
    }

    /// Whether the histogram counts (`stats settings` `track_sizes`).
    pub fn sizes_enabled(&self) -> bool {
        self.header().sizes_since.load(Relaxed) != 0
    }

    /// `stats sizes`: (bucket's upper bound in bytes, items) for each bucket
    /// that is not 0, in order; None while the histogram is off.
    pub fn sizes(&self) -> Option<impl Iterator<Item = (u64, u32)> + '_> {
        if !self.sizes_enabled() {
            return None;
        }
        Some(
            self.sizes
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u64 * BUCKET_BYTES, n.load(Relaxed)))
                .filter(|&(_, n)| n != 0),
        )
    }

    /// Item `it` is being linked.
    #[inline]
    pub(super) fn sizes_add(&self, it: &Item) {
        if let Some(n) = self.size_bucket(it) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// Item `it` left the hash table.
    #[inline]
    pub(super) fn sizes_remove(&self, it: &Item) {
        if let Some(n) = self.size_bucket(it) {
            n.fetch_sub(1, Relaxed);
        }
    }

    /// The counter `it` belongs in, if the histogram is on and counts it.
    #[inline]
    fn size_bucket(&self, it: &Item) -> Option<&AtomicU32> {
        // Off: this one relaxed load is all a store or delete pays.
        let since = self.header().sizes_since.load(Relaxed);
        if since == 0 {
            return None;
        }
        fence(Acquire);
        if it.cas.load(Relaxed) < since {
            return None;
        }
        let size = memcached_item_size(
            it.nkey.load(Relaxed) as usize,
            it.nbytes.load(Relaxed) as usize,
            it.flags.load(Relaxed),
            self.cas_enabled,
        );
        self.sizes.get(size.div_ceil(BUCKET_BYTES) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{StoreParams, segment::LayoutParams};
    use super::*;
    use crate::protocol::StoreMode;

    fn store(cas_enabled: bool) -> Store {
        let mut s = Store::create(StoreParams {
            layout: LayoutParams {
                memory_limit: 4 << 20,
                workers: 1,
                ..LayoutParams::default()
            },
            evictions: true,
            cas_enabled,
        })
        .unwrap();
        s.act_as_slot(0);
        s
    }

    fn sizes(s: &Store) -> Option<Vec<(u64, u32)>> {
        s.sizes().map(|i| i.collect())
    }

    #[test]
    fn sizes_are_memcached_item_sizes() {
        // Observed on memcached 1.6.18: a 1-byte key with 5 bytes in 96,
        // with 300 bytes in 384.
        assert_eq!(memcached_item_size(1, 5, 0, true).div_ceil(32) * 32, 96);
        assert_eq!(memcached_item_size(1, 300, 0, true).div_ceil(32) * 32, 384);
    }

    #[test]
    fn counts_items_linked_after_enabling() {
        let s = store(true);
        let set = |k: &[u8], v: &[u8], flags| s.store(StoreMode::Set, k, flags, 0, v, 0);
        set(b"before", b"x", 0);
        assert_eq!(sizes(&s), None);
        assert!(s.sizes_enable());
        assert_eq!(sizes(&s), Some(vec![]));
        set(b"a", b"12345", 0);
        set(b"b", &[b'v'; 300], 7);
        assert_eq!(sizes(&s), Some(vec![(96, 1), (384, 1)]));
        // Replaced: out of 96, into 384. The item from before goes uncounted.
        set(b"a", &[b'v'; 300], 0);
        s.delete(b"before");
        assert_eq!(sizes(&s), Some(vec![(384, 2)]));
        s.delete(b"a");
        s.delete(b"b");
        assert_eq!(sizes(&s), Some(vec![]));
        // Off, then on again: a new start.
        set(b"c", b"1", 0);
        s.sizes_disable();
        assert_eq!(sizes(&s), None);
        assert!(s.sizes_enable());
        s.delete(b"c");
        assert_eq!(sizes(&s), Some(vec![]));
    }

    /// Items leaving by eviction, by the sweep and by a page move leave the
    /// histogram too; items a page move rescues stay counted once.
    #[test]
    fn every_way_out_keeps_the_counts_with_the_items() {
        use super::super::stats::Counter;
        let s = store(true);
        assert!(s.sizes_enable());
        let counted = |s: &Store| s.sizes().unwrap().map(|(_, n)| u64::from(n)).sum::<u64>();
        let set = |k: String, exptime, len| {
            s.store(
                StoreMode::Set,
                k.as_bytes(),
                0,
                exptime,
                &vec![b'v'; len],
                0,
            )
        };
        // More than 4 MiB of items: the first ones are evicted.
        for i in 0..20_000 {
            set(format!("e{i:06}"), 0, 300);
        }
        assert!(s.total(Counter::evictions) > 0);
        assert_eq!(counted(&s), s.items_and_bytes().0);
        // Dead on arrival: counted, then swept.
        for i in 0..500 {
            set(format!("x{i:06}"), -1, 1);
        }
        for _ in 0..100 {
            s.sweep_tick(0, 1);
        }
        assert!(s.total(Counter::crawler_reclaimed) >= 500);
        assert_eq!(counted(&s), s.items_and_bytes().0);
        // Room in the class, then a class with no page: a page moves to it,
        // its items rescued into the free chunks.
        for i in (0..20_000).step_by(2) {
            s.delete(format!("e{i:06}").as_bytes());
        }
        for i in 0..10 {
            set(format!("big{i}"), 0, 100_000);
        }
        assert!(s.total(Counter::slabs_moved) > 0);
        assert!(s.total(Counter::slab_reassign_rescues) > 0);
        assert_eq!(counted(&s), s.items_and_bytes().0);
        // A warm restart starts with the histogram off, as memcached starts.
        s.seg.reset_process_state();
        assert_eq!(sizes(&s), None);
        assert!(s.sizes_enable());
        assert_eq!(sizes(&s), Some(vec![]));
    }

    #[test]
    fn cas_off_refuses() {
        let s = store(false);
        assert!(!s.sizes_enable());
        assert_eq!(sizes(&s), None);
    }
}
