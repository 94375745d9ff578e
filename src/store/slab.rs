//! Item memory: slab classes of fixed-size chunks carved from pages, a free
//! list and an LRU list per class, eviction from the LRU tail.
//!
//! Crash consistency: every chunk's state (FREE / INFLIGHT / LINKED) is one
//! word, and the lists are a cache of those states. A worker that dies holding
//! a class lock leaves the lists possibly half-edited; the next locker sees
//! EOWNERDEAD and rebuilds both lists from the chunk states ([`Store::rebuild_class`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::item::{ACTIVE, FREE, INFLIGHT, ITEM_HEADER, Item, LINKED, PIECE};
use super::lock::{Acquired, LockGuard, RobustMutex};
use super::stats::{ClassCounter, Counter};
use super::{NONE, Store};

/// Most tail items looked at for one allocation (memcached: 5).
const TAIL_SEARCH: usize = 5;
/// Most items read since their last move that one allocation sends back to
/// the head of the LRU (a second chance) before evicting anything. Each move
/// clears the item's ACTIVE bit, so the work is bounded by the items read;
/// this caps one allocation's share of it.
const SECOND_CHANCES: usize = 10_000;

/// One slab class. Mutable fields are changed only under `lock`.
#[repr(C, align(64))]
pub struct SlabClass {
    pub lock: RobustMutex,
    pub chunk_size: AtomicU32,
    pub per_page: AtomicU32,
    pub free_head: AtomicU32,
    pub lru_head: AtomicU32,
    pub lru_tail: AtomicU32,
    /// Page being carved (NONE = none) and the next chunk index in it.
    pub cur_page: AtomicU32,
    pub cur_next: AtomicU32,
    pub pages: AtomicU32,
    pub curr_items: AtomicU64,
    pub bytes: AtomicU64,
    /// Seconds between the last access of the most recently evicted item and
    /// its eviction (`stats items` evicted_time).
    pub evicted_time: AtomicU32,
    /// Page the mover is emptying a slice at a time (NONE = none): its
    /// chunks are off the free list, and a chunk freed in it stays off.
    pub draining: AtomicU32,
    /// Chunks held beyond one per item: the bodies of items that span
    /// several chunks (`Item::span`).
    pub extra_chunks: AtomicU64,
}

/// One slab class as `stats slabs` and `stats items` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSnapshot {
    pub chunk_size: u32,
    pub per_page: u32,
    pub pages: u32,
    /// Items held (or being filled): `stats items` number.
    pub items: u64,
    /// Chunks holding an item (or being filled), an item's every chunk.
    pub used_chunks: u64,
    /// Never-used chunks left at the end of the page being carved.
    pub free_chunks_end: u64,
    /// Bytes of the items held (header + key + value).
    pub bytes: u64,
    /// Seconds since the least recently used item was last accessed.
    pub age: u32,
    pub evicted_time: u32,
}

impl SlabClass {
    /// # Safety
    /// `this` points to zeroed, unshared segment memory laid out for a class.
    pub unsafe fn init(this: *mut SlabClass, chunk_size: u32, per_page: u32) {
        // SAFETY: by the caller's contract.
        unsafe {
            RobustMutex::init(&raw mut (*this).lock);
            let c = &*this;
            c.chunk_size.store(chunk_size, Relaxed);
            c.per_page.store(per_page, Relaxed);
            c.cur_page.store(NONE, Relaxed);
            c.draining.store(NONE, Relaxed);
        }
    }
}

pub enum AllocError {
    /// Nothing free and nothing evictable (or evictions off).
    OutOfMemory,
    /// No free chunk and no page to carve one from (the caller looks in
    /// other classes, or evicts).
    NoRoom,
}

/// What `alloc_in` may take.
#[derive(Clone, Copy, PartialEq)]
enum Take {
    /// A free chunk or a new one.
    Room,
    /// That, or the LRU tail's.
    Tail,
}

/// How much larger a chunk an item takes from another class's free room
/// rather than evict one of its own class.
pub const BORROW_FACTOR: u64 = 2;

