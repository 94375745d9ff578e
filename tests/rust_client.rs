//! shmcached through a Rust client library from crates.io: the `memcache`
//! crate (rust-memcache), text protocol, over TCP and over a unix socket
//! (`-s`). Every test runs against both transports, each on its own daemon.
//! `SHMCACHED_TEST_SERVER=memcached` runs memcached instead, to check the
//! tests themselves.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{SHMCACHED, Server, descendants, proc_stat, signal};
use memcache::{Client, MemcacheError};

/// A daemon on a unix socket in a directory of its own; killed on drop.
struct UnixServer {
    child: Child,
    dir: PathBuf,
    path: PathBuf,
}

impl UnixServer {
    fn start() -> UnixServer {
        let dir = std::env::temp_dir().join(format!(
            "shmcached-rust-client-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memcached.sock");
        let program = match common::Kind::target() {
            common::Kind::Shmcached => SHMCACHED,
            common::Kind::Memcached => common::MEMCACHED,
        };
        let child = Command::new(program)
            .args(["-u", "root", "-t", "2", "-s"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            assert!(Instant::now() < deadline, "no unix socket at {path:?}");
            thread::sleep(Duration::from_millis(20));
        }
        UnixServer { child, dir, path }
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let forked: Vec<_> = descendants(self.child.id())
            .into_iter()
            .filter_map(proc_stat)
            .collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in forked {
            if proc_stat(p.pid).is_some_and(|s| s.start_time == p.start_time) {
                let _ = signal(p.pid, common::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `scenario` with a client over TCP, then with one over the unix socket.
fn over_both(scenario: fn(&Client)) {
    let tcp = Server::target(&["-t", "2"]);
    let url = format!("memcache://127.0.0.1:{}?protocol=ascii", tcp.port());
    let client = Client::connect(url.as_str()).expect("connect over TCP");
    scenario(&client);

    let unix = UnixServer::start();
    // A URL with a path and no host is a unix socket to the crate.
    let url = format!("memcache://{}?protocol=ascii", unix.path.display());
    let client = Client::connect(url.as_str()).expect("connect over the unix socket");
    scenario(&client);
}

/// (The crate's text-protocol `stats()` stops at the first line and leaves
/// the rest in the stream; it is not used.)
#[test]
fn version() {
    over_both(|c| {
        let versions = c.version().unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].1, "1.6.18");
    });
}

#[test]
fn set_get_delete() {
    over_both(|c| {
        c.set("alpha", "one", 0).unwrap();
        assert_eq!(c.get::<String>("alpha").unwrap().as_deref(), Some("one"));
        assert_eq!(c.get::<String>("missing").unwrap(), None);
        c.set("num", 42u64, 0).unwrap();
        assert_eq!(c.get::<u64>("num").unwrap(), Some(42));
        let big = vec![7u8; 400_000];
        c.set("big", big.as_slice(), 0).unwrap();
        assert_eq!(c.get::<Vec<u8>>("big").unwrap(), Some(big));
        let (v, flags): (String, u32) = c.get("num").unwrap().unwrap();
        assert_eq!((v.as_str(), flags), ("42", 0));
        assert!(c.delete("alpha").unwrap());
        assert!(!c.delete("alpha").unwrap());
        assert_eq!(c.get::<String>("alpha").unwrap(), None);
    });
}

#[test]
fn multi_get() {
    over_both(|c| {
        for i in 0..30 {
            c.set(&format!("multi{i}"), format!("v{i}").as_str(), 0)
                .unwrap();
        }
        let keys: Vec<String> = (0..30)
            .map(|i| format!("multi{i}"))
            .chain(["multi-missing".to_string()])
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got: HashMap<String, String> = c.gets(&keys).unwrap();
        assert_eq!(got.len(), 30);
        for i in 0..30 {
            assert_eq!(got[&format!("multi{i}")], format!("v{i}"));
        }
    });
}

#[test]
fn gets_and_cas() {
    over_both(|c| {
        c.set("gamma", "first", 0).unwrap();
        let (v, _, cas): (String, u32, Option<u64>) = c.get("gamma").unwrap().unwrap();
        assert_eq!(v, "first");
        let cas = cas.expect("gets returns a cas unique");
        assert!(c.cas("gamma", "second", 0, cas).unwrap());
        // The cas unique changed with the write: the old one loses.
        assert!(!c.cas("gamma", "third", 0, cas).unwrap());
        assert_eq!(c.get::<String>("gamma").unwrap().as_deref(), Some("second"));
        let (_, _, fresh): (String, u32, Option<u64>) = c.get("gamma").unwrap().unwrap();
        assert_ne!(fresh, Some(cas));
        // cas on a missing key is NOT_FOUND: false, not an error.
        assert!(!c.cas("nogamma", "x", 0, 1).unwrap());
    });
}

#[test]
fn incr_decr() {
    over_both(|c| {
        c.set("counter", "10", 0).unwrap();
        assert_eq!(c.increment("counter", 5).unwrap(), 15);
        assert_eq!(c.decrement("counter", 20).unwrap(), 0);
        assert_eq!(
            c.increment("counter", u64::MAX).unwrap(),
            u64::MAX,
            "incr to the top"
        );
        assert_eq!(c.increment("counter", 1).unwrap(), 0, "wraps as memcached");
        // NOT_FOUND and a non-numeric value are the server's errors.
        assert!(matches!(
            c.increment("nocounter", 1),
            Err(MemcacheError::CommandError(_))
        ));
        c.set("text", "abc", 0).unwrap();
        let err = c.increment("text", 1).unwrap_err();
        assert!(
            matches!(err, MemcacheError::ClientError(_)),
            "{err:?} for incr on a non-number"
        );
    });
}

#[test]
fn add_replace_append_prepend() {
    over_both(|c| {
        // Over the text protocol the crate maps NOT_STORED to Ok: what was
        // stored shows whether the server refused.
        c.add("delta", "a", 0).unwrap();
        c.add("delta", "b", 0).unwrap();
        assert_eq!(c.get::<String>("delta").unwrap().as_deref(), Some("a"));
        c.replace("delta", "c", 0).unwrap();
        c.replace("nodelta", "c", 0).unwrap();
        assert_eq!(c.get::<String>("nodelta").unwrap(), None);
        c.append("nodelta", "x").unwrap();
        c.prepend("nodelta", "x").unwrap();
        assert_eq!(c.get::<String>("nodelta").unwrap(), None);
        c.append("delta", "-end").unwrap();
        c.prepend("delta", "start-").unwrap();
        assert_eq!(
            c.get::<String>("delta").unwrap().as_deref(),
            Some("start-c-end")
        );
    });
}

#[test]
fn touch_and_expiry() {
    over_both(|c| {
        c.set("zeta", "z", 100).unwrap();
        assert!(c.touch("zeta", 1000).unwrap());
        assert!(!c.touch("nozeta", 1000).unwrap());
        assert_eq!(c.get::<String>("zeta").unwrap().as_deref(), Some("z"));
        // Relative expiry times (up to 30 days): gone once they pass.
        assert!(c.touch("zeta", 1).unwrap());
        c.set("eta", "e", 2).unwrap();
        assert_eq!(c.get::<String>("eta").unwrap().as_deref(), Some("e"));
        thread::sleep(Duration::from_millis(3100));
        assert_eq!(c.get::<String>("zeta").unwrap(), None);
        assert_eq!(c.get::<String>("eta").unwrap(), None);
    });
}

#[test]
fn flush() {
    over_both(|c| {
        c.set("iota", "1", 0).unwrap();
        c.set("kappa", "2", 0).unwrap();
        c.flush().unwrap();
        assert_eq!(c.get::<String>("iota").unwrap(), None);
        assert_eq!(c.get::<String>("kappa").unwrap(), None);
        c.set("iota", "3", 0).unwrap();
        assert_eq!(c.get::<String>("iota").unwrap().as_deref(), Some("3"));
    });
}

/// The crate's default protocol is the binary one: the same kinds of
/// requests over TCP, with the binary protocol's stricter answers (a refused
/// add is an error; an incr of a missing key creates it from the initial
/// value the crate sends).
#[test]
fn binary_protocol() {
    let server = Server::target(&["-t", "2"]);
    let url = format!("memcache://127.0.0.1:{}", server.port());
    let c = Client::connect(url.as_str()).expect("connect over TCP, binary");
    assert!(!c.version().unwrap().is_empty());
    c.set("k", "v", 0).unwrap();
    assert_eq!(c.get::<String>("k").unwrap().as_deref(), Some("v"));
    assert!(matches!(
        c.add("k", "w", 0),
        Err(MemcacheError::CommandError(_))
    ));
    c.append("k", "-end").unwrap();
    c.prepend("k", "start-").unwrap();
    assert_eq!(
        c.get::<String>("k").unwrap().as_deref(),
        Some("start-v-end")
    );
    let keys = ["k", "none", "k2"];
    c.set("k2", 42u64, 0).unwrap();
    let got: HashMap<String, String> = c.gets(&keys).unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["k2"], "42");
    assert_eq!(c.increment("k2", 8).unwrap(), 50);
    assert_eq!(c.decrement("k2", 100).unwrap(), 0);
    assert!(c.delete("k").unwrap());
    assert!(!c.delete("k").unwrap());
    assert_eq!(c.get::<String>("k").unwrap(), None);
    assert!(c.touch("k2", 100).unwrap());
    assert!(!c.touch("none", 100).unwrap());
    let cas_key = "casbin";
    c.set(cas_key, "1", 0).unwrap();
    let got: HashMap<String, (Vec<u8>, u32, Option<u64>)> = c.gets(&[cas_key]).unwrap();
    let cas = got[cas_key].2.expect("a cas over the binary protocol");
    assert!(c.cas(cas_key, "2", 0, cas).unwrap());
    assert!(!c.cas(cas_key, "3", 0, cas).unwrap(), "a stale cas loses");
    assert_eq!(c.get::<String>(cas_key).unwrap().as_deref(), Some("2"));
    c.flush().unwrap();
    assert_eq!(c.get::<String>(cas_key).unwrap(), None);
}
