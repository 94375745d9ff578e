//! The shared segment: how settings become a layout, and how the segment is
//! created, reserved and removed.
//!
//! ```text
//! | Header | WorkerSlot x W | StripeLock x S | bucket heads (u32) x B | SlabClass x C |
//! | ClassCounters x W x C | ConnEntry x W x 1024 | PrefixEntry x 1025 | page table (u8) x P | arena: P pages |
//! ```
//! The per-class counters and the connection table are per worker (each
//! worker writes only its own part); the prefix table is shared.
//! Everything inside is addressed by offsets (item ids are arena offsets / 8 + 1),
//! never by pointers, so that the segment means the same in every process.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64};

use shared_memory::{Shmem, ShmemConf};

use super::conns::{CONNS_PER_WORKER, ConnEntry};
use super::lock::RobustMutex;
use super::prefix::{PREFIX_ENTRIES, PrefixEntry};
use super::slab::SlabClass;
use super::stats::{ClassCounters, Counters};

pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMCACHE");
pub const LAYOUT_VERSION: u32 = 2;
/// Slab growth factor. memcached's default (`-f`) is 1.25; 1.08 wastes less
/// of each chunk (bench/memory, `-m 64`: 1.04x memcached's items at 100-byte
/// and 1 KiB values instead of 0.86x; docs/memory.md).
pub const GROWTH_FACTOR: f64 = 1.08;
/// Smallest chunk: an item header plus a short key and value.
pub const MIN_CHUNK: u64 = 64;
const LINE: u64 = 64;

/// What the layout depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutParams {
    /// Bytes of item memory (`-m`).
    pub memory_limit: u64,
    /// Largest item (`-I`).
    pub item_size_max: u64,
    /// Worker slots.
    pub workers: u32,
}

/// Where everything sits, computed once from [`LayoutParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub page_size: u64,
    pub page_count: u32,
    /// Chunk size of each slab class, ascending; the last one is a whole page.
    pub class_sizes: Vec<u32>,
    pub stripes: u32,
    pub bucket_bits: u32,
    pub worker_slots: u32,
    pub off_slots: u64,
    pub off_stripes: u64,
    pub off_buckets: u64,
    pub off_classes: u64,
    pub off_class_stats: u64,
    pub off_conns: u64,
    pub off_prefixes: u64,
    pub off_pages: u64,
    pub off_arena: u64,
    pub total: u64,
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Layout {
    pub fn new(p: LayoutParams) -> Result<Layout, String> {
        let page_size = align(p.item_size_max.max(1 << 20), 8);
        let page_count = p.memory_limit / page_size;
        if page_count == 0 {
            return Err(format!(
                "memory limit {} bytes is smaller than one page ({} bytes)",
                p.memory_limit, page_size
            ));
        }
        // Item ids are u32 units of 8 bytes.
        if page_count * page_size >= (u32::MAX as u64) * 8 {
            return Err("memory limit over 32 GiB is not supported".into());
        }
        let mut class_sizes = Vec::new();
        let mut size = MIN_CHUNK;
        while size <= page_size / 2 && class_sizes.len() < 200 {
            class_sizes.push(size as u32);
            size = align(((size as f64) * GROWTH_FACTOR) as u64, 8);
        }
        class_sizes.push(page_size as u32);
        // One bucket per ~128 bytes of memory, at least 2^12: chains stay short
        // with small items while the index costs ~3 % of -m.
        let buckets = (p.memory_limit / 128).next_power_of_two().max(1 << 12);
        let bucket_bits = buckets.trailing_zeros();
        let stripes: u32 = 1024.min(buckets as u32);
        let worker_slots = p.workers;

        let off_slots = align(size_of::<Header>() as u64, LINE);
        let off_stripes = off_slots + worker_slots as u64 * size_of::<WorkerSlot>() as u64;
        let off_buckets = off_stripes + stripes as u64 * size_of::<RobustMutex>() as u64;
        let off_classes = align(off_buckets + buckets * 4, LINE);
        let classes = class_sizes.len() as u64;
        let off_class_stats = off_classes + classes * size_of::<SlabClass>() as u64;
        let off_conns = align(
            off_class_stats + worker_slots as u64 * classes * size_of::<ClassCounters>() as u64,
            LINE,
        );
        let off_prefixes = off_conns
            + worker_slots as u64 * CONNS_PER_WORKER as u64 * size_of::<ConnEntry>() as u64;
        let off_pages =
            off_prefixes + (PREFIX_ENTRIES as u64 + 1) * size_of::<PrefixEntry>() as u64;
        let off_arena = align(off_pages + page_count, 4096);
        let total = off_arena + page_count * page_size;
        Ok(Layout {
            page_size,
            page_count: page_count as u32,
            class_sizes,
            stripes,
            bucket_bits,
            worker_slots,
            off_slots,
            off_stripes,
            off_buckets,
            off_classes,
            off_class_stats,
            off_conns,
            off_prefixes,
            off_pages,
            off_arena,
            total,
        })
    }

    /// Largest item (header + key + value) the store can hold.
    pub fn largest_item(&self) -> u64 {
        self.page_size
    }
}

