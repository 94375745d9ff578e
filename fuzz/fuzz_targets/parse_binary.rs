//! Any bytes, parsed as a binary-protocol connection's input, request by
//! request as the worker does: `consumed`, then `swallow`, then stop at a
//! close or `Incomplete`.
//!
//! Checked at each step: no panic; a decision takes at least a header's worth
//! of bytes (24) and never more than there are; a request's key and value lie
//! inside what it consumed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmcached::protocol::Limits;
use shmcached::protocol::binary::{HEADER_LEN, Parsed, parse};

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
            Parsed::Close => return,
            Parsed::Request { consumed, .. } => {
                assert!(
                    (HEADER_LEN..=rest.len()).contains(&consumed),
                    "a request took {consumed} of {} bytes",
                    rest.len()
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
                    (HEADER_LEN..=rest.len()).contains(&consumed),
                    "an error took {consumed} of {} bytes",
                    rest.len()
                );
                if close {
                    return;
                }
                at = at.saturating_add(consumed).saturating_add(swallow);
            }
        }
    }
}
