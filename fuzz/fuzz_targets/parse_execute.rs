//! Requests parsed and run against a real store, as a worker runs them.
//!
//! One 4 MiB store (slot 0, evictions on) lives for the whole process; every
//! input starts with a `flush_all` so that what it finds depends on the input
//! alone. The worker's executor is private to `worker/`, so the commands are
//! mapped onto the `Store` API here, the same calls `worker::exec` makes.
//! A `close` (or `quit`, or a seed reply) ends a connection, not the input:
//! the bytes after it are the next connection's.
//!
//! Checked after each command, with what the store says before and after:
//! - its memory never holds more than its limit;
//! - a stored value reads back as stored (set/add/replace/cas: the data;
//!   append/prepend: joined to the old value), unless it may have expired;
//! - each result agrees with what was there before (a replace, append or
//!   prepend stores only over a value, a cas only over its cas-unique, incr
//!   and decr compute memcached's arithmetic);
//! - a deleted key, a key whose `set` failed and a flushed key read as absent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmcached::protocol::{Command, Limits, Parsed, StoreMode, keys, parse};
use shmcached::store::segment::LayoutParams;
use shmcached::store::{ArithResult, Store, StoreParams, StoreResult, parse_counter, unix_now};

const MEMORY: u64 = 4 << 20;
const ITEM_SIZE_MAX: usize = 1 << 20;
/// memcached's REALTIME_MAXDELTA: larger exptimes are absolute unix times.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// The worker's limits for `-m 4 -I 1m -A` (its seed element size: the
/// largest value an item holds).
const LIMITS: Limits = Limits {
    item_size_max: ITEM_SIZE_MAX,
    cas_enabled: true,
    seed_element_size: ITEM_SIZE_MAX - (48 + 121 + 2),
    shutdown_enabled: true,
    dump_enabled: true,
};

thread_local! {
    static STORE: Store = {
        let mut store = Store::create(StoreParams {
            layout: LayoutParams {
                memory_limit: MEMORY,
                item_size_max: ITEM_SIZE_MAX as u64,
                workers: 1,
                ..LayoutParams::default()
            },
            evictions: true,
            cas_enabled: true,
        })
        .expect("a 4 MiB segment in /dev/shm");
        store.act_as_slot(0);
        store
    };
}

fuzz_target!(|input: &[u8]| {
    STORE.with(|store| {
        store.flush_all(0);
        let mut session = Session {
            store,
            flush_pending: false,
        };
        session.run(input);
    })
});

/// An item as read back.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    flags: u32,
    cas: u64,
    data: Vec<u8>,
}

struct Session<'s> {
    store: &'s Store,
    /// A `flush_all <delay>` ran: any item may die at any second from now on.
    flush_pending: bool,
}

