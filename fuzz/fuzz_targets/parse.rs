//! Any bytes, parsed request by request as a worker parses a connection's
//! input: `consumed`, then `swallow`, then stop at `close` or `Incomplete`.
//!
//! Checked at each step: no panic; a decision takes at least one byte and
//! never more than there are; every command renders to bytes that parse back
//! to it, whole (`render` is the parser's inverse on what it accepts).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmcached::protocol::render::to_bytes;
use shmcached::protocol::{Limits, Parsed, parse};

#[path = "limits.rs"]
mod limits;
use limits::{DEFAULT, SMALL};

fuzz_target!(|input: &[u8]| {
    walk(input, &DEFAULT);
    walk(input, &SMALL);
});

fn walk(input: &[u8], limits: &Limits) {
    let mut at = 0;
    while at < input.len() {
        let rest = &input[at..];
        match parse(rest, limits) {
            Parsed::Incomplete => return,
            Parsed::Command { command, consumed } => {
                assert!(
                    (1..=rest.len()).contains(&consumed),
                    "{command:?} took {consumed} of {} bytes",
                    rest.len()
                );
                let rendered = to_bytes(&command);
                assert_eq!(
                    parse(&rendered, limits),
                    Parsed::Command {
                        command: command.clone(),
                        consumed: rendered.len()
                    },
                    "rendered as '{}'",
                    rendered.escape_ascii()
                );
                at += consumed;
            }
            Parsed::Error {
                consumed,
                swallow,
                close,
                ..
            } => {
                assert!(
                    (1..=rest.len()).contains(&consumed),
                    "error took {consumed} of {} bytes",
                    rest.len()
                );
                if close {
                    return;
                }
                at += consumed.saturating_add(swallow);
            }
        }
    }
}
