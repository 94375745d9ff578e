//! memcached's binary protocol, parsed and answered as memcached 1.6.18 does
//! (`proto_bin.c`, `protocol_binary.h`), quirks included.
//!
//! Every request and response is a 24-byte header (big-endian fields), then
//! extras, key and value:
//!
//! ```text
//! request:  magic 0x80 | opcode | key len (2) | extras len | datatype | vbucket (2)
//!           | body len (4) | opaque (4) | cas (8) | extras | key | value
//! response: magic 0x81 | opcode | key len (2) | extras len | datatype | status (2)
//!           | body len (4) | opaque (4) | cas (8) | extras | key | value
//! ```
//!
//! memcached reads the header, the extras and the key, then judges the request:
//! - a first byte other than 0x80, or a header, extras and key longer than its
//!   16 KiB read buffer, close the connection without a reply;
//! - a key or extras longer than the body: "Unknown command", then close;
//! - a key over 250 bytes, or extras/key/body lengths the opcode does not take:
//!   "Invalid arguments", then close;
//! - an unknown opcode (verbosity and the SASL ones included, SASL being off):
//!   "Unknown command", and the next `body len` bytes are swallowed (counted
//!   after the extras and key: memcached swallows that much too many);
//! - a storage command whose item would exceed `-I`: "Too large.", and its
//!   value is swallowed.
//!
//! Only storage commands carry a value; for every other opcode the request ends
//! after its key (the bytes of a longer body, which `stat`, `touch` and `gat`
//! let through, are read as the next request, as memcached reads them).
//! Nothing is allocated: a [`Request`] borrows from the read buffer.

use super::{KEY_MAX_LENGTH, Limits, StoreMode, text::item_too_large};

pub const HEADER_LEN: usize = 24;
/// memcached reads a header, its extras and its key into its 16 KiB read
/// buffer before it judges them: a header announcing more closes the
/// connection.
pub const LONGEST_HEADER: usize = super::text::READ_BUFFER_SIZE;
pub const REQUEST_MAGIC: u8 = 0x80;
pub const RESPONSE_MAGIC: u8 = 0x81;

/// The opcodes memcached 1.6.18 knows (`protocol_binary.h`).
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    /// Listed by the spec, not implemented by memcached: "Unknown command".
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes.
pub mod status {
    pub const SUCCESS: u16 = 0x00;
    pub const KEY_ENOENT: u16 = 0x01;
    pub const KEY_EEXISTS: u16 = 0x02;
    pub const E2BIG: u16 = 0x03;
    pub const EINVAL: u16 = 0x04;
    pub const NOT_STORED: u16 = 0x05;
    pub const DELTA_BADVAL: u16 = 0x06;
    pub const AUTH_ERROR: u16 = 0x20;
    pub const UNKNOWN_COMMAND: u16 = 0x81;
    pub const ENOMEM: u16 = 0x82;

    /// The body memcached sends with an error status (`write_bin_error`).
    pub fn message(status: u16) -> &'static [u8] {
        match status {
            KEY_ENOENT => b"Not found",
            KEY_EEXISTS => b"Data exists for key.",
            E2BIG => b"Too large.",
            EINVAL => b"Invalid arguments",
            NOT_STORED => b"Not stored.",
            DELTA_BADVAL => b"Non-numeric server-side value for incr or decr",
            AUTH_ERROR => b"Auth failure.",
            UNKNOWN_COMMAND => b"Unknown command",
            ENOMEM => b"Out of memory",
            _ => b"",
        }
    }
}

/// `incr`/`decr`'s expiration that means "do not create a missing counter".
pub const NO_CREATE: u32 = 0xffff_ffff;

/// The fields of a request header a response needs (in host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    fn read(buf: &[u8]) -> Header {
        Header {
            opcode: buf[1],
            key_len: u16::from_be_bytes([buf[2], buf[3]]),
            extras_len: buf[4],
            body_len: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            opaque: u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]),
            cas: u64::from_be_bytes([
                buf[16], buf[17], buf[18], buf[19], buf[20], buf[21], buf[22], buf[23],
            ]),
        }
    }
}

