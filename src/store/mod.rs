//! The hashtable in the shared segment: items, striped robust locks, slab
//! memory with LRU eviction. All of the crate's shared-memory `unsafe` lives here.
//!
//! Locking rules (they make deadlock impossible and crashes survivable):
//! - a hash chain is read or changed only under its stripe lock;
//! - a slab class's lists are changed only under its class lock;
//! - order: stripe, then class. A class-lock holder only *tries* stripe locks
//!   (eviction), so it never waits on a stripe;
//! - values are copied out while the stripe lock is held, so no reference to
//!   an item outlives the lock (no refcounts that a dead worker could leak);
//! - an item is written aside (INFLIGHT) and published with one store of its id.

mod chain;
pub mod conns;
pub mod item;
pub mod lock;
pub mod mover;
pub mod prefix;
mod recovery;
pub mod segment;
pub mod sizes;
pub mod slab;
pub mod stats;
mod sweep;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed, Ordering::Release};

use crate::protocol::StoreMode;
use conns::{CONNS_PER_WORKER, ConnEntry};
use item::{
    ACTIVE, FETCHED, ITEM_HEADER, Item, KEY_BINARY, LINKED, STALE, TOKEN_SENT, WORD_FLAGS,
    item_size,
};
use lock::RobustMutex;
use prefix::{PREFIX_ENTRIES, PrefixEntry};
use segment::{Found, Header, Inherited, Layout, LayoutParams, Segment, WorkerSlot};
use slab::{AllocError, SlabClass};
use stats::{ClassCounter, ClassCounters, Counter, Counters};

/// "No page" in a class's `cur_page`.
pub(crate) const NONE: u32 = u32::MAX;
/// memcached's REALTIME_MAXDELTA: larger exptimes are absolute unix times.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;
/// memcached bumps an item in the LRU at most this often (ITEM_UPDATE_INTERVAL).
const UPDATE_INTERVAL: u32 = 60;

/// What the store is built from.
#[derive(Debug, Clone, Copy)]
pub struct StoreParams {
    pub layout: LayoutParams,
    /// `-M` turns evictions off.
    pub evictions: bool,
    /// `-C` turns cas off (every cas-unique is 0).
    pub cas_enabled: bool,
}

/// How [`Store::open_file`] found the memory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Missing or empty: a new cache.
    New,
    /// A previous instance's cache, checked: `items` are served again;
    /// `settled` chunks had been left half-done by a crash (now linked or free).
    Restored {
        clean: bool,
        items: u64,
        settled: u64,
    },
    /// A previous instance's cache that could not be trusted: empty now.
    Discarded(String),
}

/// Outcome of a storage command, one per memcached reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    Stored,
    NotStored,
    Exists,
    NotFound,
    /// The item would be larger than the largest chunk.
    TooLarge,
    /// Nothing could be freed for it (`-M`, or all candidates busy).
    NoMemory,
}

/// Outcome of a delete that may compare a cas-unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteResult {
    Deleted,
    NotFound,
    /// The item is there with another cas-unique.
    Exists,
}

/// Outcome of incr/decr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithResult {
    Value(u64),
    NotFound,
    NonNumeric,
    NoMemory,
}

/// A hit, borrowed from the segment while the stripe lock is held.
pub struct Hit<'a> {
    pub flags: u32,
    pub cas: u64,
    store: &'a Store,
    id: u32,
}

impl<'a> Hit<'a> {
    /// The value: in place, or copied out of the pages of an item chained
    /// over several (so only when asked for).
    pub fn data(&self) -> Cow<'a, [u8]> {
        self.store.value(self.id)
    }
}

/// One process's view of the segment.
pub struct Store {
    seg: Segment,
    layout: Layout,
    evictions: bool,
    cas_enabled: bool,
    /// This process's worker slot (usize::MAX in the supervisor).
    slot_index: usize,
    arena: *mut u8,
    arena_len: u64,
    slots: &'static [WorkerSlot],
    stripes: &'static [RobustMutex],
    buckets: &'static [AtomicU32],
    classes: &'static [SlabClass],
    /// Worker-major: slot `w`'s counters for class `c` at `w * classes + c`.
    class_stats: &'static [ClassCounters],
    /// Worker-major: slot `w`'s entries at `w * CONNS_PER_WORKER ..`.
    conns: &'static [ConnEntry],
    /// PREFIX_ENTRIES entries, then the overflow entry.
    prefixes: &'static [PrefixEntry],
    /// `stats sizes` counters, one per 32 bytes of (memcached's) item size.
    sizes: &'static [AtomicU32],
    page_table: &'static [AtomicU8],
    /// This process's own, per class: the unix second until which a full
    /// class does not look for room in larger classes again, because the
    /// last look found none (`Store::alloc`).
    no_spare_until: Box<[AtomicU32]>,
    /// This process's place in its sweep and requested crawl (`sweep.rs`).
    sweep: sweep::Cursors,
}

impl Store {
    /// Create the segment and lay it out (supervisor, before any fork).
    pub fn create(p: StoreParams) -> Result<Store, String> {
        let layout = Layout::new(p.layout)?;
        let seg = Segment::create(layout, p.cas_enabled)?;
        Ok(Store::on(seg, p))
    }

    /// `-e`: the segment is the memory file at `path`. A file of a previous
    /// instance with this layout is attached: its locks and per-process state
    /// made new, every hash chain and chunk checked, the slab lists rebuilt;
    /// if anything fails the check, the cache starts empty and
    /// [`Opened::Discarded`] says why. A layout mismatch is an error.
    /// Supervisor, before any fork.
    pub fn open_file(p: StoreParams, path: &std::path::Path) -> Result<(Store, Opened), String> {
        let layout = Layout::new(p.layout)?;
        let (seg, found) = Segment::open_file(path, layout, p.cas_enabled)?;
        let clean = match found {
            Found::New => return Ok((Store::on(seg, p), Opened::New)),
            Found::Discarded(why) => return Ok((Store::on(seg, p), Opened::Discarded(why))),
            Found::Previous { clean } => clean,
        };
        seg.reset_process_state();
        seg.header()
            .clean
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let store = Store::on(seg, p);
        let checked = store.check_and_rebuild();
        // As memcached: the restored items count as stored (total_items).
        if let Ok((items, _)) = checked {
            store.slots[0].counters.add(Counter::total_items, items);
        }
        match checked {
            Ok((items, settled)) => Ok((
                store,
                Opened::Restored {
                    clean,
                    items,
                    settled,
                },
            )),
            Err(why) => {
                store.seg.wipe(p.cas_enabled);
                let why = if clean {
                    why
                } else {
                    format!("{why} (it was not stopped cleanly)")
                };
                Ok((store, Opened::Discarded(why)))
            }
        }
    }

    /// After an in-place upgrade: the segment the previous image served, as
    /// it is (its workers still run on it).
    pub fn adopt(p: StoreParams, inherited: Inherited) -> Result<Store, String> {
        let layout = Layout::new(p.layout)?;
        let seg = Segment::adopt(layout, p.cas_enabled, inherited)?;
        Ok(Store::on(seg, p))
    }

    /// An upgrade's preflight (in the new binary): would [`Store::adopt`]
    /// accept the running segment at `path` with these parameters?
    pub fn check_running(p: StoreParams, path: &std::path::Path) -> Result<(), String> {
        segment::check_running(path, &Layout::new(p.layout)?, p.cas_enabled)
    }

    /// A clean stop, with every worker gone: the next start may trust the
    /// segment (`-e`).
    pub fn mark_clean(&self) {
        self.seg.mark_clean();
    }

    /// What an upgraded image needs to map this segment.
    pub fn handover(&self) -> segment::Handover {
        self.seg.handover()
    }

    /// The segment is a memory file that outlives the process.
    pub fn is_persistent(&self) -> bool {
        self.seg.is_persistent()
    }

