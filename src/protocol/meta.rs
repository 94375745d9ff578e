//! memcached's meta commands (`mg ms md ma mn me`), parsed as memcached 1.6.18
//! parses them (`proto_text.c`: `process_m*_command`, `_meta_flag_preparse`).
//!
//! ```text
//! mg <key> <flag>*\r\n
//! ms <key> <datalen> <flag>*\r\n<data>\r\n
//! md <key> <flag>*\r\n
//! ma <key> <flag>*\r\n
//! mn\r\n
//! me <key> [b]\r\n
//! ```
//!
//! A flag is one character, some followed by a token (`T30`, `Oabc`). The
//! parser checks them all up front (duplicates, unknown flags, numbers) and
//! keeps the flag tokens as sent: the reply echoes them in request order, so
//! the worker walks them again while it renders. Errors are sent whatever `q`
//! says. An `ms` refused after its length was read has its data swallowed;
//! one refused before (bad length, key too long, too many tokens) leaves the
//! data to be read as a command, as memcached does.
//!
//! A base64 key (`b`) stays encoded here (the buffer is not ours to decode
//! into); [`decode_key`] decodes it onto the caller's stack.

use super::text::{item_too_large, strtol32, strtoul32, strtoull};
use super::{Command, KEY_MAX_LENGTH, Limits, Parsed, Refusal, Refused, reply};

/// `MFLAG_MAX_OPT_LENGTH`: memcached's token count (its terminal token
/// included) may not exceed this, so a command, its key and 17 more tokens.
const MAX_OPT_TOKENS: usize = 20;
/// `MFLAG_MAX_OPAQUE_LENGTH`: an `O` token longer than this (with its `O`) is refused.
pub const MAX_OPAQUE_LENGTH: usize = 32;
/// memcached's tokenizer stops after this many tokens (`MAX_TOKENS` 24 minus
/// the terminal one).
const MAX_TOKENS: usize = 23;
/// Room for any decoded key (at most 3/4 of a 250-byte encoded one).
pub const DECODED_KEY_MAX: usize = KEY_MAX_LENGTH;

pub const CLIENT_ERROR_DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
pub const CLIENT_ERROR_INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
pub const CLIENT_ERROR_BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
pub const CLIENT_ERROR_DECODING_KEY: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
pub const CLIENT_ERROR_M_LENGTH: &[u8] = b"CLIENT_ERROR incorrect length for M token\r\n";
pub const CLIENT_ERROR_INITIAL: &[u8] = b"CLIENT_ERROR invalid numeric initial value\r\n";
pub const CLIENT_ERROR_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta value\r\n";
pub const CLIENT_ERROR_OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
/// `mg` says "are"; `ms`, `md` and `ma` do not.
pub const CLIENT_ERROR_MG_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags are too long\r\n";
pub const CLIENT_ERROR_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags too long\r\n";
/// `md` and `ma` answer every flag error with this one.
pub const CLIENT_ERROR_INVALID_OR_DUPLICATE: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
pub const CLIENT_ERROR_MS_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
pub const CLIENT_ERROR_MA_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";

/// Which meta command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Get,
    Set,
    Delete,
    Arith,
    /// `mn`
    Noop,
    /// `me`
    Debug,
}

/// The flags of one meta command, as `_meta_flag_preparse` reads them.
/// Numbers are kept as sent (relative exptimes are made absolute by the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaFlags {
    /// `b`: the key is base64.
    pub binary: bool,
    /// `q`
    pub quiet: bool,
    /// `u`
    pub no_update: bool,
    /// `v`
    pub value: bool,
    /// `I`
    pub invalidate: bool,
    /// `N<ttl>`
    pub vivify: Option<i32>,
    /// `T<ttl>`
    pub ttl: Option<i32>,
    /// `R<ttl>`
    pub recache: Option<i32>,
    /// `F<flags>`
    pub client_flags: u32,
    /// `C<cas>`
    pub cas: Option<u64>,
    /// `M<mode>`: the mode character.
    pub mode: Option<u8>,
    /// `D<delta>` (1 unless given).
    pub delta: u64,
    /// `J<initial>`
    pub initial: u64,
}

