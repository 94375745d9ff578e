//! The shared segment: how settings become a layout, and how the segment is
//! created, reserved and removed.
//!
//! ```text
//! | Header | WorkerSlot x W | StripeLock x S | bucket heads (u32) x B | SlabClass x C |
//! | ClassCounters x W x C | ConnEntry x W x 1024 | PrefixEntry x 1025 | size histogram (u32) x (I/32 + 1) |
//! | page table (u8) x P | arena: P pages |
//! ```
//! The per-class counters and the connection table are per worker (each
//! worker writes only its own part); the prefix table and the size histogram
//! (`stats sizes`, see `sizes.rs`) are shared.
//! Everything inside is addressed by offsets (item ids are arena offsets / 8 + 1),
//! never by pointers, so that the segment means the same in every process.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};

use shared_memory::{Shmem, ShmemConf};

use super::conns::{CONNS_PER_WORKER, ConnEntry};
use super::item::ITEM_HEADER;
use super::lock::RobustMutex;
use super::prefix::{PREFIX_ENTRIES, PrefixEntry};
use super::sizes::BUCKET_BYTES;
use super::slab::SlabClass;
use super::stats::{ClassCounters, Counters};

pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMCACHE");
/// 3: the header records the layout's parameters (warm restart).
/// 5: the LRU crawler's settings and counters.
pub const LAYOUT_VERSION: u32 = 6;
/// Slab growth factor. memcached's default (`-f`) is 1.25; 1.08 wastes less
/// of each chunk (bench/memory, `-m 64`: 1.04x memcached's items at 100-byte
/// and 1 KiB values instead of 0.86x; docs/memory.md).
pub const GROWTH_FACTOR: f64 = 1.08;
/// Default room for key and value in the smallest chunk (`-n`; memcached's
/// default is 48 in a 96-byte chunk): a 64-byte chunk with our header.
pub const CHUNK_SIZE: u32 = 16;
const LINE: u64 = 64;

/// What the layout depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutParams {
    /// Bytes of item memory (`-m`).
    pub memory_limit: u64,
    /// Largest item (`-I`).
    pub item_size_max: u64,
    /// Worker slots.
    pub workers: u32,
    /// `-f`: each slab class's chunk is this much larger than the last.
    pub growth_factor: f64,
    /// `-n`: room for key and value in the smallest chunk.
    pub chunk_size: u32,
}

impl Default for LayoutParams {
    fn default() -> LayoutParams {
        LayoutParams {
            memory_limit: 64 << 20,
            item_size_max: 1 << 20,
            workers: 4,
            growth_factor: GROWTH_FACTOR,
            chunk_size: CHUNK_SIZE,
        }
    }
}

/// Where everything sits, computed once from [`LayoutParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `-I` as given.
    pub item_size_max: u64,
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
    /// `stats sizes` counters: one per 32 bytes of item up to `-I`, as
    /// memcached's (`-I 1m`: 128 KiB; `-I 1g`: 128 MiB, reserved with the rest).
    pub size_buckets: u64,
    pub off_sizes: u64,
    pub off_pages: u64,
    pub off_arena: u64,
    pub total: u64,
}

