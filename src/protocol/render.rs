//! Commands -> request bytes: the inverse of [`parse`](super::parse).
//!
//! [`render`] writes the canonical form of a command, the one a well-behaved
//! client sends: single spaces, `\r\n` line ends, `noreply` last, numbers in
//! plain decimal, seed commands in the seed's dialect. For every command the
//! parser can return, parsing the rendered bytes gives that command back and
//! consumes them all; load generators and tests build their requests with it.
//!
//! ```text
//! get|gets <keys>\r\n                        gat|gats <exptime>[ <keys>]\r\n
//! <mode> <key> <flags> <exptime> <bytes>[ <cas unique>][ noreply]\r\n<data>\r\n
//! delete <key>[ noreply]\r\n                 incr|decr <key> <delta>[ noreply]\r\n
//! touch <key> <exptime>[ noreply]\r\n        flush_all[ <delay>][ noreply]\r\n
//! version\r\n   verbosity <level>[ noreply]\r\n   stats[ <args>]\r\n
//! slabs reassign <src> <dst>\r\n   slabs automove[ ratio] <n>[ noreply]\r\n
//! shutdown[ graceful]\r\n   quit\r\n
//! SET <name> <size>\r\n<data>\r\n   GET <name>\r\n   DELETE <name>\r\n
//! ```

use std::fmt::Display;
use std::io::Write;

use super::{ClassIds, Command, CrawlRefusal, Crawler, StoreMode};

