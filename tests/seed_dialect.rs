//! The seed's dialect (PROTOCOL.md §8), served by shmcached beside memcached's
//! text protocol: `SET <name> <size>\r\n<data>`, `GET <name>\r\n`,
//! `DELETE <name>\r\n`, one request per connection, which the server closes
//! after its reply.
//!
//! The server runs as `shmcached ... 100 64`: the seed's positional
//! `num_elements element_size`, so a `SET` over 64 bytes is `ERR INVALID_SIZE`.

mod common;

use common::{Conn, Ending, Server, escape};

const ELEMENT_SIZE: usize = 64;

fn server() -> Server {
    Server::shmcached(&["100", &ELEMENT_SIZE.to_string()])
}

/// Send one request on a new connection; return the reply, checking that the
/// server closed the connection after it.
fn request(server: &Server, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut conn = server.connect();
    conn.send(bytes);
    let reply = conn.read_to_eof();
    match reply.ending {
        Ending::Closed => Ok(reply.bytes),
        ending => Err(format!(
            "connection not closed after the reply ({ending:?}); got {}",
            escape(&reply.bytes)
        )),
    }
}

/// Run each case's steps (one connection per step, in order) and report every
/// step whose reply differs, all cases at once.
fn check_table(server: &Server, cases: &[(&str, Vec<Step>)]) {
    let mut failures = Vec::new();
    for (name, steps) in cases {
        for (i, (req, expected)) in steps.iter().enumerate() {
            match request(server, req) {
                Ok(actual) if &actual == expected => {}
                Ok(actual) => failures.push(format!(
                    "{name}, step {i}: {}\n  expected {}\n  got      {}",
                    escape(req),
                    escape(expected),
                    escape(&actual)
                )),
                Err(why) => failures.push(format!(
                    "{name}, step {i}: {}\n  expected {}\n  {why}",
                    escape(req),
                    escape(expected)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} seed-dialect steps failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `(request, expected reply)`.
type Step = (Vec<u8>, Vec<u8>);

fn step(req: impl AsRef<[u8]>, reply: impl AsRef<[u8]>) -> Step {
    (req.as_ref().to_vec(), reply.as_ref().to_vec())
}

#[test]
fn set_get_delete() {
    let server = server();
    let name120 = "n".repeat(120);
    let full = "f".repeat(ELEMENT_SIZE);
    check_table(
        &server,
        &[
            (
                "SET then GET: the data comes back raw, without a trailing CRLF",
                vec![
                    step("SET alpha 5\r\nhello", "OK\r\n"),
                    step("GET alpha\r\n", "OK 5\r\nhello"),
                ],
            ),
            (
                "a trailing CRLF after SET's data is optional",
                vec![
                    step("SET beta 3\r\nabc\r\n", "OK\r\n"),
                    step("GET beta\r\n", "OK 3\r\nabc"),
                ],
            ),
            (
                "SET overwrites",
                vec![
                    step("SET gamma 1\r\nx", "OK\r\n"),
                    step("SET gamma 4\r\nwxyz", "OK\r\n"),
                    step("GET gamma\r\n", "OK 4\r\nwxyz"),
                ],
            ),
            (
                "data may hold CR, LF and any byte",
                vec![
                    step(b"SET delta 6\r\n\r\n\x00\xff\r\n", "OK\r\n"),
                    step("GET delta\r\n", b"OK 6\r\n\r\n\x00\xff\r\n"),
                ],
            ),
            (
                "DELETE answers OK 1 when the name existed, OK 0 when not",
                vec![
                    step("SET epsilon 1\r\ne", "OK\r\n"),
                    step("DELETE epsilon\r\n", "OK 1\r\n"),
                    step("DELETE epsilon\r\n", "OK 0\r\n"),
                    step("GET epsilon\r\n", "ERR NOT_FOUND\r\n"),
                ],
            ),
            (
                "GET of a missing name",
                vec![step("GET nosuchname\r\n", "ERR NOT_FOUND\r\n")],
            ),
            (
                "names are case-sensitive",
                vec![
                    step("SET Zeta 1\r\nZ", "OK\r\n"),
                    step("GET zeta\r\n", "ERR NOT_FOUND\r\n"),
                ],
            ),
            (
                "a 120-byte name is fine",
                vec![
                    step(format!("SET {name120} 2\r\nok"), "OK\r\n"),
                    step(format!("GET {name120}\r\n"), "OK 2\r\nok"),
                ],
            ),
            (
                "a value of exactly the element size is fine",
                vec![
                    step(format!("SET eta {ELEMENT_SIZE}\r\n{full}"), "OK\r\n"),
                    step("GET eta\r\n", format!("OK {ELEMENT_SIZE}\r\n{full}")),
                ],
            ),
            (
                "tokens may be split by tabs",
                vec![
                    step("SET\ttheta\t2\r\nth", "OK\r\n"),
                    step("GET\ttheta\r\n", "OK 2\r\nth"),
                ],
            ),
            (
                "digits in names",
                vec![
                    step("SET 0abc9Z 1\r\n1", "OK\r\n"),
                    step("GET 0abc9Z\r\n", "OK 1\r\n1"),
                ],
            ),
        ],
    );
}

#[test]
fn errors() {
    let server = server();
    let name121 = "n".repeat(121);
    let over = ELEMENT_SIZE + 1;
    check_table(
        &server,
        &[
            (
                "GET without a name",
                vec![step("GET\r\n", "ERR INVALID_COMMAND\r\n")],
            ),
            (
                "GET with two names",
                vec![step("GET a b\r\n", "ERR INVALID_COMMAND\r\n")],
            ),
            (
                "SET without a size",
                vec![step("SET a\r\n", "ERR INVALID_COMMAND\r\n")],
            ),
            (
                "SET with an extra token",
                vec![step("SET a 1 2\r\n", "ERR INVALID_COMMAND\r\n")],
            ),
            (
                "DELETE without a name",
                vec![step("DELETE\r\n", "ERR INVALID_COMMAND\r\n")],
            ),
            (
                "DELETE with two names",
                vec![step("DELETE a b\r\n", "ERR INVALID_COMMAND\r\n")],
            ),
            (
                "GET of a 121-byte name",
                vec![step(format!("GET {name121}\r\n"), "ERR NAME_TOO_LONG\r\n")],
            ),
            (
                "SET of a 121-byte name",
                vec![step(
                    format!("SET {name121} 1\r\n"),
                    "ERR NAME_TOO_LONG\r\n",
                )],
            ),
            (
                "DELETE of a 121-byte name",
                vec![step(
                    format!("DELETE {name121}\r\n"),
                    "ERR NAME_TOO_LONG\r\n",
                )],
            ),
            (
                "GET of a name with a dash",
                vec![step("GET a-b\r\n", "ERR BAD_NAME\r\n")],
            ),
            (
                "SET of a name with an underscore",
                vec![step("SET a_b 1\r\n", "ERR BAD_NAME\r\n")],
            ),
            (
                "DELETE of a name with a dot",
                vec![step("DELETE a.b\r\n", "ERR BAD_NAME\r\n")],
            ),
            (
                "GET of a name with a non-ASCII byte",
                vec![step(b"GET a\xe9b\r\n", "ERR BAD_NAME\r\n")],
            ),
            (
                "SET size abc",
                vec![step("SET iota abc\r\n", "ERR INVALID_SIZE\r\n")],
            ),
            (
                "SET size 0",
                vec![step("SET iota 0\r\n", "ERR INVALID_SIZE\r\n")],
            ),
            (
                "SET size -1",
                vec![step("SET iota -1\r\n", "ERR INVALID_SIZE\r\n")],
            ),
            (
                "SET size 1x",
                vec![step("SET iota 1x\r\n", "ERR INVALID_SIZE\r\n")],
            ),
            (
                "SET size over the element size",
                vec![step(format!("SET iota {over}\r\n"), "ERR INVALID_SIZE\r\n")],
            ),
            (
                "a refused SET stores nothing",
                vec![step("GET iota\r\n", "ERR NOT_FOUND\r\n")],
            ),
        ],
    );
}

#[test]
fn too_small_when_the_client_stops_sending() {
    let server = server();
    let mut conn = server.connect();
    conn.send(b"SET kappa 10\r\nabc");
    conn.shutdown_write();
    let reply = conn.read_to_eof();
    assert_eq!(
        (escape(&reply.bytes), reply.ending),
        (escape(b"ERR TOO_SMALL\r\n"), Ending::Closed),
        "SET with 3 of 10 bytes, then EOF"
    );
    assert_eq!(
        request(&server, b"GET kappa\r\n"),
        Ok(b"ERR NOT_FOUND\r\n".to_vec()),
        "nothing stored"
    );
}

#[test]
fn the_connection_closes_after_each_reply() {
    let server = server();
    for req in [
        &b"SET lambda 1\r\nl"[..],
        b"GET lambda\r\n",
        b"DELETE lambda\r\n",
        b"GET lambda\r\n",
        b"GET\r\n",
    ] {
        let mut conn = server.connect();
        conn.send(req);
        let reply = conn.read_to_eof();
        assert_eq!(
            reply.ending,
            Ending::Closed,
            "after {} the server sent {} and kept the connection",
            escape(req),
            escape(&reply.bytes)
        );
    }
}

#[test]
fn both_dialects_share_one_store() {
    let server = server();
    // Seed SET, memcached get: flags 0.
    assert_eq!(
        request(&server, b"SET mu 5\r\nhello"),
        Ok(b"OK\r\n".to_vec())
    );
    let mut conn = server.connect();
    assert_eq!(
        escape(&conn.roundtrip(b"get mu\r\n")),
        escape(b"VALUE mu 0 5\r\nhello\r\nEND\r\n")
    );
    // memcached set (any flags), seed GET.
    assert_eq!(
        escape(&conn.roundtrip(b"set nu 42 0 3\r\nabc\r\n")),
        escape(b"STORED\r\n")
    );
    assert_eq!(
        request(&server, b"GET nu\r\n").map(|r| escape(&r)),
        Ok(escape(b"OK 3\r\nabc"))
    );
    // Deletes cross over too.
    assert_eq!(request(&server, b"DELETE nu\r\n"), Ok(b"OK 1\r\n".to_vec()));
    assert_eq!(
        escape(&conn.roundtrip(b"get nu\r\ndelete mu\r\n")),
        escape(b"END\r\nDELETED\r\n")
    );
    assert_eq!(
        request(&server, b"GET mu\r\n"),
        Ok(b"ERR NOT_FOUND\r\n".to_vec())
    );
    // The memcached connection is still open after all that.
    assert_eq!(
        escape(&conn.roundtrip(b"get mu nu\r\n")),
        escape(b"END\r\n")
    );
}

#[test]
fn memcached_commands_still_work_beside_the_seed_dialect() {
    let server = server();
    let mut conn: Conn = server.connect();
    assert_eq!(
        escape(&conn.roundtrip(b"set xi 0 0 1\r\nx\r\nget xi\r\n")),
        escape(b"STORED\r\nVALUE xi 0 1\r\nx\r\nEND\r\n")
    );
    // Lower-case words are memcached's; only upper-case SET/GET/DELETE are the seed's.
    assert_eq!(
        escape(&conn.roundtrip(b"PUT xi 1\r\n")),
        escape(b"ERROR\r\n")
    );
}