impl Default for MetaFlags {
    fn default() -> Self {
        MetaFlags {
            binary: false,
            quiet: false,
            no_update: false,
            value: false,
            invalidate: false,
            vivify: None,
            ttl: None,
            recache: None,
            client_flags: 0,
            cas: None,
            mode: None,
            delta: 1,
            initial: 0,
        }
    }
}

/// One meta command, borrowing from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    pub kind: MetaKind,
    /// The key as sent (base64 when `flags.binary`; see [`decode_key`]).
    pub key: &'a [u8],
    /// The flag tokens as sent, for rendering in request order ([`tokens`]).
    pub tokens: &'a [u8],
    pub flags: MetaFlags,
    /// `ms`'s data block, without its `\r\n`.
    pub data: &'a [u8],
    /// The whole request (line and data block), for re-rendering it.
    pub request: &'a [u8],
}

/// The flag tokens of `list` (split on runs of spaces).
pub fn tokens(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// The key to look up: `key` itself, or its base64 decoding written into `buf`.
/// A key the parser accepted always decodes.
pub fn decode_key<'k>(key: &'k [u8], binary: bool, buf: &'k mut [u8; DECODED_KEY_MAX]) -> &'k [u8] {
    if !binary {
        return key;
    }
    let n = base64_decode(key, buf).unwrap_or(0);
    &buf[..n]
}

/// Parse a meta command; `line` is the request line (no `\r\n`, cut at a
/// NUL), `consumed` the bytes up to and including its `\n`.
pub(super) fn parse<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    consumed: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let mut all: [&[u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
    let mut count = 0;
    for t in tokens(line).take(MAX_TOKENS) {
        all[count] = t;
        count += 1;
    }
    let toks = &all[..count];
    let p = Line {
        buf,
        line,
        toks,
        consumed,
    };
    match toks[0][1] {
        b'g' => p.get(),
        b's' => p.set(limits),
        b'd' => p.delete_or_arith(MetaKind::Delete),
        b'a' => p.delete_or_arith(MetaKind::Arith),
        b'n' => p.done(
            MetaKind::Noop,
            &[],
            &[],
            MetaFlags::default(),
            &[],
            consumed,
        ),
        b'e' => p.debug(),
        _ => error(reply::ERROR, consumed, 0),
    }
}

struct Line<'a, 't> {
    buf: &'a [u8],
    line: &'a [u8],
    toks: &'t [&'a [u8]],
    consumed: usize,
}

/// What `_meta_flag_preparse` found wrong.
struct FlagError(&'static [u8]);

impl<'a> Line<'a, '_> {
    /// memcached's token count, terminal token included.
    fn ntokens(&self) -> usize {
        self.toks.len() + 1
    }

    /// The line after token `i`.
    fn after(&self, i: usize) -> &'a [u8] {
        let t = self.toks[i];
        let start = t.as_ptr() as usize - self.line.as_ptr() as usize + t.len();
        &self.line[start..]
    }

    fn done(
        &self,
        kind: MetaKind,
        key: &'a [u8],
        tokens: &'a [u8],
        flags: MetaFlags,
        data: &'a [u8],
        consumed: usize,
    ) -> Parsed<'a> {
        Parsed::Command {
            command: Command::Meta(Meta {
                kind,
                key,
                tokens,
                flags,
                data,
                request: &self.buf[..consumed],
            }),
            consumed,
        }
    }

    fn err(&self, reply: &'static [u8]) -> Parsed<'a> {
        error(reply, self.consumed, 0)
    }

    /// `mg <key> <flag>*`
    fn get(&self) -> Parsed<'a> {
        if self.ntokens() < 3 {
            return self.err(reply::ERROR);
        }
        let key = self.toks[1];
        if key.len() > KEY_MAX_LENGTH {
            return self.err(reply::CLIENT_ERROR_BAD_FORMAT);
        }
        if self.ntokens() > MAX_OPT_TOKENS {
            return self.err(CLIENT_ERROR_MG_TOO_LONG);
        }
        match preparse(key, &self.toks[2..]) {
            Ok(flags) => self.done(MetaKind::Get, key, self.after(1), flags, &[], self.consumed),
            Err(FlagError(e)) => self.err(e),
        }
    }

    /// `md <key> <flag>*` and `ma <key> <flag>*`.
    fn delete_or_arith(&self, kind: MetaKind) -> Parsed<'a> {
        if self.ntokens() < 3 {
            return self.err(reply::ERROR);
        }
        let key = self.toks[1];
        if key.len() > KEY_MAX_LENGTH {
            return self.err(reply::CLIENT_ERROR_BAD_FORMAT);
        }
        if self.ntokens() > MAX_OPT_TOKENS {
            return self.err(CLIENT_ERROR_TOO_LONG);
        }
        let Ok(flags) = preparse(key, &self.toks[2..]) else {
            return self.err(CLIENT_ERROR_INVALID_OR_DUPLICATE);
        };
        if kind == MetaKind::Delete && opaque_too_long(&self.toks[2..]) {
            return self.err(CLIENT_ERROR_OPAQUE_TOO_LONG);
        }
        if kind == MetaKind::Arith && !matches!(flags.mode, None | Some(b'I' | b'+' | b'D' | b'-'))
        {
            return self.err(CLIENT_ERROR_MA_MODE);
        }
        self.done(kind, key, self.after(1), flags, &[], self.consumed)
    }

    /// `me <key> [b]`: anything after `b` is ignored, and so is anything
    /// but a lone `b` in its place.
    fn debug(&self) -> Parsed<'a> {
        if self.ntokens() < 3 || self.toks[1].len() > KEY_MAX_LENGTH {
            return self.err(reply::CLIENT_ERROR_BAD_FORMAT);
        }
        let key = self.toks[1];
        let binary = self.ntokens() >= 4 && self.toks[2] == b"b";
        if binary && base64_decode(key, &mut [0; DECODED_KEY_MAX]).is_none() {
            return self.err(reply::CLIENT_ERROR_BAD_FORMAT);
        }
        let flags = MetaFlags {
            binary,
            ..MetaFlags::default()
        };
        self.done(MetaKind::Debug, key, &[], flags, &[], self.consumed)
    }

    /// `ms <key> <datalen> <flag>*\r\n<data>\r\n`
    fn set(&self, limits: &Limits) -> Parsed<'a> {
        if self.ntokens() < 3 {
            return self.err(reply::ERROR);
        }
        let key = self.toks[1];
        if key.len() > KEY_MAX_LENGTH || self.ntokens() == 3 {
            return self.err(reply::CLIENT_ERROR_BAD_FORMAT);
        }
        if self.ntokens() > MAX_OPT_TOKENS {
            return self.err(CLIENT_ERROR_TOO_LONG);
        }
        let vlen = match strtol32(self.toks[2]) {
            Some(v) if (0..=i32::MAX - 2).contains(&v) => v as usize,
            _ => return self.err(reply::CLIENT_ERROR_BAD_FORMAT),
        };
        // From here on an error swallows the data block.
        let swallow = vlen + 2;
        let flag_tokens = &self.toks[3..];
        let flags = match preparse(key, flag_tokens) {
            Ok(flags) => flags,
            Err(FlagError(e)) => return error(e, self.consumed, swallow),
        };
        // memcached notes a too-long opaque, then checks the mode, whose
        // error wins.
        if !matches!(flags.mode, None | Some(b'E' | b'A' | b'P' | b'R' | b'S')) {
            return error(CLIENT_ERROR_MS_MODE, self.consumed, swallow);
        }
        if opaque_too_long(flag_tokens) {
            return error(CLIENT_ERROR_OPAQUE_TOO_LONG, self.consumed, swallow);
        }
        let mut decoded = [0; DECODED_KEY_MAX];
        let real_key = decode_key(key, flags.binary, &mut decoded);
        if item_too_large(limits, real_key.len(), flags.client_flags, vlen) {
            return Parsed::Error {
                reply: reply::SERVER_ERROR_TOO_LARGE,
                consumed: self.consumed,
                swallow,
                close: false,
                // memcached drops the old value whatever the mode. A base64
                // key is left alone (the worker would unlink its encoding).
                unlink: (!flags.binary).then_some(key),
                refused: Some(Refused {
                    key,
                    nbytes: vlen,
                    why: Refusal::TooLarge,
                }),
            };
        }
        let end = self.consumed + swallow;
        let Some(block) = self.buf.get(self.consumed..end) else {
            return Parsed::Incomplete;
        };
        let (data, terminator) = block.split_at(vlen);
        if terminator != b"\r\n" {
            return Parsed::Error {
                reply: reply::CLIENT_ERROR_BAD_DATA_CHUNK,
                consumed: end,
                swallow: 0,
                close: false,
                unlink: None,
                refused: Some(Refused {
                    key,
                    nbytes: vlen,
                    why: Refusal::BadDataChunk,
                }),
            };
        }
        self.done(MetaKind::Set, key, self.after(2), flags, data, end)
    }
}

