//! Page moves between slab classes (memcached's slab rebalancer): `slabs
//! reassign`, `slabs automove`, and the pool of pages no class holds.
//!
//! A move empties one page of the source class: each item in it is copied
//! into a free chunk of the same class elsewhere (a rescue) or, when the class
//! has none, evicted; then the page goes to the pool, and from there to the
//! destination class. Only the worker of slot 0 moves pages, one at a time,
//! on its 100 ms tick; other workers only ask (`Header::move_request`).
//!
//! Crash consistency rests on the rules of slab.rs: the whole move of a page
//! holds the source's class lock, so a mover that dies leaves a class whose
//! next locker rebuilds its lists and page count from chunk states and the
//! page table. Items are unlinked only under their stripe lock, which the
//! mover *tries* (it holds a class lock), so a reader never sees a chunk
//! change under it; an INFLIGHT chunk or a busy stripe makes the move wait for
//! a later tick.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, Release};

use super::item::{FREE, INFLIGHT, ITEM_HEADER, LINKED, PIECE, WORD_FLAGS};
use super::lock::{Acquired, LockGuard};
use super::stats::{ClassCounter, Counter};
use super::{NONE, Store, unix_now};

/// `page_table` byte of a page in the pool.
pub const POOL: u8 = 0xff;

/// A class keeps at least one page: `slabs reassign` from a class with fewer
/// than this many answers NOSPARE (memcached's rule).
const MIN_PAGES_TO_GIVE: u32 = 2;
/// The automover takes pages only from a class with more than this many
/// (memcached's MIN_PAGES_FOR_SOURCE).
const MIN_PAGES_FOR_SOURCE: u32 = 2;
/// A class with this many pages' worth of free chunks, and no evictions or new
/// pages for a whole window, gives one back to the pool (MIN_PAGES_FOR_RECLAIM).
const MIN_PAGES_FOR_RECLAIM: f64 = 2.5;
/// Passes over a page a move makes while some of its items are busy (a set
/// in progress, a reader holding a stripe) before it gives up.
const BUSY_PASSES: u32 = 10;
/// Chunks of a page the mover handles per tick, each slice under the class
/// lock: a page is emptied over a few ticks, so that neither the class's
/// stores nor worker 0's own connections wait for a whole page (a page of
/// 100-byte items is ~6,000 chunks, a few milliseconds).
const CHUNKS_PER_TICK: u32 = 1024;
/// Mover ticks (100 ms) per automover decision: once a second, as memcached.
const TICKS_PER_RUN: u64 = 10;

/// Answer to `slabs reassign <src> <dst>`, one per memcached reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassign {
    Ok,
    /// A move is already waiting.
    Busy,
    BadClass,
    NoSpare,
    Same,
}

/// What one attempt at a move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moved {
    Done,
    /// Some chunk of the page was in use; try again later.
    Busy,
    /// Nothing to move (the source has too few pages, or the pool is empty).
    Nothing,
}

/// One second of one class in the automover's window (12 bytes: the window
/// holds one per class per second).
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    /// Seconds since the LRU tail was last accessed.
    age: u32,
    /// This class's share of all evictions in that second.
    evicted_ratio: f32,
    dirty: bool,
    evicted_seen: bool,
}

const _: () = assert!(size_of::<Sample>() == 12);

/// A class's counters at the last decision.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    evicted: u64,
    outofmemory: u64,
    pages: u32,
}

/// The automover's memory of the last `window` seconds (kept by the one
/// worker that runs it, slot 0; a new worker starts a new window).
pub struct Automover {
    window: usize,
    ticks: u64,
    /// Decisions made (memcached's window_cur).
    runs: u64,
    before: Vec<Seen>,
    /// Class-major: class `c`'s samples at `c * window ..`.
    samples: Vec<Sample>,
    /// The page being emptied, if a move is under way.
    drain: Option<Drain>,
    /// Drains a dead predecessor left were undone (first tick).
    started: bool,
}

/// A move under way: class `class` (0-based) empties `page`, next chunk
/// `next`; then the page goes to `dst` (0 = the pool; else a 1-based class).
#[derive(Debug, Clone, Copy)]
struct Drain {
    class: usize,
    page: u32,
    next: u32,
    dst: usize,
    release: bool,
    busy: bool,
    passes: u32,
}

impl Automover {
    pub fn new(window: u32) -> Automover {
        Automover {
            window: window.max(1) as usize,
            ticks: 0,
            runs: 0,
            before: Vec::new(),
            samples: Vec::new(),
            drain: None,
            started: false,
        }
    }
}

/// Encode a move request: `src` is 0 (the pool) or a class id (1-based, as
/// `stats slabs` numbers them), `dst` likewise.
fn encode_move(src: usize, dst: usize) -> u32 {
    1 << 31 | (src as u32) << 16 | dst as u32
}

fn decode_move(m: u32) -> (usize, usize) {
    (((m >> 16) & 0x7fff) as usize, (m & 0xffff) as usize)
}

/// memcached's slabs_reassign_pick_any cursor (per process, as memcached's
/// is per process).
static PICK_CURSOR: AtomicUsize = AtomicUsize::new(0);

impl Store {
    /// `slabs reassign <src> <dst>`: ask the mover to move one page, with
    /// memcached's checks in memcached's order. `src` -1 picks any class with
    /// a spare page; 0 is the pool on either side.
    pub fn request_reassign(&self, src: i64, dst: i64) -> Reassign {
        let h = self.header();
        if h.move_request.load(Relaxed) != 0 {
            return Reassign::Busy;
        }
        if src == dst {
            return Reassign::Same;
        }
        let largest = self.classes.len() as i64;
        let src = if src == -1 { self.pick_any(dst) } else { src };
        if !(0..=largest).contains(&src) || !(0..=largest).contains(&dst) {
            return Reassign::BadClass;
        }
        let pages = match src {
            0 => self.pool_pages(),
            c => self.class(c as usize - 1).pages.load(Relaxed),
        };
        if pages < MIN_PAGES_TO_GIVE {
            return Reassign::NoSpare;
        }
        let m = encode_move(src as usize, dst as usize);
        match h.move_request.compare_exchange(0, m, Relaxed, Relaxed) {
            Ok(_) => Reassign::Ok,
            Err(_) => Reassign::Busy,
        }
    }

    /// The next class after the last one picked that has a spare page (-1 if
    /// none), skipping `dst`.
    fn pick_any(&self, dst: i64) -> i64 {
        let largest = self.classes.len();
        for _ in 0..largest {
            let mut cur = PICK_CURSOR.load(Relaxed) + 1;
            if cur > largest {
                cur = 1;
            }
            PICK_CURSOR.store(cur, Relaxed);
            if cur as i64 == dst {
                continue;
            }
            if self.class(cur - 1).pages.load(Relaxed) > 1 {
                return cur as i64;
            }
        }
        -1
    }

    /// `slabs automove <level>`.
    pub fn set_automove(&self, level: u32) {
        self.header().automove.store(level, Relaxed);
    }

    pub fn automove(&self) -> u32 {
        self.header().automove.load(Relaxed)
    }

    /// `slabs automove ratio <r>` / `-o slab_automove_ratio`.
    pub fn set_automove_ratio(&self, ratio: f64) {
        self.header().automove_ratio.store(ratio.to_bits(), Relaxed);
    }

    pub fn automove_ratio(&self) -> f64 {
        f64::from_bits(self.header().automove_ratio.load(Relaxed))
    }

    /// A requested move is waiting (`slab_reassign_running`).
    pub fn reassign_running(&self) -> bool {
        self.header().move_request.load(Relaxed) != 0
    }

    /// Pages in the pool (`slab_global_page_pool`).
    pub fn pool_pages(&self) -> u32 {
        self.header().pool_pages.load(Relaxed)
    }