    fn on(seg: Segment, p: StoreParams) -> Store {
        let layout = seg.layout.clone();
        let base = seg.base();
        let l = &layout;
        // SAFETY: the segment (made by `Segment::create`, or a memory file
        // checked against this very layout) maps `l.total` bytes, with each of
        // these regions at the offsets `Layout` computed (aligned, in bounds).
        // The mapping stays for the life of the process: `Store` owns `seg` and
        // is never dropped before exit, so the 'static borrows never dangle.
        // Every element type is made of atomics or a process-shared mutex, so
        // shared references are sound whatever other processes do.
        let classes_len = l.class_sizes.len();
        let slots_len = l.worker_slots as usize;
        let (slots, stripes, buckets, classes, page_table) = unsafe {
            (
                std::slice::from_raw_parts(
                    base.add(l.off_slots as usize) as *const WorkerSlot,
                    l.worker_slots as usize,
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_stripes as usize) as *const RobustMutex,
                    l.stripes as usize,
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_buckets as usize) as *const AtomicU32,
                    1usize << l.bucket_bits,
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_classes as usize) as *const SlabClass,
                    l.class_sizes.len(),
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_pages as usize) as *const AtomicU8,
                    l.page_count as usize,
                ),
            )
        };
        // SAFETY: as above: these regions are laid out by `Layout::new`, zeroed
        // (all-zero is a valid value of each: counters at 0, free entries),
        // and hold only atomics.
        let (class_stats, conns, prefixes, sizes) = unsafe {
            (
                std::slice::from_raw_parts(
                    base.add(l.off_class_stats as usize) as *const ClassCounters,
                    slots_len * classes_len,
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_conns as usize) as *const ConnEntry,
                    slots_len * CONNS_PER_WORKER,
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_prefixes as usize) as *const PrefixEntry,
                    PREFIX_ENTRIES + 1,
                ),
                std::slice::from_raw_parts(
                    base.add(l.off_sizes as usize) as *const AtomicU32,
                    l.size_buckets as usize,
                ),
            )
        };
        // SAFETY: off_arena is inside the mapping (see Layout::new).
        let arena = unsafe { base.add(l.off_arena as usize) };
        let arena_len = l.page_count as u64 * l.page_size;
        Store {
            seg,
            layout,
            evictions: p.evictions,
            cas_enabled: p.cas_enabled,
            slot_index: usize::MAX,
            arena,
            arena_len,
            slots,
            stripes,
            buckets,
            classes,
            class_stats,
            conns,
            prefixes,
            sizes,
            page_table,
            no_spare_until: (0..classes.len()).map(|_| AtomicU32::new(0)).collect(),
            sweep: sweep::Cursors::default(),
        }
    }

    /// In a freshly forked worker: never remove the segment on exit, and act
    /// for `slot` from now on.
    pub fn become_worker(&mut self, slot: usize) {
        self.seg.disown();
        self.act_as_slot(slot);
    }

    /// Count and allocate as worker `slot` (tests use this without forking).
    pub fn act_as_slot(&mut self, slot: usize) {
        assert!(slot < self.slots.len(), "worker slot {slot} out of range");
        self.slot_index = slot;
    }

    pub fn segment_path(&self) -> String {
        self.seg.path()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn header(&self) -> &Header {
        self.seg.header()
    }

    pub fn slot_at(&self, i: usize) -> &WorkerSlot {
        &self.slots[i]
    }

    pub fn slots(&self) -> &[WorkerSlot] {
        self.slots
    }

    /// This worker's slot.
    pub fn slot(&self) -> &WorkerSlot {
        &self.slots[self.slot_index]
    }

    /// This worker's counters.
    pub fn counters(&self) -> &Counters {
        &self.slot().counters
    }

    /// A counter summed over all workers.
    pub fn total(&self, c: Counter) -> u64 {
        self.slots.iter().map(|s| s.counters.get(c)).sum()
    }

    /// Count `c` for slab class `class` (this worker's counters; nothing in
    /// the supervisor).
    #[inline]
    fn count_class(&self, class: usize, c: ClassCounter) {
        self.count_class_n(class, c, 1);
    }

    fn count_class_n(&self, class: usize, c: ClassCounter, n: u64) {
        if self.slot_index < self.slots.len()
            && let Some(counters) = self
                .class_stats
                .get(self.slot_index * self.classes.len() + class)
        {
            counters.add(c, n);
        }
    }

    /// A per-class counter summed over all workers.
    pub fn class_total(&self, class: usize, c: ClassCounter) -> u64 {
        let n = self.classes.len();
        (0..self.slots.len())
            .map(|w| self.class_stats[w * n + class].get(c))
            .sum()
    }

    /// `stats reset`: every worker's counters (not the gauges), the per-class
    /// counters, and the prefix table.
    pub fn reset_stats(&self) {
        for slot in self.slots {
            slot.counters.reset();
        }
        for c in self.class_stats {
            c.reset();
        }
        for class in self.classes {
            class.evicted_time.store(0, Relaxed);
        }
        self.clear_prefixes();
    }

    /// Slot `slot`'s connection table.
    pub fn conn_table(&self, slot: usize) -> &[ConnEntry] {
        &self.conns[slot * CONNS_PER_WORKER..(slot + 1) * CONNS_PER_WORKER]
    }

    /// A `set` whose data block was refused after its line was read (bad
    /// data chunk): memcached counts it in its item's slab class.
    pub fn count_refused_set(&self, key_len: usize, nbytes: usize) {
        if let Some(class) = self.class_for(item_size(key_len, nbytes)) {
            self.count_class(class, ClassCounter::cmd_set);
        }
    }

    // ---- commands ----

    /// Look `key` up; on a hit call `visit` with the item while it is locked.
    /// `touch` (gat) sets a new exptime first.
    pub fn get(&self, key: &[u8], touch: Option<i64>, visit: impl FnOnce(Hit<'_>)) -> bool {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let Some((_, id)) = self.lookup(hash, key, now) else {
            return false;
        };
        let it = self.item(id);
        if let Some(exptime) = touch {
            it.exptime
                .store(expiry(exptime, now, self.started()), Relaxed);
        }
        let hit = if touch.is_some() {
            ClassCounter::touch_hits
        } else {
            ClassCounter::get_hits
        };
        self.count_class(it.class.load(Relaxed) as usize, hit);
        mark_read(it);
        visit(Hit {
            flags: it.flags.load(Relaxed),
            cas: it.cas.load(Relaxed),
            store: self,
            id,
        });
        self.bump_if_due(id, now);
        true
    }

    /// set/add/replace/append/prepend/cas.
    pub fn store(
        &self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        exptime: i64,
        data: &[u8],
        cas_unique: u64,
    ) -> StoreResult {
        self.store_cas(mode, key, flags, exptime, data, cas_unique)
            .0
    }

    /// [`Store::store`], also giving the stored item's cas-unique (0 when
    /// nothing was stored): the binary and meta protocols return it.
    pub fn store_cas(
        &self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        exptime: i64,
        data: &[u8],
        cas_unique: u64,
    ) -> (StoreResult, u64) {
        let now = unix_now();
        if let Some(class) = self.class_for(item_size(key.len(), data.len())) {
            self.count_class(class, ClassCounter::cmd_set);
            self.page_for_empty_class(class);
        }
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let found = self.lookup(hash, key, now);
        let old = found.map(|(_, id)| self.item(id));
        match (mode, old) {
            (StoreMode::Add, Some(_)) => {
                self.bump_if_due(found.unwrap().1, now);
                return (StoreResult::NotStored, 0);
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                return (StoreResult::NotStored, 0);
            }
            (StoreMode::Cas, None) => return (StoreResult::NotFound, 0),
            // A binary append/prepend with a cas: memcached compares it.
            (StoreMode::Append | StoreMode::Prepend, Some(it))
                if cas_unique != 0 && it.cas.load(Relaxed) != cas_unique =>
            {
                return (StoreResult::Exists, 0);
            }
            // With -C memcached answers EXISTS to every cas of an item.
            (StoreMode::Cas, Some(it))
                if !self.cas_enabled || it.cas.load(Relaxed) != cas_unique =>
            {
                self.count_class(it.class.load(Relaxed) as usize, ClassCounter::cas_badval);
                return (StoreResult::Exists, 0);
            }
            (StoreMode::Cas, Some(it)) => {
                self.count_class(it.class.load(Relaxed) as usize, ClassCounter::cas_hits);
            }
            _ => {}
        }
        let exptime = expiry(exptime, now, self.started());
        // memcached drops a set's old value rather than keep serving it when
        // the new one finds no room.
        let drop_old = mode == StoreMode::Set;
        self.write_stored(
            mode, key, hash, found, flags, exptime, data, now, drop_old, 0,
        )
    }

    /// The end of every store once its mode's checks passed (stripe lock
    /// held): append/prepend join the old value and keep its flags and
    /// exptime, the others write `flags` and `exptime` (absolute); publish in
    /// place of `found` with the `word` flag `bits`. When nothing can be
    /// allocated, `drop_old` unlinks the old item.
    #[allow(clippy::too_many_arguments)]
    fn write_stored(
        &self,
        mode: StoreMode,
        key: &[u8],
        hash: u32,
        found: Option<(&AtomicU32, u32)>,
        flags: u32,
        exptime: u32,
        data: &[u8],
        now: u32,
        drop_old: bool,
        bits: u32,
    ) -> (StoreResult, u64) {
        let concat = matches!(mode, StoreMode::Append | StoreMode::Prepend);
        let (flags, exptime, old_value) = match (concat, found) {
            (true, Some((_, id))) => {
                let it = self.item(id);
                (
                    it.flags.load(Relaxed),
                    it.exptime.load(Relaxed),
                    self.value(id),
                )
            }
            _ => (flags, exptime, Cow::Borrowed(&[][..])),
        };
        let new = match self.alloc_item(key, hash, data.len() + old_value.len(), now) {
            Ok(id) => id,
            Err(e) => {
                if drop_old && let Some((link, id)) = found {
                    self.unlink_and_free(link, id);
                }
                let result = match (concat, e) {
                    (true, _) => StoreResult::NotStored,
                    (false, StoreResult::TooLarge) => StoreResult::TooLarge,
                    _ => StoreResult::NoMemory,
                };
                return (result, 0);
            }
        };
        let old_value = &old_value[..];
        let (first, second) = if mode == StoreMode::Prepend {
            (data, old_value)
        } else {
            (old_value, data)
        };
        self.fill_item(new, key, flags, exptime, &[first, second]);
        let cas = self.item(new).cas.load(Relaxed);
        self.publish_with(hash, new, found, true, bits);
        (StoreResult::Stored, cas)
    }

    /// delete: true if the key was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.unlink_key(key, 0, true) == DeleteResult::Deleted
    }

    /// delete only if the item's cas-unique is `cas` (0 = any), as the binary
    /// protocol's delete with a cas and meta's `md ... C<cas>`.
    pub fn delete_cas(&self, key: &[u8], cas: u64) -> DeleteResult {
        self.unlink_key(key, cas, true)
    }

    /// Drop `key`'s item, if any, without counting a delete (memcached does
    /// this to the old value of a `set` refused as too large).
    pub fn remove(&self, key: &[u8]) {
        self.unlink_key(key, 0, false);
    }

    /// Unlink and free `key`'s item if its cas-unique is `cas` (0 = any);
    /// `counted`: a delete, for the class's `delete_hits`.
    fn unlink_key(&self, key: &[u8], cas: u64, counted: bool) -> DeleteResult {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        match self.lookup(hash, key, now) {
            Some((_, id)) if cas != 0 && self.item(id).cas.load(Relaxed) != cas => {
                DeleteResult::Exists
            }
            Some((link, id)) => {
                if counted {
                    let class = self.item(id).class.load(Relaxed) as usize;
                    self.count_class(class, ClassCounter::delete_hits);
                }
                self.unlink_and_free(link, id);
                DeleteResult::Deleted
            }
            None => DeleteResult::NotFound,
        }
    }

    /// touch: set a new exptime; true if the key was there.
    pub fn touch(&self, key: &[u8], exptime: i64) -> bool {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        match self.lookup(hash, key, now) {
            Some((_, id)) => {
                let it = self.item(id);
                self.count_class(it.class.load(Relaxed) as usize, ClassCounter::touch_hits);
                it.exptime
                    .store(expiry(exptime, now, self.started()), Relaxed);
                self.bump_if_due(id, now);
                true
            }
            None => false,
        }
    }

    /// incr/decr as memcached: unsigned 64-bit, incr wraps, decr stops at 0; a
    /// result no longer than the old value is space-padded to its length.
    pub fn arith(&self, key: &[u8], incr: bool, delta: u64) -> ArithResult {
        self.arith_cas(key, incr, delta).0
    }

    /// [`Store::arith`], also giving the new item's cas-unique (0 unless a
    /// value was stored).
    pub fn arith_cas(&self, key: &[u8], incr: bool, delta: u64) -> (ArithResult, u64) {
        self.arith_if_cas(key, incr, delta, 0)
            .expect("no cas to compare")
    }

    /// [`Store::arith_cas`] only if the item's cas-unique is `expected` (0 =
    /// any), as the binary protocol's incr/decr with a cas: `None` when it
    /// differs (memcached checks it after an empty value, before the number).
    pub fn arith_if_cas(
        &self,
        key: &[u8],
        incr: bool,
        delta: u64,
        expected: u64,
    ) -> Option<(ArithResult, u64)> {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let Some(found) = self.lookup(hash, key, now) else {
            return Some((ArithResult::NotFound, 0));
        };
        // memcached: too large to be a number (and not worth copying out).
        if self.memcached_chunks(self.item(found.1)) {
            return Some((ArithResult::NonNumeric, 0));
        }
        let old = self.value(found.1);
        if old.is_empty() {
            return Some((ArithResult::NonNumeric, 0));
        }
        if expected != 0 && self.item(found.1).cas.load(Relaxed) != expected {
            return None;
        }
        let Some(value) = parse_counter(&old) else {
            return Some((ArithResult::NonNumeric, 0));
        };
        Some(
            match self.apply_delta(key, hash, found, value, incr, delta, now, false) {
                Ok((value, new)) => (ArithResult::Value(value), self.item(new).cas.load(Relaxed)),
                Err(e) => (e, 0),
            },
        )
    }

    /// The rest of incr/decr once the old `value` is read (stripe lock
    /// held): store the new number as a new item and publish it in place of
    /// `found`; gives the new value and item. `keep_flags`: a result that
    /// fits keeps the old item's `word` flags, as memcached's in-place
    /// rewrite does (meta commands see them).
    #[allow(clippy::too_many_arguments)]
    fn apply_delta(
        &self,
        key: &[u8],
        hash: u32,
        found: (&AtomicU32, u32),
        value: u64,
        incr: bool,
        delta: u64,
        now: u32,
        keep_flags: bool,
    ) -> Result<(u64, u32), ArithResult> {
        let (link, id) = found;
        let old = self.value(id);
        let value = if incr {
            value.wrapping_add(delta)
        } else {
            value.saturating_sub(delta)
        };
        let mut digits = [b' '; 20];
        let n = write_decimal(&mut digits, value);
        let len = if n <= old.len() { old.len() } else { n };
        let mut padded = [b' '; 24];
        let mut buf: Vec<u8>;
        let bytes: &[u8] = if len <= padded.len() {
            padded[..n].copy_from_slice(&digits[..n]);
            &padded[..len]
        } else {
            buf = vec![b' '; len];
            buf[..n].copy_from_slice(&digits[..n]);
            &buf
        };
        let it = self.item(id);
        let (flags, exptime) = (it.flags.load(Relaxed), it.exptime.load(Relaxed));
        // memcached counts the hit before it finds room for the result.
        self.count_class(
            it.class.load(Relaxed) as usize,
            if incr {
                ClassCounter::incr_hits
            } else {
                ClassCounter::decr_hits
            },
        );
        let bits = if keep_flags && n <= old.len() {
            it.word.load(Relaxed) & WORD_FLAGS
        } else {
            0
        };
        let new = match self.alloc_item(key, hash, bytes.len(), now) {
            Ok(new) => new,
            Err(_) => return Err(ArithResult::NoMemory),
        };
        self.fill_item(new, key, flags, exptime, &[bytes]);
        // memcached rewrites a number that still fits in place: no new item
        // for total_items.
        self.publish_with(hash, new, Some((link, id)), n > old.len(), bits);
        Ok((value, new))
    }

    /// flush_all [delay], exactly as memcached computes its marks.
    pub fn flush_all(&self, delay: i64) {
        let now = unix_now();
        let new_oldest = if delay > 0 {
            expiry(delay, now, self.started())
        } else {
            now
        };
        let h = self.header();
        if self.cas_enabled {
            let oldest_live = new_oldest.saturating_sub(1);
            h.oldest_live.store(oldest_live, Relaxed);
            if oldest_live <= now {
                h.oldest_cas.store(self.next_cas(), Relaxed);
            }
        } else {
            h.oldest_live.store(new_oldest, Relaxed);
        }
    }

    /// `cache_memlimit`: from now on slab classes take new pages only while
    /// the pages in use stay within `bytes`. It cannot grow past the arena
    /// (`-m`): false, and nothing changes), and pages already taken are not
    /// given back (no rebalancer).
    pub fn set_memory_limit(&self, bytes: u64) -> bool {
        let arena = self.layout.page_count as u64 * self.layout.page_size;
        if bytes > arena {
            return false;
        }
        let limit = if bytes == arena { 0 } else { bytes };
        self.header().memory_limit.store(limit, Relaxed);
        true
    }

    /// The memory limit now: `cache_memlimit`'s, or `None` for `-m`'s.
    pub fn memory_limit(&self) -> Option<u64> {
        match self.header().memory_limit.load(Relaxed) {
            0 => None,
            bytes => Some(bytes),
        }
    }

    /// Pages the slab classes may hold in all.
    fn page_limit(&self) -> u32 {
        match self.memory_limit() {
            None => self.layout.page_count,
            Some(bytes) => {
                ((bytes / self.layout.page_size) as u32).clamp(1, self.layout.page_count)
            }
        }
    }

    /// Items held and their bytes, over all classes.
    pub fn items_and_bytes(&self) -> (u64, u64) {
        self.classes.iter().fold((0, 0), |(n, b), c| {
            (n + c.curr_items.load(Relaxed), b + c.bytes.load(Relaxed))
        })
    }

    // ---- internals ----

    fn started(&self) -> u32 {
        self.header().started.load(Relaxed) as u32
    }

    /// Whether memcached would store `it` chunked (larger than its
    /// `slab_chunk_max`, 512 KiB, by its own size formula), which makes it
    /// answer incr/decr non-numeric whatever the value.
    fn memcached_chunks(&self, it: &Item) -> bool {
        let size = sizes::memcached_item_size(
            it.nkey.load(Relaxed) as usize,
            it.nbytes.load(Relaxed) as usize,
            it.flags.load(Relaxed),
            self.cas_enabled,
        );
        size > MEMCACHED_CHUNK_MAX
    }

    fn flush_marks(&self) -> (u32, u64) {
        let h = self.header();
        (h.oldest_live.load(Relaxed), h.oldest_cas.load(Relaxed))
    }

    fn next_cas(&self) -> u64 {
        self.header().cas.fetch_add(1, Relaxed) + 1
    }

    /// An INFLIGHT chunk big enough for this item.
    fn alloc_item(
        &self,
        key: &[u8],
        hash: u32,
        nbytes: usize,
        now: u32,
    ) -> Result<u32, StoreResult> {
        let size = item_size(key.len(), nbytes);
        let class = self.class_for(size).ok_or(StoreResult::TooLarge)?;
        if size as u64 > self.layout.page_size {
            return self
                .alloc_chained(hash, key.len(), nbytes, now)
                .map_err(|_: AllocError| StoreResult::NoMemory);
        }
        self.alloc(class, hash, size as u64, key.len(), now)
            .map_err(|_: AllocError| StoreResult::NoMemory)
    }

    /// Write an INFLIGHT item's header, key and value (the value given in parts).
    fn fill_item(&self, id: u32, key: &[u8], flags: u32, exptime: u32, parts: &[&[u8]]) {
        let it = self.item(id);
        let nbytes: usize = parts.iter().map(|p| p.len()).sum();
        it.flags.store(flags, Relaxed);
        it.exptime.store(exptime, Relaxed);
        it.nkey.store(key.len() as u8, Relaxed);
        it.nbytes.store(nbytes as u32, Relaxed);
        let cas = if self.cas_enabled { self.next_cas() } else { 0 };
        it.cas.store(cas, Relaxed);
        let dst = self.item_ptr(id);
        // SAFETY: the chunk is INFLIGHT and owned by us (no other process
        // reads or writes it until `publish`), and its chunks (one of its
        // class, the `span` consecutive ones `alloc_span_in` carved, or a
        // whole page for a chained head) hold ITEM_HEADER + the key (at
        // most 250 bytes), checked when allocated.
        unsafe {
            std::ptr::copy_nonoverlapping(key.as_ptr(), dst.add(ITEM_HEADER), key.len());
        }
        if self.is_chained(it) {
            self.write_chained(id, parts);
            return;
        }
        // SAFETY: as above, and the chunks hold the value after the key
        // (checked when allocated). The sources are the caller's buffers or
        // a LINKED item's value, which never overlaps an INFLIGHT chunk.
        unsafe {
            let mut at = dst.add(ITEM_HEADER + key.len());
            for p in parts {
                std::ptr::copy_nonoverlapping(p.as_ptr(), at, p.len());
                at = at.add(p.len());
            }
        }
    }

    /// Make INFLIGHT item `new` visible with one store, replacing `old` (the
    /// link that points at it, and its id) when there is one. `counted`: the
    /// item counts in total_items (memcached's item links).
    fn publish(&self, hash: u32, new: u32, old: Option<(&AtomicU32, u32)>, counted: bool) {
        self.publish_with(hash, new, old, counted, 0);
    }

    /// [`Store::publish`], the item's `word` flag bits (`item::WORD_FLAGS`)
    /// set to `bits` in the same store that publishes it.
    fn publish_with(
        &self,
        hash: u32,
        new: u32,
        old: Option<(&AtomicU32, u32)>,
        counted: bool,
        bits: u32,
    ) {
        let it = self.item(new);
        // Counted before it is reachable and uncounted after it is not, so
        // that a worker killed in between leaves a count one too high, never
        // one that wraps. An incr rewritten in place is counted too: memcached
        // takes the item out and puts it back with its new cas-unique.
        self.sizes_add(it);
        match old {
            Some((link, old_id)) => {
                it.next.store(self.item(old_id).next.load(Relaxed), Relaxed);
                link.store(new, Release);
            }
            None => {
                let bucket = self.bucket(hash);
                it.next.store(bucket.load(Relaxed), Relaxed);
                bucket.store(new, Release);
            }
        }
        it.word.store(LINKED | bits, Release);
        self.slot().inflight.store(0, Relaxed);
        if counted {
            self.counters().incr(Counter::total_items);
        }
        if let Some((_, old_id)) = old {
            self.sizes_remove(self.item(old_id));
            self.free(old_id);
        }
    }

    fn unlink_and_free(&self, link: &AtomicU32, id: u32) {
        link.store(self.item(id).next.load(Relaxed), Release);
        self.sizes_remove(self.item(id));
        self.free(id);
    }

    /// Find a live item for `key` in its chain (stripe lock held). A dead one
    /// (expired or flushed) found on the way is unlinked and freed.
    fn lookup(&self, hash: u32, key: &[u8], now: u32) -> Option<(&AtomicU32, u32)> {
        let mut link = self.bucket(hash);
        loop {
            let id = link.load(Relaxed);
            if id == 0 || !self.valid_id(id) {
                return None;
            }
            let it = self.item(id);
            if it.hash.load(Relaxed) == hash && self.key(id) == key {
                let (oldest_live, oldest_cas) = self.flush_marks();
                if it.is_dead(now, oldest_live, oldest_cas) {
                    let c = if it.is_flushed(now, oldest_live, oldest_cas) {
                        Counter::get_flushed
                    } else {
                        Counter::get_expired
                    };
                    self.counters().incr(c);
                    self.unlink_and_free(link, id);
                    return None;
                }
                return Some((link, id));
            }
            link = &it.next;
        }
    }

    /// Remove `id` from its chain if it is there (stripe lock held).
    pub(super) fn unlink_from_chain(&self, hash: u32, id: u32) -> bool {
        let mut link = self.bucket(hash);
        loop {
            let cur = link.load(Relaxed);
            if cur == 0 || !self.valid_id(cur) {
                return false;
            }
            let next = &self.item(cur).next;
            if cur == id {
                link.store(next.load(Relaxed), Release);
                return true;
            }
            link = next;
        }
    }

    pub(super) fn chain_contains(&self, hash: u32, id: u32) -> bool {
        let mut cur = self.bucket(hash).load(Relaxed);
        while cur != 0 && self.valid_id(cur) {
            if cur == id {
                return true;
            }
            cur = self.item(cur).next.load(Relaxed);
        }
        false
    }

    fn bump_if_due(&self, id: u32, now: u32) {
        if self
            .item(id)
            .time
            .load(Relaxed)
            .saturating_add(UPDATE_INTERVAL)
            <= now
        {
            self.lru_bump(id, now);
        }
    }

    fn bucket(&self, hash: u32) -> &AtomicU32 {
        &self.buckets[hash as usize & ((1usize << self.layout.bucket_bits) - 1)]
    }

    pub(super) fn stripe_for(&self, hash: u32) -> &RobustMutex {
        let bucket = hash as usize & ((1usize << self.layout.bucket_bits) - 1);
        &self.stripes[bucket % self.stripes.len()]
    }

    pub(super) fn valid_id(&self, id: u32) -> bool {
        id != 0 && ((id - 1) as u64) * 8 + ITEM_HEADER as u64 <= self.arena_len
    }

    fn item_ptr(&self, id: u32) -> *mut u8 {
        assert!(self.valid_id(id), "item id {id} outside the arena");
        // SAFETY: checked just above that the header lies inside the arena.
        unsafe { self.arena.add((id as usize - 1) * 8) }
    }

    pub(super) fn item(&self, id: u32) -> &Item {
        // SAFETY: item_ptr checks bounds; ids are multiples of 8 bytes from a
        // page-aligned arena, so the header is aligned; Item is all atomics.
        unsafe { &*(self.item_ptr(id) as *const Item) }
    }

    fn key(&self, id: u32) -> &[u8] {
        let it = self.item(id);
        let nkey = it.nkey.load(Relaxed) as usize;
        self.bytes_after_header(id, 0, nkey)
    }

    /// The value of item `id` (its stripe lock held): in place, or copied
    /// out of the pages of an item chained over several (store/chain.rs).
    fn value(&self, id: u32) -> Cow<'_, [u8]> {
        let it = self.item(id);
        let nkey = it.nkey.load(Relaxed) as usize;
        if self.is_chained(it) {
            return self.chained_value(id);
        }
        Cow::Borrowed(self.bytes_after_header(id, nkey, it.nbytes.load(Relaxed) as usize))
    }

    /// `len` bytes at `skip` past the item header, clamped to its chunk.
    /// Bytes `span` chunks of `chunk` bytes from item `id` hold, up to its
    /// page's end.
    #[cold]
    fn span_bytes(&self, id: u32, chunk: usize, span: u16) -> usize {
        let page_size = self.layout.page_size as usize;
        let in_page = (id as usize - 1) * 8 % page_size;
        (chunk * usize::from(span)).min(page_size - in_page)
    }

    fn bytes_after_header(&self, id: u32, skip: usize, len: usize) -> &[u8] {
        let it = self.item(id);
        let chunk = self.layout.class_sizes
            [(it.class.load(Relaxed) as usize).min(self.layout.class_sizes.len() - 1)]
            as usize;
        // An item may span several chunks of its page (`Item::span`; rare,
        // so the common case pays one load), never past the page's end.
        let span = it.span.load(Relaxed);
        let room = if span <= 1 {
            chunk
        } else {
            self.span_bytes(id, chunk, span)
        };
        let start = (ITEM_HEADER + skip).min(room);
        let len = len.min(room - start);
        // SAFETY: [start, start+len) lies inside the item's chunks, which lie
        // inside its page, inside the arena. Callers hold the item's stripe lock, and a LINKED
        // item's bytes are never written (see item.rs), so nothing changes
        // them while the slice lives.
        unsafe { std::slice::from_raw_parts(self.item_ptr(id).add(start), len) }
    }
}