/// Append the request bytes of `cmd` to `out`.
///
/// Nothing is checked: a command the parser could not have produced (a key
/// with a space, a `get` without keys, a value too large for `-I`) is written
/// as it is and will not parse back to itself.
pub fn render(cmd: &Command<'_>, out: &mut Vec<u8>) {
    match *cmd {
        Command::Get {
            keys,
            with_cas,
            touch,
        } => {
            out.extend_from_slice(match (with_cas, touch.is_some()) {
                (false, false) => b"get",
                (true, false) => b"gets",
                (false, true) => b"gat",
                (true, true) => b"gats",
            });
            if let Some(exptime) = touch {
                number(out, exptime);
            }
            // `gat <exptime>` alone is valid: no trailing space for no keys.
            word(out, keys);
            out.extend_from_slice(b"\r\n");
        }
        Command::Store {
            mode,
            key,
            flags,
            exptime,
            data,
            cas_unique,
            noreply,
        } => {
            out.extend_from_slice(store_verb(mode));
            word(out, key);
            number(out, flags);
            number(out, exptime);
            number(out, data.len());
            if mode == StoreMode::Cas {
                number(out, cas_unique);
            }
            end_line(out, noreply);
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Command::Delete { key, noreply } => {
            out.extend_from_slice(b"delete");
            word(out, key);
            end_line(out, noreply);
        }
        Command::Arith {
            key,
            delta,
            incr,
            noreply,
        } => {
            out.extend_from_slice(if incr { b"incr" } else { b"decr" });
            word(out, key);
            number(out, delta);
            end_line(out, noreply);
        }
        Command::Touch {
            key,
            exptime,
            noreply,
        } => {
            out.extend_from_slice(b"touch");
            word(out, key);
            number(out, exptime);
            end_line(out, noreply);
        }
        Command::FlushAll { delay, noreply } => {
            out.extend_from_slice(b"flush_all");
            // The parser gives 0 for "no delay", which is also what a bare
            // `flush_all` means.
            if delay != 0 {
                number(out, delay);
            }
            end_line(out, noreply);
        }
        Command::Version => out.extend_from_slice(b"version\r\n"),
        Command::Verbosity { level, noreply } => {
            out.extend_from_slice(b"verbosity");
            number(out, level);
            end_line(out, noreply);
        }
        Command::CacheMemlimit { megabytes, noreply } => {
            out.extend_from_slice(b"cache_memlimit");
            number(out, megabytes);
            end_line(out, noreply);
        }
        Command::SlabsReassign { src, dst } => {
            out.extend_from_slice(b"slabs reassign");
            number(out, src);
            number(out, dst);
            out.extend_from_slice(b"\r\n");
        }
        Command::SlabsAutomove { level, noreply } => {
            out.extend_from_slice(b"slabs automove");
            number(out, level);
            end_line(out, noreply);
        }
        Command::SlabsAutomoveRatio { ratio, noreply } => {
            // Display gives the shortest decimal that reads back the same.
            out.extend_from_slice(b"slabs automove ratio");
            number(out, ratio.0);
            end_line(out, noreply);
        }
        Command::MetaDump { classes } => {
            out.extend_from_slice(b"lru_crawler metadump ");
            match classes {
                None => out.extend_from_slice(b"all"),
                Some(ids) => class_list(out, ids),
            }
            out.extend_from_slice(b"\r\n");
        }
        Command::LruCrawler(c) => {
            out.extend_from_slice(b"lru_crawler ");
            match c {
                Crawler::Crawl { classes } => {
                    out.extend_from_slice(b"crawl ");
                    match classes {
                        None => out.extend_from_slice(b"all"),
                        Some(ids) if ids.is_empty() => out.push(b','),
                        Some(ids) => class_list(out, ids),
                    }
                }
                Crawler::Sleep { us } => {
                    out.extend_from_slice(b"sleep");
                    number(out, us);
                }
                Crawler::ToCrawl { items } => {
                    out.extend_from_slice(b"tocrawl");
                    number(out, items);
                }
                Crawler::Enable => out.extend_from_slice(b"enable"),
                Crawler::Disable => out.extend_from_slice(b"disable"),
                Crawler::Refused(CrawlRefusal::BadClass) => out.extend_from_slice(b"crawl 0"),
                Crawler::Refused(CrawlRefusal::Unknown) => out.extend_from_slice(b"crawl hash"),
                // Parses back to this only under -X.
                Crawler::Refused(CrawlRefusal::DumpNotAllowed) => {
                    out.extend_from_slice(b"metadump all")
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        Command::Stats { args } => {
            out.extend_from_slice(b"stats");
            word(out, args);
            out.extend_from_slice(b"\r\n");
        }
        Command::Shutdown { graceful } => {
            out.extend_from_slice(if graceful {
                &b"shutdown graceful\r\n"[..]
            } else {
                b"shutdown\r\n"
            });
        }
        Command::Quit => out.extend_from_slice(b"quit\r\n"),
        // Meta commands keep their request bytes: their flags are echoed in
        // the order sent, so the request is its own canonical form.
        Command::Meta(m) => out.extend_from_slice(m.request),
        Command::SeedSet { name, data } => {
            out.extend_from_slice(b"SET");
            word(out, name);
            number(out, data.len());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Command::SeedGet { name } => {
            out.extend_from_slice(b"GET");
            word(out, name);
            out.extend_from_slice(b"\r\n");
        }
        Command::SeedDelete { name } => {
            out.extend_from_slice(b"DELETE");
            word(out, name);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The request bytes of `cmd` in a new buffer.
pub fn to_bytes(cmd: &Command<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    render(cmd, &mut out);
    out
}

fn store_verb(mode: StoreMode) -> &'static [u8] {
    match mode {
        StoreMode::Set => b"set",
        StoreMode::Add => b"add",
        StoreMode::Replace => b"replace",
        StoreMode::Append => b"append",
        StoreMode::Prepend => b"prepend",
        StoreMode::Cas => b"cas",
    }
}

/// ` <bytes>`, or nothing for empty bytes.
fn word(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        out.push(b' ');
        out.extend_from_slice(bytes);
    }
}

/// ` <n>` in decimal.
/// Class ids, comma-separated.
fn class_list(out: &mut Vec<u8>, ids: ClassIds) {
    let ids: Vec<String> = ids.ids().map(|i| i.to_string()).collect();
    out.extend_from_slice(ids.join(",").as_bytes());
}

fn number(out: &mut Vec<u8>, n: impl Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, " {n}");
}

/// `[ noreply]\r\n`.
fn end_line(out: &mut Vec<u8>, noreply: bool) {
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text::tests::LIMITS;
    use crate::protocol::{Limits, Parsed, parse};

    const SHUTDOWN: Limits = Limits {
        shutdown_enabled: true,
        ..LIMITS
    };

    #[test]
    fn renders_each_command_and_parses_back() {
        let cases: &[(Command, &[u8])] = &[
            (
                Command::Get {
                    keys: b"a bb",
                    with_cas: false,
                    touch: None,
                },
                b"get a bb\r\n",
            ),
            (
                Command::Get {
                    keys: b"a",
                    with_cas: true,
                    touch: None,
                },
                b"gets a\r\n",
            ),
            (
                Command::Get {
                    keys: b"",
                    with_cas: false,
                    touch: Some(-1),
                },
                b"gat -1\r\n",
            ),
            (
                Command::Get {
                    keys: b"k",
                    with_cas: true,
                    touch: Some(100),
                },
                b"gats 100 k\r\n",
            ),
            (
                Command::Store {
                    mode: StoreMode::Set,
                    key: b"k",
                    flags: 4294967295,
                    exptime: -5,
                    data: b"a\r\nb",
                    cas_unique: 0,
                    noreply: true,
                },
                b"set k 4294967295 -5 4 noreply\r\na\r\nb\r\n",
            ),
            (
                Command::Store {
                    mode: StoreMode::Cas,
                    key: b"k",
                    flags: 0,
                    exptime: 0,
                    data: b"",
                    cas_unique: u64::MAX,
                    noreply: false,
                },
                b"cas k 0 0 0 18446744073709551615\r\n\r\n",
            ),
            (
                Command::Store {
                    mode: StoreMode::Prepend,
                    key: b"noreply",
                    flags: 1,
                    exptime: 2,
                    data: b"x",
                    cas_unique: 0,
                    noreply: false,
                },
                b"prepend noreply 1 2 1\r\nx\r\n",
            ),
            (
                Command::Delete {
                    key: b"noreply",
                    noreply: false,
                },
                b"delete noreply\r\n",
            ),
            (
                Command::Delete {
                    key: b"k",
                    noreply: true,
                },
                b"delete k noreply\r\n",
            ),
            (
                Command::Arith {
                    key: b"n",
                    delta: u64::MAX,
                    incr: true,
                    noreply: false,
                },
                b"incr n 18446744073709551615\r\n",
            ),
            (
                Command::Arith {
                    key: b"n",
                    delta: 0,
                    incr: false,
                    noreply: true,
                },
                b"decr n 0 noreply\r\n",
            ),
            (
                Command::Touch {
                    key: b"k",
                    exptime: i64::from(i32::MIN),
                    noreply: false,
                },
                b"touch k -2147483648\r\n",
            ),
            (
                Command::FlushAll {
                    delay: 0,
                    noreply: true,
                },
                b"flush_all noreply\r\n",
            ),
            (
                Command::FlushAll {
                    delay: 10,
                    noreply: false,
                },
                b"flush_all 10\r\n",
            ),
            (Command::Version, b"version\r\n"),
            (
                Command::Verbosity {
                    level: 1,
                    noreply: true,
                },
                b"verbosity 1 noreply\r\n",
            ),
            (
                Command::CacheMemlimit {
                    megabytes: 64,
                    noreply: false,
                },
                b"cache_memlimit 64\r\n",
            ),
            (
                Command::SlabsReassign { src: -1, dst: 12 },
                b"slabs reassign -1 12\r\n",
            ),
            (
                Command::SlabsAutomove {
                    level: 2,
                    noreply: true,
                },
                b"slabs automove 2 noreply\r\n",
            ),
            (
                Command::SlabsAutomoveRatio {
                    ratio: crate::protocol::Ratio(0.8),
                    noreply: false,
                },
                b"slabs automove ratio 0.8\r\n",
            ),
            (
                Command::SlabsAutomoveRatio {
                    ratio: crate::protocol::Ratio(0.25),
                    noreply: true,
                },
                b"slabs automove ratio 0.25 noreply\r\n",
            ),
            (Command::Stats { args: b"" }, b"stats\r\n"),
            (
                Command::Stats {
                    args: b"cachedump 1  2",
                },
                b"stats cachedump 1  2\r\n",
            ),
            (Command::Shutdown { graceful: false }, b"shutdown\r\n"),
            (
                Command::Shutdown { graceful: true },
                b"shutdown graceful\r\n",
            ),
            (Command::Quit, b"quit\r\n"),
            (
                Command::SeedSet {
                    name: b"Name1",
                    data: b"\r\n",
                },
                b"SET Name1 2\r\n\r\n\r\n",
            ),
            (Command::SeedGet { name: b"a" }, b"GET a\r\n"),
            (Command::SeedDelete { name: b"a" }, b"DELETE a\r\n"),
        ];
        for (command, want) in cases {
            let bytes = to_bytes(command);
            assert_eq!(
                bytes.escape_ascii().to_string(),
                want.escape_ascii().to_string()
            );
            assert_eq!(
                parse(&bytes, &SHUTDOWN),
                Parsed::Command {
                    command: command.clone(),
                    consumed: bytes.len()
                },
                "{}",
                bytes.escape_ascii()
            );
        }
    }

    #[test]
    fn appends_to_what_is_already_there() {
        let mut out = b"quit\r\n".to_vec();
        render(&Command::Version, &mut out);
        assert_eq!(out, b"quit\r\nversion\r\n");
    }
}
