//! memcached's ASCII authentication (`-Y`): how a connection that has not
//! authenticated yet is read (proto_text.c `try_read_command_asciiauth`).
//!
//! ```text
//! set <any key> <any flags> <any exptime> <bytes>[ anything]\r\n
//! <user> <password>\r\n
//! ```
//!
//! Only the `set` word and `<bytes>` are looked at (so `noreply` is ignored);
//! any other line, a seed request included, is refused. The data block is read
//! whole before it is judged, and must end in `\r\n`. Its first two
//! space-separated words are the user and the password; further words are
//! ignored. As in memcached, the line and the data are C strings: a NUL ends them.
//!
//! The worker checks the credentials and answers `STORED` or
//! `CLIENT_ERROR authentication failure`; nothing is stored.

use super::text::{READ_BUFFER_SIZE, strtoul32};
use super::{LINE_MAX, reply};

/// What the front of an unauthenticated connection's buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// Not enough bytes yet.
    Incomplete,
    /// Hang up without a reply: a line over [`LINE_MAX`] bytes without a
    /// newline, or a data block larger than memcached's read buffer.
    Close,
    /// Answer `reply` and drop `consumed` bytes; still unauthenticated.
    Refused {
        reply: &'static [u8],
        consumed: usize,
    },
    /// A user and a password to check; `consumed` covers the line and the data.
    Credentials {
        user: &'a [u8],
        password: &'a [u8],
        consumed: usize,
    },
}

/// Read the request at the start of `buf` the way memcached reads it before
/// the connection has authenticated.
pub fn parse(buf: &[u8]) -> AuthRequest<'_> {
    // memcached waits for two bytes before it looks.
    if buf.len() < 2 {
        return AuthRequest::Incomplete;
    }
    let line_end = match buf.iter().position(|&b| b == b'\n') {
        Some(at) if at < READ_BUFFER_SIZE => at,
        None if buf.len() <= LINE_MAX => return AuthRequest::Incomplete,
        // No multiget exception here: any long line is junk.
        _ => return AuthRequest::Close,
    };
    let line_len = line_end + 1;
    // The `\r` stays: it ends `<bytes>` as whitespace would.
    let size = {
        let mut tokens = words(&buf[..line_end]);
        match (tokens.next(), tokens.nth(3)) {
            (Some(b"set"), Some(bytes)) => strtoul32(bytes),
            _ => None,
        }
    };
    let Some(size) = size else {
        return refused(reply::CLIENT_ERROR_UNAUTHENTICATED, line_len);
    };
    let data = &buf[line_len..];
    let needed = (size as usize).saturating_add(2);
    // memcached needs the whole block in its 16 KiB read buffer: a larger one
    // never completes, and it hangs up once the buffer is full.
    if needed > READ_BUFFER_SIZE && data.len() >= READ_BUFFER_SIZE {
        return AuthRequest::Close;
    }
    if data.len() < needed {
        return AuthRequest::Incomplete;
    }
    let consumed = line_len + needed;
    let (token, end) = data[..needed].split_at(size as usize);
    if end != b"\r\n" {
        return refused(reply::CLIENT_ERROR_BAD_TERMINATION, consumed);
    }
    let mut tokens = words(token);
    match (tokens.next(), tokens.next()) {
        (Some(user), Some(password)) => AuthRequest::Credentials {
            user,
            password,
            consumed,
        },
        _ => refused(reply::CLIENT_ERROR_BAD_AUTH_TOKEN, consumed),
    }
}

