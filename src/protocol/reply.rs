//! Every reply the daemon sends, rendered into the connection's output buffer.
//!
//! Fixed replies are constants (`out.extend_from_slice(reply::STORED)`); replies
//! that carry data or numbers have a function. Nothing here allocates except the
//! `Vec` growing. The texts are memcached 1.6.18's, byte for byte.

use std::fmt::Display;
use std::io::Write;

// Storage commands.
pub const STORED: &[u8] = b"STORED\r\n";
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
pub const EXISTS: &[u8] = b"EXISTS\r\n";
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
// delete, touch, retrieval, flush_all/verbosity, stats reset.
pub const DELETED: &[u8] = b"DELETED\r\n";
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
pub const END: &[u8] = b"END\r\n";
pub const OK: &[u8] = b"OK\r\n";
/// `cache_memlimit` below 8 MB.
pub const MEMLIMIT_TOO_SMALL: &[u8] = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n";
/// `cache_memlimit` over 10^9: megabytes were meant.
pub const MEMLIMIT_NOT_BYTES: &[u8] =
    b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n";
/// `cache_memlimit` that cannot be applied (ours: past `-m`).
pub const MEMLIMIT_ADJUST_FAILED: &[u8] =
    b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n";
pub const RESET: &[u8] = b"RESET\r\n";
// `slabs reassign` (OK aside).
/// A page move is already waiting.
pub const REASSIGN_BUSY: &[u8] = b"BUSY currently processing reassign request\r\n";
pub const REASSIGN_BADCLASS: &[u8] = b"BADCLASS invalid src or dst class id\r\n";
pub const METADUMP_BADCLASS: &[u8] = b"BADCLASS invalid class id\r\n";
/// `lru_crawler metadump` with `-X`.
pub const METADUMP_NOT_ALLOWED: &[u8] = b"ERROR metadump not allowed\r\n";
// `lru_crawler` (OK aside).
pub const CRAWLER_DISABLED: &[u8] = b"CLIENT_ERROR lru crawler disabled\r\n";
pub const CRAWL_BUSY: &[u8] = b"BUSY currently processing crawler request\r\n";
pub const CRAWL_NOT_STARTED: &[u8] = b"NOTSTARTED no items to crawl\r\n";
pub const CRAWL_UNKNOWN_ERROR: &[u8] = b"ERROR an unknown error happened\r\n";
/// `lru_crawler enable` while it runs: memcached cannot start its thread twice.
pub const CRAWLER_START_FAILED: &[u8] = b"ERROR failed to start lru crawler thread\r\n";
pub const CRAWLER_SLEEP_TOO_LONG: &[u8] = b"CLIENT_ERROR sleep must be one second or less\r\n";
pub const REASSIGN_NOSPARE: &[u8] = b"NOSPARE source class has no spare pages\r\n";
pub const REASSIGN_SAME: &[u8] = b"SAME src and dst class are identical\r\n";

/// Unknown command, wrong token count, unknown `stats` group.
pub const ERROR: &[u8] = b"ERROR\r\n";
/// `shutdown` without `-A` (whatever its arguments).
pub const ERROR_SHUTDOWN_NOT_ENABLED: &[u8] = b"ERROR: shutdown not enabled\r\n";
/// Sent to a connection accepted beyond `-c`, which is then closed.
pub const ERROR_TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// Bad key length or a bad number on a command line.
pub const CLIENT_ERROR_BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
/// A storage command's data block not followed by `\r\n`.
pub const CLIENT_ERROR_BAD_DATA_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
/// `delete` with an extra token that is neither `0` nor `noreply` (two spaces
/// after the period, as memcached).
pub const CLIENT_ERROR_DELETE_USAGE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
/// touch, gat/gats and flush_all with a bad exptime/delay.
pub const CLIENT_ERROR_INVALID_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
/// incr/decr with a bad delta.
pub const CLIENT_ERROR_INVALID_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
/// incr/decr on a value that is not a decimal number.
pub const CLIENT_ERROR_NON_NUMERIC: &[u8] =
    b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
