//! Items larger than a page (`-I` over 1 MiB), chained over pages.
//!
//! memcached keeps its 1 MiB pages whatever `-I` and stores a larger item in
//! chunks of its largest class, chained. So do we: such an item takes whole
//! pages of the top class (chunk = page), the first (the *head*) in its LRU
//! and hash chain like any item, the others (*pieces*) in neither. Before,
//! a page was `-I` bytes: with `-I 8m -m 64` eight pages, one per class in
//! use, and a mixed fill held 0.62x memcached's items (bench/memory
//! `--item-max 8m`).
//!
//! The head's chunk: the item header, the key, padding to 8 bytes, the
//! chain's token (u64), the number of pieces (u32), their ids (u32 each),
//! then the value's first bytes. Each piece: an item header (state PIECE,
//! `hash` = the head's id, `cas` = the token, class top, span 1), then value
//! bytes to the end of its page. A head is told by its size: its header,
//! key and value exceed a page, which no other item's do (a span ends
//! within its page).
//!
//! Crash safety, with the rules of slab.rs (a chunk's state word is the
//! truth, lists are a cache of it):
//! - A piece is the head's only while its state is PIECE and its `hash` and
//!   `cas` name that head and token; tokens are never reused. Every walk of
//!   a head's table checks that, so a table that lists a chunk freed and
//!   handed out again (to anyone) never touches it.
//! - A piece is listed in the table before its state becomes PIECE: a crash
//!   before leaves a FREE chunk (the class rebuild lists it), after, one
//!   the head's release finds.
//! - Pieces are allocated while the head is INFLIGHT and recorded in the
//!   worker's slot, written, then the head is published: a worker killed
//!   before has its head freed by the supervisor (`recover_slot`), pieces
//!   and all. A table never changes once the head is published.
//! - An item's pieces are freed when its head is (free, eviction, a page
//!   move, the sweep), under the top class's lock, which every piece and
//!   head of a chain shares; a crash in between leaves the head in the LRU
//!   with the rest of its pieces, freed when it is evicted.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::Store;
use super::item::{FREE, INFLIGHT, ITEM_HEADER, Item, LINKED, PIECE, item_size};
use super::slab::AllocError;
use super::stats::ClassCounter;

/// Bytes of the token and the piece count before the piece ids.
const TABLE_HEAD: usize = 12;

/// Offset of the token in a head of key length `nkey`.
fn table_at(nkey: usize) -> usize {
    (ITEM_HEADER + nkey).next_multiple_of(8)
}

/// Offset of the value in a head of key length `nkey` with `n` pieces.
fn data_at(nkey: usize, n: usize) -> usize {
    table_at(nkey) + TABLE_HEAD + 4 * n
}

impl Store {
    /// The class whose chunks are whole pages.
    pub(super) fn top_class(&self) -> usize {
        self.classes.len() - 1
    }

    /// Whether `it` is the head of an item chained over pages.
    #[inline]
    pub(super) fn is_chained(&self, it: &Item) -> bool {
        it.total_size() > self.layout.page_size
    }

    /// Pieces an item of this key and value length needs besides its head.
    pub(super) fn pieces_for(&self, nkey: usize, nbytes: usize) -> usize {
        let page = self.layout.page_size as usize;
        let per_piece = page - ITEM_HEADER;
        let mut n = nbytes
            .saturating_sub(page - data_at(nkey, 0))
            .div_ceil(per_piece);
        while page.saturating_sub(data_at(nkey, n)) + n * per_piece < nbytes {
            n += 1;
        }
        n
    }

    /// Most pieces a head's table can list (a bound for tables read after
    /// a crash, whose count may be anything).
    fn max_pieces(&self, nkey: usize) -> usize {
        (self.layout.page_size as usize - data_at(nkey, 0)) / 4
    }

    fn head_word<T>(&self, head: u32, at: usize) -> &T {
        debug_assert!(at + size_of::<T>() <= self.layout.page_size as usize);
        // SAFETY: `head` is a chunk of the top class, a whole page (callers
        // check `is_chained` or allocated it there), and `at` lies within
        // its first `max_pieces` table entries, inside the page; offsets
        // are multiples of the type's size from an 8-aligned chunk, and T
        // is an atomic, sound whatever other processes do.
        unsafe { &*(self.item_ptr(head).add(at) as *const T) }
    }

    /// The token of chained head `head`.
    pub(super) fn chain_token(&self, head: u32) -> u64 {
        self.token_of(head).load(Relaxed)
    }

