//! Warm restart: checking a memory file left by a previous instance before
//! anything of it is served.
//!
//! With the segment on a tmpfs, SIGKILL cannot tear a page: every store a
//! process made is in the page cache. What a crash can leave is what the
//! crash-safety rules allow (item.rs, slab.rs): a chunk allocated but not
//! published (INFLIGHT), one published whose state word was not yet set, one
//! unlinked but not yet freed, slab lists half edited. All of those are
//! settled from the chunks' states. Anything else (an id out of bounds, a
//! chunk of the wrong class, a key that does not hash to its bucket, a cycle)
//! would be a bug or foreign bytes: the whole cache is then discarded, never
//! served (docs/decisions.md says why there is no per-value checksum).

use std::sync::atomic::Ordering::Relaxed;

use super::item::{FREE, INFLIGHT, ITEM_HEADER, LINKED, PIECE};
use super::mover::POOL;
use super::{NONE, Store, hash_key};

/// memcached's KEY_MAX_LENGTH.
const KEY_MAX: usize = 250;
/// Bit in an item's `word` while the check runs: a chain reached it. Kept in
/// the chunk itself, so that the check needs no memory in proportion to the
/// arena (a bitmap would take 512 MiB for 32 GiB). Bits 8-12 are the item's
/// flags (FETCHED; main adds ACTIVE, STALE, TOKEN_SENT, KEY_BINARY) and
/// 16-31 the owner: bit 15 is free, and cleared again before anyone serves.
const REACHED: u32 = 1 << 15;

impl Store {
    /// Check every hash chain and every chunk, settle what a crash left, and
    /// rebuild every class's lists and counts. Returns the items kept and the
    /// chunks whose state a crash had left half-done, or why the segment
    /// cannot be trusted. Only while no other process maps it.
    pub(super) fn check_and_rebuild(&self) -> Result<(u64, u64), String> {
        let l = &self.layout;
        let pages_used = self.header().pages_used.load(Relaxed);
        if pages_used > l.page_count {
            return Err(format!(
                "{pages_used} pages in use of {} in all",
                l.page_count
            ));
        }
        for page in 0..l.page_count {
            let class = self.page_class(page).load(Relaxed) as usize;
            let pooled = class == POOL as usize && page < pages_used;
            if (class > self.classes.len() && !pooled) || (page >= pages_used && class != 0) {
                return Err(format!("page {page} has the bad class byte {class}"));
            }
        }
        for (c, class) in self.classes.iter().enumerate() {
            let size = class.chunk_size.load(Relaxed);
            if size != l.class_sizes[c]
                || class.per_page.load(Relaxed) as u64 != l.page_size / size as u64
            {
                return Err(format!("slab class {c} has chunk size {size}"));
            }
            let cur = class.cur_page.load(Relaxed);
            if cur != NONE
                && (cur >= pages_used || self.page_class(cur).load(Relaxed) as usize != c + 1)
            {
                return Err(format!(
                    "slab class {c} carves page {cur}, not one of its own"
                ));
            }
            let pages = (0..pages_used)
                .filter(|&p| self.page_class(p).load(Relaxed) as usize == c + 1)
                .count() as u32;
            class.pages.store(pages, Relaxed);
        }
        let mut settled = 0;
        for b in 0..self.buckets.len() {
            let mut id = self.buckets[b].load(Relaxed);
            while id != 0 {
                let why = |what: &str| format!("hash bucket {b}: item {id} {what}");
                let (c, carved) = self.chunk_class(id).map_err(|e| why(&e))?;
                let it = self.item(id);
                if it.word.fetch_or(REACHED, Relaxed) & REACHED != 0 {
                    return Err(why("is reached twice (a cycle or a shared chain)"));
                }
                match it.state() {
                    LINKED => {}
                    // Published before its state word was set: complete.
                    INFLIGHT => {
                        it.word
                            .store(LINKED | (it.word.load(Relaxed) & 0xff00), Relaxed);
                        settled += 1;
                    }
                    s => return Err(why(&format!("is in a chain with state {s}"))),
                }
                if it.class.load(Relaxed) as usize != c {
                    return Err(why("names another class than its page"));
                }
                let nkey = it.nkey.load(Relaxed) as usize;
                let size = ITEM_HEADER + nkey + it.nbytes.load(Relaxed) as usize;
                let span = it.chunks();
                let chained = c == self.top_class() && self.is_chained(it);
                if nkey == 0
                    || nkey > KEY_MAX
                    || (size > l.class_sizes[c] as usize * span as usize && !chained)
                    || size as u64 > l.largest_item()
                    || u64::from(span) > carved
                {
                    return Err(why("has a key or value length that does not fit"));
                }
                if chained {
                    self.reach_pieces(id).map_err(|e| why(&e))?;
                }
                let hash = it.hash.load(Relaxed);
                if hash_key(self.key(id)) != hash
                    || !std::ptr::eq(self.bucket(hash), &self.buckets[b])
                {
                    return Err(why("has a key that does not hash to its bucket"));
                }
                id = it.next.load(Relaxed);
            }
        }
        // Chunks no chain reaches are free: allocated and never published, or
        // unlinked by a worker that died before freeing them.
        self.recount_pool();
        for page in 0..pages_used {
            let c = match self.page_class(page).load(Relaxed) {
                0 | POOL => continue,
                n => n as usize - 1,
            };
            let end = self.carved(c, page);
            let mut idx = 0;
            while idx < end {
                let id = self.chunk_id(c, page, idx);
                let it = self.item(id);
                let reached = it.word.fetch_and(!REACHED, Relaxed) & REACHED != 0;
                // An item's body is stepped over: its chunks hold its bytes.
                let k = it.chunks().min(end - idx);
                match it.state() {
                    FREE => {}
                    LINKED | INFLIGHT if !reached => {
                        // A chained item's pieces, unreached too, are freed
                        // where the walk meets them: nothing is listed
                        // before the rebuild (the free lists are the last
                        // run's until then).
                        if !(c == self.top_class() && self.is_chained(it)) {
                            self.split_span(c, id, false);
                        }
                        it.word.store(FREE, Relaxed);
                        settled += 1;
                    }
                    // A piece of an item no chain reaches (or of none).
                    PIECE if !reached => {
                        it.word.store(FREE, Relaxed);
                        settled += 1;
                    }
                    LINKED | INFLIGHT | PIECE => {}
                    s => return Err(format!("chunk {id} has the bad state {s}")),
                }
                idx += k;
            }
        }
        let mut items = 0;
        for c in 0..self.classes.len() {
            self.rebuild_class(c);
            items += self.class(c).curr_items.load(Relaxed);
        }
        Ok((items, settled))
    }

