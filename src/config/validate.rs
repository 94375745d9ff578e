//! Every rule a setting obeys, in one place. The flags (`cli.rs`) and the TOML
//! file (`file.rs`) only gather [`RawSettings`], each value tagged with where it
//! came from; [`RawSettings::validate`] checks them and builds the [`Settings`],
//! so a bad value gets the same rule and the same words whatever its source.

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Credentials, Settings};
use crate::protocol::Dialect;

/// Bytes added to each seed element when sizing memory and the item size:
/// memcached's item header (48 bytes, 56 with CAS), the seed's longest name
/// (120 bytes), the data's CRLF, and room for the allocator's rounding.
pub const SEED_ITEM_OVERHEAD: u64 = 320;

/// memcached's `-I` bounds (`ITEM_SIZE_MAX_LOWER_LIMIT`, `..._UPPER_LIMIT`).
pub const ITEM_SIZE_MIN: u64 = 1024;
pub const ITEM_SIZE_MAX: u64 = 1 << 30;
/// More workers than this is a typo, not a machine.
pub const WORKERS_MAX: i64 = 1024;
/// `-m` ceiling (1 PiB): keeps `MB << 20` far from overflow.
pub const MEMORY_MB_MAX: i64 = 1 << 30;
/// `slab_automove_window` ceiling: an hour of history is more than the
/// automover can use, and each second costs worker 0 12 bytes per class
/// (8.6 MB at 200 classes and an hour).
pub const AUTOMOVE_WINDOW_MAX: i64 = 3600;
/// Timeouts in seconds stay below this so that `Instant + timeout` cannot overflow.
pub const TIMEOUT_SECS_MAX: i64 = u32::MAX as i64;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Where a value came from, to name it in an error.
#[derive(Debug)]
pub(crate) enum Origin {
    /// A flag or a positional argument, as written: `-p 70000`,
    /// `-o idle_timeout=x`, `argument "0" (num_elements)`.
    Arg(String),
    /// A TOML key: its file, line, name, and value as written.
    Key {
        file: PathBuf,
        line: usize,
        key: &'static str,
        text: String,
    },
}

impl Origin {
    /// The one-line error for a bad value from here.
    pub(crate) fn error(&self, msg: impl Display) -> ConfigError {
        ConfigError(match self {
            Origin::Arg(arg) => format!("{arg}: {msg}"),
            Origin::Key {
                file,
                line,
                key,
                text,
            } => format!(
                "config error: {} line {line}: {key} = {text}: {msg}",
                file.display()
            ),
        })
    }
}

/// A value as given, not yet checked.
#[derive(Debug)]
pub(crate) struct Given<T> {
    pub value: T,
    pub origin: Origin,
}

/// One layer of settings (the file's, or the command line's): only what it
/// sets. Integers stay `i64` so that range errors can quote the value given.
#[derive(Debug, Default)]
pub(crate) struct RawSettings {
    pub port: Option<Given<i64>>,
    pub unix_socket: Option<Given<PathBuf>>,
    /// `-a` syntax: octal digits (`0770`, `770`).
    pub unix_socket_mode: Option<Given<String>>,
    /// `-U`: not a setting (no UDP), but refused here like any bad value.
    pub udp_port: Option<Given<i64>>,
    /// Each entry one `-l` or one TOML array element: a comma-separated list.
    pub listen: Option<Vec<Given<String>>>,
    pub memory_limit_mb: Option<Given<i64>>,
    pub evictions: Option<Given<bool>>,
    pub max_connections: Option<Given<i64>>,
    pub workers: Option<Given<i64>>,
    pub max_workers: Option<Given<i64>>,
    /// `-I` syntax: bytes, or a number with a k, m or g suffix.
    pub item_size_max: Option<Given<String>>,
    pub growth_factor: Option<Given<f64>>,
    pub chunk_size: Option<Given<i64>>,
    pub slab_automove: Option<Given<i64>>,
    pub slab_automove_ratio: Option<Given<f64>>,
    pub slab_automove_window: Option<Given<i64>>,
    pub track_sizes: Option<Given<bool>>,
    pub lru_crawler: Option<Given<bool>>,
    pub lru_crawler_sleep: Option<Given<i64>>,
    pub lru_crawler_tocrawl: Option<Given<i64>>,
    pub verbosity: Option<Given<i64>>,
    pub cas_enabled: Option<Given<bool>>,
    pub flush_enabled: Option<Given<bool>>,
    pub dump_enabled: Option<Given<bool>>,
    pub shutdown_enabled: Option<Given<bool>>,
    pub backlog: Option<Given<i64>>,
    pub protocol: Option<Given<String>>,
    pub reqs_per_event: Option<Given<i64>>,
    pub pid_file: Option<Given<PathBuf>>,
    pub daemonize: Option<Given<bool>>,
    pub user: Option<Given<String>>,
    pub auth_file: Option<Given<PathBuf>>,
    /// `-e`: the file that holds the segment (warm restart).
    pub memory_file: Option<Given<PathBuf>>,
    pub drain_timeout_secs: Option<Given<i64>>,
    pub idle_timeout_secs: Option<Given<i64>>,
    pub seed_num_elements: Option<Given<i64>>,
    pub seed_element_size: Option<Given<i64>>,
    /// `-D`: memcached uses its first character.
    pub stats_prefix_delimiter: Option<Given<String>>,
}