/// Bytes of a page (memcached's default `slab_page_size`).
pub const PAGE_SIZE: u64 = 1 << 20;

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Layout {
    pub fn new(p: LayoutParams) -> Result<Layout, String> {
        // memcached's slab_page_size: 1 MiB whatever `-I`. An item larger
        // than a page is chained over several (store/chain.rs), so that a
        // large `-I` does not make every class take pages of that size.
        let page_size = PAGE_SIZE;
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
        // As memcached's slabs_init: header + chunk_size, aligned to 8, then
        // each class the last times the factor (truncated), aligned to 8.
        let mut class_sizes = Vec::new();
        let mut size = align(ITEM_HEADER as u64 + u64::from(p.chunk_size), 8);
        while size <= page_size / 2 && class_sizes.len() < 200 {
            class_sizes.push(size as u32);
            size = align(((size as f64) * p.growth_factor) as u64, 8).max(size + 8);
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
        let off_sizes = align(
            off_prefixes + (PREFIX_ENTRIES as u64 + 1) * size_of::<PrefixEntry>() as u64,
            LINE,
        );
        let size_buckets = p.item_size_max / BUCKET_BYTES + 1;
        let off_pages = off_sizes + size_buckets * 4;
        let off_arena = align(off_pages + page_count, 4096);
        let total = off_arena + page_count * page_size;
        Ok(Layout {
            item_size_max: p.item_size_max,
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
            size_buckets,
            off_sizes,
            off_pages,
            off_arena,
            total,
        })
    }

    /// Largest item (header + key + value) the store can hold: one chunk,
    /// or up to `-I` chained over pages.
    pub fn largest_item(&self) -> u64 {
        self.page_size.max(self.item_size_max)
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
    /// 1 = the last instance stopped cleanly (every worker exited); cleared
    /// when an instance attaches, before it serves.
    pub clean: AtomicU32,
    /// `stats detail`: 0 = as the settings say, 1 = off, 2 = on.
    pub detail_enabled: AtomicU32,
    /// The prefix table's current epoch (`stats reset` moves it on).
    pub prefix_epoch: AtomicU32,
    /// Claims of prefix entries so far (their order).
    pub prefix_order: AtomicU32,
    /// What a SIGHUP reload changes while the workers run.
    pub live: LiveSettings,
    /// What the layout was made from (see `Fingerprint`), and its checksum.
    pub fingerprint: [AtomicU64; FINGERPRINT_LEN],
    pub fingerprint_sum: AtomicU64,
    /// 1 = a memory file (`-e`): never removed as a dead instance's segment,
    /// whatever its name.
    pub persistent: AtomicU32,
    /// `cache_memlimit`, in bytes: slab classes take no new page past it
    /// (0 = the whole arena, `-m`). Not kept across a restart, as memcached.
    pub memory_limit: AtomicU64,
    /// Guards the page pool (pages no class holds, `page_table` byte
    /// [`super::mover::POOL`]) and `pool_pages`. Taken after a class lock,
    /// never before one.
    pub pool_lock: RobustMutex,
    /// Pages in the pool (memcached's `slab_global_page_pool`).
    pub pool_pages: AtomicU32,
    /// A page move asked for by `slabs reassign` or the automover and not yet
    /// done (0 = none); see `mover::encode_move`.
    pub move_request: AtomicU32,
    /// `slabs automove` level: 0, 1 or 2.
    pub automove: AtomicU32,
    /// `slabs automove ratio`, as f64 bits.
    pub automove_ratio: AtomicU64,
    /// `stats sizes`: 0 = the histogram is off; otherwise it is on, and
    /// counts the items whose cas-unique is at least this (see `sizes.rs`).
    pub sizes_since: AtomicU64,
    /// memcached's LRU crawler, which our sweep is (see `sweep.rs`): 1 = it
    /// runs (`lru_crawler enable`, `-o lru_crawler`), 0 = it does not.
    pub crawler: AtomicU32,
    /// `lru_crawler sleep`: microseconds a requested crawl pauses after each
    /// 1,000 items (paced per tick, see `sweep.rs`).
    pub crawler_sleep: AtomicU32,
    /// `lru_crawler tocrawl`: items of each class a requested crawl checks
    /// in each worker's share (0 = all).
    pub crawler_tocrawl: AtomicU32,
    /// `lru_crawler crawl` requests so far; a worker has done its share of
    /// the last one when its slot's `crawled` equals this.
    pub crawls: AtomicU64,
    /// Classes of the last requested crawl: bit `n % 64` of word `n / 64` for
    /// class id `n` (our class index plus one); bit 0 for all of them.
    pub crawl_classes: [AtomicU64; 4],
    /// Last token handed to an item chained over pages (store/chain.rs):
    /// its pieces carry it, so that a piece is told from a stale one.
    pub chain_tokens: AtomicU64,
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
    /// The last requested crawl (`Header::crawls`) this slot's worker has
    /// walked its share for.
    pub crawled: AtomicU64,
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
    mapping: Mapping,
    pub layout: Layout,
}

/// What backs the segment.
enum Mapping {
    /// A private POSIX shm object, removed when its owner handle drops.
    Shm(Shmem),
    /// `-e`: a file (on a tmpfs) that outlives the process. The open file
    /// holds an exclusive flock for as long as any process of this instance
    /// (supervisor or worker, which inherit it) is alive.
    File {
        base: *mut u8,
        len: usize,
        file: std::fs::File,
        path: PathBuf,
    },
}

/// How a memory file was found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Missing, empty, or never finished: laid out afresh.
    New,
    /// Made by a previous instance with this layout; `clean` if it was
    /// stopped cleanly. The caller checks the contents before serving.
    Previous { clean: bool },
    /// A header that cannot be trusted: laid out afresh, for this reason.
    Discarded(String),
}

impl Segment {
    /// Create a fresh segment named uniquely for this process, reserve its
    /// memory for real, and lay it out.
    pub fn create(layout: Layout, cas_enabled: bool) -> Result<Segment, String> {
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
            .and_then(|f| reserve(&f, layout.total));
        if let Err(e) = reserved {
            return Err(format!(
                "cannot reserve {} MiB of shared memory in /dev/shm ({e}); lower -m or enlarge /dev/shm",
                layout.total >> 20
            ));
        }
        let seg = Segment {
            mapping: Mapping::Shm(shmem),
            layout,
        };
        seg.init(cas_enabled);
        Ok(seg)
    }

    /// `-e`: open (or create, 0600) the memory file at `path` and map it. A
    /// file of a previous instance must carry this layout: a mismatch is
    /// refused with a line naming what differs. The file is locked (flock) so
    /// that no two instances ever map it.
    pub fn open_file(
        path: &Path,
        layout: Layout,
        cas_enabled: bool,
    ) -> Result<(Segment, Found), String> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let shown = path.display();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open memory file {shown}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat memory file {shown}: {e}"))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.file_type().is_file() {
            return Err(format!("memory file {shown} is not a regular file"));
        }
        if meta.uid() != me {
            return Err(format!(
                "memory file {shown} belongs to uid {}, not to this process's uid {me}",
                meta.uid()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "memory file {shown} is open to other users (mode {:o}); chmod 600 it",
                meta.mode() & 0o777
            ));
        }
        lock_exclusive(&file)
            .map_err(|e| format!("memory file {shown} is in use by another shmcached ({e})"))?;
        let len = meta.len();
        let mut found = Found::New;
        if len != 0 {
            let header = read_header(&file, len)
                .map_err(|e| format!("cannot read memory file {shown}: {e}"))?;
            found = judge(&header, &layout, cas_enabled, len, Judged::File)
                .map_err(|why| format!("memory file {shown}: {why}"))?;
        }
        if !matches!(found, Found::Previous { .. }) {
            // Start from zeroes: a discarded file's old bytes must not linger.
            file.set_len(0)
                .map_err(|e| format!("cannot truncate memory file {shown}: {e}"))?;
            reserve(&file, layout.total).map_err(|e| {
                format!(
                    "cannot reserve {} MiB for memory file {shown} ({e}); lower -m or enlarge its file system",
                    layout.total >> 20
                )
            })?;
        }
        let base =
            map(&file, layout.total).map_err(|e| format!("cannot map memory file {shown}: {e}"))?;
        let seg = Segment {
            mapping: Mapping::File {
                base,
                len: layout.total as usize,
                file,
                path: path.to_path_buf(),
            },
            layout,
        };
        if matches!(found, Found::New | Found::Discarded(_)) {
            seg.init(cas_enabled);
        }
        Ok((seg, found))
    }

    /// After an in-place upgrade (execve): map the segment the previous image
    /// used, from the descriptor it left open (`-e`) or by its shm name. The
    /// workers of the previous image still use it: nothing is changed.
    pub fn adopt(
        layout: Layout,
        cas_enabled: bool,
        inherited: Inherited,
    ) -> Result<Segment, String> {
        let mapping = match inherited {
            Inherited::File { file, path } => {
                let len = file.metadata().map_err(|e| e.to_string())?.len();
                if len < layout.total {
                    return Err(format!(
                        "the running segment is {len} bytes, this binary's layout needs {}",
                        layout.total
                    ));
                }
                let base = map(&file, layout.total).map_err(|e| e.to_string())?;
                Mapping::File {
                    base,
                    len: layout.total as usize,
                    file,
                    path,
                }
            }
            Inherited::Shm(name) => {
                let mut shmem = ShmemConf::new()
                    .os_id(&name)
                    .open()
                    .map_err(|e| format!("cannot open the running segment {name}: {e}"))?;
                // From now on this image removes it at its clean exit.
                shmem.set_owner(true);
                if shmem.len() < layout.total as usize {
                    return Err(format!(
                        "the running segment is {} bytes, this binary's layout needs {}",
                        shmem.len(),
                        layout.total
                    ));
                }
                Mapping::Shm(shmem)
            }
        };
        let seg = Segment { mapping, layout };
        match judge(
            &seg.header_bytes(),
            &seg.layout,
            cas_enabled,
            seg.layout.total,
            Judged::Running,
        )? {
            Found::Previous { .. } => Ok(seg),
            Found::Discarded(why) => Err(format!("the running segment is not usable: {why}")),
            Found::New => Err("the running segment is empty".into()),
        }
    }

    fn header_bytes(&self) -> Vec<u8> {
        let n = size_of::<Header>();
        // SAFETY: the mapping is at least a header long (layout.total > header).
        unsafe { std::slice::from_raw_parts(self.base(), n) }.to_vec()
    }

    fn init(&self, cas_enabled: bool) {
        let l = &self.layout;
        let base = self.base();
        // SAFETY: the mapping is `l.total` bytes, fresh and zeroed (tmpfs), and
        // no other process exists yet; every offset below is inside it and
        // aligned by `Layout::new`.
        unsafe {
            for i in 0..l.stripes as u64 {
                RobustMutex::init(base.add((l.off_stripes + i * 64) as usize) as *mut RobustMutex);
            }
            RobustMutex::init(&raw mut (*(base as *mut Header)).pool_lock);
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
        // memcached's defaults; the supervisor sets the settings' values.
        h.crawler.store(1, Relaxed);
        h.crawler_sleep.store(100, Relaxed);
        let record = Fingerprint::of(l, cas_enabled);
        for (slot, value) in h.fingerprint.iter().zip(record.values()) {
            slot.store(value, Relaxed);
        }
        h.fingerprint_sum.store(record.checksum(), Relaxed);
        h.persistent.store(self.is_persistent() as u32, Relaxed);
        h.magic.store(MAGIC, std::sync::atomic::Ordering::Release);
    }

    /// Warm restart: make every lock new (their owners were processes of the
    /// previous life, whose pids may be in use again) and forget what belonged
    /// to those processes: worker slots, their counters and connection tables,
    /// the prefix table, the size histogram (off, as memcached starts). Items, the cas counter, the flush marks and the start
    /// time (`uptime` goes on counting, as memcached's) stay.
    ///
    /// Call only while no other process maps the segment (the flock proves it).
    pub fn reset_process_state(&self) {
        let l = &self.layout;
        let base = self.base();
        // SAFETY: no other process maps the segment (we hold the memory
        // file's exclusive flock and every process that inherited it is gone),
        // so no lock is in use and no slot, counter or table is being read or
        // written. The regions are those `Layout::new` placed inside the mapping,
        // and all-zero is a valid value of each (see `Segment::create`).
        unsafe {
            for i in 0..l.stripes as u64 {
                RobustMutex::init(base.add((l.off_stripes + i * 64) as usize) as *mut RobustMutex);
            }
            RobustMutex::init(&raw mut (*(base as *mut Header)).pool_lock);
            for i in 0..l.class_sizes.len() {
                let class =
                    base.add(l.off_classes as usize + i * size_of::<SlabClass>()) as *mut SlabClass;
                RobustMutex::init(&raw mut (*class).lock);
            }
            let zero = |from: u64, to: u64| {
                std::ptr::write_bytes(base.add(from as usize), 0, (to - from) as usize)
            };
            zero(l.off_slots, l.off_stripes);
            // Class counters, connection tables, prefixes, size histogram.
            zero(l.off_class_stats, l.off_pages);
        }
        use std::sync::atomic::Ordering::Relaxed;
        let h = self.header();
        h.verbosity.store(0, Relaxed);
        h.detail_enabled.store(0, Relaxed);
        h.memory_limit.store(0, Relaxed);
        h.move_request.store(0, Relaxed);
        h.prefix_epoch.store(0, Relaxed);
        h.prefix_order.store(0, Relaxed);
        h.sizes_since.store(0, Relaxed);
        // The slots' `crawled` are zero again: no crawl is waiting.
        h.crawls.store(0, Relaxed);
    }

    /// Empty the whole segment and lay it out again (a memory file whose
    /// contents failed the check). Same precondition as `reset_process_state`.
    pub fn wipe(&self, cas_enabled: bool) {
        // SAFETY: as in `reset_process_state`: nobody else maps the segment;
        // the range is the whole mapping.
        unsafe { std::ptr::write_bytes(self.base(), 0, self.layout.total as usize) };
        self.init(cas_enabled);
    }

    /// A clean stop: every worker has exited. Mark the header clean and push
    /// the mapping to the file (a no-op on tmpfs; matters on a disk).
    pub fn mark_clean(&self) {
        self.header()
            .clean
            .store(1, std::sync::atomic::Ordering::SeqCst);
        if let Mapping::File { base, len, .. } = &self.mapping {
            // SAFETY: base/len is our own live mapping.
            unsafe { libc::msync(base.cast(), *len, libc::MS_SYNC) };
        }
    }

    pub fn base(&self) -> *mut u8 {
        match &self.mapping {
            Mapping::Shm(s) => s.as_ptr(),
            Mapping::File { base, .. } => *base,
        }
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the header sits at offset 0 of a mapping at least that large,
        // page aligned, and holds only atomics.
        unsafe { &*(self.base() as *const Header) }
    }

    /// Path of the segment: in /dev/shm, or the memory file.
    pub fn path(&self) -> String {
        match &self.mapping {
            Mapping::Shm(s) => format!("/dev/shm/{}", s.get_os_id().trim_start_matches('/')),
            Mapping::File { path, .. } => path.display().to_string(),
        }
    }

    /// What an upgraded image needs to map this segment again: the memory
    /// file's descriptor (with its lock), or the shm name.
    pub fn handover(&self) -> Handover {
        match &self.mapping {
            Mapping::Shm(s) => Handover::Shm(s.get_os_id().trim_start_matches('/').to_string()),
            Mapping::File { file, path, .. } => {
                use std::os::fd::AsRawFd;
                Handover::File(file.as_raw_fd(), path.clone())
            }
        }
    }

    /// The memory file persists; a private segment is removed on drop.
    pub fn is_persistent(&self) -> bool {
        matches!(self.mapping, Mapping::File { .. })
    }

    /// In a forked worker: never remove the segment when this handle drops.
    pub fn disown(&mut self) {
        if let Mapping::Shm(s) = &mut self.mapping {
            s.set_owner(false);
        }
    }
}