/// The segment's first bytes.
#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub page_count: AtomicU32,
    pub page_size: AtomicU64,
    /// Unix time the segment was made (memcached's process_started).
    pub started: AtomicU64,
    /// Last cas-unique handed out.
    pub cas: AtomicU64,
    /// flush_all: items last touched at or before this unix second are gone,
    /// once that second has come (0 = no flush).
    pub oldest_live: AtomicU32,
    /// Pages handed to slab classes so far.
    pub pages_used: AtomicU32,
    /// flush_all: items with a smaller cas are gone (0 = none).
    pub oldest_cas: AtomicU64,
    /// `verbosity` as last set by a client, plus one (0 = never set).
    pub verbosity: AtomicU32,
    /// Set on a clean shutdown (for warm restart, later).
    pub clean: AtomicU32,
    /// `stats detail`: 0 = as the settings say, 1 = off, 2 = on.
    pub detail_enabled: AtomicU32,
    /// The prefix table's current epoch (`stats reset` moves it on).
    pub prefix_epoch: AtomicU32,
    /// Claims of prefix entries so far (their order).
    pub prefix_order: AtomicU32,
    /// What a SIGHUP reload changes while the workers run.
    pub live: LiveSettings,
}

/// Settings a SIGHUP reload changes while the workers run: the supervisor
/// stores them, each worker loads them every tick of its loop.
#[repr(C)]
pub struct LiveSettings {
    /// `-c`.
    pub max_connections: AtomicU32,
    /// `-R`.
    pub reqs_per_event: AtomicU32,
    /// `-o idle_timeout`, in milliseconds.
    pub idle_timeout_ms: AtomicU64,
    /// `-t`: worker slots in service; the slots past it are dormant.
    pub workers: AtomicU32,
}

/// What the segment records about one worker slot.
#[repr(C, align(64))]
pub struct WorkerSlot {
    /// Pid of the worker serving this slot (0 = none).
    pub pid: AtomicU32,
    /// Item id the worker has allocated and not yet published (0 = none): the
    /// supervisor frees or publishes it if the worker dies.
    pub inflight: AtomicU32,
    /// Unix time the current worker started.
    pub started: AtomicU64,
    /// How many times this slot's worker was replaced.
    pub restarts: AtomicU64,
    /// 1 once the current worker's event loop is set up (it accepts); the
    /// supervisor clears it when the worker is gone. READY=1 waits for it.
    pub ready: AtomicU32,
    /// What the worker does with its connections when it drains: 0 = close
    /// them (shutdown), n = pass them to slot n - 1's worker (a reload).
    pub handoff: AtomicU32,
    /// CLOCK_MONOTONIC milliseconds of the worker loop's last tick.
    pub heartbeat_ms: AtomicU64,
    pub counters: Counters,
}

