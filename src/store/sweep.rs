//! The background sweep: expired and flushed items give their memory back
//! without being read (memcached's LRU crawler does this job).
//!
//! Each worker walks its share of the hash index a slice per tick, under the
//! stripe lock of each bucket, and unlinks and frees what is dead, exactly as
//! a `get` of that key would have. A full pass takes [`PASS_TICKS`] ticks.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use super::item::FETCHED;
use super::stats::{ClassCounter, Counter};
use super::{Store, unix_now};

/// Ticks (of the worker's 100 ms timer) per pass over a worker's share.
pub const PASS_TICKS: usize = 300;
/// Buckets per tick at least: a small table is swept in a few seconds (2,048
/// buckets cost well under a millisecond).
const MIN_SLICE: usize = 2048;

/// Next bucket this process sweeps (each worker is its own process);
/// `usize::MAX` until the first tick places it in the worker's share.
static CURSOR: AtomicUsize = AtomicUsize::new(usize::MAX);

impl Store {
    /// One tick of the sweep for worker `slot` of `workers`: walk the next
    /// slice of this worker's share of the buckets. Returns the items freed.
    pub fn sweep_tick(&self, slot: usize, workers: usize) -> u64 {
        let buckets = self.buckets.len();
        let workers = workers.max(1);
        let share = buckets.div_ceil(workers);
        let first = (slot % workers) * share;
        let end = (first + share).min(buckets);
        if first >= end {
            return 0;
        }
        let mut at = CURSOR.load(Relaxed);
        if !(first..end).contains(&at) {
            at = first;
        }
        let slice = share.div_ceil(PASS_TICKS).max(MIN_SLICE);
        let stop = (at + slice).min(end);
        let mut freed = 0;
        for b in at..stop {
            freed += self.sweep_bucket(b);
        }
        CURSOR.store(if stop >= end { first } else { stop }, Relaxed);
        freed
    }

    /// Free the dead items of bucket `b`; returns how many.
    fn sweep_bucket(&self, b: usize) -> u64 {
        let bucket = &self.buckets[b];
        // A racy peek: an empty bucket needs no lock.
        if bucket.load(Relaxed) == 0 {
            return 0;
        }
        let _s = self.stripes[b % self.stripes.len()]
            .lock()
            .repaired_trivially();
        let now = unix_now();
        let (oldest_live, oldest_cas) = self.flush_marks();
        let mut freed = 0;
        let mut link = bucket;
        loop {
            let id = link.load(Relaxed);
            if id == 0 || !self.valid_id(id) {
                return freed;
            }
            let it = self.item(id);
            if !it.is_dead(now, oldest_live, oldest_cas) {
                link = &it.next;
                continue;
            }
            let class = it.class.load(Relaxed) as usize;
            let flushed = it.is_flushed(now, oldest_live, oldest_cas);
            let fetched = it.word.load(Relaxed) & FETCHED != 0;
            self.counters().incr(Counter::reclaimed);
            self.count_class(class, ClassCounter::reclaimed);
            if !fetched && !flushed {
                self.counters().incr(Counter::expired_unfetched);
                self.count_class(class, ClassCounter::expired_unfetched);
            }
            // `link` now leads to the next item.
            self.unlink_and_free(link, id);
            freed += 1;
        }
    }
}