/// How an image passes the segment to the next one (see [`Segment::handover`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Handover {
    Shm(String),
    File(std::os::fd::RawFd, PathBuf),
}

/// What an upgraded image received (see [`Segment::adopt`]).
pub enum Inherited {
    Shm(String),
    File { file: std::fs::File, path: PathBuf },
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Mapping::File { base, len, .. } = &self.mapping {
            // SAFETY: our own mapping; nothing borrowed from it outlives the
            // Segment (the Store that hands out references owns it).
            unsafe { libc::munmap(base.cast(), *len) };
        }
    }
}

/// An upgrade's preflight, in the new binary: would it attach to the running
/// segment at `path` with this layout? Reads the header only.
pub fn check_running(path: &Path, layout: &Layout, cas_enabled: bool) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let header = read_header(&file, len).map_err(|e| e.to_string())?;
    match judge(&header, layout, cas_enabled, len, Judged::Running)? {
        Found::Previous { .. } => Ok(()),
        Found::Discarded(why) => Err(why),
        Found::New => Err("the running segment is empty".into()),
    }
}

/// Reserve `total` bytes of `file` for real (not a sparse file).
fn reserve(file: &std::fs::File, total: u64) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an fd we own for the call's duration.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, total as i64) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc).to_string())
    }
}

