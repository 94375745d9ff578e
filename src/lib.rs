//! shmcached: a memcached-compatible cache whose prefork workers share one
//! hashtable in a shared-memory segment. See docs/ and DESIGN.md.

pub mod check;
pub mod config;
pub mod log;
pub mod protocol;
pub mod store;
pub mod supervisor;
pub mod worker;