/// One request; `quiet` forms answer only errors (getq/getkq/gatq/gatkq: only
/// hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// get/getk/gat/gatk/touch and their quiet forms. `touch` holds the new
    /// expiration (gat, touch); `with_key` returns the key (getk, gatk);
    /// `with_value` is false for touch only.
    Get {
        key: &'a [u8],
        touch: Option<u32>,
        with_key: bool,
        with_value: bool,
        quiet: bool,
    },
    /// set/add/replace/append/prepend and quiet forms. A set/add/replace
    /// with a cas in its header is [`StoreMode::Cas`] (as in memcached,
    /// whatever the opcode); append/prepend carry `flags` 0 and `exptime` 0.
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: u32,
        value: &'a [u8],
        quiet: bool,
    },
    Delete {
        key: &'a [u8],
        quiet: bool,
    },
    /// incr (`incr`) or decr; a missing counter is created with `initial`
    /// unless `exptime` is [`NO_CREATE`].
    Arith {
        key: &'a [u8],
        incr: bool,
        delta: u64,
        initial: u64,
        exptime: u32,
        quiet: bool,
    },
    /// `delay` 0 = now.
    Flush {
        delay: u32,
        quiet: bool,
    },
    Noop,
    Version,
    /// `group` is the key: empty for the general stats.
    Stat {
        group: &'a [u8],
    },
    Quit {
        quiet: bool,
    },
}

/// What the parser made of the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Request {
        header: Header,
        request: Request<'a>,
        consumed: usize,
    },
    /// Read more, then call again with the same buffer start.
    Incomplete,
    /// memcached closes the connection at once, dropping the replies it had
    /// not sent yet: the first byte is not 0x80, or the header announces more
    /// extras and key than its read buffer holds ([`LONGEST_HEADER`]).
    Close,
    /// Answer `status` (with its message), drop `consumed` bytes, swallow
    /// `swallow` more, then close if `close`.
    Error {
        header: Header,
        status: u16,
        consumed: usize,
        swallow: usize,
        close: bool,
        /// A storage command refused as too large: memcached still counts its
        /// key's prefix in `stats detail`, and a set drops the old item.
        too_large: Option<TooLarge<'a>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge<'a> {
    pub key: &'a [u8],
    /// set/setq (and their cas form): the key's old item is removed.
    pub unlink: bool,
}

/// Parse the binary request at the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    use opcode::*;
    if buf.len() < HEADER_LEN {
        return Parsed::Incomplete;
    }
    if buf[0] != REQUEST_MAGIC {
        return Parsed::Close;
    }
    let header = Header::read(buf);
    let extras_len = usize::from(header.extras_len);
    let key_len = usize::from(header.key_len);
    let body_len = header.body_len as usize;
    let consumed = HEADER_LEN + extras_len + key_len;
    if consumed > LONGEST_HEADER {
        return Parsed::Close;
    }
    if buf.len() < consumed {
        return Parsed::Incomplete;
    }
    let error = |status, swallow, close| Parsed::Error {
        header,
        status,
        consumed,
        swallow,
        close,
        too_large: None,
    };
    if key_len + extras_len > body_len {
        return error(status::UNKNOWN_COMMAND, 0, true);
    }
    if key_len > KEY_MAX_LENGTH {
        return error(status::EINVAL, 0, true);
    }
    let extras = &buf[HEADER_LEN..HEADER_LEN + extras_len];
    let key = &buf[HEADER_LEN + extras_len..consumed];
    let value_len = body_len - key_len - extras_len;
    let quiet = matches!(
        header.opcode,
        SETQ | ADDQ
            | REPLACEQ
            | DELETEQ
            | INCREMENTQ
            | DECREMENTQ
            | QUITQ
            | FLUSHQ
            | APPENDQ
            | PREPENDQ
            | GETQ
            | GETKQ
            | GATQ
            | GATKQ
    );
    let no_body = extras_len == 0 && key_len == 0 && body_len == 0;
    let request = match header.opcode {
        VERSION if no_body => Request::Version,
        NOOP if no_body => Request::Noop,
        QUIT | QUITQ if no_body => Request::Quit { quiet },
        FLUSH | FLUSHQ if key_len == 0 && body_len == extras_len && matches!(extras_len, 0 | 4) => {
            Request::Flush {
                delay: if extras_len == 4 { be32(extras) } else { 0 },
                quiet,
            }
        }
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ if extras_len == 8 && key_len != 0 => {
            let flags = be32(&extras[..4]);
            let mode = match header.opcode {
                _ if header.cas != 0 => StoreMode::Cas,
                SET | SETQ => StoreMode::Set,
                ADD | ADDQ => StoreMode::Add,
                _ => StoreMode::Replace,
            };
            let unlink = matches!(header.opcode, SET | SETQ);
            let value = match value_of(buf, limits, header, key, flags, value_len, consumed, unlink)
            {
                Ok(value) => value,
                Err(parsed) => return parsed,
            };
            Request::Store {
                mode,
                key,
                flags,
                exptime: be32(&extras[4..]),
                value,
                quiet,
            }
        }
        APPEND | APPENDQ | PREPEND | PREPENDQ if key_len != 0 && extras_len == 0 => {
            let value = match value_of(buf, limits, header, key, 0, value_len, consumed, false) {
                Ok(value) => value,
                Err(parsed) => return parsed,
            };
            let mode = match header.opcode {
                APPEND | APPENDQ => StoreMode::Append,
                _ => StoreMode::Prepend,
            };
            Request::Store {
                mode,
                key,
                flags: 0,
                exptime: 0,
                value,
                quiet,
            }
        }
        GET | GETQ | GETK | GETKQ if extras_len == 0 && body_len == key_len && key_len != 0 => {
            Request::Get {
                key,
                touch: None,
                with_key: matches!(header.opcode, GETK | GETKQ),
                with_value: true,
                quiet,
            }
        }
        TOUCH | GAT | GATQ | GATK | GATKQ if extras_len == 4 && key_len != 0 => Request::Get {
            key,
            touch: Some(be32(extras)),
            with_key: matches!(header.opcode, GATK | GATKQ),
            with_value: header.opcode != TOUCH,
            quiet,
        },
        DELETE | DELETEQ if key_len != 0 && extras_len == 0 && body_len == key_len => {
            Request::Delete { key, quiet }
        }
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ
            if key_len != 0 && extras_len == 20 && body_len == key_len + extras_len =>
        {
            Request::Arith {
                key,
                incr: matches!(header.opcode, INCREMENT | INCREMENTQ),
                delta: be64(&extras[..8]),
                initial: be64(&extras[8..16]),
                exptime: be32(&extras[16..]),
                quiet,
            }
        }
        STAT if extras_len == 0 => Request::Stat { group: key },
        // SASL is off: memcached refuses the well-formed ones as unknown and
        // swallows their data.
        SASL_LIST_MECHS if no_body => return error(status::UNKNOWN_COMMAND, 0, false),
        SASL_AUTH | SASL_STEP if extras_len == 0 && key_len != 0 => {
            return error(status::UNKNOWN_COMMAND, body_len - key_len, false);
        }
        VERSION | NOOP | QUIT | QUITQ | FLUSH | FLUSHQ | SET | SETQ | ADD | ADDQ | REPLACE
        | REPLACEQ | APPEND | APPENDQ | PREPEND | PREPENDQ | GET | GETQ | GETK | GETKQ | TOUCH
        | GAT | GATQ | GATK | GATKQ | DELETE | DELETEQ | INCREMENT | INCREMENTQ | DECREMENT
        | DECREMENTQ | STAT | SASL_LIST_MECHS | SASL_AUTH | SASL_STEP => {
            return error(status::EINVAL, 0, true);
        }
        _ => return error(status::UNKNOWN_COMMAND, body_len, false),
    };
    let consumed = match request {
        Request::Store { value, .. } => consumed + value.len(),
        _ => consumed,
    };
    Parsed::Request {
        header,
        request,
        consumed,
    }
}