impl RawSettings {
    /// This layer with every value that `top` sets replaced by `top`'s.
    pub(crate) fn overridden_by(self, top: RawSettings) -> RawSettings {
        RawSettings {
            port: top.port.or(self.port),
            unix_socket: top.unix_socket.or(self.unix_socket),
            unix_socket_mode: top.unix_socket_mode.or(self.unix_socket_mode),
            udp_port: top.udp_port.or(self.udp_port),
            listen: top.listen.or(self.listen),
            memory_limit_mb: top.memory_limit_mb.or(self.memory_limit_mb),
            evictions: top.evictions.or(self.evictions),
            max_connections: top.max_connections.or(self.max_connections),
            workers: top.workers.or(self.workers),
            max_workers: top.max_workers.or(self.max_workers),
            item_size_max: top.item_size_max.or(self.item_size_max),
            growth_factor: top.growth_factor.or(self.growth_factor),
            chunk_size: top.chunk_size.or(self.chunk_size),
            slab_automove: top.slab_automove.or(self.slab_automove),
            slab_automove_ratio: top.slab_automove_ratio.or(self.slab_automove_ratio),
            slab_automove_window: top.slab_automove_window.or(self.slab_automove_window),
            track_sizes: top.track_sizes.or(self.track_sizes),
            lru_crawler: top.lru_crawler.or(self.lru_crawler),
            lru_crawler_sleep: top.lru_crawler_sleep.or(self.lru_crawler_sleep),
            lru_crawler_tocrawl: top.lru_crawler_tocrawl.or(self.lru_crawler_tocrawl),
            verbosity: top.verbosity.or(self.verbosity),
            cas_enabled: top.cas_enabled.or(self.cas_enabled),
            flush_enabled: top.flush_enabled.or(self.flush_enabled),
            dump_enabled: top.dump_enabled.or(self.dump_enabled),
            shutdown_enabled: top.shutdown_enabled.or(self.shutdown_enabled),
            backlog: top.backlog.or(self.backlog),
            protocol: top.protocol.or(self.protocol),
            reqs_per_event: top.reqs_per_event.or(self.reqs_per_event),
            pid_file: top.pid_file.or(self.pid_file),
            daemonize: top.daemonize.or(self.daemonize),
            user: top.user.or(self.user),
            auth_file: top.auth_file.or(self.auth_file),
            memory_file: top.memory_file.or(self.memory_file),
            drain_timeout_secs: top.drain_timeout_secs.or(self.drain_timeout_secs),
            idle_timeout_secs: top.idle_timeout_secs.or(self.idle_timeout_secs),
            seed_num_elements: top.seed_num_elements.or(self.seed_num_elements),
            seed_element_size: top.seed_element_size.or(self.seed_element_size),
            stats_prefix_delimiter: top.stats_prefix_delimiter.or(self.stats_prefix_delimiter),
        }
    }

