//! Bytes <-> commands. Pure: no I/O, no knowledge of the segment.
//!
//! The worker hands a connection's read buffer to [`parse`]; it gets back one
//! [`Parsed`] at a time (a command, an error reply to send, or "need more bytes")
//! and renders replies with the functions in [`reply`].
//!
//! Two dialects share one parser entry point:
//! - memcached's classic text protocol (`text.rs`), byte for byte as memcached 1.6.18;
//! - the seed's dialect (`seed.rs`): a line whose first word is `SET`, `GET` or
//!   `DELETE` in upper case. Its replies are rendered by `reply::seed_*` and the
//!   connection closes after each one.
//!
//! memcached's binary protocol (`binary.rs`) has its own request type and
//! entry point: a connection speaks one or the other (see [`Dialect`]).
//!
//! With `-Y`, a connection that has not authenticated yet is read by
//! [`auth::parse`] instead, as memcached reads it.

pub mod auth;
pub mod binary;
pub mod meta;
pub mod render;
pub mod reply;
pub mod seed;
pub mod text;

/// Longest key memcached accepts (`KEY_MAX_LENGTH`).
pub const KEY_MAX_LENGTH: usize = 250;
/// A command line longer than this without a newline closes the connection
/// (unless it starts with `get `/`gets `).
pub const LINE_MAX: usize = 2048;

/// How a storage command treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// `cas`: store only if the item's cas-unique still equals the given one.
    Cas,
}

/// One request, borrowing from the connection's read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `get`/`gets` (`with_cas`), and `gat`/`gats` when `touch` holds the exptime.
    /// `keys` is the rest of the line: one or more keys separated by spaces, each
    /// already checked (<= 250 bytes); iterate with [`keys`].
    Get {
        keys: &'a [u8],
        with_cas: bool,
        touch: Option<i64>,
    },
    /// set/add/replace/append/prepend/cas with its data block (without the
    /// trailing `\r\n`). `cas_unique` is 0 except for [`StoreMode::Cas`].
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        data: &'a [u8],
        cas_unique: u64,
        noreply: bool,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    /// incr (`incr == true`) or decr.
    Arith {
        key: &'a [u8],
        delta: u64,
        incr: bool,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`; delay 0 = now.
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    /// `cache_memlimit <megabytes> [noreply]` (a 32-bit number, as memcached
    /// reads it).
    CacheMemlimit {
        megabytes: u32,
        noreply: bool,
    },
    /// `slabs reassign <src> <dst>`: move one page (class ids as `stats slabs`
    /// numbers them; memcached's -1 and 0 are passed on as they are).
    SlabsReassign {
        src: i32,
        dst: i32,
    },
    /// `slabs automove <0|1|2> [noreply]`.
    SlabsAutomove {
        level: u32,
        noreply: bool,
    },
    /// `slabs automove ratio <ratio> [noreply]` (any number C's `strtod` reads,
    /// unchecked, as memcached).
    SlabsAutomoveRatio {
        ratio: Ratio,
        noreply: bool,
    },
    /// `lru_crawler metadump <all|hash|<id>[,<id>...]>`: a line per live item
    /// of the classes asked for (`None`: all).
    MetaDump {
        classes: Option<ClassIds>,
    },
    /// `lru_crawler crawl|sleep|tocrawl|enable|disable ...` (`metadump` is
    /// [`Command::MetaDump`]).
    LruCrawler(Crawler),
    /// `stats [group ...]`: `args` is the rest of the line after `stats` (may be empty).
    Stats {
        args: &'a [u8],
    },
    /// `shutdown [graceful]`; only parsed when [`Limits::shutdown_enabled`].
    Shutdown {
        graceful: bool,
    },
    Quit,
    /// `mg`, `ms`, `md`, `ma`, `mn`, `me` ([`meta`]).
    Meta(meta::Meta<'a>),
    /// The seed's `SET <name> <size>` with its `size` data bytes.
    SeedSet {
        name: &'a [u8],
        data: &'a [u8],
    },
    /// The seed's `GET <name>`.
    SeedGet {
        name: &'a [u8],
    },
    /// The seed's `DELETE <name>`.
    SeedDelete {
        name: &'a [u8],
    },
}

/// The number of `slabs automove ratio`, compared by its bits so that a
/// [`Command`] stays `Eq` (a NaN equals itself).
#[derive(Debug, Clone, Copy)]
pub struct Ratio(pub f64);

impl PartialEq for Ratio {
    fn eq(&self, other: &Ratio) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Ratio {}

/// What the parser made of the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A complete command that took `consumed` bytes off the buffer.
    Command {
        command: Command<'a>,
        consumed: usize,
    },
    /// Not enough bytes yet: read more and call again with the same buffer start.
    /// (A line over [`LINE_MAX`] without a newline is not `Incomplete`: it is an
    /// `Error` with `close`.)
    Incomplete,
    /// The request was bad. Send `reply` (may be empty, e.g. noreply or a silent
    /// close), drop `consumed` bytes, then drop `swallow` more bytes as they arrive
    /// (memcached's conn_swallow for a too-large value), then close the
    /// connection if `close`.
    Error {
        reply: &'static [u8],
        consumed: usize,
        swallow: usize,
        close: bool,
        /// memcached deletes the old item under a key whose new value it refused
        /// as too large; the worker does that for this key.
        unlink: Option<&'a [u8]>,
        /// A storage command refused after its line was read, which memcached
        /// still counts (`stats`, `stats slabs`, `stats detail`).
        refused: Option<Refused<'a>>,
    },
}

/// A storage command whose line was good but whose value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused<'a> {
    pub key: &'a [u8],
    /// The `<bytes>` of the command line.
    pub nbytes: usize,
    pub why: Refusal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `SERVER_ERROR object too large for cache`: counted in store_too_large.
    TooLarge,
    /// `CLIENT_ERROR bad data chunk`: counted in cmd_set.
    BadDataChunk,
}

/// Which protocol a connection speaks (`-B`): with `Auto` its first byte
/// decides, as in memcached (0x80 = binary, anything else = text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Auto,
    Ascii,
    Binary,
}

/// Limits the parser needs from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `-I`: an item (memcached's header + key + value, see
    /// `text::item_too_large`) above this is answered
    /// `SERVER_ERROR object too large for cache` and its data swallowed.
    pub item_size_max: usize,
    /// `-C` turns cas off, which makes memcached's item header 8 bytes smaller.
    pub cas_enabled: bool,
    /// The seed dialect's element size: `SET` sizes above it are `ERR INVALID_SIZE`.
    pub seed_element_size: usize,
    /// `-A`: without it memcached answers every `shutdown`, whatever its
    /// arguments, with `ERROR: shutdown not enabled` (checked before the mode).
    pub shutdown_enabled: bool,
    /// `-X` clears it: `lru_crawler metadump` answers `ERROR metadump not
    /// allowed` (checked after the command's form, before its class ids).
    pub dump_enabled: bool,
}

