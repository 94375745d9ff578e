//! Settings: defaults < TOML file (`--config FILE`) < command-line flags,
//! validated into one [`Settings`] value before anything starts.
//!
//! - `cli.rs` reads memcached's flags, `file.rs` the TOML file; each only
//!   gathers the values it is given, noting where each came from;
//! - `validate.rs` holds every rule, so that a value is checked the same way
//!   (and named in the error) whether a flag or a key gave it.
//!
//! The reference for operators is docs/configuration.md.

mod auth;
pub mod cli;
pub mod file;
mod validate;

pub use auth::Credentials;
pub use validate::SEED_ITEM_OVERHEAD;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the daemon needs to start, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `-p`: TCP port (11211). `-1` is not kept here: the ephemeral port is
    /// resolved to 0 for bind(). `0` (TCP off) is accepted with `-s` only.
    /// With `-s` there is no TCP at all, as in memcached: the port is only
    /// what `stats settings` shows as `tcpport`.
    pub port: u16,
    /// `-s`: listen on this unix socket instead of TCP.
    pub unix_socket: Option<PathBuf>,
    /// `-a`: the unix socket's permissions (0700).
    pub unix_socket_mode: u32,
    /// `-l`: listen addresses (127.0.0.1 by default, unlike memcached's any-address:
    /// a cache should not face the network unless told to).
    pub listen: Vec<IpAddr>,
    /// `-m`: item memory in bytes (64 MiB).
    pub memory_limit: u64,
    /// `-M`: answer `SERVER_ERROR out of memory` instead of evicting.
    pub evictions: bool,
    /// `-c`: max simultaneous connections per instance (1024).
    pub max_connections: u32,
    /// `-t`: worker processes (4).
    pub workers: u32,
    /// `-o max_workers`: worker slots made at start, the most workers a
    /// SIGHUP reload can raise `workers` to (None: as many as `workers`).
    pub max_workers: Option<u32>,
    /// `-I`: max item size in bytes (1 MiB).
    pub item_size_max: u32,
    /// `-f`: slab growth factor (1.08; memcached's default is 1.25).
    pub growth_factor: f64,
    /// `-n`: room for key and value in the smallest chunk (16; memcached 48).
    pub chunk_size: u32,
    /// `-o slab_automove`: 0 = pages move on `slabs reassign` only; 1 = free
    /// pages go back to the pool and on to classes that need them; 2 = a page
    /// moves at every eviction (1, as memcached). A client's `slabs automove`
    /// changes it in the segment.
    pub slab_automove: u32,
    /// `-o slab_automove_ratio`: a class whose oldest item is younger than this
    /// fraction of the others' is short of pages (0.8).
    pub slab_automove_ratio: f64,
    /// `-o slab_automove_window`: seconds of history the automover judges by (30).
    pub slab_automove_window: u32,
    /// `-o track_sizes`: the item size histogram counts from the start, as
    /// after `stats sizes_enable` (not with `-C`, as memcached).
    pub track_sizes: bool,
    /// `-o no_lru_crawler` clears it: no background sweep of expired items,
    /// `lru_crawler crawl` refused (as `lru_crawler disable`).
    pub lru_crawler: bool,
    /// `-o lru_crawler_sleep`: µs a requested crawl pauses per 1,000 items
    /// (100; at most 1,000,000).
    pub lru_crawler_sleep: u32,
    /// `-o lru_crawler_tocrawl`: items of each class a requested crawl checks
    /// per worker (0 = all).
    pub lru_crawler_tocrawl: u32,
    /// `-v` count (0..=3).
    pub verbosity: u8,
    /// `-C` clears it.
    pub cas_enabled: bool,
    /// `-F` clears it.
    pub flush_enabled: bool,
    /// `-X` clears it: no `lru_crawler metadump`, no `stats cachedump`.
    pub dump_enabled: bool,
    /// `-A` sets it.
    pub shutdown_enabled: bool,
    /// `-b`: listen backlog (1024).
    pub backlog: u32,
    /// `-B`: `auto` (the first byte of a connection decides), `ascii` or `binary`;
    /// `-Y` makes it `ascii`.
    pub protocol: crate::protocol::Dialect,
    /// `-R`: max requests handled per connection per event (20).
    pub reqs_per_event: u32,
    /// `-P`: pid file of the supervisor.
    pub pid_file: Option<PathBuf>,
    /// `-d`: run in the background, detached from the terminal.
    pub daemonize: bool,
    /// `-u`: user to run as when started as root.
    pub user: Option<String>,
    /// `-Y`: the credentials file of memcached's ASCII authentication.
    pub auth_file: Option<PathBuf>,
    /// `auth_file`'s entries, read and checked at start-up. When set, every
    /// connection must authenticate before anything else.
    pub auth: Option<Credentials>,
    /// `-e` / `memory_file`: the segment lives in this file and outlives the
    /// process (warm restart); None = a private segment removed at exit.
    pub memory_file: Option<PathBuf>,
    /// How long SIGTERM waits for workers to finish in-flight requests (5 s).
    pub drain_timeout: Duration,
    /// `-o idle_timeout=<s>`: close connections idle that long (0 = never).
    pub idle_timeout: Duration,
    /// The seed dialect's element size (largest `SET` value); by default the
    /// largest value that fits in `item_size_max`.
    pub seed_element_size: Option<u32>,
    /// The seed's `num_elements`: when given, memory is sized so that this many
    /// items of `seed_element_size` fit.
    pub seed_num_elements: Option<u64>,
    /// `-D`: `stats detail` counts keys by their prefix up to this byte (`:`).
    pub stats_prefix_delimiter: u8,
    /// `stats detail` is on from the start (`-D` turns it on, as in memcached).
    pub detail_enabled: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 11211,
            unix_socket: None,
            unix_socket_mode: 0o700,
            listen: vec![IpAddr::from([127, 0, 0, 1])],
            memory_limit: 64 << 20,
            evictions: true,
            max_connections: 1024,
            workers: 4,
            max_workers: None,
            item_size_max: 1 << 20,
            growth_factor: crate::store::segment::GROWTH_FACTOR,
            chunk_size: crate::store::segment::CHUNK_SIZE,
            slab_automove: 1,
            slab_automove_ratio: 0.8,
            slab_automove_window: 30,
            track_sizes: false,
            lru_crawler: true,
            lru_crawler_sleep: 100,
            lru_crawler_tocrawl: 0,
            verbosity: 0,
            cas_enabled: true,
            flush_enabled: true,
            dump_enabled: true,
            shutdown_enabled: false,
            backlog: 1024,
            protocol: crate::protocol::Dialect::Auto,
            reqs_per_event: 20,
            pid_file: None,
            daemonize: false,
            user: None,
            auth_file: None,
            auth: None,
            memory_file: None,
            drain_timeout: Duration::from_secs(5),
            idle_timeout: Duration::ZERO,
            seed_element_size: None,
            seed_num_elements: None,
            stats_prefix_delimiter: b':',
            detail_enabled: false,
        }
    }
}

