//! A worker process: one mio event loop over its slot's listening sockets and
//! all the connections it accepted. Single-threaded; many connections.

mod binary;
mod conn;
mod exec;
pub mod handoff;
mod meta;
mod stats;

use std::cell::Cell;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::atomic::{AtomicBool, Ordering, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slog::{Logger, debug, info, warn};

use crate::config::Settings;
use crate::protocol::auth::{self, AuthRequest};
use crate::protocol::{self, Dialect, Limits, Parsed, Refusal, reply, seed};
use crate::store::Store;
use crate::store::conns::{CONNS_PER_WORKER, ConnState};
use crate::store::mover::Automover;
use crate::store::prefix::PrefixOp;
use crate::store::stats::Counter;
use conn::{Conn, Listener, Moment, ReadOutcome, Stream};
use exec::After;

/// Replies queued past this stop a connection's processing until the client
/// reads them: a client that pipelines without reading costs bounded memory.
const OUTPUT_HIGH: usize = 1 << 20;
/// A seed `SET` whose data stops arriving for this long is `ERR TOO_SMALL`.
const SEED_DATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the loop wakes up to check timers and the drain flag.
const TICK: Duration = Duration::from_millis(100);
/// memcached's answer to a connection over `-c`, before it closes it.
const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";
/// First token for connections; listeners use 0..INBOX.
const FIRST_CONN: usize = 1024;
/// The token of the slot's mailbox (connections passed on by other workers).
const INBOX: usize = FIRST_CONN - 1;

/// Set by SIGTERM/SIGINT: stop accepting, answer what was received, exit.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// The signal handler: async-signal-safe (one atomic store).
pub extern "C" fn on_drain_signal(_: libc::c_int) {
    DRAINING.store(true, Ordering::SeqCst);
}

/// What every command needs.
pub struct WorkerContext {
    pub store: Store,
    pub settings: Settings,
    pub limits: Limits,
    /// This worker's slot.
    pub slot: usize,
    /// The TCP port the listeners are bound to (`-p -1` picks one; 0 with `-s`).
    pub port: u16,
    /// The connection-table entry of the connection whose command runs now.
    pub current_conn: Cell<Option<usize>>,
    /// The loop's clock, read once per wake-up rather than per request.
    pub now: Cell<Moment>,
}

impl WorkerContext {
    /// Is `stats detail` on? A client's `stats detail on|off` wins over `-D`.
    #[inline]
    pub fn detail_enabled(&self) -> bool {
        self.store.detail().unwrap_or(self.settings.detail_enabled)
    }

    /// Count `op` for `key`'s prefix (call only when detail is on).
    pub fn record_prefix(&self, key: &[u8], op: PrefixOp) {
        self.store
            .record_prefix(key, self.settings.stats_prefix_delimiter, op);
    }
}

pub struct Worker {
    ctx: WorkerContext,
    listeners: Vec<Listener>,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free_tokens: Vec<usize>,
    /// Connections that used up their request budget with work left (`-R`).
    yielded: Vec<usize>,
    /// Free entries of this slot's connection table (`stats conns`).
    free_entries: Vec<usize>,
    handoff: handoff::Handoff,
    /// Connections passed on to another worker while retiring.
    passed: usize,
    /// The slab automover's history: slot 0's worker alone moves pages.
    automover: Option<Automover>,
    log: Logger,
}

impl Worker {
    /// `listeners`: the slot's TCP sockets; `unix`: the unix socket all the
    /// workers in service share (`-s`).
    pub fn new(
        store: Store,
        settings: Settings,
        slot: usize,
        listeners: Vec<StdListener>,
        unix: Option<StdUnixListener>,
        handoff: handoff::Handoff,
        log: Logger,
    ) -> std::io::Result<Worker> {
        let poll = Poll::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&handoff.inbox_fd()),
            Token(INBOX),
            Interest::READABLE,
        )?;
        // A dead predecessor's connections are gone; ours get published as
        // they come, the listeners first.
        let table = store.conn_table(slot);
        for entry in table {
            entry.clear();
        }
        let started = store.header().started.load(Relaxed) as u32;
        let mut mio_listeners = Vec::new();
        for l in listeners {
            l.set_nonblocking(true)?;
            mio_listeners.push(Listener::Tcp(TcpListener::from_std(l)));
        }
        if let Some(l) = unix {
            // O_NONBLOCK is shared with every process holding the socket:
            // all of them only ever accept non-blocking.
            l.set_nonblocking(true)?;
            mio_listeners.push(Listener::Unix(UnixListener::from_std(l)));
        }
        let mut port = 0;
        for (i, (entry, l)) in table.iter().zip(&mut mio_listeners).enumerate() {
            if let Some(addrs) = l.addrs() {
                port = l.port().unwrap_or(port);
                entry.publish(l.as_raw_fd() as u32, addrs, ConnState::Listening, started);
            }
            poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        let free_entries = (mio_listeners.len()..CONNS_PER_WORKER).rev().collect();
        let automover = (slot == 0).then(|| Automover::new(settings.slab_automove_window));
        let limits = Limits {
            item_size_max: settings.item_size_max as usize,
            cas_enabled: settings.cas_enabled,
            seed_element_size: seed_element_size(&settings),
            shutdown_enabled: settings.shutdown_enabled,
            dump_enabled: settings.dump_enabled,
        };
        Ok(Worker {
            ctx: WorkerContext {
                store,
                settings,
                limits,
                slot,
                port,
                current_conn: Cell::new(None),
                now: Cell::new(Moment::now()),
            },
            listeners: mio_listeners,
            poll,
            conns: Vec::new(),
            free_tokens: Vec::new(),
            yielded: Vec::new(),
            free_entries,
            handoff,
            passed: 0,
            automover,
            log,
        })
    }

    /// Serve until drained. Returns the process exit code.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        let mut drain_deadline: Option<Instant> = None;
        let mut last_sweep = Instant::now();
        self.tick();
        // The loop is set up: the supervisor may announce READY=1.
        self.ctx.store.slot().ready.store(1, Relaxed);
        loop {
            if DRAINING.load(Relaxed) && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + self.ctx.settings.drain_timeout);
                self.begin_drain();
                debug!(self.log, "draining"; "connections" => self.open_conns());
            }
            if let Some(deadline) = drain_deadline {
                self.end_idle();
                if self.open_conns() == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            let timeout = if self.yielded.is_empty() {
                TICK.saturating_sub(last_sweep.elapsed())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                warn!(self.log, "poll failed"; "error" => %e);
                return 1;
            }
            self.ctx.now.set(Moment::now());
            for ev in events.iter() {
                let Token(t) = ev.token();
                if t == INBOX {
                    self.receive_passed();
                    continue;
                }
                if t < FIRST_CONN {
                    self.accept(t);
                    continue;
                }
                if let Some(Some(c)) = self.conns.get_mut(t - FIRST_CONN) {
                    if ev.is_readable() || ev.is_read_closed() {
                        c.readable = true;
                    }
                    if ev.is_read_closed() {
                        c.peer_closed = true;
                    }
                    if ev.is_writable() {
                        c.writable = true;
                    }
                    self.service(t - FIRST_CONN);
                }
            }
            for idx in std::mem::take(&mut self.yielded) {
                self.service(idx);
            }
            let since = last_sweep.elapsed();
            if since >= TICK {
                // Ticks keep a fixed cadence: a wake-up a little late (the
                // next event after the tick was due) must not make the next
                // tick late too, or the automover's window of ten ticks a
                // sample, one a second as memcached's, stretches under load
                // (seen: 20 % with a request every 20 ms). After a stall of
                // two ticks or more the cadence starts again rather than
                // catching up in a burst, and a tick is never due sooner than
                // half a tick after the last ran.
                let now = Instant::now();
                last_sweep = if since >= 2 * TICK {
                    now
                } else {
                    (last_sweep + TICK).max(now.checked_sub(TICK / 2).unwrap_or(now))
                };
                self.tick();
                self.sweep_timers();
                let workers = self.ctx.store.header().live.workers.load(Relaxed) as usize;
                self.ctx.store.sweep_tick(self.ctx.slot, workers);
                if let Some(am) = &mut self.automover {
                    self.ctx.store.mover_tick(am);
                }
            }
        }
        let left = self.open_conns();
        for i in 0..self.conns.len() {
            self.close(i);
        }
        info!(self.log, "worker exits"; "pid" => std::process::id(),
              "connections_passed_on" => self.passed, "connections_cut" => left);
        0
    }

    fn open_conns(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    fn stop_accepting(&mut self) {
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
    }

    fn accept(&mut self, which: usize) {
        loop {
            let Some(listener) = self.listeners.get(which) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                // Nothing left, or another worker took it (the unix socket).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest queued, try again later.
                    warn!(self.log, "accept failed"; "error" => %e);
                    return;
                }
            };
            let counters = self.ctx.store.counters();
            let open = self.ctx.store.total(Counter::curr_connections);
            if open >= self.ctx.settings.max_connections as u64 {
                counters.incr(Counter::rejected_connections);
                use std::io::Write;
                let _ = stream.write(TOO_MANY_CONNECTIONS);
                continue;
            }
            counters.incr(Counter::total_connections);
            debug!(self.log, "connection opened"; "peer" => ?peer);
            let authenticated = self.ctx.settings.auth.is_none();
            self.adopt(stream, peer, authenticated);
        }
    }

    /// Serve `stream` from now on: a connection just accepted, or one another
    /// worker passed on. Returns its index.
    fn adopt(
        &mut self,
        mut stream: Stream,
        peer: Option<std::net::SocketAddr>,
        authenticated: bool,
    ) -> Option<usize> {
        let counters = self.ctx.store.counters();
        counters.incr(Counter::curr_connections);
        let idx = self.free_tokens.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(FIRST_CONN + idx),
            // Writability only while replies wait for room (see `service`):
            // otherwise every ACK would wake the loop for nothing.
            Interest::READABLE,
        ) {
            warn!(self.log, "register failed"; "error" => %e);
            counters.decr(Counter::curr_connections);
            self.free_tokens.push(idx);
            return None;
        }
        let mut conn = Conn::new(stream, authenticated);
        // Past the table's size a connection is served but not listed.
        if let Some(e) = self.free_entries.pop() {
            let fd = conn.stream.as_raw_fd() as u32;
            self.ctx.store.conn_table(self.ctx.slot)[e].publish(
                fd,
                conn.stream.addrs(peer),
                ConnState::NewCmd,
                crate::store::unix_now(),
            );
            conn.entry = Some(e);
        }
        self.conns[idx] = Some(conn);
        Some(idx)
    }

    /// Read, execute and write for one connection until it would block.
    fn service(&mut self, idx: usize) {
        let Some(conn) = self.conns[idx].as_mut() else {
            return;
        };
        let served = serve_conn(&self.ctx, conn, &self.log);
        let want_write = !conn.writable && conn.output_pending() > 0;
        if want_write != conn.write_interest {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self.poll.registry().reregister(
                &mut conn.stream,
                Token(FIRST_CONN + idx),
                interest,
            ) {
                Ok(()) => conn.write_interest = want_write,
                Err(e) => {
                    warn!(self.log, "reregister failed"; "error" => %e);
                    self.close(idx);
                    return;
                }
            }
        }
        if let Some(e) = conn.entry {
            self.ctx.store.conn_table(self.ctx.slot)[e].update(conn.state(), conn.last_active.unix);
        }
        match served {
            Served::Wait => conn.input.park(),
            Served::Yield => {
                self.ctx.store.counters().incr(Counter::conn_yields);
                self.yielded.push(idx);
            }
            Served::Close => self.close(idx),
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(mut c) = self.conns[idx].take() {
            let _ = c.flush();
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.ctx.store.counters().decr(Counter::curr_connections);
            self.free_tokens.push(idx);
            if let Some(e) = c.entry {
                self.ctx.store.conn_table(self.ctx.slot)[e].clear();
                self.free_entries.push(e);
            }
        }
    }

    /// While draining: a connection with nothing received and nothing to
    /// send is done.
    fn close_idle(&mut self) {
        for i in 0..self.conns.len() {
            // Bytes the client sent before the drain may sit in the socket
            // with their readiness event not yet handled: read and answer
            // them before judging the connection idle.
            if let Some(c) = self.conns[i].as_mut() {
                c.readable = true;
                self.service(i);
            }
            let idle = matches!(&self.conns[i], Some(c) if c.input.is_empty() && c.output_pending() == 0 && c.dump.is_none());
            if idle {
                self.close(i);
            }
        }
    }

    /// Seed SETs whose data stopped coming, and idle connections: as in
    /// memcached, a connection is idle between requests or inside a request
    /// line, not while a data block is arriving or replies are being written.
    fn sweep_timers(&mut self) {
        let idle = self.ctx.settings.idle_timeout;
        // One clock read for the whole table (10,000 connections, 10 times a
        // second).
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            if let Some(since) = c.seed_wait_since
                && now.saturating_duration_since(since) >= SEED_DATA_TIMEOUT
            {
                c.output.extend_from_slice(reply::SEED_TOO_SMALL);
                c.closing = true;
                c.seed_wait_since = None;
                self.service(i);
                continue;
            }
            // Inside a request: a whole text line or binary header is in.
            let inside = match c.binary {
                Some(true) => c.input.len() >= protocol::binary::HEADER_LEN,
                _ => c.input.pending().contains(&b'\n'),
            };
            let between_requests =
                c.output_pending() == 0 && c.swallow == 0 && !inside && c.dump.is_none();
            // Quiet for a tick: its reply buffer goes to the spares too.
            let quiet = now.saturating_duration_since(c.last_active.at);
            if between_requests && quiet >= TICK {
                c.park();
            }
            if !idle.is_zero() && quiet >= idle && between_requests {
                self.ctx.store.counters().incr(Counter::idle_kicks);
                self.close(i);
            }
        }
    }
}