fn map(file: &std::fs::File, len: u64) -> std::io::Result<*mut u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks
    // the address. The file is at least `len` bytes (reserved or checked).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// flock(LOCK_EX) without waiting long: the workers of an instance killed a
/// moment ago (they die with their supervisor) may still hold it briefly.
fn lock_exclusive(file: &std::fs::File) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e.to_string());
        }
        if std::time::Instant::now() >= deadline {
            return Err("it is locked".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The first bytes of the file, as many as a header takes.
fn read_header(file: &std::fs::File, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; size_of::<Header>().min(len as usize)];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// What a refused segment is, for the remedy a refusal names.
#[derive(Clone, Copy)]
enum Judged {
    /// A memory file (`-e`): the operator can remove it.
    File,
    /// The running daemon's segment, judged by an upgrade's new binary: the
    /// old binary goes on serving, and a restart starts empty.
    Running,
}

impl Judged {
    fn remedy(self) -> &'static str {
        match self {
            Judged::File => "remove the file to start with an empty cache",
            Judged::Running => "restart shmcached instead of upgrading (the cache starts empty)",
        }
    }

    fn same_settings(self) -> &'static str {
        match self {
            Judged::File => {
                "start with the settings it was made with, or remove the file to start with an empty cache"
            }
            Judged::Running => {
                "upgrade with the settings the running daemon has, or restart shmcached (the cache starts empty)"
            }
        }
    }
}

