//! The background sweep: expired and flushed items give their memory back
//! without being read. It is memcached's LRU crawler to operators: it counts
//! `crawler_reclaimed` and `crawler_items_checked`, `lru_crawler
//! enable|disable` (`-o no_lru_crawler`) start and stop it, and `lru_crawler
//! crawl <classes>` asks for a pass now.
//!
//! Each worker walks its share of the hash index a slice per tick, under the
//! stripe lock of each bucket, and unlinks and frees what is dead, exactly as
//! a `get` of that key would have. A full pass takes [`PASS_TICKS`] ticks; a
//! requested crawl walks up to [`CRAWL_SLICE`] buckets or 2 ms a tick, only the
//! classes asked for, at most `lru_crawler tocrawl` items of each and 1,000
//! items per `lru_crawler sleep` of the tick, and then the sweep goes on.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use super::item::FETCHED;
use super::stats::{ClassCounter, Counter};
use super::{Store, unix_now};

/// Ticks (of the worker's 100 ms timer) per pass over a worker's share.
pub const PASS_TICKS: usize = 300;
/// Buckets per tick at least: a small table is swept in a few seconds (2,048
/// buckets cost well under a millisecond).
const MIN_SLICE: usize = 2048;
/// Buckets per tick of a requested crawl at most, and the time it may take
/// (looked at every 1,024 buckets): an empty bucket costs a nanosecond or so,
/// an item some 100 ns, so a tick walks `-m 64`'s 512 Ki buckets or some
/// 20,000 items, and a worker serves its clients 98 % of the time.
pub const CRAWL_SLICE: usize = 1 << 20;
const CRAWL_TICK_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// memcached's crawler sleeps `lru_crawler_sleep` µs after this many items.
const CRAWLS_PER_SLEEP: u64 = 1000;
/// The worker's tick, in µs.
const TICK_US: u64 = 100_000;

/// Where this process (each worker is its own) is in its sweep and in a
/// requested crawl.
pub(super) struct Cursors {
    /// Next bucket to sweep; `usize::MAX` until the first tick places it in
    /// the worker's share.
    sweep: AtomicUsize,
    /// Next bucket of the requested crawl `crawl_of` (usize::MAX: none yet).
    crawl: AtomicUsize,
    crawl_of: AtomicU64,
    /// Items of each class that crawl has checked.
    crawl_checked: Mutex<Vec<u64>>,
}

impl Default for Cursors {
    fn default() -> Cursors {
        Cursors {
            sweep: AtomicUsize::new(usize::MAX),
            crawl: AtomicUsize::new(usize::MAX),
            crawl_of: AtomicU64::new(0),
            crawl_checked: Mutex::new(Vec::new()),
        }
    }
}

/// Slab classes a walk counts for (the class byte of an item).
const CLASSES: usize = 256;

/// What a slice looks at, and what it counts: on the stack, so that the
/// sweep allocates nothing.
struct Walk {
    /// Bit `n % 64` of word `n / 64`: class id `n` (index plus one); bit 0:
    /// every class.
    classes: [u64; 4],
    /// Items a class may still have checked (`None`: no limit).
    left: Option<[u64; CLASSES]>,
    /// Items checked and freed, per class.
    checked: [u64; CLASSES],
    freed: [u64; CLASSES],
    /// The sum of `checked`.
    checked_total: u64,
}

impl Walk {
    fn new(classes: [u64; 4], left: Option<[u64; CLASSES]>) -> Walk {
        Walk {
            classes,
            left,
            checked: [0; CLASSES],
            freed: [0; CLASSES],
            checked_total: 0,
        }
    }

    fn wants(&self, class: usize) -> bool {
        let id = class + 1;
        (self.classes[0] & 1 != 0
            || self
                .classes
                .get(id / 64)
                .is_some_and(|w| w & 1 << (id % 64) != 0))
            && self.left.is_none_or(|l| l[class] > 0)
    }
}