/// What a connection needs next.
enum Served {
    /// Wait for the socket to be readable or writable.
    Wait,
    /// It has work left but used its turn (`-R`): come back after the others.
    Yield,
    Close,
}

/// The heart of a connection: write, execute, read, until it would block.
fn serve_conn(ctx: &WorkerContext, conn: &mut Conn, log: &Logger) -> Served {
    let counters = ctx.store.counters();
    let mut budget = ctx.settings.reqs_per_event.max(1) as usize;
    ctx.current_conn.set(conn.entry);
    loop {
        // 1. Write what is queued.
        if conn.output_pending() > 0 && conn.writable {
            match conn.flush() {
                Ok(n) => counters.add(Counter::bytes_written, n as u64),
                Err(_) => return Served::Close,
            }
        }
        if conn.closing {
            return if conn.output_pending() > 0 {
                Served::Wait
            } else {
                Served::Close
            };
        }
        if conn.output_pending() >= OUTPUT_HIGH {
            return Served::Wait; // for WRITABLE
        }
        if budget == 0 {
            return Served::Yield;
        }
        // 2. Execute the complete requests in the input buffer.
        conn.unpark();
        let before = conn.output_pending();
        if let Some(after) = run_requests(ctx, conn, log, &mut budget) {
            match after {
                After::Close => return Served::Close,
                After::CloseAfterWrite => conn.closing = true,
                After::Continue => {}
            }
        }
        // Replies to write, or the budget ran out with requests left (noreply
        // ones write nothing): go round, which writes and then yields.
        if conn.output_pending() > before || conn.closing || budget == 0 {
            continue;
        }
        // 3. Nothing runnable: read more, or finish.
        if conn.eof {
            if conn.authenticated && seed::is_seed_request(conn.input.pending()) {
                // The seed's client stopped before sending all its data.
                conn.output.extend_from_slice(reply::SEED_TOO_SMALL);
                conn.closing = true;
                continue;
            }
            return Served::Close;
        }
        if !conn.readable {
            return Served::Wait;
        }
        if conn.input.len() >= input_limit(&ctx.limits) {
            // A request that cannot complete within any legal size (a
            // never-ending multiget line): memcached would process it
            // piecemeal; we refuse to buffer it.
            debug!(log, "request too large to buffer; closing");
            return Served::Close;
        }
        match conn.read_some() {
            Ok((ReadOutcome::Data, n)) => counters.add(Counter::bytes_read, n as u64),
            Ok((ReadOutcome::WouldBlock, _)) => return Served::Wait,
            Ok((ReadOutcome::Eof, _)) => {}
            Err(_) => return Served::Close,
        }
    }
}