    /// Whether a class that needs a page can take one: from the pool, or
    /// one never used within the memory limit (a hint, read without locks).
    pub(super) fn page_available(&self) -> bool {
        self.pool_pages() != 0
            || (self.pages_used() < self.layout.page_count
                && self.pages_in_use() < self.page_limit())
    }

    /// Pages the slab classes hold (not the pool's).
    pub fn pages_in_use(&self) -> u32 {
        let h = self.header();
        h.pages_used
            .load(Relaxed)
            .saturating_sub(h.pool_pages.load(Relaxed))
    }

    /// One tick (100 ms) of the mover, in worker slot 0: a slice of the move
    /// under way or the start of the one waiting, and once a second the
    /// automover's decision.
    pub fn mover_tick(&self, am: &mut Automover) {
        if !am.started {
            am.started = true;
            for c in 0..self.classes.len() {
                if self.class(c).draining.load(Relaxed) != NONE {
                    let _g = self.lock_class(c);
                    self.abort_drain(c);
                }
            }
        }
        let h = self.header();
        if let Some(d) = &mut am.drain {
            if self.drain_step(d) != Moved::Busy {
                am.drain = None;
                h.move_request.store(0, Relaxed);
            }
        } else if let m @ 1.. = h.move_request.load(Relaxed) {
            let (src, dst) = decode_move(m);
            if src == 0 {
                if dst != 0 && self.adopt_pool_page(dst - 1) {
                    self.counters().incr(Counter::slabs_moved);
                }
                h.move_request.store(0, Relaxed);
            } else {
                // Over cache_memlimit a class may give its last page, the
                // one it carves included; otherwise it keeps one.
                let last_too = self.pages_in_use() > self.page_limit();
                match self.begin_drain(src - 1, last_too) {
                    Some(page) => {
                        am.drain = Some(Drain {
                            class: src - 1,
                            page,
                            next: 0,
                            dst,
                            // Memory leaves the segment only to bring it
                            // under cache_memlimit: a page the pool hands
                            // out again would be faulted back in.
                            release: dst == 0 && last_too,
                            busy: false,
                            passes: 0,
                        })
                    }
                    None => h.move_request.store(0, Relaxed),
                }
            }
        }
        am.ticks += 1;
        if am.ticks.is_multiple_of(TICKS_PER_RUN) {
            self.automove_run(am);
        }
    }

    /// Start emptying a page of class `c`: the first one it is not carving
    /// (or, with `last_too`, that one if it has no other). Its chunks leave
    /// the free list and the class's `draining` names it.
    fn begin_drain(&self, c: usize, last_too: bool) -> Option<u32> {
        let _g = self.lock_class(c);
        let class = self.class(c);
        if class.draining.load(Relaxed) != NONE {
            return None;
        }
        let page = self.page_to_empty(c, last_too)?;
        self.unlist_page(c, page);
        // Its uncarved end, if any, now joins the free list only if the move
        // is undone (abort_drain), the page no longer being carved.
        if class.cur_page.load(Relaxed) == page {
            class.cur_page.store(NONE, Relaxed);
        }
        class.draining.store(page, Relaxed);
        Some(page)
    }

    /// The next slice of the move under way. `Busy`: more to do (or busy
    /// items to retry); `Done`: the page is in the pool or its new class;
    /// `Nothing`: the move was undone (busy too long, or the class rebuilt
    /// after a crash).
    fn drain_step(&self, d: &mut Drain) -> Moved {
        let c = d.class;
        {
            let _g = self.lock_class(c);
            let class = self.class(c);
            if class.draining.load(Relaxed) != d.page {
                return Moved::Nothing;
            }
            let per_page = class.per_page.load(Relaxed);
            let end = (d.next + CHUNKS_PER_TICK).min(per_page);
            let now = unix_now();
            let (oldest_live, oldest_cas) = self.flush_marks();
            let mut idx = d.next;
            while idx < end {
                let id = self.chunk_id(c, d.page, idx);
                // Read before the chunk is cleared: an item's body is stepped
                // over, never read as headers (a span ends within the page).
                let k = self.item(id).chunks().min(per_page - idx);
                if !self.clear_chunk(c, id, now, (oldest_live, oldest_cas), true) {
                    d.busy = true;
                }
                idx += k;
            }
            d.next = idx;
            if idx < per_page {
                return Moved::Busy;
            }
            if d.busy {
                d.passes += 1;
                if d.passes >= BUSY_PASSES {
                    self.abort_drain(c);
                    return Moved::Nothing;
                }
                (d.next, d.busy) = (0, false);
                return Moved::Busy;
            }
            class.draining.store(NONE, Relaxed);
            self.to_pool(c, d.page, d.release);
        }
        if d.dst != 0 {
            self.adopt_pool_page(d.dst - 1);
        }
        self.counters().incr(Counter::slabs_moved);
        Moved::Done
    }

    /// Give up the move under way of class `c` (class lock held): the
    /// page's free chunks go back on the free list.
    fn abort_drain(&self, c: usize) {
        let class = self.class(c);
        let page = class.draining.swap(NONE, Relaxed);
        if page != NONE {
            // No longer carved (begin_drain): all of it goes back.
            self.relist_page(c, page, class.per_page.load(Relaxed));
        }
    }

    /// Put the FREE chunks among `page`'s first `end` back on class `c`'s
    /// free list, in page order (class lock held): undoes `unlist_page`.
    fn relist_page(&self, c: usize, page: u32, end: u32) {
        // Forward, stepping over items' bodies; pushed last to first.
        let mut free = Vec::new();
        let mut idx = 0;
        while idx < end {
            let id = self.chunk_id(c, page, idx);
            let it = self.item(id);
            if it.state() == FREE {
                free.push(id);
            }
            idx += it.chunks().min(end - idx);
        }
        for &id in free.iter().rev() {
            self.push_free(c, id);
        }
    }

    /// Take `page`'s chunks off class `c`'s free list (class lock held): the
    /// listed ones are its carved FREE chunks, each unlinked in place.
    /// Returns how many of its chunks were handed out (all but the uncarved
    /// end of the page being carved).
    fn unlist_page(&self, c: usize, page: u32) -> u32 {
        let listed = self.carved(c, page);
        let mut idx = 0;
        while idx < listed {
            let id = self.chunk_id(c, page, idx);
            let it = self.item(id);
            if it.state() == FREE {
                self.unlink_free(c, id);
            }
            idx += it.chunks().min(listed - idx);
        }
        listed
    }

    /// The page of class `c` to empty: the first it neither carves nor is
    /// already emptying; with `last_too`, the one it carves when it has no
    /// other. None when the class keeps what it has: fewer than two pages
    /// (one with `last_too`).
    fn page_to_empty(&self, c: usize, last_too: bool) -> Option<u32> {
        let class = self.class(c);
        let min_pages = if last_too { 1 } else { MIN_PAGES_TO_GIVE };
        if class.pages.load(Relaxed) < min_pages {
            return None;
        }
        let cur = class.cur_page.load(Relaxed);
        let draining = class.draining.load(Relaxed);
        let used = self.pages_used();
        let owned = |p: u32| self.page_class(p).load(Relaxed) == c as u8 + 1;
        (0..used)
            .find(|&p| p != cur && p != draining && owned(p))
            .or_else(|| (last_too && cur != NONE && cur < used && owned(cur)).then_some(cur))
    }