    /// Check every value given and build the settings; defaults fill the rest.
    pub(crate) fn validate(self) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        if let Some(g) = &self.unix_socket {
            s.unix_socket = Some(unix_socket(g)?);
        }
        if let Some(g) = &self.unix_socket_mode {
            s.unix_socket_mode = unix_socket_mode(g)?;
        }
        if let Some(g) = &self.port {
            s.port = port(g, s.unix_socket.is_some())?;
        }
        if let Some(g) = &self.udp_port
            && g.value != 0
        {
            return Err(g
                .origin
                .error("UDP is not supported (only -U 0, UDP off, is accepted)"));
        }
        if let Some(list) = &self.listen {
            s.listen = listen(list)?;
        }
        if let Some(g) = &self.memory_limit_mb {
            let mb: u64 = positive(g, MEMORY_MB_MAX, "Memory limit must be greater than 0")?;
            s.memory_limit = mb * MIB;
        }
        if let Some(g) = &self.evictions {
            s.evictions = g.value;
        }
        if let Some(g) = &self.max_connections {
            s.max_connections = positive(
                g,
                u32::MAX.into(),
                "Maximum connections must be greater than 0",
            )?;
        }
        if let Some(g) = &self.workers {
            s.workers = positive(g, WORKERS_MAX, "Number of threads must be greater than 0")?;
        }
        if let Some(g) = &self.max_workers {
            let max: u32 = positive(g, WORKERS_MAX, "must be greater than 0")?;
            if max < s.workers {
                return Err(g.origin.error(format_args!(
                    "fewer than the {} workers asked for",
                    s.workers
                )));
            }
            s.max_workers = Some(max);
        }
        let item_size = match &self.item_size_max {
            Some(g) => parse_size(&g.value).ok_or_else(|| {
                g.origin.error(
                    "not a size (expected bytes, or a number with a k, m or g suffix: 512k, 1m)",
                )
            })?,
            None => s.item_size_max.into(),
        };
        if let Some(g) = &self.growth_factor {
            // memcached: "Factor must be greater than 1". A factor so close to
            // 1 that classes barely grow would only hit the class limit.
            if !(g.value > 1.0 && g.value <= 16.0) {
                return Err(g
                    .origin
                    .error("Factor must be greater than 1 (and at most 16)"));
            }
            s.growth_factor = g.value;
        }
        if let Some(g) = &self.chunk_size {
            s.chunk_size = positive(g, 1 << 20, "Chunk size must be greater than 0")?;
        }
        if let Some(g) = &self.slab_automove {
            if !(0..=2).contains(&g.value) {
                return Err(g.origin.error("slab_automove must be between 0 and 2"));
            }
            s.slab_automove = g.value as u32;
        }
        if let Some(g) = &self.slab_automove_ratio {
            // memcached's words; it takes 1 too (its check is `> 1`).
            if !(g.value > 0.0 && g.value <= 1.0) {
                return Err(g.origin.error("slab_automove_ratio must be > 0 and < 1"));
            }
            s.slab_automove_ratio = g.value;
        }
        if let Some(g) = &self.track_sizes {
            s.track_sizes = g.value;
        }
        if let Some(g) = &self.lru_crawler {
            s.lru_crawler = g.value;
        }
        if let Some(g) = &self.lru_crawler_sleep {
            if !(0..=1_000_000).contains(&g.value) {
                return Err(g
                    .origin
                    .error("LRU crawler sleep must be between 0 and 1 second (0..1000000 µs)"));
            }
            s.lru_crawler_sleep = g.value as u32;
        }
        if let Some(g) = &self.lru_crawler_tocrawl {
            s.lru_crawler_tocrawl = in_range(g, 0, u32::MAX.into())?;
        }
        if let Some(g) = &self.slab_automove_window {
            if g.value <= 2 {
                return Err(g.origin.error("slab_automove_window must be > 2"));
            }
            s.slab_automove_window = in_range(g, 3, AUTOMOVE_WINDOW_MAX)?;
        }
        if let Some(g) = &self.verbosity {
            s.verbosity = in_range(g, 0, 3)?;
        }
        if let Some(g) = &self.cas_enabled {
            s.cas_enabled = g.value;
        }
        if let Some(g) = &self.flush_enabled {
            s.flush_enabled = g.value;
        }
        if let Some(g) = &self.dump_enabled {
            s.dump_enabled = g.value;
        }
        if let Some(g) = &self.shutdown_enabled {
            s.shutdown_enabled = g.value;
        }
        if let Some(g) = &self.backlog {
            s.backlog = positive(g, i32::MAX.into(), "Listen backlog must be greater than 0")?;
        }
        if let Some(g) = &self.protocol {
            s.protocol = protocol(g)?;
        }
        if let Some(g) = &self.reqs_per_event {
            s.reqs_per_event = positive(
                g,
                u32::MAX.into(),
                "Number of requests per event must be greater than 0",
            )?;
        }
        if let Some(g) = &self.pid_file {
            if g.value.as_os_str().is_empty() {
                return Err(g.origin.error("must not be empty"));
            }
            s.pid_file = Some(g.value.clone());
        }
        if let Some(g) = &self.memory_file {
            if g.value.as_os_str().is_empty() {
                return Err(g.origin.error("must not be empty"));
            }
            s.memory_file = Some(g.value.clone());
        }
        if let Some(g) = &self.daemonize {
            s.daemonize = g.value;
        }
        if let Some(g) = &self.user {
            if g.value.is_empty() {
                return Err(g.origin.error("must not be empty"));
            }
            s.user = Some(g.value.clone());
        }
        if let Some(g) = &self.auth_file {
            s.auth = Some(Credentials::load(&g.value).map_err(|msg| g.origin.error(msg))?);
            s.auth_file = Some(g.value.clone());
            // memcached: -Y speaks text only; a -B other than ascii is an error.
            match &self.protocol {
                Some(p) if s.protocol != Dialect::Ascii => {
                    return Err(p.origin.error(
                        "You cannot allow the BINARY protocol while using ascii authentication \
                         tokens.",
                    ));
                }
                _ => s.protocol = Dialect::Ascii,
            }
        }
        if let Some(g) = &self.drain_timeout_secs {
            s.drain_timeout = Duration::from_secs(in_range(g, 0, TIMEOUT_SECS_MAX)?);
        }
        if let Some(g) = &self.idle_timeout_secs {
            s.idle_timeout = Duration::from_secs(in_range(g, 0, TIMEOUT_SECS_MAX)?);
        }
        if let Some(g) = &self.stats_prefix_delimiter {
            let Some(&first) = g.value.as_bytes().first() else {
                return Err(g.origin.error("must not be empty"));
            };
            s.stats_prefix_delimiter = first;
            s.detail_enabled = true;
        }