impl Session<'_> {
    fn run(&mut self, input: &[u8]) {
        let mut at = 0;
        while at < input.len() {
            match parse(&input[at..], &LIMITS) {
                Parsed::Incomplete => return,
                Parsed::Command { command, consumed } => {
                    self.execute(&command);
                    at += consumed;
                }
                Parsed::Error {
                    consumed,
                    swallow,
                    unlink,
                    ..
                } => {
                    // A `set` refused as too large drops the old value.
                    if let Some(key) = unlink {
                        self.store.delete(key);
                        assert_eq!(self.lookup(key), None, "unlinked");
                    }
                    at = at.saturating_add(consumed).saturating_add(swallow);
                }
            }
            let (_, bytes) = self.store.items_and_bytes();
            assert!(bytes <= MEMORY, "{bytes} bytes in a {MEMORY}-byte store");
        }
    }

    fn execute(&mut self, command: &Command) {
        match *command {
            Command::Get {
                keys: list, touch, ..
            } => {
                for key in keys(list) {
                    self.store.get(key, touch, |hit| {
                        assert_ne!(hit.cas, 0, "cas is on: every item has a cas-unique");
                    });
                }
            }
            Command::Store {
                mode,
                key,
                flags,
                exptime,
                data,
                cas_unique,
                ..
            } => self.store_value(mode, key, flags, exptime, data, cas_unique),
            Command::Delete { key, .. } | Command::SeedDelete { name: key } => {
                let before = self.lookup(key);
                let found = self.store.delete(key);
                assert!(!found || before.is_some(), "deleted what was not there");
                assert_eq!(self.lookup(key), None, "read back after delete");
            }
            Command::Arith {
                key, delta, incr, ..
            } => self.arith(key, delta, incr),
            Command::Touch { key, exptime, .. } => {
                let before = self.lookup(key);
                let found = self.store.touch(key, exptime);
                assert!(!found || before.is_some(), "touched what was not there");
            }
            Command::FlushAll { delay, .. } => {
                self.store.flush_all(delay);
                // A delay sets a time at which everything stored so far dies;
                // "now" replaces any such time.
                self.flush_pending = delay > 0;
            }
            Command::Verbosity { level, .. } => self
                .store
                .header()
                .verbosity
                .store(level, std::sync::atomic::Ordering::Relaxed),
            Command::SeedSet { name, data } => {
                self.store_value(StoreMode::Set, name, 0, 0, data, 0);
            }
            Command::SeedGet { name } => {
                self.store.get(name, None, |_| {});
            }
            // The worker's business, not the store's.
            Command::Version | Command::Stats { .. } | Command::Shutdown { .. } | Command::Quit => {
            }
            // Meta commands run through the store's meta_* methods, which
            // tests/meta.rs compares with memcached; not mirrored here.
            Command::Meta(_) => {}
            // The mover's business: a request or a setting, no item changes.
            Command::SlabsReassign { .. }
            | Command::SlabsAutomove { .. }
            | Command::SlabsAutomoveRatio { .. } => {}
            // The crawler's and the dumps' business: reads, or settings.
            Command::MetaDump { .. } | Command::LruCrawler(_) => {}
            Command::CacheMemlimit { megabytes, .. } => {
                self.store.set_memory_limit(u64::from(megabytes) << 20);
            }
        }
    }

    fn store_value(
        &self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        exptime: i64,
        data: &[u8],
        cas_unique: u64,
    ) {
        let before = self.lookup(key);
        let result = self
            .store
            .store(mode, key, flags, exptime, data, cas_unique);
        let after = self.lookup(key);
        let context = format!("{mode:?} {} -> {result:?}", key.escape_ascii());
        match result {
            StoreResult::Stored => {
                let expected = match (mode, &before) {
                    (StoreMode::Append | StoreMode::Prepend, None) => {
                        panic!("{context}: stored over nothing")
                    }
                    (StoreMode::Replace, None) => panic!("{context}: replaced nothing"),
                    (StoreMode::Cas, old) => {
                        let old_cas = old.as_ref().map(|o| o.cas);
                        assert_eq!(old_cas, Some(cas_unique), "{context}: cas mismatch");
                        (flags, data.to_vec())
                    }
                    (StoreMode::Append, Some(old)) => (old.flags, [&old.data, data].concat()),
                    (StoreMode::Prepend, Some(old)) => (old.flags, [data, &old.data].concat()),
                    _ => (flags, data.to_vec()),
                };
                let joined = matches!(mode, StoreMode::Append | StoreMode::Prepend);
                match after {
                    Some(after) => assert_eq!(
                        (after.flags, after.data.escape_ascii().to_string()),
                        (expected.0, expected.1.escape_ascii().to_string()),
                        "{context}: read back"
                    ),
                    // An appended value keeps its old exptime, which may be due.
                    None if joined || self.may_be_dead(exptime) => {}
                    None => panic!("{context}: gone right after being stored"),
                }
            }
            StoreResult::NotStored => {
                assert!(
                    !matches!(mode, StoreMode::Set | StoreMode::Cas),
                    "{context}: only add/replace/append/prepend refuse"
                );
            }
            StoreResult::Exists => {
                assert_eq!(mode, StoreMode::Cas, "{context}");
                assert!(before.is_some(), "{context}: nothing to compare with");
            }
            StoreResult::NotFound => assert_eq!(mode, StoreMode::Cas, "{context}"),
            StoreResult::TooLarge | StoreResult::NoMemory => {
                assert!(
                    !matches!(mode, StoreMode::Append | StoreMode::Prepend),
                    "{context}: append/prepend answer NOT_STORED"
                );
                // memcached drops the stale value rather than keep serving it.
                if mode == StoreMode::Set {
                    assert_eq!(after, None, "{context}: old value left behind");
                }
            }
        }
    }

    fn arith(&self, key: &[u8], delta: u64, incr: bool) {
        let before = self.lookup(key);
        let result = self.store.arith(key, incr, delta);
        let context = format!(
            "{} {} {delta} over {before:?} -> {result:?}",
            if incr { "incr" } else { "decr" },
            key.escape_ascii()
        );
        let old = before.as_ref().map(|b| parse_counter(&b.data));
        match result {
            ArithResult::Value(value) => {
                let Some(Some(old)) = old else {
                    panic!("{context}: no number there");
                };
                let expected = if incr {
                    old.wrapping_add(delta)
                } else {
                    old.saturating_sub(delta)
                };
                assert_eq!(value, expected, "{context}");
                if let Some(after) = self.lookup(key) {
                    assert_eq!(parse_counter(&after.data), Some(value), "{context}");
                }
            }
            ArithResult::NotFound => {}
            ArithResult::NonNumeric => assert_eq!(old, Some(None), "{context}"),
            ArithResult::NoMemory => assert!(before.is_some(), "{context}"),
        }
        if before.is_none() {
            assert_eq!(result, ArithResult::NotFound, "{context}");
        }
    }

    /// Whether an item stored just now with `exptime` may already be dead
    /// when read back (the clock may tick in between).
    fn may_be_dead(&self, exptime: i64) -> bool {
        let alive = exptime == 0
            || (2..=REALTIME_MAXDELTA).contains(&exptime)
            || exptime > i64::from(unix_now()) + 1;
        self.flush_pending || !alive
    }

    fn lookup(&self, key: &[u8]) -> Option<Found> {
        let mut found = None;
        self.store.get(key, None, |hit| {
            found = Some(Found {
                flags: hit.flags,
                cas: hit.cas,
                data: hit.data.to_vec(),
            });
        });
        found
    }
}
