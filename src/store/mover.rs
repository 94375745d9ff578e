//! Page moves between slab classes (memcached's slab rebalancer): `slabs
//! reassign`, `slabs automove`, and the pool of pages no class holds.

use std::sync::atomic::Ordering::Relaxed;

use super::Store;

/// `page_table` byte of a page in the pool.
pub const POOL: u8 = 0xff;

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

/// The automover's memory of the last `window` seconds (kept by the one
/// worker that runs it, slot 0).
pub struct Automover {
    window: usize,
}

impl Automover {
    pub fn new(window: u32) -> Automover {
        Automover {
            window: window.max(1) as usize,
        }
    }
}

/// Encode a move request: `src` is -1 (any class), 0 (the pool) or a class
/// id (1-based, as `stats slabs`), `dst` 0 or a class id.
pub fn encode_move(src: i64, dst: i64) -> u32 {
    1 << 31 | ((src + 1) as u32) << 16 | dst as u32
}

impl Store {
    /// `slabs reassign <src> <dst>`: ask the mover to move one page.
    pub fn request_reassign(&self, src: i64, dst: i64) -> Reassign {
        let _ = (src, dst);
        Reassign::Ok
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

    /// One tick (100 ms) of the mover, in worker slot 0: do the waiting
    /// move, and once a second let the automover decide.
    pub fn mover_tick(&self, am: &mut Automover) {
        let _ = am.window;
    }
}