// ---- meta commands (mg ms md ma me) ----

/// What `ms` asks of the store beyond a classic storage command.
#[derive(Debug, Clone, Copy)]
pub struct MetaStore<'a> {
    /// `Cas` when a `C<cas>` came with set or replace mode.
    pub mode: StoreMode,
    pub key: &'a [u8],
    pub flags: u32,
    pub exptime: i64,
    pub data: &'a [u8],
    /// `C<cas>` (0 = none): append/prepend compare it too.
    pub cas: u64,
    /// `I`: a `Cas` store whose cas (not 0) is older than the item's is
    /// stored stale.
    pub stale_ok: bool,
    /// `b`: the key was sent in base64.
    pub key_binary: bool,
}

/// memcached's default `slab_chunk_max`: larger items it stores chunked.
const MEMCACHED_CHUNK_MAX: u64 = 512 * 1024;

/// What `md` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaDeleteResult {
    Deleted,
    /// `I`: the item stays, stale, with a new cas.
    MarkedStale,
    NotFound,
    /// `C<cas>` did not match.
    Exists,
}

/// What `ma` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaArithResult {
    /// The new value.
    Value(u64),
    /// `N`: the key was missing and was created holding `J`'s value.
    Created(u64),
    NotFound,
    NonNumeric,
    /// `C<cas>` did not match.
    Exists,
    /// No room for the new value.
    NoMemory,
    /// No room for the item `N` asked for.
    VivifyNoMemory,
}