/// `shutdown <anything but graceful>` (with `-A`).
pub const CLIENT_ERROR_INVALID_SHUTDOWN_MODE: &[u8] = b"CLIENT_ERROR invalid shutdown mode\r\n";
/// `flush_all` with `-F`.
pub const CLIENT_ERROR_FLUSH_NOT_ALLOWED: &[u8] = b"CLIENT_ERROR flush_all not allowed\r\n";
/// `stats detail` without `on`, `off` or `dump`.
pub const CLIENT_ERROR_STATS_DETAIL_USAGE: &[u8] =
    b"CLIENT_ERROR usage: stats detail on|off|dump\r\n";
/// `stats cachedump` with too few arguments.
pub const CLIENT_ERROR_BAD_COMMAND_LINE: &[u8] = b"CLIENT_ERROR bad command line\r\n";
/// `stats cachedump` with a class id of 64 or more.
pub const CLIENT_ERROR_ILLEGAL_SLAB_ID: &[u8] = b"CLIENT_ERROR Illegal slab id\r\n";
/// `stats cachedump` with `-X`.
pub const CLIENT_ERROR_CACHEDUMP_NOT_ALLOWED: &[u8] =
    b"CLIENT_ERROR stats cachedump not allowed\r\n";

/// `-Y`: any request before the connection has authenticated, except the
/// authenticating `set`.
pub const CLIENT_ERROR_UNAUTHENTICATED: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
/// `-Y`: the `set` carried a user and password that are not in the file.
pub const CLIENT_ERROR_AUTH_FAILURE: &[u8] = b"CLIENT_ERROR authentication failure\r\n";
/// `-Y`: the `set`'s data is not `<user> <password>`.
pub const CLIENT_ERROR_BAD_AUTH_TOKEN: &[u8] = b"CLIENT_ERROR bad authentication token format\r\n";
/// `-Y`: the `set`'s data is not followed by `\r\n`.
pub const CLIENT_ERROR_BAD_TERMINATION: &[u8] = b"CLIENT_ERROR bad command line termination\r\n";

/// A value larger than `-I` allows (see `text::item_too_large`).
pub const SERVER_ERROR_TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
/// A storage command found no room and evictions are off (`-M`).
pub const SERVER_ERROR_OUT_OF_MEMORY_STORING: &[u8] =
    b"SERVER_ERROR out of memory storing object\r\n";
/// incr/decr found no room for its longer value (`-M`): memcached's text differs
/// from the storage commands' one.
pub const SERVER_ERROR_OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory\r\n";

// The seed dialect's replies; the connection closes after each one.
pub const SEED_NOT_FOUND: &[u8] = b"ERR NOT_FOUND\r\n";
pub const SEED_INVALID_COMMAND: &[u8] = b"ERR INVALID_COMMAND\r\n";
pub const SEED_NAME_TOO_LONG: &[u8] = b"ERR NAME_TOO_LONG\r\n";
pub const SEED_BAD_NAME: &[u8] = b"ERR BAD_NAME\r\n";
pub const SEED_INVALID_SIZE: &[u8] = b"ERR INVALID_SIZE\r\n";
/// The client stopped sending before `<size>` data bytes arrived.
pub const SEED_TOO_SMALL: &[u8] = b"ERR TOO_SMALL\r\n";
/// The table is full.
pub const SEED_NO_SPACE: &[u8] = b"ERR NO_SPACE\r\n";
pub const SEED_OTHER: &[u8] = b"ERR OTHER\r\n";