    /// Mark the pieces of reachable chained head `head` reached, checking
    /// that it lists as many as its value needs, each its own and once.
    fn reach_pieces(&self, head: u32) -> Result<(), String> {
        let it = self.item(head);
        let nkey = it.nkey.load(Relaxed) as usize;
        let want = self.pieces_for(nkey, it.nbytes.load(Relaxed) as usize);
        let token = self.chain_token(head);
        let listed: Vec<u32> = self.listed(head).collect();
        if listed.len() != want {
            return Err(format!(
                "lists {} pieces of the {want} it needs",
                listed.len()
            ));
        }
        for id in listed {
            if !self.is_piece_of(id, head, token) {
                return Err(format!("lists {id}, not a piece of its own"));
            }
            if self.item(id).word.fetch_or(REACHED, Relaxed) & REACHED != 0 {
                return Err(format!("lists {id}, reached twice"));
            }
        }
        Ok(())
    }

    /// The class of the page holding chunk `id`, if `id` is the start of a
    /// chunk handed out from it, and the chunks from `id` to the end of what
    /// the page has carved (an item spanning chunks must end within them).
    fn chunk_class(&self, id: u32) -> Result<(usize, u64), String> {
        if !self.valid_id(id) {
            return Err("is outside the arena".into());
        }
        let off = (id as u64 - 1) * 8;
        let page = (off / self.layout.page_size) as u32;
        let c = match self.page_class(page).load(Relaxed) {
            0 | POOL => return Err(format!("lies in page {page}, which no class owns")),
            n => n as usize - 1,
        };
        let class = self.class(c);
        let size = class.chunk_size.load(Relaxed) as u64;
        let within = off % self.layout.page_size;
        let idx = within / size;
        let carved = u64::from(self.carved(c, page));
        if !within.is_multiple_of(size) || idx >= carved {
            return Err(format!("is not a chunk handed out by slab class {c}"));
        }
        Ok((c, carved - idx))
    }
}

#[cfg(test)]
mod tests {
    use super::super::item::{FREE, INFLIGHT, LINKED};
    use super::super::segment::LayoutParams;
    use super::super::{Opened, Store, StoreParams};
    use crate::protocol::StoreMode;
    use std::sync::atomic::Ordering::Relaxed;

