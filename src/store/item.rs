//! An item as it lies in the arena: a 48-byte header, then the key, then the
//! value (without memcached's trailing `\r\n`).
//!
//! Every header field is an atomic, so that a `&Item` is sound whatever other
//! processes do; the protocol that keeps the *contents* coherent is:
//! - a chunk is written only while it is `INFLIGHT` and by its owner;
//! - it is published into a hash chain with one store, and is never written
//!   again except for single-word fields (`exptime`, `time`, `word`, and
//!   `cas` when `md <key> I` marks it stale, as memcached does) and the LRU
//!   links (under its class lock);
//! - hash chains are read and changed only under their stripe lock.

use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Size of [`Item`] in bytes.
pub const ITEM_HEADER: usize = 48;

/// Chunk states (low byte of `word`).
pub const FREE: u32 = 0;
pub const LINKED: u32 = 1;
pub const INFLIGHT: u32 = 2;
/// A page of an item larger than a page, other than its first (store/chain.rs):
/// `hash` names the item's first chunk and `cas` its chain's token.
pub const PIECE: u32 = 3;
/// Bit in `word`: the item was read at least once since it was stored.
pub const FETCHED: u32 = 1 << 8;
/// Bit in `word`: read since it last moved in the LRU; eviction moves such an
/// item back to the head once instead of evicting it (memcached's ITEM_ACTIVE).
pub const ACTIVE: u32 = 1 << 12;
/// Bit in `word`: marked stale by `md <key> I` or stored stale by
/// `ms ... I C<older cas>`; `mg` answers it with `X` (memcached's ITEM_STALE).
pub const STALE: u32 = 1 << 9;
/// Bit in `word`: an `mg` was told it won the right to recache (`W`); later
/// ones get `Z` (memcached's ITEM_TOKEN_SENT).
pub const TOKEN_SENT: u32 = 1 << 10;
/// Bit in `word`: the key was given in base64 (`b`), so meta replies echo it
/// encoded (memcached's ITEM_KEY_BINARY).
pub const KEY_BINARY: u32 = 1 << 11;
/// The `word` bits that are flags rather than state or owner.
pub const WORD_FLAGS: u32 = FETCHED | ACTIVE | STALE | TOKEN_SENT | KEY_BINARY;

#[repr(C)]
pub struct Item {
    /// Next item id in the hash chain; next free chunk while FREE.
    pub next: AtomicU32,
    pub lru_prev: AtomicU32,
    pub lru_next: AtomicU32,
    /// Hash of the key (its bucket and stripe follow from it).
    pub hash: AtomicU32,
    /// Last access, unix seconds (bumped at most once a minute, as memcached).
    pub time: AtomicU32,
    /// Unix second at which the item dies; 0 = never.
    pub exptime: AtomicU32,
    pub flags: AtomicU32,
    pub nbytes: AtomicU32,
    pub cas: AtomicU64,
    /// state (bits 0-7) | FETCHED, STALE, TOKEN_SENT, KEY_BINARY (bits 8-11) |
    /// owner slot while INFLIGHT (bits 16-31).
    pub word: AtomicU32,
    pub nkey: AtomicU8,
    pub class: AtomicU8,
    /// Chunks of its page the item covers, this one and the next `span - 1`
    /// (0 or 1: this one). More than one only for an item of a larger class
    /// stored in the uncarved end of a smaller class's page (`Store::alloc`);
    /// set under the class lock when the chunks are carved, so that every
    /// walk of a page steps over the item's body.
    pub span: AtomicU16,
}

const _: () = assert!(size_of::<Item>() == ITEM_HEADER);

impl Item {
    pub fn state(&self) -> u32 {
        self.word.load(Relaxed) & 0xff
    }

    pub fn owner(&self) -> u32 {
        self.word.load(Relaxed) >> 16
    }

    /// Chunks a walk of the page steps over here: one for a free chunk,
    /// the item's span for a held one.
    pub fn chunks(&self) -> u32 {
        if self.state() == FREE {
            1
        } else {
            u32::from(self.span.load(Relaxed)).max(1)
        }
    }

    pub fn is_dead(&self, now: u32, oldest_live: u32, oldest_cas: u64) -> bool {
        let exp = self.exptime.load(Relaxed);
        if exp != 0 && exp <= now {
            return true;
        }
        self.is_flushed(now, oldest_live, oldest_cas)
    }

    /// memcached's item_is_flushed.
    pub fn is_flushed(&self, now: u32, oldest_live: u32, oldest_cas: u64) -> bool {
        if oldest_live == 0 || oldest_live > now {
            return false;
        }
        let cas = self.cas.load(Relaxed);
        self.time.load(Relaxed) <= oldest_live || (oldest_cas != 0 && cas != 0 && cas < oldest_cas)
    }

    /// Bytes this item accounts for (memcached's `bytes` stat counts whole items).
    pub fn total_size(&self) -> u64 {
        (ITEM_HEADER + self.nkey.load(Relaxed) as usize + self.nbytes.load(Relaxed) as usize) as u64
    }
}

/// Bytes an item of this key and value length takes.
pub fn item_size(nkey: usize, nbytes: usize) -> usize {
    ITEM_HEADER + nkey + nbytes
}