        let sized = self.seed_sizing(s.memory_limit, item_size)?;
        s.memory_limit = sized.memory_limit;
        s.seed_num_elements = sized.num_elements;
        s.seed_element_size = sized.element_size;
        s.item_size_max = self.check_item_size(sized.item_size_max, s.memory_limit)?;
        Ok(s)
    }

    /// The seed's sizing rule. With `num_elements` N and `element_size` E (each
    /// optional):
    /// - `item_size_max = max(item_size_max, E + 320 rounded up to KiB)`;
    /// - `memory_limit = max(memory_limit, N * (E + 320) rounded up to MiB)`,
    ///   where E + 320 is `item_size_max` when E is not given;
    /// - and `memory_limit >= 2 * item_size_max` (rounded up to MiB), so that
    ///   `-I`'s "at most half of `-m`" holds.
    ///
    /// It only ever raises the limits given or defaulted.
    fn seed_sizing(
        &self,
        memory_limit: u64,
        item_size_max: u64,
    ) -> Result<SeedSizing, ConfigError> {
        let element_size = self
            .seed_element_size
            .as_ref()
            .map(|g| {
                positive::<u32>(
                    g,
                    (ITEM_SIZE_MAX - SEED_ITEM_OVERHEAD) as i64,
                    "must be greater than 0",
                )
            })
            .transpose()?;
        let num_elements = self
            .seed_num_elements
            .as_ref()
            .map(|g| positive::<u64>(g, i64::MAX, "must be greater than 0"))
            .transpose()?;
        let mut sized = SeedSizing {
            memory_limit,
            item_size_max,
            num_elements,
            element_size,
        };
        // Blamed when the table cannot fit; absent when no seed size is given.
        let Some(origin) = (self.seed_num_elements.as_ref())
            .or(self.seed_element_size.as_ref())
            .map(|g| &g.origin)
        else {
            return Ok(sized);
        };
        if let Some(e) = element_size {
            let item = (u64::from(e) + SEED_ITEM_OVERHEAD).next_multiple_of(KIB);
            sized.item_size_max = sized.item_size_max.max(item);
        }
        let per_item =
            element_size.map_or(sized.item_size_max, |e| u64::from(e) + SEED_ITEM_OVERHEAD);
        let mut needed = sized.item_size_max.saturating_mul(2);
        if let Some(n) = num_elements {
            needed = needed.max(n.saturating_mul(per_item));
        }
        if needed > (MEMORY_MB_MAX as u64) * MIB {
            return Err(origin.error(format_args!(
                "the seed table would need more than {MEMORY_MB_MAX} MB of memory"
            )));
        }
        sized.memory_limit = sized.memory_limit.max(needed.next_multiple_of(MIB));
        Ok(sized)
    }

    /// memcached's `-I` checks, in its order and words (memcached.c main()).
    fn check_item_size(&self, item_size: u64, memory_limit: u64) -> Result<u32, ConfigError> {
        // Blame -I when it was given, else the memory limit that squeezed it.
        let (origin, context) = match (&self.item_size_max, &self.memory_limit_mb) {
            (Some(g), _) => (
                &g.origin,
                format!(" (memory limit is {} MB)", memory_limit / MIB),
            ),
            (None, Some(g)) => (
                &g.origin,
                format!(" (item size limit is {item_size} bytes)"),
            ),
            (None, None) => return Ok(item_size as u32),
        };
        if item_size < ITEM_SIZE_MIN {
            return Err(origin.error("Item max size cannot be less than 1024 bytes."));
        }
        if item_size > memory_limit / 2 {
            return Err(origin.error(format_args!(
                "Cannot set item size limit higher than 1/2 of memory max.{context}"
            )));
        }
        if item_size > ITEM_SIZE_MAX {
            return Err(origin.error("Cannot set item size limit higher than a gigabyte."));
        }
        Ok(item_size as u32)
    }
}

