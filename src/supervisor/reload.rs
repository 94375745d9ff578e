//! What a SIGHUP reload may change, and how.
//!
//! - **live**: verbosity, `-c`, `-R`, `idle_timeout` go through the segment's
//!   header; every worker loads them at its next tick; `slab_automove` and
//!   `slab_automove_ratio` are set in the segment as a client's `slabs automove`
//!   would, `track_sizes` as `stats sizes_enable` / `sizes_disable` would,
//!   `lru_crawler*` as the `lru_crawler` commands would;
//! - **workers** (`-t`), within the slots made at start (`max_workers`): new
//!   slots get a worker, surplus workers pass their connections on and stop;
//! - **fixed**: what the segment's layout, the sockets or the process identity
//!   were made from (memory, item size, CAS, evictions, port, unix socket, addresses,
//!   backlog, user, pid file, memory file, slots): the running value stays, and the change
//!   is logged as needing a restart;
//! - everything else a worker copies at fork (`-F`, `-A`, `-B`, `-Y`,
//!   `drain_timeout`, ...): the workers are replaced one by one.

use crate::config::Settings;

/// A change the running instance cannot make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsRestart {
    pub key: &'static str,
    pub running: String,
    pub wanted: String,
}

/// A live setting that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub key: &'static str,
    pub from: String,
    pub to: String,
}

/// The outcome of comparing the running settings with the file's.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The settings to run with from now on.
    pub settings: Settings,
    pub needs_restart: Vec<NeedsRestart>,
    pub applied: Vec<Applied>,
    /// The workers hold settings of the past: replace them one by one.
    pub roll: bool,
}

