//! `stats`, `stats reset` and our `stats workers`, summed over all workers'
//! counters in the segment.

use std::sync::atomic::Ordering::Relaxed;

use crate::protocol::reply;
use crate::store::stats::Counter;

use super::WorkerContext;

/// Render the reply to `stats <args>`.
pub fn render(ctx: &WorkerContext, args: &[u8], out: &mut Vec<u8>) {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    match words.next() {
        None => general(ctx, out),
        Some(b"reset") => {
            for slot in ctx.store.slots() {
                slot.counters.reset();
            }
            out.extend_from_slice(reply::RESET);
        }
        Some(b"workers") => workers(ctx, out),
        // Per-prefix stats are not kept (docs/compatibility.md); the usage
        // error for a missing or bad mode is memcached's.
        Some(b"detail") if !matches!(words.next(), Some(b"on" | b"off" | b"dump")) => {
            out.extend_from_slice(reply::CLIENT_ERROR_STATS_DETAIL_USAGE);
        }
        Some(_) => out.extend_from_slice(reply::ERROR),
    }
}

fn general(ctx: &WorkerContext, out: &mut Vec<u8>) {
    let store = &ctx.store;
    let s = &ctx.settings;
    let h = store.header();
    let now = crate::store::unix_now() as u64;
    let started = h.started.load(Relaxed);
    let total = |c| store.total(c);
    let (items, bytes) = store.items_and_bytes();
    let usage = rusage();
    // The supervisor is our parent.
    let pid = nix::unistd::getppid().as_raw();
    reply::stat(out, "pid", pid);
    reply::stat(out, "uptime", now.saturating_sub(started));
    reply::stat(out, "time", now);
    reply::stat(out, "version", "1.6.18");
    reply::stat(out, "libevent", "mio");
    reply::stat(out, "pointer_size", usize::BITS);
    reply::stat(out, "rusage_user", usage.0);
    reply::stat(out, "rusage_system", usage.1);
    reply::stat(out, "max_connections", s.max_connections);
    for &c in &[
        Counter::curr_connections,
        Counter::total_connections,
        Counter::rejected_connections,
    ] {
        reply::stat(out, c.name(), total(c));
    }
    reply::stat(
        out,
        "connection_structures",
        total(Counter::curr_connections),
    );
    for &c in &[
        Counter::cmd_get,
        Counter::cmd_set,
        Counter::cmd_flush,
        Counter::cmd_touch,
        Counter::cmd_meta,
        Counter::get_hits,
        Counter::get_misses,
        Counter::get_expired,
        Counter::get_flushed,
        Counter::delete_misses,
        Counter::delete_hits,
        Counter::incr_misses,
        Counter::incr_hits,
        Counter::decr_misses,
        Counter::decr_hits,
        Counter::cas_misses,
        Counter::cas_hits,
        Counter::cas_badval,
        Counter::touch_hits,
        Counter::touch_misses,
        Counter::store_too_large,
        Counter::store_no_memory,
        Counter::auth_cmds,
        Counter::auth_errors,
    ] {
        reply::stat(out, c.name(), total(c));
    }
    // memcached shows it only when the feature is on.
    if !s.idle_timeout.is_zero() {
        reply::stat(out, "idle_kicks", total(Counter::idle_kicks));
    }
    for &c in &[Counter::bytes_read, Counter::bytes_written] {
        reply::stat(out, c.name(), total(c));
    }
    reply::stat(out, "limit_maxbytes", s.memory_limit);
    reply::stat(out, "accepting_conns", 1);
    reply::stat(out, "threads", s.workers);
    reply::stat(out, "conn_yields", total(Counter::conn_yields));
    let layout = store.layout();
    reply::stat(out, "hash_power_level", layout.bucket_bits);
    reply::stat(out, "hash_bytes", 4u64 << layout.bucket_bits);
    reply::stat(out, "hash_is_expanding", 0);
    reply::stat(out, "bytes", bytes);
    reply::stat(out, "curr_items", items);
    reply::stat(out, "total_items", total(Counter::total_items));
    for &c in &[
        Counter::expired_unfetched,
        Counter::evicted_unfetched,
        Counter::evicted_active,
        Counter::evictions,
        Counter::reclaimed,
    ] {
        reply::stat(out, c.name(), total(c));
    }
    // Ours: the health of the worker pool.
    let alive = store
        .slots()
        .iter()
        .filter(|w| w.pid.load(Relaxed) != 0)
        .count();
    reply::stat(out, "workers", store.slots().len());
    reply::stat(out, "workers_alive", alive);
    reply::stat(
        out,
        "worker_restarts",
        store
            .slots()
            .iter()
            .map(|w| w.restarts.load(Relaxed))
            .sum::<u64>(),
    );
    out.extend_from_slice(reply::END);
}

/// `stats workers`: one group of lines per worker slot.
fn workers(ctx: &WorkerContext, out: &mut Vec<u8>) {
    for (i, w) in ctx.store.slots().iter().enumerate() {
        let line = |out: &mut Vec<u8>, name: &str, v: u64| {
            reply::stat(out, &format!("worker:{i}:{name}"), v);
        };
        line(out, "pid", w.pid.load(Relaxed) as u64);
        line(out, "started", w.started.load(Relaxed));
        line(out, "restarts", w.restarts.load(Relaxed));
        line(
            out,
            "curr_connections",
            w.counters.get(Counter::curr_connections),
        );
        line(out, "requests", w.counters.get(Counter::requests));
    }
    out.extend_from_slice(reply::END);
}

/// This process's CPU time, as memcached prints it (`seconds.micros`).
fn rusage() -> (String, String) {
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let fmt = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    (fmt(ru.ru_utime), fmt(ru.ru_stime))
}