/// An item a meta command reads (and may re-time), while its stripe lock is
/// held: only single-word fields change, with atomics.
pub struct MetaItem<'a> {
    store: &'a Store,
    id: u32,
    /// The request's clock second.
    pub now: u32,
    /// `N` created it just now.
    pub created: bool,
    /// memcached's `ma` hands back the *old* item when the new number did
    /// not fit in place: `T` then re-times that unlinked item, which `t`
    /// shows but the stored item never gets. Such a re-timing lands here.
    detached: Option<std::cell::Cell<u32>>,
    /// The command failed after all: no fetched mark, no LRU bump.
    abandoned: std::cell::Cell<bool>,
}

impl MetaItem<'_> {
    fn it(&self) -> &Item {
        self.store.item(self.id)
    }

    pub fn key(&self) -> &[u8] {
        self.store.key(self.id)
    }

    pub fn data(&self) -> Cow<'_, [u8]> {
        self.store.value(self.id)
    }

    /// Bytes of the value (without copying one chained over pages).
    pub fn data_len(&self) -> usize {
        self.it().nbytes.load(Relaxed) as usize
    }

    /// The item's slab class as `stats items` numbers it (its chunk's class,
    /// plus one).
    pub fn class_id(&self) -> usize {
        self.it().class.load(Relaxed) as usize + 1
    }

    /// Header, key and value: what the item counts in `mem_requested`.
    pub fn total_size(&self) -> usize {
        self.it().total_size() as usize
    }

    pub fn flags(&self) -> u32 {
        self.it().flags.load(Relaxed)
    }

    pub fn cas(&self) -> u64 {
        self.it().cas.load(Relaxed)
    }

    /// Unix second it dies at; 0 = never.
    pub fn exptime(&self) -> u32 {
        match &self.detached {
            Some(exptime) => exptime.get(),
            None => self.it().exptime.load(Relaxed),
        }
    }

    /// Last access, unix seconds.
    pub fn time(&self) -> u32 {
        self.it().time.load(Relaxed)
    }

    fn has(&self, bit: u32) -> bool {
        self.it().word.load(Relaxed) & bit != 0
    }

    pub fn fetched(&self) -> bool {
        self.has(FETCHED)
    }

    pub fn stale(&self) -> bool {
        self.has(STALE)
    }

    pub fn token_sent(&self) -> bool {
        self.has(TOKEN_SENT)
    }

    pub fn key_binary(&self) -> bool {
        self.has(KEY_BINARY)
    }

    /// `ttl` (a command's exptime) as an absolute unix second.
    pub fn deadline(&self, ttl: i64) -> u32 {
        expiry(ttl, self.now, self.store.started())
    }

    /// A new exptime (`T`, `N`).
    pub fn set_ttl(&self, ttl: i64) {
        match &self.detached {
            Some(exptime) => exptime.set(self.deadline(ttl)),
            None => self.it().exptime.store(self.deadline(ttl), Relaxed),
        }
    }

    /// `W` was sent for it.
    pub fn mark_token_sent(&self) {
        self.it().word.fetch_or(TOKEN_SENT, Relaxed);
    }

    /// The command failed after looking (memcached then leaves the item
    /// unfetched and unbumped).
    pub fn abandon(&self) {
        self.abandoned.set(true);
    }

    /// Count `c` in the item's slab class.
    pub fn count(&self, c: ClassCounter) {
        self.store
            .count_class(self.it().class.load(Relaxed) as usize, c);
    }
}