    fn params() -> StoreParams {
        StoreParams {
            layout: LayoutParams {
                memory_limit: 4 << 20,
                item_size_max: 1 << 20,
                workers: 2,
                ..LayoutParams::default()
            },
            evictions: true,
            cas_enabled: true,
        }
    }

    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp(tag: &str) -> TempFile {
        let p =
            std::env::temp_dir().join(format!("shmcached-recovery-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }

    fn open(path: &std::path::Path) -> (Store, Opened) {
        let (mut s, o) = Store::open_file(params(), path).unwrap();
        s.act_as_slot(0);
        (s, o)
    }

    fn value(s: &Store, key: &[u8]) -> Option<Vec<u8>> {
        let mut out = None;
        s.get(key, None, |h| out = Some(h.data().to_vec()));
        out
    }

    #[test]
    fn what_a_crash_leaves_half_done_is_settled() {
        let f = temp("settle");
        let (s, o) = open(&f.0);
        assert_eq!(o, Opened::New);
        for i in 0..50u32 {
            let k = format!("k{i}");
            s.store(StoreMode::Set, k.as_bytes(), i, 0, b"value", 0);
        }
        // A chunk allocated and never published (the worker died filling it).
        let hash = super::hash_key(b"lost");
        let orphan = s
            .alloc_item(b"lost", hash, 5, super::super::unix_now())
            .ok()
            .unwrap();
        // A chunk published whose state word was not yet set.
        let published = s.lookup(super::hash_key(b"k7"), b"k7", 0).unwrap().1;
        s.item(published).word.store(INFLIGHT, Relaxed);
        // A chunk unlinked whose free did not happen.
        let (link, gone) = s.lookup(super::hash_key(b"k9"), b"k9", 0).unwrap();
        link.store(s.item(gone).next.load(Relaxed), Relaxed);
        // Lists half edited.
        let c = s.item(published).class.load(Relaxed) as usize;
        s.class(c).lru_head.store(0, Relaxed);
        s.class(c).free_head.store(12345, Relaxed);
        drop(s);

        let (s, o) = open(&f.0);
        assert_eq!(
            o,
            Opened::Restored {
                clean: false,
                items: 49,
                settled: 3
            }
        );
        assert_eq!(s.item(orphan).state(), FREE);
        assert_eq!(s.item(gone).state(), FREE);
        assert_eq!(s.item(published).state(), LINKED);
        assert_eq!(value(&s, b"k7").as_deref(), Some(&b"value"[..]));
        assert_eq!(value(&s, b"k9"), None);
        assert_eq!(s.items_and_bytes().0, 49);
        // The lists work: fill past memory, evicting.
        for i in 0..20_000u32 {
            let k = format!("n{i}");
            assert_eq!(
                s.store(StoreMode::Set, k.as_bytes(), 0, 0, &[b'x'; 100], 0),
                super::super::StoreResult::Stored
            );
        }
    }

    #[test]
    fn a_clean_file_keeps_items_cas_and_flush_marks() {
        let f = temp("clean");
        let (s, _) = open(&f.0);
        s.store(StoreMode::Set, b"a", 1, 0, b"1", 0);
        s.store(StoreMode::Set, b"b", 2, 1000, b"22", 0);
        let cas = s.header().cas.load(Relaxed);
        s.header().oldest_live.store(5, Relaxed);
        s.mark_clean();
        drop(s);
        let (s, o) = open(&f.0);
        assert_eq!(
            o,
            Opened::Restored {
                clean: true,
                items: 2,
                settled: 0
            }
        );
        assert_eq!(s.header().clean.load(Relaxed), 0, "dirty while served");
        assert_eq!(s.header().cas.load(Relaxed), cas);
        assert_eq!(s.header().oldest_live.load(Relaxed), 5);
        assert_eq!(value(&s, b"b").as_deref(), Some(&b"22"[..]));
    }

    #[test]
    fn a_broken_chain_discards_everything() {
        let f = temp("broken");
        let (s, _) = open(&f.0);
        s.store(StoreMode::Set, b"a", 1, 0, b"1", 0);
        s.store(StoreMode::Set, b"b", 1, 0, b"1", 0);
        let (_, a) = s.lookup(super::hash_key(b"a"), b"a", 0).unwrap();
        // A cycle: a's chain comes back to a.
        s.item(a).next.store(a, Relaxed);
        drop(s);
        let (s, o) = open(&f.0);
        match o {
            Opened::Discarded(why) => assert!(why.contains("reached twice"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(value(&s, b"b"), None);
        assert_eq!(s.items_and_bytes(), (0, 0));
        s.store(StoreMode::Set, b"c", 1, 0, b"1", 0);
        assert!(value(&s, b"c").is_some());
    }
}
