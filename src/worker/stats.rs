//! The `stats` groups, read from the segment: counters are per worker and
//! summed here, slab classes and the prefix table are shared, and each
//! worker publishes its connections (`store::conns`).
//!
//! ```text
//! stats | stats settings | stats items | stats slabs | stats sizes | stats conns
//! stats detail on|off|dump | stats reset | stats workers (ours)
//! ```

use std::fmt::Display;
use std::sync::atomic::Ordering::Relaxed;

use crate::protocol::{Dialect, reply};
use crate::store::conns::{ConnAddrs, ConnInfo, ConnState};

use crate::store::stats::{ClassCounter, Counter};

use super::WorkerContext;

/// `stats detail dump`'s line format.
const PREFIX_LINE: &str = "PREFIX";
/// memcached's clock starts this many seconds before the process (its
/// `oldest` setting is on that clock).
const MEMCACHED_CLOCK_OFFSET: u64 = 60;
/// Ids in `stats conns`: fds repeat across worker processes, so a worker's
/// connections are numbered `slot * CONN_ID_STRIDE + fd`.
const CONN_ID_STRIDE: u64 = 1_000_000;

/// Render the reply to `stats <args>`.
pub fn render(ctx: &WorkerContext, args: &[u8], out: &mut Vec<u8>) {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    match words.next() {
        None => general(ctx, out),
        Some(b"reset") => {
            ctx.store.reset_stats();
            out.extend_from_slice(reply::RESET);
        }
        Some(b"settings") => settings(ctx, out),
        Some(b"items") => items(ctx, out),
        Some(b"slabs") => slabs(ctx, out),
        Some(b"sizes") => {
            match ctx.store.sizes() {
                Some(buckets) => {
                    for (bytes, items) in buckets {
                        reply::stat(out, &bytes.to_string(), items);
                    }
                }
                None => reply::stat(out, "sizes_status", "disabled"),
            }
            out.extend_from_slice(reply::END);
        }
        // memcached ends these two replies without END.
        Some(b"sizes_enable") => {
            if ctx.store.sizes_enable() {
                reply::stat(out, "sizes_status", "enabled");
            } else {
                reply::stat(out, "sizes_status", "error");
                reply::stat(out, "sizes_error", "cas_support_disabled");
            }
        }
        Some(b"sizes_disable") => {
            ctx.store.sizes_disable();
            reply::stat(out, "sizes_status", "disabled");
        }
        Some(b"conns") => conns(ctx, out),
        Some(b"detail") => match words.next() {
            Some(b"on") => {
                ctx.store.set_detail(true);
                out.extend_from_slice(reply::OK);
            }
            Some(b"off") => {
                ctx.store.set_detail(false);
                out.extend_from_slice(reply::OK);
            }
            Some(b"dump") => detail_dump(ctx, out),
            _ => out.extend_from_slice(reply::CLIENT_ERROR_STATS_DETAIL_USAGE),
        },
        Some(b"workers") => workers(ctx, out),
        Some(b"cachedump") => super::meta::cachedump(ctx, words, out),
        Some(_) => out.extend_from_slice(reply::ERROR),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `stats settings`: memcached's keys in its order, for the settings we
/// have; keys that describe machinery we do not have are left out
/// (docs/compatibility.md).
fn settings(ctx: &WorkerContext, out: &mut Vec<u8>) {
    let s = &ctx.settings;
    let h = ctx.store.header();
    let stat = |out: &mut Vec<u8>, name: &str, value: &dyn Display| reply::stat(out, name, value);
    stat(
        out,
        "maxbytes",
        &ctx.store.memory_limit().unwrap_or(s.memory_limit),
    );
    // The settings a reload changes live are read from the segment.
    let live = &h.live;
    stat(out, "maxconns", &live.max_connections.load(Relaxed));
    // With -s there is no TCP; memcached still shows the port it was given.
    let tcpport = if s.unix_socket.is_some() {
        s.port
    } else {
        ctx.port
    };
    stat(out, "tcpport", &tcpport);
    stat(out, "udpport", &0);
    let inter = s
        .listen
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let inter = if s.unix_socket.is_some() {
        "NULL".to_string()
    } else {
        inter
    };
    stat(out, "inter", &inter);
    let verbosity = match h.verbosity.load(Relaxed) {
        0 => u32::from(s.verbosity),
        v => v - 1,
    };
    stat(out, "verbosity", &verbosity);
    let oldest = match u64::from(h.oldest_live.load(Relaxed)) {
        0 => 0,
        t => (t + MEMCACHED_CLOCK_OFFSET).saturating_sub(h.started.load(Relaxed)),
    };
    stat(out, "oldest", &oldest);
    stat(out, "evictions", &if s.evictions { "on" } else { "off" });
    match &s.unix_socket {
        Some(path) => stat(out, "domain_socket", &path.display()),
        None => stat(out, "domain_socket", &"NULL"),
    }
    // memcached's name for -a, which is a mode, not a umask.
    stat(out, "umask", &format_args!("{:o}", s.unix_socket_mode));
    stat(out, "shutdown_command", &yes_no(s.shutdown_enabled));
    stat(
        out,
        "growth_factor",
        &format_args!("{:.2}", s.growth_factor),
    );
    // memcached's chunk_size is the room for key + value in the smallest chunk.
    stat(out, "chunk_size", &s.chunk_size);
    stat(out, "num_threads", &live.workers.load(Relaxed));
    stat(
        out,
        "stat_key_prefix",
        &char::from(s.stats_prefix_delimiter).to_string(),
    );
    stat(out, "detail_enabled", &yes_no(ctx.detail_enabled()));
    stat(out, "reqs_per_event", &live.reqs_per_event.load(Relaxed));
    stat(out, "cas_enabled", &yes_no(s.cas_enabled));
    stat(out, "tcp_backlog", &s.backlog);
    let protocol = match s.protocol {
        Dialect::Auto => "auto-negotiate",
        Dialect::Ascii => "ascii",
        Dialect::Binary => "binary",
    };
    stat(out, "binding_protocol", &protocol);
    stat(out, "auth_enabled_sasl", &"no");
    match &s.auth_file {
        Some(path) => stat(out, "auth_enabled_ascii", &path.display()),
        None => stat(out, "auth_enabled_ascii", &"no"),
    }
    stat(out, "item_size_max", &s.item_size_max);
    // Connections over -c are told so and closed at once.
    stat(out, "maxconns_fast", &"yes");
    // Pages always move; the level and the ratio are the segment's, where a
    // client's `slabs automove` sets them.
    stat(out, "slab_reassign", &"yes");
    stat(out, "slab_automove", &ctx.store.automove());
    stat(
        out,
        "slab_automove_ratio",
        &format_args!("{:.2}", ctx.store.automove_ratio()),
    );
    stat(out, "slab_automove_window", &s.slab_automove_window);
    let (sleep, tocrawl) = ctx.store.crawler_pace();
    stat(out, "lru_crawler", &yes_no(ctx.store.crawler_enabled()));
    stat(out, "lru_crawler_sleep", &sleep);
    stat(out, "lru_crawler_tocrawl", &tocrawl);
    stat(out, "flush_enabled", &yes_no(s.flush_enabled));
    stat(out, "dump_enabled", &yes_no(s.dump_enabled));
    stat(out, "hash_algorithm", &"xxh3");
    stat(
        out,
        "idle_timeout",
        &(live.idle_timeout_ms.load(Relaxed) / 1000),
    );
    stat(out, "track_sizes", &yes_no(ctx.store.sizes_enabled()));
    stat(out, "ssl_enabled", &"no");
    out.extend_from_slice(reply::END);
}

/// `stats items`: `items:<class>:<key>` for each class holding items.
fn items(ctx: &WorkerContext, out: &mut Vec<u8>) {
    let store = &ctx.store;
    let now = crate::store::unix_now();
    for c in 0..store.class_count() {
        let snap = store.class_snapshot(c, now);
        if snap.used_chunks == 0 {
            continue;
        }
        let n = c + 1;
        let line = |out: &mut Vec<u8>, name: &str, v: u64| {
            reply::stat(out, &format!("items:{n}:{name}"), v);
        };
        let total = |k| store.class_total(c, k);
        line(out, "number", snap.items);
        line(out, "age", snap.age.into());
        line(out, "mem_requested", snap.bytes);
        line(out, "evicted", total(ClassCounter::evicted));
        line(out, "evicted_nonzero", total(ClassCounter::evicted_nonzero));
        line(out, "evicted_time", snap.evicted_time.into());
        line(out, "outofmemory", total(ClassCounter::outofmemory));
        line(out, "reclaimed", total(ClassCounter::reclaimed));
        line(
            out,
            "expired_unfetched",
            total(ClassCounter::expired_unfetched),
        );
        for k in [
            ClassCounter::evicted_unfetched,
            ClassCounter::evicted_active,
            ClassCounter::crawler_reclaimed,
            ClassCounter::crawler_items_checked,
        ] {
            line(out, k.name(), total(k));
        }
    }
    out.extend_from_slice(reply::END);
}

/// `stats slabs`: `<class>:<key>` for each class that has pages, then
/// `active_slabs` and `total_malloced`.
fn slabs(ctx: &WorkerContext, out: &mut Vec<u8>) {
    let store = &ctx.store;
    let now = crate::store::unix_now();
    let page_size = store.layout().page_size;
    let (mut active, mut malloced) = (0u64, 0u64);
    for c in 0..store.class_count() {
        let snap = store.class_snapshot(c, now);
        if snap.pages == 0 {
            continue;
        }
        active += 1;
        malloced += u64::from(snap.pages) * page_size;
        let n = c + 1;
        let line = |out: &mut Vec<u8>, name: &str, v: u64| {
            reply::stat(out, &format!("{n}:{name}"), v);
        };
        let total_chunks = u64::from(snap.pages) * u64::from(snap.per_page);
        line(out, "chunk_size", snap.chunk_size.into());
        line(out, "chunks_per_page", snap.per_page.into());
        line(out, "total_pages", snap.pages.into());
        line(out, "total_chunks", total_chunks);
        line(out, "used_chunks", snap.used_chunks);
        line(
            out,
            "free_chunks",
            total_chunks.saturating_sub(snap.used_chunks + snap.free_chunks_end),
        );
        line(out, "free_chunks_end", snap.free_chunks_end);
        for &k in &ClassCounter::ALL[..=ClassCounter::touch_hits as usize] {
            line(out, k.name(), store.class_total(c, k));
        }
    }
    reply::stat(out, "active_slabs", active);
    reply::stat(out, "total_malloced", malloced);
    out.extend_from_slice(reply::END);
}

/// `stats conns`: every worker's published connections and listeners,
/// ordered by id (`slot * CONN_ID_STRIDE + fd`).
fn conns(ctx: &WorkerContext, out: &mut Vec<u8>) {
    let store = &ctx.store;
    let now = u64::from(crate::store::unix_now());
    let mut all: Vec<(u64, ConnInfo)> = Vec::new();
    for slot in 0..store.slots().len() {
        for (i, entry) in store.conn_table(slot).iter().enumerate() {
            let Some(mut info) = entry.read() else {
                continue;
            };
            if slot == ctx.slot && ctx.current_conn.get() == Some(i) {
                info.state = ConnState::ParseCmd;
            }
            all.push((slot as u64 * CONN_ID_STRIDE + u64::from(info.fd), info));
        }
    }
    all.sort_by_key(|&(id, _)| id);
    // Every worker accepts on the one unix socket, and lists it: show it once.
    let mut unix_listed = false;
    all.retain(|(_, i)| {
        let shared = i.addrs == ConnAddrs::Unix && i.state == ConnState::Listening;
        !(shared && std::mem::replace(&mut unix_listed, true))
    });
    let addr = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!("tcp:{v4}"),
        std::net::SocketAddr::V6(v6) => format!("tcp6:[{}]:{}", v6.ip(), v6.port()),
    };
    // memcached names the unix socket by its path, and shows its clients'
    // (unnamed) address as an unknown family.
    let unix = ctx
        .settings
        .unix_socket
        .as_ref()
        .map(|p| format!("unix:{}", p.display()))
        .unwrap_or_else(|| "unix:".into());
    let names = |i: &ConnInfo| match i.addrs {
        ConnAddrs::Tcp { peer, local } => (addr(peer), addr(local)),
        ConnAddrs::Unix if i.state == ConnState::Listening => (unix.clone(), unix.clone()),
        ConnAddrs::Unix => ("?:<AF 0>".to_string(), unix.clone()),
    };
    for (id, info) in all {
        let (peer, local) = names(&info);
        reply::stat(out, &format!("{id}:addr"), peer);
        if info.state != ConnState::Listening {
            reply::stat(out, &format!("{id}:listen_addr"), local);
        }
        reply::stat(out, &format!("{id}:state"), info.state.name());
        reply::stat(
            out,
            &format!("{id}:secs_since_last_cmd"),
            now.saturating_sub(u64::from(info.last_cmd)),
        );
    }
    out.extend_from_slice(reply::END);
}

/// `stats detail dump`: `PREFIX <p> get <n> hit <n> set <n> del <n>` lines in
/// memcached's order, then the overflow line (named with the delimiter,
/// which no prefix contains) when the table was full.
fn detail_dump(ctx: &WorkerContext, out: &mut Vec<u8>) {
    use std::io::Write;
    let (lines, overflow) = ctx.store.prefix_dump();
    for l in lines {
        out.extend_from_slice(PREFIX_LINE.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&l.prefix);
        let _ = write!(
            out,
            " get {} hit {} set {} del {}\r\n",
            l.get, l.hit, l.set, l.del
        );
    }
    if let Some([get, hit, set, del]) = overflow {
        let _ = write!(
            out,
            "{PREFIX_LINE} {}overflow get {get} hit {hit} set {set} del {del}\r\n",
            char::from(ctx.settings.stats_prefix_delimiter)
        );
    }
    out.extend_from_slice(reply::END);
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
    reply::stat(
        out,
        "limit_maxbytes",
        ctx.store.memory_limit().unwrap_or(s.memory_limit),
    );
    reply::stat(out, "accepting_conns", 1);
    reply::stat(out, "threads", h.live.workers.load(Relaxed));
    reply::stat(out, "conn_yields", total(Counter::conn_yields));
    let layout = store.layout();
    reply::stat(out, "hash_power_level", layout.bucket_bits);
    reply::stat(out, "hash_bytes", 4u64 << layout.bucket_bits);
    reply::stat(out, "hash_is_expanding", 0);
    // No chunked items to rescue, no inline reclaim, and a busy item is never
    // being deleted under the mover (it holds the item's lock): those stay 0.
    for (name, value) in [
        (
            "slab_reassign_rescues",
            total(Counter::slab_reassign_rescues),
        ),
        ("slab_reassign_chunk_rescues", 0),
        (
            "slab_reassign_evictions_nomem",
            total(Counter::slab_reassign_evictions_nomem),
        ),
        ("slab_reassign_inline_reclaim", 0),
        (
            "slab_reassign_busy_items",
            total(Counter::slab_reassign_busy_items),
        ),
        ("slab_reassign_busy_deletes", 0),
        ("slab_reassign_running", u64::from(store.reassign_running())),
        ("slabs_moved", total(Counter::slabs_moved)),
        ("lru_crawler_running", u64::from(store.crawl_running())),
        ("lru_crawler_starts", total(Counter::lru_crawler_starts)),
    ] {
        reply::stat(out, name, value);
    }
    reply::stat(out, "bytes", bytes);
    reply::stat(out, "curr_items", items);
    reply::stat(out, "total_items", total(Counter::total_items));
    reply::stat(out, "slab_global_page_pool", store.pool_pages());
    for &c in &[
        Counter::expired_unfetched,
        Counter::evicted_unfetched,
        Counter::evicted_active,
        Counter::evictions,
        Counter::reclaimed,
        Counter::crawler_reclaimed,
        Counter::crawler_items_checked,
    ] {
        reply::stat(out, c.name(), total(c));
    }
    // Ours: the health of the worker pool.
    let alive = store
        .slots()
        .iter()
        .filter(|w| w.pid.load(Relaxed) != 0)
        .count();
    // Workers meant to be in service (a reload can change it up to
    // max_workers); slots past it are dormant.
    reply::stat(out, "workers", h.live.workers.load(Relaxed));
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
    use nix::sys::resource::{UsageWho, getrusage};
    let fmt = |t: nix::sys::time::TimeVal| format!("{}.{:06}", t.tv_sec(), t.tv_usec());
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(ru) => (fmt(ru.user_time()), fmt(ru.system_time())),
        Err(_) => ("0.000000".into(), "0.000000".into()),
    }
}