    /// Free chunk `id` of class `c` (class lock held): a live item is copied
    /// into a free chunk elsewhere in the class (the page's own are off the
    /// free list), or evicted when there is none; a dead one is dropped.
    /// The chunk is then FREE and off the free list. False if it is busy
    /// (being written, or its stripe is held). Without `rescue` a live item
    /// is evicted: a rescue records its copy in the worker's slot, which
    /// must keep naming a store in progress (`page_for_class` for an item
    /// chained over pages, whose head the slot names).
    fn clear_chunk(
        &self,
        c: usize,
        id: u32,
        now: u32,
        (oldest_live, oldest_cas): (u32, u64),
        rescue: bool,
    ) -> bool {
        let class = self.class(c);
        let counters = &self.slot().counters;
        let it = self.item(id);
        match it.state() {
            LINKED => {}
            INFLIGHT => {
                counters.incr(Counter::slab_reassign_busy_items);
                return false;
            }
            PIECE => return self.clear_piece(c, id, now),
            _ => return true,
        }
        let hash = it.hash.load(Relaxed);
        let Some(got) = self.stripe_for(hash).try_lock() else {
            counters.incr(Counter::slab_reassign_busy_items);
            return false;
        };
        let _s = got.repaired_trivially();
        let dead = it.is_dead(now, oldest_live, oldest_cas);
        if !dead && self.chain_contains(hash, id) {
            // An item spanning chunks would need as many in a row, and one
            // chained over pages its pieces renamed: evicted.
            if rescue
                && it.chunks() == 1
                && !self.is_chained(it)
                && let Some(to) = self.pop_free(c)
            {
                self.rescue(c, id, to, hash);
                counters.incr(Counter::slab_reassign_rescues);
                return true;
            }
            counters.incr(Counter::slab_reassign_evictions_nomem);
        }
        if self.unlink_from_chain(hash, id) {
            self.sizes_remove(it);
        }
        class.curr_items.fetch_sub(1, Relaxed);
        class
            .bytes
            .fetch_sub(it.total_size().min(class.bytes.load(Relaxed)), Relaxed);
        self.lru_unlink(c, id);
        // The page is being emptied: the body's chunks stay off the list.
        self.split_span(c, id, false);
        it.word.store(FREE, Relaxed);
        true
    }

    /// Free piece `id` of an item chained over pages, in a page of the top
    /// class `c` being emptied (its lock held): the whole item is evicted
    /// (`slab_reassign_evictions_nomem`), its head and other pieces going to
    /// the free list; a piece whose item is gone (a crash left it) is just
    /// freed. False if the item is being written or its stripe is held.
    fn clear_piece(&self, c: usize, id: u32, now: u32) -> bool {
        let counters = &self.slot().counters;
        let Some(head) = self.head_of(id) else {
            self.free_piece(id);
            return true;
        };
        let h = self.item(head);
        if h.state() != LINKED {
            counters.incr(Counter::slab_reassign_busy_items);
            return false;
        }
        let hash = h.hash.load(Relaxed);
        let Some(got) = self.stripe_for(hash).try_lock() else {
            counters.incr(Counter::slab_reassign_busy_items);
            return false;
        };
        let _s = got.repaired_trivially();
        let (oldest_live, oldest_cas) = self.flush_marks();
        if self.unlink_from_chain(hash, head) {
            self.sizes_remove(h);
            if !h.is_dead(now, oldest_live, oldest_cas) {
                counters.incr(Counter::slab_reassign_evictions_nomem);
            }
        }
        // `id` first, kept off the list: its page is being emptied (a page
        // emptied at once, `empty_page`, is not marked draining). The
        // head's release then frees the other pieces, no longer this one.
        self.free_piece(id);
        self.release_locked(c, head);
        true
    }

    /// An emptied page of class `c` (class lock held: every chunk FREE and
    /// off the free list) goes to the pool; `release` gives its memory back.
    fn to_pool(&self, c: usize, page: u32, release: bool) {
        let class = self.class(c);
        if class.cur_page.load(Relaxed) == page {
            class.cur_page.store(NONE, Relaxed);
        }
        if release {
            self.release_page(page);
        }
        let _p = self.lock_pool();
        class.pages.fetch_sub(1, Relaxed);
        self.page_class(page).store(POOL, Relaxed);
        self.header().pool_pages.fetch_add(1, Relaxed);
    }

    /// Empty a page of class `c` at once (class lock held) and put it in the
    /// pool, for a class that has no page (see `page_for_empty_class`).
    /// `last_too`: the class may give its last page, the one it carves
    /// included; `rescue`: as `clear_chunk`.
    fn empty_page(&self, c: usize, now: u32, last_too: bool, rescue: bool) -> Result<u32, Moved> {
        let page = self.page_to_empty(c, last_too).ok_or(Moved::Nothing)?;
        let listed = self.unlist_page(c, page);
        let marks = self.flush_marks();
        let mut busy = false;
        let mut idx = 0;
        while idx < listed {
            let id = self.chunk_id(c, page, idx);
            let k = self.item(id).chunks().min(listed - idx);
            busy |= !self.clear_chunk(c, id, now, marks, rescue);
            idx += k;
        }
        if busy {
            // Back to an ordinary page: its handed-out free chunks on the list
            // again (it may still be the page being carved).
            self.relist_page(c, page, listed);
            return Err(Moved::Busy);
        }
        self.to_pool(c, page, false);
        Ok(page)
    }

    /// memcached gives a class with no page one even when memory is full;
    /// our segment cannot grow, so before a store into class `c` that has no
    /// page and could not get one, a page of the class whose LRU tail is
    /// oldest of those with two pages or more goes to the pool, for `c` to
    /// take. When no class has two (more classes in use than pages), `c`
    /// borrows chunks of a larger class instead (`Store::alloc`); only when
    /// none is within reach does the oldest class give its only page, whose
    /// items all go. The caller holds no lock (a stripe held would make its
    /// items busy, and a store would fail where memcached's succeeds).
    pub(super) fn page_for_empty_class(&self, c: usize) {
        self.page_for_class(c, false);
    }

    /// [`Store::page_for_empty_class`]; with `any`, for class `c` whatever
    /// pages it has: the top class, when it has no chunk to give an item
    /// chained over pages (store/chain.rs). That caller holds the stripe
    /// of the key being stored: items on it are busy, and if every page
    /// tried has one, the store fails as out of memory.
    pub(super) fn page_for_class(&self, c: usize, any: bool) {
        let class = self.class(c);
        if !self.evictions || (class.pages.load(Relaxed) != 0 && !any) || self.page_available() {
            return;
        }
        let tail_time = |d: usize| {
            let tail = self.class(d).lru_tail.load(Relaxed);
            if tail != 0 && self.valid_id(tail) {
                self.item(tail).time.load(Relaxed)
            } else {
                u32::MAX
            }
        };
        // A class with a page to spare first; when none has one (more
        // classes in use than pages), the oldest class's only page.
        // Not the top class's while a class between has pages to lend
        // from: its pages hold items of a megabyte or more (a page taken
        // costs a whole chained item, several pages of bytes), and
        // memcached never takes its largest class's pages for a new class
        // (it gives that one a page past -m). With values of 1 KiB to
        // 4 MiB in `-m 64` (bench/memory `large`), taking them left the
        // top class a few pages and evictions began at 149 items
        // (memcached: 162); kept, at 169. The automover still moves them,
        // and when only the top class could lend, a page is better than
        // its megabyte chunks.
        let top = self.top_class();
        let spare_top = !(c + 1..top).any(|d| self.class(d).pages.load(Relaxed) != 0);
        let oldest = |min: u32| {
            (0..self.classes.len())
                .filter(|&d| d != c && (d != top || spare_top))
                .filter(|&d| self.class(d).pages.load(Relaxed) >= min)
                .min_by_key(|&d| tail_time(d))
        };
        // The top class short of chunks for an item chained over pages:
        // the page of whichever class holds the fewest bytes a page (with
        // many classes, each has a page it has hardly used), so that a
        // page costs the fewest items.
        let emptiest = || {
            (0..self.classes.len())
                .filter(|&d| d != c && self.class(d).pages.load(Relaxed) != 0)
                .min_by_key(|&d| {
                    let class = self.class(d);
                    class.bytes.load(Relaxed) / u64::from(class.pages.load(Relaxed).max(1))
                })
                .map(|d| (d, self.class(d).pages.load(Relaxed) == 1))
        };
        let choice = if any { emptiest() } else { None };
        let (d, last_too) = match choice.or_else(|| oldest(MIN_PAGES_TO_GIVE).map(|d| (d, false))) {
            Some(d) => d,
            None if self.lenders(c).next().is_some() => return,
            None => match oldest(1) {
                Some(d) => (d, true),
                None => return,
            },
        };
        let _g = self.lock_class(d);
        // Called for the top class, this worker's slot names the head of
        // the chained item being stored: no rescue may take the slot.
        if self.empty_page(d, unix_now(), last_too, !any).is_ok() {
            self.counters().incr(Counter::slabs_moved);
        }
    }

