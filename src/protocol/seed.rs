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
    (1..=limits.seed_element_size)
        .contains(&size)
        .then_some(size)
}

/// A seed error: reply, then close.
fn fail<'a>(reply: &'static [u8], consumed: usize) -> Parsed<'a> {
    Parsed::Error {
        reply,
        consumed,
        swallow: 0,
        close: true,
        unlink: None,
        refused: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text::tests::{LIMITS, XorShift, describe};

    fn check(cases: &[(&[u8], &str)]) {
        let mut failures = Vec::new();
        for (request, expected) in cases {
            let got = describe(&parse(request, &LIMITS));
            if got != *expected {
                failures.push(format!(
                    "request '{}'\n   want {expected}\n    got {got}",
                    request.escape_ascii()
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn recognises_the_seed_words() {
        let cases: &[(&[u8], bool)] = &[
            (b"SET a 1\r\n", true),
            (b"GET a\r\n", true),
            (b"DELETE a\r\n", true),
            (b"GET\ta\r\n", true),
            (b"GET\r\n", true),
            (b"GET\n", true),
            (b"GET", true),
            // Still only the start of a seed word: the seed parser waits.
            (b"GE", true),
            (b"D", true),
            (b"DELET", true),
            (b"", false),
            (b"GETS a\r\n", false),
            (b"DELETEX\r\n", false),
            (b"SETTINGS\r\n", false),
            (b" GET a\r\n", false),
            (b"get a\r\n", false),
            (b"Get a\r\n", false),
            (b"G\r\n", false),
        ];
        for (buf, seed) in cases {
            assert_eq!(is_seed_request(buf), *seed, "'{}'", buf.escape_ascii());
        }
    }

    #[test]
    fn requests() {
        check(&[
            (b"SET name 5\r\nhello\r\n", "SET 'name' 'hello' +19"),
            (b"SET name 5\r\nhello", "SET 'name' 'hello' +17"),
            // A lone `\r` after the data is left: the connection closes anyway.
            (b"SET name 5\r\nhello\r", "SET 'name' 'hello' +17"),
            (b"SET name 5\r\nhelloGET", "SET 'name' 'hello' +17"),
            (b"SET name 5\nhello\r\n", "SET 'name' 'hello' +18"),
            (b"SET\tname \t 5 \r\nhello\r\n", "SET 'name' 'hello' +22"),
            (b"SET name 1000\r\n", "incomplete"),
            (b"SET name 5\r\nhell", "incomplete"),
            (b"SET name 5", "incomplete"),
            (b"GET name\r\n", "GET 'name' +10"),
            (b"GET name\n", "GET 'name' +9"),
            (b"GET  name \r\n", "GET 'name' +12"),
            (b"GET Az09\r\n", "GET 'Az09' +10"),
            (b"DELETE name\r\n", "DELETE 'name' +13"),
            (b"GET name", "incomplete"),
            (b"GE", "incomplete"),
        ]);
    }

    #[test]
    fn errors_close_the_connection() {
        let long = [b'a'; 121];
        let longest = [b'a'; 120];
        let owned: Vec<(Vec<u8>, String)> = vec![
            (
                [b"GET ", &long[..], b"\r\n"].concat(),
                r"error 'ERR NAME_TOO_LONG\r\n' +127 close".into(),
            ),
            (
                [b"GET ", &longest[..], b"\r\n"].concat(),
                format!("GET '{}' +126", longest.escape_ascii()),
            ),
            // Name length before name bytes, name before size.
            (
                [b"SET ", &long[..], b"- x\r\n"].concat(),
                r"error 'ERR NAME_TOO_LONG\r\n' +130 close".into(),
            ),
            (
                vec![b'G'; 2049],
                r"error 'ERR INVALID_COMMAND\r\n' +2049 close".into(),
            ),
        ];
        let mut cases: Vec<(&[u8], &str)> = vec![
            (b"GET\r\n", r"error 'ERR INVALID_COMMAND\r\n' +5 close"),
            (b"GET a b\r\n", r"error 'ERR INVALID_COMMAND\r\n' +9 close"),
            (b"DELETE\r\n", r"error 'ERR INVALID_COMMAND\r\n' +8 close"),
            (
                b"DELETE a 1\r\n",
                r"error 'ERR INVALID_COMMAND\r\n' +12 close",
            ),
            (b"SET a\r\n", r"error 'ERR INVALID_COMMAND\r\n' +7 close"),
            (
                b"SET a 1 2\r\n",
                r"error 'ERR INVALID_COMMAND\r\n' +11 close",
            ),
            (b"SET\r\n", r"error 'ERR INVALID_COMMAND\r\n' +5 close"),
            (b"GET a-b\r\n", r"error 'ERR BAD_NAME\r\n' +9 close"),
            (b"GET a\rb\r\n", r"error 'ERR BAD_NAME\r\n' +9 close"),
            (b"GET \xc3\xa9\r\n", r"error 'ERR BAD_NAME\r\n' +8 close"),
            (b"SET a_b x\r\n", r"error 'ERR BAD_NAME\r\n' +11 close"),
            (b"SET a x\r\n", r"error 'ERR INVALID_SIZE\r\n' +9 close"),
            (b"SET a 0\r\n", r"error 'ERR INVALID_SIZE\r\n' +9 close"),
            (b"SET a -1\r\n", r"error 'ERR INVALID_SIZE\r\n' +10 close"),
            (b"SET a +1\r\n", r"error 'ERR INVALID_SIZE\r\n' +10 close"),
            (b"SET a 1x\r\n", r"error 'ERR INVALID_SIZE\r\n' +10 close"),
            (b"SET a 1001\r\n", r"error 'ERR INVALID_SIZE\r\n' +12 close"),
            (
                b"SET a 99999999999999999999999999\r\n",
                r"error 'ERR INVALID_SIZE\r\n' +34 close",
            ),
        ];
        cases.extend(owned.iter().map(|(r, e)| (&r[..], e.as_str())));
        check(&cases);
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        let words: &[&[u8]] = &[
            b"SET", b"GET", b"DELETE", b"a", b"1", b"5", b" ", b"\t", b"\r\n",
        ];
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            for _ in 0..rng.below(12) {
                if rng.below(3) == 0 {
                    buf.push(rng.next() as u8);
                } else {
                    buf.extend_from_slice(words[rng.below(words.len())]);
                }
            }
            match parse(&buf, &LIMITS) {
                Parsed::Command { consumed, .. } | Parsed::Error { consumed, .. } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                }
                Parsed::Incomplete => {}
            }
        }
    }
}
