//! Runs the meta commands against the store and renders their replies, as
//! memcached 1.6.18's `process_m*_command` (proto_text.c) do.
//!
//! ```text
//! mg: VA <size> <flags>*\r\n<data>\r\n | HD <flags>*\r\n | EN\r\n
//! ms: HD | NS | EX | NF <flags>*\r\n
//! md: HD | NF | EX <flags>*\r\n
//! ma: HD <flags>*\r\n | VA <len> <flags>*\r\n<number>\r\n | NF | NS | EX
//! mn: MN\r\n
//! me: ME <key> exp=<s> la=<s> cas=<n> fetch=<yes|no> cls=<id> size=<n>\r\n | EN\r\n
//! ```
//!
//! Return flags come back in the order they were sent. Counters follow
//! memcached: mg counts as a get (or a touch with `T`), ms as a set (a cas
//! with `C`), md as a delete, ma as incr/decr; only `me` counts in cmd_meta.

use std::io::Write;

use crate::protocol::meta::{
    CLIENT_ERROR_OPAQUE_TOO_LONG, DECODED_KEY_MAX, MAX_OPAQUE_LENGTH, Meta, MetaKind,
    base64_encode, decode_key, tokens,
};
use crate::protocol::{ClassIds, StoreMode, reply};
use crate::store::stats::{ClassCounter, Counter};
use crate::store::{MetaArithResult, MetaDeleteResult, MetaItem, MetaStore, StoreResult};

use super::WorkerContext;

/// Execute the meta command `m`, appending its reply to `out`.
pub fn execute(ctx: &WorkerContext, m: &Meta<'_>, out: &mut Vec<u8>) {
    let mut buf = [0u8; DECODED_KEY_MAX];
    let key = decode_key(m.key, m.flags.binary, &mut buf);
    match m.kind {
        MetaKind::Get => get(ctx, m, key, out),
        MetaKind::Set => set(ctx, m, key, out),
        MetaKind::Delete => delete(ctx, m, key, out),
        MetaKind::Arith => arith(ctx, m, key, out),
        MetaKind::Noop => out.extend_from_slice(b"MN\r\n"),
        MetaKind::Debug => debug(ctx, key, out),
    }
}

/// ` <n>`-style numbers (writing into a Vec cannot fail).
fn num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

