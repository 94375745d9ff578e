//! Differential tests: the same bytes go to memcached 1.6.18 and to shmcached,
//! and the replies must be equal byte for byte (cas-uniques excepted: each
//! server numbers them its own way, so they are compared as placeholders that
//! keep the structure, `<cas#1>`, `<cas#2>`, ... in order of appearance).
//!
//! `SHMCACHED_DIFF_AGAINST=memcached` runs memcached in shmcached's place, to
//! check the harness itself. `SHMCACHED_DIFF_DUMP=1` prints memcached's reply to
//! every table case. `SHMCACHED_TEST_SEED=<n>` replays a random sequence and
//! `SHMCACHED_DIFF_STEPS=<n>` sets its length.

mod common;

use common::{Conn, Ending, Kind, Server, XorShift, escape};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

/// Both servers start with these arguments (memcached's defaults otherwise:
/// `-m 64 -I 1m`).
const SERVER_ARGS: &[&str] = &["-t", "2"];

/// The two servers under comparison.
struct Pair {
    reference: Server,
    target: Server,
}

impl Pair {
    /// `memcached_only`: arguments that memcached needs and shmcached must
    /// not depend on (given to the target too when the target is memcached).
    fn start(memcached_only: &[&str]) -> Pair {
        Pair::start_with(&[], memcached_only)
    }

    /// [`Pair::start`], both servers also given `both`.
    fn start_with(both: &[&str], memcached_only: &[&str]) -> Pair {
        let common: Vec<&str> = SERVER_ARGS.iter().chain(both).copied().collect();
        let memcached_args: Vec<&str> = common.iter().chain(memcached_only).copied().collect();
        let target_args = if Kind::target() == Kind::Memcached {
            &memcached_args[..]
        } else {
            &common[..]
        };
        let (reference, target) = thread::scope(|s| {
            let reference = s.spawn(|| Server::memcached(&memcached_args));
            let target = s.spawn(|| Server::target(target_args));
            (
                reference.join().expect("start memcached"),
                target.join().expect("start target"),
            )
        });
        Pair { reference, target }
    }