/// Decide what a memory file of `len` bytes whose header is `bytes` is, for
/// this layout; Err = refuse to start (a mismatch the operator must settle).
fn judge(
    bytes: &[u8],
    layout: &Layout,
    cas_enabled: bool,
    len: u64,
    what: Judged,
) -> Result<Found, String> {
    let word = |at: usize, n: usize| -> u64 {
        let mut v = [0u8; 8];
        if let Some(b) = bytes.get(at..at + n) {
            v[..n].copy_from_slice(b);
        }
        u64::from_le_bytes(v)
    };
    let magic = word(std::mem::offset_of!(Header, magic), 8);
    if magic == 0 && bytes.len() == size_of::<Header>() && len == layout.total {
        return Ok(Found::Discarded(
            "its layout was never completed (killed while starting)".into(),
        ));
    }
    if magic != MAGIC || bytes.len() < size_of::<Header>() {
        return Err(
            "not a shmcached memory file (no shmcached header); refusing to overwrite it".into(),
        );
    }
    let version = word(std::mem::offset_of!(Header, version), 4) as u32;
    if version != LAYOUT_VERSION {
        return Err(format!(
            "made by a shmcached with segment layout version {version}, this one uses \
             {LAYOUT_VERSION}; {}",
            what.remedy()
        ));
    }
    let at = std::mem::offset_of!(Header, fingerprint);
    let stored: Vec<u64> = (0..FINGERPRINT_LEN).map(|i| word(at + i * 8, 8)).collect();
    let sum = word(std::mem::offset_of!(Header, fingerprint_sum), 8);
    if sum != checksum(&stored) {
        return Ok(Found::Discarded(
            "its header's layout record fails its checksum".into(),
        ));
    }
    let wanted = Fingerprint::of(layout, cas_enabled);
    for ((name, hint), (&had, want)) in FINGERPRINT_NAMES
        .iter()
        .zip(stored.iter().zip(wanted.values()))
    {
        if had != want && *name == "structure checksum" {
            return Err(format!(
                "made by a build that lays the segment out differently ({name} {had:x}, this \
                 build's {want:x}); {}",
                what.remedy()
            ));
        }
        if had != want {
            return Err(format!(
                "made with {name} = {had}, this start asks for {want} ({hint}); {}",
                what.same_settings()
            ));
        }
    }
    if len != layout.total {
        return Ok(Found::Discarded(format!(
            "it is {len} bytes long, its layout needs {}",
            layout.total
        )));
    }
    let clean = word(std::mem::offset_of!(Header, clean), 4) == 1;
    Ok(Found::Previous { clean })
}