/// ` k<key>`, base64 and followed by ` b` when the key is binary.
fn echo_key(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        base64_encode(key, out);
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// The `O` and `k` flags of a reply that has no item (misses, EX, NF).
/// `Err` for an opaque over the limit.
fn echo_request(out: &mut Vec<u8>, m: &Meta<'_>, key: &[u8]) -> Result<(), ()> {
    for t in tokens(m.tokens) {
        match t[0] {
            b'O' => opaque(out, t)?,
            b'k' => echo_key(out, key, m.flags.binary),
            _ => {}
        }
    }
    Ok(())
}

fn opaque(out: &mut Vec<u8>, token: &[u8]) -> Result<(), ()> {
    if token.len() > MAX_OPAQUE_LENGTH {
        return Err(());
    }
    out.push(b' ');
    out.extend_from_slice(token);
    Ok(())
}

/// ` t<seconds left>`, `-1` for never.
fn ttl_left(out: &mut Vec<u8>, it: &MetaItem<'_>) {
    out.extend_from_slice(b" t");
    match it.exptime() {
        0 => out.extend_from_slice(b"-1"),
        exp => num(out, exp.wrapping_sub(it.now)),
    }
}

/// Replace what was rendered since `start` with an error line.
fn fail(out: &mut Vec<u8>, start: usize, line: &[u8]) {
    out.truncate(start);
    out.extend_from_slice(line);
}

/// `mg <key> <flags>*`
fn get(ctx: &WorkerContext, m: &Meta<'_>, key: &[u8], out: &mut Vec<u8>) {
    let f = &m.flags;
    let counters = ctx.store.counters();
    let start = out.len();
    let found = ctx
        .store
        .meta_get(key, f.vivify.is_some(), f.no_update, |found| {
            found.map(|it| {
                let rendered = hit(m, it, out);
                // Without N, T, R, l or h memcached marks and bumps the item
                // as it finds it; with them, only after a reply is made.
                let locked =
                    tokens(m.tokens).any(|t| matches!(t[0], b'N' | b'T' | b'R' | b'l' | b'h'));
                if rendered.is_err() && locked {
                    it.abandon();
                } else if rendered.is_ok() {
                    it.count(if f.ttl.is_some() {
                        ClassCounter::touch_hits
                    } else {
                        ClassCounter::get_hits
                    });
                }
                rendered
            })
        });
    match found {
        Some(Ok(())) if f.ttl.is_some() => {
            counters.incr(Counter::cmd_touch);
            counters.incr(Counter::touch_hits);
        }
        Some(Ok(())) => {
            counters.incr(Counter::cmd_get);
            counters.incr(Counter::get_hits);
        }
        Some(Err(())) => fail(out, start, CLIENT_ERROR_OPAQUE_TOO_LONG),
        None => {
            counters.incr(Counter::cmd_get);
            counters.incr(Counter::get_misses);
            out.extend_from_slice(b"EN");
            if echo_request(out, m, key).is_err() {
                fail(out, start, CLIENT_ERROR_OPAQUE_TOO_LONG);
            } else if f.quiet {
                out.truncate(start);
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// An `mg` hit: walk the flags in order (they may re-time the item), then
/// the win/stale flags `Z`, `X`, `W`.
fn hit(m: &Meta<'_>, it: &MetaItem<'_>, out: &mut Vec<u8>) -> Result<(), ()> {
    let f = &m.flags;
    // Copied out only when sent (a value chained over pages is copied).
    let data = if f.value {
        it.data()
    } else {
        Default::default()
    };
    if f.value {
        out.extend_from_slice(b"VA ");
        num(out, data.len());
    } else {
        out.extend_from_slice(b"HD");
    }
    let mut won = false;
    for t in tokens(m.tokens) {
        match t[0] {
            b'T' => it.set_ttl(f.ttl.map_or(0, i64::from)),
            b'N' if it.created => {
                it.set_ttl(f.vivify.map_or(0, i64::from));
                won = true;
            }
            b'R' => {
                let exp = it.exptime();
                let below = it.deadline(f.recache.map_or(0, i64::from));
                if !it.token_sent() && !it.created && exp != 0 && exp < below {
                    won = true;
                }
            }
            b's' => {
                out.extend_from_slice(b" s");
                num(out, it.data_len());
            }
            b't' => ttl_left(out, it),
            b'c' => {
                out.extend_from_slice(b" c");
                num(out, it.cas());
            }
            b'f' => {
                out.extend_from_slice(b" f");
                num(out, it.flags());
            }
            b'l' => {
                out.extend_from_slice(b" l");
                num(out, it.now.wrapping_sub(it.time()));
            }
            b'h' => out.extend_from_slice(if it.fetched() { b" h1" } else { b" h0" }),
            b'O' => opaque(out, t)?,
            b'k' => echo_key(out, it.key(), it.key_binary()),
            _ => {}
        }
    }
    // Z before X and W, and never W with Z: what memcached sends.
    let token_sent = it.token_sent();
    if token_sent {
        out.extend_from_slice(b" Z");
    }
    if it.stale() {
        out.extend_from_slice(b" X");
        if !token_sent {
            won = true;
        }
    }
    if won {
        out.extend_from_slice(b" W");
        it.mark_token_sent();
    }
    out.extend_from_slice(b"\r\n");
    if f.value {
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// `ms <key> <datalen> <flags>*`
fn set(ctx: &WorkerContext, m: &Meta<'_>, key: &[u8], out: &mut Vec<u8>) {
    let f = &m.flags;
    let counters = ctx.store.counters();
    counters.incr(Counter::cmd_set);
    let mode = match f.mode {
        Some(b'E') => StoreMode::Add,
        Some(b'A') => StoreMode::Append,
        Some(b'P') => StoreMode::Prepend,
        Some(b'R') => StoreMode::Replace,
        _ => StoreMode::Set,
    };
    // A cas turns set and replace into memcached's cas command.
    let mode = match mode {
        StoreMode::Set | StoreMode::Replace if f.cas.is_some() => StoreMode::Cas,
        mode => mode,
    };
    let (result, cas) = ctx.store.meta_store(&MetaStore {
        mode,
        key,
        flags: f.client_flags,
        exptime: f.ttl.map_or(0, i64::from),
        data: m.data,
        cas: f.cas.unwrap_or(0),
        stale_ok: f.invalidate && mode == StoreMode::Cas,
        key_binary: f.binary,
    });
    if mode == StoreMode::Cas {
        counters.incr(match result {
            StoreResult::Stored => Counter::cas_hits,
            StoreResult::Exists => Counter::cas_badval,
            _ => Counter::cas_misses,
        });
    }
    let code: &[u8] = match result {
        StoreResult::Stored if f.quiet => return,
        StoreResult::Stored => b"HD",
        StoreResult::NotStored => b"NS",
        StoreResult::Exists => b"EX",
        StoreResult::NotFound => b"NF",
        StoreResult::TooLarge => {
            counters.incr(Counter::store_too_large);
            out.extend_from_slice(reply::SERVER_ERROR_TOO_LARGE);
            return;
        }
        StoreResult::NoMemory => {
            counters.incr(Counter::store_no_memory);
            out.extend_from_slice(reply::SERVER_ERROR_OUT_OF_MEMORY_STORING);
            return;
        }
    };
    out.extend_from_slice(code);
    for t in tokens(m.tokens) {
        match t[0] {
            // The parser refused opaques over the limit.
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(t);
            }
            b'k' => echo_key(out, key, f.binary),
            b'c' => {
                out.extend_from_slice(b" c");
                num(out, cas);
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `md <key> <flags>*`
fn delete(ctx: &WorkerContext, m: &Meta<'_>, key: &[u8], out: &mut Vec<u8>) {
    let f = &m.flags;
    let counters = ctx.store.counters();
    let stale = f.invalidate.then_some(f.ttl.map(i64::from));
    let code: &[u8] = match ctx.store.meta_delete(key, f.cas, stale) {
        MetaDeleteResult::Deleted => {
            counters.incr(Counter::delete_hits);
            b"HD"
        }
        MetaDeleteResult::MarkedStale => b"HD",
        MetaDeleteResult::NotFound => {
            counters.incr(Counter::delete_misses);
            b"NF"
        }
        MetaDeleteResult::Exists => {
            counters.incr(Counter::delete_misses);
            b"EX"
        }
    };
    if f.quiet && code == b"HD" {
        return;
    }
    out.extend_from_slice(code);
    // The parser refused opaques over the limit.
    let _ = echo_request(out, m, key);
    out.extend_from_slice(b"\r\n");
}

/// `ma <key> <flags>*`
fn arith(ctx: &WorkerContext, m: &Meta<'_>, key: &[u8], out: &mut Vec<u8>) {
    let f = &m.flags;
    let counters = ctx.store.counters();
    let incr = !matches!(f.mode, Some(b'D' | b'-'));
    let (hit, miss) = if incr {
        (Counter::incr_hits, Counter::incr_misses)
    } else {
        (Counter::decr_hits, Counter::decr_misses)
    };
    let start = out.len();
    let mut rendered = Ok(());
    let result = ctx.store.meta_arith(
        key,
        incr,
        f.delta,
        f.cas.unwrap_or(0),
        f.vivify.map(|_| f.initial),
        |it| rendered = arith_item(m, key, it, out),
    );
    let code: &[u8] = match result {
        MetaArithResult::Value(_) | MetaArithResult::Created(_) => {
            if matches!(result, MetaArithResult::Value(_)) {
                counters.incr(hit);
            }
            if rendered.is_err() {
                fail(out, start, CLIENT_ERROR_OPAQUE_TOO_LONG);
            } else if f.quiet && matches!(result, MetaArithResult::Value(_)) {
                // memcached hides only the reply of a delta applied, not of
                // an item created.
                out.truncate(start);
            }
            return;
        }
        MetaArithResult::NotFound => {
            counters.incr(miss);
            b"NF"
        }
        MetaArithResult::Exists => b"EX",
        MetaArithResult::NonNumeric => {
            out.extend_from_slice(reply::CLIENT_ERROR_NON_NUMERIC);
            return;
        }
        MetaArithResult::NoMemory => {
            counters.incr(hit);
            out.extend_from_slice(reply::SERVER_ERROR_OUT_OF_MEMORY);
            return;
        }
        MetaArithResult::VivifyNoMemory => {
            out.extend_from_slice(b"SERVER_ERROR Out of memory allocating new item\r\n");
            return;
        }
    };
    out.extend_from_slice(code);
    if echo_request(out, m, key).is_err() {
        fail(out, start, CLIENT_ERROR_OPAQUE_TOO_LONG);
        return;
    }
    out.extend_from_slice(b"\r\n");
}

/// The reply of an `ma` that left an item (changed or created), rendered
/// while it is locked: `T` and `N` re-time it in flag order.
fn arith_item(m: &Meta<'_>, key: &[u8], it: &MetaItem<'_>, out: &mut Vec<u8>) -> Result<(), ()> {
    let f = &m.flags;
    // The stored number may be space-padded (an in-place rewrite).
    let data = it.data();
    let number = &data[..data.iter().position(|&b| b == b' ').unwrap_or(data.len())];
    if f.value {
        out.extend_from_slice(b"VA ");
        num(out, number.len());
    } else {
        out.extend_from_slice(b"HD");
    }
    for t in tokens(m.tokens) {
        match t[0] {
            b'c' => {
                out.extend_from_slice(b" c");
                num(out, it.cas());
            }
            b't' => ttl_left(out, it),
            b'T' => it.set_ttl(f.ttl.map_or(0, i64::from)),
            b'N' if it.created => it.set_ttl(f.vivify.map_or(0, i64::from)),
            b'O' => opaque(out, t)?,
            b'k' => echo_key(out, key, f.binary),
            _ => {}
        }
    }
    if f.value {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(number);
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `me <key> [b]`: exp is negative seconds left (-1 = never), la seconds
/// since last access; cls and size are ours (the class `stats items` counts
/// the item in, and header, key and value as `mem_requested` counts them):
/// memcached prints its own, which differ as its classes and header do. The
/// dumps print the same.
fn debug(ctx: &WorkerContext, key: &[u8], out: &mut Vec<u8>) {
    ctx.store.counters().incr(Counter::cmd_meta);
    ctx.store.meta_debug(key, |found| {
        let Some(it) = found else {
            out.extend_from_slice(b"EN\r\n");
            return;
        };
        out.extend_from_slice(b"ME ");
        if it.key_binary() {
            base64_encode(it.key(), out);
        } else {
            out.extend_from_slice(it.key());
        }
        let exp = match it.exptime() {
            0 => -1,
            e => it.now.wrapping_sub(e) as i32,
        };
        let (cls, size) = (it.class_id(), it.total_size());
        let _ = write!(
            out,
            " exp={exp} la={} cas={} fetch={} cls={cls} size={size}\r\n",
            it.now.wrapping_sub(it.time()),
            it.cas(),
            if it.fetched() { "yes" } else { "no" },
        );
    });
}

/// An `lru_crawler metadump` under way on a connection.
pub struct Dump {
    /// The next hash bucket to walk.
    next: usize,
    /// Class ids asked for (ours, as `stats items`), or all.
    classes: Option<ClassIds>,
}

impl Dump {
    pub fn new(classes: Option<ClassIds>) -> Dump {
        Dump { next: 0, classes }
    }
}

/// Hash buckets walked per slice of a metadump (a connection's turn, `-R`,
/// counts one request per slice).
const DUMP_SLICE: usize = 4096;

/// The next slice of `dump`: a line per live item, as memcached's
/// crawler_metadump_eval writes them (each ends in `\n` alone), then `END`.
/// Returns true once the walk is over and `END` written. Items come in hash
/// order, memcached's in LRU order per class.
pub(super) fn metadump_slice(ctx: &WorkerContext, dump: &mut Dump, out: &mut Vec<u8>) -> bool {
    let classes = dump.classes;
    let next = ctx.store.dump_buckets(dump.next, DUMP_SLICE, |it| {
        let (cls, size) = (it.class_id(), it.total_size());
        if let Some(ids) = &classes
            && !ids.contains(cls as u32)
        {
            return;
        }
        out.extend_from_slice(b"key=");
        uriencode(it.key(), out);
        let exp = match it.exptime() {
            0 => -1,
            e => i64::from(e),
        };
        let _ = writeln!(
            out,
            " exp={exp} la={} cas={} fetch={} cls={cls} size={size}",
            it.time(),
            it.cas(),
            if it.fetched() { "yes" } else { "no" },
        );
    });
    match next {
        Some(next) => {
            dump.next = next;
            false
        }
        None => {
            out.extend_from_slice(b"END\r\n");
            true
        }
    }
}

/// The most `stats cachedump` writes, END aside (memcached's `memlimit`).
const CACHEDUMP_MAX: usize = 2 << 20;

/// `stats cachedump <class id> <limit>`: `ITEM <key> [<bytes> b; <exp> s]`
/// for up to `limit` (0: all) live items of our class `id` (as `stats
/// items` numbers them), most
/// recently used first, as long as the reply stays under 2 MiB; then `END`.
/// `args` are the words after `cachedump`. memcached lists only its class's
/// HOT LRU; we list every item of the class (ordered by last access, then
/// by cas, newest first).
pub(super) fn cachedump<'a>(
    ctx: &WorkerContext,
    mut args: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    // memcached checks -X before the arguments.
    if !ctx.settings.dump_enabled {
        out.extend_from_slice(reply::CLIENT_ERROR_CACHEDUMP_NOT_ALLOWED);
        return;
    }
    // memcached's safe_strtoul: digits, a '+' allowed, no '-'.
    let number = |w: &[u8]| std::str::from_utf8(w).ok()?.parse::<u64>().ok();
    let (Some(id), Some(limit)) = (args.next(), args.next()) else {
        out.extend_from_slice(reply::CLIENT_ERROR_BAD_COMMAND_LINE);
        return;
    };
    let (Some(id), Some(limit)) = (number(id), number(limit)) else {
        out.extend_from_slice(reply::CLIENT_ERROR_BAD_FORMAT);
        return;
    };
    // memcached's ids end at 63, ours at the class count (0 names none).
    if id > ctx.store.class_count() as u64 {
        out.extend_from_slice(reply::CLIENT_ERROR_ILLEGAL_SLAB_ID);
        return;
    }
    // (last access, cas, key, value bytes, exptime)
    let mut found: Vec<(u32, u64, Vec<u8>, usize, u32)> = Vec::new();
    ctx.store.dump_buckets(0, usize::MAX, |it| {
        if it.class_id() as u64 == id {
            found.push((
                it.time(),
                it.cas(),
                it.key().to_vec(),
                it.data_len(),
                it.exptime(),
            ));
        }
    });
    found.sort_unstable_by_key(|&(time, cas, ..)| std::cmp::Reverse((time, cas)));
    let start = out.len();
    let mut line = Vec::new();
    for (shown, (_, _, key, bytes, exptime)) in found.into_iter().enumerate() {
        if limit != 0 && shown as u64 >= limit {
            break;
        }
        line.clear();
        line.extend_from_slice(b"ITEM ");
        line.extend_from_slice(&key);
        let _ = write!(line, " [{bytes} b; {exptime} s]\r\n");
        if out.len() - start + line.len() + 6 > CACHEDUMP_MAX {
            break;
        }
        out.extend_from_slice(&line);
    }
    out.extend_from_slice(reply::END);
}

/// memcached's uriencode: letters, digits and `-._~` as they are, every
/// other byte `%XX` (upper-case hex).
fn uriencode(key: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}
