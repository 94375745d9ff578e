//! SIGUSR2: replace the running binary by the one installed now, with no
//! connection refused and no acknowledged write lost.
//!
//! The supervisor executes the new binary *in place* (execve): the pid stays,
//! so systemd's MAINPID, the pid file and the workers' parent stay too. What
//! the new image needs crosses execve as inherited descriptors, named in
//! `SHMCACHED_UPGRADE`: the listening sockets (their queues never close, so
//! nothing is refused), the mailboxes (the old workers pass their idle
//! connections to their successors through them), and the segment (the memory
//! file's descriptor, with its lock, or the shm name). The new image adopts the
//! segment as it is, while the old workers still serve from it, then replaces
//! them one by one exactly as a SIGHUP reload does (reload.rs).
//!
//! Before executing, the old image runs the new binary once with
//! `SHMCACHED_UPGRADE_CHECK=<segment>`: it reads the settings and checks that
//! its layout matches the running segment, and only then is it executed. A
//! binary that cannot start (or a settings change that needs a restart)
//! leaves the old one serving.
//!
//! ```text
//! SHMCACHED_UPGRADE=2|<slot 0 fds, comma separated>;<slot 1 fds>...|<inbox>:<outbox>,...|<unix socket fd or ->|file:<fd>:<path> or shm:<name>
//! ```
//!
//! (Version 1, read too, had no unix socket field. With `-s` the slots hold
//! no TCP socket: their lists are empty.)

use std::ffi::{CString, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::store::segment::Handover as SegmentHandover;

/// Names the descriptors an upgraded image inherits.
pub const HANDOVER_ENV: &str = "SHMCACHED_UPGRADE";
/// Set for the preflight run of the new binary: the running segment's path.
pub const CHECK_ENV: &str = "SHMCACHED_UPGRADE_CHECK";
/// How long the preflight may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one image leaves the next.
#[derive(Debug, PartialEq)]
pub struct Handover {
    /// `listeners[slot][address]`.
    pub listeners: Vec<Vec<RawFd>>,
    /// (inbox, outbox) by slot.
    pub mailboxes: Vec<(RawFd, RawFd)>,
    /// `-s`: the listening unix socket.
    pub unix: Option<RawFd>,
    pub segment: SegmentHandover,
}

impl Handover {
    pub fn encode(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|slot| {
                slot.iter()
                    .map(|fd| fd.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let mailboxes: Vec<String> = self
            .mailboxes
            .iter()
            .map(|(i, o)| format!("{i}:{o}"))
            .collect();
        let segment = match &self.segment {
            SegmentHandover::File(fd, path) => format!("file:{fd}:{}", path.display()),
            SegmentHandover::Shm(name) => format!("shm:{name}"),
        };
        let unix = self.unix.map_or("-".to_string(), |fd| fd.to_string());
        format!(
            "2|{}|{}|{unix}|{segment}",
            listeners.join(";"),
            mailboxes.join(",")
        )
    }

    pub fn decode(text: &str) -> Result<Handover, String> {
        let bad = || format!("{HANDOVER_ENV} is malformed: {text:?}");
        let fd = |s: &str| s.parse::<RawFd>().ok().filter(|&fd| fd > 2);
        let (listeners, mailboxes, unix, segment) = match text.split_once('|') {
            Some(("1", rest)) => {
                let mut parts = rest.splitn(3, '|');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(l), Some(m), Some(s)) => (l, m, None, s),
                    _ => return Err(bad()),
                }
            }
            Some(("2", rest)) => {
                let mut parts = rest.splitn(4, '|');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(l), Some(m), Some("-"), Some(s)) => (l, m, None, s),
                    (Some(l), Some(m), Some(u), Some(s)) => (l, m, Some(fd(u).ok_or_else(bad)?), s),
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        };
        let listeners = listeners
            .split(';')
            .map(|slot| match slot {
                "" => Some(Vec::new()),
                _ => slot.split(',').map(fd).collect::<Option<Vec<_>>>(),
            })
            .collect::<Option<Vec<_>>>()
            // TCP sockets in every slot, or (with -s) in none.
            .filter(|l| {
                !l.is_empty()
                    && match unix {
                        None => l.iter().all(|s| !s.is_empty()),
                        Some(_) => l.iter().all(|s| s.is_empty()),
                    }
            })
            .ok_or_else(bad)?;
        let mailboxes = mailboxes
            .split(',')
            .map(|pair| {
                let (i, o) = pair.split_once(':')?;
                Some((fd(i)?, fd(o)?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        let segment = if let Some(rest) = segment.strip_prefix("file:") {
            let (f, path) = rest.split_once(':').ok_or_else(bad)?;
            SegmentHandover::File(fd(f).ok_or_else(bad)?, PathBuf::from(path))
        } else if let Some(name) = segment.strip_prefix("shm:") {
            SegmentHandover::Shm(name.to_string())
        } else {
            return Err(bad());
        };
        Ok(Handover {
            listeners,
            mailboxes,
            unix,
            segment,
        })
    }

    /// Every descriptor it names.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.listeners.iter().flatten().copied().collect();
        for &(i, o) in &self.mailboxes {
            fds.extend([i, o]);
        }
        if let SegmentHandover::File(fd, _) = &self.segment {
            fds.push(*fd);
        }
        fds.extend(self.unix);
        fds
    }
}

/// The binary installed now where this process was started from: the target
/// of /proc/self/exe, which the kernel marks " (deleted)" once a package
/// manager has replaced the file.
pub fn installed_binary() -> Result<PathBuf, String> {
    let link = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let bytes = link.as_os_str().as_bytes();
    let path = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
    if !path.is_file() {
        return Err(format!("no binary at {}", path.display()));
    }
    Ok(path)
}

/// Run the new binary in check mode on the running segment: Ok if it would
/// take over, else why not (its message).
pub fn preflight(exe: &Path, args: &[OsString], segment: &str) -> Result<(), String> {
    let mut child = Command::new(exe)
        .args(args)
        .env(CHECK_ENV, segment)
        .env_remove(HANDOVER_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let deadline = Instant::now() + PREFLIGHT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer its check within {}s",
                    exe.display(),
                    PREFLIGHT_TIMEOUT.as_secs()
                ));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut said);
    }
    let said = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!(
        "{} refused to take over ({status}): {}",
        exe.display(),
        said.trim()
    ))
}