impl Store {
    /// One tick of the sweep for worker `slot` of `workers`: walk the next
    /// slice of this worker's share of the buckets, of a requested crawl if
    /// one is waiting for this worker. Returns the items freed.
    pub fn sweep_tick(&self, slot: usize, workers: usize) -> u64 {
        let h = self.header();
        if h.crawler.load(Relaxed) == 0 {
            return 0;
        }
        let buckets = self.buckets.len();
        let workers = workers.max(1);
        let share = buckets.div_ceil(workers);
        let first = (slot % workers) * share;
        let end = (first + share).min(buckets);
        let crawl = h.crawls.load(Relaxed);
        if crawl > self.slot().crawled.load(Relaxed) {
            return self.crawl_tick(crawl, first, end);
        }
        if first >= end {
            return 0;
        }
        let mut at = self.sweep.sweep.load(Relaxed);
        if !(first..end).contains(&at) {
            at = first;
        }
        if at == first {
            self.counters().incr(Counter::lru_crawler_starts);
        }
        let slice = share.div_ceil(PASS_TICKS).max(MIN_SLICE);
        let stop = (at + slice).min(end);
        let mut walk = Walk::new([1, 0, 0, 0], None);
        for b in at..stop {
            self.sweep_bucket(b, &mut walk);
        }
        self.sweep
            .sweep
            .store(if stop >= end { first } else { stop }, Relaxed);
        self.count_walk(&walk)
    }

    /// A tick of requested crawl `crawl` over buckets `first..end`.
    fn crawl_tick(&self, crawl: u64, first: usize, end: usize) -> u64 {
        let h = self.header();
        let classes = self.classes.len();
        let mut checked = self
            .sweep
            .crawl_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut at = self.sweep.crawl.load(Relaxed);
        if self.sweep.crawl_of.swap(crawl, Relaxed) != crawl || !(first..end).contains(&at) {
            at = first;
            checked.clear();
            checked.resize(classes, 0);
        }
        let left = match h.crawler_tocrawl.load(Relaxed) {
            0 => None,
            n => {
                let mut left = [u64::from(n); CLASSES];
                for (l, &c) in left.iter_mut().zip(checked.iter()) {
                    *l = l.saturating_sub(c);
                }
                Some(left)
            }
        };
        let mut walk = Walk::new(h.crawl_classes.each_ref().map(|w| w.load(Relaxed)), left);
        let budget = match h.crawler_sleep.load(Relaxed) {
            0 => u64::MAX,
            sleep => (CRAWLS_PER_SLEEP * TICK_US / u64::from(sleep)).max(1),
        };
        let started = std::time::Instant::now();
        let stop = end.min(at + CRAWL_SLICE);
        let mut b = at;
        while b < stop && walk.checked_total < budget {
            self.sweep_bucket(b, &mut walk);
            b += 1;
            if b.is_multiple_of(1024) && started.elapsed() >= CRAWL_TICK_BUDGET {
                break;
            }
        }
        for (c, n) in checked.iter_mut().zip(&walk.checked) {
            *c += n;
        }
        if b >= end {
            // Our share is done; the sweep goes on where it was.
            self.slot().crawled.store(crawl, Relaxed);
            self.sweep.crawl.store(usize::MAX, Relaxed);
        } else {
            self.sweep.crawl.store(b, Relaxed);
        }
        self.count_walk(&walk)
    }

    /// Add a slice's counts to this worker's counters; returns the items freed.
    fn count_walk(&self, walk: &Walk) -> u64 {
        let mut freed = 0;
        let classes = self.classes.len().min(CLASSES);
        for (c, (&n, &f)) in walk.checked[..classes]
            .iter()
            .zip(&walk.freed[..classes])
            .enumerate()
        {
            if n != 0 {
                self.count_class_n(c, ClassCounter::crawler_items_checked, n);
                self.counters().add(Counter::crawler_items_checked, n);
            }
            if f != 0 {
                self.count_class_n(c, ClassCounter::crawler_reclaimed, f);
                self.counters().add(Counter::crawler_reclaimed, f);
                freed += f;
            }
        }
        freed
    }