pub fn plan(running: &Settings, mut wanted: Settings) -> Plan {
    let mut needs_restart = Vec::new();
    macro_rules! fixed {
        ($($field:ident => $key:literal),* $(,)?) => {$(
            if wanted.$field != running.$field {
                needs_restart.push(NeedsRestart {
                    key: $key,
                    running: format!("{:?}", running.$field),
                    wanted: format!("{:?}", wanted.$field),
                });
                wanted.$field = running.$field.clone();
            }
        )*};
    }
    fixed!(
        port => "port",
        unix_socket => "unix_socket",
        unix_socket_mode => "unix_socket_mode",
        listen => "listen",
        memory_limit => "memory_limit",
        item_size_max => "item_size_max",
        growth_factor => "growth_factor",
        chunk_size => "chunk_size",
        cas_enabled => "cas_enabled",
        evictions => "evictions",
        backlog => "backlog",
        user => "user",
        pid_file => "pid_file",
        memory_file => "memory_file",
        seed_num_elements => "seed_num_elements",
        seed_element_size => "seed_element_size",
        daemonize => "daemonize",
    );
    // Unset in the file: the slots made at start stay, whatever `workers` says.
    if let Some(slots) = wanted.max_workers
        && slots != running.worker_slots()
    {
        needs_restart.push(NeedsRestart {
            key: "max_workers",
            running: running.worker_slots().to_string(),
            wanted: slots.to_string(),
        });
    }
    wanted.max_workers = Some(running.worker_slots());
    if wanted.workers > running.worker_slots() {
        needs_restart.push(NeedsRestart {
            key: "workers",
            running: running.workers.to_string(),
            wanted: format!(
                "{} (over the {} slots)",
                wanted.workers,
                running.worker_slots()
            ),
        });
        wanted.workers = running.workers;
    }

    let mut applied = Vec::new();
    macro_rules! live {
        ($($field:ident => $key:literal),* $(,)?) => {$(
            if wanted.$field != running.$field {
                applied.push(Applied {
                    key: $key,
                    from: format!("{:?}", running.$field),
                    to: format!("{:?}", wanted.$field),
                });
            }
        )*};
    }
    live!(
        verbosity => "verbosity",
        max_connections => "max_connections",
        reqs_per_event => "reqs_per_event",
        idle_timeout => "idle_timeout",
        slab_automove => "slab_automove",
        slab_automove_ratio => "slab_automove_ratio",
        track_sizes => "track_sizes",
        lru_crawler => "lru_crawler",
        lru_crawler_sleep => "lru_crawler_sleep",
        lru_crawler_tocrawl => "lru_crawler_tocrawl",
        workers => "workers",
    );

    // What is left differs only in what workers copy at fork.
    let mut forked_with = running.clone();
    forked_with.verbosity = wanted.verbosity;
    forked_with.max_connections = wanted.max_connections;
    forked_with.reqs_per_event = wanted.reqs_per_event;
    forked_with.idle_timeout = wanted.idle_timeout;
    forked_with.slab_automove = wanted.slab_automove;
    forked_with.slab_automove_ratio = wanted.slab_automove_ratio;
    forked_with.track_sizes = wanted.track_sizes;
    forked_with.lru_crawler = wanted.lru_crawler;
    forked_with.lru_crawler_sleep = wanted.lru_crawler_sleep;
    forked_with.lru_crawler_tocrawl = wanted.lru_crawler_tocrawl;
    forked_with.workers = wanted.workers;
    forked_with.max_workers = wanted.max_workers;
    let roll = forked_with != wanted;
    Plan {
        settings: wanted,
        needs_restart,
        applied,
        roll,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn running() -> Settings {
        Settings {
            workers: 2,
            max_workers: Some(4),
            ..Settings::default()
        }
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let p = plan(&running(), running());
        assert_eq!(p.settings, running());
        assert!(p.needs_restart.is_empty() && p.applied.is_empty() && !p.roll);
    }

    #[test]
    fn live_settings_apply_without_a_roll() {
        let mut wanted = running();
        wanted.verbosity = 2;
        wanted.max_connections = 10;
        wanted.reqs_per_event = 5;
        wanted.idle_timeout = Duration::from_secs(30);
        wanted.slab_automove = 2;
        wanted.slab_automove_ratio = 0.5;
        wanted.track_sizes = true;
        wanted.workers = 4;
        let p = plan(&running(), wanted.clone());
        assert_eq!(p.settings, wanted);
        let keys: Vec<_> = p.applied.iter().map(|a| a.key).collect();
        assert_eq!(
            keys,
            [
                "verbosity",
                "max_connections",
                "reqs_per_event",
                "idle_timeout",
                "slab_automove",
                "slab_automove_ratio",
                "track_sizes",
                "workers"
            ]
        );
        assert!(p.needs_restart.is_empty() && !p.roll);
    }

    #[test]
    fn fixed_settings_keep_their_running_value() {
        let mut wanted = running();
        wanted.port = 1234;
        wanted.unix_socket = Some("/run/elsewhere.sock".into());
        wanted.memory_limit = 128 << 20;
        wanted.cas_enabled = false;
        wanted.max_workers = Some(8);
        wanted.workers = 6;
        let p = plan(&running(), wanted);
        let keys: Vec<_> = p.needs_restart.iter().map(|n| n.key).collect();
        assert_eq!(
            keys,
            [
                "port",
                "unix_socket",
                "memory_limit",
                "cas_enabled",
                "max_workers",
                "workers"
            ]
        );
        assert_eq!(p.settings, running());
        assert!(!p.roll);
    }

    #[test]
    fn without_max_workers_the_slots_made_at_start_stay() {
        let started = Settings {
            workers: 3,
            max_workers: Some(3),
            ..Settings::default()
        };
        let fewer = Settings {
            workers: 2,
            ..Settings::default()
        };
        let p = plan(&started, fewer);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
        assert_eq!((p.settings.workers, p.settings.worker_slots()), (2, 3));
        assert!(!p.roll);
    }

    #[test]
    fn what_workers_copy_at_fork_rolls_them() {
        let mut wanted = running();
        wanted.flush_enabled = false;
        wanted.drain_timeout = Duration::from_secs(1);
        // Worker 0 keeps the automover's window.
        wanted.slab_automove_window = 60;
        let p = plan(&running(), wanted.clone());
        assert!(p.roll);
        assert_eq!(p.settings, wanted);
    }
}
