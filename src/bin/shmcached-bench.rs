//! A small load generator for side-by-side runs against memcached.
//!
//! ```text
//! shmcached-bench --port P [--conns 50] [--threads 2] [--depth 1] [--secs 5]
//!                 [--keys 10000] [--key-size 32] [--value-size 100] [--set-ratio 10]
//! ```
//! Every connection is a blocking socket in its own thread-local loop: it sends
//! `depth` requests (one set per `set-ratio` requests, the rest gets), reads
//! exactly the replies it expects and checks them. Prints one JSON line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

struct Opts {
    port: u16,
    conns: usize,
    threads: usize,
    depth: usize,
    secs: u64,
    keys: u64,
    key_size: usize,
    value_size: usize,
    set_ratio: u64,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        port: 11211,
        conns: 50,
        threads: 2,
        depth: 1,
        secs: 5,
        keys: 10_000,
        key_size: 32,
        value_size: 100,
        set_ratio: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args.next().ok_or(format!("{flag} needs a value"))?;
        let n = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--port" => o.port = n(&v)? as u16,
            "--conns" => o.conns = n(&v)? as usize,
            "--threads" => o.threads = n(&v)? as usize,
            "--depth" => o.depth = n(&v)? as usize,
            "--secs" => o.secs = n(&v)?,
            "--keys" => o.keys = n(&v)?,
            "--key-size" => o.key_size = n(&v)? as usize,
            "--value-size" => o.value_size = n(&v)? as usize,
            "--set-ratio" => o.set_ratio = n(&v)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn key(i: u64, size: usize) -> String {
    format!("{:0>width$}", i, width = size.max(8))
}

fn main() {
    let o = match parse() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("shmcached-bench: {e}");
            std::process::exit(64);
        }
    };
    let value = vec![b'v'; o.value_size];
    // Prefill so that gets hit.
    {
        let mut s = TcpStream::connect(("127.0.0.1", o.port)).expect("connect");
        let mut reply = vec![0u8; 8];
        for i in 0..o.keys {
            let mut req =
                format!("set {} 0 0 {}\r\n", key(i, o.key_size), o.value_size).into_bytes();
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            s.write_all(&req).unwrap();
            s.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"STORED\r\n");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_thread = o.conns.div_ceil(o.threads.max(1));
    let mut handles = Vec::new();
    for t in 0..o.threads {
        let (o, stop, ops, errors, value) = (
            o.clone(),
            stop.clone(),
            ops.clone(),
            errors.clone(),
            value.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let n = per_thread.min(o.conns.saturating_sub(t * per_thread));
            let mut conns: Vec<TcpStream> = (0..n)
                .map(|_| {
                    let s = TcpStream::connect(("127.0.0.1", o.port)).expect("connect");
                    s.set_nodelay(true).unwrap();
                    s
                })
                .collect();
            let mut rng = 0x9E3779B97F4A7C15u64 ^ (t as u64 + 1);
            let mut req = Vec::new();
            let mut expect = Vec::new();
            let mut got = Vec::new();
            while !stop.load(Relaxed) {
                for s in conns.iter_mut() {
                    req.clear();
                    expect.clear();
                    for _ in 0..o.depth {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let k = key(rng % o.keys, o.key_size);
                        if o.set_ratio > 0 && rng.is_multiple_of(o.set_ratio) {
                            req.extend_from_slice(
                                format!("set {k} 0 0 {}\r\n", o.value_size).as_bytes(),
                            );
                            req.extend_from_slice(&value);
                            req.extend_from_slice(b"\r\n");
                            expect.extend_from_slice(b"STORED\r\n");
                        } else {
                            req.extend_from_slice(format!("get {k}\r\n").as_bytes());
                            expect.extend_from_slice(
                                format!("VALUE {k} 0 {}\r\n", o.value_size).as_bytes(),
                            );
                            expect.extend_from_slice(&value);
                            expect.extend_from_slice(b"\r\nEND\r\n");
                        }
                    }
                    if s.write_all(&req).is_err() {
                        errors.fetch_add(1, Relaxed);
                        return;
                    }
                    got.resize(expect.len(), 0);
                    if s.read_exact(&mut got).is_err() || got != expect {
                        errors.fetch_add(1, Relaxed);
                        return;
                    }
                    ops.fetch_add(o.depth as u64, Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(o.secs));
    stop.store(true, Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for h in handles {
        let _ = h.join();
    }
    println!(
        "{{\"ops_per_sec\": {:.0}, \"ops\": {}, \"errors\": {}, \"conns\": {}, \"depth\": {}, \"value_size\": {}}}",
        ops.load(Relaxed) as f64 / elapsed,
        ops.load(Relaxed),
        errors.load(Relaxed),
        o.conns,
        o.depth,
        o.value_size
    );
}