/// In the new binary, run by `preflight`: would it adopt the segment at
/// `segment` with the settings `args` give? Exit code 0 if so.
pub fn check_mode(args: Vec<OsString>, segment: &OsString) -> i32 {
    let settings = match crate::config::load(args) {
        Ok(crate::config::Action::Run(s)) => *s,
        Ok(crate::config::Action::Print(_)) => {
            eprintln!("shmcached: the command line does not start a daemon");
            return 1;
        }
        Err(e) => {
            eprintln!("shmcached: {e}");
            return e.exit_code();
        }
    };
    let params = super::store_params(&settings, settings.worker_slots());
    match crate::store::Store::check_running(params, Path::new(segment)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shmcached: the running segment: {e}");
            1
        }
    }
}

/// Execute `exe` in place of this process, leaving it `handover`'s
/// descriptors. Returns only on failure, with the reason (the descriptors are
/// then close-on-exec again). The caller blocks signals around it: the new
/// image finds them pending once it has installed its handlers.
pub fn exec(
    exe: &Path,
    args: &[OsString],
    handover: &Handover,
    systemd: &[(&'static str, OsString)],
) -> String {
    let fds = handover.fds();
    for &fd in &fds {
        set_cloexec(fd, false);
    }
    let why = execute(exe, args, handover, systemd);
    for &fd in &fds {
        set_cloexec(fd, true);
    }
    why
}

fn execute(
    exe: &Path,
    args: &[OsString],
    handover: &Handover,
    systemd: &[(&'static str, OsString)],
) -> String {
    let cstring = |b: &[u8]| CString::new(b).map_err(|_| "a NUL byte in an argument".to_string());
    let built = (|| -> Result<(CString, Vec<CString>, Vec<CString>), String> {
        let path = cstring(exe.as_os_str().as_bytes())?;
        let mut argv = vec![path.clone()];
        for a in args {
            argv.push(cstring(a.as_bytes())?);
        }
        let mut env = Vec::new();
        let ours = |name: &std::ffi::OsStr| {
            name == HANDOVER_ENV || systemd.iter().any(|(n, _)| name == *n)
        };
        for (name, value) in std::env::vars_os() {
            if !ours(&name) {
                env.push(cstring(
                    &[name.as_bytes(), b"=", value.as_bytes()].concat(),
                )?);
            }
        }
        for (name, value) in systemd {
            env.push(cstring(
                &[name.as_bytes(), b"=", value.as_bytes()].concat(),
            )?);
        }
        env.push(cstring(
            format!("{HANDOVER_ENV}={}", handover.encode()).as_bytes(),
        )?);
        Ok((path, argv, env))
    })();
    match built {
        Ok((path, argv, env)) => match nix::unistd::execve(&path, &argv, &env) {
            Err(e) => format!("execve {}: {e}", exe.display()),
        },
        Err(e) => e,
    }
}

/// Set or clear FD_CLOEXEC.
pub fn set_cloexec(fd: RawFd, on: bool) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: `fd` is one of ours (a listener, a mailbox or the memory file)
    // and stays open for the call's duration.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flag = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    let _ = fcntl(borrowed, FcntlArg::F_SETFD(flag));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handover_survives_its_encoding() {
        for segment in [
            SegmentHandover::File(9, PathBuf::from("/dev/shm/with|bar:and colon")),
            SegmentHandover::Shm("shmcached-12-ab".into()),
        ] {
            let h = Handover {
                listeners: vec![vec![3, 4], vec![5, 6]],
                mailboxes: vec![(7, 8), (10, 11)],
                unix: None,
                segment: segment.clone(),
            };
            assert_eq!(Handover::decode(&h.encode()).unwrap(), h);
            // -s: no TCP socket in any slot, the unix socket instead.
            let h = Handover {
                listeners: vec![vec![], vec![]],
                mailboxes: vec![(7, 8), (10, 11)],
                unix: Some(12),
                segment,
            };
            assert_eq!(Handover::decode(&h.encode()).unwrap(), h);
        }
        // What an image of the first format left is still read.
        let v1 = Handover::decode("1|3,4;5,6|7:8,10:11|shm:x").unwrap();
        assert_eq!(v1.unix, None);
        assert_eq!(v1.listeners, vec![vec![3, 4], vec![5, 6]]);
        for bad in [
            "",
            "3|3|4:5|-|shm:x",
            "1|3|4:5|disk:x",
            "1||4:5|shm:x",
            "1|1|4:5|shm:x",
            "2|3|4:5|12|shm:x",
            "2|;|4:5|-|shm:x",
            "2|3|4:5|x|shm:x",
        ] {
            assert!(Handover::decode(bad).is_err(), "{bad}");
        }
    }
}