/// Slab class ids, as `stats items` and `stats slabs` number them (1 up to
/// [`ClassIds::MAX`]): the crawler's and the dumps' class lists. memcached
/// takes 1 to 63, its classes; we have up to 200 (growth factor 1.08), so
/// the worker checks an id against the classes there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassIds(pub [u64; 4]);

impl ClassIds {
    pub const MAX: u32 = 255;

    pub fn insert(&mut self, id: u32) {
        self.0[(id / 64) as usize] |= 1 << (id % 64);
    }

    pub fn contains(&self, id: u32) -> bool {
        id <= Self::MAX && self.0[(id / 64) as usize] & 1 << (id % 64) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        (1..=Self::MAX).filter(|&id| self.contains(id))
    }
}

/// An `lru_crawler` subcommand other than `metadump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crawler {
    /// `crawl <all|<id>[,<id>...]>`: `None` for all; an empty set when only
    /// commas were given (memcached's `NOTSTARTED no items to crawl`).
    Crawl {
        classes: Option<ClassIds>,
    },
    /// `sleep <µs>` (at most a second).
    Sleep {
        us: u32,
    },
    /// `tocrawl <items>`.
    ToCrawl {
        items: u32,
    },
    Enable,
    Disable,
    /// A `crawl` or `metadump` memcached refuses only once it has checked
    /// that its crawler runs (else `CLIENT_ERROR lru crawler disabled`).
    Refused(CrawlRefusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrawlRefusal {
    /// A class id that is not a number from 1 to [`ClassIds::MAX`]: `BADCLASS
    /// invalid class id`.
    BadClass,
    /// `crawl hash`: `ERROR an unknown error happened`.
    Unknown,
    /// `metadump` with `-X`: `ERROR metadump not allowed`.
    DumpNotAllowed,
}

impl CrawlRefusal {
    pub fn reply(self) -> &'static [u8] {
        match self {
            CrawlRefusal::BadClass => reply::METADUMP_BADCLASS,
            CrawlRefusal::Unknown => reply::CRAWL_UNKNOWN_ERROR,
            CrawlRefusal::DumpNotAllowed => reply::METADUMP_NOT_ALLOWED,
        }
    }
}

/// Parse the request at the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    if seed::is_seed_request(buf) {
        seed::parse(buf, limits)
    } else {
        text::parse(buf, limits)
    }
}

/// The keys of a `Command::Get` (split on runs of spaces).
pub fn keys(list: &[u8]) -> Keys<'_> {
    Keys { rest: list }
}

/// The words of a line, split on runs of spaces (memchr finds the ends: on
/// the hot path this beat a byte-at-a-time split by ~100 instructions per
/// `get`, bench/instructions).
pub struct Keys<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}
