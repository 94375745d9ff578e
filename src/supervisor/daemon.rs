//! `-d`: become a daemon as memcached does (fork, setsid, chdir /, standard
//! streams on /dev/null), except that the command returns only once the
//! daemon serves, or prints why it could not start and exits with its code:
//! a script (or `Type=forking`) can trust the exit status and the pid file.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::ForkResult;

/// The daemon's line back to the command that started it.
pub struct StartReport {
    pipe: Option<std::fs::File>,
}

impl StartReport {
    /// Start-up is complete: the command exits 0.
    pub fn ready(&mut self) {
        self.send("0\n");
    }

    /// Start-up failed: the command prints `message` and exits with `code`.
    pub fn failed(&mut self, code: i32, message: &str) {
        self.send(&format!("{code} {message}\n"));
    }

    fn send(&mut self, line: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

/// What `detach` returns in each process.
pub enum Detached {
    /// The command: exit with this code (it has printed any error).
    Command(i32),
    /// The daemon: carry on, and report how start-up went.
    Daemon(StartReport),
}

/// Fork; the child becomes the daemon, the parent waits for its report.
/// Before any other process or thread exists.
pub fn detach() -> Result<Detached, String> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the process is single-threaded here (nothing has been started
    // yet), so the child may run any code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(write);
            Ok(Detached::Command(wait_for_report(read)))
        }
        ForkResult::Child => {
            drop(read);
            let mut report = StartReport {
                pipe: Some(std::fs::File::from(write)),
            };
            if let Err(e) = leave_the_terminal() {
                report.failed(super::EX_OSERR, &e);
                std::process::exit(super::EX_OSERR);
            }
            Ok(Detached::Daemon(report))
        }
    }
}

fn leave_the_terminal() -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    quiet_standard_streams()
}

/// In the command: the daemon's report, or its silent end. One line: the
/// workers, forked before the report, hold the pipe open after it.
fn wait_for_report(read: OwnedFd) -> i32 {
    let mut text = String::new();
    let _ = std::io::BufReader::new(std::fs::File::from(read)).read_line(&mut text);
    let line = text.trim_end();
    match line.split_once(' ') {
        _ if line == "0" => 0,
        Some((code, message)) => {
            eprintln!("shmcached: {message}");
            code.parse().unwrap_or(1)
        }
        None => {
            eprintln!("shmcached: the daemon exited during start-up");
            1
        }
    }
}

/// stdin and stdout on /dev/null; stderr too unless it is a regular file,
/// which is where the operator wants the log.
fn quiet_standard_streams() -> Result<(), String> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let is_file = |fd: i32| {
        nix::sys::stat::fstat(
            // SAFETY: 0..=2 stay open for the life of the process.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    };
    for fd in [0, 1, 2] {
        if fd != 0 && is_file(fd) {
            continue;
        }
        // SAFETY: dup2 onto a standard stream; the old one is closed by it.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