impl Store {
    /// `mg`: look `key` up, creating an empty item that never expires on a
    /// miss when `vivify` (`N`, whose TTL the caller sets as it walks the
    /// flags: an error before it leaves 0, as in memcached), and call `visit`
    /// with it under the stripe lock. Unless `no_update` (`u`), the item is then marked fetched and
    /// bumped, so that `visit` sees the state from before this access.
    pub fn meta_get<R>(
        &self,
        key: &[u8],
        vivify: bool,
        no_update: bool,
        visit: impl FnOnce(Option<&MetaItem<'_>>) -> R,
    ) -> R {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let mut found = self.lookup(hash, key, now).map(|(_, id)| (id, false));
        if found.is_none()
            && vivify
            && let Ok(id) = self.alloc_item(key, hash, 0, now)
        {
            self.fill_item(id, key, 0, 0, &[]);
            self.publish(hash, id, None, true);
            found = Some((id, true));
        }
        let Some((id, created)) = found else {
            return visit(None);
        };
        let item = MetaItem {
            store: self,
            id,
            now,
            created,
            detached: None,
            abandoned: Default::default(),
        };
        let result = visit(Some(&item));
        if !no_update && !item.abandoned.get() {
            mark_read(self.item(id));
            self.bump_if_due(id, now);
        }
        result
    }

    /// `me`: look `key` up without touching it.
    pub fn meta_debug<R>(&self, key: &[u8], visit: impl FnOnce(Option<&MetaItem<'_>>) -> R) -> R {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        match self.lookup(hash, key, now) {
            Some((_, id)) => visit(Some(&self.untouched(id, now))),
            None => visit(None),
        }
    }

    /// Item `id` as a [`MetaItem`] that a command only looks at.
    fn untouched(&self, id: u32, now: u32) -> MetaItem<'_> {
        MetaItem {
            store: self,
            id,
            now,
            created: false,
            detached: None,
            abandoned: Default::default(),
        }
    }

