//! Runs binary-protocol requests (`protocol::binary`) against the store, with
//! memcached 1.6.18's replies, counters and `stats detail` records.
//!
//! memcached sends a connection's replies when it has read everything there
//! was, and earlier at a few points: after an error reply (unless it swallows
//! a value first), after `noop`, after `quit`. A bad magic byte (or an
//! overlong header) closes the connection and drops the replies not sent yet;
//! so does this module, which keeps those same points as the mark below which
//! replies are "sent".

use slog::{Logger, debug};

use crate::protocol::StoreMode;
use crate::protocol::binary::{self, Header, NO_CREATE, Parsed, Request, opcode, status};
use crate::store::prefix::PrefixOp;
use crate::store::stats::Counter;
use crate::store::{ArithResult, DeleteResult, StoreResult};

use super::conn::Conn;
use super::exec::After;
use super::{OUTPUT_HIGH, WorkerContext, stats};

/// memcached's version, as `version` and `stats` give it.
const VERSION: &[u8] = b"1.6.18";

/// What a request leaves the connection to do.
enum Flow {
    Next,
    /// memcached would send what is queued now.
    Flush,
    /// Send what is queued, then close (`quit`).
    Close,
}

/// Parse and execute binary requests, as `super::run_requests` does for text.
pub fn run_requests(
    ctx: &WorkerContext,
    conn: &mut Conn,
    log: &Logger,
    budget: &mut usize,
) -> Option<After> {
    // Replies below this mark count as sent (see the module's comment).
    let mut sent = conn.output.len();
    while conn.output_pending() < OUTPUT_HIGH && conn.swallow == 0 && *budget > 0 {
        *budget -= 1;
        let pending = conn.input.pending();
        if pending.is_empty() {
            return None;
        }
        match binary::parse(pending, &ctx.limits) {
            Parsed::Incomplete => return None,
            Parsed::Close => {
                debug!(
                    log,
                    "binary request with a bad magic byte or an overlong header; closing"
                );
                conn.output.truncate(sent);
                return Some(After::Close);
            }
            Parsed::Request {
                header,
                request,
                consumed,
            } => {
                conn.last_active = ctx.now.get();
                conn.handled = true;
                if ctx.settings.verbosity >= 2 {
                    debug!(log, "binary request"; "opcode" => header.opcode, "request" => ?request);
                }
                let flow = execute(ctx, &header, &request, &mut conn.output);
                conn.input.consume(consumed);
                match flow {
                    Flow::Next => {}
                    Flow::Flush => sent = conn.output.len(),
                    Flow::Close => return Some(After::CloseAfterWrite),
                }
            }
            Parsed::Error {
                header,
                status,
                consumed,
                swallow,
                close,
                too_large,
            } => {
                conn.last_active = ctx.now.get();
                conn.handled = true;
                if let Some(refused) = too_large {
                    if ctx.detail_enabled() {
                        ctx.record_prefix(refused.key, PrefixOp::Set);
                    }
                    if refused.unlink {
                        ctx.store.remove(refused.key);
                    }
                }
                binary::error(&mut conn.output, &header, status);
                conn.input.consume(consumed);
                let now = swallow.min(conn.input.len());
                conn.input.consume(now);
                conn.swallow = swallow - now;
                if close {
                    return Some(After::CloseAfterWrite);
                }
                if swallow == 0 {
                    sent = conn.output.len();
                }
            }
        }
    }
    None
}

/// An error reply; memcached sends it at once.
fn fail(out: &mut Vec<u8>, h: &Header, status: u16) -> Flow {
    binary::error(out, h, status);
    Flow::Flush
}

fn fail_with(out: &mut Vec<u8>, h: &Header, status: u16, message: &[u8]) -> Flow {
    binary::error_with(out, h, status, message);
    Flow::Flush
}