/// The outcome of [`RawSettings::seed_sizing`].
struct SeedSizing {
    memory_limit: u64,
    item_size_max: u64,
    num_elements: Option<u64>,
    element_size: Option<u32>,
}

/// `-p`: `-1` = ephemeral (0 for bind), `0` = TCP off: with a unix socket
/// only (memcached would start listening on nothing at all).
fn port(g: &Given<i64>, unix_socket: bool) -> Result<u16, ConfigError> {
    match g.value {
        -1 => Ok(0),
        0 if unix_socket => Ok(0),
        0 => Err(g.origin.error(
            "port 0 turns TCP off, which leaves nothing to listen on without a unix \
             socket (-s); use -1 for an ephemeral port",
        )),
        p => u16::try_from(p).map_err(|_| g.origin.error("out of range (-1..65535)")),
    }
}

/// The most bytes of a unix socket path: `sun_path` less its NUL.
pub const UNIX_PATH_MAX: usize = 107;

/// `-s`: a path that fits in `sun_path` (memcached cuts a longer one short
/// without a word, and then listens somewhere else).
fn unix_socket(g: &Given<PathBuf>) -> Result<PathBuf, ConfigError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = g.value.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(g.origin.error("must not be empty"));
    }
    if bytes.len() > UNIX_PATH_MAX {
        return Err(g.origin.error(format_args!(
            "too long for a unix socket ({} bytes, at most {UNIX_PATH_MAX})",
            bytes.len()
        )));
    }
    Ok(g.value.clone())
}

/// `-a`: permissions in octal, as `chmod` takes them (memcached reads any text
/// with strtol and takes `-a 888` as 0).
fn unix_socket_mode(g: &Given<String>) -> Result<u32, ConfigError> {
    let text = g.value.as_str();
    let octal =
        !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(text, 8) {
        Ok(mode) if octal && mode <= 0o777 => Ok(mode),
        _ => Err(g
            .origin
            .error("not a permission mode (octal, 0 to 0777, e.g. 0770)")),
    }
}

/// `-B`: memcached's words for an unknown value, on one line.
fn protocol(g: &Given<String>) -> Result<Dialect, ConfigError> {
    match g.value.as_str() {
        "auto" => Ok(Dialect::Auto),
        "ascii" => Ok(Dialect::Ascii),
        "binary" => Ok(Dialect::Binary),
        other => Err(g.origin.error(format_args!(
            "Invalid value for binding protocol: {other} -- should be one of auto, binary, or ascii"
        ))),
    }
}