/// Parse and execute until the buffer holds no complete request, the output
/// is full, the budget is spent, or the connection must close. Returns the
/// last non-Continue.
fn run_requests(
    ctx: &WorkerContext,
    conn: &mut Conn,
    log: &Logger,
    budget: &mut usize,
) -> Option<After> {
    if conn.binary.is_none() {
        let first = *conn.input.pending().first()?;
        conn.binary = Some(match ctx.settings.protocol {
            Dialect::Auto => first == protocol::binary::REQUEST_MAGIC,
            Dialect::Ascii => false,
            Dialect::Binary => true,
        });
    }
    if conn.binary == Some(true) {
        return binary::run_requests(ctx, conn, log, budget);
    }
    while conn.output_pending() < OUTPUT_HIGH && conn.swallow == 0 && *budget > 0 {
        // A metadump under way goes on before the next request is read.
        if let Some(dump) = &mut conn.dump {
            *budget -= 1;
            if meta::metadump_slice(ctx, dump, &mut conn.output) {
                conn.dump = None;
            }
            continue;
        }
        let pending = conn.input.pending();
        if pending.is_empty() {
            conn.seed_wait_since = None;
            return None;
        }
        if !conn.authenticated {
            match authenticate(ctx, conn) {
                Some(After::Continue) => {
                    *budget -= 1;
                    continue;
                }
                after => return after,
            }
        }
        let pending = conn.input.pending();
        let parsed = protocol::parse(pending, &ctx.limits);
        if !matches!(parsed, Parsed::Incomplete) {
            *budget -= 1;
        }
        match parsed {
            Parsed::Incomplete => {
                if seed::is_seed_request(pending) {
                    conn.seed_wait_since.get_or_insert_with(Instant::now);
                }
                return None;
            }
            Parsed::Command { command, consumed } => {
                conn.seed_wait_since = None;
                conn.last_active = ctx.now.get();
                if ctx.settings.verbosity >= 2 {
                    debug!(log, "request"; "command" => ?command);
                }
                if let protocol::Command::MetaDump { classes } = command
                    && exec::crawl_refusal(&ctx.store, classes).is_none()
                {
                    conn.dump = Some(meta::Dump::new(classes));
                    conn.handled = true;
                    conn.input.consume(consumed);
                    continue;
                }
                let after = exec::execute(ctx, &command, &mut conn.output);
                conn.handled = true;
                conn.input.consume(consumed);
                if after != After::Continue {
                    return Some(after);
                }
            }
            Parsed::Error {
                reply,
                consumed,
                swallow,
                close,
                unlink,
                refused,
            } => {
                conn.seed_wait_since = None;
                conn.last_active = ctx.now.get();
                conn.handled = true;
                if let Some(key) = unlink {
                    ctx.store.remove(key);
                }
                // memcached counts these refusals as it reads the line and
                // the data block.
                if let Some(r) = refused {
                    let counters = ctx.store.counters();
                    match r.why {
                        Refusal::TooLarge => counters.incr(Counter::store_too_large),
                        Refusal::BadDataChunk => {
                            counters.incr(Counter::cmd_set);
                            ctx.store.count_refused_set(r.key.len(), r.nbytes);
                        }
                    }
                    if ctx.detail_enabled() {
                        ctx.record_prefix(r.key, PrefixOp::Set);
                    }
                }
                conn.output.extend_from_slice(reply);
                conn.input.consume(consumed);
                let now = swallow.min(conn.input.len());
                conn.input.consume(now);
                conn.swallow = swallow - now;
                if close {
                    return Some(After::CloseAfterWrite);
                }
            }
        }
    }
    None
}

