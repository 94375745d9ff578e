//! The seed's dialect: the request format of the C server shmcached replaces.
//!
//! ```text
//! SET <name> <size>\r\n<size bytes>[\r\n]   ->  OK\r\n
//! GET <name>\r\n                            ->  OK <size>\r\n<data>  |  ERR NOT_FOUND\r\n
//! DELETE <name>\r\n                         ->  OK 1\r\n  |  OK 0\r\n
//! ```
//!
//! Command words are upper case, tokens are split on spaces or tabs, a line ends
//! at `\n` with an optional `\r` before it. The connection closes after every
//! reply, so each error here asks for `close`. The checks run in the seed's
//! order: argument count (`ERR INVALID_COMMAND`), name length
//! (`ERR NAME_TOO_LONG`), name bytes (`ERR BAD_NAME`), size (`ERR INVALID_SIZE`).

use super::{Command, LINE_MAX, Limits, Parsed, reply};

/// The seed's longest name.
const NAME_MAX: usize = 120;

/// The seed's command words.
const VERBS: [&[u8]; 3] = [b"SET", b"GET", b"DELETE"];

/// Whether `buf` holds a seed request: its first word is exactly `SET`, `GET` or
/// `DELETE`, followed by a space, tab, CR or LF, or by nothing yet.
///
/// A buffer that is still only the start of one of those words (`GE`) counts too:
/// no text command starts with an upper-case letter, so nothing is lost, and the
/// seed parser waits for the rest.
pub fn is_seed_request(buf: &[u8]) -> bool {
    !buf.is_empty()
        && VERBS.iter().any(|verb| match buf.get(verb.len()) {
            Some(&next) => buf.starts_with(verb) && matches!(next, b' ' | b'\t' | b'\r' | b'\n'),
            None => verb.starts_with(buf),
        })
}

/// Parse the seed request at the start of `buf`.
///
/// A `SET` is `Incomplete` until all `<size>` data bytes are there; a `\r\n`
/// right after them is consumed when it has arrived (the connection closes after
/// the reply anyway, so it is not waited for).
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
        // The longest valid line is far shorter: this is not the seed talking.
        return if buf.len() > LINE_MAX {
            fail(reply::SEED_INVALID_COMMAND, buf.len())
        } else {
            Parsed::Incomplete
        };
    };
    let consumed = line_end + 1;
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);

    let mut words = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|word| !word.is_empty());
    let verb = words.next().unwrap_or_default();
    let wanted = match verb {
        b"SET" => 2,
        b"GET" | b"DELETE" => 1,
        _ => return fail(reply::SEED_INVALID_COMMAND, consumed),
    };
    let mut args: [&[u8]; 2] = [&[]; 2];
    let mut count = 0;
    for word in words {
        if count == args.len() {
            count += 1;
            break;
        }
        args[count] = word;
        count += 1;
    }
    if count != wanted {
        return fail(reply::SEED_INVALID_COMMAND, consumed);
    }

    let name = args[0];
    if name.len() > NAME_MAX {
        return fail(reply::SEED_NAME_TOO_LONG, consumed);
    }
    if !name.iter().all(u8::is_ascii_alphanumeric) {
        return fail(reply::SEED_BAD_NAME, consumed);
    }
    let command = match verb {
        b"GET" => Command::SeedGet { name },
        b"DELETE" => Command::SeedDelete { name },
        _ => return set(buf, name, args[1], consumed, limits),
    };
    Parsed::Command { command, consumed }
}

/// The rest of a `SET` whose line (`consumed` bytes) named a valid `name`.
fn set<'a>(
    buf: &'a [u8],
    name: &'a [u8],
    size_token: &[u8],
    consumed: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let Some(size) = size(size_token, limits) else {
        return fail(reply::SEED_INVALID_SIZE, consumed);
    };
    let Some(data) = buf.get(consumed..consumed + size) else {
        return Parsed::Incomplete;
    };
    let mut end = consumed + size;
    if buf[end..].starts_with(b"\r\n") {
        end += 2;
    }
    Parsed::Command {
        command: Command::SeedSet { name, data },
        consumed: end,
    }
}

/// A `SET` size: decimal digits only, at least 1, at most the element size.
fn size(token: &[u8], limits: &Limits) -> Option<usize> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Saturating: a size too long for usize is simply too large.
    let size = token.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    (1..=limits.seed_element_size).contains(&size).then_some(size)
}

/// A seed error: reply, then close.
fn fail<'a>(reply: &'static [u8], consumed: usize) -> Parsed<'a> {
    Parsed::Error {
        reply,
        consumed,
        swallow: 0,
        close: true,
        unlink: None,
    }
}