impl Store {
    /// Lock class `c`, rebuilding its lists if the last holder died.
    pub(super) fn lock_class(&self, c: usize) -> LockGuard<'_> {
        match self.class(c).lock.lock() {
            Acquired::Clean(g) => g,
            Acquired::OwnerDied(g) => {
                self.rebuild_class(c);
                g.mark_consistent();
                g
            }
        }
    }

    /// Smallest class whose chunks hold `size` bytes; the top class (whole
    /// pages) for an item larger than a page that `-I` allows, which is
    /// chained over its pages (store/chain.rs).
    pub(super) fn class_for(&self, size: usize) -> Option<usize> {
        let sizes = &self.layout.class_sizes;
        let i = sizes.partition_point(|&s| (s as usize) < size);
        if i < sizes.len() {
            Some(i)
        } else {
            (size as u64 <= self.layout.largest_item()).then_some(i - 1)
        }
    }

    /// A chunk of class `c` for an item of `size` bytes whose key hashes to
    /// `hash`: INFLIGHT, owned by this worker's slot, at the head of the LRU, and
    /// recorded in the slot so that the supervisor can settle it if we die.
    ///
    /// The caller may hold one stripe lock: eviction only *tries* stripe locks.
    ///
    /// When memory is full and class `c` has no free chunk, an item takes a
    /// free chunk of a class a little larger ([`BORROW_FACTOR`]) before any
    /// item is evicted: room idle in another class's pages serves before an
    /// item goes (memcached evicts in the item's own class).
    ///
    /// A class with no page when memory is full and no class has a page to
    /// spare (more classes in use than pages) lends from a larger one: the
    /// item takes a chunk of the nearest larger class with pages, its free
    /// chunk or its LRU tail's (see `page_for_empty_class`). memcached gives
    /// such a class a page past `-m`.
    pub(super) fn alloc(
        &self,
        c: usize,
        hash: u32,
        size: u64,
        nkey: usize,
        now: u32,
    ) -> Result<u32, AllocError> {
        // Room elsewhere is looked for at most once a second while there is
        // none (a full cache would pay the look at every store), and only
        // then does the class lock twice.
        let until = &self.no_spare_until[c];
        let mut room_elsewhere = false;
        // With -M a store that finds no room fails, so it always looks.
        if !self.room_in(c)
            && !self.page_available()
            && (until.load(Relaxed) <= now || !self.evictions)
        {
            room_elsewhere =
                self.spare_room(c).next().is_some() || self.span_room(c, size).next().is_some();
            if !room_elsewhere {
                until.store(now + 1, Relaxed);
            }
        }
        let has_pages = self.class(c).pages.load(Relaxed) != 0;
        let first = if room_elsewhere || !has_pages {
            Take::Room
        } else {
            Take::Tail
        };
        match self.alloc_in(c, hash, size, nkey, now, first) {
            Ok(id) => return Ok(id),
            Err(AllocError::NoRoom) => {}
            Err(e) => {
                self.count_class(c, ClassCounter::outofmemory);
                return Err(e);
            }
        }
        if room_elsewhere {
            for d in self.spare_room(c) {
                if let Ok(id) = self.alloc_in(d, hash, size, nkey, now, Take::Room) {
                    return Ok(id);
                }
            }
            for d in self.span_room(c, size) {
                if let Ok(id) = self.alloc_span_in(d, hash, size, nkey, now) {
                    return Ok(id);
                }
            }
            until.store(now + 1, Relaxed);
        }
        // Its own LRU tail; `NoRoom` if it has no page (it may have lost its
        // last one since `has_pages` was read): then the lenders.
        if self.class(c).pages.load(Relaxed) != 0 {
            match self.alloc_in(c, hash, size, nkey, now, Take::Tail) {
                Ok(id) => return Ok(id),
                Err(AllocError::NoRoom) => {}
                Err(e) => {
                    self.count_class(c, ClassCounter::outofmemory);
                    return Err(e);
                }
            }
        }
        for d in self.lenders(c) {
            if let Ok(id) = self.alloc_in(d, hash, size, nkey, now, Take::Tail) {
                return Ok(id);
            }
        }
        self.count_class(c, ClassCounter::outofmemory);
        Err(AllocError::OutOfMemory)
    }

    /// The classes that lend chunks to class `c`, nearest first: the larger
    /// ones with pages. However large the chunk, a store that takes one costs
    /// at most one item, where taking a class's only page costs all of them.
    pub(super) fn lenders(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (c + 1..self.classes.len()).filter(|&d| self.class(d).pages.load(Relaxed) != 0)
    }

    /// The classes a little larger than `c` ([`BORROW_FACTOR`]) that have a
    /// free chunk or a page not yet carved to the end, nearest first (read
    /// without their locks: a hint that `alloc_in` checks).
    fn spare_room(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        let most = u64::from(self.layout.class_sizes[c]) * BORROW_FACTOR;
        (c + 1..self.classes.len())
            .take_while(move |&d| u64::from(self.layout.class_sizes[d]) <= most)
            .filter(|&d| self.room_in(d))
    }

    /// The classes of smaller chunks whose page being carved has room left
    /// at its end for an item of `size` bytes in consecutive chunks, nearest
    /// first (read without their locks: a hint that `alloc_span_in` checks).
    /// With many classes each holds a page of its own that it fills slowly:
    /// at the first eviction of a mixed fill (`bench/memory`) 57 classes'
    /// pages were mostly not carved, 45 % of `-m`. An item of a class that
    /// would evict takes that room first, which costs less than a chunk of
    /// waste.
    fn span_room(&self, c: usize, size: u64) -> impl Iterator<Item = usize> + '_ {
        (0..c).rev().filter(move |&d| {
            let k = size.div_ceil(u64::from(self.layout.class_sizes[d]));
            k <= u64::from(u16::MAX) && u64::from(self.uncarved(d)) >= k
        })
    }

    /// An INFLIGHT item of `size` bytes of class `d`'s smaller chunks: as
    /// many consecutive ones as it needs, from the end of the page `d` is
    /// carving (see `span_room`). The item is `d`'s from then on (its LRU,
    /// its counts); freed, its chunks are `d`'s free chunks.
    fn alloc_span_in(
        &self,
        d: usize,
        hash: u32,
        size: u64,
        nkey: usize,
        now: u32,
    ) -> Result<u32, AllocError> {
        let _g = self.lock_class(d);
        let class = self.class(d);
        let k = size.div_ceil(u64::from(class.chunk_size.load(Relaxed)));
        let page = class.cur_page.load(Relaxed);
        let next = class.cur_next.load(Relaxed);
        if page == NONE
            || k > u64::from(u16::MAX)
            || u64::from(next) + k > u64::from(class.per_page.load(Relaxed))
            || class.draining.load(Relaxed) == page
        {
            return Err(AllocError::NoRoom);
        }
        let k = k as u32;
        let id = self.chunk_id(d, page, next);
        let it = self.item(id);
        // The span before the chunks count as carved: from then on every walk
        // of the page steps over the item's body (the chunks after the first
        // hold its bytes, not headers). A crash before `INFLIGHT` leaves a
        // FREE chunk with FREE (never written) chunks after it.
        it.span.store(k as u16, Relaxed);
        class.cur_next.store(next + k, Relaxed);
        class.extra_chunks.fetch_add(u64::from(k - 1), Relaxed);
        self.hand_out(d, id, k, hash, (size, nkey), now);
        Ok(id)
    }

    /// Chunk `id` of class `c` (class lock held), covering `span` chunks,
    /// becomes this worker's INFLIGHT item at the head of the LRU, recorded
    /// in the slot so that the supervisor can settle it if we die.
    #[inline]
    fn hand_out(
        &self,
        c: usize,
        id: u32,
        span: u32,
        hash: u32,
        (size, nkey): (u64, usize),
        now: u32,
    ) {
        let class = self.class(c);
        let it = self.item(id);
        self.slot().inflight.store(id, Relaxed);
        // No stale lengths: the item's own, which `fill_item` writes again,
        // so that a release at any point takes off the class's bytes what
        // was added here. A head chained over pages (`nkey` 0 here) gets a
        // page's worth: it is one (its table read) only once
        // `alloc_chained` gave it a table and then its length. The length
        // goes to 0 first, so that no key length makes a stale one look
        // chained.
        let room = self.layout.page_size - ITEM_HEADER as u64;
        it.nbytes.store(0, Relaxed);
        it.nkey.store(nkey as u8, Relaxed);
        let nbytes = (size - ITEM_HEADER as u64).min(room) - nkey as u64;
        it.nbytes.store(nbytes as u32, Relaxed);
        it.span.store(span as u16, Relaxed);
        it.hash.store(hash, Relaxed);
        it.class.store(c as u8, Relaxed);
        it.time.store(now, Relaxed);
        it.word
            .store(INFLIGHT | (self.slot_index as u32) << 16, Relaxed);
        self.lru_push_head(c, id);
        class.curr_items.fetch_add(1, Relaxed);
        class.bytes.fetch_add(size, Relaxed);
    }

    /// Make the chunks after `id`'s first FREE chunks of class `c` again
    /// (class lock held; the item is out of every list and chain), pushed on
    /// the free list when `push` and the page is not being drained, and `id`
    /// one chunk. The pieces of an item chained over pages are freed too
    /// (`drop_pieces`: pushed unless their own page is being drained).
    /// Their headers are written from the last to the first, and `id`'s span
    /// after them, so that a walk after a crash in between steps over the
    /// body or finds FREE chunks in it, never its bytes.
    #[inline]
    pub(super) fn split_span(&self, c: usize, id: u32, push: bool) {
        let it = self.item(id);
        if it.span.load(Relaxed) > 1 {
            self.split_span_body(c, id, push);
        } else if c == self.top_class() && self.is_chained(it) {
            self.drop_pieces(id);
        }
    }

    #[cold]
    fn split_span_body(&self, c: usize, id: u32, push: bool) {
        let it = self.item(id);
        let k = u32::from(it.span.load(Relaxed));
        let units = self.class(c).chunk_size.load(Relaxed) / 8;
        let push = push && !self.in_draining_page(c, id);
        for j in (1..k).rev() {
            let cid = id + j * units;
            let ci = self.item(cid);
            ci.span.store(1, Relaxed);
            ci.class.store(c as u8, Relaxed);
            ci.word.store(FREE, Relaxed);
            if push {
                self.push_free(c, cid);
            }
        }
        it.span.store(1, Relaxed);
        self.class(c)
            .extra_chunks
            .fetch_sub(u64::from(k - 1), Relaxed);
    }

    /// Whether class `c` seems to have a free chunk or a page not yet carved
    /// to the end (read without its lock: a hint).
    pub(super) fn room_in(&self, c: usize) -> bool {
        self.class(c).free_head.load(Relaxed) != 0 || self.uncarved(c) != 0
    }

    /// Chunks of `page` that class `c` has handed out: all of them, or those
    /// before the carving point of the page it is carving. Every walk of a
    /// page stops there: past it lie stale bytes, never headers.
    pub(super) fn carved(&self, c: usize, page: u32) -> u32 {
        let class = self.class(c);
        let per_page = class.per_page.load(Relaxed);
        if class.cur_page.load(Relaxed) == page {
            class.cur_next.load(Relaxed).min(per_page)
        } else {
            per_page
        }
    }

    /// Chunks not yet carved at the end of the page class `c` is carving
    /// (0 when it carves none).
    pub(super) fn uncarved(&self, c: usize) -> u32 {
        let class = self.class(c);
        match class.cur_page.load(Relaxed) {
            NONE => 0,
            page => class.per_page.load(Relaxed) - self.carved(c, page),
        }
    }

    /// [`Store::alloc`] in class `c` alone: a free chunk, or the next chunk
    /// of its page (a new page if one is left), or with [`Take::Tail`] its LRU
    /// tail's if it has a page. [`AllocError::NoRoom`] releases the lock for
    /// the caller to look elsewhere.
    fn alloc_in(
        &self,
        c: usize,
        hash: u32,
        size: u64,
        nkey: usize,
        now: u32,
        take: Take,
    ) -> Result<u32, AllocError> {
        let _g = self.lock_class(c);
        let class = self.class(c);
        let id = match self.pop_free(c).or_else(|| self.carve(c)) {
            Some(id) => id,
            None if take == Take::Room || class.pages.load(Relaxed) == 0 => {
                return Err(AllocError::NoRoom);
            }
            None => self.evict_tail(c, now)?,
        };
        self.hand_out(c, id, 1, hash, (size, nkey), now);
        Ok(id)
    }

    /// A whole-page chunk of the top class for the head of an item chained
    /// over pages (store/chain.rs): INFLIGHT, this worker's, at the head of
    /// the LRU, recorded in the slot, and given its lengths by `setup`
    /// under the class lock (a rebuild after a crash in between counts the
    /// bytes its release will take off).
    pub(super) fn alloc_page_chunk(
        &self,
        hash: u32,
        size: u64,
        now: u32,
        setup: impl FnOnce(u32),
    ) -> Result<u32, AllocError> {
        self.with_page_chunk(now, |id| {
            self.hand_out(self.top_class(), id, 1, hash, (size, 0), now);
            setup(id);
            id
        })
    }

    /// A chunk of the top class for an item chained over pages, handed to
    /// `take` under the class lock. When the class has none to give (few
    /// pages, holding items being written), a page of the class whose LRU
    /// tail is oldest goes to the pool first, as for a class with no page
    /// (`page_for_class`), and the class tries again. Without that, classes
    /// in use with a page each left the top class one: with `-I 4m -m 64`
    /// and values of 1 KiB to 4 MiB, one store in ten failed (bench/memory
    /// `large`).
    pub(super) fn with_page_chunk<R>(
        &self,
        now: u32,
        take: impl FnOnce(u32) -> R,
    ) -> Result<R, AllocError> {
        let top = self.top_class();
        let mut tried = false;
        loop {
            {
                let _g = self.lock_class(top);
                match self.page_chunk_locked(now) {
                    Ok(id) => return Ok(take(id)),
                    Err(e) if tried => return Err(e),
                    Err(_) => {}
                }
            }
            self.page_for_class(top, true);
            tried = true;
        }
    }

    /// A chunk of the top class (its lock held), off every list: a free
    /// one, a new one, or its LRU tail's.
    pub(super) fn page_chunk_locked(&self, now: u32) -> Result<u32, AllocError> {
        let top = self.top_class();
        match self.pop_free(top).or_else(|| self.carve(top)) {
            Some(id) => Ok(id),
            None if self.class(top).pages.load(Relaxed) == 0 => Err(AllocError::OutOfMemory),
            None => self.evict_tail(top, now),
        }
    }

    /// Return a chunk to its class's free list (it must be unreachable from the
    /// hash index already).
    pub(super) fn free(&self, id: u32) {
        let it = self.item(id);
        let c = it.class.load(Relaxed) as usize;
        let _g = self.lock_class(c);
        self.release_locked(c, id);
    }

    /// `free` with the class lock already held.
    pub(super) fn release_locked(&self, c: usize, id: u32) {
        let class = self.class(c);
        let it = self.item(id);
        self.lru_unlink(c, id);
        class.curr_items.fetch_sub(1, Relaxed);
        class
            .bytes
            .fetch_sub(it.total_size().min(class.bytes.load(Relaxed)), Relaxed);
        self.split_span(c, id, true);
        it.word.store(FREE, Relaxed);
        if self.in_draining_page(c, id) {
            return;
        }
        self.push_free(c, id);
    }

    /// Put FREE chunk `id` at the head of class `c`'s free list. The list is
    /// doubly linked, forward through `next` and back through `lru_prev`
    /// (a free chunk is in no LRU), so that a page move takes its chunks off
    /// it without walking it.
    pub(super) fn push_free(&self, c: usize, id: u32) {
        let class = self.class(c);
        let it = self.item(id);
        let head = class.free_head.load(Relaxed);
        it.next.store(head, Relaxed);
        it.lru_prev.store(0, Relaxed);
        it.lru_next.store(0, Relaxed);
        if head != 0 {
            self.item(head).lru_prev.store(id, Relaxed);
        }
        class.free_head.store(id, Relaxed);
    }

    /// Take FREE chunk `id` off class `c`'s free list, if it is on it.
    pub(super) fn unlink_free(&self, c: usize, id: u32) {
        let class = self.class(c);
        let it = self.item(id);
        let (prev, next) = (it.lru_prev.load(Relaxed), it.next.load(Relaxed));
        if prev != 0 {
            self.item(prev).next.store(next, Relaxed);
        } else if class.free_head.load(Relaxed) == id {
            class.free_head.store(next, Relaxed);
        } else {
            return;
        }
        if next != 0 && self.valid_id(next) {
            self.item(next).lru_prev.store(prev, Relaxed);
        }
        it.next.store(0, Relaxed);
        it.lru_prev.store(0, Relaxed);
    }

    /// Whether chunk `id` of class `c` lies in the page the mover is
    /// emptying.
    pub(super) fn in_draining_page(&self, c: usize, id: u32) -> bool {
        let page = self.class(c).draining.load(Relaxed);
        page != NONE && ((id as u64 - 1) * 8 / self.layout.page_size) as u32 == page
    }

    /// Move a live item to the head of its LRU.
    pub(super) fn lru_bump(&self, id: u32, now: u32) {
        let it = self.item(id);
        let c = it.class.load(Relaxed) as usize;
        let _g = self.lock_class(c);
        if it.state() == LINKED {
            self.lru_unlink(c, id);
            self.lru_push_head(c, id);
        }
        it.time.store(now, Relaxed);
    }

    pub(super) fn pop_free(&self, c: usize) -> Option<u32> {
        let id = self.class(c).free_head.load(Relaxed);
        if id == 0 {
            return None;
        }
        self.unlink_free(c, id);
        Some(id)
    }

    /// Next never-used chunk of the class's current page, taking a new page
    /// when that one is full.
    fn carve(&self, c: usize) -> Option<u32> {
        let class = self.class(c);
        let per_page = class.per_page.load(Relaxed);
        if class.cur_page.load(Relaxed) == NONE || class.cur_next.load(Relaxed) >= per_page {
            // A page from the pool first (memcached's global page pool), a
            // page never used next.
            let page = match self.take_pool_page(c) {
                Some(page) => page,
                None => {
                    let h = self.header();
                    let limit = self.page_limit();
                    let count = self.layout.page_count;
                    let pool = h.pool_pages.load(Relaxed);
                    let page = h
                        .pages_used
                        .fetch_update(Relaxed, Relaxed, |p| {
                            (p < count && p.saturating_sub(pool) < limit).then_some(p + 1)
                        })
                        .ok()?;
                    // The page table first: a crash after it leaves a page
                    // the rebuild finds (all chunks zero = FREE).
                    self.page_class(page).store(c as u8 + 1, Relaxed);
                    class.pages.fetch_add(1, Relaxed);
                    page
                }
            };
            // The page first: a crash in between leaves the new page looking
            // carved (its chunks all FREE, which the rebuild lists), where
            // the other order left the old page looking uncarved past 0, its
            // live chunks counted nowhere and handed out again.
            class.cur_page.store(page, Relaxed);
            class.cur_next.store(0, Relaxed);
        }
        let page = class.cur_page.load(Relaxed);
        let idx = class.cur_next.fetch_add(1, Relaxed);
        Some(self.chunk_id(c, page, idx))
    }

    /// Reclaim a chunk from the LRU tail: an expired or flushed item, or, with
    /// evictions on, the least recently used one. INFLIGHT chunks are skipped,
    /// and so are items whose stripe is busy (we may be holding it ourselves).
    fn evict_tail(&self, c: usize, now: u32) -> Result<u32, AllocError> {
        let class = self.class(c);
        let (oldest_live, oldest_cas) = self.flush_marks();
        let mut id = class.lru_tail.load(Relaxed);
        let mut chances = SECOND_CHANCES;
        let mut looked = 0;
        while looked < TAIL_SEARCH {
            if id == 0 {
                break;
            }
            let it = self.item(id);
            let prev = it.lru_prev.load(Relaxed);
            // A chunk of the page being emptied is not handed out again.
            if it.state() != LINKED || self.in_draining_page(c, id) {
                looked += 1;
                id = prev;
                continue;
            }
            let dead = it.is_dead(now, oldest_live, oldest_cas);
            // Read since it last moved: memcached's segmented LRU would have
            // moved it to WARM; we give it a second chance at the head.
            if !dead && self.evictions && chances > 0 && it.word.load(Relaxed) & ACTIVE != 0 {
                chances -= 1;
                it.word.fetch_and(!ACTIVE, Relaxed);
                self.lru_unlink(c, id);
                self.lru_push_head(c, id);
                it.time.store(now, Relaxed);
                id = prev;
                continue;
            }
            looked += 1;
            if !dead && !self.evictions {
                id = prev;
                continue;
            }
            let hash = it.hash.load(Relaxed);
            if let Some(got) = self.stripe_for(hash).try_lock() {
                let _s = got.repaired_trivially();
                if self.unlink_from_chain(hash, id) {
                    self.sizes_remove(it);
                }
                let fetched = it.word.load(Relaxed) & super::item::FETCHED != 0;
                let counters = &self.slot().counters;
                let count = |general, per_class| {
                    counters.incr(general);
                    self.count_class(c, per_class);
                };
                if dead {
                    count(Counter::reclaimed, ClassCounter::reclaimed);
                    if !fetched {
                        count(Counter::expired_unfetched, ClassCounter::expired_unfetched);
                    }
                } else {
                    self.count_eviction(c, it, now);
                }
                class.curr_items.fetch_sub(1, Relaxed);
                class
                    .bytes
                    .fetch_sub(it.total_size().min(class.bytes.load(Relaxed)), Relaxed);
                self.lru_unlink(c, id);
                // The new item takes one chunk; the rest of a span are free.
                self.split_span(c, id, true);
                return Ok(id);
            }
            id = prev;
        }
        Err(AllocError::OutOfMemory)
    }

    /// memcached's counts for live item `it` of class `c` evicted at `now`:
    /// `evictions` and the class's `evicted`, `evicted_nonzero`,
    /// `evicted_unfetched`, `evicted_active`, `evicted_time`.
    pub(super) fn count_eviction(&self, c: usize, it: &Item, now: u32) {
        let counters = &self.slot().counters;
        let count = |general, per_class| {
            counters.incr(general);
            self.count_class(c, per_class);
        };
        count(Counter::evictions, ClassCounter::evicted);
        if it.exptime.load(Relaxed) != 0 {
            self.count_class(c, ClassCounter::evicted_nonzero);
        }
        if it.word.load(Relaxed) & super::item::FETCHED == 0 {
            count(Counter::evicted_unfetched, ClassCounter::evicted_unfetched);
        }
        // Read since it last moved, but its second chance was spent on an
        // item nearer the tail.
        if it.word.load(Relaxed) & ACTIVE != 0 {
            count(Counter::evicted_active, ClassCounter::evicted_active);
        }
        self.class(c)
            .evicted_time
            .store(now.saturating_sub(it.time.load(Relaxed)), Relaxed);
    }

    pub(super) fn lru_push_head(&self, c: usize, id: u32) {
        let class = self.class(c);
        let it = self.item(id);
        let head = class.lru_head.load(Relaxed);
        it.lru_prev.store(0, Relaxed);
        it.lru_next.store(head, Relaxed);
        if head != 0 {
            self.item(head).lru_prev.store(id, Relaxed);
        } else {
            class.lru_tail.store(id, Relaxed);
        }
        class.lru_head.store(id, Relaxed);
    }

    /// Take `id` out of its LRU; a no-op for a chunk that is not in it.
    pub(super) fn lru_unlink(&self, c: usize, id: u32) {
        let class = self.class(c);
        let it = self.item(id);
        let prev = it.lru_prev.load(Relaxed);
        let next = it.lru_next.load(Relaxed);
        let head = class.lru_head.load(Relaxed);
        let tail = class.lru_tail.load(Relaxed);
        if prev == 0 && next == 0 && head != id && tail != id {
            return;
        }
        if prev != 0 {
            self.item(prev).lru_next.store(next, Relaxed);
        } else if head == id {
            class.lru_head.store(next, Relaxed);
        }
        if next != 0 {
            self.item(next).lru_prev.store(prev, Relaxed);
        } else if tail == id {
            class.lru_tail.store(prev, Relaxed);
        }
        it.lru_prev.store(0, Relaxed);
        it.lru_next.store(0, Relaxed);
    }

    /// Rebuild class `c`'s free list, LRU and counts from its chunks' states,
    /// after a worker died holding the class lock. LRU order is recovered from
    /// the items' access times.
    pub(super) fn rebuild_class(&self, c: usize) {
        let class = self.class(c);
        // A page being emptied goes back to being an ordinary page: its free
        // chunks join the list below, and the mover starts over.
        class.draining.store(NONE, Relaxed);
        class.free_head.store(0, Relaxed);
        class.lru_head.store(0, Relaxed);
        class.lru_tail.store(0, Relaxed);
        let mut live: Vec<(u32, u32)> = Vec::new();
        let mut bytes = 0u64;
        let mut pages = 0;
        let mut extra = 0u64;
        for page in 0..self.pages_used() {
            if self.page_class(page).load(Relaxed) != c as u8 + 1 {
                continue;
            }
            pages += 1;
            let end = self.carved(c, page);
            let mut idx = 0;
            while idx < end {
                let id = self.chunk_id(c, page, idx);
                let it = self.item(id);
                // A span never runs past the carved end (it is carved whole).
                let k = it.chunks().min(end - idx);
                it.lru_prev.store(0, Relaxed);
                it.lru_next.store(0, Relaxed);
                match it.state() {
                    FREE => self.push_free(c, id),
                    // A page of an item chained over pages: in no list.
                    PIECE => extra += 1,
                    _ => {
                        live.push((it.time.load(Relaxed), id));
                        // A chained head's lengths are never stale (see
                        // `hand_out`, `alloc_chained`): what its release
                        // will take off. Only the top class has such heads;
                        // elsewhere stale lengths past a page are clamped.
                        let room = if c == self.top_class() && self.is_chained(it) {
                            self.layout.largest_item()
                        } else {
                            u64::from(k) * u64::from(class.chunk_size.load(Relaxed))
                        };
                        bytes += it.total_size().min(room);
                        extra += u64::from(k - 1);
                    }
                }
                idx += k;
            }
        }
        class.extra_chunks.store(extra, Relaxed);
        live.sort_unstable();
        for &(_, id) in &live {
            self.lru_push_head(c, id);
        }
        class.curr_items.store(live.len() as u64, Relaxed);
        class.bytes.store(bytes, Relaxed);
        class.pages.store(pages, Relaxed);
    }

    /// After the worker of `slot` died: forget its connections, and settle the chunk it had allocated but
    /// maybe not published. Published (reachable) -> LINKED; otherwise freed.
    /// Call before a new worker takes the slot.
    pub fn recover_slot(&self, slot: usize) {
        let s = self.slot_at(slot);
        s.counters.clear_gauges();
        for entry in self.conn_table(slot) {
            entry.clear();
        }
        let id = s.inflight.swap(0, Relaxed);
        if id == 0 || !self.valid_id(id) {
            return;
        }
        let it = self.item(id);
        if it.state() != INFLIGHT || it.owner() != slot as u32 {
            return;
        }
        let hash = it.hash.load(Relaxed);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        if self.chain_contains(hash, id) {
            it.word.store(LINKED, Relaxed);
        } else {
            self.free(id);
        }
    }

    pub(super) fn chunk_id(&self, c: usize, page: u32, idx: u32) -> u32 {
        let size = self.class(c).chunk_size.load(Relaxed) as u64;
        let off = page as u64 * self.layout.page_size + idx as u64 * size;
        (off / 8) as u32 + 1
    }

    pub(super) fn class(&self, c: usize) -> &SlabClass {
        &self.classes[c]
    }

    /// Number of slab classes.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// Class `c` for `stats slabs` / `stats items`. The class lock is held
    /// while reading, so that the LRU tail's age is that of a live item.
    pub fn class_snapshot(&self, c: usize, now: u32) -> ClassSnapshot {
        let _g = self.lock_class(c);
        let class = self.class(c);
        let per_page = class.per_page.load(Relaxed);
        let tail = class.lru_tail.load(Relaxed);
        let age = if tail != 0 && self.valid_id(tail) {
            now.saturating_sub(self.item(tail).time.load(Relaxed))
        } else {
            0
        };
        let free_chunks_end = u64::from(self.uncarved(c));
        ClassSnapshot {
            chunk_size: class.chunk_size.load(Relaxed),
            per_page,
            pages: class.pages.load(Relaxed),
            items: class.curr_items.load(Relaxed),
            used_chunks: class.curr_items.load(Relaxed) + class.extra_chunks.load(Relaxed),
            free_chunks_end,
            bytes: class.bytes.load(Relaxed),
            age,
            evicted_time: class.evicted_time.load(Relaxed),
        }
    }

    pub(super) fn page_class(&self, page: u32) -> &std::sync::atomic::AtomicU8 {
        &self.page_table[page as usize]
    }
}
