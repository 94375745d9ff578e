//! Long pipelines of requests that write no reply (`noreply`), against
//! memcached and shmcached: the `-R` budget per event must not strand the
//! rest of the pipeline in the read buffer (it did: a yield with nothing
//! written waited for a readable event that never came).

mod common;

use std::time::Duration;

use common::{Ending, Server};

fn pipeline(n: usize) -> Vec<u8> {
    let mut req = Vec::new();
    for i in 0..n {
        req.extend_from_slice(format!("set p{i} 0 0 100 noreply\r\n").as_bytes());
        req.extend_from_slice(&[b'v'; 100]);
        req.extend_from_slice(b"\r\n");
        if i % 7 == 0 {
            req.extend_from_slice(
                format!("incr p{i} 1 noreply\r\ndelete p{i} noreply\r\n").as_bytes(),
            );
        }
    }
    req.extend_from_slice(b"get p1 p2 p7\r\n");
    req
}

#[test]
fn noreply_pipelines_run_to_the_end_under_any_budget() {
    for budget in ["1", "20", "1000"] {
        let args = ["-t", "2", "-R", budget];
        let theirs = Server::memcached(&args);
        let ours = Server::shmcached(&args);
        for n in [10, 100, 1000, 5000] {
            let req = pipeline(n);
            let mut replies = Vec::new();
            for server in [&theirs, &ours] {
                let mut c = server.connect();
                c.set_timeout(Duration::from_secs(10));
                let reply = c.exchange(&req);
                assert_eq!(
                    reply.ending,
                    Ending::Sentinel,
                    "{} -R {budget}: {n} pipelined requests not all answered",
                    server.kind().name()
                );
                replies.push(reply.bytes);
            }
            assert_eq!(replies[0], replies[1], "-R {budget}, {n} requests");
            assert!(replies[1].starts_with(b"VALUE p1 0 100\r\n"));
        }
    }
}