/// One hit of a retrieval command; `cas` is given for gets/gats.
///
/// ```text
/// VALUE <key> <flags> <bytes>[ <cas unique>]\r\n
/// <data block>\r\n
/// ```
pub fn value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    out.reserve(key.len() + data.len() + 48);
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    decimal(out, u64::from(flags));
    out.push(b' ');
    decimal(out, data.len() as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        decimal(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The result of incr/decr: the new value alone on a line.
pub fn number(out: &mut Vec<u8>, n: u64) {
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `VERSION 1.6.18`: memcached's version, so that clients' feature detection
/// treats us as the memcached we copy.
pub fn version(out: &mut Vec<u8>) {
    out.extend_from_slice(b"VERSION 1.6.18\r\n");
}

/// One line of a `stats` reply: `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: impl Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "STAT {name} {value}\r\n");
}

/// The seed's success reply to `SET`.
pub fn seed_ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"OK\r\n");
}

/// The seed's reply to a `GET` hit: `OK <size>\r\n<data>`, no CRLF after the data.
pub fn seed_value(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"OK ");
    decimal(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
}

/// The seed's reply to `DELETE`: `OK 1` if the name existed, else `OK 0`.
pub fn seed_deleted(out: &mut Vec<u8>, existed: bool) {
    out.extend_from_slice(if existed { b"OK 1\r\n" } else { b"OK 0\r\n" });
}

/// "00" to "99", two bytes each.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// `n` in decimal, without going through `fmt` (hot path: every VALUE line
/// has two or three numbers): two digits per division, from a table.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn renders_each_reply() {
        // live: memcached 1.6.18 (VALUE lines of get/gets, incr result, version).
        let cases: &[(Vec<u8>, &[u8])] = &[
            (
                render(|o| value(o, b"k", 0, b"abc", None)),
                b"VALUE k 0 3\r\nabc\r\n",
            ),
            (
                render(|o| value(o, b"key", 4294967295, b"", Some(137))),
                b"VALUE key 4294967295 0 137\r\n\r\n",
            ),
            (
                render(|o| value(o, b"k", 1, b"a\r\nb", Some(u64::MAX))),
                b"VALUE k 1 4 18446744073709551615\r\na\r\nb\r\n",
            ),
            (render(|o| number(o, 0)), b"0\r\n"),
            (render(|o| number(o, 11)), b"11\r\n"),
            (render(|o| number(o, u64::MAX)), b"18446744073709551615\r\n"),
            (render(version), b"VERSION 1.6.18\r\n"),
            (render(|o| stat(o, "pid", 42)), b"STAT pid 42\r\n"),
            (
                render(|o| stat(o, "version", "1.6.18")),
                b"STAT version 1.6.18\r\n",
            ),
            (
                render(|o| stat(o, "rusage_user", format_args!("{}.{:06}", 0, 1234))),
                b"STAT rusage_user 0.001234\r\n",
            ),
            (render(seed_ok), b"OK\r\n"),
            (render(|o| seed_value(o, b"hello")), b"OK 5\r\nhello"),
            (render(|o| seed_value(o, b"")), b"OK 0\r\n"),
            (render(|o| seed_deleted(o, true)), b"OK 1\r\n"),
            (render(|o| seed_deleted(o, false)), b"OK 0\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(
                got.escape_ascii().to_string(),
                want.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn decimal_is_to_string() {
        let mut n = 1u64;
        let mut samples = vec![0, 9, 10, 99, 100, 101, 999, 1000, u64::MAX, u64::MAX - 1];
        while n < u64::MAX / 3 {
            samples.extend([n - 1, n, n + 1]);
            n *= 3;
        }
        for n in samples {
            assert_eq!(render(|o| decimal(o, n)), n.to_string().into_bytes(), "{n}");
        }
    }

    #[test]
    fn appends_to_what_is_already_there() {
        let mut out = b"STORED\r\n".to_vec();
        value(&mut out, b"a", 2, b"x", None);
        out.extend_from_slice(END);
        assert_eq!(out, b"STORED\r\nVALUE a 2 1\r\nx\r\nEND\r\n");
    }
}