const FINGERPRINT_LEN: usize = 9;

/// What a segment's layout was made from, kept in its header (with a
/// checksum) so that a later start can tell whether it may attach.
const FINGERPRINT_NAMES: [(&str, &str); FINGERPRINT_LEN] = [
    ("memory_limit bytes", "-m / memory_limit_mb"),
    ("item_size_max", "-I / item_size_max"),
    ("worker slots", "-t / max_workers"),
    ("cas_enabled", "-C / cas_enabled"),
    ("page size", "follows -I"),
    ("slab classes", "follows -I, -f and -n"),
    ("hash buckets (log2)", "follows -m"),
    ("segment bytes", "follows -m, -I and the worker slots"),
    (
        "structure checksum",
        "region offsets and record sizes of this build",
    ),
];

struct Fingerprint([u64; FINGERPRINT_LEN]);

impl Fingerprint {
    fn of(l: &Layout, cas_enabled: bool) -> Fingerprint {
        Fingerprint([
            l.page_count as u64 * l.page_size,
            l.item_size_max,
            l.worker_slots as u64,
            cas_enabled as u64,
            l.page_size,
            l.class_sizes.len() as u64,
            l.bucket_bits as u64,
            l.total,
            structure(l),
        ])
    }

    fn values(&self) -> [u64; FINGERPRINT_LEN] {
        self.0
    }

