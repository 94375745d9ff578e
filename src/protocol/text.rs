//! memcached's classic text protocol, parsed the way memcached 1.6.18 parses it
//! (`proto_text.c`, `util.c`), quirks included.
//!
//! One request is one line: it ends at `\n`, with one `\r` before it dropped; a NUL
//! byte ends it early (memcached tokenizes a C string). Tokens are split on runs of
//! the space character only; tabs are part of a token. Storage commands are
//! followed by a data block of exactly `<bytes>` bytes and `\r\n`.
//!
//! Numbers are read as C's `strtol`/`strtoull` read them and then accepted as
//! memcached's `safe_strto*` accept them: leading whitespace (tab, CR, ...) and a
//! sign are allowed, and the digits may be followed by whitespace and anything
//! after it (`1\tjunk` is 1). 32-bit fields are narrowed from 64 bits without a
//! range check (`4294967297` is 1).
//!
//! Error replies that come from one command honour its `noreply` (the reply is
//! empty), `ERROR` for an unknown command or a wrong token count never does.
//! Nothing is allocated: every slice in a [`Command`] borrows from the buffer.

use super::{Command, KEY_MAX_LENGTH, LINE_MAX, Limits, Parsed, StoreMode, keys, reply};

/// memcached reads into a 16 KiB buffer and judges a line whose `\n` is not within
/// it as if the `\n` had not arrived (closed unless it is a multiget).
const READ_BUFFER_SIZE: usize = 16384;
/// memcached tokenizes at most 23 tokens of a line (`MAX_TOKENS` 24 minus its
/// terminal token); its token counts and its "last token" never go past that.
const MAX_TOKENS: usize = 23;
/// The tokens a command looks at by position: `cas` with `noreply` has 7.
const HEAD_TOKENS: usize = 7;
/// A long line still counts as a multiget after at most this many leading spaces.
const MULTIGET_MAX_INDENT: usize = 100;
/// `sizeof(item)` in a 64-bit memcached: the header every item carries.
const ITEM_HEADER_SIZE: usize = 48;
/// The client flags take this much room in an item unless they are 0.
const ITEM_FLAGS_SIZE: usize = 4;
/// The cas-unique takes this much room in an item unless `-C`.
const ITEM_CAS_SIZE: usize = 8;

/// Parse the text-protocol request at the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let line_end = match buf.iter().position(|&b| b == b'\n') {
        Some(at) if at < READ_BUFFER_SIZE || is_multiget(buf) => at,
        None if buf.len() <= LINE_MAX || is_multiget(buf) => return Parsed::Incomplete,
        // No newline in a line this long: junk, and memcached hangs up without a word.
        _ => return close(buf.len()),
    };
    let consumed = line_end + 1;
    let mut line = &buf[..line_end];
    // memcached drops the `\r` only when something precedes it (`\r\n` alone stays `\r`).
    if line.len() > 1 && line.ends_with(b"\r") {
        line = &line[..line.len() - 1];
    }
    if let Some(nul) = line.iter().position(|&b| b == 0) {
        line = &line[..nul];
    }
    let request = Request {
        buf,
        line,
        tokens: Tokens::new(line),
        consumed,
    };
    request.parse(limits)
}

/// Whether memcached lets a line grow past [`LINE_MAX`]: `get `/`gets ` after at
/// most 100 spaces.
fn is_multiget(buf: &[u8]) -> bool {
    let indent = buf.iter().take_while(|&&b| b == b' ').count();
    let rest = &buf[indent..];
    indent <= MULTIGET_MAX_INDENT && (rest.starts_with(b"get ") || rest.starts_with(b"gets "))
}

