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

use super::{
    ClassIds, Command, CrawlRefusal, Crawler, KEY_MAX_LENGTH, LINE_MAX, Limits, Parsed, Ratio,
    Refusal, Refused, StoreMode, keys, reply,
};

/// memcached reads into a 16 KiB buffer and judges a line whose `\n` is not within
/// it as if the `\n` had not arrived (closed unless it is a multiget).
pub(super) const READ_BUFFER_SIZE: usize = 16384;
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
    let line_end = match memchr::memchr(b'\n', buf) {
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
    if let Some(nul) = memchr::memchr(0, line) {
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
        for token in super::keys(line).take(MAX_TOKENS) {
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
        // Meta commands are all two bytes long and start with `m`.
        if name[0] == b'm' && name.len() == 2 {
            return super::meta::parse(self.buf, self.line, self.consumed, limits);
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
            b"cache_memlimit" => self.cache_memlimit(),
            b"slabs" => self.slabs(),
            b"lru_crawler" => self.lru_crawler(limits),
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
        // The tokens already hold every key of a short line.
        let too_long = if self.tokens.count < HEAD_TOKENS {
            let first = if touch.is_some() { 2 } else { 1 };
            self.tokens.head[first..self.tokens.count]
                .iter()
                .any(|key| key.len() > KEY_MAX_LENGTH)
        } else {
            keys(list).any(|key| key.len() > KEY_MAX_LENGTH)
        };
        if too_long {
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
                refused: Some(Refused {
                    key,
                    nbytes: bytes,
                    why: Refusal::TooLarge,
                }),
            };
        }
        let end = self.consumed + bytes + 2;
        let Some(block) = self.buf.get(self.consumed..end) else {
            return Parsed::Incomplete;
        };
        let (data, terminator) = block.split_at(bytes);
        if terminator != b"\r\n" {
            return Parsed::Error {
                reply: if noreply {
                    b""
                } else {
                    reply::CLIENT_ERROR_BAD_DATA_CHUNK
                },
                consumed: end,
                swallow: 0,
                close: false,
                unlink: None,
                refused: Some(Refused {
                    key,
                    nbytes: bytes,
                    why: Refusal::BadDataChunk,
                }),
            };
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
    /// cache_memlimit <megabytes> [noreply]\r\n
    /// ```
    ///
    /// memcached's reply to a bad number is `ERROR`, silenced by noreply.
    fn cache_memlimit(&self) -> Parsed<'a> {
        if !(2..=3).contains(&self.tokens.count) {
            return self.error(reply::ERROR);
        }
        let noreply = self.tokens.noreply();
        let Some(megabytes) = strtoul32(self.tokens.get(1)) else {
            return self.client_error(reply::ERROR, noreply, self.consumed);
        };
        self.done(Command::CacheMemlimit { megabytes, noreply }, self.consumed)
    }

    /// ```text
    /// slabs reassign <src> <dst>\r\n
    /// slabs automove <0|1|2> [noreply]\r\n
    /// slabs automove ratio <ratio> [noreply]\r\n
    /// ```
    ///
    /// `reassign` takes exactly two numbers, so no `noreply`. `automove` looks at
    /// one argument and ignores the rest; each of its replies, `ERROR` too,
    /// honours `noreply`. Any other form is `ERROR`.
    fn slabs(&self) -> Parsed<'a> {
        match (self.tokens.count, self.tokens.get(1)) {
            (4, b"reassign") => {
                match (strtol32(self.tokens.get(2)), strtol32(self.tokens.get(3))) {
                    (Some(src), Some(dst)) => {
                        self.done(Command::SlabsReassign { src, dst }, self.consumed)
                    }
                    _ => self.error(reply::CLIENT_ERROR_BAD_FORMAT),
                }
            }
            (3.., b"automove") => self.slabs_automove(),
            _ => self.error(reply::ERROR),
        }
    }

    /// ```text
    /// lru_crawler metadump <all|hash|<class id>[,<class id>...]>\r\n
    /// lru_crawler crawl <all|<class id>[,<class id>...]>\r\n
    /// lru_crawler sleep <µs>\r\n
    /// lru_crawler tocrawl <items>\r\n
    /// lru_crawler enable|disable\r\n
    /// ```
    ///
    /// As memcached's process_lru_crawler_command: exactly these token counts
    /// (no `noreply`), anything else `ERROR`. Class ids are ours, as `stats
    /// items` gives them (`safe_strtoul` each, empty ones between commas
    /// skipped); one that is not a number from 1 to 255 is `BADCLASS invalid
    /// class id`, answered as the `-X` refusal only when the crawler runs (the
    /// worker checks that first, and refuses ids past the classes there are).
    fn lru_crawler(&self, limits: &Limits) -> Parsed<'a> {
        let sub = self.tokens.get(1);
        let refused = |why| self.done(Command::LruCrawler(Crawler::Refused(why)), self.consumed);
        match (self.tokens.count, sub) {
            (3, b"metadump") => {
                if !limits.dump_enabled {
                    return refused(CrawlRefusal::DumpNotAllowed);
                }
                let arg = self.tokens.get(2);
                if arg == b"all" || arg == b"hash" {
                    return self.done(Command::MetaDump { classes: None }, self.consumed);
                }
                match class_ids(arg) {
                    Some(classes) => self.done(
                        Command::MetaDump {
                            classes: Some(classes),
                        },
                        self.consumed,
                    ),
                    None => refused(CrawlRefusal::BadClass),
                }
            }
            (3, b"crawl") => match self.tokens.get(2) {
                b"all" => self.done(
                    Command::LruCrawler(Crawler::Crawl { classes: None }),
                    self.consumed,
                ),
                // memcached's hash order is for dumps only.
                b"hash" => refused(CrawlRefusal::Unknown),
                arg => match class_ids(arg) {
                    Some(classes) => self.done(
                        Command::LruCrawler(Crawler::Crawl {
                            classes: Some(classes),
                        }),
                        self.consumed,
                    ),
                    None => refused(CrawlRefusal::BadClass),
                },
            },
            (3, b"sleep") => match strtoul32(self.tokens.get(2)) {
                Some(us @ 0..=1_000_000) => {
                    self.done(Command::LruCrawler(Crawler::Sleep { us }), self.consumed)
                }
                Some(_) => self.error(reply::CRAWLER_SLEEP_TOO_LONG),
                None => self.error(reply::CLIENT_ERROR_BAD_FORMAT),
            },
            (3, b"tocrawl") => match strtoul32(self.tokens.get(2)) {
                Some(items) => self.done(
                    Command::LruCrawler(Crawler::ToCrawl { items }),
                    self.consumed,
                ),
                None => self.error(reply::CLIENT_ERROR_BAD_FORMAT),
            },
            (2, b"enable") => self.done(Command::LruCrawler(Crawler::Enable), self.consumed),
            (2, b"disable") => self.done(Command::LruCrawler(Crawler::Disable), self.consumed),
            _ => self.error(reply::ERROR),
        }
    }

    fn slabs_automove(&self) -> Parsed<'a> {
        let noreply = self.tokens.noreply();
        let arg = self.tokens.get(2);
        if arg == b"ratio" {
            let ratio = (self.tokens.count >= 4)
                .then(|| strtod(self.tokens.get(3)))
                .flatten();
            return match ratio {
                Some(r) => self.done(
                    Command::SlabsAutomoveRatio {
                        ratio: Ratio(r),
                        noreply,
                    },
                    self.consumed,
                ),
                None => self.client_error(reply::ERROR, noreply, self.consumed),
            };
        }
        match strtoul32(arg) {
            Some(level @ 0..=2) => {
                self.done(Command::SlabsAutomove { level, noreply }, self.consumed)
            }
            Some(_) => self.client_error(reply::ERROR, noreply, self.consumed),
            None => self.client_error(reply::CLIENT_ERROR_BAD_FORMAT, noreply, self.consumed),
        }
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
            refused: None,
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
            refused: None,
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
        refused: None,
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
pub(super) fn strtol32(token: &[u8]) -> Option<i32> {
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
pub(super) fn strtoull(token: &[u8]) -> Option<u64> {
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
/// memcached's crawler class list: ids between commas (empty ones skipped),
/// each `safe_strtoul`, 1 to [`ClassIds::MAX`] (the worker then refuses one
/// past the classes there are); `None` for any other.
fn class_ids(arg: &[u8]) -> Option<ClassIds> {
    let mut classes = ClassIds::default();
    for id in arg.split(|&b| b == b',').filter(|id| !id.is_empty()) {
        match strtoul32(id) {
            Some(id @ 1..=ClassIds::MAX) => classes.insert(id),
            _ => return None,
        }
    }
    Some(classes)
}

pub(super) fn strtoul32(token: &[u8]) -> Option<u32> {
    strtoull(token).map(|value| value as u32)
}

/// memcached's `safe_strtod`: what C's `strtod` reads (decimal, `inf`,
/// `infinity`, `nan`, hexadecimal `0x1.8p3`), then the end of the token or
/// whitespace; refused when the value overflows or underflows.
pub(super) fn strtod(token: &[u8]) -> Option<f64> {
    let start = token.iter().take_while(|&&b| is_c_space(b)).count();
    let rest = &token[start..];
    let end = rest
        .iter()
        .position(|&b| is_c_space(b))
        .unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(u) => (true, u),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    // ERANGE: an infinity from finite digits, a subnormal or zero from
    // non-zero ones.
    let out_of_range =
        |value: f64, nonzero: bool| value.is_infinite() || (nonzero && !value.is_normal());
    let value = if let Some(hex) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        let (value, nonzero) = hex_float(hex)?;
        (!out_of_range(value, nonzero)).then_some(value)?
    } else if unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let mantissa = unsigned.split(['e', 'E']).next().unwrap_or("");
        let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
        let value = unsigned.parse::<f64>().ok()?;
        (!out_of_range(value, nonzero)).then_some(value)?
    } else {
        // `inf`, `infinity`, `nan` in any case: Rust reads them as C does
        // (less C's `nan(chars)`).
        unsigned.parse::<f64>().ok()?
    };
    Some(if negative { -value } else { value })
}

/// The part of a C hexadecimal float after `0x`: the value, and whether any
/// digit of it is not 0.
fn hex_float(text: &str) -> Option<(f64, bool)> {
    let (mantissa, exponent) = match text.find(['p', 'P']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let (mut m, mut e) = (0u64, i64::from(exponent));
    for (i, c) in whole.chars().chain(fraction.chars()).enumerate() {
        let d = c.to_digit(16)?;
        if m < 1 << 56 {
            m = m << 4 | u64::from(d);
            if i >= whole.len() {
                e -= 4;
            }
        } else if i < whole.len() {
            // Past the precision: the digit only scales.
            e += 4;
        }
    }
    let mut v = m as f64;
    let mut e = e.clamp(-4000, 4000) as i32;
    while e.abs() > 1000 {
        let step = e.signum() * 1000;
        v *= 2f64.powi(step);
        e -= step;
    }
    Some((v * 2f64.powi(e), m != 0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{self, Command, Parsed};

    /// memcached's defaults: `-I 1m`, cas on, no `-A`.
    pub(crate) const LIMITS: Limits = Limits {
        item_size_max: 1 << 20,
        cas_enabled: true,
        seed_element_size: 1000,
        shutdown_enabled: false,
        dump_enabled: true,
    };
    /// With `-A`.
    const SHUTDOWN: Limits = Limits {
        shutdown_enabled: true,
        ..LIMITS
    };

    fn esc(bytes: &[u8]) -> String {
        bytes.escape_ascii().to_string()
    }

    /// A short text for a parse result, e.g. `set 'k' 0 0 'a' +18`,
    /// `error 'ERROR\r\n' +7 close`, `incomplete`.
    pub(crate) fn describe(parsed: &Parsed) -> String {
        match parsed {
            Parsed::Incomplete => "incomplete".into(),
            Parsed::Error {
                reply,
                consumed,
                swallow,
                close,
                unlink,
                refused,
            } => {
                let mut text = format!("error '{}' +{consumed}", esc(reply));
                if *swallow > 0 {
                    text += &format!(" swallow {swallow}");
                }
                if *close {
                    text += " close";
                }
                if let Some(key) = unlink {
                    text += &format!(" unlink '{}'", esc(key));
                }
                if let Some(r) = refused {
                    text += &format!(" refused '{}' {} {:?}", esc(r.key), r.nbytes, r.why);
                }
                text
            }
            Parsed::Command { command, consumed } => {
                format!("{} +{consumed}", describe_command(command))
            }
        }
    }

    fn describe_command(command: &Command) -> String {
        let noreply = |on: bool| if on { " noreply" } else { "" };
        match command {
            Command::Get {
                keys,
                with_cas,
                touch,
            } => {
                let name = if *with_cas { "gets" } else { "get" };
                match touch {
                    None => format!("{name} '{}'", esc(keys)),
                    Some(exptime) => format!("{name} touch {exptime} '{}'", esc(keys)),
                }
            }
            Command::Store {
                mode,
                key,
                flags,
                exptime,
                data,
                cas_unique,
                noreply: quiet,
            } => {
                let mut text = format!(
                    "{} '{}' {flags} {exptime} '{}'",
                    format!("{mode:?}").to_lowercase(),
                    esc(key),
                    esc(data)
                );
                if *mode == StoreMode::Cas {
                    text += &format!(" {cas_unique}");
                }
                text + noreply(*quiet)
            }
            Command::Delete { key, noreply: q } => format!("delete '{}'{}", esc(key), noreply(*q)),
            Command::Arith {
                key,
                delta,
                incr,
                noreply: q,
            } => {
                let name = if *incr { "incr" } else { "decr" };
                format!("{name} '{}' {delta}{}", esc(key), noreply(*q))
            }
            Command::Touch {
                key,
                exptime,
                noreply: q,
            } => format!("touch '{}' {exptime}{}", esc(key), noreply(*q)),
            Command::FlushAll { delay, noreply: q } => format!("flush_all {delay}{}", noreply(*q)),
            Command::Version => "version".into(),
            Command::Verbosity { level, noreply: q } => format!("verbosity {level}{}", noreply(*q)),
            Command::CacheMemlimit {
                megabytes,
                noreply: q,
            } => format!("cache_memlimit {megabytes}{}", noreply(*q)),
            Command::SlabsReassign { src, dst } => format!("slabs reassign {src} {dst}"),
            Command::MetaDump { classes } => format!("lru_crawler metadump {classes:?}"),
            Command::LruCrawler(c) => format!("lru_crawler {c:?}"),
            Command::SlabsAutomove { level, noreply: q } => {
                format!("slabs automove {level}{}", noreply(*q))
            }
            Command::SlabsAutomoveRatio { ratio, noreply: q } => {
                format!("slabs automove ratio {}{}", ratio.0, noreply(*q))
            }
            Command::Stats { args } => format!("stats '{}'", esc(args)),
            Command::Shutdown { graceful } => {
                if *graceful {
                    "shutdown graceful".into()
                } else {
                    "shutdown".into()
                }
            }
            Command::Quit => "quit".into(),
            Command::Meta(m) => format!("meta {:?} '{}'", m.kind, esc(m.key)),
            Command::SeedSet { name, data } => format!("SET '{}' '{}'", esc(name), esc(data)),
            Command::SeedGet { name } => format!("GET '{}'", esc(name)),
            Command::SeedDelete { name } => format!("DELETE '{}'", esc(name)),
        }
    }

    /// Check each `(request, expected description)` against `parse`.
    fn check(limits: &Limits, cases: &[(&[u8], &str)]) {
        let mut failures = Vec::new();
        for (request, expected) in cases {
            let got = describe(&parse(request, limits));
            if got != *expected {
                failures.push(format!(
                    "request '{}'\n   want {expected}\n    got {got}",
                    esc(&request[..request.len().min(120)])
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    fn key(len: usize) -> Vec<u8> {
        vec![b'k'; len]
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn framing() {
        // live: memcached 1.6.18
        check(
            &LIMITS,
            &[
                (b"version\r\n", "version +9"),
                (b"version\n", "version +8"),
                (b" version\r\n", "version +10"),
                (b"version  \r\n", "version +11"),
                (b"version foo bar\r\n", "version +17"),
                (b"version\r\r\n", r"error 'ERROR\r\n' +10"),
                (b"version\tx\r\n", r"error 'ERROR\r\n' +11"),
                (b"VERSION\r\n", r"error 'ERROR\r\n' +9"),
                (b"versionx\r\n", r"error 'ERROR\r\n' +10"),
                (b"version\0garbage\r\n", "version +17"),
                (b"\r\n", r"error 'ERROR\r\n' +2"),
                (b"\n", r"error 'ERROR\r\n' +1"),
                (b"\r\r\n", r"error 'ERROR\r\n' +3"),
                (b"   \r\n", r"error 'ERROR\r\n' +5"),
                (b"x\r\n", r"error 'ERROR\r\n' +3"),
                (b"quit\r\n", "quit +6"),
                (b"quit now\r\n", "quit +10"),
                (b"quit\0\r\n", "quit +7"),
                (b"", "incomplete"),
                (b"version", "incomplete"),
                (b"version\r", "incomplete"),
            ],
        );
    }

    #[test]
    fn long_lines() {
        // live: memcached 1.6.18. Junk without a newline past 2048 bytes closes
        // silently; a multiget may grow (after at most 100 spaces).
        let a3000 = vec![b'a'; 3000];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![b'x'; 2048], "incomplete"),
            (vec![b'x'; 2049], "error '' +2049 close"),
            (cat(&[b"get ", &a3000]), "incomplete"),
            (cat(&[b"gets ", &a3000]), "incomplete"),
            (cat(&[b" get ", &a3000]), "incomplete"),
            (cat(&[&[b' '; 100], b"get ", &a3000]), "incomplete"),
            (
                cat(&[&[b' '; 101], b"get ", &a3000]),
                "error '' +3105 close",
            ),
            (cat(&[b"get", &a3000]), "error '' +3003 close"),
            (cat(&[b"gat ", &a3000]), "error '' +3004 close"),
            // With the newline, length alone is fine...
            (cat(&[&[b'x'; 3000], b"\r\n"]), r"error 'ERROR\r\n' +3002"),
            (cat(&[&[b'x'; 16382], b"\r\n"]), r"error 'ERROR\r\n' +16384"),
            // ...until the newline falls outside memcached's 16 KiB read buffer.
            (cat(&[&[b'x'; 16383], b"\r\n"]), "error '' +16385 close"),
            (
                cat(&[b"set k 0 0 1 ", &[b' '; 3000], b"\r\na\r\n"]),
                "set 'k' 0 0 'a' +3017",
            ),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (&r[..], *e)).collect();
        check(&LIMITS, &cases);

        // A huge multiget is judged once its newline is there.
        let huge = cat(&[b"get ", &vec![b'a'; 300_000], b"\r\n"]);
        assert_eq!(
            describe(&parse(&huge, &LIMITS)),
            r"error 'CLIENT_ERROR bad command line format\r\n' +300006"
        );
        let mut many = b"get".to_vec();
        for i in 0..5000 {
            many.extend_from_slice(format!(" k{i}").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let Parsed::Command {
            command: Command::Get { keys, .. },
            consumed,
        } = parse(&many, &LIMITS)
        else {
            panic!("a long multiget is one command");
        };
        assert_eq!(consumed, many.len());
        assert_eq!(protocol::keys(keys).count(), 5000);
    }

    #[test]
    fn web_clients_are_hung_up_on() {
        // live: memcached 1.6.18. Only names that fall through memcached's whole
        // dispatch are checked, and only its "last" (at most the 23rd) token.
        let mut cases: Vec<(&[u8], &str)> = vec![
            (b"POST / HTTP/1.0\r\n", "error '' +17 close"),
            (b"GET / HTTP/1.1\r\n", "error '' +16 close"),
            (b"foo HTTP/1.1\r\n", "error '' +14 close"),
            (b"HTTP/1.1\r\n", "error '' +10 close"),
            (b"xx HTTP/\r\n", "error '' +10 close"),
            (b"mgx HTTP/\r\n", "error '' +11 close"),
            (b"x HTTP/\r\n", r"error 'ERROR\r\n' +9"),
            (b"foo HTTP/1.1 x\r\n", r"error 'ERROR\r\n' +16"),
            (b"HTTP/1.1 200\r\n", r"error 'ERROR\r\n' +14"),
            (b"zz http/1.1\r\n", r"error 'ERROR\r\n' +13"),
            (b"set / HTTP/1.1\r\n", r"error 'ERROR\r\n' +16"),
            (b"replace HTTP/1\r\n", r"error 'ERROR\r\n' +16"),
            (b"mx HTTP/\r\n", r"error 'ERROR\r\n' +10"),
            (b"lru HTTP/\r\n", r"error 'ERROR\r\n' +11"),
            (b"lru_crawler HTTP/\r\n", r"error 'ERROR\r\n' +19"),
            (b"watch HTTP/\r\n", r"error 'ERROR\r\n' +13"),
            (b"extstore HTTP/1.1\r\n", r"error 'ERROR\r\n' +19"),
            (b"debugtime HTTP/\r\n", r"error 'ERROR\r\n' +17"),
            (b"get / HTTP/1.1\r\n", "get '/ HTTP/1.1' +16"),
            (b"bget HTTP/\r\n", "get 'HTTP/' +12"),
            (b"version HTTP/\r\n", "version +15"),
            (b"quit HTTP/\r\n", "quit +12"),
            (b"stats HTTP/\r\n", "stats 'HTTP/' +13"),
            (
                b"flush_all HTTP/\r\n",
                r"error 'CLIENT_ERROR invalid exptime argument\r\n' +17",
            ),
            (
                b"verbosity HTTP/\r\n",
                r"error 'CLIENT_ERROR bad command line format\r\n' +17",
            ),
        ];
        let at_23 = b"zz a b c d e f g h i j k l m n o p q r s t u HTTP/ x\r\n";
        let at_24 = b"zz a b c d e f g h i j k l m n o p q r s t u v HTTP/ x\r\n";
        let last_24 = b"zz a b c d e f g h i j k l m n o p q r s t u v w HTTP/\r\n";
        cases.push((at_23, "error '' +54 close"));
        cases.push((at_24, r"error 'ERROR\r\n' +56"));
        cases.push((last_24, r"error 'ERROR\r\n' +56"));
        check(&LIMITS, &cases);
    }

    #[test]
    fn retrieval() {
        // live: memcached 1.6.18 for every error and odd case.
        let long = key(251);
        let longest = key(250);
        let keys30: Vec<u8> = (0..30)
            .flat_map(|i| format!(" k{i}").into_bytes())
            .collect();
        let owned: Vec<(Vec<u8>, String)> = vec![
            (
                cat(&[b"get a ", &long, b"\r\n"]),
                r"error 'CLIENT_ERROR bad command line format\r\n' +259".into(),
            ),
            (
                cat(&[b"gets ", &long, b"\r\n"]),
                r"error 'CLIENT_ERROR bad command line format\r\n' +258".into(),
            ),
            (
                cat(&[b"gat 10 ", &long, b"\r\n"]),
                r"error 'CLIENT_ERROR bad command line format\r\n' +260".into(),
            ),
            (
                cat(&[b"gat abc ", &long, b"\r\n"]),
                r"error 'CLIENT_ERROR invalid exptime argument\r\n' +261".into(),
            ),
            (
                cat(&[b"get", &keys30, b" ", &long, b"\r\n"]),
                format!(
                    r"error 'CLIENT_ERROR bad command line format\r\n' +{}",
                    3 + keys30.len() + 1 + 251 + 2
                ),
            ),
            (
                cat(&[b"get ", &longest, b"\r\n"]),
                format!("get '{}' +256", esc(&longest)),
            ),
        ];
        let mut cases: Vec<(&[u8], &str)> = vec![
            (b"get a\r\n", "get 'a' +7"),
            (b"get a b  c \r\n", "get 'a b  c' +13"),
            (b"gets  k\r\n", "gets 'k' +9"),
            (b"  get k\r\n", "get 'k' +9"),
            (b"bget k\r\n", "get 'k' +8"),
            (b"gat 10 a\r\n", "get touch 10 'a' +10"),
            (b"gats 10 a b\r\n", "gets touch 10 'a b' +13"),
            // A gat without a key is answered END.
            (b"gat 10\r\n", "get touch 10 '' +8"),
            (b"gats 10\r\n", "gets touch 10 '' +9"),
            (b"gat 4294967296 k\r\n", "get touch 0 'k' +18"),
            (b"gat -1 k\r\n", "get touch -1 'k' +10"),
            (b"gat 1\t k\r\n", "get touch 1 'k' +10"),
            // Only spaces separate keys; `noreply` is a key here.
            (b"get k noreply\r\n", "get 'k noreply' +15"),
            (b"get k\tx\r\n", r"get 'k\tx' +9"),
            (b"get k\r\r\n", r"get 'k\r' +8"),
            (b"get a\0 b\r\n", "get 'a' +10"),
            (b"get\r\n", r"error 'ERROR\r\n' +5"),
            (b"get \r\n", r"error 'ERROR\r\n' +6"),
            (b"gets\r\n", r"error 'ERROR\r\n' +6"),
            (b"gat\r\n", r"error 'ERROR\r\n' +5"),
            (b"bget\r\n", r"error 'ERROR\r\n' +6"),
            (b"gxx k\r\n", r"error 'ERROR\r\n' +7"),
            (
                b"gat abc k\r\n",
                r"error 'CLIENT_ERROR invalid exptime argument\r\n' +11",
            ),
            (
                b"gat noreply k\r\n",
                r"error 'CLIENT_ERROR invalid exptime argument\r\n' +15",
            ),
            (
                b"gat 99999999999999999999 k\r\n",
                r"error 'CLIENT_ERROR invalid exptime argument\r\n' +28",
            ),
        ];
        cases.extend(owned.iter().map(|(r, e)| (&r[..], e.as_str())));
        check(&LIMITS, &cases);
    }

    #[test]
    fn storage() {
        check(
            &LIMITS,
            &[
                (b"set k 0 0 1\r\na\r\n", "set 'k' 0 0 'a' +16"),
                (b"add k 1 2 3\r\nabc\r\n", "add 'k' 1 2 'abc' +18"),
                (b"replace k 0 0 1\r\na\r\n", "replace 'k' 0 0 'a' +20"),
                (b"append k 0 0 1\r\na\r\n", "append 'k' 0 0 'a' +19"),
                (b"prepend k 0 0 1\r\na\r\n", "prepend 'k' 0 0 'a' +20"),
                (b"cas k 0 0 1 5\r\na\r\n", "cas 'k' 0 0 'a' 5 +18"),
                (
                    b"cas k 0 0 1 5 noreply\r\na\r\n",
                    "cas 'k' 0 0 'a' 5 noreply +26",
                ),
                (
                    b"set k 0 0 1 noreply\r\na\r\n",
                    "set 'k' 0 0 'a' noreply +24",
                ),
                (b"set k 0 0 2\r\n\r\n\r\n", r"set 'k' 0 0 '\r\n' +17"),
                (b"set k 0 0 0\r\n\r\n", "set 'k' 0 0 '' +15"),
                (b"set k 0 0 1\na\r\n", "set 'k' 0 0 'a' +15"),
                (b"set k 0 0 1\r\na\r\nget k\r\n", "set 'k' 0 0 'a' +16"),
                (b"set k 0 0 1\r\na\r", "incomplete"),
                (b"set k 0 0 5\r\nab", "incomplete"),
                (b"set k 0 0 5\r\n", "incomplete"),
                // live: memcached 1.6.18 from here on.
                // A token where noreply goes that is not `noreply` is ignored.
                (b"set k 0 0 1 garbage\r\na\r\n", "set 'k' 0 0 'a' +24"),
                (b"set k 0 0 1 NOREPLY\r\na\r\n", "set 'k' 0 0 'a' +24"),
                (b"cas k 0 0 1 5 garbage\r\na\r\n", "cas 'k' 0 0 'a' 5 +26"),
                (b"set k\t0 0 0 1\r\na\r\n", r"set 'k\t0' 0 0 'a' +18"),
                (b"set k 0 0 1\0 zz\r\na\r\n", "set 'k' 0 0 'a' +20"),
                // Wrong token counts: ERROR, and the data is read as a command.
                (b"set k 0 0\r\n", r"error 'ERROR\r\n' +11"),
                (b"set k 0 0 1 noreply x\r\n", r"error 'ERROR\r\n' +23"),
                (b"cas k 0 0 1\r\na\r\n", r"error 'ERROR\r\n' +13"),
                // An empty cas field is just a missing token.
                (b"cas k 0 0 1  \r\na\r\n", r"error 'ERROR\r\n' +15"),
                (b"Set k 0 0 1\r\na\r\n", r"error 'ERROR\r\n' +13"),
            ],
        );
    }

    #[test]
    fn storage_numbers() {
        // live: memcached 1.6.18, every line. Flags are a 64-bit strtoull cut to
        // 32 bits; exptime and bytes a 64-bit strtol cut to 32 bits.
        let bad = r"error 'CLIENT_ERROR bad command line format\r\n'";
        let cases: Vec<(&[u8], String)> = vec![
            (b"set k -1 0 1\r\na\r\n", format!("{bad} +14")),
            (b"set k -0 0 1\r\na\r\n", "set 'k' 0 0 'a' +17".into()),
            (b"set k +1 0 1\r\na\r\n", "set 'k' 1 0 'a' +17".into()),
            (b"set k 0x1 0 1\r\na\r\n", format!("{bad} +15")),
            (
                b"set k 4294967296 0 1\r\na\r\n",
                "set 'k' 0 0 'a' +25".into(),
            ),
            (
                b"set k 4294967297 0 1\r\na\r\n",
                "set 'k' 1 0 'a' +25".into(),
            ),
            (
                b"set k 9223372036854775808 0 1\r\na\r\n",
                "set 'k' 0 0 'a' +34".into(),
            ),
            (
                b"set k -18446744073709551615 0 1\r\na\r\n",
                "set 'k' 1 0 'a' +36".into(),
            ),
            (
                b"set k 18446744073709551616 0 1\r\na\r\n",
                format!("{bad} +32"),
            ),
            (b"set k 0 abc 1\r\na\r\n", format!("{bad} +15")),
            (
                b"set k 0 4294967296 1\r\na\r\n",
                "set 'k' 0 0 'a' +25".into(),
            ),
            (b"set k 0 -1 1\r\na\r\n", "set 'k' 0 -1 'a' +17".into()),
            (
                b"set k 0 9223372036854775808 1\r\na\r\n",
                format!("{bad} +31"),
            ),
            (
                b"set k 0 -9223372036854775808 1\r\na\r\n",
                "set 'k' 0 0 'a' +35".into(),
            ),
            (b"set k 0 0 abc\r\nxyz\r\n", format!("{bad} +15")),
            (b"set k 0 0 1x\r\na\r\n", format!("{bad} +14")),
            (b"set k 0 0 -1\r\n", format!("{bad} +14")),
            (b"set k 0 0 4294967295\r\n", format!("{bad} +22")),
            (b"set k 0 0 2147483647\r\n", format!("{bad} +22")),
            // bytes + 2 must fit an int.
            (b"set k 0 0 2147483646\r\n", format!("{bad} +22")),
            (
                b"set k 0 0 4294967297\r\na\r\n",
                "set 'k' 0 0 'a' +25".into(),
            ),
            (
                b"set k 0 0 -4294967295\r\na\r\n",
                "set 'k' 0 0 'a' +26".into(),
            ),
            (b"set k 0 0 01\r\na\r\n", "set 'k' 0 0 'a' +17".into()),
            (b"set k 0 0 +1\r\na\r\n", "set 'k' 0 0 'a' +17".into()),
            // Whitespace around the digits, and anything after it, is accepted.
            (b"set k 0 0 \t1\r\na\r\n", "set 'k' 0 0 'a' +17".into()),
            (b"set k 0 0 1\t\r\na\r\n", "set 'k' 0 0 'a' +17".into()),
            (b"set k 0 0 1\tzz\r\na\r\n", "set 'k' 0 0 'a' +19".into()),
            (b"set k 0 0 1\r\r\na\r\n", "set 'k' 0 0 'a' +17".into()),
            (b"cas k 0 0 1 abc\r\na\r\n", format!("{bad} +17")),
            (b"cas k 0 0 1 -1\r\na\r\n", format!("{bad} +16")),
            (
                b"cas k 0 0 1 18446744073709551616\r\na\r\n",
                format!("{bad} +34"),
            ),
            (
                b"cas k 0 0 1 18446744073709551615\r\na\r\n",
                "cas 'k' 0 0 'a' 18446744073709551615 +37".into(),
            ),
            // noreply silences the CLIENT_ERROR (memcached then answers ERROR
            // to the data line).
            (b"set k 0 0 noreply\r\n", "error '' +19".into()),
            (b"cas k 0 0 1 noreply\r\na\r\n", "error '' +21".into()),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
    }

    #[test]
    fn storage_keys_and_data_blocks() {
        // live: memcached 1.6.18
        let long = key(251);
        let longest = key(250);
        let owned: Vec<(Vec<u8>, String)> = vec![
            (
                cat(&[b"set ", &long, b" 0 0 1\r\na\r\n"]),
                r"error 'CLIENT_ERROR bad command line format\r\n' +263".into(),
            ),
            (
                cat(&[b"set ", &long, b" 0 0 1 noreply\r\na\r\n"]),
                "error '' +271".into(),
            ),
            (
                cat(&[b"set ", &longest, b" 0 0 1\r\na\r\n"]),
                format!("set '{}' 0 0 'a' +265", esc(&longest)),
            ),
        ];
        let mut cases: Vec<(&[u8], &str)> = vec![
            // Exactly bytes + 2 are taken, whatever they are; the old item stays.
            (
                b"set k 0 0 1\r\nab\r\n",
                r"error 'CLIENT_ERROR bad data chunk\r\n' +16 refused 'k' 1 BadDataChunk",
            ),
            (
                b"set k 0 0 1\r\nabc\r\n",
                r"error 'CLIENT_ERROR bad data chunk\r\n' +16 refused 'k' 1 BadDataChunk",
            ),
            (
                b"set k 0 0 1\r\na\n\r\n",
                r"error 'CLIENT_ERROR bad data chunk\r\n' +16 refused 'k' 1 BadDataChunk",
            ),
            (
                b"set k 0 0 1 noreply\r\nab\r\n",
                "error '' +24 refused 'k' 1 BadDataChunk",
            ),
            // Too large: the block is swallowed, and a set drops the old item.
            (
                b"set k 0 0 1049600\r\n",
                r"error 'SERVER_ERROR object too large for cache\r\n' +19 swallow 1049602 unlink 'k' refused 'k' 1049600 TooLarge",
            ),
            (
                b"add k 0 0 1049600\r\n",
                r"error 'SERVER_ERROR object too large for cache\r\n' +19 swallow 1049602 refused 'k' 1049600 TooLarge",
            ),
            (
                b"replace k 0 0 1049600\r\n",
                r"error 'SERVER_ERROR object too large for cache\r\n' +23 swallow 1049602 refused 'k' 1049600 TooLarge",
            ),
            (
                b"append k 0 0 1049600\r\n",
                r"error 'SERVER_ERROR object too large for cache\r\n' +22 swallow 1049602 refused 'k' 1049600 TooLarge",
            ),
            (
                b"cas k 0 0 1049600 1\r\n",
                r"error 'SERVER_ERROR object too large for cache\r\n' +21 swallow 1049602 refused 'k' 1049600 TooLarge",
            ),
            (
                b"set k 0 0 1049600 noreply\r\n",
                "error '' +27 swallow 1049602 unlink 'k' refused 'k' 1049600 TooLarge",
            ),
            // proto_text.c: the largest size the line check lets through.
            (
                b"set k 0 0 2147483645\r\n",
                r"error 'SERVER_ERROR object too large for cache\r\n' +22 swallow 2147483647 unlink 'k' refused 'k' 2147483645 TooLarge",
            ),
        ];
        cases.extend(owned.iter().map(|(r, e)| (&r[..], e.as_str())));
        check(&LIMITS, &cases);
    }

    #[test]
    fn item_size_boundary() {
        // live: memcached 1.6.18, the largest value that stores, found by
        // bisection with `set`, for -I 1k/1m/2m, with and without -C.
        let at = |item_size_max, cas_enabled| Limits {
            item_size_max,
            cas_enabled,
            ..LIMITS
        };
        // (-I, cas, key length, flags, largest value stored)
        let cases = [
            (1 << 20, true, 1, 0, 1048516),
            (1 << 20, true, 1, 1, 1048512),
            (1 << 20, true, 10, 0, 1048507),
            (1 << 20, true, 250, 1, 1048263),
            (1 << 20, false, 1, 0, 1048524),
            (1 << 20, false, 10, 1, 1048511),
            (1 << 20, false, 250, 0, 1048275),
            (2 << 20, true, 1, 0, 2097092),
            (2 << 20, true, 250, 1, 2096839),
            (2 << 20, false, 10, 0, 2097091),
            (2 << 20, false, 250, 1, 2096847),
            (1024, true, 1, 0, 964),
            (1024, true, 250, 1, 711),
        ];
        for (max, cas, key_len, flags, largest) in cases {
            let limits = at(max, cas);
            assert!(!item_too_large(&limits, key_len, flags, largest));
            assert!(item_too_large(&limits, key_len, flags, largest + 1));
        }
        // PROTOCOL.md's two reference points at the defaults.
        assert!(!item_too_large(&LIMITS, 1, 0, 1047552));
        assert!(item_too_large(&LIMITS, 1, 0, 1049600));
        assert!(item_too_large(&LIMITS, 1, 0, usize::MAX));
    }

    #[test]
    fn delete() {
        // live: memcached 1.6.18
        let usage =
            r"error 'CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n'";
        let long = key(251);
        let owned: Vec<(Vec<u8>, String)> = vec![
            (
                cat(&[b"delete ", &long, b"\r\n"]),
                r"error 'CLIENT_ERROR bad command line format\r\n' +260".into(),
            ),
            // The usage check comes before the key's length.
            (
                cat(&[b"delete ", &long, b" 1\r\n"]),
                format!("{usage} +262"),
            ),
            (
                cat(&[b"delete ", &long, b" noreply\r\n"]),
                "error '' +268".into(),
            ),
        ];
        let mut cases: Vec<(&[u8], String)> = vec![
            (b"delete k\r\n", "delete 'k' +10".into()),
            (b"delete k 0\r\n", "delete 'k' +12".into()),
            (b"delete k noreply\r\n", "delete 'k' noreply +18".into()),
            (b"delete k 0 noreply\r\n", "delete 'k' noreply +20".into()),
            (b"delete noreply\r\n", "delete 'noreply' +16".into()),
            (b"delete k\t0\r\n", r"delete 'k\t0' +12".into()),
            (b"delete k 1\r\n", format!("{usage} +12")),
            (b"delete k 00\r\n", format!("{usage} +13")),
            (b"delete k 0\t\r\n", format!("{usage} +13")),
            (b"delete k 0 0\r\n", format!("{usage} +14")),
            (b"delete k noreply 0\r\n", format!("{usage} +20")),
            (b"delete k x noreply\r\n", "error '' +20".into()),
            (b"delete k x y z\r\n", r"error 'ERROR\r\n' +16".into()),
            (b"delete\r\n", r"error 'ERROR\r\n' +8".into()),
        ];
        cases.extend(owned.iter().map(|(r, e)| (&r[..], e.clone())));
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
    }

    #[test]
    fn incr_decr() {
        // live: memcached 1.6.18
        let delta = r"error 'CLIENT_ERROR invalid numeric delta argument\r\n'";
        let bad = r"error 'CLIENT_ERROR bad command line format\r\n'";
        let long = key(251);
        let owned: Vec<(Vec<u8>, String)> = vec![
            (cat(&[b"incr ", &long, b" 1\r\n"]), format!("{bad} +260")),
            (cat(&[b"incr ", &long, b" abc\r\n"]), format!("{bad} +262")),
        ];
        let mut cases: Vec<(&[u8], String)> = vec![
            (b"incr k 1\r\n", "incr 'k' 1 +10".into()),
            (b"decr k 7\r\n", "decr 'k' 7 +10".into()),
            (b"incr k 1 noreply\r\n", "incr 'k' 1 noreply +18".into()),
            (b"incr k 1 x\r\n", "incr 'k' 1 +12".into()),
            (
                b"incr k 18446744073709551615\r\n",
                "incr 'k' 18446744073709551615 +29".into(),
            ),
            (b"incr k -0\r\n", "incr 'k' 0 +11".into()),
            (b"incr k 1\t\r\n", "incr 'k' 1 +11".into()),
            (b"incr n \t5\r\n", "incr 'n' 5 +11".into()),
            (b"incr k -1\r\n", format!("{delta} +11")),
            (b"incr k abc\r\n", format!("{delta} +12")),
            (b"incr k 5x\r\n", format!("{delta} +11")),
            (b"incr k 18446744073709551616\r\n", format!("{delta} +29")),
            (b"incr k abc noreply\r\n", "error '' +20".into()),
            (b"incr k\r\n", r"error 'ERROR\r\n' +8".into()),
            (b"decr k\t1\r\n", r"error 'ERROR\r\n' +10".into()),
            (b"decr k 1 2 3\r\n", r"error 'ERROR\r\n' +14".into()),
            (b"incr k 1 noreply x\r\n", r"error 'ERROR\r\n' +20".into()),
        ];
        cases.extend(owned.iter().map(|(r, e)| (&r[..], e.clone())));
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
    }

    #[test]
    fn touch() {
        // live: memcached 1.6.18
        let exptime = r"error 'CLIENT_ERROR invalid exptime argument\r\n'";
        let long = key(251);
        let owned = cat(&[b"touch ", &long, b" abc\r\n"]);
        let cases: Vec<(&[u8], String)> = vec![
            (b"touch k 10\r\n", "touch 'k' 10 +12".into()),
            (b"touch k 10 noreply\r\n", "touch 'k' 10 noreply +20".into()),
            (b"touch k 1 x\r\n", "touch 'k' 1 +13".into()),
            (b"touch k 4294967296\r\n", "touch 'k' 0 +20".into()),
            (b"touch k -1\r\n", "touch 'k' -1 +12".into()),
            (b"touch k abc\r\n", format!("{exptime} +13")),
            (
                b"touch k 99999999999999999999\r\n",
                format!("{exptime} +30"),
            ),
            (b"touch k noreply\r\n", "error '' +17".into()),
            (b"touch k\r\n", r"error 'ERROR\r\n' +9".into()),
            (b"touch k 1 noreply x\r\n", r"error 'ERROR\r\n' +21".into()),
            (
                &owned,
                r"error 'CLIENT_ERROR bad command line format\r\n' +263".into(),
            ),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
    }

    #[test]
    fn flush_all_verbosity_stats() {
        // live: memcached 1.6.18
        let exptime = r"error 'CLIENT_ERROR invalid exptime argument\r\n'";
        let bad = r"error 'CLIENT_ERROR bad command line format\r\n'";
        let cases: Vec<(&[u8], String)> = vec![
            (b"flush_all\r\n", "flush_all 0 +11".into()),
            (b"flush_all 0\r\n", "flush_all 0 +13".into()),
            (b"flush_all 10\r\n", "flush_all 10 +14".into()),
            // A delay below 1 means now.
            (b"flush_all -5\r\n", "flush_all 0 +14".into()),
            (b"flush_all -0\r\n", "flush_all 0 +14".into()),
            (b"flush_all 4294967296\r\n", "flush_all 0 +22".into()),
            (b"flush_all \t5\r\n", "flush_all 5 +14".into()),
            (b"flush_all 5\tx\r\n", "flush_all 5 +15".into()),
            (b"flush_all noreply\r\n", "flush_all 0 noreply +19".into()),
            (
                b"flush_all 10 noreply\r\n",
                "flush_all 10 noreply +22".into(),
            ),
            (b"flush_all 10 foo\r\n", "flush_all 10 +18".into()),
            (b"flush_all abc\r\n", format!("{exptime} +15")),
            (b"flush_all noreply foo\r\n", format!("{exptime} +23")),
            (
                b"flush_all 99999999999999999999\r\n",
                format!("{exptime} +32"),
            ),
            (b"flush_all abc noreply\r\n", "error '' +23".into()),
            (b"flush_all 1 2 3\r\n", r"error 'ERROR\r\n' +17".into()),
            (b"verbosity 1\r\n", "verbosity 1 +13".into()),
            (b"verbosity 1 noreply\r\n", "verbosity 1 noreply +21".into()),
            (b"cache_memlimit 64\r\n", "cache_memlimit 64 +19".into()),
            (
                b"cache_memlimit 4294967304 noreply\r\n",
                "cache_memlimit 8 noreply +35".into(),
            ),
            (b"cache_memlimit abc noreply\r\n", "error '' +28".into()),
            (b"verbosity 1 2\r\n", "verbosity 1 +15".into()),
            (b"verbosity 4294967296\r\n", "verbosity 0 +22".into()),
            (b"verbosity abc\r\n", format!("{bad} +15")),
            (b"verbosity -1\r\n", format!("{bad} +14")),
            (b"verbosity noreply\r\n", "error '' +19".into()),
            (b"verbosity\r\n", r"error 'ERROR\r\n' +11".into()),
            (b"verbosity 1 2 3\r\n", r"error 'ERROR\r\n' +17".into()),
            // The worker answers stats; its groups and their errors are its own.
            (b"stats\r\n", "stats '' +7".into()),
            (b"stats reset\r\n", "stats 'reset' +13".into()),
            (b"stats  reset \r\n", "stats 'reset' +15".into()),
            (b"stats detail on\r\n", "stats 'detail on' +17".into()),
            (
                b"stats cachedump 1 2\r\n",
                "stats 'cachedump 1 2' +21".into(),
            ),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
    }

    #[test]
    fn slabs() {
        // live: memcached 1.6.18
        let bad = r"error 'CLIENT_ERROR bad command line format\r\n'";
        let error = r"error 'ERROR\r\n'";
        let cases: Vec<(&[u8], String)> = vec![
            (b"slabs reassign 1 2\r\n", "slabs reassign 1 2 +20".into()),
            (b"slabs reassign -1 0\r\n", "slabs reassign -1 0 +21".into()),
            // safe_strtol into an int32_t: no range check.
            (
                b"slabs reassign 4294967297 1\r\n",
                "slabs reassign 1 1 +29".into(),
            ),
            (
                b"slabs reassign 1\tx 2\r\n",
                "slabs reassign 1 2 +22".into(),
            ),
            (b"slabs reassign a b\r\n", format!("{bad} +20")),
            // No noreply: it is a number that fails.
            (b"slabs reassign 1 noreply\r\n", format!("{bad} +26")),
            (b"slabs reassign 1\r\n", format!("{error} +18")),
            (b"slabs reassign 1 2 3\r\n", format!("{error} +22")),
            (b"slabs reassign 1 2 noreply\r\n", format!("{error} +28")),
            (b"slabs reassign\r\n", format!("{error} +16")),
            (b"slabs automove 0\r\n", "slabs automove 0 +18".into()),
            (b"slabs automove 2\r\n", "slabs automove 2 +18".into()),
            (b"slabs automove 1 2\r\n", "slabs automove 1 +20".into()),
            (b"slabs automove 1\t\r\n", "slabs automove 1 +19".into()),
            (
                b"slabs automove 4294967297\r\n",
                "slabs automove 1 +27".into(),
            ),
            (
                b"slabs automove 1 noreply\r\n",
                "slabs automove 1 noreply +26".into(),
            ),
            (b"slabs automove 3\r\n", format!("{error} +18")),
            (b"slabs automove 3 noreply\r\n", "error '' +26".into()),
            (b"slabs automove x\r\n", format!("{bad} +18")),
            (b"slabs automove -1\r\n", format!("{bad} +19")),
            (b"slabs automove RATIO 1\r\n", format!("{bad} +24")),
            (b"slabs automove noreply\r\n", "error '' +24".into()),
            (b"slabs automove\r\n", format!("{error} +16")),
            (b"slabs automove\t1\r\n", format!("{error} +18")),
            (
                b"slabs automove ratio 0.5\r\n",
                "slabs automove ratio 0.5 +26".into(),
            ),
            (
                b"slabs automove ratio 5 noreply\r\n",
                "slabs automove ratio 5 noreply +32".into(),
            ),
            (
                b"slabs automove ratio 0x10\r\n",
                "slabs automove ratio 16 +27".into(),
            ),
            (
                b"slabs automove ratio inf\r\n",
                "slabs automove ratio inf +26".into(),
            ),
            (b"slabs automove ratio\r\n", format!("{error} +22")),
            (b"slabs automove ratio abc\r\n", format!("{error} +26")),
            (b"slabs automove ratio 0.5x\r\n", format!("{error} +27")),
            (b"slabs automove ratio 1e400\r\n", format!("{error} +28")),
            (b"slabs automove ratio noreply\r\n", "error '' +30".into()),
            (b"slabs\r\n", format!("{error} +7")),
            (b"slabs foo\r\n", format!("{error} +11")),
            (b"slabs foo noreply\r\n", format!("{error} +19")),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
    }

    /// C's `strtod` and memcached's checks around it (glibc's answers).
    #[test]
    fn strtod_reads_as_c() {
        let table: &[(&str, Option<f64>)] = &[
            ("0.5", Some(0.5)),
            ("  +.5", Some(0.5)),
            ("-2", Some(-2.0)),
            ("1.", Some(1.0)),
            ("1e3", Some(1000.0)),
            ("0e400", Some(0.0)),
            ("0.5\tx", Some(0.5)),
            ("inFinity", Some(f64::INFINITY)),
            ("-inf", Some(f64::NEG_INFINITY)),
            ("0x10", Some(16.0)),
            ("0x1.8p1", Some(3.0)),
            ("0X.8", Some(0.5)),
            ("0x1p-1022", Some(f64::MIN_POSITIVE)),
            ("", None),
            (".", None),
            ("1e", None),
            ("0.5x", None),
            ("abc", None),
            ("0x", None),
            ("0x1p", None),
            ("1e400", None),
            ("1e-400", None),
            ("1e-310", None),
            ("0x1p99999", None),
        ];
        for (text, want) in table {
            assert_eq!(strtod(text.as_bytes()), *want, "{text:?}");
        }
        assert!(strtod(b"nan").is_some_and(f64::is_nan));
    }

    #[test]
    fn shutdown() {
        // live: memcached 1.6.18, without and with -A.
        let disabled = r"error 'ERROR: shutdown not enabled\r\n'";
        let mode = r"error 'CLIENT_ERROR invalid shutdown mode\r\n'";
        let cases: Vec<(&[u8], String)> = vec![
            (b"shutdown\r\n", format!("{disabled} +10")),
            (b"shutdown graceful\r\n", format!("{disabled} +19")),
            (b"shutdown foo\r\n", format!("{disabled} +14")),
            (b"shutdown a b\r\n", format!("{disabled} +14")),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&LIMITS, &cases);
        let cases: Vec<(&[u8], String)> = vec![
            (b"shutdown\r\n", "shutdown +10".into()),
            (b"shutdown graceful\r\n", "shutdown graceful +19".into()),
            (b"shutdown graceful\0x\r\n", "shutdown graceful +21".into()),
            (b"shutdown foo\r\n", format!("{mode} +14")),
            (b"shutdown a b\r\n", format!("{mode} +14")),
            (b"shutdown graceful x\r\n", format!("{mode} +21")),
            (b"shutdown noreply\r\n", format!("{mode} +18")),
            (b"shutdown GRACEFUL\r\n", format!("{mode} +19")),
        ];
        let cases: Vec<(&[u8], &str)> = cases.iter().map(|(r, e)| (*r, e.as_str())).collect();
        check(&SHUTDOWN, &cases);
    }

    #[test]
    fn commands_we_do_not_serve_answer_error() {
        // Not live-equal: memcached serves these (lru, watch, refresh_certs,
        // misbehave is debug-only); lru_crawler's forms for comparison.
        check(
            &LIMITS,
            &[
                (b"mn\r\n", "meta Noop '' +4"),
                (b"mg k v\r\n", "meta Get 'k' +8"),
                (b"lru mode flat\r\n", r"error 'ERROR\r\n' +15"),
                (b"lru_crawler enable\r\n", "lru_crawler Enable +20"),
                (b"lru_crawler enable x\r\n", r"error 'ERROR\r\n' +22"),
                (
                    b"lru_crawler crawl all\r\n",
                    "lru_crawler Crawl { classes: None } +23",
                ),
                (
                    b"lru_crawler crawl 1,,3\r\n",
                    "lru_crawler Crawl { classes: Some(ClassIds([10, 0, 0, 0])) } +24",
                ),
                // Our class ids go past memcached's 63; the worker checks them.
                (
                    b"lru_crawler crawl 64,255\r\n",
                    "lru_crawler Crawl { classes: Some(ClassIds([0, 1, 0, 9223372036854775808])) } +26",
                ),
                (
                    b"lru_crawler crawl 256\r\n",
                    "lru_crawler Refused(BadClass) +23",
                ),
                (
                    b"lru_crawler sleep 1000001\r\n",
                    r"error 'CLIENT_ERROR sleep must be one second or less\r\n' +27",
                ),
                (
                    b"lru_crawler metadump all\r\n",
                    "lru_crawler metadump None +26",
                ),
                (
                    b"lru_crawler metadump 1,,3\r\n",
                    "lru_crawler metadump Some(ClassIds([10, 0, 0, 0])) +27",
                ),
                (
                    b"lru_crawler metadump 0\r\n",
                    "lru_crawler Refused(BadClass) +24",
                ),
                (b"lru_crawler metadump\r\n", r"error 'ERROR\r\n' +22"),
                (b"watch\r\n", r"error 'ERROR\r\n' +7"),
            ],
        );
    }

    /// Parse `stream` command by command, as the worker does.
    fn parse_all(stream: &[u8], limits: &Limits) -> Vec<String> {
        let mut results = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let parsed = protocol::parse(&stream[at..], limits);
            results.push(describe(&parsed));
            match parsed {
                Parsed::Command { consumed, .. } => at += consumed,
                Parsed::Error {
                    consumed,
                    swallow,
                    close,
                    ..
                } => {
                    at += consumed + swallow;
                    if close {
                        break;
                    }
                }
                Parsed::Incomplete => break,
            }
        }
        results
    }

    #[test]
    fn pipelined_requests() {
        // live: memcached 1.6.18 answers this stream STORED, VALUE..END, 6,
        // CLIENT_ERROR bad command line format, ERROR, CLIENT_ERROR bad data
        // chunk, ERROR, DELETED: a bad line leaves its data to be read as a
        // command, a bad data block takes exactly bytes + 2.
        let stream = b"set a 0 0 1\r\n1\r\nget a\r\nincr a 5\r\nset k 0 0 abc\r\nxyz\r\n\
                       set k 0 0 1\r\nab\r\ndelete a\r\n";
        assert_eq!(
            parse_all(stream, &LIMITS),
            [
                "set 'a' 0 0 '1' +16",
                "get 'a' +7",
                "incr 'a' 5 +10",
                r"error 'CLIENT_ERROR bad command line format\r\n' +15",
                r"error 'ERROR\r\n' +5",
                r"error 'CLIENT_ERROR bad data chunk\r\n' +16 refused 'k' 1 BadDataChunk",
                r"error 'ERROR\r\n' +1",
                "delete 'a' +10",
            ]
        );
        // A swallowed value does not reach the parser; what follows does.
        let mut stream = b"set k 0 0 1049600 noreply\r\n".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 1049600));
        stream.extend_from_slice(b"\r\nversion\r\n");
        assert_eq!(
            parse_all(&stream, &LIMITS),
            [
                "error '' +27 swallow 1049602 unlink 'k' refused 'k' 1049600 TooLarge",
                "version +9"
            ]
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let requests: &[&[u8]] = &[
            b"set k 0 0 5 noreply\r\nhello\r\n",
            b"cas key 1 2 3 4\r\nabc\r\n",
            b"get a bb ccc\r\n",
            b"gats 100 k1 k2\n",
            b"delete k 0\r\n",
            b"incr k 10\r\n",
            b"flush_all 10 noreply\r\n",
            b"stats items\r\n",
            b"ms k 2 T1 c\r\nhi\r\n",
            b"mg k v c T30 Oq\r\n",
            b"set k 0 0 1\r\nabc",
            // The seed's CRLF after the data is optional: not waited for.
            b"SET name 3\r\nabc",
            b"GET name\r\n",
        ];
        for request in requests {
            let whole = protocol::parse(request, &LIMITS);
            let consumed = match whole {
                Parsed::Command { consumed, .. } | Parsed::Error { consumed, .. } => consumed,
                Parsed::Incomplete => 0,
            };
            assert_eq!(consumed, request.len(), "{}", describe(&whole));
            for cut in 0..request.len() {
                assert_eq!(
                    describe(&protocol::parse(&request[..cut], &LIMITS)),
                    "incomplete",
                    "'{}' cut at {cut}",
                    esc(request)
                );
            }
            // More bytes behind it change nothing.
            let mut longer = request.to_vec();
            longer.extend_from_slice(b"get x\r\n");
            assert_eq!(protocol::parse(&longer, &LIMITS), whole);
        }
    }

    /// xorshift64: enough randomness for fuzzing without a dependency.
    pub(crate) struct XorShift(pub(crate) u64);

    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random requests built from protocol words and random bytes: the parser
    /// never panics, never takes more than it was given, and never gets stuck.
    #[test]
    fn random_garbage_never_panics() {
        const WORDS: &[&[u8]] = &[
            b"get",
            b"gets",
            b"gat",
            b"gats",
            b"set",
            b"add",
            b"cas",
            b"append",
            b"delete",
            b"incr",
            b"decr",
            b"touch",
            b"flush_all",
            b"version",
            b"verbosity",
            b"stats",
            b"shutdown",
            b"quit",
            b"mg",
            b"ms",
            b"md",
            b"ma",
            b"mn",
            b"me",
            b"b",
            b"v",
            b"q",
            b"T30",
            b"N0",
            b"C1",
            b"MA",
            b"Oab",
            b"AAEC",
            b"noreply",
            b"0",
            b"1",
            b"-1",
            b"5",
            b"4294967296",
            b"99999999999999999999",
            b"HTTP/1.1",
            b"graceful",
            b"SET",
            b"GET",
            b"DELETE",
            b"k",
            b" ",
            b"  ",
            b"\t",
            b"\r",
            b"\n",
            b"\r\n",
            b"\0",
        ];
        let limits = Limits {
            item_size_max: 1024,
            seed_element_size: 16,
            shutdown_enabled: true,
            ..LIMITS
        };
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            for _ in 0..rng.below(24) {
                if rng.below(4) == 0 {
                    buf.push(rng.next() as u8);
                } else {
                    buf.extend_from_slice(WORDS[rng.below(WORDS.len())]);
                    if rng.below(2) == 0 {
                        buf.push(b' ');
                    }
                }
            }
            for end in [buf.len(), rng.below(buf.len() + 1)] {
                let buf = &buf[..end];
                match protocol::parse(buf, &limits) {
                    Parsed::Command { consumed, .. } => {
                        assert!(consumed > 0 && consumed <= buf.len(), "{}", esc(buf));
                    }
                    Parsed::Error { consumed, .. } => {
                        assert!(consumed > 0 && consumed <= buf.len(), "{}", esc(buf));
                    }
                    Parsed::Incomplete => {
                        assert!(
                            buf.len() <= LINE_MAX || buf.contains(&b'\n'),
                            "{}",
                            esc(buf)
                        );
                    }
                }
            }
        }
    }
}
