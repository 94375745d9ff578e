//! Logging through slog with a synchronous drain: no background thread, so
//! forking stays safe at any time.

use slog::{Drain, Level, Logger, o};

/// A logger to stderr. Verbosity 0 logs start-up, worker lifecycle and
/// errors; `-v` adds warnings about clients, `-vv` per-connection and
/// per-request lines.
pub fn logger(verbosity: u8) -> Logger {
    let level = match verbosity {
        0 | 1 => Level::Info,
        2 => Level::Debug,
        _ => Level::Trace,
    };
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator)
        .build()
        .filter_level(level)
        .fuse();
    Logger::root(drain, o!())
}