/// Whether memcached refuses an item as too large for `-I`
/// (`SERVER_ERROR object too large for cache`).
///
/// memcached refuses the item when its slab footprint exceeds `-I`:
///
/// ```text
/// 48 (item header) + key_len + 1 + (4 if flags != 0) + value_len + 2 (CRLF) + (8 unless -C)
///     > item_size_max
/// ```
///
/// so at the default `-I 1m`, a 1-byte key with flags 0 takes values up to
/// 1048516 bytes (1048524 with `-C`), and 4 bytes less with non-zero flags.
pub fn item_too_large(limits: &Limits, key_len: usize, flags: u32, value_len: usize) -> bool {
    let flags_size = if flags == 0 { 0 } else { ITEM_FLAGS_SIZE };
    let cas_size = if limits.cas_enabled { ITEM_CAS_SIZE } else { 0 };
    let overhead = ITEM_HEADER_SIZE + key_len + 1 + flags_size + 2 + cas_size;
    overhead.saturating_add(value_len) > limits.item_size_max
}

/// The tokens of one line, counted and kept the way memcached's tokenizer does.
struct Tokens<'a> {
    /// The first [`HEAD_TOKENS`] tokens; empty slices past the end.
    head: [&'a [u8]; HEAD_TOKENS],
    /// How many tokens, at most [`MAX_TOKENS`].
    count: usize,
    /// memcached's `tokens[ntokens - 2]`: the last token, or the 23rd on longer
    /// lines. `noreply` and `HTTP/` are looked for there.
    last: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Self {
        let mut tokens = Tokens {
            head: [&[]; HEAD_TOKENS],
            count: 0,
            last: &[],
        };
        for token in line
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
            .take(MAX_TOKENS)
        {
            if let Some(slot) = tokens.head.get_mut(tokens.count) {
                *slot = token;
            }
            tokens.count += 1;
            tokens.last = token;
        }
        tokens
    }

    /// Token `i` (0 is the command name); empty past the end.
    fn get(&self, i: usize) -> &'a [u8] {
        self.head[i]
    }

    /// memcached's `set_noreply_maybe`: the last token is exactly `noreply`.
    fn noreply(&self) -> bool {
        self.last == b"noreply"
    }
}

/// One complete command line and where it sits in the buffer.
struct Request<'a> {
    buf: &'a [u8],
    /// The line without its `\r\n`, cut at a NUL.
    line: &'a [u8],
    tokens: Tokens<'a>,
    /// Bytes up to and including the `\n`.
    consumed: usize,
}

