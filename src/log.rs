//! Logging through slog with a synchronous drain: no background thread, so
//! forking stays safe at any time.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use slog::{Drain, Level, Logger, o};

/// The verbosity in force in this process: a SIGHUP reload or a client's
/// `verbosity` command changes it while the logger runs.
static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// A logger to stderr. Verbosity 0 logs start-up, worker lifecycle and
/// errors; `-v` adds warnings about clients, `-vv` per-connection and
/// per-request lines.
pub fn logger(verbosity: u8) -> Logger {
    set_verbosity(verbosity);
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator)
        .build()
        .filter(|record| record.level().is_at_least(level()))
        .fuse();
    Logger::root(drain, o!())
}

/// Change the level of every logger of this process.
pub fn set_verbosity(verbosity: u8) {
    VERBOSITY.store(verbosity, Relaxed);
}

fn level() -> Level {
    match VERBOSITY.load(Relaxed) {
        0 | 1 => Level::Info,
        2 => Level::Debug,
        _ => Level::Trace,
    }
}