fn execute(ctx: &WorkerContext, h: &Header, request: &Request<'_>, out: &mut Vec<u8>) -> Flow {
    let store = &ctx.store;
    let counters = store.counters();
    counters.incr(Counter::requests);
    match *request {
        Request::Get {
            key,
            touch,
            with_key,
            with_value,
            quiet,
        } => {
            let (cmd, hit, miss) = match touch {
                Some(_) => (
                    Counter::cmd_touch,
                    Counter::touch_hits,
                    Counter::touch_misses,
                ),
                None => (Counter::cmd_get, Counter::get_hits, Counter::get_misses),
            };
            counters.incr(cmd);
            let found = store.get(key, touch.map(i64::from), |item| {
                let flags = item.flags.to_be_bytes();
                let key: &[u8] = if with_key { key } else { &[] };
                let value: &[u8] = if with_value { &item.data() } else { &[] };
                binary::response(
                    out,
                    h.opcode,
                    status::SUCCESS,
                    h.opaque,
                    item.cas,
                    [&flags, key, value],
                );
            });
            counters.incr(if found { hit } else { miss });
            if ctx.detail_enabled() {
                ctx.record_prefix(key, PrefixOp::Get { hit: found });
            }
            match (found, quiet, with_key) {
                (true, _, _) | (false, true, _) => Flow::Next,
                // getk/gatk answer a miss with the key, and no message.
                (false, false, true) => {
                    binary::response(
                        out,
                        h.opcode,
                        status::KEY_ENOENT,
                        h.opaque,
                        0,
                        [&[], key, &[]],
                    );
                    Flow::Next
                }
                (false, false, false) => fail(out, h, status::KEY_ENOENT),
            }
        }
        Request::Store {
            mode,
            key,
            flags,
            exptime,
            value,
            quiet,
        } => {
            if ctx.detail_enabled() {
                ctx.record_prefix(key, PrefixOp::Set);
            }
            let (result, cas) = store.store_cas(mode, key, flags, i64::from(exptime), value, h.cas);
            // memcached counts the set once it has room for the value.
            if !matches!(result, StoreResult::NoMemory | StoreResult::TooLarge) {
                counters.incr(Counter::cmd_set);
            }
            if mode == StoreMode::Cas {
                counters.incr(match result {
                    StoreResult::Stored => Counter::cas_hits,
                    StoreResult::Exists => Counter::cas_badval,
                    _ => Counter::cas_misses,
                });
            }
            match result {
                StoreResult::Stored => {
                    if !quiet {
                        binary::success(out, h, cas);
                    }
                    Flow::Next
                }
                StoreResult::Exists => fail(out, h, status::KEY_EEXISTS),
                StoreResult::NotFound => fail(out, h, status::KEY_ENOENT),
                StoreResult::NotStored => fail(
                    out,
                    h,
                    match mode {
                        StoreMode::Add => status::KEY_EEXISTS,
                        StoreMode::Replace => status::KEY_ENOENT,
                        _ => status::NOT_STORED,
                    },
                ),
                StoreResult::TooLarge => fail(out, h, status::E2BIG),
                StoreResult::NoMemory => {
                    fail_with(out, h, status::ENOMEM, b"Out of memory allocating item")
                }
            }
        }
        Request::Delete { key, quiet } => {
            if ctx.detail_enabled() {
                ctx.record_prefix(key, PrefixOp::Delete);
            }
            match store.delete_cas(key, h.cas) {
                DeleteResult::Deleted => {
                    counters.incr(Counter::delete_hits);
                    if !quiet {
                        binary::success(out, h, 0);
                    }
                    Flow::Next
                }
                DeleteResult::Exists => fail(out, h, status::KEY_EEXISTS),
                DeleteResult::NotFound => {
                    counters.incr(Counter::delete_misses);
                    fail(out, h, status::KEY_ENOENT)
                }
            }
        }
        Request::Arith {
            key,
            incr,
            delta,
            initial,
            exptime,
            quiet,
        } => {
            let (hit, miss) = if incr {
                (Counter::incr_hits, Counter::incr_misses)
            } else {
                (Counter::decr_hits, Counter::decr_misses)
            };
            let counted = |out: &mut Vec<u8>, value: u64, cas: u64| {
                if !quiet {
                    binary::response(
                        out,
                        h.opcode,
                        status::SUCCESS,
                        h.opaque,
                        cas,
                        [&[], &[], &value.to_be_bytes()],
                    );
                }
                Flow::Next
            };
            let Some(result) = store.arith_if_cas(key, incr, delta, h.cas) else {
                return fail(out, h, status::KEY_EEXISTS);
            };
            match result {
                (ArithResult::Value(v), cas) => {
                    counters.incr(hit);
                    counted(out, v, cas)
                }
                (ArithResult::NonNumeric, _) => fail(out, h, status::DELTA_BADVAL),
                (ArithResult::NoMemory, _) => {
                    counters.incr(hit);
                    fail_with(out, h, status::ENOMEM, b"Out of memory incrementing value")
                }
                (ArithResult::NotFound, _) if exptime != NO_CREATE => {
                    // A new counter holds `initial` in decimal, as memcached stores it.
                    let mut digits = [0u8; 20];
                    let len = {
                        use std::io::Write;
                        let mut w = &mut digits[..];
                        let _ = write!(w, "{initial}");
                        20 - w.len()
                    };
                    let created = store.store_cas(
                        StoreMode::Add,
                        key,
                        0,
                        i64::from(exptime),
                        &digits[..len],
                        0,
                    );
                    match created {
                        (StoreResult::Stored, cas) => counted(out, initial, cas),
                        (StoreResult::NoMemory | StoreResult::TooLarge, _) => {
                            fail_with(out, h, status::ENOMEM, b"Out of memory allocating new item")
                        }
                        _ => fail(out, h, status::NOT_STORED),
                    }
                }
                (ArithResult::NotFound, _) => {
                    counters.incr(miss);
                    fail(out, h, status::KEY_ENOENT)
                }
            }
        }
        Request::Flush { delay, quiet } => {
            if !ctx.settings.flush_enabled {
                return fail(out, h, status::AUTH_ERROR);
            }
            counters.incr(Counter::cmd_flush);
            store.flush_all(i64::from(delay));
            if !quiet {
                binary::success(out, h, 0);
            }
            Flow::Next
        }
        Request::Noop => {
            binary::success(out, h, 0);
            Flow::Flush
        }
        Request::Version => {
            binary::response(
                out,
                h.opcode,
                status::SUCCESS,
                h.opaque,
                0,
                [&[], &[], VERSION],
            );
            Flow::Next
        }
        Request::Stat { group } => stat(ctx, h, group, out),
        Request::Quit { quiet } => {
            if !quiet {
                binary::success(out, h, 0);
            }
            Flow::Close
        }
    }
}