fn refused(reply: &'static [u8], consumed: usize) -> AuthRequest<'static> {
    AuthRequest::Refused { reply, consumed }
}

/// memcached's tokens of a C string: up to the first NUL, split on runs of spaces.
fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    text[..end].split(|&b| b == b' ').filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short name for what the parser made of a request; `/n` = bytes consumed.
    fn describe(parsed: &AuthRequest) -> String {
        match parsed {
            AuthRequest::Incomplete => "incomplete".into(),
            AuthRequest::Close => "close".into(),
            AuthRequest::Refused { reply, consumed } => {
                let name = match *reply {
                    reply::CLIENT_ERROR_UNAUTHENTICATED => "unauthenticated",
                    reply::CLIENT_ERROR_BAD_AUTH_TOKEN => "bad token",
                    reply::CLIENT_ERROR_BAD_TERMINATION => "bad end",
                    _ => "?",
                };
                format!("{name} /{consumed}")
            }
            AuthRequest::Credentials {
                user,
                password,
                consumed,
            } => format!(
                "{} {} /{consumed}",
                user.escape_ascii(),
                password.escape_ascii()
            ),
        }
    }

    /// (request, what it reads as). live: memcached 1.6.18 answers each the same way.
    #[test]
    fn requests() {
        let cases: &[(&[u8], &str)] = &[
            (b"set k 0 0 11\r\nuser secret\r\n", "user secret /27"),
            (b"set k 0 0 11\nuser secret\r\n", "user secret /26"),
            (b"set k abc xyz 11\r\nuser secret\r\n", "user secret /31"),
            (
                b"set k 0 0 11 noreply\r\nuser secret\r\n",
                "user secret /35",
            ),
            (b" set  k 0 0 +011\r\r\nuser secret\r\n", "user secret /32"),
            (b"set k 0 0 11\t\r\nuser secret\r\n", "user secret /28"),
            (b"set k 0 0 14\r\n  user  secret\r\n", "user secret /30"),
            (b"set k 0 0 17\r\nuser secret extra\r\n", "user secret /33"),
            (b"set k 0 0 12\r\nuser secret\0\r\n", "user secret /28"),
            (b"set k 0 0 5\r\na b:c\r\n", "a b:c /20"),
            // Refused lines: only the line is consumed.
            (b"get k\r\nset", "unauthenticated /7"),
            (b"\r\n", "unauthenticated /2"),
            (b"SET k 0 0 11\r\n", "unauthenticated /14"),
            (b"GET k\r\n", "unauthenticated /7"),
            (b"add k 0 0 11\r\n", "unauthenticated /14"),
            (b"set\tk 0 0 11\r\n", "unauthenticated /14"),
            (b"set k 0 0\r\n", "unauthenticated /11"),
            (b"set k 0 0 \r\n", "unauthenticated /12"),
            (b"set k 0 0 abc\r\n", "unauthenticated /15"),
            (b"set k 0 0 -1\r\n", "unauthenticated /14"),
            (b"set k 0 0 1x\r\n", "unauthenticated /14"),
            (b"set k 0 0\x0011\r\n", "unauthenticated /14"),
            // Bad data blocks: the line and the block are consumed.
            (b"set k 0 0 10\r\nusersecret\r\n", "bad token /26"),
            (b"set k 0 0 5\r\nuser \r\n", "bad token /20"),
            (b"set k 0 0 0\r\n\r\n", "bad token /15"),
            (b"set k 0 0 -0\r\n\r\n", "bad token /16"),
            // 2^32 is 0 once narrowed to 32 bits.
            (b"set k 0 0 4294967296\r\n\r\n", "bad token /24"),
            (b"set k 0 0 12\r\nuser \0secret\r\n", "bad token /28"),
            (b"set k 0 0 11\r\nuser secretXXget", "bad end /27"),
            (b"set k 0 0 11\r\nuser secret\n\n", "bad end /27"),
            // Waiting.
            (b"", "incomplete"),
            (b"\n", "incomplete"),
            (b"get k", "incomplete"),
            (b"set k 0 0 11\r\n", "incomplete"),
            (b"set k 0 0 11\r\nuser secret\r", "incomplete"),
        ];
        for (request, want) in cases {
            let got = describe(&parse(request));
            assert_eq!(got, *want, "{}", request.escape_ascii());
        }
    }

    #[test]
    fn long_lines_and_large_blocks() {
        let junk = vec![b'x'; LINE_MAX];
        assert_eq!(parse(&junk), AuthRequest::Incomplete);
        let junk = vec![b'x'; LINE_MAX + 1];
        assert_eq!(parse(&junk), AuthRequest::Close);
        // A multiget is no exception before authentication.
        let mut get = b"get ".to_vec();
        get.resize(3000, b'k');
        assert_eq!(parse(&get), AuthRequest::Close);
        // A long line that arrived whole is read.
        let mut line = b"set k 0 0 11 ".to_vec();
        line.resize(3000, b'x');
        line.extend_from_slice(b"\r\nuser secret\r\n");
        assert!(matches!(parse(&line), AuthRequest::Credentials { .. }));

        // The largest block that fits memcached's buffer, and one byte more.
        let block = |size: usize, have: usize| {
            let mut req = format!("set k 0 0 {size}\r\nuser secret").into_bytes();
            let head = req.len() - 11;
            req.resize(head + have, b' ');
            req
        };
        let mut fits = block(16382, 16382);
        fits.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&fits), AuthRequest::Credentials { .. }));
        assert_eq!(parse(&block(16383, 16383)), AuthRequest::Incomplete);
        assert_eq!(parse(&block(16383, 16384)), AuthRequest::Close);
        assert_eq!(parse(&block(16383, 16385)), AuthRequest::Close);
        // memcached 1.6.18 crashes on this one; we wait for the buffer to fill.
        assert_eq!(parse(&block(2147483647, 100)), AuthRequest::Incomplete);
        assert_eq!(parse(&block(2147483647, 16384)), AuthRequest::Close);
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let request = b"set k 0 0 11\r\nuser secret\r\n";
        for end in 0..request.len() {
            let prefix = &request[..end];
            assert_eq!(
                parse(prefix),
                AuthRequest::Incomplete,
                "{}",
                prefix.escape_ascii()
            );
        }
    }
}