fn error<'a>(reply: &'static [u8], consumed: usize, swallow: usize) -> Parsed<'a> {
    Parsed::Error {
        reply,
        consumed,
        swallow,
        close: false,
        unlink: None,
        refused: None,
    }
}

/// An `O` token over [`MAX_OPAQUE_LENGTH`] among `flags`.
pub fn opaque_too_long(flags: &[&[u8]]) -> bool {
    flags
        .iter()
        .any(|t| t[0] == b'O' && t.len() > MAX_OPAQUE_LENGTH)
}

/// memcached's `_meta_flag_preparse`: a duplicate or unknown flag stops at
/// once; other errors are noted and the last one noted is reported.
fn preparse(key: &[u8], flags: &[&[u8]]) -> Result<MetaFlags, FlagError> {
    let mut seen = [false; 127];
    let mut of = MetaFlags::default();
    let mut error: Option<&'static [u8]> = None;
    let mut failed = false;
    for t in flags {
        let o = t[0];
        if o >= 127 || seen[o as usize] {
            return Err(FlagError(CLIENT_ERROR_DUPLICATE_FLAG));
        }
        seen[o as usize] = true;
        let arg = &t[1..];
        let mut note = |e: Option<&'static [u8]>| {
            failed = true;
            if e.is_some() {
                error = e;
            }
        };
        match o {
            b'b' => {
                if base64_decode(key, &mut [0; DECODED_KEY_MAX]).is_none() {
                    note(Some(CLIENT_ERROR_DECODING_KEY));
                }
                of.binary = true;
            }
            b'N' => match strtol32(arg) {
                Some(v) => of.vivify = Some(v),
                None => note(Some(CLIENT_ERROR_BAD_TOKEN)),
            },
            b'T' => match strtol32(arg) {
                Some(v) => of.ttl = Some(v),
                None => note(Some(CLIENT_ERROR_BAD_TOKEN)),
            },
            b'R' => match strtol32(arg) {
                Some(v) => of.recache = Some(v),
                None => note(Some(CLIENT_ERROR_BAD_TOKEN)),
            },
            b'l' | b'h' | b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' => {}
            b'v' => of.value = true,
            b'u' => of.no_update = true,
            b'q' => of.quiet = true,
            // memcached leaves the message as it was.
            b'F' => match strtoul32(arg) {
                Some(v) => of.client_flags = v,
                None => note(None),
            },
            b'C' => match strtoull(arg) {
                Some(v) => of.cas = Some(v),
                None => note(Some(CLIENT_ERROR_BAD_TOKEN)),
            },
            b'M' => {
                if t.len() != 2 {
                    note(Some(CLIENT_ERROR_M_LENGTH));
                } else {
                    of.mode = Some(t[1]);
                }
            }
            b'J' => match strtoull(arg) {
                Some(v) => of.initial = v,
                None => note(Some(CLIENT_ERROR_INITIAL)),
            },
            b'D' => match strtoull(arg) {
                Some(v) => of.delta = v,
                None => note(Some(CLIENT_ERROR_DELTA)),
            },
            b'I' => of.invalidate = true,
            _ => return Err(FlagError(CLIENT_ERROR_INVALID_FLAG)),
        }
    }
    if failed {
        Err(FlagError(error.unwrap_or(reply::CLIENT_ERROR_BAD_FORMAT)))
    } else {
        Ok(of)
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A base64 character's value; `=` is 0; `None` for bytes the decoder skips.
fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// memcached's `base64_decode` (base64.c): bytes outside the alphabet are
/// skipped, the rest must come in groups of four, padding ends the input.
/// `None` where memcached returns 0 (nothing decoded counts as a failure).
pub fn base64_decode(src: &[u8], out: &mut [u8; DECODED_KEY_MAX]) -> Option<usize> {
    let count = src.iter().filter(|&&b| base64_value(b).is_some()).count();
    if count == 0 || count % 4 != 0 || count / 4 * 3 > out.len() {
        return None;
    }
    let mut pos = 0;
    let mut block = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    for &b in src {
        let Some(v) = base64_value(b) else { continue };
        if b == b'=' {
            pad += 1;
        }
        block[n] = v;
        n += 1;
        if n == 4 {
            out[pos] = (block[0] << 2) | (block[1] >> 4);
            out[pos + 1] = (block[1] << 4) | (block[2] >> 2);
            out[pos + 2] = (block[2] << 6) | block[3];
            pos += 3;
            n = 0;
            if pad > 0 {
                match pad {
                    1 => pos -= 1,
                    2 => pos -= 2,
                    _ => return None,
                }
                break;
            }
        }
    }
    (pos > 0).then_some(pos)
}

/// memcached's `base64_encode`, appended to `out`.
pub fn base64_encode(src: &[u8], out: &mut Vec<u8>) {
    let sym = |i: u8| BASE64[i as usize];
    let mut chunks = src.chunks_exact(3);
    for c in &mut chunks {
        out.extend_from_slice(&[
            sym(c[0] >> 2),
            sym(((c[0] & 0x03) << 4) | (c[1] >> 4)),
            sym(((c[1] & 0x0f) << 2) | (c[2] >> 6)),
            sym(c[2] & 0x3f),
        ]);
    }
    match *chunks.remainder() {
        [a] => out.extend_from_slice(&[sym(a >> 2), sym((a & 0x03) << 4), b'=', b'=']),
        [a, b] => out.extend_from_slice(&[
            sym(a >> 2),
            sym(((a & 0x03) << 4) | (b >> 4)),
            sym((b & 0x0f) << 2),
            b'=',
        ]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text::tests::LIMITS;
    use crate::protocol::{self, Command, Parsed};

    /// `kind 'key' flags-as-debug +consumed swallow`, or the error.
    fn describe(request: &[u8]) -> String {
        match protocol::parse(request, &LIMITS) {
            Parsed::Command {
                command: Command::Meta(m),
                consumed,
            } => format!(
                "{:?} '{}' '{}' '{}' +{consumed}",
                m.kind,
                m.key.escape_ascii(),
                m.tokens.escape_ascii(),
                m.data.escape_ascii()
            ),
            Parsed::Error {
                reply,
                consumed,
                swallow,
                ..
            } => format!(
                "error '{}' +{consumed} swallow {swallow}",
                reply.escape_ascii()
            ),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn errors_as_memcached() {
        // live: memcached 1.6.18
        let cases: &[(&[u8], &str)] = &[
            (b"mg\r\n", r"error 'ERROR\r\n' +4 swallow 0"),
            (b"mx k\r\n", r"error 'ERROR\r\n' +6 swallow 0"),
            (b"mn junk\r\n", "Noop '' '' '' +9"),
            (
                b"mg k v v\r\n",
                r"error 'CLIENT_ERROR duplicate flag\r\n' +10 swallow 0",
            ),
            (
                b"mg k x\r\n",
                r"error 'CLIENT_ERROR invalid flag\r\n' +8 swallow 0",
            ),
            (
                b"mg k \x80\r\n",
                r"error 'CLIENT_ERROR duplicate flag\r\n' +8 swallow 0",
            ),
            (
                b"mg k b Tx\r\n",
                r"error 'CLIENT_ERROR bad token in command line format\r\n' +11 swallow 0",
            ),
            (
                b"mg foo Tx b\r\n",
                r"error 'CLIENT_ERROR error decoding key\r\n' +13 swallow 0",
            ),
            (
                b"ms k 2 Fx T1\r\nhi\r\n",
                r"error 'CLIENT_ERROR bad command line format\r\n' +14 swallow 4",
            ),
            (
                b"ms k 2 MX\r\nhi\r\n",
                r"error 'CLIENT_ERROR invalid mode for ms M token\r\n' +11 swallow 4",
            ),
            (
                b"ms k abc\r\nhi\r\n",
                r"error 'CLIENT_ERROR bad command line format\r\n' +10 swallow 0",
            ),
            (
                b"ms k\r\n",
                r"error 'CLIENT_ERROR bad command line format\r\n' +6 swallow 0",
            ),
            (b"ms k 2 T1\r\nhi\r\n", "Set 'k' ' T1' 'hi' +15"),
            (b"ms k 2 T1\r\nhi", "Incomplete"),
            (
                b"md k x\r\n",
                r"error 'CLIENT_ERROR invalid or duplicate flag\r\n' +8 swallow 0",
            ),
            (
                b"ma k MX\r\n",
                r"error 'CLIENT_ERROR invalid mode for ma M token\r\n' +9 swallow 0",
            ),
            (
                b"me\r\n",
                r"error 'CLIENT_ERROR bad command line format\r\n' +4 swallow 0",
            ),
            (
                b"me k b\r\n",
                r"error 'CLIENT_ERROR bad command line format\r\n' +8 swallow 0",
            ),
        ];
        for (request, want) in cases {
            assert_eq!(describe(request), *want, "{}", request.escape_ascii());
        }
    }

    #[test]
    fn base64_as_memcached() {
        // live: memcached 1.6.18 (`mg <key> b k` echoes the re-encoded key).
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Zm9v", Some(b"foo")),
            (b"Zm9v!", Some(b"foo")),
            (b"AA==", Some(b"\0")),
            (b"A=A=", Some(b"\0")),
            (b"AAE=", Some(b"\0\x01")),
            (b"foo", None),
            (b"====", None),
            (b"A", None),
            (b"AAEC=", None),
        ];
        for &(src, want) in cases {
            let mut out = [0; DECODED_KEY_MAX];
            let got = base64_decode(src, &mut out).map(|n| out[..n].to_vec());
            assert_eq!(got.as_deref(), want, "{}", src.escape_ascii());
        }
        let mut enc = Vec::new();
        base64_encode(b"\0\x01\x02", &mut enc);
        base64_encode(b"\0", &mut enc);
        base64_encode(b"\0\x01", &mut enc);
        assert_eq!(enc, b"AAECAA==AAE=");
    }
}
