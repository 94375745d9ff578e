//! Runs one parsed command against the store and renders its reply.

use crate::protocol::{ClassIds, Command, Crawler, StoreMode, keys, reply};
use crate::store::mover::Reassign;
use crate::store::prefix::PrefixOp;
use crate::store::stats::Counter;
use crate::store::{ArithResult, Store, StoreResult};

use super::WorkerContext;
use super::stats;

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Write what is queued, then close (seed dialect, shutdown).
    CloseAfterWrite,
    /// `quit`: close at once.
    Close,
}

/// Execute `cmd`, appending its reply to `out`.
pub fn execute(ctx: &WorkerContext, cmd: &Command<'_>, out: &mut Vec<u8>) -> After {
    let store = &ctx.store;
    let counters = store.counters();
    counters.incr(Counter::requests);
    match *cmd {
        Command::Get {
            keys: list,
            with_cas,
            touch,
        } => {
            let (cmd_counter, hit, miss) = match touch {
                Some(_) => (
                    Counter::cmd_touch,
                    Counter::touch_hits,
                    Counter::touch_misses,
                ),
                None => (Counter::cmd_get, Counter::get_hits, Counter::get_misses),
            };
            let detail = ctx.detail_enabled();
            for key in keys(list) {
                counters.incr(cmd_counter);
                let found = store.get(key, touch, |h| {
                    let cas = with_cas.then_some(h.cas);
                    reply::value(out, key, h.flags, &h.data(), cas);
                });
                counters.incr(if found { hit } else { miss });
                if detail {
                    ctx.record_prefix(key, PrefixOp::Get { hit: found });
                }
            }
            out.extend_from_slice(reply::END);
        }
        Command::Store {
            mode,
            key,
            flags,
            exptime,
            data,
            cas_unique,
            noreply,
        } => {
            counters.incr(Counter::cmd_set);
            if ctx.detail_enabled() {
                ctx.record_prefix(key, PrefixOp::Set);
            }
            let result = store.store(mode, key, flags, exptime, data, cas_unique);
            if mode == StoreMode::Cas {
                counters.incr(match result {
                    StoreResult::Stored => Counter::cas_hits,
                    StoreResult::Exists => Counter::cas_badval,
                    _ => Counter::cas_misses,
                });
            }
            let line = match result {
                StoreResult::Stored => reply::STORED,
                StoreResult::NotStored => reply::NOT_STORED,
                StoreResult::Exists => reply::EXISTS,
                StoreResult::NotFound => reply::NOT_FOUND,
                StoreResult::TooLarge => {
                    counters.incr(Counter::store_too_large);
                    reply::SERVER_ERROR_TOO_LARGE
                }
                StoreResult::NoMemory => {
                    counters.incr(Counter::store_no_memory);
                    reply::SERVER_ERROR_OUT_OF_MEMORY_STORING
                }
            };
            if !noreply {
                out.extend_from_slice(line);
            }
        }
        Command::Delete { key, noreply } => {
            if ctx.detail_enabled() {
                ctx.record_prefix(key, PrefixOp::Delete);
            }
            let found = store.delete(key);
            counters.incr(if found {
                Counter::delete_hits
            } else {
                Counter::delete_misses
            });
            if !noreply {
                out.extend_from_slice(if found {
                    reply::DELETED
                } else {
                    reply::NOT_FOUND
                });
            }
        }
        Command::Arith {
            key,
            delta,
            incr,
            noreply,
        } => {
            let (hit, miss) = if incr {
                (Counter::incr_hits, Counter::incr_misses)
            } else {
                (Counter::decr_hits, Counter::decr_misses)
            };
            let result = store.arith(key, incr, delta);
            match result {
                ArithResult::NotFound => counters.incr(miss),
                // memcached counts the hit before it finds room for the result.
                ArithResult::Value(_) | ArithResult::NoMemory => counters.incr(hit),
                ArithResult::NonNumeric => {}
            }
            if !noreply {
                match result {
                    ArithResult::Value(v) => reply::number(out, v),
                    ArithResult::NotFound => out.extend_from_slice(reply::NOT_FOUND),
                    ArithResult::NonNumeric => {
                        out.extend_from_slice(reply::CLIENT_ERROR_NON_NUMERIC)
                    }
                    ArithResult::NoMemory => {
                        out.extend_from_slice(reply::SERVER_ERROR_OUT_OF_MEMORY)
                    }
                }
            }
        }
        Command::Touch {
            key,
            exptime,
            noreply,
        } => {
            counters.incr(Counter::cmd_touch);
            let found = store.touch(key, exptime);
            counters.incr(if found {
                Counter::touch_hits
            } else {
                Counter::touch_misses
            });
            if !noreply {
                out.extend_from_slice(if found {
                    reply::TOUCHED
                } else {
                    reply::NOT_FOUND
                });
            }
        }
        Command::FlushAll { delay, noreply } => {
            if !ctx.settings.flush_enabled {
                out.extend_from_slice(reply::CLIENT_ERROR_FLUSH_NOT_ALLOWED);
                return After::Continue;
            }
            counters.incr(Counter::cmd_flush);
            store.flush_all(delay);
            if !noreply {
                out.extend_from_slice(reply::OK);
            }
        }
        Command::Version => reply::version(out),
        Command::Verbosity { level, noreply } => {
            // memcached caps it at 2; stored plus one (0 = never set).
            store
                .header()
                .verbosity
                .store(level.min(2) + 1, std::sync::atomic::Ordering::Relaxed);
            if !noreply {
                out.extend_from_slice(reply::OK);
            }
        }
        Command::CacheMemlimit { megabytes, noreply } => {
            let line = if megabytes < 8 {
                reply::MEMLIMIT_TOO_SMALL
            } else if megabytes > 1_000_000_000 {
                reply::MEMLIMIT_NOT_BYTES
            } else if store.set_memory_limit(u64::from(megabytes) << 20) {
                reply::OK
            } else {
                // memcached can grow; the segment cannot (docs/memory.md).
                reply::MEMLIMIT_ADJUST_FAILED
            };
            if !noreply {
                out.extend_from_slice(line);
            }
        }
        Command::SlabsReassign { src, dst } => {
            out.extend_from_slice(match store.request_reassign(src.into(), dst.into()) {
                Reassign::Ok => reply::OK,
                Reassign::Busy => reply::REASSIGN_BUSY,
                Reassign::BadClass => reply::REASSIGN_BADCLASS,
                Reassign::NoSpare => reply::REASSIGN_NOSPARE,
                Reassign::Same => reply::REASSIGN_SAME,
            });
        }
        Command::SlabsAutomove { level, noreply } => {
            store.set_automove(level);
            if !noreply {
                out.extend_from_slice(reply::OK);
            }
        }
        Command::SlabsAutomoveRatio { ratio, noreply } => {
            store.set_automove_ratio(ratio.0);
            if !noreply {
                out.extend_from_slice(reply::OK);
            }
        }
        // Streamed by its connection a slice at a time (worker::run_requests)
        // unless refused: only a refused one comes here.
        Command::MetaDump { classes } => {
            out.extend_from_slice(crawl_refusal(store, classes).unwrap_or_default())
        }
        Command::LruCrawler(c) => out.extend_from_slice(lru_crawler(store, c)),
        Command::Stats { args } => stats::render(ctx, args, out),
        Command::Shutdown { graceful: _ } => {
            // The parser answers it when -A is off. The supervisor drains every
            // worker, this one included.
            let _ =
                nix::sys::signal::kill(nix::unistd::getppid(), nix::sys::signal::Signal::SIGTERM);
            return After::Close;
        }
        Command::Quit => return After::Close,
        Command::Meta(ref m) => super::meta::execute(ctx, m, out),
        Command::SeedSet { name, data } => {
            counters.incr(Counter::cmd_set);
            if ctx.detail_enabled() {
                ctx.record_prefix(name, PrefixOp::Set);
            }
            match store.store(StoreMode::Set, name, 0, 0, data, 0) {
                StoreResult::Stored => reply::seed_ok(out),
                StoreResult::NoMemory => out.extend_from_slice(reply::SEED_NO_SPACE),
                _ => out.extend_from_slice(reply::SEED_OTHER),
            }
            return After::CloseAfterWrite;
        }
        Command::SeedGet { name } => {
            counters.incr(Counter::cmd_get);
            let found = store.get(name, None, |h| reply::seed_value(out, &h.data()));
            if ctx.detail_enabled() {
                ctx.record_prefix(name, PrefixOp::Get { hit: found });
            }
            if found {
                counters.incr(Counter::get_hits);
            } else {
                counters.incr(Counter::get_misses);
                out.extend_from_slice(reply::SEED_NOT_FOUND);
            }
            return After::CloseAfterWrite;
        }
        Command::SeedDelete { name } => {
            if ctx.detail_enabled() {
                ctx.record_prefix(name, PrefixOp::Delete);
            }
            let found = store.delete(name);
            counters.incr(if found {
                Counter::delete_hits
            } else {
                Counter::delete_misses
            });
            reply::seed_deleted(out, found);
            return After::CloseAfterWrite;
        }
    }
    After::Continue
}

