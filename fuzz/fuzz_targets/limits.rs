//! The parser limits the parse targets run under (included with `#[path]`).

use shmcached::protocol::Limits;

/// memcached's defaults, with `-A` so that `shutdown` parses.
pub const DEFAULT: Limits = Limits {
    item_size_max: 1 << 20,
    cas_enabled: true,
    seed_element_size: 1000,
    shutdown_enabled: true,
    dump_enabled: true,
};

/// Small enough that short inputs reach "too large" and its swallow; `-X`.
pub const SMALL: Limits = Limits {
    item_size_max: 128,
    cas_enabled: false,
    seed_element_size: 8,
    shutdown_enabled: false,
    dump_enabled: false,
};