impl Settings {
    /// Worker slots the segment and the sockets are made for.
    pub fn worker_slots(&self) -> u32 {
        self.max_workers.unwrap_or(self.workers).max(self.workers)
    }
}

/// What `main` should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the daemon with these settings.
    Run(Box<Settings>),
    /// Print this text on stdout and exit 0 (`-h`, `-V`).
    Print(String),
}

/// A bad flag, value, or config file: one line, naming the flag or the TOML
/// key and its line. `main` prints it and exits 64 (EX_USAGE) / 78 (EX_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The exit status for this error: 78 (EX_CONFIG) when the config file is
    /// at fault (its errors start with `config error:`), 64 (EX_USAGE) for a
    /// bad command line.
    pub fn exit_code(&self) -> i32 {
        if self.0.starts_with("config error:") {
            78
        } else {
            64
        }
    }
}

/// Build the settings from the command line (without argv[0]): defaults,
/// then the `--config` file if given, then the flags, whatever their order;
/// then check the result as a whole.
pub fn load(args: impl IntoIterator<Item = OsString>) -> Result<Action, ConfigError> {
    let (config, flags) = match cli::parse(args)? {
        cli::CommandLine::Print(text) => return Ok(Action::Print(text)),
        cli::CommandLine::Run { config, flags } => (config, flags),
    };
    let raw = match config {
        Some(path) => file::load(&path)?.overridden_by(*flags),
        None => *flags,
    };
    Ok(Action::Run(Box::new(raw.validate()?)))
}