/// `-l`: every entry a comma-separated list; empty items are skipped (as
/// memcached's strtok does), duplicates dropped, order kept.
fn listen(list: &[Given<String>]) -> Result<Vec<IpAddr>, ConfigError> {
    let mut addrs = Vec::new();
    for g in list {
        for part in g.value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            for ip in resolve(part).map_err(|msg| g.origin.error(msg))? {
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    match list.first() {
        _ if !addrs.is_empty() => Ok(addrs),
        Some(g) => Err(g.origin.error("no listen address")),
        None => Err(ConfigError("no listen address".into())),
    }
}

/// One `-l` address: an IPv4 or IPv6 literal (bare or in brackets),
/// `localhost` (127.0.0.1 only, so that a host without IPv6 still starts), or a
/// host name resolved now, all of its addresses.
fn resolve(addr: &str) -> Result<Vec<IpAddr>, String> {
    if addr.is_empty() {
        return Err("empty address".into());
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if let Some(inner) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| vec![IpAddr::V6(ip)])
            .map_err(|_| format!("Invalid IPV6 address: \"{addr}\""));
    }
    if addr.starts_with('[') || addr.matches(':').count() == 1 {
        return Err(format!(
            "\"{addr}\": per-address ports (<addr>:<port>) are not supported; use -p"
        ));
    }
    if addr.contains(':') {
        return Err(format!("Invalid IPV6 address: \"{addr}\""));
    }
    if addr.eq_ignore_ascii_case("localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
    let resolved = (addr, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve \"{addr}\": {e}"))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for sa in resolved {
        if !ips.contains(&sa.ip()) {
            ips.push(sa.ip());
        }
    }
    if ips.is_empty() {
        return Err(format!("cannot resolve \"{addr}\": no address"));
    }
    Ok(ips)
}

/// `-I`'s syntax: bytes, or digits with a `k`, `m` or `g` suffix (either case;
/// memcached knows k and m only). Too large saturates (then fails the 1g check).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], KIB),
        b'm' | b'M' => (&text[..text.len() - 1], MIB),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        digits
            .parse::<u64>()
            .unwrap_or(u64::MAX)
            .saturating_mul(unit),
    )
}

/// An integer in `1..=max`; `<= 0` gets memcached's "must be greater than 0" words.
fn positive<T: TryFrom<i64>>(
    g: &Given<i64>,
    max: i64,
    non_positive: &str,
) -> Result<T, ConfigError> {
    if g.value <= 0 {
        return Err(g.origin.error(non_positive));
    }
    in_range(g, 1, max)
}

fn in_range<T: TryFrom<i64>>(g: &Given<i64>, min: i64, max: i64) -> Result<T, ConfigError> {
    if (min..=max).contains(&g.value)
        && let Ok(v) = T::try_from(g.value)
    {
        return Ok(v);
    }
    Err(g.origin.error(format_args!("out of range ({min}..{max})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("1k", Some(1024)),
            ("2K", Some(2048)),
            ("1m", Some(MIB)),
            ("3M", Some(3 * MIB)),
            ("1g", Some(1 << 30)),
            ("1G", Some(1 << 30)),
            ("0", Some(0)),
            ("99999999999999999999999m", Some(u64::MAX)),
            ("", None),
            ("k", None),
            ("1x", None),
            ("1.5m", None),
            ("-1", None),
            ("+1k", None),
            (" 1k", None),
            ("1kb", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_size(text), *want, "{text:?}");
        }
    }

    #[test]
    fn addresses() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let table: &[(&str, Result<Vec<IpAddr>, &str>)] = &[
            ("127.0.0.1", Ok(vec![v4(127, 0, 0, 1)])),
            ("0.0.0.0", Ok(vec![v4(0, 0, 0, 0)])),
            ("::1", Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])),
            ("[::1]", Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])),
            ("::", Ok(vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)])),
            ("localhost", Ok(vec![v4(127, 0, 0, 1)])),
            ("LOCALHOST", Ok(vec![v4(127, 0, 0, 1)])),
            ("", Err("empty address")),
            ("[::zz]", Err("Invalid IPV6 address: \"[::zz]\"")),
            ("::zz", Err("Invalid IPV6 address: \"::zz\"")),
            (
                "127.0.0.1:11211",
                Err(
                    "\"127.0.0.1:11211\": per-address ports (<addr>:<port>) are not supported; use -p",
                ),
            ),
            (
                "[::1]:11211",
                Err("\"[::1]:11211\": per-address ports (<addr>:<port>) are not supported; use -p"),
            ),
        ];
        for (addr, want) in table {
            let got = resolve(addr);
            match want {
                Ok(ips) => assert_eq!(got.as_ref(), Ok(ips), "{addr:?}"),
                Err(msg) => assert_eq!(got.as_ref().map_err(String::as_str), Err(*msg), "{addr:?}"),
            }
        }
        let err = resolve("nosuch.invalid").unwrap_err();
        assert!(
            err.starts_with("cannot resolve \"nosuch.invalid\": "),
            "{err}"
        );
    }
}