/// `-Y`: the one request an unauthenticated connection may make, read as
/// memcached reads it (`protocol::auth`). `None` when more bytes are needed,
/// `Continue` when the request was answered.
fn authenticate(ctx: &WorkerContext, conn: &mut Conn) -> Option<After> {
    let counters = ctx.store.counters();
    let (reply, consumed) = match auth::parse(conn.input.pending()) {
        AuthRequest::Incomplete => return None,
        AuthRequest::Close => return Some(After::CloseAfterWrite),
        AuthRequest::Refused { reply, consumed } => (reply, consumed),
        AuthRequest::Credentials {
            user,
            password,
            consumed,
        } => {
            counters.incr(Counter::auth_cmds);
            let known = ctx
                .settings
                .auth
                .as_ref()
                .is_some_and(|c| c.check(user, password));
            if known {
                conn.authenticated = true;
                (reply::STORED, consumed)
            } else {
                counters.incr(Counter::auth_errors);
                (reply::CLIENT_ERROR_AUTH_FAILURE, consumed)
            }
        }
    };
    conn.output.extend_from_slice(reply);
    conn.input.consume(consumed);
    conn.last_active = ctx.now.get();
    conn.handled = true;
    Some(After::Continue)
}

/// Most bytes a connection may hold unparsed: the largest value with its
/// command line, twice over, and at least the longest binary header, extras
/// and key memcached reads before judging them.
fn input_limit(limits: &Limits) -> usize {
    let largest = limits.item_size_max.max(limits.seed_element_size) + protocol::LINE_MAX;
    (2 * largest).max(protocol::binary::LONGEST_HEADER)
}

/// The seed dialect's element size: set by the seed's positional arguments,
/// otherwise the largest value an item can hold.
fn seed_element_size(s: &Settings) -> usize {
    match s.seed_element_size {
        Some(n) => n as usize,
        None => (s.item_size_max as usize).saturating_sub(48 + 121 + 2),
    }
}