    /// Copy live item `from` into free chunk `to` of the same class, in its
    /// place in the hash chain and the LRU (stripe and class locks held).
    fn rescue(&self, c: usize, from: u32, to: u32, hash: u32) {
        let old = self.item(from);
        let new = self.item(to);
        // Recorded like an allocation: if we die before it is published, the
        // supervisor frees it; after, it marks it LINKED. Its class and
        // lengths first: a chunk of a page from the pool holds another
        // class's bytes, and the supervisor frees it into the class it names.
        new.class.store(c as u8, Relaxed);
        new.nkey.store(old.nkey.load(Relaxed), Relaxed);
        new.nbytes.store(old.nbytes.load(Relaxed), Relaxed);
        new.hash.store(hash, Relaxed);
        self.slot().inflight.store(to, Relaxed);
        new.span.store(1, Relaxed);
        new.word
            .store(INFLIGHT | (self.slot_index as u32) << 16, Relaxed);
        let len = (old.total_size() as usize).min(self.class(c).chunk_size.load(Relaxed) as usize)
            - ITEM_HEADER;
        // SAFETY: both chunks are of class `c`, so each holds ITEM_HEADER +
        // `len` bytes inside the arena, and they are different chunks (`to`
        // came off the free list, `from` is LINKED), so they do not overlap.
        // `to` is INFLIGHT and ours; `from` is LINKED, whose bytes nobody
        // writes, and we hold its stripe lock.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.item_ptr(from).add(ITEM_HEADER),
                self.item_ptr(to).add(ITEM_HEADER),
                len,
            );
        }
        new.hash.store(hash, Relaxed);
        new.time.store(old.time.load(Relaxed), Relaxed);
        new.exptime.store(old.exptime.load(Relaxed), Relaxed);
        new.flags.store(old.flags.load(Relaxed), Relaxed);
        new.nbytes.store(old.nbytes.load(Relaxed), Relaxed);
        new.cas.store(old.cas.load(Relaxed), Relaxed);
        new.nkey.store(old.nkey.load(Relaxed), Relaxed);
        new.class.store(c as u8, Relaxed);
        new.next.store(old.next.load(Relaxed), Relaxed);
        // In the chain: the link that points at `from` now points at `to`.
        let mut link = self.bucket(hash);
        while link.load(Relaxed) != from {
            link = &self.item(link.load(Relaxed)).next;
        }
        link.store(to, Release);
        // In the LRU: `to` takes `from`'s place.
        let (prev, next) = (old.lru_prev.load(Relaxed), old.lru_next.load(Relaxed));
        let class = self.class(c);
        new.lru_prev.store(prev, Relaxed);
        new.lru_next.store(next, Relaxed);
        if prev != 0 {
            self.item(prev).lru_next.store(to, Relaxed);
        } else {
            class.lru_head.store(to, Relaxed);
        }
        if next != 0 {
            self.item(next).lru_prev.store(to, Relaxed);
        } else {
            class.lru_tail.store(to, Relaxed);
        }
        new.word
            .store(LINKED | (old.word.load(Relaxed) & WORD_FLAGS), Release);
        self.slot().inflight.store(0, Relaxed);
        old.lru_prev.store(0, Relaxed);
        old.lru_next.store(0, Relaxed);
        old.word.store(FREE, Relaxed);
    }

    /// Give a pool page to class `c`: every chunk of it free. False if the
    /// pool is empty (or the classes hold all `cache_memlimit` allows).
    fn adopt_pool_page(&self, c: usize) -> bool {
        let _g = self.lock_class(c);
        let class = self.class(c);
        let Some(page) = self.take_pool_page(c) else {
            return false;
        };
        for idx in (0..class.per_page.load(Relaxed)).rev() {
            self.push_free(c, self.chunk_id(c, page, idx));
        }
        true
    }

    /// Take a page from the pool for class `c` (class lock held): its page
    /// table entry names `c` and every chunk's state is FREE.
    pub(super) fn take_pool_page(&self, c: usize) -> Option<u32> {
        let h = self.header();
        if h.pool_pages.load(Relaxed) == 0 {
            return None;
        }
        let _p = self.lock_pool();
        if h.pool_pages.load(Relaxed) == 0 || self.pages_in_use() >= self.page_limit() {
            return None;
        }
        let page = (0..self.pages_used()).find(|&p| self.page_class(p).load(Relaxed) == POOL)?;
        let class = self.class(c);
        for idx in 0..class.per_page.load(Relaxed) {
            let it = self.item(self.chunk_id(c, page, idx));
            it.word.store(FREE, Relaxed);
            it.span.store(1, Relaxed);
            it.lru_prev.store(0, Relaxed);
            it.lru_next.store(0, Relaxed);
        }
        self.page_class(page).store(c as u8 + 1, Relaxed);
        h.pool_pages.fetch_sub(1, Relaxed);
        class.pages.fetch_add(1, Relaxed);
        Some(page)
    }

    /// The pool lock; a holder that died leaves a count the page table
    /// corrects.
    fn lock_pool(&self) -> LockGuard<'_> {
        match self.header().pool_lock.lock() {
            Acquired::Clean(g) => g,
            Acquired::OwnerDied(g) => {
                self.recount_pool();
                g.mark_consistent();
                g
            }
        }
    }

    pub(super) fn recount_pool(&self) {
        let n = (0..self.pages_used())
            .filter(|&p| self.page_class(p).load(Relaxed) == POOL)
            .count() as u32;
        self.header().pool_pages.store(n, Relaxed);
    }

    /// Pages taken from the arena so far (the pool's among them).
    pub(super) fn pages_used(&self) -> u32 {
        self.header()
            .pages_used
            .load(Relaxed)
            .min(self.layout.page_count)
    }

    /// Hand an emptied page's memory back to the system (the segment is
    /// shared memory or a file: MADV_REMOVE punches the hole; where it cannot,
    /// the page just stays resident).
    fn release_page(&self, page: u32) {
        let size = self.layout.page_size as usize;
        // SAFETY: the page lies inside the arena (page < pages_used <=
        // page_count), is page-aligned (the arena is, and page_size is a
        // multiple of 4 KiB), and nobody reads or writes it: it is out of
        // every list and chain, not yet in the pool, and we hold its class's
        // lock. Its chunks read back as zeros, which is FREE.
        unsafe {
            let at = self.arena.add(page as usize * size);
            libc::madvise(at.cast(), size, libc::MADV_REMOVE);
        }
    }

    /// Once a second: memcached's automover (level 1: move a page from the
    /// class whose LRU tail is oldest to the youngest class that evicts; give
    /// pages of long-idle free chunks to the pool; level 2: a page to every
    /// class that evicts), and pages back to the pool while the classes hold
    /// more than `cache_memlimit` allows.
    fn automove_run(&self, am: &mut Automover) {
        let n = self.classes.len();
        let now = unix_now();
        let mut after = Vec::with_capacity(n);
        let mut ages = Vec::with_capacity(n);
        let mut free_chunks = Vec::with_capacity(n);
        for c in 0..n {
            let snap = self.class_snapshot(c, now);
            after.push(Seen {
                evicted: self.class_total(c, ClassCounter::evicted),
                outofmemory: self.class_total(c, ClassCounter::outofmemory),
                pages: snap.pages,
            });
            ages.push(u64::from(snap.age));
            let total = u64::from(snap.pages) * u64::from(snap.per_page);
            free_chunks.push((
                total.saturating_sub(snap.used_chunks),
                u64::from(snap.per_page),
            ));
        }
        if am.before.len() != n {
            am.samples = vec![Sample::default(); n * am.window];
            am.before = after;
            return;
        }
        let level = self.automove();
        let before = std::mem::replace(&mut am.before, after);
        let after = &am.before;
        if level == 0 || self.reassign_running() {
            return;
        }
        // Over cache_memlimit: the oldest class gives a page back.
        if self.pages_in_use() > self.page_limit() {
            let oldest = (0..n)
                .filter(|&c| after[c].pages > 0)
                .max_by_key(|&c| (after[c].pages >= MIN_PAGES_TO_GIVE, ages[c]));
            if let Some(c) = oldest {
                self.header()
                    .move_request
                    .store(encode_move(c + 1, 0), Relaxed);
            }
            return;
        }
        let evicted = |c: usize| after[c].evicted.saturating_sub(before[c].evicted);
        if level == 2 {
            if let Some(c) = (0..n).find(|&c| evicted(c) > 0) {
                self.request_reassign(-1, c as i64 + 1);
            }
            return;
        }
        let evicted_total: u64 = (0..n).map(evicted).sum();
        am.runs += 1;
        let w = am.window;
        let at = (am.runs % w as u64) as usize;
        let ratio = self.automove_ratio();
        let (mut oldest, mut oldest_age) = (None, 0u64);
        let (mut youngest, mut youngest_age, mut youngest_evicting) = (None, u64::MAX, false);
        for c in 0..n {
            let e = evicted(c);
            let s = Sample {
                age: ages[c].min(u64::from(u32::MAX)) as u32,
                dirty: e > 0
                    || after[c].outofmemory > before[c].outofmemory
                    || after[c].pages > before[c].pages,
                evicted_ratio: if e > 0 {
                    (e as f64 / evicted_total as f64) as f32
                } else {
                    0.0
                },
                evicted_seen: e > 0,
            };
            let window = &mut am.samples[c * w..(c + 1) * w];
            window[at] = s;
            let age = window.iter().map(|s| u64::from(s.age)).sum::<u64>() / w as u64;
            let dirty = window.iter().any(|s| s.dirty);
            let seen = window.iter().filter(|s| s.evicted_seen).count();
            let ratio_sum: f64 = window.iter().map(|s| f64::from(s.evicted_ratio)).sum();
            let (free, per_page) = free_chunks[c];
            if free as f64 > per_page as f64 * MIN_PAGES_FOR_RECLAIM && !dirty {
                self.request_reassign(c as i64 + 1, 0);
                return;
            }
            if age > oldest_age && after[c].pages > MIN_PAGES_FOR_SOURCE {
                (oldest, oldest_age) = (Some(c), age);
            }
            if age < youngest_age && (seen > w / 2 || ratio_sum / w as f64 > 0.25) {
                (youngest, youngest_age, youngest_evicting) = (Some(c), age, s.evicted_seen);
            }
        }
        if let (Some(young), Some(old)) = (youngest, oldest)
            && am.runs > w as u64
            && young != old
            && (youngest_age as f64) < oldest_age as f64 * ratio
            && youngest_evicting
        {
            self.request_reassign(old as i64 + 1, young as i64 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreResult;
    use super::*;
    use crate::protocol::StoreMode;

    fn store(memory_mb: u64) -> Store {
        super::super::tests::store(memory_mb, true)
    }

    fn value(i: usize, len: usize) -> Vec<u8> {
        format!("{i:0len$}").into_bytes()
    }

    /// Set `n` keys `<prefix><i>` with values of `len` bytes; the class id
    /// (1-based) they went to.
    fn fill(s: &Store, prefix: &str, n: usize, len: usize) -> usize {
        for i in 0..n {
            let key = format!("{prefix}{i:06}");
            let r = s.store(
                StoreMode::Set,
                key.as_bytes(),
                i as u32,
                0,
                &value(i, len),
                0,
            );
            assert_eq!(r, StoreResult::Stored);
        }
        s.class_for(super::super::item::item_size(prefix.len() + 6, len))
            .unwrap()
            + 1
    }

    /// Every key of the fill that is still there has its own value.
    fn held(s: &Store, prefix: &str, n: usize, len: usize) -> usize {
        (0..n)
            .filter(|&i| {
                let mut ok = None;
                s.get(format!("{prefix}{i:06}").as_bytes(), None, |h| {
                    ok = Some(h.data() == value(i, len).as_slice() && h.flags == i as u32);
                });
                assert_ne!(ok, Some(false), "{prefix}{i:06} has another value");
                ok.is_some()
            })
            .count()
    }

    /// Keys `<prefix><i>` (i < n) held in class id `class`.
    fn in_class(s: &Store, prefix: &str, n: usize, class: usize) -> usize {
        (0..n)
            .filter(|i| {
                s.meta_debug(format!("{prefix}{i:06}").as_bytes(), |it| {
                    it.is_some_and(|it| it.class_id() == class)
                })
            })
            .count()
    }

    fn pages(s: &Store, class: usize) -> u32 {
        s.class(class - 1).pages.load(Relaxed)
    }

    /// Over cache_memlimit class id `class` gives its last page to the pool,
    /// a slice of chunks a tick, as the automover asks (`slabs reassign`
    /// keeps a class's last page).
    fn give_last_page(s: &Store, class: usize) {
        assert!(s.set_memory_limit(3 << 20));
        let mut am = Automover::new(30);
        s.header()
            .move_request
            .store(encode_move(class, 0), Relaxed);
        settle(s, &mut am);
        assert_eq!(pages(s, class), 0);
    }

    /// Tick the mover until the requested move is over.
    fn settle(s: &Store, am: &mut Automover) {
        for _ in 0..1000 {
            if !s.reassign_running() {
                return;
            }
            s.mover_tick(am);
        }
        panic!("the move did not end");
    }

    /// The rebuild from chunk states agrees with the lists the move left.
    fn consistent(s: &Store) {
        // The lists as the move left them: every free chunk FREE, each back
        // link the chunk before it.
        for c in 0..s.class_count() {
            let mut prev = 0;
            let mut id = s.class(c).free_head.load(Relaxed);
            while id != 0 {
                assert_eq!(s.item(id).state(), FREE);
                assert_eq!(
                    s.item(id).lru_prev.load(Relaxed),
                    prev,
                    "class {c}: back link"
                );
                prev = id;
                id = s.item(id).next.load(Relaxed);
            }
        }
        let before: Vec<_> = (0..s.class_count())
            .map(|c| s.class_snapshot(c, unix_now()))
            .collect();
        for c in 0..s.class_count() {
            s.rebuild_class(c);
        }
        let after: Vec<_> = (0..s.class_count())
            .map(|c| s.class_snapshot(c, unix_now()))
            .collect();
        for (c, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(
                (b.pages, b.used_chunks, b.bytes),
                (a.pages, a.used_chunks, a.bytes),
                "class {c}"
            );
        }
    }

    #[test]
    fn a_page_moves_and_its_items_are_rescued_into_free_chunks() {
        let s = store(8);
        let n = 20_000;
        let small = fill(&s, "a", n, 100);
        let before = pages(&s, small);
        assert!(before >= 3, "{before} pages");
        // Free every other item: the class has room for the page's items.
        for i in (0..n).step_by(2) {
            assert!(s.delete(format!("a{i:06}").as_bytes()));
        }
        let big = fill(&s, "b", 10, 4000);
        let big_before = pages(&s, big);
        assert_eq!(s.request_reassign(small as i64, big as i64), Reassign::Ok);
        assert_eq!(s.request_reassign(small as i64, big as i64), Reassign::Busy);
        assert!(s.reassign_running());
        settle(&s, &mut Automover::new(30));
        assert!(!s.reassign_running());
        assert_eq!(pages(&s, small), before - 1);
        assert_eq!(pages(&s, big), big_before + 1);
        assert_eq!(s.total(Counter::slabs_moved), 1);
        assert!(s.total(Counter::slab_reassign_rescues) > 0);
        assert_eq!(s.total(Counter::slab_reassign_evictions_nomem), 0);
        assert_eq!(held(&s, "a", n, 100), n / 2);
        assert_eq!(held(&s, "b", 10, 4000), 10);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn a_full_class_loses_the_page_items_and_the_rest_stay_whole() {
        let s = store(8);
        let n = 20_000;
        let small = fill(&s, "a", n, 100);
        let before = pages(&s, small);
        let items = s.items_and_bytes().0;
        assert_eq!(s.request_reassign(small as i64, 0), Reassign::Ok);
        settle(&s, &mut Automover::new(30));
        assert_eq!(pages(&s, small), before - 1);
        assert_eq!(s.pool_pages(), 1);
        let lost = s.total(Counter::slab_reassign_evictions_nomem);
        let per_page = s.class(small - 1).per_page.load(Relaxed) as u64;
        assert!(lost > 0 && lost <= per_page, "{lost}");
        assert_eq!(s.items_and_bytes().0, items - lost);
        assert_eq!(held(&s, "a", n, 100) as u64, items - lost);
        consistent(&s);
        // The pool's page goes to the next class that needs one.
        let big = fill(&s, "b", 10, 4000);
        assert_eq!(s.pool_pages(), 0);
        assert_eq!(pages(&s, big), 1);
        assert_eq!(held(&s, "b", 10, 4000), 10);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn reassign_answers_as_memcached() {
        let s = store(8);
        let small = fill(&s, "a", 100, 100);
        let last = s.class_count() as i64;
        assert_eq!(s.request_reassign(3, 3), Reassign::Same);
        assert_eq!(s.request_reassign(last + 1, 1), Reassign::BadClass);
        assert_eq!(s.request_reassign(1, last + 1), Reassign::BadClass);
        assert_eq!(s.request_reassign(-2, 1), Reassign::BadClass);
        // One page only: nothing to spare; no class has two: -1 finds none.
        assert_eq!(s.request_reassign(small as i64, 0), Reassign::NoSpare);
        assert_eq!(s.request_reassign(0, small as i64), Reassign::NoSpare);
        assert_eq!(s.request_reassign(-1, 0), Reassign::BadClass);
        assert!(!s.reassign_running());
    }

    #[test]
    fn a_busy_page_waits_and_then_moves() {
        let s = store(8);
        let n = 20_000;
        let small = fill(&s, "a", n, 100);
        // Hold the stripe of an item in the first page.
        let class = s.class(small - 1);
        let first = s.chunk_id(small - 1, 0, 0);
        assert_eq!(s.item(first).state(), LINKED);
        assert_ne!(class.cur_page.load(Relaxed), 0);
        let held_stripe = s.stripe_for(s.item(first).hash.load(Relaxed)).lock();
        assert_eq!(s.request_reassign(small as i64, 0), Reassign::Ok);
        let mut am = Automover::new(30);
        // Two passes over the page: the held item stays busy.
        for _ in 0..20 {
            s.mover_tick(&mut am);
        }
        assert!(s.reassign_running());
        assert!(s.total(Counter::slab_reassign_busy_items) >= 2);
        assert_eq!(s.total(Counter::slabs_moved), 0);
        // Stores and deletes go on while the page is being emptied.
        fill(&s, "x", 100, 100);
        for i in 0..50 {
            assert!(s.delete(format!("x{i:06}").as_bytes()));
        }
        drop(held_stripe);
        settle(&s, &mut am);
        assert_eq!(s.total(Counter::slabs_moved), 1);
        assert_eq!(
            (held(&s, "a", n, 100) + held(&s, "x", 100, 100)) as u64,
            s.items_and_bytes().0,
            "every item counted is readable"
        );
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn a_lower_memory_limit_gives_pages_back_to_the_pool() {
        let s = store(8);
        let n = 40_000;
        let small = fill(&s, "a", n, 100);
        let in_use = s.pages_in_use();
        assert!(in_use >= 6, "{in_use}");
        s.set_automove(1);
        assert!(s.set_memory_limit(3 << 20));
        let mut am = Automover::new(30);
        for _ in 0..200 {
            s.mover_tick(&mut am);
        }
        assert_eq!(s.pages_in_use(), 3);
        assert_eq!(pages(&s, small), 3);
        assert_eq!(s.pool_pages(), in_use - 3);
        assert_eq!(held(&s, "a", n, 100) as u64, s.items_and_bytes().0);
        // More sets evict within the three pages.
        fill(&s, "c", 1000, 100);
        assert_eq!(s.pages_in_use(), 3);
        // Raised again, the pool's pages come back into use.
        assert!(s.set_memory_limit(8 << 20));
        fill(&s, "d", 30_000, 100);
        assert!(s.pages_in_use() > 3);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn the_automover_moves_pages_from_the_oldest_class_to_one_that_evicts() {
        let s = store(8);
        s.set_automove_ratio(0.8);
        let n = 40_000;
        let small = fill(&s, "a", n, 100);
        // Class `small` was last used long ago.
        let long_ago = unix_now() - 1000;
        for page in 0..s.pages_used() {
            if s.page_class(page).load(Relaxed) as usize == small {
                for idx in 0..s.class(small - 1).per_page.load(Relaxed) {
                    s.item(s.chunk_id(small - 1, page, idx))
                        .time
                        .store(long_ago, Relaxed);
                }
            }
        }
        let small_pages = pages(&s, small);
        let mut am = Automover::new(3);
        // Level 0: nothing moves however much the big class evicts.
        s.set_automove(0);
        let mut round = 0;
        let mut evicting_rounds = |s: &Store, am: &mut Automover, rounds: usize| {
            for _ in 0..rounds {
                round += 1;
                fill(s, &format!("b{round:03}"), 300, 4000);
                for _ in 0..TICKS_PER_RUN {
                    s.mover_tick(am);
                }
            }
        };
        evicting_rounds(&s, &mut am, 8);
        assert_eq!(s.total(Counter::slabs_moved), 0);
        assert_eq!(pages(&s, small), small_pages);
        s.set_automove(1);
        evicting_rounds(&s, &mut am, 8);
        let moved = s.total(Counter::slabs_moved);
        assert!(moved >= 2, "{moved} moves");
        assert_eq!(pages(&s, small), small_pages - moved as u32);
        // Every item is whole; the small class's count is its own and the
        // large items stored in the uncarved end of its page.
        let spanned: usize = (1..=round)
            .map(|r| in_class(&s, &format!("b{r:03}"), 300, small))
            .sum();
        assert_eq!((held(&s, "a", n, 100) + spanned) as u64, {
            let big = s
                .class_for(super::super::item::item_size(10, 4000))
                .unwrap();
            s.items_and_bytes().0 - s.class(big).curr_items.load(Relaxed)
        });
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn a_class_with_no_page_takes_one_when_memory_is_full() {
        let s = store(8);
        let n = 80_000;
        let small = fill(&s, "a", n, 100);
        assert_eq!(s.pages_in_use(), s.layout.page_count);
        assert!(s.total(Counter::evictions) > 0);
        let before = pages(&s, small);
        // memcached stores it (a class with no page gets one past the
        // limit); so do we, with a page of the class whose tail is oldest.
        let big = fill(&s, "b", 1, 4000);
        assert_eq!(pages(&s, big), 1);
        assert_eq!(pages(&s, small), before - 1);
        assert_eq!(s.pages_in_use(), s.layout.page_count);
        assert_eq!(held(&s, "b", 1, 4000), 1);
        assert_eq!(held(&s, "a", n, 100) as u64, s.items_and_bytes().0 - 1);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn with_more_classes_in_use_than_pages_every_store_still_stores() {
        let s = store(4);
        let pages_total = s.layout.page_count;
        // Twice as many sizes as pages, each in a class of its own.
        let sizes: Vec<usize> = (0..2 * pages_total as usize)
            .map(|i| 1000 + 3000 * i)
            .collect();
        let classes: std::collections::HashSet<_> = sizes
            .iter()
            .map(|&n| s.class_for(super::super::item::item_size(7, n)).unwrap())
            .collect();
        assert_eq!(classes.len(), sizes.len());
        for round in 0..3 {
            for (i, &n) in sizes.iter().enumerate() {
                let key = format!("s{round}{i:05}");
                let r = s.store(StoreMode::Set, key.as_bytes(), 0, 0, &value(i, n), 0);
                assert_eq!(r, StoreResult::Stored, "round {round}, {n} bytes");
                let mut got = None;
                s.get(key.as_bytes(), None, |h| got = Some(h.data().to_vec()));
                assert_eq!(got, Some(value(i, n)));
            }
        }
        assert!(s.pages_in_use() <= pages_total);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn with_every_class_at_one_page_a_class_with_none_borrows_a_larger_ones_chunks() {
        let s = store(4);
        assert_eq!(s.layout.page_count, 4);
        // Four classes, a page each (each took one from the first).
        let lenders: Vec<usize> = [(1100, "a"), (2000, "b"), (3000, "c"), (4000, "d")]
            .iter()
            .map(|&(len, prefix)| fill(&s, prefix, 2000, len))
            .collect();
        for &c in &lenders {
            assert_eq!(pages(&s, c), 1, "class {c}");
        }
        let moved = s.total(Counter::slabs_moved);
        let evicted = s.total(Counter::evictions);
        // 900 bytes: a class of its own, with no page. It used to take the
        // only page of the class whose tail was oldest, evicting all of its
        // items; now each item takes a chunk of the next class (1100's).
        let small = s.class_for(super::super::item::item_size(7, 900)).unwrap();
        assert!(small + 1 < lenders[0], "900 and 1100 bytes share a class");
        for i in 0..10 {
            let key = format!("e{i:06}");
            let r = s.store(
                StoreMode::Set,
                key.as_bytes(),
                i,
                0,
                &value(i as usize, 900),
                0,
            );
            assert_eq!(r, StoreResult::Stored);
        }
        assert_eq!(held(&s, "e", 10, 900), 10);
        assert_eq!(s.total(Counter::slabs_moved), moved, "no page moved");
        assert_eq!(pages(&s, small + 1), 0);
        for &c in &lenders {
            assert_eq!(pages(&s, c), 1, "class {c}");
        }
        // At most one eviction each (a page's items are hundreds).
        assert!(s.total(Counter::evictions) <= evicted + 10);
        // Its count is the items that are there: its own, the ten lent to,
        // and those of larger classes stored in its page's uncarved end.
        let there: usize = [
            ("a", 2000),
            ("b", 2000),
            ("c", 2000),
            ("d", 2000),
            ("e", 10),
        ]
        .iter()
        .map(|&(prefix, n)| in_class(&s, prefix, n, lenders[0]))
        .sum();
        assert!(in_class(&s, "e", 10, lenders[0]) == 10);
        assert_eq!(
            s.class(lenders[0] - 1).curr_items.load(Relaxed) as usize,
            there
        );
        // A class with no larger one with pages still takes a page: 9000
        // bytes (past 4000's class) takes the oldest class's only page.
        fill(&s, "f", 1, 9000);
        assert_eq!(s.total(Counter::slabs_moved), moved + 1);
        assert_eq!(held(&s, "f", 1, 9000), 1);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn a_full_class_takes_free_chunks_of_a_little_larger_one_before_it_evicts() {
        let s = store(4);
        // 2,000 items of 1,100 bytes: three pages, the third a quarter used.
        let larger = fill(&s, "a", 2000, 1100);
        assert_eq!(pages(&s, larger), 3);
        // 1,000-byte items: the last page (923), then the larger class's
        // room (553 chunks).
        let smaller = fill(&s, "b", 1400, 1000);
        assert!(smaller < larger);
        assert_eq!(pages(&s, smaller), 1);
        assert_eq!(s.pages_in_use(), s.layout.page_count);
        let per_page = s.class(smaller - 1).per_page.load(Relaxed) as usize;
        assert!(1400 > per_page, "the class's own page holds {per_page}");
        assert_eq!(
            s.total(Counter::evictions),
            0,
            "room was left: nothing evicted"
        );
        assert_eq!(held(&s, "a", 2000, 1100), 2000);
        assert_eq!(held(&s, "b", 1400, 1000), 1400);
        // Once the room is gone, the class evicts its own items again.
        fill(&s, "c", 2000, 1000);
        assert!(s.total(Counter::evictions) > 0);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn a_full_class_stores_in_the_uncarved_end_of_a_smaller_class_page_before_it_evicts() {
        let s = store(4);
        // 50 small items: a page of ~6,500 chunks, nearly all uncarved.
        let small = fill(&s, "s", 50, 100);
        let chunk = s.class(small - 1).chunk_size.load(Relaxed) as usize;
        // 8 KB items fill the other three pages, then 100 more.
        let per_page = (1 << 20) / s.layout.class_sizes[s.class_for(8060).unwrap()] as usize;
        let n = 3 * per_page + 100;
        let big = fill(&s, "b", n, 8000);
        assert_eq!(pages(&s, big), 3);
        assert_eq!(pages(&s, small), 1);
        assert_eq!(
            s.total(Counter::evictions),
            0,
            "room was left: nothing evicted"
        );
        assert_eq!(held(&s, "b", n, 8000), n);
        assert_eq!(held(&s, "s", 50, 100), 50);
        let k = (48 + 7 + 8000usize).div_ceil(chunk) as u64;
        let snap = s.class_snapshot(small - 1, unix_now());
        assert_eq!(snap.used_chunks, 50 + 100 * k);
        consistent(&s);
        // Deleted, a spanning item's chunks are the small class's free chunks.
        for i in 0..10 {
            assert!(s.delete(format!("b{:06}", n - 1 - i).as_bytes()));
        }
        let after = s.class_snapshot(small - 1, unix_now());
        assert_eq!(after.used_chunks, 50 + 90 * k);
        consistent(&s);
        s.check_and_rebuild().unwrap();
        assert_eq!(held(&s, "b", n, 8000), n - 10);
        // Once the room is gone the class evicts, and what is held is whole.
        fill(&s, "c", 1000, 8000);
        assert!(s.total(Counter::evictions) > 0);
        held(&s, "b", n, 8000);
        held(&s, "c", 1000, 8000);
        assert_eq!(held(&s, "s", 50, 100), 50);
        consistent(&s);
        s.check_and_rebuild().unwrap();
        // The small class's only page goes to the pool, a slice at a time:
        // its spanning items are stepped over between slices and evicted
        // with the rest, and the lists stay right.
        give_last_page(&s, small);
        assert_eq!(held(&s, "s", 50, 100), 0);
        held(&s, "b", n, 8000);
        held(&s, "c", 1000, 8000);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    /// Walks of a page step over the bodies of items spanning chunks, even
    /// where the body reads as a LINKED header (every byte 1): the move of
    /// the page, a slice of chunks a tick, the rebuild, the recovery.
    #[test]
    fn walks_step_over_spanning_items_whose_bytes_look_like_headers() {
        let s = store(4);
        let small = fill(&s, "s", 10, 100);
        let per_page = (1 << 20) / s.layout.class_sizes[s.class_for(8055).unwrap()] as usize;
        let n = 3 * per_page + 60;
        let ones = vec![1u8; 8000];
        for i in 0..n {
            let key = format!("o{i:06}");
            assert_eq!(
                s.store(StoreMode::Set, key.as_bytes(), 0, 0, &ones, 0),
                StoreResult::Stored
            );
        }
        assert_eq!(s.total(Counter::evictions), 0);
        let whole = |s: &Store| {
            (0..n)
                .filter(|i| {
                    let mut ok = None;
                    s.get(format!("o{i:06}").as_bytes(), None, |h| {
                        ok = Some(h.data() == ones)
                    });
                    assert_ne!(ok, Some(false), "o{i:06} has another value");
                    ok.is_some()
                })
                .count()
        };
        assert_eq!(whole(&s), n);
        consistent(&s);
        s.check_and_rebuild().unwrap();
        assert_eq!(whole(&s), n);
        give_last_page(&s, small);
        assert_eq!(whole(&s), n - 60);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }

    #[test]
    fn without_evictions_a_full_class_stores_as_soon_as_a_larger_one_frees_a_chunk() {
        let s = super::super::tests::store(4, false);
        let set = |key: &str, len: usize| {
            s.store(StoreMode::Set, key.as_bytes(), 0, 0, &value(0, len), 0)
        };
        // Class S: one full page of 1,000-byte items.
        let small = s.class_for(super::super::item::item_size(7, 1000)).unwrap();
        let per_page = s.class(small).per_page.load(Relaxed) as usize;
        for i in 0..per_page {
            assert_eq!(set(&format!("s{i:06}"), 1000), StoreResult::Stored);
        }
        // Class L (1,100 bytes): the other pages, until memory is full.
        let mut n = 0;
        while set(&format!("l{n:06}"), 1100) == StoreResult::Stored {
            n += 1;
        }
        assert_eq!(set("s999999", 1000), StoreResult::NoMemory);
        // A chunk of L frees: the next store into S takes it, within the
        // same second as the failed one (no hint holds it back under -M).
        assert!(s.delete(b"l000000"));
        assert_eq!(set("s999999", 1000), StoreResult::Stored);
        assert_eq!(set("s999998", 1000), StoreResult::NoMemory);
        consistent(&s);
    }

    /// `-m 16 -I 4m`: items up to 4 MiB, chained over pages.
    fn store_4m_items() -> Store {
        let mut s = Store::create(super::super::StoreParams {
            layout: super::super::segment::LayoutParams {
                memory_limit: 16 << 20,
                item_size_max: 4 << 20,
                workers: 2,
                ..Default::default()
            },
            evictions: true,
            cas_enabled: true,
        })
        .unwrap();
        s.act_as_slot(0);
        s
    }

    /// A page emptied at once for a class with no page (`empty_page`) that
    /// holds a piece of an item chained over pages: the item goes whole, and
    /// the piece's chunk stays off the free list, its page in the pool.
    #[test]
    fn a_page_emptied_at_once_takes_a_chained_item_whole_and_lists_none_of_it() {
        let s = store_4m_items();
        let top = s.class_count() - 1;
        let set = |k: &[u8], n: usize| s.store(StoreMode::Set, k, 0, 0, &vec![b'x'; n], 0);
        // Pages 0 and 1 free, page 1 listed first: the chained item's head
        // takes page 1 and its first piece page 0, the first page a move
        // empties.
        assert_eq!(set(b"x0", 600_000), StoreResult::Stored);
        assert_eq!(set(b"x1", 600_000), StoreResult::Stored);
        assert!(s.delete(b"x0") && s.delete(b"x1"));
        assert_eq!(set(b"a", 3 << 20), StoreResult::Stored);
        let piece = s.chunk_id(top, 0, 0);
        assert_eq!(s.item(piece).state(), super::super::item::PIECE);
        {
            let _g = s.lock_class(top);
            assert_eq!(s.empty_page(top, unix_now(), false, true), Ok(0));
        }
        let mut got = None;
        s.get(b"a", None, |h| got = Some(h.data().len()));
        assert_eq!(got, None);
        assert_eq!(s.page_class(0).load(Relaxed), POOL);
        let mut id = s.class(top).free_head.load(Relaxed);
        while id != 0 {
            let page = ((id as u64 - 1) * 8 / s.layout.page_size) as u32;
            assert_eq!(
                s.page_class(page).load(Relaxed) as usize,
                top + 1,
                "chunk {id} listed"
            );
            id = s.item(id).next.load(Relaxed);
        }
        consistent(&s);
        assert_eq!(s.class_snapshot(top, unix_now()).used_chunks, 0);
    }

    /// Memory full of items chained over pages, then small items: the top
    /// class is the only one that could lend, so the new class takes one
    /// of its pages rather than a megabyte chunk an item.
    #[test]
    fn after_large_items_a_small_size_takes_a_page_of_the_top_class() {
        let s = store_4m_items();
        let top = s.class_count() - 1;
        for i in 0..8 {
            let r = s.store(
                StoreMode::Set,
                format!("big{i}").as_bytes(),
                0,
                0,
                &vec![b'x'; 3 << 20],
                0,
            );
            assert_eq!(r, StoreResult::Stored);
        }
        assert_eq!(pages(&s, top + 1), 16);
        let small = fill(&s, "s", 100, 100);
        assert_eq!(pages(&s, small), 1);
        assert_eq!(in_class(&s, "s", 100, small), 100);
        assert_eq!(held(&s, "s", 100, 100), 100);
        consistent(&s);
    }

    #[test]
    fn a_move_left_half_done_by_a_dead_mover_is_undone_and_started_again() {
        let s = store(8);
        let n = 20_000;
        let small = fill(&s, "a", n, 100);
        for i in (0..n).step_by(2) {
            assert!(s.delete(format!("a{i:06}").as_bytes()));
        }
        assert_eq!(s.request_reassign(small as i64, 0), Reassign::Ok);
        let mut dead = Automover::new(30);
        s.mover_tick(&mut dead);
        let class = s.class(small - 1);
        let page = class.draining.load(Relaxed);
        assert_ne!(page, NONE, "the first slice started the move");
        drop(dead);
        // Items freed in the page meanwhile stay off the free list...
        fill(&s, "b", 10, 100);
        // ...until the next mover undoes the half-done move and starts over.
        let mut am = Automover::new(30);
        s.mover_tick(&mut am);
        settle(&s, &mut am);
        assert_eq!(class.draining.load(Relaxed), NONE);
        assert_eq!(s.total(Counter::slabs_moved), 1);
        assert_eq!(s.total(Counter::slab_reassign_evictions_nomem), 0);
        assert_eq!(held(&s, "a", n, 100), n / 2);
        consistent(&s);
        s.check_and_rebuild().unwrap();
    }
}