    fn token_of(&self, head: u32) -> &AtomicU64 {
        let nkey = self.item(head).nkey.load(Relaxed) as usize;
        self.head_word(head, table_at(nkey))
    }

    fn pieces_of(&self, head: u32) -> &AtomicU32 {
        let nkey = self.item(head).nkey.load(Relaxed) as usize;
        self.head_word(head, table_at(nkey) + 8)
    }

    fn piece_at(&self, head: u32, i: usize) -> &AtomicU32 {
        let nkey = self.item(head).nkey.load(Relaxed) as usize;
        self.head_word(head, table_at(nkey) + TABLE_HEAD + 4 * i)
    }

    /// The piece ids in `head`'s table, as many as it can hold at most.
    pub(super) fn listed(&self, head: u32) -> impl Iterator<Item = u32> + '_ {
        let nkey = self.item(head).nkey.load(Relaxed) as usize;
        let n = (self.pieces_of(head).load(Relaxed) as usize).min(self.max_pieces(nkey));
        (0..n).map(move |i| self.piece_at(head, i).load(Relaxed))
    }

    /// Whether `id` names a chunk at the start of a page of the arena, as
    /// every head and piece is.
    fn starts_a_page(&self, id: u32) -> bool {
        self.valid_id(id) && ((id as u64 - 1) * 8).is_multiple_of(self.layout.page_size)
    }

    /// Whether chunk `id` is, now, a piece of the chain `head` with `token`.
    pub(super) fn is_piece_of(&self, id: u32, head: u32, token: u64) -> bool {
        if !self.starts_a_page(id) {
            return false;
        }
        let page = ((id as u64 - 1) * 8 / self.layout.page_size) as u32;
        let it = self.item(id);
        self.page_class(page).load(Relaxed) as usize == self.top_class() + 1
            && it.state() == PIECE
            && it.hash.load(Relaxed) == head
            && it.cas.load(Relaxed) == token
    }

    /// The live head (LINKED or INFLIGHT) that piece `id` belongs to, if any.
    pub(super) fn head_of(&self, id: u32) -> Option<u32> {
        let it = self.item(id);
        let head = it.hash.load(Relaxed);
        if !self.starts_a_page(head) {
            return None;
        }
        let h = self.item(head);
        let alive = matches!(h.state(), LINKED | INFLIGHT);
        (alive
            && h.class.load(Relaxed) as usize == self.top_class()
            && self.is_chained(h)
            && self.token_of(head).load(Relaxed) == it.cas.load(Relaxed)
            && self.listed(head).any(|p| p == id))
        .then_some(head)
    }

    /// An INFLIGHT head for an item of `nkey` + `nbytes` larger than a page,
    /// with every piece it needs: the head is this worker's (recorded in
    /// its slot), the pieces are listed in it. Its value is written by
    /// `write_chained`.
    pub(super) fn alloc_chained(
        &self,
        hash: u32,
        nkey: usize,
        nbytes: usize,
        now: u32,
    ) -> Result<u32, AllocError> {
        let size = item_size(nkey, nbytes) as u64;
        let token = self.header().chain_tokens.fetch_add(1, Relaxed) + 1;
        let setup = |head: u32| {
            let it = self.item(head);
            // The table first, then the length that makes it a chained head
            // (`hand_out` left one under a page): a release reads a table
            // only once the head has one, never at a stale offset.
            it.nbytes.store(0, Relaxed);
            it.nkey.store(nkey as u8, Relaxed);
            self.pieces_of(head).store(0, Relaxed);
            self.token_of(head).store(token, Relaxed);
            it.nbytes.store(nbytes as u32, Relaxed);
        };
        let head = self
            .alloc_page_chunk(hash, size, now, setup)
            .inspect_err(|_| self.count_class(self.top_class(), ClassCounter::outofmemory))?;
        for i in 0..self.pieces_for(nkey, nbytes) {
            if let Err(e) = self.alloc_piece(head, token, i, now) {
                self.free(head);
                self.count_class(self.top_class(), ClassCounter::outofmemory);
                return Err(e);
            }
        }
        Ok(head)
    }

    /// Piece `i` of INFLIGHT head `head`: a free chunk of the top class, a
    /// new one, or its LRU tail's.
    fn alloc_piece(&self, head: u32, token: u64, i: usize, now: u32) -> Result<(), AllocError> {
        self.with_page_chunk(now, |id| self.make_piece(id, head, token, i))
    }

    /// Chunk `id` of the top class (its lock held, the chunk off every
    /// list) becomes piece `i` of `head`.
    fn make_piece(&self, id: u32, head: u32, token: u64, i: usize) {
        let top = self.top_class();
        let it = self.item(id);
        it.word.store(FREE, Relaxed);
        it.span.store(1, Relaxed);
        it.class.store(top as u8, Relaxed);
        it.hash.store(head, Relaxed);
        it.cas.store(token, Relaxed);
        it.lru_prev.store(0, Relaxed);
        it.lru_next.store(0, Relaxed);
        // Listed, then marked: see the module's crash rules.
        self.piece_at(head, i).store(id, Relaxed);
        self.pieces_of(head).store(i as u32 + 1, Relaxed);
        it.word.store(PIECE, Relaxed);
        self.class(top).extra_chunks.fetch_add(1, Relaxed);
    }

    /// Free the pieces of chained head `head` (the top class's lock held,
    /// or no other process mapping the segment): each that is still its own
    /// becomes FREE, and goes on the free list unless its page is being
    /// emptied. The table is emptied, so that a second release frees none.
    pub(super) fn drop_pieces(&self, head: u32) {
        let top = self.top_class();
        let token = self.token_of(head).load(Relaxed);
        for id in self.listed(head) {
            if !self.is_piece_of(id, head, token) {
                continue;
            }
            self.free_piece(id);
            if !self.in_draining_page(top, id) {
                self.push_free(top, id);
            }
        }
        self.pieces_of(head).store(0, Relaxed);
    }

    /// Piece `id` becomes a FREE chunk of the top class (its lock held),
    /// on no list.
    pub(super) fn free_piece(&self, id: u32) {
        self.item(id).word.store(FREE, Relaxed);
        let extra = &self.class(self.top_class()).extra_chunks;
        extra.store(extra.load(Relaxed).saturating_sub(1), Relaxed);
    }

    /// The places of a chained item's value: (start, bytes) in its head,
    /// then in each piece.
    fn value_parts(&self, head: u32) -> impl Iterator<Item = (*mut u8, usize)> + '_ {
        let it = self.item(head);
        let nkey = it.nkey.load(Relaxed) as usize;
        let page = self.layout.page_size as usize;
        let n = (self.pieces_of(head).load(Relaxed) as usize).min(self.max_pieces(nkey));
        let at = data_at(nkey, n);
        // SAFETY (of the `add`s): offsets within the chunk's page.
        let first = (unsafe { self.item_ptr(head).add(at) }, page - at);
        std::iter::once(first).chain(self.listed(head).map(move |id| {
            // SAFETY: a listed piece is a whole page of the arena (checked
            // by `item_ptr`); its value bytes follow its header.
            (
                unsafe { self.item_ptr(id).add(ITEM_HEADER) },
                page - ITEM_HEADER,
            )
        }))
    }

    /// A chained item's value, copied out (stripe lock held).
    #[cold]
    pub(super) fn chained_value(&self, head: u32) -> Cow<'_, [u8]> {
        // A reachable head's pieces are its own (see the module's rules);
        // were one not, a worker dies here rather than serve another
        // item's bytes.
        let token = self.chain_token(head);
        assert!(
            self.listed(head)
                .all(|id| self.is_piece_of(id, head, token)),
            "item {head}: a piece that is not its own"
        );
        let mut left = self.item(head).nbytes.load(Relaxed) as usize;
        let mut out = Vec::with_capacity(left);
        for (at, room) in self.value_parts(head) {
            let n = room.min(left);
            // SAFETY: the head is LINKED and its stripe lock held, so it and
            // its pieces stay as they are while we read: nobody writes a
            // LINKED item's bytes, and it cannot be freed without that lock.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(at, n) });
            left -= n;
            if left == 0 {
                break;
            }
        }
        Cow::Owned(out)
    }

    /// Write the value of INFLIGHT chained head `head`, given in parts.
    pub(super) fn write_chained(&self, head: u32, parts: &[&[u8]]) {
        let mut dst = self.value_parts(head);
        let (mut at, mut room) = dst.next().expect("a head has room");
        for part in parts {
            let mut src = *part;
            while !src.is_empty() {
                if room == 0 {
                    (at, room) = dst.next().expect("pieces hold the value");
                }
                let n = room.min(src.len());
                // SAFETY: `head` and its listed pieces are INFLIGHT / PIECE
                // chunks of this worker's store in progress, nobody else
                // reads or writes them; (at, room) lies inside one of them.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), at, n) };
                // SAFETY: n <= room, so at + n stays in the same page.
                at = unsafe { at.add(n) };
                room -= n;
                src = &src[n..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::item::{FREE, PIECE};
    use super::super::mover::Automover;
    use super::super::segment::LayoutParams;
    use super::super::{Opened, Store, StoreParams, StoreResult, unix_now};
    use crate::protocol::StoreMode;
    use std::sync::atomic::Ordering::Relaxed;

    const MIB: usize = 1 << 20;

    fn params(memory_mb: u64, item_max: u64) -> StoreParams {
        StoreParams {
            layout: LayoutParams {
                memory_limit: memory_mb << 20,
                item_size_max: item_max,
                workers: 2,
                ..LayoutParams::default()
            },
            evictions: true,
            cas_enabled: true,
        }
    }

    fn store(memory_mb: u64, item_max: u64) -> Store {
        let mut s = Store::create(params(memory_mb, item_max)).unwrap();
        s.act_as_slot(0);
        s
    }

    /// A value of `len` bytes that differs with `seed` and along its length,
    /// so that a piece read in the wrong order or place shows.
    fn value(seed: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 12) ^ seed) as u8)
            .collect()
    }

    fn get(s: &Store, key: &str) -> Option<Vec<u8>> {
        let mut out = None;
        s.get(key.as_bytes(), None, |h| out = Some(h.data().to_vec()));
        out
    }

    fn set(s: &Store, key: &str, v: &[u8]) -> StoreResult {
        s.store(StoreMode::Set, key.as_bytes(), 7, 0, v, 0)
    }

    /// The top class's counts agree with its chunks' states, and a rebuild
    /// from those states gives the same counts; returns its used chunks.
    fn top_consistent(s: &Store) -> u64 {
        let top = s.top_class();
        let (mut pieces, mut held) = (0, 0);
        for page in 0..s.pages_used() {
            if s.page_class(page).load(Relaxed) as usize != top + 1 {
                continue;
            }
            match s.item(s.chunk_id(top, page, 0)).state() {
                FREE => {}
                PIECE => pieces += 1,
                _ => held += 1,
            }
        }
        let before = s.class_snapshot(top, unix_now());
        assert_eq!(s.class(top).extra_chunks.load(Relaxed), pieces);
        assert_eq!(s.class(top).curr_items.load(Relaxed), held);
        s.rebuild_class(top);
        let after = s.class_snapshot(top, unix_now());
        assert_eq!(
            (before.pages, before.used_chunks, before.bytes),
            (after.pages, after.used_chunks, after.bytes)
        );
        after.used_chunks
    }

    #[test]
    fn values_larger_than_a_page_are_stored_over_pages_and_read_back_whole() {
        let s = store(32, 8 << 20);
        assert_eq!(s.layout.page_size, MIB as u64);
        let key_room = super::super::item::ITEM_HEADER + 2;
        // One chunk, just chained, a few pages, the largest -I allows.
        let lens = [
            MIB - key_room,
            MIB - key_room + 1,
            3 * MIB + 12_345,
            8 * MIB - 4096,
        ];
        let mut used = 0;
        for (i, &len) in lens.iter().enumerate() {
            assert_eq!(
                set(&s, &format!("k{i}"), &value(i, len)),
                StoreResult::Stored
            );
            let chained = (key_room + len) as u64 > s.layout.page_size;
            used += 1 + if chained {
                s.pieces_for(2, len) as u64
            } else {
                0
            };
        }
        assert_eq!(s.pieces_for(2, lens[1]), 1);
        assert_eq!(s.pieces_for(2, lens[3]), 7);
        for (i, &len) in lens.iter().enumerate() {
            assert!(get(&s, &format!("k{i}")) == Some(value(i, len)), "k{i}");
        }
        assert_eq!(top_consistent(&s), used);
        let total: u64 = lens.iter().map(|&l| (key_room + l) as u64).sum();
        assert_eq!(s.items_and_bytes(), (4, total));
        for i in 0..lens.len() {
            assert!(s.delete(format!("k{i}").as_bytes()));
        }
        assert_eq!(top_consistent(&s), 0);
        assert_eq!(s.items_and_bytes(), (0, 0));
        // Past -I: refused, as before.
        assert_eq!(set(&s, "big", &value(0, 8 * MIB)), StoreResult::TooLarge);
    }

    #[test]
    fn append_and_prepend_join_values_across_pages() {
        let s = store(16, 4 << 20);
        let (a, b) = (value(1, MIB - 100), value(2, MIB + 300));
        assert_eq!(set(&s, "k", &a), StoreResult::Stored);
        let r = s.store(StoreMode::Append, b"k", 0, 0, &b, 0);
        assert_eq!(r, StoreResult::Stored);
        let r = s.store(StoreMode::Prepend, b"k", 0, 0, b"head:", 0);
        assert_eq!(r, StoreResult::Stored);
        let want = [&b"head:"[..], &a, &b].concat();
        assert!(get(&s, "k") == Some(want));
        assert_eq!(
            top_consistent(&s),
            1 + s.pieces_for(1, 2 * MIB + 205) as u64
        );
    }

    #[test]
    fn a_full_cache_evicts_whole_chained_items_and_no_page_leaks() {
        let s = store(16, 4 << 20);
        let mut held = Vec::new();
        for i in 0..60 {
            let len = [700, MIB + 1, 2 * MIB + 77, 4 * MIB - 4096, 90_000][i % 5] + i;
            let r = set(&s, &format!("k{i:03}"), &value(i, len));
            assert_eq!(r, StoreResult::Stored, "k{i:03} of {len}");
            held.push(len);
        }
        let mut kept = 0;
        for (i, &len) in held.iter().enumerate() {
            if let Some(v) = get(&s, &format!("k{i:03}")) {
                assert!(v == value(i, len), "k{i:03} has another value");
                kept += 1;
            }
        }
        assert!(kept > 5 && kept < 60, "{kept}");
        assert!(s.total(super::super::stats::Counter::evictions) > 0);
        top_consistent(&s);
        for i in 0..held.len() {
            s.delete(format!("k{i:03}").as_bytes());
        }
        assert_eq!(top_consistent(&s), 0);
        assert_eq!(s.items_and_bytes(), (0, 0));
    }

    /// Sizes from 1 KiB to 4 MiB in `-m 64`: more classes in use than
    /// pages, pages taken from classes for the top class and back.
    #[test]
    fn with_every_size_in_use_chained_items_take_pages_and_counts_stay_true() {
        let s = store(64, 4 << 20);
        let mut x = 7u64;
        let mut failed = 0;
        for i in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (1024.0 * 4000f64.powf((x % 10_000) as f64 / 10_000.0)) as usize;
            if set(&s, &format!("k{i:03}"), &value(i, len)) != StoreResult::Stored {
                failed += 1;
            }
            top_consistent(&s);
            for c in 0..s.class_count() {
                let snap = s.class_snapshot(c, unix_now());
                assert!(
                    snap.used_chunks <= u64::from(snap.pages) * u64::from(snap.per_page),
                    "class {c}: {snap:?} after k{i:03} of {len}"
                );
            }
        }
        assert_eq!(failed, 0);
    }

    #[test]
    fn a_worker_killed_while_writing_leaves_no_piece_behind() {
        let s = store(16, 4 << 20);
        assert_eq!(set(&s, "kept", &value(9, 2 * MIB)), StoreResult::Stored);
        let before = top_consistent(&s);
        let now = unix_now();
        // Killed after its pieces were allocated, before publishing.
        s.alloc_item(b"lost", super::super::hash_key(b"lost"), 3 * MIB, now)
            .ok()
            .unwrap();
        assert!(top_consistent(&s) > before);
        s.recover_slot(0);
        assert_eq!(top_consistent(&s), before);
        // Killed between pieces: the table lists two of the four.
        let hash = super::super::hash_key(b"lost");
        let head = s
            .alloc_page_chunk(hash, (3 * MIB) as u64, now, |head| {
                let it = s.item(head);
                it.nkey.store(4, Relaxed);
                s.token_of(head).store(u64::MAX, Relaxed);
                s.pieces_of(head).store(0, Relaxed);
                it.nbytes.store(3 * MIB as u32, Relaxed);
            })
            .ok()
            .unwrap();
        for i in 0..2 {
            s.alloc_piece(head, u64::MAX, i, now).ok().unwrap();
        }
        // ... and one chunk listed whose state was not yet PIECE.
        let third = {
            let _g = s.lock_class(s.top_class());
            s.page_chunk_locked(now).ok().unwrap()
        };
        s.piece_at(head, 2).store(third, Relaxed);
        s.pieces_of(head).store(3, Relaxed);
        s.recover_slot(0);
        assert_eq!(s.item(third).state(), FREE);
        // The chunk that never became a piece is off the free list until
        // the class is rebuilt (as after a crash holding its lock).
        s.rebuild_class(s.top_class());
        assert_eq!(top_consistent(&s), before);
        assert!(get(&s, "kept") == Some(value(9, 2 * MIB)));
    }

    /// The top class short of chunks takes a page of another class while
    /// the head is being stored: that page's items are evicted, not
    /// rescued, so that the slot keeps naming the head and a worker killed
    /// then leaves nothing behind (review of the first version: a rescue
    /// cleared the slot, and the head and its pieces stayed INFLIGHT and
    /// PIECE for good).
    #[test]
    fn a_page_taken_for_a_piece_keeps_the_head_in_the_slot() {
        let s = store(16, 4 << 20);
        let mut i = 0;
        while s.total(super::super::stats::Counter::evictions) == 0 {
            assert_eq!(
                set(&s, &format!("s{i:06}"), &[b'x'; 100]),
                StoreResult::Stored
            );
            i += 1;
        }
        // Room in every page for rescues, were there any.
        for j in (0..i).step_by(2) {
            s.delete(format!("s{j:06}").as_bytes());
        }
        let hash = super::super::hash_key(b"lost");
        let head = s
            .alloc_item(b"lost", hash, 2 * MIB, unix_now())
            .ok()
            .unwrap();
        assert_eq!(s.slot().inflight.load(Relaxed), head);
        assert_eq!(
            s.total(super::super::stats::Counter::slab_reassign_rescues),
            0
        );
        let pieces: Vec<u32> = s.listed(head).collect();
        assert_eq!(pieces.len(), 2);
        s.recover_slot(0);
        assert_eq!(s.item(head).state(), FREE);
        assert!(pieces.iter().all(|&p| s.item(p).state() == FREE));
        assert_eq!(top_consistent(&s), 0);
    }

    /// A store killed between allocating its chunk and writing it: the
    /// release takes off the class's bytes what the allocation added,
    /// whatever the chunk held before (review of the first version).
    #[test]
    fn a_store_killed_before_it_is_written_leaves_the_bytes_as_they_were() {
        let s = store(16, 4 << 20);
        assert_eq!(set(&s, "kept", &value(1, 700)), StoreResult::Stored);
        for n in [100, 5000, 3 * MIB] {
            // A chunk of the same class holding an item of another key.
            assert_eq!(
                set(&s, "a-longer-key", &value(2, n - 13)),
                StoreResult::Stored
            );
            assert!(s.delete(b"a-longer-key"));
            let before = s.items_and_bytes();
            let hash = super::super::hash_key(b"k");
            s.alloc_item(b"k", hash, n, unix_now()).ok().unwrap();
            assert_ne!(s.items_and_bytes(), before);
            s.recover_slot(0);
            assert_eq!(s.items_and_bytes(), before, "{n} bytes");
        }
        top_consistent(&s);
    }

    /// A worker killed while giving a head its lengths (under the top
    /// class's lock: the next locker rebuilds the class), or while its
    /// pieces are allocated and someone else's death makes the class
    /// rebuilt: the class's bytes end where they began (second review:
    /// the first ended megabytes high, the second low).
    #[test]
    fn a_head_set_up_across_a_rebuild_leaves_the_bytes_true() {
        let s = store(32, 8 << 20);
        for i in 0..3 {
            assert_eq!(
                set(&s, &format!("o{i}"), &value(i, 2 * MIB)),
                StoreResult::Stored
            );
        }
        let before = s.items_and_bytes();
        let hash = super::super::hash_key(b"k");
        let now = unix_now();
        let size = super::super::item::item_size(1, 6 * MIB) as u64;
        // Killed half way through the setup.
        s.alloc_page_chunk(hash, size, now, |head| {
            s.item(head).nbytes.store(0, Relaxed);
            s.item(head).nkey.store(1, Relaxed);
        })
        .ok()
        .unwrap();
        s.rebuild_class(s.top_class());
        s.recover_slot(0);
        assert_eq!(s.items_and_bytes(), before);
        // Set up, one piece listed, then a rebuild; then the rest, then freed.
        let token = 1 << 40;
        let head = s
            .alloc_page_chunk(hash, size, now, |head| {
                s.item(head).nkey.store(1, Relaxed);
                s.pieces_of(head).store(0, Relaxed);
                s.token_of(head).store(token, Relaxed);
                s.item(head).nbytes.store(6 * MIB as u32, Relaxed);
            })
            .ok()
            .unwrap();
        s.alloc_piece(head, token, 0, now).ok().unwrap();
        s.rebuild_class(s.top_class());
        for i in 1..s.pieces_for(1, 6 * MIB) {
            s.alloc_piece(head, token, i, now).ok().unwrap();
        }
        s.free(head);
        assert_eq!(s.items_and_bytes(), before);
        top_consistent(&s);
    }

    /// A chunk of a small class whose header a crash left with another
    /// class's lengths (past a page): its class's rebuild neither reads a
    /// table past it nor counts more than the chunk (second review).
    #[test]
    fn a_rebuild_of_a_small_class_takes_no_chunk_for_a_chained_head() {
        let s = store(2, 1 << 20);
        let mut i = 0;
        while s.pages_used() < 2 {
            assert_eq!(set(&s, &format!("k{i}"), b"x"), StoreResult::Stored);
            i += 1;
        }
        // The last chunk of a page carved to the end, past which a table
        // read would run into the next page.
        assert_eq!(s.page_class(0).load(Relaxed), 1);
        let per = s.class(0).per_page.load(Relaxed);
        let it = s.item(s.chunk_id(0, 0, per - 1));
        assert_eq!(it.state(), super::super::item::LINKED);
        let before = s.class_snapshot(0, unix_now()).bytes;
        it.nkey.store(0, Relaxed);
        it.nbytes.store(0x7fff_0000, Relaxed);
        it.word.store(super::super::item::INFLIGHT, Relaxed);
        s.rebuild_class(0);
        let snap = s.class_snapshot(0, unix_now());
        assert!(
            snap.bytes <= before + u64::from(snap.chunk_size),
            "{snap:?}"
        );
    }

    /// memcached answers incr/decr of a chunked item NON_NUMERIC (too large
    /// to be a number), without looking at it.
    #[test]
    fn incr_of_a_chained_value_is_non_numeric() {
        let s = store(16, 4 << 20);
        let mut v = vec![b' '; 2 * MIB];
        v[0] = b'5';
        assert_eq!(set(&s, "n", &v), StoreResult::Stored);
        assert_eq!(
            s.arith(b"n", true, 1),
            super::super::ArithResult::NonNumeric
        );
        assert!(get(&s, "n") == Some(v));
    }

    /// A worker killed inside `fill_item` between its two length stores,
    /// or a class rebuilt then by another's death: the allocation already
    /// gave the item its lengths, so the bytes stay true, and an item just
    /// under a page never looks chained (third review: the lengths added up
    /// to size + key length in between).
    #[test]
    fn a_store_cut_between_its_length_stores_leaves_the_bytes_true() {
        for (item_max, nbytes) in [(MIB as u64, 500), (4 * MIB as u64, MIB - 48 - 200)] {
            let s = store(16, item_max);
            let key = [b'k'; 200];
            assert_eq!(set(&s, "kept", &value(1, 700)), StoreResult::Stored);
            let before = s.items_and_bytes();
            let hash = super::super::hash_key(&key);
            let id = s.alloc_item(&key, hash, nbytes, unix_now()).ok().unwrap();
            assert!(!s.is_chained(s.item(id)));
            s.item(id).nkey.store(key.len() as u8, Relaxed);
            assert!(!s.is_chained(s.item(id)));
            s.recover_slot(0);
            assert_eq!(s.items_and_bytes(), before, "killed, {nbytes} bytes");
            // Not killed: a rebuild in between, then the store completes.
            let v = value(2, nbytes);
            let id = s.alloc_item(&key, hash, v.len(), unix_now()).ok().unwrap();
            s.item(id).nkey.store(key.len() as u8, Relaxed);
            s.rebuild_class(s.item(id).class.load(Relaxed) as usize);
            s.fill_item(id, &key, 0, 0, &[&v]);
            s.publish(hash, id, None, true);
            assert!(s.delete(&key));
            assert_eq!(s.items_and_bytes(), before, "rebuilt, {nbytes} bytes");
        }
    }

    /// memcached answers incr/decr NON_NUMERIC for an item it stores
    /// chunked: larger than its slab_chunk_max, 512 KiB by its size formula
    /// (measured on memcached 1.6.18: 524,288 bytes is a number, one more
    /// is not), whether or not we chain it.
    #[test]
    fn incr_past_memcached_chunk_size_is_non_numeric() {
        let s = store(16, MIB as u64);
        let set = |v: &[u8]| s.store(StoreMode::Set, b"m", 0, 0, v, 0);
        // 48 + 8 + key 1 + 1 + value + 2 = 524,288 (flags 0).
        let mut v = vec![b' '; 524_228];
        v[0] = b'5';
        assert_eq!(set(&v), StoreResult::Stored);
        assert_eq!(s.arith(b"m", true, 1), super::super::ArithResult::Value(6));
        v.resize(524_229, b' ');
        v[0] = b'5';
        assert_eq!(set(&v), StoreResult::Stored);
        assert_eq!(
            s.arith(b"m", true, 1),
            super::super::ArithResult::NonNumeric
        );
    }

    /// A worker killed in `carve` between naming the new page and resetting
    /// the carving point: the new page looks carved to the end, its chunks
    /// all FREE, and the rebuild lists them; the last page's chunk, a live
    /// piece, is never handed out again (review of the first version: the
    /// other order made the old page look uncarved).
    #[test]
    fn a_carve_cut_short_hands_out_no_live_chunk() {
        let s = store(16, 4 << 20);
        let v = value(5, 3 * MIB);
        assert_eq!(set(&s, "a", &v), StoreResult::Stored);
        let top = s.top_class();
        let old = s.class(top).cur_page.load(Relaxed);
        assert_eq!(s.class(top).cur_next.load(Relaxed), 1);
        // What `carve` had done when killed: a new page for the class,
        // named as the page being carved; `cur_next` still the old page's.
        let page = s.header().pages_used.fetch_add(1, Relaxed);
        s.page_class(page).store(top as u8 + 1, Relaxed);
        s.class(top).pages.fetch_add(1, Relaxed);
        s.class(top).cur_page.store(page, Relaxed);
        s.rebuild_class(top);
        let got = {
            let _g = s.lock_class(top);
            s.page_chunk_locked(unix_now()).ok().unwrap()
        };
        assert_eq!(got, s.chunk_id(top, page, 0));
        assert_ne!(got, s.chunk_id(top, old, 0));
        {
            let _g = s.lock_class(top);
            s.push_free(top, got);
        }
        assert!(get(&s, "a") == Some(v));
        top_consistent(&s);
    }

    #[test]
    fn a_page_move_evicts_a_chained_item_whole() {
        let s = store(16, 4 << 20);
        assert_eq!(set(&s, "a", &value(1, 3 * MIB)), StoreResult::Stored);
        assert_eq!(set(&s, "b", &value(2, 100)), StoreResult::Stored);
        let top = s.top_class();
        let pages = s.class(top).pages.load(Relaxed);
        assert_eq!(pages, 4);
        assert_eq!(
            s.request_reassign(top as i64 + 1, 0),
            super::super::mover::Reassign::Ok
        );
        let mut am = Automover::new(30);
        for _ in 0..100 {
            if !s.reassign_running() {
                break;
            }
            s.mover_tick(&mut am);
        }
        assert!(!s.reassign_running());
        assert_eq!(s.class(top).pages.load(Relaxed), pages - 1);
        assert_eq!(get(&s, "a"), None);
        assert!(get(&s, "b") == Some(value(2, 100)));
        assert_eq!(top_consistent(&s), 0);
        // The freed pages serve the next large item.
        assert_eq!(set(&s, "c", &value(3, 2 * MIB)), StoreResult::Stored);
        assert!(get(&s, "c") == Some(value(3, 2 * MIB)));
    }

    #[test]
    fn a_warm_restart_keeps_chained_items_and_frees_unreached_pieces() {
        let path = std::env::temp_dir().join(format!("shmcached-chain-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let open = || {
            let (mut s, o) = Store::open_file(params(16, 4 << 20), &path).unwrap();
            s.act_as_slot(0);
            (s, o)
        };
        let (s, _) = open();
        assert_eq!(set(&s, "a", &value(1, 3 * MIB)), StoreResult::Stored);
        let used = top_consistent(&s);
        // A store in progress when the process died.
        s.alloc_item(
            b"lost",
            super::super::hash_key(b"lost"),
            2 * MIB,
            unix_now(),
        )
        .ok()
        .unwrap();
        drop(s);
        let (s, o) = open();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            o,
            Opened::Restored {
                clean: false,
                items: 1,
                settled: 1 + s.pieces_for(4, 2 * MIB) as u64
            }
        );
        assert!(get(&s, "a") == Some(value(1, 3 * MIB)));
        assert_eq!(top_consistent(&s), used);
    }
}