    /// Check the items of bucket `b` the walk wants and free the dead ones.
    fn sweep_bucket(&self, b: usize, walk: &mut Walk) {
        let bucket = &self.buckets[b];
        // A racy peek: an empty bucket needs no lock.
        if bucket.load(Relaxed) == 0 {
            return;
        }
        let _s = self.stripes[b % self.stripes.len()]
            .lock()
            .repaired_trivially();
        let now = unix_now();
        let (oldest_live, oldest_cas) = self.flush_marks();
        let mut link = bucket;
        loop {
            let id = link.load(Relaxed);
            if id == 0 || !self.valid_id(id) {
                return;
            }
            let it = self.item(id);
            let class = it.class.load(Relaxed) as usize;
            if !walk.wants(class) {
                link = &it.next;
                continue;
            }
            if let Some(left) = &mut walk.left {
                left[class] -= 1;
            }
            walk.checked[class] += 1;
            walk.checked_total += 1;
            if !it.is_dead(now, oldest_live, oldest_cas) {
                if self.outlived_its_class(it) {
                    // Counted before the chunk is freed: its fields are the
                    // item's until then.
                    self.count_eviction(class, it, now);
                    // `link` now leads to the next item.
                    self.unlink_and_free(link, id);
                    continue;
                }
                link = &it.next;
                continue;
            }
            let flushed = it.is_flushed(now, oldest_live, oldest_cas);
            let fetched = it.word.load(Relaxed) & FETCHED != 0;
            if !fetched && !flushed {
                self.counters().incr(Counter::expired_unfetched);
                self.count_class(class, ClassCounter::expired_unfetched);
            }
            walk.freed[class] += 1;
            // `link` now leads to the next item.
            self.unlink_and_free(link, id);
        }
    }

    /// An item spanning chunks of a smaller class's page (`Store::alloc`)
    /// that its own class, full, would have evicted by now: older than that
    /// class's LRU tail. In the host class's LRU nothing of its own class's
    /// pressure reaches it; left there it crowds out the host's own items.
    fn outlived_its_class(&self, it: &super::item::Item) -> bool {
        if it.chunks() <= 1 {
            return false;
        }
        let Some(own) = self.class_for(it.total_size() as usize) else {
            return false;
        };
        let tail = self.class(own).lru_tail.load(Relaxed);
        tail != 0
            && self.valid_id(tail)
            && !self.room_in(own)
            && it.time.load(Relaxed) < self.item(tail).time.load(Relaxed)
    }

    /// `lru_crawler crawl`: ask every worker for a pass over its share, of
    /// the classes in `classes` (bit `n % 64` of word `n / 64` for class id
    /// `n`, our index plus one) or all (`None`). False when the last one is
    /// not done yet (memcached's `BUSY`).
    pub fn request_crawl(&self, classes: Option<[u64; 4]>) -> bool {
        if self.crawl_running() {
            return false;
        }
        let h = self.header();
        let words = classes.unwrap_or([1, 0, 0, 0]);
        for (w, v) in h.crawl_classes.iter().zip(words) {
            w.store(v, Relaxed);
        }
        h.crawls.fetch_add(1, Relaxed);
        self.counters().incr(Counter::lru_crawler_starts);
        true
    }

    /// A requested crawl is still being walked by some live worker
    /// (`lru_crawler_running`).
    pub fn crawl_running(&self) -> bool {
        let h = self.header();
        if h.crawler.load(Relaxed) == 0 {
            return false;
        }
        let crawl = h.crawls.load(Relaxed);
        let workers = h.live.workers.load(Relaxed) as usize;
        self.slots()
            .iter()
            .take(workers)
            .any(|s| s.pid.load(Relaxed) != 0 && s.crawled.load(Relaxed) < crawl)
    }