/// A storage command's value, once it has all arrived; a value too large for
/// `-I` is refused at once (memcached swallows it as it comes).
#[allow(clippy::too_many_arguments)]
fn value_of<'a>(
    buf: &'a [u8],
    limits: &Limits,
    header: Header,
    key: &'a [u8],
    flags: u32,
    value_len: usize,
    consumed: usize,
    unlink: bool,
) -> Result<&'a [u8], Parsed<'a>> {
    if item_too_large(limits, key.len(), flags, value_len) {
        return Err(Parsed::Error {
            header,
            status: status::E2BIG,
            consumed,
            swallow: value_len,
            close: false,
            too_large: Some(TooLarge { key, unlink }),
        });
    }
    buf.get(consumed..consumed + value_len)
        .ok_or(Parsed::Incomplete)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Append one response: header, then `extras`, `key` and `value`.
pub fn response(
    out: &mut Vec<u8>,
    opcode: u8,
    status: u16,
    opaque: u32,
    cas: u64,
    body: [&[u8]; 3],
) {
    let [extras, key, value] = body;
    let body_len = extras.len() + key.len() + value.len();
    out.reserve(HEADER_LEN + body_len);
    out.push(RESPONSE_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0); // datatype: raw bytes
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// A success response to `header` with no body.
pub fn success(out: &mut Vec<u8>, header: &Header, cas: u64) {
    response(
        out,
        header.opcode,
        status::SUCCESS,
        header.opaque,
        cas,
        [&[]; 3],
    );
}

/// An error response with memcached's message for `status`.
pub fn error(out: &mut Vec<u8>, header: &Header, status: u16) {
    error_with(out, header, status, status::message(status));
}

/// An error response with its own message (memcached's out-of-memory texts).
pub fn error_with(out: &mut Vec<u8>, header: &Header, status: u16, message: &[u8]) {
    response(
        out,
        header.opcode,
        status,
        header.opaque,
        0,
        [&[], &[], message],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text::tests::LIMITS;

    fn request(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
        let mut b = vec![REQUEST_MAGIC, opcode];
        b.extend_from_slice(&(key.len() as u16).to_be_bytes());
        b.push(extras.len() as u8);
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&cas.to_be_bytes());
        b.extend_from_slice(extras);
        b.extend_from_slice(key);
        b.extend_from_slice(value);
        b
    }

    #[test]
    fn waits_for_the_whole_request() {
        let set = request(opcode::SET, &[0; 8], b"k", b"value", 0);
        for cut in 0..set.len() {
            assert_eq!(
                parse(&set[..cut], &LIMITS),
                Parsed::Incomplete,
                "cut at {cut}"
            );
        }
        match parse(&set, &LIMITS) {
            Parsed::Request {
                request: Request::Store { value, key, .. },
                consumed,
                ..
            } => {
                assert_eq!(
                    (key, value, consumed),
                    (&b"k"[..], &b"value"[..], set.len())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn judges_lengths_as_memcached() {
        let cases: &[(Vec<u8>, u16, bool)] = &[
            (request(opcode::GET, &[], b"", b"", 0), status::EINVAL, true),
            (
                request(opcode::GET, &[1], b"k", b"", 0),
                status::EINVAL,
                true,
            ),
            (
                request(opcode::SET, &[0; 4], b"k", b"", 0),
                status::EINVAL,
                true,
            ),
            (
                request(opcode::NOOP, &[], b"k", b"", 0),
                status::EINVAL,
                true,
            ),
            (
                request(opcode::INCREMENT, &[0; 8], b"k", b"", 0),
                status::EINVAL,
                true,
            ),
            (
                request(opcode::GET, &[], &[b'k'; 251], b"", 0),
                status::EINVAL,
                true,
            ),
            (
                request(opcode::VERBOSITY, &[0; 4], b"", b"", 0),
                status::UNKNOWN_COMMAND,
                false,
            ),
            (
                request(0xff, &[], b"", b"", 0),
                status::UNKNOWN_COMMAND,
                false,
            ),
        ];
        for (bytes, want, close) in cases {
            match parse(bytes, &LIMITS) {
                Parsed::Error {
                    status, close: c, ..
                } => {
                    assert_eq!((status, c), (*want, *close), "{bytes:02x?}")
                }
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
        // A key longer than the body: unknown command, then close.
        let mut lying = request(opcode::GET, &[], b"abc", b"", 0);
        lying[11] = 2;
        assert!(matches!(
            parse(&lying, &LIMITS),
            Parsed::Error {
                status: status::UNKNOWN_COMMAND,
                close: true,
                ..
            }
        ));
        assert_eq!(parse(&[0x81; 24], &LIMITS), Parsed::Close);
        // memcached's 16 KiB read buffer must hold the header, extras and key.
        let long = request(opcode::GET, &[], &[b'k'; 16360], b"", 0);
        assert!(matches!(
            parse(&long, &LIMITS),
            Parsed::Error {
                status: status::EINVAL,
                close: true,
                ..
            }
        ));
        let longer = request(opcode::GET, &[], &[b'k'; 16361], b"", 0);
        assert_eq!(parse(&longer[..24], &LIMITS), Parsed::Close);
    }

    #[test]
    fn swallows_too_large_values_without_waiting_for_them() {
        let mut set = request(opcode::SETQ, &[0; 8], b"k", b"", 0);
        let body = 8 + 1 + 2_000_000u32;
        set[8..12].copy_from_slice(&body.to_be_bytes());
        match parse(&set, &LIMITS) {
            Parsed::Error {
                status: status::E2BIG,
                consumed,
                swallow,
                too_large: Some(TooLarge { unlink: true, .. }),
                ..
            } => assert_eq!((consumed, swallow), (set.len(), 2_000_000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_opcodes_swallow_the_whole_body_after_the_key() {
        let bytes = request(0x30, &[], b"abc", b"xyz", 0);
        match parse(&bytes, &LIMITS) {
            Parsed::Error {
                consumed, swallow, ..
            } => assert_eq!((consumed, swallow), (27, 6)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renders_a_response_header() {
        let mut out = Vec::new();
        let header = Header::read(&request(opcode::GETK, &[], b"key", b"", 0));
        response(
            &mut out,
            header.opcode,
            0,
            header.opaque,
            9,
            [b"\0\0\0\x05", b"key", b"v"],
        );
        assert_eq!(
            out,
            b"\x81\x0c\x00\x03\x04\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00\x07\
              \x00\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x05keyv"
        );
    }
}
