//! The `-Y <file>` credentials: memcached's ASCII authentication.
//!
//! ```text
//! user:password\n
//! user2:password2\n
//! ```
//!
//! One entry a line: the user is everything before the first `:`, the password
//! everything after it up to the end of the line or a `\r` (so CRLF files work).
//! A line without a `:` (an empty line too) is memcached's "malformed entry"; an
//! empty file is accepted and lets nobody in, as memcached does.
//!
//! memcached 1.6.18 also reads at most 8 entries of at most 255 bytes, ignoring
//! the rest without a word, and drops the last byte of the password of a
//! one-line file without a final newline; shmcached reads every entry whole
//! (docs/compatibility.md).

use std::fmt;
use std::path::Path;

/// The users and passwords of a `-Y` file, loaded once at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    user: Vec<u8>,
    password: Vec<u8>,
}

/// Never prints a password (settings are logged with `{:?}`).
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Credentials {
    /// Read `path`; the error is memcached's sentence for it.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let shown = path.display();
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "Could not open authfile [{shown}] for reading, error {}",
                strerror(&e)
            )
        })?;
        Credentials::parse(&text).map_err(|line| {
            format!(
                "Authfile [{shown}] has a malformed entry. Should be 'user:password' (line {line})"
            )
        })
    }

    /// The entries of a file's bytes, or the 1-based line of the first malformed one.
    fn parse(text: &[u8]) -> Result<Credentials, usize> {
        let mut entries = Vec::new();
        if text.is_empty() {
            return Ok(Credentials { entries });
        }
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let colon = line.iter().position(|&b| b == b':').ok_or(i + 1)?;
            let password = &line[colon + 1..];
            let end = password
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(password.len());
            entries.push(Entry {
                user: line[..colon].to_vec(),
                password: password[..end].to_vec(),
            });
        }
        Ok(Credentials { entries })
    }

    /// Whether `user` and `password` are an entry's. Every entry is compared in
    /// full, so the time taken tells nothing about how close a guess came.
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let mut found = false;
        for entry in &self.entries {
            let same =
                constant_time_eq(&entry.user, user) & constant_time_eq(&entry.password, password);
            found |= same;
        }
        found
    }
}

/// `known == given`, in a time that depends on `known`'s length only.
fn constant_time_eq(known: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(known.len() != given.len());
    for (i, &k) in known.iter().enumerate() {
        diff |= k ^ given.get(i).copied().unwrap_or(!k);
    }
    std::hint::black_box(diff) == 0
}

/// The C library's words for an I/O error, without Rust's " (os error N)".
fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => nix::errno::Errno::from_raw(errno).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &[u8]) -> Result<Vec<(String, String)>, usize> {
        Credentials::parse(text).map(|c| {
            c.entries
                .iter()
                .map(|e| {
                    (
                        String::from_utf8_lossy(&e.user).into_owned(),
                        String::from_utf8_lossy(&e.password).into_owned(),
                    )
                })
                .collect()
        })
    }

    fn own(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect()
    }

    /// What each file shape reads as (live: memcached 1.6.18 agrees except
    /// where a comment says otherwise).
    #[test]
    fn file_shapes() {
        // The entries, or the line of the malformed one.
        type Read = Result<&'static [(&'static str, &'static str)], usize>;
        let table: &[(&[u8], Read)] = &[
            (b"", Ok(&[])),
            (b"user:secret\n", Ok(&[("user", "secret")])),
            (b"a:b\nc:dd\n", Ok(&[("a", "b"), ("c", "dd")])),
            // memcached: "u" / "p" (the last byte is dropped).
            (b"u:pw", Ok(&[("u", "pw")])),
            (b"a:b\nc:dd", Ok(&[("a", "b"), ("c", "dd")])),
            // memcached refuses a one-line CRLF file, reads a longer one.
            (b"u:p\r\n", Ok(&[("u", "p")])),
            (b"a:b\r\nc:d\r\n", Ok(&[("a", "b"), ("c", "d")])),
            (b"a:b:c\n", Ok(&[("a", "b:c")])),
            (b":\n", Ok(&[("", "")])),
            (b"u :p q\n", Ok(&[("u ", "p q")])),
            (b"\n", Err(1)),
            (b"u:p\n\n", Err(2)),
            (b"\nu:p\n", Err(1)),
            (b"up\n", Err(1)),
            (b"a:b\nxx\nc:d\n", Err(2)),
        ];
        for (text, want) in table {
            let want = want.map(own);
            assert_eq!(pairs(text), want, "{}", text.escape_ascii());
        }
        // No entry limit (memcached: 8), no line limit (memcached: 255 bytes).
        let many: String = (0..20).map(|i| format!("u{i}:p{i}\n")).collect();
        assert_eq!(pairs(many.as_bytes()).map(|p| p.len()), Ok(20));
        let long = format!("a:{}\nb:c\n", "x".repeat(300));
        assert_eq!(pairs(long.as_bytes()).map(|p| p[0].1.len()), Ok(300));
    }

    #[test]
    fn check_needs_user_and_password_of_one_entry() {
        let c = Credentials::parse(b"user:secret\nother:pw2\n").unwrap();
        assert!(c.check(b"user", b"secret"));
        assert!(c.check(b"other", b"pw2"));
        for (user, password) in [
            (&b"user"[..], &b"pw2"[..]),
            (b"other", b"secret"),
            (b"user", b"secre"),
            (b"user", b"secrett"),
            (b"user", b""),
            (b"", b""),
            (b"USER", b"secret"),
            (b"use", b"secret"),
        ] {
            assert!(!c.check(user, password), "{user:?} {password:?}");
        }
        let empty = Credentials::parse(b"").unwrap();
        assert!(!empty.check(b"", b""));
    }

    #[test]
    fn debug_hides_passwords() {
        let c = Credentials::parse(b"user:secret\n").unwrap();
        assert_eq!(format!("{c:?}"), "Credentials { entries: 1 }");
    }

    #[test]
    fn load_errors_are_memcacheds() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("shmcached-no-auth-{}", std::process::id()));
        assert_eq!(
            Credentials::load(&missing).unwrap_err(),
            format!(
                "Could not open authfile [{}] for reading, error No such file or directory",
                missing.display()
            )
        );
        let bad = dir.join(format!("shmcached-bad-auth-{}", std::process::id()));
        std::fs::write(&bad, b"user:secret\nnocolon\n").unwrap();
        let got = Credentials::load(&bad).unwrap_err();
        let _ = std::fs::remove_file(&bad);
        assert_eq!(
            got,
            format!(
                "Authfile [{}] has a malformed entry. Should be 'user:password' (line 2)",
                bad.display()
            )
        );
    }
}