    /// `lru_crawler metadump`: call `visit` with each live item of buckets
    /// `from..from + count` (each bucket under its stripe lock, so a visit
    /// must not call back into the store). Returns the next bucket, or None
    /// when the walk is over.
    pub fn dump_buckets(
        &self,
        from: usize,
        count: usize,
        mut visit: impl FnMut(&MetaItem<'_>),
    ) -> Option<usize> {
        let end = from.saturating_add(count).min(self.buckets.len());
        for b in from..end {
            // A racy peek: an empty bucket needs no lock.
            if self.buckets[b].load(Relaxed) == 0 {
                continue;
            }
            let _s = self.stripes[b % self.stripes.len()]
                .lock()
                .repaired_trivially();
            let now = unix_now();
            let (oldest_live, oldest_cas) = self.flush_marks();
            let mut id = self.buckets[b].load(Relaxed);
            while id != 0 && self.valid_id(id) {
                let it = self.item(id);
                if !it.is_dead(now, oldest_live, oldest_cas) {
                    visit(&self.untouched(id, now));
                }
                id = it.next.load(Relaxed);
            }
        }
        (end < self.buckets.len()).then_some(end)
    }

    /// `ms`: [`Store::store_cas`] plus what meta adds (memcached's
    /// do_store_item): append/prepend compare a given cas; `stale_ok` stores
    /// a `Cas` whose cas is older than the item's, marked stale, keeping the
    /// old exptime and token; the key's base64 origin is remembered.
    pub fn meta_store(&self, m: &MetaStore<'_>) -> (StoreResult, u64) {
        let &MetaStore {
            mode,
            key,
            flags,
            exptime,
            data,
            cas,
            stale_ok,
            key_binary,
        } = m;
        let now = unix_now();
        // memcached reads the cas to compare back from the new item, which
        // has no room for one with -C: it is then 0, "no cas given".
        let cas = if self.cas_enabled { cas } else { 0 };
        if let Some(class) = self.class_for(item_size(key.len(), data.len())) {
            self.count_class(class, ClassCounter::cmd_set);
            self.page_for_empty_class(class);
        }
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let found = self.lookup(hash, key, now);
        // memcached's append/prepend build a fresh item that does not carry
        // the key's base64 origin.
        let concat = matches!(mode, StoreMode::Append | StoreMode::Prepend);
        let mut bits = if key_binary && !(concat && found.is_some()) {
            KEY_BINARY
        } else {
            0
        };
        let mut stale_exptime = None;
        match (mode, found) {
            (StoreMode::Add, Some((_, id))) => {
                self.bump_if_due(id, now);
                return (StoreResult::NotStored, 0);
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                return (StoreResult::NotStored, 0);
            }
            (StoreMode::Append | StoreMode::Prepend, Some((_, id)))
                if cas != 0 && self.item(id).cas.load(Relaxed) != cas =>
            {
                return (StoreResult::Exists, 0);
            }
            (StoreMode::Cas, None) => return (StoreResult::NotFound, 0),
            (StoreMode::Cas, Some((_, id))) => {
                let it = self.item(id);
                let class = it.class.load(Relaxed) as usize;
                let current = it.cas.load(Relaxed);
                // No cas (0) matches nothing, not even an item whose cas is 0.
                if cas != 0 && current == cas {
                    self.count_class(class, ClassCounter::cas_hits);
                } else if stale_ok && cas != 0 && cas < current {
                    self.count_class(class, ClassCounter::cas_hits);
                    bits |= STALE | (it.word.load(Relaxed) & TOKEN_SENT);
                    stale_exptime = Some(it.exptime.load(Relaxed));
                } else {
                    self.count_class(class, ClassCounter::cas_badval);
                    return (StoreResult::Exists, 0);
                }
            }
            _ => {}
        }
        let exptime = stale_exptime.unwrap_or_else(|| expiry(exptime, now, self.started()));
        // memcached's ms drops the old value when it finds no room for the
        // new one, whatever the mode; append and prepend found room for their
        // data and failed joining it: kept.
        let drop_old = !matches!(mode, StoreMode::Append | StoreMode::Prepend);
        self.write_stored(
            mode, key, hash, found, flags, exptime, data, now, drop_old, bits,
        )
    }

    /// `md`: delete, or with `stale` (`I`, and `T`'s exptime if given) mark
    /// the item stale with a new cas and no token sent. `cas` (`C`) must
    /// match first.
    pub fn meta_delete(
        &self,
        key: &[u8],
        cas: Option<u64>,
        stale: Option<Option<i64>>,
    ) -> MetaDeleteResult {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let Some((link, id)) = self.lookup(hash, key, now) else {
            return MetaDeleteResult::NotFound;
        };
        let it = self.item(id);
        if cas.is_some_and(|c| c != it.cas.load(Relaxed)) {
            return MetaDeleteResult::Exists;
        }
        match stale {
            Some(ttl) => {
                if let Some(ttl) = ttl {
                    it.exptime.store(expiry(ttl, now, self.started()), Relaxed);
                }
                it.word.fetch_or(STALE, Relaxed);
                it.word.fetch_and(!TOKEN_SENT, Relaxed);
                // One atomic word, changed under the stripe lock that every
                // reader of a linked item holds, as memcached bumps it in place.
                let new_cas = if self.cas_enabled { self.next_cas() } else { 0 };
                it.cas.store(new_cas, Relaxed);
                MetaDeleteResult::MarkedStale
            }
            None => {
                self.count_class(it.class.load(Relaxed) as usize, ClassCounter::delete_hits);
                self.unlink_and_free(link, id);
                MetaDeleteResult::Deleted
            }
        }
    }

    /// `ma`: incr/decr as memcached's do_add_delta with a cas to compare
    /// (0 = none); on a miss, `vivify` (`N`) creates the item holding its
    /// initial value (`J`). `visit` sees the resulting item under the lock.
    pub fn meta_arith(
        &self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        vivify: Option<u64>,
        visit: impl FnOnce(&MetaItem<'_>),
    ) -> MetaArithResult {
        let now = unix_now();
        let hash = hash_key(key);
        let _s = self.stripe_for(hash).lock().repaired_trivially();
        let Some(found) = self.lookup(hash, key, now) else {
            let Some(initial) = vivify else {
                return MetaArithResult::NotFound;
            };
            let mut digits = [0u8; 20];
            let n = write_decimal(&mut digits, initial);
            let Ok(id) = self.alloc_item(key, hash, n, now) else {
                return MetaArithResult::VivifyNoMemory;
            };
            self.fill_item(id, key, 0, 0, &[&digits[..n]]);
            self.publish(hash, id, None, true);
            visit(&MetaItem {
                store: self,
                id,
                now,
                created: true,
                detached: None,
                abandoned: Default::default(),
            });
            return MetaArithResult::Created(initial);
        };
        let it = self.item(found.1);
        // memcached: too large to be a number (and not worth copying out).
        if self.memcached_chunks(it) {
            return MetaArithResult::NonNumeric;
        }
        let old = self.value(found.1);
        if old.is_empty() {
            return MetaArithResult::NonNumeric;
        }
        if cas != 0 && it.cas.load(Relaxed) != cas {
            return MetaArithResult::Exists;
        }
        let Some(value) = parse_counter(&old) else {
            return MetaArithResult::NonNumeric;
        };
        let in_place_len = old.len();
        match self.apply_delta(key, hash, found, value, incr, delta, now, true) {
            Ok((value, new)) => {
                let grew = self.value(new).len() > in_place_len;
                visit(&MetaItem {
                    store: self,
                    id: new,
                    now,
                    created: false,
                    detached: grew
                        .then(|| std::cell::Cell::new(self.item(new).exptime.load(Relaxed))),
                    abandoned: Default::default(),
                });
                MetaArithResult::Value(value)
            }
            Err(_) => MetaArithResult::NoMemory,
        }
    }
}

/// The key hash; stable across processes and builds (xxh3, no seed).
pub fn hash_key(key: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(key) as u32
}

/// Mark an item read (FETCHED, ACTIVE). Only when a bit is missing: a locked
/// read-modify-write on every hit would dirty the item's cache line each time
/// and bounce it between the cores of workers reading the same hot keys.
fn mark_read(it: &Item) {
    if it.word.load(Relaxed) & (FETCHED | ACTIVE) != FETCHED | ACTIVE {
        it.word.fetch_or(FETCHED | ACTIVE, Relaxed);
    }
}

/// Now, in unix seconds (coarse clock: cheap, second resolution is all we need).
pub fn unix_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec as u32
}

/// memcached's exptime rules, as an absolute unix second (0 = never):
/// negative = already expired; up to 30 days = relative; more = absolute,
/// where a time at or before the server's start means already expired.
pub fn expiry(exptime: i64, now: u32, started: u32) -> u32 {
    match exptime {
        0 => 0,
        e if e < 0 => 1,
        e if e <= REALTIME_MAXDELTA => now.saturating_add(e as u32),
        e if e <= started as i64 => 1,
        e => e.min(u32::MAX as i64) as u32,
    }
}

/// memcached's safe_strtoull over a stored value followed by its `\r\n`:
/// leading whitespace and a `+` are fine; there must be digits, and they must
/// end at whitespace, a NUL or the end of the value; overflow, or a `-` number
/// whose unsigned negation looks negative, makes it non-numeric.
pub fn parse_counter(v: &[u8]) -> Option<u64> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut i = v.iter().take_while(|&&b| is_space(b)).count();
    let negative = v.get(i) == Some(&b'-');
    if matches!(v.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = v[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let end = i + digits;
    let mut value: u64 = 0;
    for &d in &v[i..end] {
        value = value.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    // strtoull negates a `-` number in unsigned arithmetic; memcached then
    // refuses it only if the result looks negative as a signed number
    // ("-5" is refused, "-18446744073709551615" reads as 1).
    if negative {
        value = value.wrapping_neg();
        if (value as i64) < 0 {
            return None;
        }
    }
    // Past the value comes memcached's stored "\r\n", which is whitespace.
    match v.get(end) {
        None | Some(0) => Some(value),
        Some(&b) if is_space(b) => Some(value),
        _ => None,
    }
}

/// Write `n` in decimal at the start of `buf`; returns the length.
fn write_decimal(buf: &mut [u8; 20], mut n: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn store(memory_mb: u64, evictions: bool) -> Store {
        let mut s = Store::create(StoreParams {
            layout: LayoutParams {
                memory_limit: memory_mb << 20,
                item_size_max: 1 << 20,
                workers: 2,
                ..LayoutParams::default()
            },
            evictions,
            cas_enabled: true,
        })
        .unwrap();
        s.act_as_slot(0);
        s
    }

    fn get(s: &Store, key: &[u8]) -> Option<(u32, Vec<u8>)> {
        let mut out = None;
        s.get(key, None, |h| out = Some((h.flags, h.data().to_vec())));
        out
    }

    #[test]
    fn set_get_replace_delete() {
        let s = store(4, true);
        assert_eq!(get(&s, b"k"), None);
        assert_eq!(
            s.store(StoreMode::Set, b"k", 7, 0, b"v1", 0),
            StoreResult::Stored
        );
        assert_eq!(get(&s, b"k"), Some((7, b"v1".to_vec())));
        assert_eq!(
            s.store(StoreMode::Add, b"k", 0, 0, b"x", 0),
            StoreResult::NotStored
        );
        assert_eq!(
            s.store(StoreMode::Append, b"k", 0, 0, b"++", 0),
            StoreResult::Stored
        );
        assert_eq!(
            s.store(StoreMode::Prepend, b"k", 0, 0, b"--", 0),
            StoreResult::Stored
        );
        assert_eq!(get(&s, b"k"), Some((7, b"--v1++".to_vec())));
        assert_eq!(s.items_and_bytes().0, 1);
        assert!(s.delete(b"k"));
        assert!(!s.delete(b"k"));
        assert_eq!(s.items_and_bytes(), (0, 0));
        assert_eq!(
            s.store(StoreMode::Replace, b"k", 0, 0, b"x", 0),
            StoreResult::NotStored
        );
    }

    #[test]
    fn cas_and_arith() {
        let s = store(4, true);
        s.store(StoreMode::Set, b"n", 0, 0, b"10", 0);
        let mut cas = 0;
        s.get(b"n", None, |h| cas = h.cas);
        assert_eq!(
            s.store(StoreMode::Cas, b"n", 0, 0, b"11", cas + 1),
            StoreResult::Exists
        );
        assert_eq!(
            s.store(StoreMode::Cas, b"n", 0, 0, b"10", cas),
            StoreResult::Stored
        );
        assert_eq!(
            s.store(StoreMode::Cas, b"zz", 0, 0, b"1", cas),
            StoreResult::NotFound
        );
        assert_eq!(s.arith(b"n", false, 1), ArithResult::Value(9));
        assert_eq!(get(&s, b"n").unwrap().1, b"9 ");
        s.store(StoreMode::Set, b"m", 0, 0, b"18446744073709551615", 0);
        assert_eq!(s.arith(b"m", true, 1), ArithResult::Value(0));
        assert_eq!(s.arith(b"x", true, 1), ArithResult::NotFound);
        s.store(StoreMode::Set, b"t", 0, 0, b"abc", 0);
        assert_eq!(s.arith(b"t", true, 1), ArithResult::NonNumeric);
    }

    #[test]
    fn expired_items_are_gone() {
        let s = store(4, true);
        s.store(StoreMode::Set, b"e", 0, -1, b"v", 0);
        assert_eq!(get(&s, b"e"), None);
        s.store(StoreMode::Set, b"f", 0, 100, b"v", 0);
        assert!(get(&s, b"f").is_some());
        s.flush_all(0);
        assert_eq!(get(&s, b"f"), None);
        s.store(StoreMode::Set, b"g", 0, 0, b"after", 0);
        assert!(get(&s, b"g").is_some());
    }

    #[test]
    fn filling_evicts_least_recently_used() {
        let s = store(2, true);
        let value = [b'x'; 1000];
        for i in 0..10_000u32 {
            let key = format!("key{i}");
            assert_eq!(
                s.store(StoreMode::Set, key.as_bytes(), 0, 0, &value, 0),
                StoreResult::Stored
            );
        }
        assert!(s.total(Counter::evictions) > 0);
        assert!(get(&s, b"key9999").is_some());
        assert_eq!(get(&s, b"key0"), None);
        let (items, bytes) = s.items_and_bytes();
        assert!(
            items > 0 && bytes <= 2 << 20,
            "{items} items, {bytes} bytes"
        );
    }

    #[test]
    fn without_evictions_a_full_store_refuses() {
        let s = store(2, false);
        let value = [b'x'; 1000];
        let mut refused = 0;
        for i in 0..5_000u32 {
            let key = format!("key{i}");
            if s.store(StoreMode::Set, key.as_bytes(), 0, 0, &value, 0) == StoreResult::NoMemory {
                refused += 1;
            }
        }
        assert!(refused > 0);
        assert!(get(&s, b"key0").is_some());
    }

    #[test]
    fn too_large_is_refused_and_drops_the_old_value() {
        let s = store(4, true);
        s.store(StoreMode::Set, b"big", 0, 0, b"old", 0);
        let huge = vec![0u8; 2 << 20];
        assert_eq!(
            s.store(StoreMode::Set, b"big", 0, 0, &huge, 0),
            StoreResult::TooLarge
        );
        assert_eq!(get(&s, b"big"), None);
    }

    #[test]
    fn a_dead_owner_of_a_class_lock_is_repaired() {
        let s = store(4, true);
        for i in 0..100u32 {
            s.store(StoreMode::Set, format!("k{i}").as_bytes(), 0, 0, b"v", 0);
        }
        let c = s.class_for(item_size(2, 1)).unwrap();
        // A child takes the class lock and dies holding it.
        // SAFETY: the child only locks and exits; no threads exist in tests
        // that could hold locks across fork in a way that matters here.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                std::mem::forget(s.class(c).lock.lock());
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        // Corrupt the lists the way a crash mid-edit could.
        s.class(c).lru_head.store(0, Relaxed);
        s.class(c).free_head.store(0, Relaxed);
        assert_eq!(
            s.store(StoreMode::Set, b"k1", 0, 0, b"w", 0),
            StoreResult::Stored
        );
        assert_eq!(get(&s, b"k1").unwrap().1, b"w");
        assert_eq!(s.items_and_bytes().0, 100);
    }

    #[test]
    fn per_class_counters_and_total_items() {
        let s = store(4, true);
        let c = s.class_for(item_size(1, 2)).unwrap();
        let total = |k| s.class_total(c, k);
        s.store(StoreMode::Set, b"n", 0, 0, b"10", 0);
        assert_eq!(get(&s, b"n").unwrap().1, b"10");
        s.get(b"n", Some(0), |_| {});
        assert!(s.touch(b"n", 0));
        // A number that still fits is rewritten in place: no new item.
        assert_eq!(s.arith(b"n", false, 1), ArithResult::Value(9));
        assert_eq!(s.arith(b"n", true, 91), ArithResult::Value(100));
        assert!(s.delete(b"n"));
        s.store(StoreMode::Set, b"r", 0, 0, b"ab", 0);
        s.remove(b"r");
        use ClassCounter::*;
        assert_eq!(
            [
                get_hits,
                touch_hits,
                decr_hits,
                incr_hits,
                delete_hits,
                cmd_set
            ]
            .map(total),
            [1, 2, 1, 1, 1, 2]
        );
        // set n, incr to 3 digits, set r.
        assert_eq!(s.total(Counter::total_items), 3);
        s.reset_stats();
        assert_eq!(total(cmd_set), 0);
        assert_eq!(s.total(Counter::total_items), 0);
    }

    #[test]
    fn prefix_table_counts_dumps_and_overflows() {
        let s = store(4, true);
        let rec = |k: &[u8], op| s.record_prefix(k, b':', op);
        rec(b"a:1", prefix::PrefixOp::Set);
        rec(b"a:2", prefix::PrefixOp::Get { hit: true });
        rec(b"b:1", prefix::PrefixOp::Get { hit: false });
        rec(b":x", prefix::PrefixOp::Delete);
        rec(b"none", prefix::PrefixOp::Set);
        let (lines, overflow) = s.prefix_dump();
        let text: Vec<String> = lines
            .iter()
            .map(|l| {
                format!(
                    "{} {} {} {} {}",
                    String::from_utf8_lossy(&l.prefix),
                    l.get,
                    l.hit,
                    l.set,
                    l.del
                )
            })
            .collect();
        // memcached's order: murmur3 buckets "" 0, "b" 3, "a" 178.
        assert_eq!(text, [" 0 0 0 1", "b 1 0 0 0", "a 1 1 1 0"]);
        assert_eq!(overflow, None);
        for i in 0..prefix::PREFIX_ENTRIES + 10 {
            rec(format!("p{i}:k").as_bytes(), prefix::PrefixOp::Set);
        }
        let (lines, overflow) = s.prefix_dump();
        assert_eq!(lines.len(), prefix::PREFIX_ENTRIES);
        assert_eq!(overflow, Some([0, 0, 13, 0]));
        s.clear_prefixes();
        assert_eq!(s.prefix_dump(), (vec![], None));
        rec(b"a:1", prefix::PrefixOp::Set);
        assert_eq!(s.prefix_dump().0.len(), 1);
    }

    fn meta_set<'a>(mode: StoreMode, key: &'a [u8], data: &'a [u8], cas: u64) -> MetaStore<'a> {
        MetaStore {
            mode,
            key,
            flags: 0,
            exptime: 0,
            data,
            cas,
            stale_ok: true,
            key_binary: false,
        }
    }

    /// (stale, token sent, cas) of `key`, None on a miss.
    fn meta_state(s: &Store, key: &[u8]) -> Option<(bool, bool, u64)> {
        s.meta_debug(key, |it| {
            it.map(|it| (it.stale(), it.token_sent(), it.cas()))
        })
    }

    #[test]
    fn stale_items_and_tokens() {
        let s = store(4, true);
        // A miss vivified once: the caller marks the token sent.
        assert!(s.meta_get(b"k", true, false, |it| {
            let it = it.unwrap();
            it.mark_token_sent();
            it.created
        }));
        assert!(!s.meta_get(b"k", true, false, |it| it.unwrap().created));
        let (_, sent, cas) = meta_state(&s, b"k").unwrap();
        assert!(sent);
        // md I: stale, token cleared, a new cas.
        assert_eq!(
            s.meta_delete(b"k", None, Some(Some(100))),
            MetaDeleteResult::MarkedStale
        );
        let (stale, sent, new_cas) = meta_state(&s, b"k").unwrap();
        assert!(stale && !sent && new_cas > cas);
        // An older cas with I stores stale; the current cas stores clean.
        let (r, _) = s.meta_store(&meta_set(StoreMode::Cas, b"k", b"v1", cas));
        assert_eq!(r, StoreResult::Stored);
        let (stale, _, current) = meta_state(&s, b"k").unwrap();
        assert!(stale);
        let (r, _) = s.meta_store(&meta_set(StoreMode::Cas, b"k", b"v2", current));
        assert_eq!(r, StoreResult::Stored);
        assert_eq!(meta_state(&s, b"k").map(|m| m.0), Some(false));
        // C0 is no cas: nothing matches it.
        let (r, _) = s.meta_store(&meta_set(StoreMode::Cas, b"k", b"v3", 0));
        assert_eq!(r, StoreResult::Exists);
        assert_eq!(s.meta_delete(b"k", Some(1), None), MetaDeleteResult::Exists);
        assert_eq!(s.meta_delete(b"k", None, None), MetaDeleteResult::Deleted);
        assert_eq!(s.meta_delete(b"k", None, None), MetaDeleteResult::NotFound);
    }

    #[test]
    fn a_full_store_keeps_the_value_an_append_could_not_grow() {
        let s = store(2, false);
        let value = [b'x'; 1000];
        s.store(StoreMode::Set, b"keep", 0, 0, &value, 0);
        for i in 0..5_000u32 {
            s.store(
                StoreMode::Set,
                format!("key{i}").as_bytes(),
                0,
                0,
                &value,
                0,
            );
        }
        let big = [b'y'; 3000];
        let (r, _) = s.meta_store(&meta_set(StoreMode::Append, b"keep", &big, 0));
        assert_eq!(r, StoreResult::NotStored);
        assert!(get(&s, b"keep").is_some(), "append failing keeps the value");
        let (r, _) = s.meta_store(&meta_set(StoreMode::Set, b"keep", &big, 0));
        assert_eq!(r, StoreResult::NoMemory);
        assert_eq!(get(&s, b"keep"), None, "a set failing drops it");
    }

    #[test]
    fn counter_values_follow_strtoull() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b" 42", Some(42)),
            (b"42 ", Some(42)),
            (b"12 abc", Some(12)),
            (b"+7", Some(7)),
            (b"-5", None),
            (b"-0", Some(0)),
            (b"-18446744073709551615", Some(1)),
            (b"-9223372036854775808", None),
            (b"12abc", None),
            (b"abc", None),
            (b"", None),
            (b" ", None),
            (b"\nabc", None),
            (b"12\0abc", Some(12)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
        ];
        for &(v, want) in cases {
            assert_eq!(
                parse_counter(v),
                want,
                "value {:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn expiry_follows_memcached() {
        let (now, started) = (1_800_000_000, 1_799_999_000);
        assert_eq!(expiry(0, now, started), 0);
        assert_eq!(expiry(-1, now, started), 1);
        assert_eq!(expiry(10, now, started), now + 10);
        assert_eq!(
            expiry(REALTIME_MAXDELTA, now, started),
            now + REALTIME_MAXDELTA as u32
        );
        assert_eq!(expiry(REALTIME_MAXDELTA + 1, now, started), 1);
        assert_eq!(expiry(now as i64 + 100, now, started), now + 100);
    }

    #[test]
    fn decimal() {
        let mut b = [0u8; 20];
        let n = write_decimal(&mut b, 0);
        assert_eq!(&b[..n], b"0");
        let n = write_decimal(&mut b, u64::MAX);
        assert_eq!(&b[..n], b"18446744073709551615");
    }
}