    fn checksum(&self) -> u64 {
        checksum(&self.0)
    }
}

/// Where each region starts and how big each record is: two binaries that
/// agree on this read the segment the same way (a counter or a header field
/// added without a new LAYOUT_VERSION would otherwise go unnoticed).
fn structure(l: &Layout) -> u64 {
    let sizes = [
        size_of::<Header>(),
        size_of::<WorkerSlot>(),
        size_of::<RobustMutex>(),
        size_of::<SlabClass>(),
        size_of::<ClassCounters>(),
        size_of::<ConnEntry>(),
        size_of::<PrefixEntry>(),
        super::item::ITEM_HEADER,
    ];
    let offsets = [
        l.off_slots,
        l.off_stripes,
        l.off_buckets,
        l.off_classes,
        l.off_class_stats,
        l.off_conns,
        l.off_prefixes,
        l.off_sizes,
        l.off_pages,
        l.off_arena,
    ];
    let values: Vec<u64> = sizes
        .iter()
        .map(|&s| s as u64)
        .chain(offsets)
        .chain(l.class_sizes.iter().map(|&c| c as u64))
        .collect();
    checksum(&values)
}

fn checksum(values: &[u64]) -> u64 {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes) ^ MAGIC
}

/// A `-e` memory file that happens to be named like a private segment: one
/// an instance holds locked (it may be laying it out, its header still
/// blank), an empty one, or one whose header says so.
fn is_memory_file(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock on an fd we own; a shared lock taken here is released
    // when `file` closes at the end of this function.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
        return true;
    }
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        // Just created by an instance about to lock it; an empty file of a
        // dead one costs nothing to leave.
        return true;
    }
    let Ok(header) = read_header(&file, len) else {
        return false;
    };
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    header.get(..8) == Some(&MAGIC.to_le_bytes()[..])
        && word(std::mem::offset_of!(Header, persistent)) == Some(1)
}

/// Segments are named `shmcached-<pid>-<nonce>`.
const SEGMENT_PREFIX: &str = "shmcached-";

/// Remove segments left by a shmcached that died without cleaning up (its pid
/// is gone) and that belong to us.
fn remove_stale_segments() {
    remove_stale_segments_in(Path::new("/dev/shm"));
}