impl WorkerSlot {
    /// The worker's loop is alive now.
    pub fn beat(&self) {
        self.heartbeat_ms
            .store(monotonic_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the worker's loop last ticked.
    pub fn since_beat(&self) -> std::time::Duration {
        let last = self.heartbeat_ms.load(std::sync::atomic::Ordering::Relaxed);
        std::time::Duration::from_millis(monotonic_ms().saturating_sub(last))
    }
}

/// CLOCK_MONOTONIC in milliseconds: one clock for every process.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A created (or attached) segment mapping. The supervisor owns it; a forked
/// worker must call [`Segment::disown`] at once so that its exit never removes it.
pub struct Segment {
    shmem: Shmem,
    pub layout: Layout,
}

impl Segment {
    /// Create a fresh segment named uniquely for this process, reserve its
    /// memory for real, and lay it out.
    pub fn create(layout: Layout) -> Result<Segment, String> {
        remove_stale_segments();
        let name = format!(
            "{SEGMENT_PREFIX}{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let shmem = ShmemConf::new()
            .size(layout.total as usize)
            .os_id(&name)
            .create()
            .map_err(|e| format!("cannot create shared memory segment /dev/shm/{name}: {e}"))?;
        // ftruncate made a sparse file: touching a page that tmpfs cannot back
        // would be a SIGBUS later. Reserve it all now and fail cleanly instead.
        let path = format!("/dev/shm/{name}");
        let reserved = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                // SAFETY: plain syscall on an fd we own for the call's duration.
                let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, layout.total as i64) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(rc).to_string())
                }
            });
        if let Err(e) = reserved {
            return Err(format!(
                "cannot reserve {} MiB of shared memory in /dev/shm ({e}); lower -m or enlarge /dev/shm",
                layout.total >> 20
            ));
        }
        let seg = Segment { shmem, layout };
        seg.init();
        Ok(seg)
    }

    fn init(&self) {
        let l = &self.layout;
        let base = self.shmem.as_ptr();
        // SAFETY: the mapping is `l.total` bytes, fresh and zeroed (tmpfs), and
        // no other process exists yet; every offset below is inside it and
        // aligned by `Layout::new`.
        unsafe {
            for i in 0..l.stripes as u64 {
                RobustMutex::init(base.add((l.off_stripes + i * 64) as usize) as *mut RobustMutex);
            }
            for (i, &size) in l.class_sizes.iter().enumerate() {
                let class =
                    base.add(l.off_classes as usize + i * size_of::<SlabClass>()) as *mut SlabClass;
                SlabClass::init(class, size, (l.page_size / size as u64) as u32);
            }
        }
        let h = self.header();
        use std::sync::atomic::Ordering::Relaxed;
        h.version.store(LAYOUT_VERSION, Relaxed);
        h.page_count.store(l.page_count, Relaxed);
        h.page_size.store(l.page_size, Relaxed);
        h.started.store(super::unix_now() as u64, Relaxed);
        h.magic.store(MAGIC, std::sync::atomic::Ordering::Release);
    }

    pub fn base(&self) -> *mut u8 {
        self.shmem.as_ptr()
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the header sits at offset 0 of a mapping at least that large,
        // page aligned, and holds only atomics.
        unsafe { &*(self.base() as *const Header) }
    }

    /// Path of the segment in /dev/shm.
    pub fn path(&self) -> String {
        format!(
            "/dev/shm/{}",
            self.shmem.get_os_id().trim_start_matches('/')
        )
    }

    /// In a forked worker: never remove the segment when this handle drops.
    pub fn disown(&mut self) {
        self.shmem.set_owner(false);
    }
}

/// Segments are named `shmcached-<pid>-<nonce>`.
const SEGMENT_PREFIX: &str = "shmcached-";

/// Remove segments left by a shmcached that died without cleaning up (its pid
/// is gone) and that belong to us.
fn remove_stale_segments() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SEGMENT_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        let ours = entry.metadata().map(|m| m.uid() == me).unwrap_or(false);
        // SAFETY: kill with signal 0 only checks that the pid exists.
        let dead = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ours && dead {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::item::ITEM_HEADER;
    use super::*;

    #[test]
    fn default_layout_fits_and_is_aligned() {
        let l = Layout::new(LayoutParams {
            memory_limit: 64 << 20,
            item_size_max: 1 << 20,
            workers: 4,
        })
        .unwrap();
        assert_eq!(l.page_size, 1 << 20);
        assert_eq!(l.page_count, 64);
        assert_eq!(l.off_arena % 4096, 0);
        assert_eq!(l.off_stripes % 64, 0);
        assert_eq!(l.off_classes % 64, 0);
        assert_eq!(l.off_class_stats % 8, 0);
        assert_eq!(l.off_conns % 64, 0);
        assert_eq!(l.off_prefixes % 64, 0);
        assert!(*l.class_sizes.last().unwrap() as u64 == l.page_size);
        assert!(
            l.class_sizes
                .windows(2)
                .all(|w| w[0] < w[1] && w[0] % 8 == 0)
        );
        // The index and bookkeeping cost well under 10 % of -m.
        assert!(l.off_arena < (64 << 20) / 10, "overhead {}", l.off_arena);
        assert!(ITEM_HEADER as u32 <= l.class_sizes[0]);
    }

    #[test]
    fn too_little_memory_is_refused() {
        let e = Layout::new(LayoutParams {
            memory_limit: 1 << 19,
            item_size_max: 1 << 20,
            workers: 1,
        });
        assert!(e.is_err());
    }
}