    fn target_name(&self) -> String {
        match self.target.kind() {
            Kind::Memcached => "memcached (as target)".to_string(),
            Kind::Shmcached => "shmcached".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------
// Reply normalisation
// ---------------------------------------------------------------------------

/// Per-connection numbering of cas-uniques: the n-th distinct cas seen on a
/// connection prints as `<cas#n>`.
#[derive(Default)]
struct CasNames {
    names: HashMap<u64, usize>,
    /// The most recent cas seen (raw), for `$CAS` in the next request.
    last: Option<u64>,
}

impl CasNames {
    fn name(&mut self, cas: u64) -> String {
        let next = self.names.len() + 1;
        let n = *self.names.entry(cas).or_insert(next);
        format!("<cas#{n}>")
    }
}

/// Replace the cas field of every `VALUE <key> <flags> <bytes> <cas>` line
/// (data blocks are skipped by their length, never parsed).
fn normalize_cas(reply: &[u8], cas: &mut CasNames) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len());
    let mut rest = reply;
    while !rest.is_empty() {
        let line_len = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let (line, after) = rest.split_at(line_len);
        rest = after;
        let body = line.strip_suffix(b"\r\n").unwrap_or(line);
        if !body.starts_with(b"VALUE ") {
            out.extend_from_slice(line);
            continue;
        }
        let fields: Vec<&[u8]> = body.split(|&b| b == b' ').collect();
        match fields.get(4).and_then(|f| parse_u64(f)) {
            Some(value) if fields.len() == 5 => {
                cas.last = Some(value);
                let name = cas.name(value);
                out.extend_from_slice(&fields[..4].join(&b' '));
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&line[body.len()..]);
            }
            _ => out.extend_from_slice(line),
        }
        if let Some(len) = fields.get(3).and_then(|f| parse_u64(f)) {
            let take = (len as usize + 2).min(rest.len());
            out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
    }
    out
}

/// `STAT <name> <value>` -> `STAT <name>` (values differ run to run).
fn stat_names_only(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in reply.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"STAT ") {
            let name_end = line[5..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(line.len(), |i| i + 5);
            out.extend_from_slice(&line[..name_end]);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// Part a: the table
// ---------------------------------------------------------------------------

/// One step of a case, run in order on one connection.
enum Step {
    /// Send the bytes followed by the `version` sentinel and read the reply up
    /// to the sentinel's. `$CAS` in the bytes becomes the last cas this
    /// connection saw.
    Exchange(Vec<u8>),
    /// Send the bytes only, read nothing, and pause so the server reads them
    /// on their own (a line without its newline).
    Send(Vec<u8>),
    /// Send the bytes (no sentinel) and read until the server closes.
    UntilClose(Vec<u8>),
}

struct Case {
    name: String,
    steps: Vec<Step>,
    /// Compare `stats` output by names only.
    stat_names: bool,
}

/// A case whose steps are all `Exchange`s.
fn case(name: &str, steps: &[&[u8]]) -> Case {
    Case {
        name: name.to_string(),
        steps: steps.iter().map(|s| Step::Exchange(s.to_vec())).collect(),
        stat_names: false,
    }
}

fn case_steps(name: &str, steps: Vec<Step>) -> Case {
    Case {
        name: name.to_string(),
        steps,
        stat_names: false,
    }
}

/// `set <key> <flags> 0 <len>\r\n<len bytes of 'v'>\r\n`.
fn set_of_len(key: &str, flags: u32, len: usize) -> Vec<u8> {
    let mut req = format!("set {key} {flags} 0 {len}\r\n").into_bytes();
    req.resize(req.len() + len, b'v');
    req.extend_from_slice(b"\r\n");
    req
}

/// The whole table. Keys are distinct per case so that cases do not see each
/// other's items (the flush_all cases wipe everything stored before them).
fn cases() -> Vec<Case> {
    let key250 = "k".repeat(250);
    let key251 = "k".repeat(251);
    let many_keys: Vec<String> = (0..100).map(|i| format!("many{i:03}")).collect();
    let long_list: Vec<String> = (0..400).map(|i| format!("longlist{i:04}")).collect();

    let mut cases = vec![
        // --- get / gets -----------------------------------------------------
        case("get hit", &[b"set g1 5 0 3\r\nabc\r\n", b"get g1\r\n"]),
        case("get miss", &[b"get g_missing\r\n"]),
        case(
            "get many keys, hits and misses, a key twice",
            &[b"set g2a 1 0 1\r\na\r\nset g2b 2 0 2\r\nbb\r\nset g2c 3 0 0\r\n\r\n", b"get g2a nope g2b g2c nope2 g2a\r\n"],
        ),
        case("get runs of spaces between keys", &[b"set g3 0 0 1\r\nx\r\n", b"get  g3   g3miss  g3 \r\n"]),
        case("get without key", &[b"get\r\n"]),
        case("get with only a space", &[b"get \r\n"]),
        case("gets without key", &[b"gets\r\n"]),
        case("gets hit and miss", &[b"set gs1 9 0 2\r\nhi\r\n", b"gets gs1 gs_miss gs1\r\n"]),
        case(
            "gets shows a new cas after each change",
            &[b"set gs2 0 0 1\r\na\r\n", b"gets gs2\r\n", b"set gs2 0 0 1\r\nb\r\n", b"gets gs2\r\n", b"append gs2 0 0 1\r\nc\r\n", b"gets gs2\r\n"],
        ),
        case(
            "gets of two items shows two cas",
            &[b"set gs3a 0 0 1\r\na\r\nset gs3b 0 0 1\r\nb\r\n", b"gets gs3a gs3b gs3a\r\n"],
        ),
        case("value with CR LF inside", &[b"set crlf 0 0 6\r\na\r\nb\r\n\r\n", b"get crlf\r\n"]),
        case("binary value", &[b"set bin 0 0 4\r\n\x00\xff\r\x7f\r\n", b"get bin\r\n"]),
        case("line ended by LF only", &[b"set lf 0 0 2\nab\r\nget lf\n", b"get lf lf\n"]),
        case("data block ended by LF only is a bad chunk", &[b"set lfdata 0 0 2\r\nab\nget lfdata\r\n", b"get lfdata\r\n"]),
        case("tab inside a key is part of the key", &[b"set tab\tkey 0 0 1\r\nt\r\n", b"get tab\tkey\r\nget tab\r\n"]),
        case("tab after the command is no separator", &[b"get\ttabkey\r\n"]),
        // --- keys -----------------------------------------------------------
        case(
            "250-byte key",
            &[format!("set {key250} 0 0 2\r\nok\r\n").as_bytes(), format!("get {key250}\r\n").as_bytes()],
        ),
        case("251-byte key in set (data read as a command)", &[format!("set {key251} 0 0 2\r\nok\r\n").as_bytes()]),
        case("251-byte key in get", &[format!("get {key251}\r\n").as_bytes()]),
        case(
            "251-byte key among hits in get drops the hits",
            &[b"set k251hit 0 0 1\r\nh\r\n", format!("get k251hit {key251} k251hit\r\n").as_bytes()],
        ),
        case("251-byte key in delete", &[format!("delete {key251}\r\n").as_bytes()]),
        case("251-byte key in incr", &[format!("incr {key251} 1\r\n").as_bytes()]),
        case("251-byte key in touch", &[format!("touch {key251} 0\r\n").as_bytes()]),
        // --- set ------------------------------------------------------------
        case("set then overwrite", &[b"set s1 0 0 1\r\na\r\n", b"set s1 7 0 3\r\nxyz\r\n", b"get s1\r\n"]),
        case("set empty value", &[b"set s2 0 0 0\r\n\r\n", b"get s2\r\n"]),
        case("set flags 2^32-1", &[b"set fl1 4294967295 0 1\r\nx\r\n", b"get fl1\r\n"]),
        case("set flags 2^32 truncated to 0", &[b"set fl2 4294967296 0 1\r\nx\r\n", b"get fl2\r\n"]),
        case("set flags 2^32+5 truncated to 5", &[b"set fl3 4294967301 0 1\r\nx\r\n", b"get fl3\r\n"]),
        case("set negative flags", &[b"set fl4 -1 0 1\r\nx\r\n", b"get fl4\r\n"]),
        case("set non-numeric flags", &[b"set fl5 abc 0 1\r\nx\r\n"]),
        case("set bytes -1", &[b"set by1 0 0 -1\r\nx\r\n"]),
        case("set bytes non-numeric", &[b"set by2 0 0 abc\r\nabc\r\n"]),
        case("set bytes 2147483647", &[b"set by3 0 0 2147483647\r\n"]),
        case("set bytes 2147483646", &[b"set by4 0 0 2147483646\r\n"]),
        case("set bytes 4294967295", &[b"set by5 0 0 4294967295\r\n"]),
        case("set bytes 4294967296 narrows to 0", &[b"set by6 0 0 4294967296\r\n\r\n", b"get by6\r\n"]),
        case("set exptime non-numeric", &[b"set ex0 0 abc 1\r\nx\r\n"]),
        case("set bad command line keeps the old value", &[b"set by7 0 0 1\r\nx\r\n", b"set by7 0 0 x\r\n", b"get by7\r\n"]),
        case("set bad data chunk", &[b"set bad1 0 0 2\r\nabcd\r\n", b"get bad1\r\n"]),
        case("set bad data chunk, LF then CRLF", &[b"set bad2 0 0 2\r\nab\n\r\n"]),
        case("set bad data chunk keeps the old value", &[b"set bad3 0 0 1\r\nx\r\n", b"set bad3 0 0 1\r\nyz\r\n", b"get bad3\r\n"]),
        case("set too few tokens", &[b"set s3 0 0\r\n"]),
        case("set too many tokens", &[b"set s4 0 0 1 noreply extra\r\nx\r\n"]),
        case("set with more than 24 tokens", &[b"set a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n"]),
        case("set with runs of spaces", &[b"set  s5  0  0  1 \r\nx\r\n", b"get s5\r\n"]),
        case("set misspelt noreply is ignored", &[b"set s6 0 0 1 norepl\r\nx\r\n", b"set s6 0 0 1 NOREPLY\r\ny\r\n"]),
        // --- exptime --------------------------------------------------------
        case("exptime -1 stores an expired item", &[b"set ex1 0 -1 1\r\nx\r\n", b"get ex1\r\n"]),
        case("exptime 30 days is relative", &[b"set ex2 0 2592000 1\r\nx\r\n", b"get ex2\r\n"]),
        case("exptime 30 days + 1 is an absolute time in the past", &[b"set ex3 0 2592001 1\r\nx\r\n", b"get ex3\r\n"]),
        case("exptime absolute in the future (2033)", &[b"set ex4 0 2000000000 1\r\nx\r\n", b"get ex4\r\n"]),
        case("exptime 2^31-1", &[b"set ex5 0 2147483647 1\r\nx\r\n", b"get ex5\r\n"]),
        case("exptime 2^31 narrows to negative", &[b"set ex6 0 2147483648 1\r\nx\r\n", b"get ex6\r\n"]),
        case("exptime year 2100 narrows to negative", &[b"set ex7 0 4102444800 1\r\nx\r\n", b"get ex7\r\n"]),
        case("exptime 2^32 + 60 narrows to 60 s", &[b"set ex8 0 4294967356 1\r\nx\r\n", b"get ex8\r\n"]),
        case("add over an expired item", &[b"set ex9 0 -1 1\r\nx\r\n", b"add ex9 0 0 1\r\ny\r\n", b"get ex9\r\n"]),
        // --- add / replace / append / prepend -------------------------------
        case("add miss then hit", &[b"add a1 0 0 1\r\nx\r\n", b"add a1 0 0 1\r\ny\r\n", b"get a1\r\n"]),
        case("replace miss then hit", &[b"replace r1 0 0 1\r\nx\r\n", b"set r1 0 0 1\r\nx\r\n", b"replace r1 3 0 2\r\nyy\r\n", b"get r1\r\n"]),
        case("append miss", &[b"append ap1 0 0 1\r\nx\r\n", b"get ap1\r\n"]),
        case("prepend miss", &[b"prepend pp1 0 0 1\r\nx\r\n", b"get pp1\r\n"]),
        case(
            "append and prepend keep the old flags and exptime",
            &[b"set ap2 7 0 2\r\nmm\r\n", b"append ap2 9 -1 2\r\nzz\r\n", b"prepend ap2 1 -1 2\r\naa\r\n", b"get ap2\r\n"],
        ),
        case("append empty data", &[b"set ap3 0 0 1\r\nx\r\n", b"append ap3 0 0 0\r\n\r\n", b"get ap3\r\n"]),
        case("append bad data chunk", &[b"set ap4 0 0 1\r\nx\r\n", b"append ap4 0 0 1\r\nyz\r\n", b"get ap4\r\n"]),
        // --- cas ------------------------------------------------------------
        case("cas on a missing key", &[b"cas c1 0 0 1 12345\r\nx\r\n", b"get c1\r\n"]),
        case("cas with the current cas", &[b"set c2 0 0 1\r\nx\r\n", b"gets c2\r\n", b"cas c2 4 0 1 $CAS\r\ny\r\n", b"gets c2\r\n"]),
        case(
            "cas with a stale cas",
            &[b"set c3 0 0 1\r\nx\r\n", b"gets c3\r\n", b"set c3 0 0 1\r\ny\r\n", b"cas c3 0 0 1 $CAS\r\nz\r\n", b"get c3\r\n"],
        ),
        case("cas twice with the same cas", &[b"set c4 0 0 1\r\nx\r\n", b"gets c4\r\n", b"cas c4 0 0 1 $CAS\r\ny\r\n", b"cas c4 0 0 1 $CAS\r\nz\r\n", b"get c4\r\n"]),
        case("cas with unique 0", &[b"set c5 0 0 1\r\nx\r\n", b"cas c5 0 0 1 0\r\ny\r\n"]),
        case("cas on an expired item", &[b"set c6 0 0 1\r\nx\r\n", b"gets c6\r\n", b"touch c6 -1\r\n", b"cas c6 0 0 1 $CAS\r\ny\r\n"]),
        case("cas without unique", &[b"cas c7 0 0 1\r\nx\r\n"]),
        case("cas with a trailing space and no unique", &[b"cas c8 0 0 1 \r\nx\r\n"]),
        case("cas with a non-numeric unique", &[b"cas c9 0 0 1 abc\r\nx\r\n"]),
        case("cas with a negative unique", &[b"cas c10 0 0 1 -1\r\nx\r\n"]),
        case("cas bad data chunk", &[b"set c11 0 0 1\r\nx\r\n", b"gets c11\r\n", b"cas c11 0 0 1 $CAS\r\nyz\r\n", b"get c11\r\n"]),
        // --- delete ---------------------------------------------------------
        case("delete hit then miss", &[b"set d1 0 0 1\r\nx\r\n", b"delete d1\r\n", b"delete d1\r\n", b"get d1\r\n"]),
        case("delete with 0", &[b"set d2 0 0 1\r\nx\r\n", b"delete d2 0\r\n", b"get d2\r\n"]),
        case("delete with 1", &[b"set d3 0 0 1\r\nx\r\n", b"delete d3 1\r\n", b"get d3\r\n"]),
        case("delete with a word", &[b"delete d4 now\r\n"]),
        case("delete with noreply and an extra token", &[b"delete d5 noreply extra\r\n"]),
        case("delete with 0 and an extra token", &[b"delete d5 0 extra\r\n"]),
        case("delete without key", &[b"delete\r\n"]),
        case("delete with too many tokens", &[b"delete a b c d\r\n"]),
        case("delete with more than 24 tokens", &[b"delete a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n"]),
        case("delete an expired item", &[b"set d6 0 -1 1\r\nx\r\n", b"delete d6\r\n"]),
        // --- incr / decr ----------------------------------------------------
        case("incr", &[b"set i1 0 0 1\r\n5\r\n", b"incr i1 3\r\n", b"get i1\r\n"]),
        case("incr miss", &[b"incr i_missing 1\r\n"]),
        case("decr miss", &[b"decr d_missing 1\r\n"]),
        case("incr wraps at 2^64", &[b"set i2 0 0 20\r\n18446744073709551615\r\n", b"incr i2 1\r\n", b"get i2\r\n"]),
        case("incr by 2^64-1", &[b"set i3 0 0 1\r\n5\r\n", b"incr i3 18446744073709551615\r\n"]),
        case("incr delta 2^64 is invalid", &[b"set i4 0 0 1\r\n5\r\n", b"incr i4 18446744073709551616\r\n"]),
        case("decr stops at 0", &[b"set i5 0 0 1\r\n3\r\n", b"decr i5 5\r\n", b"decr i5 1\r\n", b"get i5\r\n"]),
        case("decr pads a shorter result with spaces", &[b"set i6 0 0 2\r\n10\r\n", b"decr i6 1\r\n", b"get i6\r\n"]),
        case("decr 2^64-1 by 1", &[b"set i7 0 0 20\r\n18446744073709551615\r\n", b"decr i7 1\r\n", b"get i7\r\n"]),
        case("incr grows the value", &[b"set i8 3 0 2\r\n99\r\n", b"incr i8 1\r\n", b"gets i8\r\n"]),
        case("incr of a padded value", &[b"set i9 0 0 3\r\n 5 \r\n", b"incr i9 1\r\n", b"get i9\r\n"]),
        case("incr of leading zeros", &[b"set i10 0 0 3\r\n007\r\n", b"incr i10 1\r\n", b"get i10\r\n"]),
        case("incr of a non-numeric value", &[b"set i11 0 0 3\r\nabc\r\n", b"incr i11 1\r\n"]),
        case("incr of digits then letters", &[b"set i12 0 0 5\r\n12abc\r\n", b"incr i12 1\r\n"]),
        case("incr of digits, a space, then letters", &[b"set i27 0 0 6\r\n12 abc\r\n", b"incr i27 1\r\n", b"get i27\r\n"]),
        case("incr of digits, a NUL, then letters", &[b"set i28 0 0 5\r\n12\x00ab\r\n", b"incr i28 1\r\n", b"get i28\r\n"]),
        case("incr of a negative value", &[b"set i13 0 0 2\r\n-5\r\n", b"incr i13 1\r\n"]),
        case("incr of an empty value", &[b"set i14 0 0 0\r\n\r\n", b"incr i14 1\r\n"]),
        case("decr of a non-numeric value", &[b"set i15 0 0 1\r\nx\r\n", b"decr i15 1\r\n"]),
        case("incr delta -1", &[b"set i16 0 0 1\r\n5\r\n", b"incr i16 -1\r\n"]),
        case("incr delta non-numeric", &[b"set i17 0 0 1\r\n5\r\n", b"incr i17 abc\r\n"]),
        case("incr delta +1", &[b"set i18 0 0 1\r\n5\r\n", b"incr i18 +1\r\n"]),
        case("incr delta with leading zeros", &[b"set i19 0 0 1\r\n5\r\n", b"incr i19 0001\r\n"]),
        case("incr delta 0", &[b"set i20 0 0 1\r\n5\r\n", b"incr i20 0\r\n", b"gets i20\r\n"]),
        case("incr changes the cas", &[b"set i21 0 0 1\r\n5\r\n", b"gets i21\r\n", b"incr i21 1\r\n", b"gets i21\r\n", b"cas i21 0 0 1 $CAS\r\n9\r\n", b"get i21\r\n"]),
        case("incr without delta", &[b"incr i22\r\n"]),
        case("incr alone", &[b"incr\r\n"]),
        case("incr with an extra token", &[b"set i23 0 0 1\r\n5\r\n", b"incr i23 1 2\r\n"]),
        case("decr with runs of spaces", &[b"set i24 0 0 1\r\n5\r\n", b"decr  i24  1 \r\n"]),
        case("incr keeps the flags", &[b"set i25 42 0 1\r\n1\r\n", b"incr i25 1\r\n", b"get i25\r\n"]),
        case("incr of a 20-digit value over 2^64", &[b"set i26 0 0 20\r\n99999999999999999999\r\n", b"incr i26 1\r\n"]),
        // --- touch / gat / gats ---------------------------------------------
        case("touch hit and miss", &[b"set t1 0 0 1\r\nx\r\n", b"touch t1 100\r\n", b"touch t_missing 100\r\n", b"get t1\r\n"]),
        case("touch -1 expires", &[b"set t2 0 0 1\r\nx\r\n", b"touch t2 -1\r\n", b"get t2\r\n"]),
        case("touch bad exptime", &[b"set t3 0 0 1\r\nx\r\n", b"touch t3 abc\r\n"]),
        case("touch without exptime", &[b"touch t4\r\n"]),
        case("touch with an extra token", &[b"touch t5 1 2\r\n"]),
        case("touch does not change the cas", &[b"set t6 0 0 1\r\nx\r\n", b"gets t6\r\n", b"touch t6 100\r\n", b"gets t6\r\n"]),
        case("gat hit and miss", &[b"set gt1 3 0 2\r\nab\r\n", b"gat 100 gt1 gt_missing gt1\r\n"]),
        case("gats hit", &[b"set gt2 3 0 2\r\nab\r\n", b"gats 0 gt2\r\n", b"gets gt2\r\n"]),
        case("gat -1 returns the value then expires it", &[b"set gt3 0 0 1\r\nx\r\n", b"gat -1 gt3\r\n", b"get gt3\r\n"]),
        case("gat bad exptime", &[b"set gt4 0 0 1\r\nx\r\n", b"gat abc gt4\r\n"]),
        case("gat without key", &[b"gat 0\r\n"]),
        case("gats without key", &[b"gats 0\r\n"]),
        case("gat alone", &[b"gat\r\n"]),
        case("gat noreply is a key", &[b"gat 0 gt5 noreply\r\n"]),
        case("gat bad exptime with noreply still answers", &[b"gat abc gt6 noreply\r\n"]),
        // --- noreply --------------------------------------------------------
        case(
            "noreply on every storage command",
            &[
                b"set nr1 0 0 1 noreply\r\na\r\n",
                b"add nr1 0 0 1 noreply\r\nb\r\n",
                b"add nr2 0 0 1 noreply\r\nb\r\n",
                b"replace nr1 0 0 1 noreply\r\nc\r\n",
                b"replace nr_missing 0 0 1 noreply\r\nc\r\n",
                b"append nr1 0 0 1 noreply\r\nd\r\n",
                b"prepend nr1 0 0 1 noreply\r\ne\r\n",
                b"append nr_missing 0 0 1 noreply\r\nd\r\n",
                b"get nr1 nr2 nr_missing\r\n",
            ],
        ),
        case(
            "noreply on cas: STORED, EXISTS, NOT_FOUND",
            &[
                b"set nr3 0 0 1\r\na\r\n",
                b"gets nr3\r\n",
                b"cas nr3 0 0 1 $CAS noreply\r\nb\r\n",
                b"cas nr3 0 0 1 $CAS noreply\r\nc\r\n",
                b"cas nr_missing 0 0 1 1 noreply\r\nc\r\n",
                b"get nr3\r\n",
            ],
        ),
        case("noreply on delete hit, miss, 0", &[b"set nr4 0 0 1\r\na\r\n", b"delete nr4 noreply\r\n", b"delete nr4 noreply\r\n", b"delete nr4 0 noreply\r\n", b"get nr4\r\n"]),
        case("noreply on delete bad token", &[b"delete nr5 1 noreply\r\n"]),
        case("noreply on incr/decr hit and miss", &[b"set nr6 0 0 2\r\n10\r\n", b"incr nr6 5 noreply\r\n", b"decr nr6 1 noreply\r\n", b"incr nr_missing 1 noreply\r\n", b"get nr6\r\n"]),
        case("noreply on incr invalid delta", &[b"set nr7 0 0 1\r\n1\r\n", b"incr nr7 abc noreply\r\n"]),
        case("noreply on incr non-numeric", &[b"set nr8 0 0 1\r\nx\r\n", b"incr nr8 1 noreply\r\n"]),
        case("noreply on touch hit, miss, bad exptime", &[b"set nr9 0 0 1\r\nx\r\n", b"touch nr9 100 noreply\r\n", b"touch nr_missing 100 noreply\r\n", b"touch nr9 abc noreply\r\n"]),
        case("noreply on verbosity", &[b"verbosity 0 noreply\r\n"]),
        case("noreply on verbosity with a bad level", &[b"verbosity abc noreply\r\n"]),
        case("noreply on set with bad bytes (data read as a command)", &[b"set nr10 0 0 abc noreply\r\nxyz\r\n"]),
        case("noreply on set with negative flags", &[b"set nr11 -1 0 1 noreply\r\nx\r\n"]),
        case("noreply on set with a 251-byte key", &[format!("set {key251} 0 0 1 noreply\r\nx\r\n").as_bytes()]),
        case("noreply on bad data chunk", &[b"set nr12 0 0 2 noreply\r\nabcd\r\n", b"get nr12\r\n"]),
        case("noreply on cas without unique", &[b"cas nr13 0 0 1 noreply\r\nx\r\n"]),
        case("noreply on cas with a bad unique", &[b"cas nr14 0 0 1 abc noreply\r\nx\r\n"]),
        // --- flush_all --------------------------------------------------------
        case("flush_all", &[b"set fa1 0 0 1\r\nx\r\n", b"flush_all\r\n", b"get fa1\r\n", b"set fa1 0 0 1\r\ny\r\n", b"get fa1\r\n"]),
        case("flush_all 0", &[b"set fa2 0 0 1\r\nx\r\n", b"flush_all 0\r\n", b"get fa2\r\n"]),
        case("flush_all -1", &[b"set fa3 0 0 1\r\nx\r\n", b"flush_all -1\r\n", b"get fa3\r\n"]),
        case("flush_all noreply", &[b"set fa4 0 0 1\r\nx\r\n", b"flush_all noreply\r\n", b"get fa4\r\n"]),
        case("flush_all 0 noreply", &[b"set fa5 0 0 1\r\nx\r\n", b"flush_all 0 noreply\r\n", b"get fa5\r\n"]),
        case("flush_all with a bad delay", &[b"flush_all abc\r\n"]),
        case("flush_all with a bad delay and noreply", &[b"flush_all abc noreply\r\n"]),
        case("flush_all with a trailing space", &[b"flush_all \r\n"]),
        case(
            "flush_all with a delay spares items until then",
            &[b"set fa6 0 0 1\r\nx\r\n", b"flush_all 3600\r\n", b"get fa6\r\n", b"flush_all 3600 noreply\r\n", b"flush_all 3600 extra\r\n", b"get fa6\r\n", b"flush_all\r\n", b"get fa6\r\n"],
        ),
        case("flush_all with too many tokens", &[b"flush_all 0 noreply extra\r\n"]),
        // --- version / verbosity / shutdown / stats / cache_memlimit ----------
        case("version", &[b"version\r\n"]),
        case("version with extra tokens", &[b"version 1 2\r\n"]),
        case("verbosity without argument", &[b"verbosity\r\n"]),
        case("verbosity 1 then 0", &[b"verbosity 1\r\n", b"verbosity 0\r\n"]),
        case("verbosity non-numeric", &[b"verbosity abc\r\n"]),
        case("verbosity with an extra token", &[b"verbosity 0 0\r\n"]),
        case("shutdown without -A", &[b"shutdown\r\n"]),
        case("shutdown graceful without -A", &[b"shutdown graceful\r\n"]),
        case("shutdown with a bad mode without -A", &[b"shutdown now\r\n"]),
        case("stats reset", &[b"stats reset\r\n"]),
        case("stats unknown group", &[b"stats nosuchgroup\r\n"]),
        case("stats detail bad argument", &[b"stats detail x\r\n"]),
        case("stats detail without argument", &[b"stats detail\r\n"]),
        case("cache_memlimit", &[b"cache_memlimit 64\r\n", b"cache_memlimit 64 noreply\r\n"]),
        case("cache_memlimit too small", &[b"cache_memlimit 1\r\n"]),
        case("cache_memlimit above -m", &[b"cache_memlimit 4096\r\n"]),
        case("cache_memlimit in bytes", &[b"cache_memlimit 2000000000\r\n"]),
        // 2^32 + 8 is 8 to memcached's 32-bit safe_strtoul.
        case("cache_memlimit 32-bit", &[b"cache_memlimit 4294967304\r\n", b"cache_memlimit 64\r\n"]),
        case("cache_memlimit negative", &[b"cache_memlimit -5\r\n", b"cache_memlimit abc noreply\r\n"]),
        case("cache_memlimit too many tokens", &[b"cache_memlimit 1 2 3\r\n"]),
        case("cache_memlimit lowered and restored", &[b"cache_memlimit 16\r\n", b"cache_memlimit 9 noreply\r\n", b"cache_memlimit 64 noreply\r\n", b"cache_memlimit 64\r\n"]),
        case("cache_memlimit non-numeric", &[b"cache_memlimit abc\r\n"]),
        case("cache_memlimit without argument", &[b"cache_memlimit\r\n"]),
        // --- slabs (only what does not depend on pages; 250 is past the last
        // class of either server) ---------------------------------------------
        case("slabs reassign to the same class", &[b"slabs reassign 1 1\r\n", b"slabs reassign 250 250\r\n"]),
        // Checked before the classes: SAME, for 4294967297 is 1 to safe_strtol's int32_t.
        case("slabs reassign 32-bit", &[b"slabs reassign 4294967297 1\r\n"]),
        case("slabs reassign a class out of range", &[b"slabs reassign 250 2\r\n", b"slabs reassign 2 250\r\n", b"slabs reassign -2 1\r\n", b"slabs reassign 1 -5\r\n", b"slabs reassign 1\tx 1000\r\n"]),
        case("slabs reassign non-numeric", &[b"slabs reassign a b\r\n", b"slabs reassign 1 b\r\n"]),
        // reassign takes no noreply: with one number it is a bad number, with two a token too many.
        case("slabs reassign noreply", &[b"slabs reassign 1 noreply\r\n", b"slabs reassign 1 1 noreply\r\n"]),
        case("slabs reassign token count", &[b"slabs reassign\r\n", b"slabs reassign 1\r\n", b"slabs reassign 1 2 3\r\n"]),
        case(
            "slabs automove levels",
            &[b"slabs automove 2\r\n", b"slabs automove 0\r\n", b"slabs automove 1 2\r\n", b"slabs automove 4294967297\r\n", b"slabs automove 1\t\r\n", b"slabs automove 2 noreply\r\n", b"slabs automove 1\r\n"],
        ),
        case("slabs automove out of range", &[b"slabs automove 3\r\n", b"slabs automove 3 noreply\r\n"]),
        case("slabs automove non-numeric", &[b"slabs automove x\r\n", b"slabs automove -1\r\n", b"slabs automove RATIO 1\r\n", b"slabs automove x noreply\r\n", b"slabs automove noreply\r\n"]),
        case("slabs automove without a level", &[b"slabs automove\r\n", b"slabs automove\t1\r\n"]),
        case(
            "slabs automove ratio",
            &[b"slabs automove ratio 0.5\r\n", b"slabs automove ratio 5 noreply\r\n", b"slabs automove ratio 0x10\r\n", b"slabs automove ratio 0.8\r\n"],
        ),
        case(
            "slabs automove bad ratio",
            &[b"slabs automove ratio\r\n", b"slabs automove ratio abc\r\n", b"slabs automove ratio 0.5x\r\n", b"slabs automove ratio 1e400\r\n", b"slabs automove ratio noreply\r\n"],
        ),
        case("slabs unknown subcommand", &[b"slabs\r\n", b"slabs foo\r\n", b"slabs foo noreply\r\n", b"slabs noreply\r\n"]),
        // --- framing ------------------------------------------------------------
        case("unknown command", &[b"bogus\r\n"]),
        case("unknown command with arguments", &[b"bogus a b c\r\n"]),
        case("empty line", &[b"\r\n"]),
        case("LF only", &[b"\n"]),
        case("CR in the middle of a line", &[b"get a\rb\r\n"]),
        case("upper-case memcached command that is not a seed word", &[b"VERSION\r\n"]),
        case(
            "pipelined requests in one write",
            &[b"set pl1 0 0 1\r\na\r\nget pl1\r\nappend pl1 0 0 1\r\nb\r\ngets pl1\r\ndelete pl1\r\nget pl1\r\nincr pl1 1\r\nbogus\r\nversion\r\n"],
        ),
        case("a command after an error on the same connection", &[b"set pe1 0 0 x\r\n", b"set pe1 0 0 1\r\nx\r\n", b"get pe1\r\n"]),
        case_steps("quit", vec![Step::UntilClose(b"quit\r\n".to_vec())]),
        case_steps("quit with an extra token", vec![Step::UntilClose(b"quit now\r\n".to_vec())]),
        case_steps(
            "quit in a pipeline drops what follows",
            vec![Step::UntilClose(b"set q1 0 0 1\r\nx\r\nget q1\r\nquit\r\nget q1\r\n".to_vec())],
        ),
        case_steps("HTTP request closes", vec![Step::UntilClose(b"POST / HTTP/1.1\r\n".to_vec())]),
        case("HTTP/ not next-to-last", &[b"bogus HTTP/1.0 x\r\n"]),
        // --- line length --------------------------------------------------------
        case_steps(
            "2048 bytes without newline wait for more",
            vec![Step::Send(vec![b'x'; 2048]), Step::Exchange(b"\r\n".to_vec())],
        ),
        case_steps(
            "2049 bytes without newline close",
            vec![Step::Send(vec![b'x'; 2049]), Step::UntilClose(Vec::new())],
        ),
        case_steps(
            "a set line over 2048 bytes without newline closes",
            vec![Step::Send(format!("set {} 0 0 1", "k".repeat(2100)).into_bytes()), Step::UntilClose(Vec::new())],
        ),
        case("a 3000-byte line arriving whole", &[&[vec![b'x'; 3000], b"\r\n".to_vec()].concat()]),
    ];

    // get/gets over more keys than the tokenizer's 24, with hits among them.
    let mut setup = Vec::new();
    for key in many_keys.iter().step_by(3) {
        setup.extend_from_slice(format!("set {key} 0 0 {}\r\n{key}\r\n", key.len()).as_bytes());
    }
    let get_all = format!("get {}\r\n", many_keys.join(" "));
    let gets_all = format!("gets {}\r\n", many_keys.join(" "));
    cases.push(case(
        "get 100 keys",
        &[&setup, get_all.as_bytes(), gets_all.as_bytes()],
    ));

    // A key list longer than the 2048-byte line limit is allowed for get/gets,
    // whether or not the newline comes in the same read.
    let mut setup = Vec::new();
    for key in long_list.iter().step_by(7) {
        setup.extend_from_slice(format!("set {key} 1 0 2\r\nLL\r\n").as_bytes());
    }
    let long_get = format!("get {}", long_list.join(" "));
    let long_gets = format!("gets {}", long_list.join(" "));
    cases.push(case(
        "get key list over 2048 bytes",
        &[&setup, format!("{long_get}\r\n").as_bytes()],
    ));
    cases.push(case_steps(
        "get key list over 2048 bytes, newline in a later read",
        vec![
            Step::Send(long_get.into_bytes()),
            Step::Exchange(b" longlist0000\r\n".to_vec()),
        ],
    ));
    cases.push(case_steps(
        "gets key list over 2048 bytes, newline in a later read",
        vec![
            Step::Send(long_gets.into_bytes()),
            Step::Exchange(b"\r\n".to_vec()),
        ],
    ));
    cases.push(case(
        "get key list over 2048 bytes with a 251-byte key at the end",
        &[format!("get {} {key251}\r\n", long_list.join(" ")).as_bytes()],
    ));

    // Item size limit at the default -I 1m: header (48) + cas (8) + key + 1 +
    // value + 2 (+ 4 when flags != 0) must fit in 1048576 bytes.
    for (key, flags, len) in [
        ("big1", 0, 1047552),
        ("big2", 0, 1049600),
        ("big3", 0, 1048576),
        ("tl3", 0, 1048514),
        ("tl3", 0, 1048515),
        ("tl4", 1, 1048510),
        ("tl4", 1, 1048511),
        ("tlkey7", 0, 1048511),
        ("tlkey7", 0, 1048512),
    ] {
        cases.push(Case {
            name: format!("set of {len} bytes, key {key:?}, flags {flags}"),
            steps: vec![
                Step::Exchange(set_of_len(key, flags, len)),
                Step::Exchange(format!("get {key}\r\n").into_bytes()),
            ],
            stat_names: false,
        });
    }
    cases.push(Case {
        name: "a refused too-large set deletes the old value".into(),
        steps: vec![
            Step::Exchange(b"set big4 0 0 3\r\nold\r\n".to_vec()),
            Step::Exchange(set_of_len("big4", 0, 1049600)),
            Step::Exchange(b"get big4\r\n".to_vec()),
        ],
        stat_names: false,
    });
    let mut too_large_pipeline = set_of_len("big5", 0, 2 << 20);
    too_large_pipeline.extend_from_slice(b"set big5 0 0 2\r\nok\r\nget big5\r\n");
    cases.push(Case {
        name: "a too-large value is swallowed and the next command served".into(),
        steps: vec![Step::Exchange(too_large_pipeline)],
        stat_names: false,
    });
    let mut too_large_noreply = b"set big6 0 0 1049600 noreply\r\n".to_vec();
    too_large_noreply.resize(too_large_noreply.len() + 1049600, b'v');
    too_large_noreply.extend_from_slice(b"\r\nget big6\r\n");
    cases.push(Case {
        name: "a too-large value with noreply".into(),
        steps: vec![Step::Exchange(too_large_noreply)],
        stat_names: false,
    });
    let mut too_large_bad_end = set_of_len("big7", 0, 1049600);
    too_large_bad_end.truncate(too_large_bad_end.len() - 2);
    too_large_bad_end.extend_from_slice(b"XYget big7\r\n");
    cases.push(Case {
        name: "a too-large value's last two bytes are not checked".into(),
        steps: vec![Step::Exchange(too_large_bad_end)],
        stat_names: false,
    });
    cases.push(Case {
        name: "append past the size limit".into(),
        steps: vec![
            Step::Exchange(set_of_len("big8", 0, 1000000)),
            Step::Exchange(
                b"append big8 0 0 60000\r\n"
                    .iter()
                    .copied()
                    .chain(vec![b'a'; 60000])
                    .chain(*b"\r\n")
                    .collect(),
            ),
            Step::Exchange(b"get big8\r\n".to_vec()),
        ],
        stat_names: false,
    });

    // Names only: values (pid, time, rusage, ...) differ from run to run.
    cases.push(Case {
        name: "stats names".into(),
        steps: vec![Step::Exchange(b"stats\r\n".to_vec())],
        stat_names: true,
    });
    cases
}

/// Cases where shmcached knowingly answers otherwise than memcached, each
/// listed in docs/compatibility.md: (case, our reply, why).
const KNOWN_DIFFERENCES: &[(&str, &[u8], &str)] = &[(
    "cache_memlimit above -m",
    b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n",
    "the segment cannot grow past -m; memcached's memory can (docs/memory.md)",
)];

/// memcached's general `stats` keys that describe machinery shmcached does
/// not have (docs/compatibility.md).
const STATS_NOT_KEPT: &[&str] = &[
    "response_obj_oom",
    "response_obj_count",
    "response_obj_bytes",
    "read_buf_count",
    "read_buf_bytes",
    "read_buf_bytes_free",
    "read_buf_oom",
    "reserved_fds",
    "listen_disabled_num",
    "time_in_listen_disabled_us",
    "lru_maintainer_juggles",
    "malloc_fails",
    "log_worker_dropped",
    "log_worker_written",
    "log_watcher_skipped",
    "log_watcher_sent",
    "log_watchers",
    "unexpected_napi_ids",
    "round_robin_fallback",
    "lrutail_reflocked",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "direct_reclaims",
    "lru_bumps_dropped",
];

/// Our own keys, after memcached's.
const STATS_OURS: &[&str] = &["workers", "workers_alive", "worker_restarts"];

/// `stats` names: memcached's, in its order, less the ones we do not keep,
/// then ours.
fn check_stat_names(expected: &[StepReply], actual: &[StepReply]) -> Result<(), String> {
    let names = |r: &[StepReply]| -> Vec<String> {
        String::from_utf8_lossy(&r.iter().flat_map(|s| s.bytes.clone()).collect::<Vec<u8>>())
            .lines()
            .filter_map(|l| l.strip_prefix("STAT ").map(|n| n.trim().to_string()))
            .collect()
    };
    let mut want: Vec<String> = names(expected)
        .into_iter()
        .filter(|n| !STATS_NOT_KEPT.contains(&n.as_str()))
        .collect();
    want.extend(STATS_OURS.iter().map(|s| s.to_string()));
    let got = names(actual);
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "stats names differ:\n  want {want:?}\n  got  {got:?}"
        ))
    }
}