impl<'a> Request<'a> {
    /// memcached's `process_command_ascii`: pick the command by name.
    fn parse(&self, limits: &Limits) -> Parsed<'a> {
        let name = self.tokens.get(0);
        // No command is shorter than two bytes.
        if self.tokens.count == 0 || name.len() < 2 {
            return self.error(reply::ERROR);
        }
        match name {
            b"get" | b"bget" => self.get(false, false),
            b"gets" => self.get(true, false),
            b"gat" => self.get(false, true),
            b"gats" => self.get(true, true),
            b"set" => self.store(StoreMode::Set, limits),
            b"add" => self.store(StoreMode::Add, limits),
            b"replace" => self.store(StoreMode::Replace, limits),
            b"append" => self.store(StoreMode::Append, limits),
            b"prepend" => self.store(StoreMode::Prepend, limits),
            b"cas" => self.store(StoreMode::Cas, limits),
            b"delete" => self.delete(),
            b"incr" => self.arith(true),
            b"decr" => self.arith(false),
            b"touch" => self.touch(),
            b"flush_all" => self.flush_all(),
            b"version" => self.done(Command::Version, self.consumed),
            b"verbosity" => self.verbosity(),
            b"stats" => self.stats(),
            b"shutdown" => self.shutdown(limits),
            b"quit" => self.done(Command::Quit, self.consumed),
            _ => self.unknown(name),
        }
    }

    /// Retrieval; `bget` is memcached's undocumented alias of `get`.
    ///
    /// ```text
    /// get <key>+\r\n
    /// gets <key>+\r\n
    /// gat <exptime> <key>+\r\n
    /// gats <exptime> <key>+\r\n
    /// ```
    ///
    /// `gat <exptime>` with no key is valid (memcached answers `END`), so `keys`
    /// may be empty for gat/gats. A key over 250 bytes anywhere in the list fails
    /// the whole command.
    fn get(&self, with_cas: bool, touch: bool) -> Parsed<'a> {
        if self.tokens.count < 2 {
            return self.error(reply::ERROR);
        }
        let mut list = self.after(self.tokens.get(0));
        let touch = if touch {
            let Some(exptime) = strtol32(self.tokens.get(1)) else {
                return self.error(reply::CLIENT_ERROR_INVALID_EXPTIME);
            };
            list = self.after(self.tokens.get(1));
            Some(i64::from(exptime))
        } else {
            None
        };
        if keys(list).any(|key| key.len() > KEY_MAX_LENGTH) {
            return self.error(reply::CLIENT_ERROR_BAD_FORMAT);
        }
        self.done(
            Command::Get {
                keys: trim_spaces(list),
                with_cas,
                touch,
            },
            self.consumed,
        )
    }

    /// Storage commands and their data block.
    ///
    /// ```text
    /// set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]\r\n
    /// cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]\r\n
    /// <data block of <bytes> bytes>\r\n
    /// ```
    ///
    /// A bad line is answered without touching the data block, which is then read
    /// as commands. A too-large item's block is swallowed, and a `set` drops the
    /// key's old item. A block not followed by `\r\n` costs `<bytes>` + 2 bytes and
    /// keeps the old item.
    fn store(&self, mode: StoreMode, limits: &Limits) -> Parsed<'a> {
        let cas = mode == StoreMode::Cas;
        let wanted = if cas { 6..=7 } else { 5..=6 };
        if !wanted.contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let noreply = self.tokens.noreply();
        let key = self.tokens.get(1);
        if key.len() > KEY_MAX_LENGTH {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        }
        let (Some(flags), Some(exptime), Some(bytes)) = (
            strtoul32(self.tokens.get(2)),
            strtol32(self.tokens.get(3)),
            strtol32(self.tokens.get(4)),
        ) else {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        };
        let cas_unique = if cas {
            match strtoull(self.tokens.get(5)) {
                Some(cas_unique) => cas_unique,
                None => {
                    return self.client_error(
                        reply::CLIENT_ERROR_BAD_FORMAT,
                        noreply,
                        self.consumed,
                    );
                }
            }
        } else {
            0
        };
        // memcached adds the CRLF's 2 bytes to an int, so 2147483646 is refused too.
        let Ok(bytes) = usize::try_from(bytes) else {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        };
        if bytes > (i32::MAX - 2) as usize {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        }
        if item_too_large(limits, key.len(), flags, bytes) {
            return Parsed::Error {
                reply: if noreply {
                    b""
                } else {
                    reply::SERVER_ERROR_TOO_LARGE
                },
                consumed: self.consumed,
                swallow: bytes + 2,
                close: false,
                // Only `set` must not leave the stale value behind [proto_text.c].
                unlink: (mode == StoreMode::Set).then_some(key),
            };
        }
        let end = self.consumed + bytes + 2;
        let Some(block) = self.buf.get(self.consumed..end) else {
            return Parsed::Incomplete;
        };
        let (data, terminator) = block.split_at(bytes);
        if terminator != b"\r\n" {
            return self.client_error(reply::CLIENT_ERROR_BAD_DATA_CHUNK, noreply, end);
        }
        self.done(
            Command::Store {
                mode,
                key,
                flags,
                exptime: i64::from(exptime),
                data,
                cas_unique,
                noreply,
            },
            end,
        )
    }

    /// ```text
    /// delete <key> [0] [noreply]\r\n
    /// ```
    ///
    /// `0` is the only hold time left from old memcached; anything else in its
    /// place gets the usage error, checked before the key's length.
    fn delete(&self) -> Parsed<'a> {
        if !(2..=4).contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let mut noreply = false;
        if self.tokens.count > 2 {
            let hold_is_zero = self.tokens.get(2) == b"0";
            noreply = self.tokens.noreply();
            let valid = (self.tokens.count == 3 && (hold_is_zero || noreply))
                || (self.tokens.count == 4 && hold_is_zero && noreply);
            if !valid {
                return self.client_error(reply::CLIENT_ERROR_DELETE_USAGE, noreply, self.consumed);
            }
        }
        let key = self.tokens.get(1);
        if key.len() > KEY_MAX_LENGTH {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        }
        self.done(Command::Delete { key, noreply }, self.consumed)
    }

    /// ```text
    /// incr|decr <key> <delta> [noreply]\r\n
    /// ```
    ///
    /// The delta is an unsigned 64-bit decimal; a token in the `noreply` place
    /// that is not `noreply` is ignored.
    fn arith(&self, incr: bool) -> Parsed<'a> {
        if !(3..=4).contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let noreply = self.tokens.noreply();
        let key = self.tokens.get(1);
        if key.len() > KEY_MAX_LENGTH {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        }
        let Some(delta) = strtoull(self.tokens.get(2)) else {
            return self.client_error(reply::CLIENT_ERROR_INVALID_DELTA, noreply, self.consumed);
        };
        self.done(
            Command::Arith {
                key,
                delta,
                incr,
                noreply,
            },
            self.consumed,
        )
    }

    /// ```text
    /// touch <key> <exptime> [noreply]\r\n
    /// ```
    fn touch(&self) -> Parsed<'a> {
        if !(3..=4).contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let noreply = self.tokens.noreply();
        let key = self.tokens.get(1);
        if key.len() > KEY_MAX_LENGTH {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        }
        let Some(exptime) = strtol32(self.tokens.get(2)) else {
            return self.client_error(reply::CLIENT_ERROR_INVALID_EXPTIME, noreply, self.consumed);
        };
        self.done(
            Command::Touch {
                key,
                exptime: i64::from(exptime),
                noreply,
            },
            self.consumed,
        )
    }

    /// ```text
    /// flush_all [delay] [noreply]\r\n
    /// ```
    ///
    /// The delay is read whenever there is a token besides `noreply` (so
    /// `flush_all noreply x` reads `noreply` and fails). A delay of 0 or below
    /// means now: it is given as 0. `-F` is the worker's to check.
    fn flush_all(&self) -> Parsed<'a> {
        if !(1..=3).contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let noreply = self.tokens.noreply();
        let mut delay = 0;
        if self.tokens.count != if noreply { 2 } else { 1 } {
            let Some(parsed) = strtol32(self.tokens.get(1)) else {
                return self.client_error(
                    reply::CLIENT_ERROR_INVALID_EXPTIME,
                    noreply,
                    self.consumed,
                );
            };
            delay = i64::from(parsed.max(0));
        }
        self.done(Command::FlushAll { delay, noreply }, self.consumed)
    }

    /// ```text
    /// verbosity <level> [noreply]\r\n
    /// ```
    fn verbosity(&self) -> Parsed<'a> {
        if !(2..=3).contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let noreply = self.tokens.noreply();
        let Some(level) = strtoul32(self.tokens.get(1)) else {
            return self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed);
        };
        self.done(Command::Verbosity { level, noreply }, self.consumed)
    }

    /// ```text
    /// stats [<group> [<arg>...]]\r\n
    /// ```
    ///
    /// The arguments go to the worker as they are, without surrounding spaces.
    fn stats(&self) -> Parsed<'a> {
        let args = trim_spaces(self.after(self.tokens.get(0)));
        self.done(Command::Stats { args }, self.consumed)
    }

    /// ```text
    /// shutdown [graceful]\r\n
    /// ```
    ///
    /// Without `-A` every form is refused, before its argument is looked at.
    fn shutdown(&self, limits: &Limits) -> Parsed<'a> {
        if !limits.shutdown_enabled {
            return self.error(reply::ERROR_SHUTDOWN_NOT_ENABLED);
        }
        match (self.tokens.count, self.tokens.get(1)) {
            (1, _) => self.done(Command::Shutdown { graceful: false }, self.consumed),
            (2, b"graceful") => self.done(Command::Shutdown { graceful: true }, self.consumed),
            _ => self.error(reply::CLIENT_ERROR_INVALID_SHUTDOWN_MODE),
        }
    }

    /// A command we do not serve. memcached answers `ERROR`, except that a web
    /// client (`... HTTP/1.1`) is hung up on, and only for names that fall
    /// through all of its dispatch: not those starting with a letter it
    /// dispatches on, nor a 2-byte meta command (`mg`, `ms`, ...), nor one of the
    /// other commands it knows.
    fn unknown(&self, name: &[u8]) -> Parsed<'a> {
        let dispatched = matches!(name[0], b'g' | b's' | b'a' | b'c' | b'i' | b'd' | b't')
            || (name[0] == b'm' && name.len() == 2)
            || matches!(
                name,
                b"lru_crawler" | b"watch" | b"lru" | b"extstore" | b"refresh_certs"
            );
        if !dispatched && self.tokens.last.starts_with(b"HTTP/") {
            close(self.consumed)
        } else {
            self.error(reply::ERROR)
        }
    }

    /// The part of the line after `token` (a token of this line).
    fn after(&self, token: &[u8]) -> &'a [u8] {
        let start = token.as_ptr() as usize - self.line.as_ptr() as usize;
        &self.line[start + token.len()..]
    }

    fn done(&self, command: Command<'a>, consumed: usize) -> Parsed<'a> {
        Parsed::Command { command, consumed }
    }

    /// An error sent whatever the command's `noreply` says.
    fn error(&self, reply: &'static [u8]) -> Parsed<'a> {
        Parsed::Error {
            reply,
            consumed: self.consumed,
            swallow: 0,
            close: false,
            unlink: None,
        }
    }

    /// A command's own error: silenced by its `noreply`.
    fn client_error(&self, reply: &'static [u8], noreply: bool, consumed: usize) -> Parsed<'a> {
        Parsed::Error {
            reply: if noreply { b"" } else { reply },
            consumed,
            swallow: 0,
            close: false,
            unlink: None,
        }
    }
}

/// Hang up without a reply.
fn close<'a>(consumed: usize) -> Parsed<'a> {
    Parsed::Error {
        reply: b"",
        consumed,
        swallow: 0,
        close: true,
        unlink: None,
    }
}

/// `s` without leading and trailing spaces (only spaces separate tokens).
fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    &s[start..end]
}

/// C's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What C's `strto*` functions read from the start of a token, as accepted by
/// memcached's `safe_strto*`.
struct CNumber {
    negative: bool,
    /// `None` when the digits overflow 64 bits (`ERANGE`).
    magnitude: Option<u64>,
}

/// Optional whitespace, optional sign, at least one decimal digit, then the end
/// of the token or a whitespace byte (anything after that is ignored).
fn c_number(token: &[u8]) -> Option<CNumber> {
    let mut at = token.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = match token.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let digits = token[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    let magnitude = token[at..at + digits].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    match token.get(at + digits) {
        Some(&b) if !is_c_space(b) => None,
        _ => Some(CNumber {
            negative,
            magnitude,
        }),
    }
}

/// memcached's `safe_strtol` into an `int32_t`: a 64-bit signed number, then
/// narrowed without a range check.
fn strtol32(token: &[u8]) -> Option<i32> {
    let number = c_number(token)?;
    let magnitude = number.magnitude?;
    let value = if number.negative {
        if magnitude > 1 << 63 {
            return None;
        }
        (magnitude as i64).wrapping_neg()
    } else {
        i64::try_from(magnitude).ok()?
    };
    Some(value as i32)
}

/// memcached's `safe_strtoull`: `strtoull` negates a `-` number modulo 2^64;
/// memcached refuses it only when the result looks negative as a signed number
/// (so `-0` is 0 and `-18446744073709551615` is 1).
fn strtoull(token: &[u8]) -> Option<u64> {
    let number = c_number(token)?;
    let magnitude = number.magnitude?;
    let value = if number.negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    if number.negative && (value as i64) < 0 {
        return None;
    }
    Some(value)
}

/// memcached's `safe_strtoul` into a `uint32_t`: as [`strtoull`], then truncated
/// (`4294967296` is 0).
fn strtoul32(token: &[u8]) -> Option<u32> {
    strtoull(token).map(|value| value as u32)
}