/// `stat [group]`: the pairs of the text `stats <group>`, one response each,
/// then an empty one; groups are matched as memcached matches them (`reset`,
/// `settings` and `detail` by prefix, the others whole; `conns` is text only).
fn stat(ctx: &WorkerContext, h: &Header, group: &[u8], out: &mut Vec<u8>) -> Flow {
    let args: &[u8] = if group.is_empty() {
        b""
    } else if group.starts_with(b"reset") {
        b"reset"
    } else if group.starts_with(b"settings") {
        b"settings"
    } else if let Some(sub) = group.strip_prefix(b"detail") {
        if sub.starts_with(b" dump") {
            // One response holds the whole dump, named "detailed".
            let mut dump = Vec::new();
            stats::render(ctx, b"detail dump", &mut dump);
            binary::response(out, opcode::STAT, 0, h.opaque, 0, [&[], b"detailed", &dump]);
            binary::response(out, opcode::STAT, 0, h.opaque, 0, [&[]; 3]);
            return Flow::Next;
        } else if sub.starts_with(b" on") {
            b"detail on"
        } else if sub.starts_with(b" off") {
            b"detail off"
        } else {
            return fail(out, h, status::KEY_ENOENT);
        }
    } else if matches!(
        group,
        b"items" | b"slabs" | b"sizes" | b"sizes_enable" | b"sizes_disable" | b"workers"
    ) {
        group
    } else {
        return fail(out, h, status::KEY_ENOENT);
    };
    let mut text = Vec::new();
    stats::render(ctx, args, &mut text);
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(pair) = line.strip_prefix(b"STAT ") {
            let at = pair.iter().position(|&b| b == b' ').unwrap_or(pair.len());
            let (key, value) = (&pair[..at], pair.get(at + 1..).unwrap_or(&[]));
            binary::response(out, opcode::STAT, 0, h.opaque, 0, [&[], key, value]);
        } else if matches!(line, b"END" | b"RESET" | b"OK") {
            binary::response(out, opcode::STAT, 0, h.opaque, 0, [&[]; 3]);
        }
    }
    Flow::Next
}