/// What one step of a case answered, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepReply {
    bytes: Vec<u8>,
    ending: Ending,
}

fn run_case(port: u16, case: &Case) -> Vec<StepReply> {
    let mut conn = Conn::connect(port);
    let mut cas = CasNames::default();
    let mut replies = Vec::new();
    for step in &case.steps {
        let reply = match step {
            Step::Exchange(bytes) => {
                let request = substitute_cas(bytes, cas.last);
                conn.exchange(&request)
            }
            Step::Send(bytes) => {
                conn.send(bytes);
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            Step::UntilClose(bytes) => {
                let _ = conn.try_send(bytes);
                conn.read_to_eof()
            }
        };
        let mut bytes = normalize_cas(&reply.bytes, &mut cas);
        if case.stat_names {
            bytes = stat_names_only(&bytes);
        }
        let closed = reply.ending == Ending::Closed;
        replies.push(StepReply {
            bytes,
            ending: reply.ending,
        });
        if closed {
            break;
        }
    }
    replies
}

/// `$CAS` -> the last cas seen on this connection (or 0 if none).
fn substitute_cas(request: &[u8], last: Option<u64>) -> Vec<u8> {
    const TOKEN: &[u8] = b"$CAS";
    let Some(at) = request.windows(TOKEN.len()).position(|w| w == TOKEN) else {
        return request.to_vec();
    };
    let mut out = request[..at].to_vec();
    out.extend_from_slice(last.unwrap_or(0).to_string().as_bytes());
    out.extend_from_slice(&substitute_cas(&request[at + TOKEN.len()..], last));
    out
}

/// Where two runs of a case part: the first differing step, the byte offset
/// with some context, and for multi-line replies the lines only one side has.
fn explain_difference(expected: &[StepReply], actual: &[StepReply]) -> String {
    let Some(step) =
        (0..expected.len().max(actual.len())).find(|&i| expected.get(i) != actual.get(i))
    else {
        return String::new();
    };
    let (Some(e), Some(a)) = (expected.get(step), actual.get(step)) else {
        return format!(
            "  -> the runs have {} and {} replies\n",
            expected.len(),
            actual.len()
        );
    };
    if e.bytes == a.bytes {
        return format!(
            "  -> step {step}: same bytes, but ended by {:?} vs {:?}\n",
            e.ending, a.ending
        );
    }
    let at = e
        .bytes
        .iter()
        .zip(&a.bytes)
        .position(|(x, y)| x != y)
        .unwrap_or(e.bytes.len().min(a.bytes.len()));
    let context = |b: &[u8]| escape(&b[at.saturating_sub(20)..(at + 40).min(b.len())]);
    let mut out = format!(
        "  -> step {step}, byte {at}: memcached ...{}... vs ...{}...\n",
        context(&e.bytes),
        context(&a.bytes)
    );
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split_inclusive(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (el, al) = (lines(&e.bytes), lines(&a.bytes));
    if el.len() > 3 || al.len() > 3 {
        let only = |x: &[Vec<u8>], y: &[Vec<u8>]| -> String {
            x.iter()
                .filter(|l| !y.contains(l))
                .take(30)
                .map(|l| escape(l))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "     lines only in memcached: {}", only(&el, &al));
        let _ = writeln!(out, "     lines only in the target: {}", only(&al, &el));
    }
    out
}

fn describe_steps(case: &Case, replies: &[StepReply]) -> String {
    let mut out = String::new();
    let mut i = 0;
    for step in &case.steps {
        let (kind, bytes) = match step {
            Step::Exchange(b) => ("send+sentinel", b),
            Step::Send(b) => ("send", b),
            Step::UntilClose(b) => ("send, read to close", b),
        };
        let _ = writeln!(out, "    > [{kind}] {}", escape(bytes));
        if !matches!(step, Step::Send(_)) {
            if let Some(r) = replies.get(i) {
                let _ = writeln!(out, "    < {} [{:?}]", escape(&r.bytes), r.ending);
            }
            i += 1;
        }
    }
    out
}

#[test]
fn table_of_commands_matches_memcached() {
    let pair = Pair::start(&[]);
    let dump = std::env::var("SHMCACHED_DIFF_DUMP").is_ok();
    let cases = cases();
    let started = Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let case_started = Instant::now();
        let expected = run_case(pair.reference.port(), case);
        let actual = run_case(pair.target.port(), case);
        if dump {
            eprintln!(
                "## {} ({:?})\n{}",
                case.name,
                case_started.elapsed(),
                describe_steps(case, &expected)
            );
        }
        let ours_differ = pair.target.kind() == Kind::Shmcached;
        if let Some(&(_, ours, why)) = KNOWN_DIFFERENCES
            .iter()
            .find(|k| ours_differ && k.0 == case.name)
        {
            // A documented difference: pin our own reply instead.
            let got: Vec<u8> = actual.iter().flat_map(|r| r.bytes.clone()).collect();
            if got != ours {
                failures.push(format!(
                    "case {:?} (known difference: {why}): expected our documented reply {}, got {}",
                    case.name,
                    escape(ours),
                    escape(&got)
                ));
            }
            continue;
        }
        if case.stat_names && ours_differ {
            if let Err(e) = check_stat_names(&expected, &actual) {
                failures.push(format!("case {:?}: {e}", case.name));
            }
            continue;
        }
        if expected != actual {
            let mut report = format!(
                "case {:?}:\n  memcached:\n{}",
                case.name,
                describe_steps(case, &expected)
            );
            let _ = write!(
                report,
                "  {}:\n{}",
                pair.target_name(),
                describe_steps(case, &actual)
            );
            report.push_str(&explain_difference(&expected, &actual));
            failures.push(report);
        }
    }
    eprintln!("{} table cases in {:?}", cases.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from memcached:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The item size histogram: items stored before `stats sizes_enable` are not
/// counted (in or out), each item counts in the 32-byte bucket of memcached's
/// item size (key, value, flags, cas), and replacing, deleting, expiring,
/// appending and incrementing move the counts as memcached's links and
/// unlinks do. Key and value lengths sit on both sides of bucket edges, with
/// flags 0 (no room for them in memcached's item) and not 0 (4 bytes).
fn sizes_case() -> Case {
    // Distinct keys of each length: one letter, or a number padded with z.
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let key = |len: usize, i: usize| match len {
        1 => (LETTERS[i % LETTERS.len()] as char).to_string(),
        _ => format!("{i:z<len$}"),
    };
    let mut steps: Vec<Vec<u8>> = vec![
        b"stats sizes\r\n".to_vec(),
        b"stats sizes_disable\r\n".to_vec(),
        set_of_len("before1", 0, 10),
        set_of_len("before2", 0, 20),
        set_of_len("before3", 0, 30),
        b"set beforenum 0 0 3\r\n100\r\n".to_vec(),
        b"stats sizes_enable\r\n".to_vec(),
        b"stats sizes_enable\r\n".to_vec(),
        b"stats sizes\r\n".to_vec(),
    ];
    let mut stored = Vec::new();
    let mut i = 0;
    for nkey in [1, 13, 250] {
        for nbytes in [0, 1, 5, 6, 10, 14, 15, 300, 1000, 4096, 100_000, 1_000_000] {
            for flags in [0, 1] {
                let k = key(nkey, i);
                steps.push(set_of_len(&k, flags, nbytes));
                stored.push(k);
                i += 1;
            }
        }
    }
    steps.push(b"stats sizes\r\n".to_vec());
    // Gone: every third; overwritten with another size: every fifth.
    for (j, k) in stored.iter().enumerate() {
        if j % 3 == 0 {
            steps.push(format!("delete {k}\r\n").into_bytes());
        } else if j % 5 == 0 {
            steps.push(set_of_len(k, (j % 2) as u32, j * 7));
        }
    }
    steps.push(b"stats sizes\r\n".to_vec());
    steps.extend([
        // Items from before: replaced (the new one counts), deleted (no count).
        set_of_len("before1", 5, 40),
        b"delete before2\r\n".to_vec(),
        // incr in place (same length), then growing (a new item).
        b"set num 0 0 3\r\n100\r\n".to_vec(),
        b"incr num 5\r\n".to_vec(),
        b"incr num 99999999999\r\n".to_vec(),
        b"incr beforenum 1\r\n".to_vec(),
        b"append num 0 0 40\r\n".to_vec(),
        b"stats sizes\r\n".to_vec(),
        // Stored already expired: counted, then gone when read.
        b"set dead 0 -1 3\r\nabc\r\n".to_vec(),
        b"stats sizes\r\n".to_vec(),
        b"get dead\r\n".to_vec(),
        b"touch num 1000\r\n".to_vec(),
        // An item from before, given a new cas-unique in place, then gone:
        // memcached takes it out of a bucket it never counted it in.
        b"md before3 I\r\n".to_vec(),
        b"delete before3\r\n".to_vec(),
        b"prepend num 0 0 2\r\nxy\r\n".to_vec(),
        b"stats sizes\r\n".to_vec(),
        // Off, and on again from zero.
        b"stats sizes_disable\r\n".to_vec(),
        b"stats sizes\r\n".to_vec(),
        set_of_len("between", 0, 3),
        b"stats sizes_enable\r\n".to_vec(),
        b"stats sizes\r\n".to_vec(),
        b"delete num\r\n".to_vec(),
        set_of_len("after", 3, 3),
        b"stats sizes\r\n".to_vec(),
    ]);
    // append's data block is 40 bytes.
    for s in &mut steps {
        if s.as_slice() == b"append num 0 0 40\r\n" {
            s.extend_from_slice(&[b'a'; 40]);
            s.extend_from_slice(b"\r\n");
        }
    }
    Case {
        name: "stats sizes".into(),
        steps: steps.into_iter().map(Step::Exchange).collect(),
        stat_names: false,
    }
}

/// Run [`sizes_case`] on memcached and the target started with `args`.
fn sizes_match(args: &[&str]) {
    // Without the LRU maintainer memcached always increments in place when
    // the number fits (see `random_sequence_matches_memcached`).
    let pair = Pair::start_with(args, &["-o", "no_lru_maintainer"]);
    let case = sizes_case();
    let expected = run_case(pair.reference.port(), &case);
    let actual = run_case(pair.target.port(), &case);
    if std::env::var("SHMCACHED_DIFF_DUMP").is_ok() {
        eprintln!("{}", describe_steps(&case, &expected));
    }
    assert!(
        expected == actual,
        "stats sizes with {args:?}:\n  memcached:\n{}  {}:\n{}{}",
        describe_steps(&case, &expected),
        pair.target_name(),
        describe_steps(&case, &actual),
        explain_difference(&expected, &actual)
    );
}

#[test]
fn size_histogram_matches_memcached() {
    sizes_match(&[]);
}

/// memcached needs cas-uniques for the histogram: with `-C` it refuses.
#[test]
fn size_histogram_without_cas_matches_memcached() {
    sizes_match(&["-C"]);
}

/// `set <key> <flags> 0 <len>` with a value whose bytes change along it (a
/// page of it read in the wrong place or order shows).
fn set_patterned(cmd: &str, key: &str, len: usize, seed: u8) -> Vec<u8> {
    let mut req = format!("{cmd} {key} 0 0 {len}\r\n").into_bytes();
    req.extend((0..len).map(|i| b'a' + ((i / 4093 + i % 7 + seed as usize) % 26) as u8));
    req.extend_from_slice(b"\r\n");
    req
}

/// Items larger than a page (`-I 4m`): memcached chains them over chunks,
/// we over pages (docs/memory.md); to a client both store and serve the
/// same bytes, refuse the same sizes, and join appends the same way.
#[test]
fn items_larger_than_a_page_match_memcached() {
    let pair = Pair::start_with(&["-I", "4m"], &[]);
    // At -I 4m: header (48) + cas (8) + key + 1 + value + 2 must fit in
    // 4194304 bytes.
    let limit = 4194304 - 48 - 8 - 4 - 1 - 2;
    let cases = vec![
        case_steps(
            "values of one to four pages",
            [1 << 20, (1 << 20) + 1, 1_500_000, 3_000_000, limit]
                .iter()
                .enumerate()
                .flat_map(|(i, &len)| {
                    [
                        Step::Exchange(set_patterned("set", &format!("big{i}"), len, i as u8)),
                        Step::Exchange(format!("get big{i}\r\n").into_bytes()),
                    ]
                })
                .collect(),
        ),
        case_steps(
            "one byte over -I is refused and the old value dropped",
            vec![
                Step::Exchange(b"set lim1 0 0 2\r\nok\r\n".to_vec()),
                Step::Exchange(set_patterned("set", "lim1", limit + 1, 3)),
                Step::Exchange(b"get lim1\r\n".to_vec()),
            ],
        ),
        case_steps(
            "append and prepend across pages, then gets, touch, mg, incr and ma",
            vec![
                Step::Exchange(set_patterned("set", "cat1", 1_048_000, 1)),
                Step::Exchange(set_patterned("append", "cat1", 700_000, 2)),
                Step::Exchange(set_patterned("prepend", "cat1", 5, 9)),
                Step::Exchange(b"gets cat1\r\n".to_vec()),
                Step::Exchange(b"touch cat1 100\r\n".to_vec()),
                Step::Exchange(b"mg cat1 s v t f\r\n".to_vec()),
                Step::Exchange(set_patterned("append", "cat1", 3_000_000, 4)),
                Step::Exchange(b"get cat1\r\n".to_vec()),
                Step::Exchange(b"incr cat1 1\r\n".to_vec()),
                Step::Exchange(b"ma cat1 v\r\n".to_vec()),
                Step::Exchange(b"delete cat1\r\n".to_vec()),
                Step::Exchange(b"get cat1\r\n".to_vec()),
            ],
        ),
        case_steps("incr at memcached's chunk size, 512 KiB", {
            let padded = |len: usize| {
                let mut set = format!("set num2 0 0 {len}\r\n5").into_bytes();
                set.resize(set.len() + len - 1, b' ');
                set.extend_from_slice(b"\r\n");
                Step::Exchange(set)
            };
            vec![
                padded(524_225),
                Step::Exchange(b"incr num2 1\r\n".to_vec()),
                padded(524_226),
                Step::Exchange(b"incr num2 1\r\n".to_vec()),
            ]
        }),
        case_steps("incr and decr of a number padded past a page", {
            let mut set = b"set num1 0 0 2000000\r\n5".to_vec();
            set.resize(set.len() + 1_999_999, b' ');
            set.extend_from_slice(b"\r\n");
            vec![
                Step::Exchange(set),
                Step::Exchange(b"incr num1 1\r\n".to_vec()),
                Step::Exchange(b"decr num1 1\r\n".to_vec()),
                Step::Exchange(b"ma num1 v\r\n".to_vec()),
                Step::Exchange(b"mg num1 s\r\n".to_vec()),
            ]
        }),
    ];
    for case in &cases {
        let expected = run_case(pair.reference.port(), case);
        let actual = run_case(pair.target.port(), case);
        assert!(
            expected == actual,
            "{}: {} differs from memcached\n{}",
            case.name,
            pair.target_name(),
            explain_difference(&expected, &actual)
        );
    }
}

// ---------------------------------------------------------------------------
// Part b: a seeded random sequence in lock-step
// ---------------------------------------------------------------------------

const KEYS: usize = 20;
const BATCH: usize = 50;
const DEFAULT_STEPS: usize = 20_000;

fn key_name(i: usize) -> String {
    // The last key is as long as keys get.
    if i == KEYS - 1 {
        format!("{}{i}", "r".repeat(248))
    } else {
        format!("r{i}")
    }
}

/// The cas to send in a `cas` command.
#[derive(Debug, Clone, Copy)]
enum CasChoice {
    /// The cas this server last returned for the key (a wrong one if none).
    Known,
    /// A value neither server hands out.
    Wrong(u64),
}

/// A command, before the cas is filled in per server.
#[derive(Debug, Clone)]
enum Op {
    Store {
        verb: &'static str,
        key: usize,
        flags: u32,
        exptime: i64,
        value: Vec<u8>,
        cas: Option<CasChoice>,
        noreply: bool,
    },
    Get {
        verb: &'static str,
        keys: Vec<usize>,
    },
    Gat {
        verb: &'static str,
        exptime: i64,
        keys: Vec<usize>,
    },
    Delete {
        key: usize,
        noreply: bool,
    },
    Arith {
        verb: &'static str,
        key: usize,
        delta: String,
        noreply: bool,
    },
    Touch {
        key: usize,
        exptime: i64,
        noreply: bool,
    },
}

/// What a command answers: nothing, one line, or VALUE blocks up to END.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Nothing,
    Line,
    Values,
}

impl Op {
    fn shape(&self) -> Shape {
        match self {
            Op::Get { .. } | Op::Gat { .. } => Shape::Values,
            Op::Store { noreply, .. }
            | Op::Delete { noreply, .. }
            | Op::Arith { noreply, .. }
            | Op::Touch { noreply, .. } => {
                if *noreply {
                    Shape::Nothing
                } else {
                    Shape::Line
                }
            }
        }
    }

    fn render(&self, known: &HashMap<usize, u64>) -> Vec<u8> {
        let nr = |noreply: bool| if noreply { " noreply" } else { "" };
        let keys = |keys: &[usize]| {
            keys.iter()
                .map(|&k| key_name(k))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Op::Store {
                verb,
                key,
                flags,
                exptime,
                value,
                cas,
                noreply,
            } => {
                let cas = match cas {
                    None => String::new(),
                    Some(CasChoice::Known) => {
                        format!(" {}", known.get(key).copied().unwrap_or(1 << 62))
                    }
                    Some(CasChoice::Wrong(c)) => format!(" {c}"),
                };
                let mut out = format!(
                    "{verb} {} {flags} {exptime} {}{cas}{}\r\n",
                    key_name(*key),
                    value.len(),
                    nr(*noreply)
                )
                .into_bytes();
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
                out
            }
            Op::Get { verb, keys: k } => format!("{verb} {}\r\n", keys(k)).into_bytes(),
            Op::Gat {
                verb,
                exptime,
                keys: k,
            } => format!("{verb} {exptime} {}\r\n", keys(k)).into_bytes(),
            Op::Delete { key, noreply } => {
                format!("delete {}{}\r\n", key_name(*key), nr(*noreply)).into_bytes()
            }
            Op::Arith {
                verb,
                key,
                delta,
                noreply,
            } => format!("{verb} {} {delta}{}\r\n", key_name(*key), nr(*noreply)).into_bytes(),
            Op::Touch {
                key,
                exptime,
                noreply,
            } => format!("touch {} {exptime}{}\r\n", key_name(*key), nr(*noreply)).into_bytes(),
        }
    }
}

fn random_exptime(rng: &mut XorShift) -> i64 {
    match rng.below(20) {
        0 => -1,
        1 => 2_000_000_000, // absolute, 2033
        2 => 86_400,        // relative, a day
        _ => 0,
    }
}

/// Numbers stay far below 2^63 here, and arith deltas too: for a value of
/// 2^63 or more, memcached's safe_strtoull looks for a '-' with strchr past
/// the value's end, into whatever the chunk held before, so its answer
/// depends on stale memory (seen: "non-numeric" for 18446744073709551615 in
/// one run, a number in the next). The table cases cover those values on
/// fresh items.
fn random_value(rng: &mut XorShift) -> Vec<u8> {
    match rng.below(10) {
        0..=2 => rng.below(1000).to_string().into_bytes(),
        3 => rng.below(1 << 32).to_string().into_bytes(),
        4 => (u64::from(u32::MAX) - rng.below(3))
            .to_string()
            .into_bytes(),
        _ => {
            const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ABC\r\n\t\x00\xff";
            let len = rng.below(300) as usize;
            let mut value: Vec<u8> = (0..len).map(|_| *rng.pick(CHARS)).collect();
            // A value of only whitespace makes memcached's incr read past its
            // end into stale memory (tests/regressions.rs pins it).
            if value.iter().all(u8::is_ascii_whitespace) && !value.is_empty() {
                value[0] = b'w';
            }
            value
        }
    }
}

fn random_keys(rng: &mut XorShift) -> Vec<usize> {
    (0..1 + rng.below(4))
        .map(|_| rng.below(KEYS as u64) as usize)
        .collect()
}

fn random_op(rng: &mut XorShift) -> Op {
    let key = rng.below(KEYS as u64) as usize;
    let noreply = rng.chance(15);
    // The storage verbs differ only in the verb and, for cas, the unique.
    let store = |rng: &mut XorShift, verb: &'static str, cas: Option<CasChoice>| Op::Store {
        verb,
        key,
        flags: random_flags(rng),
        exptime: random_exptime(rng),
        value: random_value(rng),
        cas,
        noreply,
    };
    match rng.below(100) {
        0..=17 => store(rng, "set", None),
        18..=23 => store(rng, "add", None),
        24..=29 => store(rng, "replace", None),
        30..=34 => store(rng, "append", None),
        35..=39 => store(rng, "prepend", None),
        40..=47 => {
            let cas = if rng.chance(75) {
                CasChoice::Known
            } else if rng.chance(50) {
                CasChoice::Wrong(0)
            } else {
                CasChoice::Wrong((1 << 62) + rng.below(1 << 20))
            };
            store(rng, "cas", Some(cas))
        }
        48..=59 => Op::Get {
            verb: "get",
            keys: random_keys(rng),
        },
        60..=69 => Op::Get {
            verb: "gets",
            keys: random_keys(rng),
        },
        70..=74 => Op::Delete { key, noreply },
        75..=82 => {
            let delta = match rng.below(10) {
                0 => u32::MAX.to_string(),
                1 => rng.below(1 << 32).to_string(),
                2 => "abc".to_string(),
                _ => rng.below(100).to_string(),
            };
            Op::Arith {
                verb: if rng.chance(50) { "incr" } else { "decr" },
                key,
                delta,
                noreply,
            }
        }
        83..=89 => Op::Touch {
            key,
            exptime: random_exptime(rng),
            noreply,
        },
        _ => Op::Gat {
            verb: if rng.chance(50) { "gat" } else { "gats" },
            exptime: random_exptime(rng),
            keys: random_keys(rng),
        },
    }
}

fn random_flags(rng: &mut XorShift) -> u32 {
    if rng.chance(70) {
        0
    } else {
        rng.next_u64() as u32
    }
}

/// The next batch of at most `max` commands.
///
/// memcached rewrites an incr/decr result in place (padded with spaces) only
/// while no unsent reply still holds the item; a `get` of the key earlier in
/// the same pipeline may or may not have been written out by then, so the
/// stored length is not deterministic. A batch therefore ends before an
/// incr/decr of a key it has already read; that command starts the next batch.
fn next_batch(rng: &mut XorShift, carry: &mut Option<Op>, max: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(max);
    let mut read = HashSet::new();
    while ops.len() < max {
        let op = carry.take().unwrap_or_else(|| random_op(rng));
        match &op {
            Op::Arith { key, .. } if read.contains(key) => {
                *carry = Some(op);
                break;
            }
            Op::Get { keys, .. } | Op::Gat { keys, .. } => read.extend(keys.iter().copied()),
            _ => {}
        }
        ops.push(op);
    }
    ops
}

/// Split a batch's replies into one reply per command, by each command's shape.
fn split_replies(mut buf: &[u8], shapes: &[Shape]) -> Result<Vec<Vec<u8>>, String> {
    fn line(buf: &[u8]) -> Option<usize> {
        buf.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
    }
    let mut replies = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.iter().enumerate() {
        let len = match shape {
            Shape::Nothing => 0,
            Shape::Line => line(buf).ok_or_else(|| format!("command {i}: no reply line"))?,
            Shape::Values => {
                let mut at = 0;
                loop {
                    let end = at
                        + line(&buf[at..])
                            .ok_or_else(|| format!("command {i}: unterminated reply"))?;
                    let l = &buf[at..end - 2];
                    if l.starts_with(b"VALUE ") {
                        let bytes = l.split(|&b| b == b' ').nth(3).and_then(parse_u64);
                        let bytes = bytes
                            .ok_or_else(|| format!("command {i}: bad VALUE line {}", escape(l)))?;
                        at = end + bytes as usize + 2;
                        if at > buf.len() {
                            return Err(format!("command {i}: short data block"));
                        }
                    } else {
                        // END, or an error line instead of values.
                        break end;
                    }
                }
            }
        };
        replies.push(buf[..len].to_vec());
        buf = &buf[len..];
    }
    if buf.is_empty() {
        Ok(replies)
    } else {
        Err(format!(
            "{} bytes left over after the last reply: {}",
            buf.len(),
            escape(buf)
        ))
    }
}

/// A batch's replies, one per command; or why they could not be split, and the raw bytes.
type BatchReplies = Result<Vec<Vec<u8>>, (String, Vec<u8>)>;

/// One server's connection in the lock-step run.
struct Side {
    conn: Conn,
    /// key -> the cas this server last returned for it.
    known: HashMap<usize, u64>,
    names: CasNames,
}

impl Side {
    fn new(server: &Server) -> Side {
        Side {
            conn: server.connect(),
            known: HashMap::new(),
            names: CasNames::default(),
        }
    }

    /// Send a batch, return (rendered requests, normalised per-command replies).
    fn run(&mut self, ops: &[Op]) -> (Vec<Vec<u8>>, BatchReplies) {
        let requests: Vec<Vec<u8>> = ops.iter().map(|op| op.render(&self.known)).collect();
        let reply = self.conn.exchange(&requests.concat());
        if reply.ending != Ending::Sentinel {
            return (
                requests,
                Err((format!("reply ended by {:?}", reply.ending), reply.bytes)),
            );
        }
        let shapes: Vec<Shape> = ops.iter().map(Op::shape).collect();
        let parts = match split_replies(&reply.bytes, &shapes) {
            Ok(parts) => parts,
            Err(why) => return (requests, Err((why, reply.bytes))),
        };
        let mut normalised = Vec::with_capacity(parts.len());
        for (op, part) in ops.iter().zip(&parts) {
            if let Op::Get { verb: "gets", keys }
            | Op::Gat {
                verb: "gats", keys, ..
            } = op
            {
                self.learn_cas(keys, part);
            }
            normalised.push(normalize_cas(part, &mut self.names));
        }
        (requests, Ok(normalised))
    }

    fn learn_cas(&mut self, keys: &[usize], reply: &[u8]) {
        for line in reply.split(|&b| b == b'\n') {
            let fields: Vec<&[u8]> = line
                .strip_suffix(b"\r")
                .unwrap_or(line)
                .split(|&b| b == b' ')
                .collect();
            if fields.len() == 5 && fields[0] == b"VALUE" {
                let key = keys.iter().find(|&&k| key_name(k).as_bytes() == fields[1]);
                if let (Some(&key), Some(cas)) = (key, parse_u64(fields[4])) {
                    self.known.insert(key, cas);
                }
            }
        }
    }
}

#[test]
fn random_sequence_matches_memcached() {
    // A fixed default seed: memcached itself is not deterministic under some
    // pipelined sequences (an incr/decr of an item that a reply in flight
    // still holds, LRU bumps), so a fresh seed per run could fail on
    // memcached's side now and then. SHMCACHED_TEST_SEED explores others.
    let seed = std::env::var("SHMCACHED_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_1126);
    let steps: usize = std::env::var("SHMCACHED_DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_STEPS);
    eprintln!(
        "random sequence: seed {seed} (SHMCACHED_TEST_SEED={seed} replays it), {steps} commands"
    );
    // With the segmented LRU, a second fetch of an item in the COLD LRU queues
    // an asynchronous bump that holds a reference to the item for a few ms;
    // while it is held, incr/decr allocates a new item of the exact length
    // instead of padding in place, so the stored length would depend on timing.
    // Without the LRU maintainer memcached always pads in place.
    let pair = Pair::start(&["-o", "no_lru_maintainer"]);
    let mut rng = XorShift::new(seed);
    let mut reference = Side::new(&pair.reference);
    let mut target = Side::new(&pair.target);
    let mut history: Vec<Vec<u8>> = Vec::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();

    // SHMCACHED_DIFF_TRACE=<file> writes every command and memcached's reply
    // there, to explain a difference whose cause lies further back.
    let mut trace = std::env::var_os("SHMCACHED_DIFF_TRACE")
        .map(|p| std::fs::File::create(p).expect("SHMCACHED_DIFF_TRACE: cannot create"));
    let mut carry = None;
    let mut done = 0;
    while done < steps {
        let ops = next_batch(&mut rng, &mut carry, BATCH.min(steps - done));
        let (requests, expected) = reference.run(&ops);
        let (_, actual) = target.run(&ops);
        let expected = expected.unwrap_or_else(|(why, raw)| {
            panic!("seed {seed}: memcached's reply to the batch at step {done} did not parse ({why}): {}", escape(&raw))
        });
        let context = |upto: usize, history: &[Vec<u8>]| -> String {
            let mut all: Vec<&Vec<u8>> = history.iter().collect();
            all.extend(&requests[..=upto]);
            let from = all.len().saturating_sub(8);
            // Earlier commands on the differing command's key explain its state.
            let key = all
                .last()
                .and_then(|r| r.split(|&b| b == b' ' || b == b'\r').nth(1))
                .unwrap_or_default()
                .to_vec();
            let on_key = |r: &Vec<u8>| {
                !key.is_empty()
                    && r.split(|&b| b == b' ' || b == b'\r')
                        .any(|t| t == key.as_slice())
            };
            let earlier: Vec<&Vec<u8>> =
                all[..from].iter().copied().filter(|r| on_key(r)).collect();
            let earlier = &earlier[earlier.len().saturating_sub(12)..];
            let mut text = String::new();
            if !earlier.is_empty() {
                text.push_str("    (earlier, on the same key:)\n");
                for r in earlier {
                    text.push_str(&format!("    {}\n", escape(r)));
                }
                text.push_str("    (then:)\n");
            }
            for r in &all[from..] {
                text.push_str(&format!("    {}\n", escape(r)));
            }
            text
        };
        match actual {
            Err((why, raw)) => {
                let expected_raw: Vec<u8> = expected.concat();
                panic!(
                    "seed {seed}: {}'s reply to the batch of steps {done}..{} did not parse: {why}\n  memcached: {}\n  {}: {}\n  batch:\n{}",
                    pair.target_name(),
                    done + ops.len(),
                    escape(&expected_raw),
                    pair.target_name(),
                    escape(&raw),
                    context(ops.len() - 1, &history)
                );
            }
            Ok(actual) => {
                for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
                    if let Some(trace) = &mut trace {
                        use std::io::Write;
                        let _ = writeln!(
                            trace,
                            "{} {}\n  = {}",
                            done + i,
                            escape(&requests[i]),
                            escape(e)
                        );
                    }
                    if e != a {
                        panic!(
                            "seed {seed}: step {} differs\n  last commands (as sent to memcached):\n{}  memcached: {}\n  {}: {}",
                            done + i,
                            context(i, &history),
                            escape(e),
                            pair.target_name(),
                            escape(a)
                        );
                    }
                    let verb = requests[i].split(|&b| b == b' ').next().unwrap_or_default();
                    let first_line = e.split(|&b| b == b'\r').next().unwrap_or_default();
                    let outcome = if first_line.starts_with(b"VALUE") {
                        "VALUE".to_string()
                    } else if first_line.first().is_some_and(u8::is_ascii_digit) {
                        "<number>".to_string()
                    } else {
                        String::from_utf8_lossy(first_line).into_owned()
                    };
                    *outcomes
                        .entry(format!("{} {outcome}", String::from_utf8_lossy(verb)))
                        .or_default() += 1;
                }
            }
        }
        history.extend(requests);
        if history.len() > 1024 {
            history.drain(..history.len() - 1024);
        }
        done += ops.len();
    }
    let mut summary: Vec<_> = outcomes.into_iter().collect();
    summary.sort();
    eprintln!("{steps} commands in {:?}; outcomes:", started.elapsed());
    for (outcome, n) in summary {
        eprintln!("  {n:6} {outcome}");
    }
}