/// Why memcached would refuse a crawl or a metadump of `classes` (`None`:
/// all), in its order: the crawler off, a list of no id, an id past our
/// classes (`stats items`' ids: 1 to the count).
pub(super) fn crawl_refusal(store: &Store, classes: Option<ClassIds>) -> Option<&'static [u8]> {
    if !store.crawler_enabled() {
        return Some(reply::CRAWLER_DISABLED);
    }
    let ids = classes?;
    if ids.is_empty() {
        Some(reply::CRAWL_NOT_STARTED)
    } else if ids.ids().any(|id| id as usize > store.class_count()) {
        Some(reply::METADUMP_BADCLASS)
    } else {
        None
    }
}

/// `lru_crawler` but `metadump`: our sweep is memcached's crawler.
fn lru_crawler(store: &Store, c: Crawler) -> &'static [u8] {
    match c {
        Crawler::Refused(_) if !store.crawler_enabled() => reply::CRAWLER_DISABLED,
        Crawler::Refused(why) => why.reply(),
        Crawler::Crawl { classes } => match crawl_refusal(store, classes) {
            Some(refused) => refused,
            None if store.request_crawl(classes.map(|ids| ids.0)) => reply::OK,
            None => reply::CRAWL_BUSY,
        },
        Crawler::Sleep { us } => {
            store.set_crawler_sleep(us);
            reply::OK
        }
        Crawler::ToCrawl { items } => {
            store.set_crawler_tocrawl(items);
            reply::OK
        }
        Crawler::Enable => {
            if store.set_crawler(true) {
                reply::OK
            } else {
                reply::CRAWLER_START_FAILED
            }
        }
        Crawler::Disable => {
            store.set_crawler(false);
            reply::OK
        }
    }
}