    /// `lru_crawler enable|disable`; false when it already ran (memcached
    /// cannot start its crawler thread twice).
    pub fn set_crawler(&self, on: bool) -> bool {
        let was = self.header().crawler.swap(u32::from(on), Relaxed);
        !(on && was != 0)
    }

    pub fn crawler_enabled(&self) -> bool {
        self.header().crawler.load(Relaxed) != 0
    }

    /// `lru_crawler sleep` and `tocrawl` as set now.
    pub fn crawler_pace(&self) -> (u32, u32) {
        let h = self.header();
        (
            h.crawler_sleep.load(Relaxed),
            h.crawler_tocrawl.load(Relaxed),
        )
    }

    pub fn set_crawler_sleep(&self, us: u32) {
        self.header().crawler_sleep.store(us, Relaxed);
    }

    pub fn set_crawler_tocrawl(&self, items: u32) {
        self.header().crawler_tocrawl.store(items, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::{ClassCounter, Counter};
    use super::super::tests::store;
    use super::super::{Store, StoreMode, item_size};

    /// `n` items of `len`-byte values, dead on arrival (exptime -1) or not.
    fn fill(s: &Store, prefix: &str, n: usize, len: usize, dead: bool) {
        for i in 0..n {
            let key = format!("{prefix}{i:05}");
            let exptime = if dead { -1 } else { 0 };
            s.store(
                StoreMode::Set,
                key.as_bytes(),
                0,
                exptime,
                &vec![b'v'; len],
                0,
            );
        }
    }

    fn number(s: &Store, class: usize) -> u64 {
        s.class_snapshot(class, super::unix_now()).used_chunks
    }

    /// Tick worker 0 of 1 until the requested crawl is done; returns the ticks.
    fn crawl(s: &Store) -> usize {
        let mut ticks = 0;
        while s.slot().crawled.load(super::Relaxed) < s.header().crawls.load(super::Relaxed) {
            s.sweep_tick(0, 1);
            ticks += 1;
            assert!(ticks < 1000, "the crawl never ends");
        }
        ticks
    }

    #[test]
    fn a_crawl_frees_the_dead_items_of_the_classes_asked_for() {
        let s = store(64, true);
        let small = s.class_for(item_size(6, 100)).unwrap();
        let large = s.class_for(item_size(6, 2000)).unwrap();
        assert_ne!(small, large);
        fill(&s, "s", 3000, 100, true);
        fill(&s, "l", 3000, 2000, true);
        fill(&s, "k", 500, 100, false);
        assert_eq!(number(&s, small), 3500);
        // Only the small class (memcached's id is ours plus one).
        let id = small + 1;
        let mut only_small = [0u64; 4];
        only_small[id / 64] |= 1 << (id % 64);
        assert!(s.request_crawl(Some(only_small)));
        assert_eq!(s.total(Counter::lru_crawler_starts), 1);
        crawl(&s);
        assert_eq!(number(&s, small), 500);
        assert_eq!(number(&s, large), 3000);
        assert_eq!(s.class_total(small, ClassCounter::crawler_reclaimed), 3000);
        assert_eq!(
            s.class_total(small, ClassCounter::crawler_items_checked),
            3500
        );
        assert_eq!(s.class_total(large, ClassCounter::crawler_items_checked), 0);
        assert_eq!(s.total(Counter::crawler_reclaimed), 3000);
        // memcached's `reclaimed` is memory reused at a store, not the crawler's.
        assert_eq!(s.total(Counter::reclaimed), 0);
        assert_eq!(s.total(Counter::expired_unfetched), 3000);
        // Then all of them.
        assert!(s.request_crawl(None));
        crawl(&s);
        assert_eq!(number(&s, large), 0);
        assert_eq!(s.total(Counter::crawler_reclaimed), 6000);
        assert_eq!(s.items_and_bytes().0, 500);
    }

    #[test]
    fn tocrawl_and_sleep_bound_a_crawl() {
        let s = store(64, true);
        let class = s.class_for(item_size(6, 100)).unwrap();
        fill(&s, "s", 3000, 100, true);
        s.set_crawler_tocrawl(1000);
        assert!(s.request_crawl(None));
        crawl(&s);
        assert_eq!(
            s.class_total(class, ClassCounter::crawler_items_checked),
            1000
        );
        assert_eq!(number(&s, class), 2000);
        // 1,000 items per `sleep` µs of a 100 ms tick: a second's sleep lets
        // 100 items a tick through.
        s.set_crawler_tocrawl(0);
        s.set_crawler_sleep(1_000_000);
        assert!(s.request_crawl(None));
        s.sweep_tick(0, 1);
        // At most 100 (fewer when the tick's 2 ms run out first).
        assert!(number(&s, class) >= 1900);
        let ticks = crawl(&s);
        assert!(ticks >= 19, "{ticks} ticks");
        assert_eq!(number(&s, class), 0);
    }

    /// An item spanning a smaller class's chunks that is older than every
    /// item of its own (full) class is evicted by the sweep, as its class's
    /// LRU would have; the host's own items stay.
    #[test]
    fn the_sweep_evicts_spanning_items_their_own_class_would_have() {
        let s = store(4, true);
        fill(&s, "s", 50, 100, false);
        let small = s.class_for(item_size(6, 100)).unwrap();
        let big = s.class_for(item_size(6, 8000)).unwrap();
        let per_page = s.class(big).per_page.load(super::Relaxed) as usize;
        fill(&s, "b", 3 * per_page + 100, 8000, false);
        assert_eq!(s.total(Counter::evictions), 0);
        // The spanning items, a minute older than the big class's items.
        let page = s.class(small).cur_page.load(super::Relaxed);
        let end = s.class(small).cur_next.load(super::Relaxed);
        let (mut idx, mut spans) = (0, 0);
        while idx < end {
            let it = s.item(s.chunk_id(small, page, idx));
            if it.chunks() > 1 {
                it.time.store(super::unix_now() - 60, super::Relaxed);
                spans += 1;
            }
            idx += it.chunks();
        }
        assert_eq!(spans, 100);
        for _ in 0..300 {
            s.sweep_tick(0, 1);
        }
        assert_eq!(s.total(Counter::evictions), 100);
        // Counted as the LRU counts an eviction: never read, a minute old.
        assert_eq!(s.total(Counter::evicted_unfetched), 100);
        assert_eq!(s.class_total(small, ClassCounter::evicted_unfetched), 100);
        assert!(s.class(small).evicted_time.load(super::Relaxed) >= 60);
        assert_eq!(number(&s, small), 50);
        assert_eq!(number(&s, big), (3 * per_page) as u64);
        assert_eq!(s.items_and_bytes().0, (50 + 3 * per_page) as u64);
        s.check_and_rebuild().unwrap();
        assert_eq!(s.items_and_bytes().0, (50 + 3 * per_page) as u64);
    }

    #[test]
    fn a_disabled_crawler_neither_sweeps_nor_crawls() {
        let s = store(8, true);
        fill(&s, "s", 1000, 100, true);
        assert!(s.set_crawler(false));
        for _ in 0..100 {
            assert_eq!(s.sweep_tick(0, 1), 0);
        }
        assert_eq!(s.items_and_bytes().0, 1000);
        assert!(!s.crawler_enabled());
        // memcached cannot start its crawler twice.
        assert!(s.set_crawler(true));
        assert!(!s.set_crawler(true));
        for _ in 0..100 {
            s.sweep_tick(0, 1);
        }
        assert_eq!(s.items_and_bytes().0, 0);
        assert!(s.total(Counter::lru_crawler_starts) > 0);
    }
}