fn remove_stale_segments_in(dir: &Path) {
    let Ok(dir) = std::fs::read_dir(dir) else {
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
        if ours && dead && !is_memory_file(&entry.path()) {
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
            ..LayoutParams::default()
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
        assert_eq!(l.off_sizes % 64, 0);
        // memcached's buckets: one per 32 bytes up to -I, both ends counted.
        assert_eq!(l.size_buckets, (1 << 20) / 32 + 1);
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
    fn a_file_of_another_build_or_layout_is_refused_and_a_garbled_header_discarded() {
        use std::sync::atomic::Ordering::Relaxed;
        let path = std::env::temp_dir().join(format!("shmcached-seg-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let layout = || {
            Layout::new(LayoutParams {
                memory_limit: 2 << 20,
                item_size_max: 1 << 20,
                workers: 1,
                ..LayoutParams::default()
            })
            .unwrap()
        };
        let tamper = |f: &dyn Fn(&Header)| {
            let (seg, _) = Segment::open_file(&path, layout(), true).unwrap();
            f(seg.header());
        };
        let (_, found) = Segment::open_file(&path, layout(), true).unwrap();
        assert_eq!(found, Found::New);
        // Another build: its structure differs (and its record is intact).
        tamper(&|h| {
            h.fingerprint[FINGERPRINT_LEN - 1].fetch_add(1, Relaxed);
            let values: Vec<u64> = h.fingerprint.iter().map(|v| v.load(Relaxed)).collect();
            h.fingerprint_sum.store(checksum(&values), Relaxed);
        });
        let e = Segment::open_file(&path, layout(), true).err().unwrap();
        assert!(e.contains("lays the segment out differently"), "{e}");
        assert!(e.contains("remove the file"), "{e}");
        // An upgrade that meets it is told to restart: a running segment is
        // no file the operator removes.
        let e = check_running(&path, &layout(), true).err().unwrap();
        assert!(e.contains("lays the segment out differently"), "{e}");
        assert!(e.contains("restart shmcached instead of upgrading"), "{e}");
        assert!(!e.contains("file"), "{e}");
        // A garbled record: discarded, not refused.
        std::fs::remove_file(&path).unwrap();
        tamper(&|h| {
            h.fingerprint_sum.fetch_add(1, Relaxed);
        });
        let (_, found) = Segment::open_file(&path, layout(), true).unwrap();
        assert!(
            matches!(found, Found::Discarded(ref why) if why.contains("checksum")),
            "{found:?}"
        );
        // Laid out again: attaches.
        let (_, found) = Segment::open_file(&path, layout(), true).unwrap();
        assert_eq!(found, Found::Previous { clean: false });
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_sweep_removes_dead_segments_but_never_a_memory_file() {
        let dir = std::env::temp_dir().join(format!("shmcached-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let name = |tag: &str| dir.join(format!("{SEGMENT_PREFIX}{dead}-{tag}"));
        std::fs::write(name("1f"), vec![7u8; 8192]).unwrap();
        std::fs::write(name("2e"), b"").unwrap();
        let layout = Layout::new(LayoutParams {
            memory_limit: 2 << 20,
            item_size_max: 1 << 20,
            workers: 1,
            ..LayoutParams::default()
        })
        .unwrap();
        drop(Segment::open_file(&name("cafe"), layout, true).unwrap());
        // Being laid out: locked, header still blank.
        std::fs::write(name("beef"), vec![0u8; 8192]).unwrap();
        let held = std::fs::File::open(name("beef")).unwrap();
        lock_exclusive(&held).unwrap();
        remove_stale_segments_in(&dir);
        assert!(!name("1f").exists(), "a dead instance's segment goes");
        assert!(name("2e").exists() && name("cafe").exists() && name("beef").exists());
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn too_little_memory_is_refused() {
        let e = Layout::new(LayoutParams {
            memory_limit: 1 << 19,
            item_size_max: 1 << 20,
            workers: 1,
            ..LayoutParams::default()
        });
        assert!(e.is_err());
    }
}
