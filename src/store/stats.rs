//! Per-worker counters, kept in the segment so that they survive a worker's
//! death and can be summed by whoever answers `stats`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// One counter per memcached `stats` key that is a plain sum over workers.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($name),* }

        impl Counter {
            /// Every counter, in the order `stats` prints them.
            pub const ALL: &'static [Counter] = &[$(Counter::$name),*];
            /// The `stats` key.
            pub fn name(self) -> &'static str {
                match self { $(Counter::$name => stringify!($name)),* }
            }
        }
    };
}

counters!(
    curr_connections,
    total_connections,
    rejected_connections,
    cmd_get,
    cmd_set,
    cmd_flush,
    cmd_touch,
    cmd_meta,
    get_hits,
    get_misses,
    get_expired,
    get_flushed,
    delete_misses,
    delete_hits,
    incr_misses,
    incr_hits,
    decr_misses,
    decr_hits,
    cas_misses,
    cas_hits,
    cas_badval,
    touch_hits,
    touch_misses,
    store_too_large,
    store_no_memory,
    auth_cmds,
    auth_errors,
    idle_kicks,
    bytes_read,
    bytes_written,
    conn_yields,
    total_items,
    expired_unfetched,
    evicted_unfetched,
    evicted_active,
    slab_reassign_rescues,
    slab_reassign_evictions_nomem,
    slab_reassign_busy_items,
    slabs_moved,
    evictions,
    reclaimed,
    // memcached's LRU crawler: our sweep and `lru_crawler crawl`.
    crawler_reclaimed,
    crawler_items_checked,
    lru_crawler_starts,
    requests,
);

/// Number of counters (the length of [`Counter::ALL`]).
pub const COUNTERS: usize = Counter::requests as usize + 1;

/// A worker slot's counters.
#[repr(C)]
pub struct Counters {
    values: [AtomicU64; COUNTERS],
}

impl Counters {
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Only `curr_connections` goes down.
    #[inline]
    pub fn decr(&self, c: Counter) {
        self.values[c as usize].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// A dead worker's connections are gone with it.
    pub fn clear_gauges(&self) {
        self.values[Counter::curr_connections as usize].store(0, Ordering::Relaxed);
    }

    /// `stats reset`: everything but the gauges.
    pub fn reset(&self) {
        for &c in Counter::ALL {
            if c != Counter::curr_connections {
                self.values[c as usize].store(0, Ordering::Relaxed);
            }
        }
    }
}

macro_rules! class_counters {
    ($($name:ident),* $(,)?) => {
        /// One counter per slab class and worker: the per-class keys of
        /// `stats slabs` and `stats items`.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum ClassCounter { $($name),* }

        impl ClassCounter {
            pub const ALL: &'static [ClassCounter] = &[$(ClassCounter::$name),*];
            /// The key's name after `<class>:` or `items:<class>:`.
            pub fn name(self) -> &'static str {
                match self { $(ClassCounter::$name => stringify!($name)),* }
            }
        }
    };
}

class_counters!(
    // `stats slabs`, memcached's slab_stats.
    get_hits,
    cmd_set,
    delete_hits,
    incr_hits,
    decr_hits,
    cas_hits,
    cas_badval,
    touch_hits,
    // `stats items`, memcached's itemstats.
    evicted,
    evicted_nonzero,
    outofmemory,
    reclaimed,
    expired_unfetched,
    evicted_unfetched,
    evicted_active,
    crawler_reclaimed,
    crawler_items_checked,
);

/// Number of per-class counters.
pub const CLASS_COUNTERS: usize = ClassCounter::crawler_items_checked as usize + 1;

/// One worker's counters for one slab class.
#[repr(C)]
pub struct ClassCounters {
    values: [AtomicU64; CLASS_COUNTERS],
}

impl ClassCounters {
    #[inline]
    pub fn incr(&self, c: ClassCounter) {
        self.add(c, 1);
    }

    #[inline]
    pub fn add(&self, c: ClassCounter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: ClassCounter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// `stats reset`.
    pub fn reset(&self) {
        for v in &self.values {
            v.store(0, Ordering::Relaxed);
        }
    }
}
