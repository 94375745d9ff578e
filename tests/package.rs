//! The Debian package and the systemd unit: packaging/build-deb.sh builds a
//! .deb around the binary this test run built, and the test reads it back
//! with dpkg-deb; systemd-analyze checks the unit (syntax, ExecStart, the
//! exposure score); strace checks that the unit's system call filter allows
//! every call the daemon makes. Each part skips, saying why, when its tool is
//! missing (tests/run.sh installs them on Debian).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, SHMCACHED, SIGKILL, SIGTERM, free_port, signal};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Exposure score ceiling for our unit (`systemd-analyze security`; 0 = the
/// most locked down, 10 = not at all; Debian's memcached unit scores 4.8).
const MAX_EXPOSURE: f64 = 2.0;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
}

/// Run a command; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shmcached-{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The package, built once per test run, and its contents unpacked:
/// (path of the .deb, unpacked root). None when dpkg-deb is missing.
fn package() -> Option<&'static (PathBuf, PathBuf)> {
    static BUILT: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !have("dpkg-deb") {
                return None;
            }
            let out = temp_dir("deb");
            let printed = run(
                &format!("{REPO}/packaging/build-deb.sh"),
                &["--binary", SHMCACHED, "--out", out.to_str().unwrap()],
            );
            let deb = PathBuf::from(printed.lines().last().expect("the .deb's path").trim());
            assert!(deb.is_file(), "{deb:?}");
            let root = out.join("root");
            run(
                "dpkg-deb",
                &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
            );
            Some((deb, root))
        })
        .as_ref()
}

#[test]
fn package_holds_the_expected_files() {
    let Some((deb, _)) = package() else {
        return skip("dpkg-deb is missing: no package to check");
    };
    let listing = run("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    // "-rwxr-xr-x root/root 3303792 2026-01-01 00:00 ./usr/bin/shmcached"
    let files: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[0], f[1], f[5]))
        })
        .collect();
    let mut expected = vec![
        ("-rwxr-xr-x", "./usr/bin/shmcached"),
        ("-rw-r--r--", "./lib/systemd/system/shmcached.service"),
        ("-rw-r--r--", "./usr/lib/sysusers.d/shmcached.conf"),
        ("-rw-r--r--", "./etc/shmcached/shmcached.toml"),
        ("-rw-r--r--", "./usr/share/man/man1/shmcached.1.gz"),
        ("-rw-r--r--", "./usr/share/doc/shmcached/README.md"),
        ("-rw-r--r--", "./usr/share/doc/shmcached/copyright"),
        (
            "-rw-r--r--",
            "./usr/share/doc/shmcached/changelog.Debian.gz",
        ),
    ];
    let docs: Vec<String> = fs::read_dir(format!("{REPO}/docs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("./usr/share/doc/shmcached/docs/{n}"))
        .collect();
    assert!(docs.iter().any(|d| d.ends_with("/operations.md")));
    expected.extend(docs.iter().map(|d| ("-rw-r--r--", d.as_str())));
    for (mode, path) in &expected {
        let found = files.iter().find(|(_, _, p)| p == path);
        assert!(found.is_some(), "{path} missing from:\n{listing}");
        let (m, owner, _) = found.unwrap();
        assert_eq!((*m, *owner), (*mode, "root/root"), "{path}");
    }
    // Nothing but directories and the files above.
    for (mode, _, path) in &files {
        assert!(
            mode.starts_with('d') || expected.iter().any(|(_, p)| p == path),
            "unexpected {path} in the package"
        );
    }
}

#[test]
fn control_fields() {
    let Some((deb, _)) = package() else {
        return skip("dpkg-deb is missing: no package to check");
    };
    let deb = deb.to_str().unwrap();
    let field = |name: &str| run("dpkg-deb", &["-f", deb, name]).trim().to_string();
    assert_eq!(field("Package"), "shmcached");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        field("Architecture"),
        run("dpkg", &["--print-architecture"]).trim()
    );
    assert!(
        field("Depends").starts_with("libc6"),
        "{}",
        field("Depends")
    );
    assert!(!field("Maintainer").is_empty());
    assert!(field("Installed-Size").parse::<u64>().unwrap() > 0);
    assert!(field("Description").starts_with("memcached-compatible cache daemon"));

    let info = run("dpkg-deb", &["-I", deb]);
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            info.lines().any(|l| l.contains(script) && l.contains('*')),
            "{script} missing or not executable:\n{info}"
        );
    }
    let control = temp_dir("control");
    run("dpkg-deb", &["-e", deb, control.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/shmcached/shmcached.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run("sh", &["-n", control.join(script).to_str().unwrap()]);
    }
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers /usr/lib/sysusers.d/shmcached.conf"));
    assert!(postinst.contains("adduser --system"));
    let _ = fs::remove_dir_all(control);
}

#[test]
fn packaged_binary_config_and_man_page() {
    let Some((_, root)) = package() else {
        return skip("dpkg-deb is missing: no package to check");
    };
    let version = run(root.join("usr/bin/shmcached").to_str().unwrap(), &["-V"]);
    assert!(version.starts_with(&format!("shmcached {} ", env!("CARGO_PKG_VERSION"))));

    // The conffile: the same keys as config/shmcached.toml, `user` unset, and
    // the daemon's own parser takes it.
    let conffile = root.join("etc/shmcached/shmcached.toml");
    let text = fs::read_to_string(&conffile).unwrap();
    let original = fs::read_to_string(format!("{REPO}/config/shmcached.toml")).unwrap();
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
            .filter(|k| {
                k.trim_start_matches("# ")
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            })
            .collect()
    };
    assert_eq!(keys(&text), keys(&original));
    assert!(!text.lines().any(|l| l.starts_with("user")), "user is set");
    let loaded = shmcached::config::load(["--config".into(), conffile.into_os_string()]);
    match loaded {
        Ok(shmcached::config::Action::Run(s)) => assert_eq!(s.user, None),
        other => panic!("the conffile does not load: {other:?}"),
    }

    // The man page says what -h says.
    let man = root.join("usr/share/man/man1/shmcached.1.gz");
    let roff = run("sh", &["-c", &format!("gzip -dc {}", man.display())]);
    assert_eq!(roff, run(SHMCACHED, &["--help-man"]));
    assert!(roff.contains(".TH SHMCACHED 1"));
    if have("man") {
        let out = Command::new("man")
            .args(["--warnings", "-l", man.to_str().unwrap()])
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.trim().is_empty(), "man warns: {stderr}");
        let page = String::from_utf8_lossy(&out.stdout).replace('\u{2010}', "-");
        let help = run(SHMCACHED, &["-h"]);
        for flag in help
            .lines()
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| l.split_whitespace().next())
        {
            let flag = flag.trim_end_matches(',');
            assert!(page.contains(flag), "the man page lacks {flag}");
        }
    } else {
        skip("man is missing: the man page is not rendered");
    }
}

/// The unit as packaged, with ExecStart pointing at the binary under test.
fn unit_for(binary: &str) -> PathBuf {
    let unit = fs::read_to_string(format!("{REPO}/systemd/shmcached.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/shmcached --config /etc/shmcached/shmcached.toml\n"));
    let dir = temp_dir("unit");
    let path = dir.join("shmcached.service");
    fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/bin/shmcached",
            &format!("ExecStart={binary}"),
        ),
    )
    .unwrap();
    path
}

#[test]
fn unit_verifies_and_is_locked_down() {
    if !have("systemd-analyze") {
        return skip("systemd-analyze is missing (apt-get install systemd)");
    }
    let unit = unit_for(SHMCACHED);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", unit.to_str().unwrap()])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "verify: {said}"
    );

    let report = run(
        "systemd-analyze",
        &["security", "--offline=true", unit.to_str().unwrap()],
    );
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("shmcached.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );

    let unit_text = fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "User=shmcached",
        "RuntimeDirectory=shmcached",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "UMask=0077",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit_text.contains(line), "the unit lacks {line:?}");
    }
    // DynamicUser= would remove the segment at every stop (RemoveIPC=).
    assert!(!unit_text.contains("DynamicUser=yes"));
    let _ = fs::remove_dir_all(unit.parent().unwrap());
}

#[test]
fn sysusers_creates_the_user() {
    if !have("systemd-sysusers") {
        return skip("systemd-sysusers is missing (apt-get install systemd)");
    }
    let root = temp_dir("sysusers");
    fs::create_dir_all(root.join("etc")).unwrap();
    run(
        "systemd-sysusers",
        &[
            &format!("--root={}", root.display()),
            &format!("{REPO}/systemd/shmcached.sysusers"),
        ],
    );
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("shmcached:"))
        .unwrap_or_else(|| panic!("no shmcached user in:\n{passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "not a system uid: {entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{entry}");
    let _ = fs::remove_dir_all(root);
}

/// The system calls in a group of `systemd-analyze syscall-filter`, with the
/// groups it includes expanded.
fn syscall_group(name: &str) -> BTreeSet<String> {
    let text = run("systemd-analyze", &["syscall-filter"]);
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with('@') {
            groups.push((t.to_string(), Vec::new()));
        } else if !t.is_empty()
            && !t.starts_with('#')
            && let Some((_, members)) = groups.last_mut()
        {
            members.push(t.to_string());
        }
    }
    fn expand(groups: &[(String, Vec<String>)], name: &str, out: &mut BTreeSet<String>) {
        let Some((_, members)) = groups.iter().find(|(g, _)| g == name) else {
            return;
        };
        for m in members {
            if m.starts_with('@') {
                expand(groups, m, out);
            } else {
                out.insert(m.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    expand(&groups, name, &mut out);
    out
}

/// What the unit's `SystemCallFilter=` lines allow: the allow list minus the
/// `~` deny lists.
fn unit_allowed_syscalls() -> BTreeSet<String> {
    let unit = fs::read_to_string(format!("{REPO}/systemd/shmcached.service")).unwrap();
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (set, names) = match value.strip_prefix('~') {
            Some(rest) => (&mut denied, rest),
            None => (&mut allowed, value),
        };
        for name in names.split_whitespace() {
            if name.starts_with('@') {
                set.extend(syscall_group(name));
            } else {
                set.insert(name.to_string());
            }
        }
    }
    assert!(
        !allowed.is_empty(),
        "the unit has no SystemCallFilter allow list"
    );
    allowed.difference(&denied).cloned().collect()
}

/// Run the daemon under strace through start, requests, `stats`, a killed
/// worker and its respawn, SIGHUP and SIGTERM: every system call it makes
/// must pass the unit's filter (a call outside it gets EPERM under systemd).
#[test]
fn unit_syscall_filter_allows_the_daemon() {
    if !have("strace") || !have("systemd-analyze") {
        return skip("strace or systemd-analyze is missing");
    }
    let allowed = unit_allowed_syscalls();
    let dir = temp_dir("strace");
    let trace = dir.join("trace");
    let port = free_port();
    // As a plain user, as under the unit: root would need -u (and setuid).
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let as_nobody = have("setpriv") && run("id", &["-u"]).trim() == "0";
    let mut argv: Vec<String> = vec![
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        trace.display().to_string(),
        "--".into(),
    ];
    if as_nobody {
        argv.push("setpriv".into());
        argv.extend(nobody.iter().map(|s| s.to_string()));
    }
    argv.extend([
        SHMCACHED.to_string(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        "2".into(),
    ]);
    // As systemd would run it: a notification socket and a watchdog, so that
    // sd_notify's calls are traced too.
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o777)).unwrap();
    let mut strace = Command::new("strace")
        .args(&argv)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The daemon's pid: the first traced process that exec'd shmcached.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
            break Conn::connect(port);
        }
        assert!(Instant::now() < deadline, "the traced daemon did not start");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(conn.roundtrip(b"set k 0 0 1\r\nv\r\n"), b"STORED\r\n");
    assert!(
        conn.roundtrip(b"get k\r\nstats\r\nstats workers\r\n")
            .ends_with(b"END\r\n")
    );
    drop(conn);
    let check = run(SHMCACHED, &["check", "--port", &port.to_string()]);
    assert!(check.starts_with("ok: "), "{check}");

    let supervisor = common::children(strace.id())
        .into_iter()
        .next()
        .expect("the daemon under strace");
    let worker = common::children(supervisor)
        .into_iter()
        .next()
        .expect("a worker");
    signal(worker, SIGKILL).unwrap();
    thread::sleep(Duration::from_millis(500));
    signal(supervisor, common::SIGHUP).unwrap();
    thread::sleep(Duration::from_millis(300));
    let mut conn = Conn::connect(port);
    assert_eq!(conn.roundtrip(b"get k\r\n"), b"VALUE k 0 1\r\nv\r\nEND\r\n");
    drop(conn);
    signal(supervisor, SIGTERM).unwrap();
    let status = strace.wait().unwrap();
    assert!(status.success(), "strace: {status}");
    // What the unit relies on: Type=notify, WatchdogSec=, a clean stop.
    let mut said = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
        said.push('\n');
    }
    for state in ["READY=1", "WATCHDOG=1", "STOPPING=1"] {
        assert!(
            said.lines().any(|l| l == state),
            "no {state} from the daemon; it sent:\n{said}"
        );
    }

    let text = fs::read_to_string(&trace).unwrap();
    // Skip setpriv's own calls: each traced pid counts from its exec of
    // shmcached on (forked workers never exec, so they count from the start).
    let mut before_exec: BTreeSet<&str> = BTreeSet::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let name: String = call
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || !call[name.len()..].starts_with('(') {
            continue;
        }
        if name == "execve" {
            if call.contains(SHMCACHED) {
                before_exec.remove(pid);
            } else {
                before_exec.insert(pid);
            }
            continue;
        }
        if !before_exec.contains(pid) {
            used.insert(name);
        }
    }
    assert!(
        used.contains("fallocate") && used.contains("accept4"),
        "{used:?}"
    );
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter= refuses {refused:?} (the daemon used {used:?})"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn exposure_figures_are_recorded() {
    // docs/operations.md quotes both scores; keep them honest.
    let ops = fs::read_to_string(format!("{REPO}/docs/operations.md")).unwrap();
    if !have("systemd-analyze") {
        return skip("systemd-analyze is missing");
    }
    let score = |unit: &Path| -> Option<String> {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", unit.to_str()?])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rest = text
            .lines()
            .find_map(|l| l.split(".service: ").nth(1))?
            .to_string();
        rest.split_whitespace().next().map(str::to_string)
    };
    let ours = score(&unit_for(SHMCACHED)).expect("our score");
    assert!(
        ops.contains(&format!("exposure {ours}")),
        "docs/operations.md should quote our unit's exposure {ours}"
    );
    let debian = Path::new("/lib/systemd/system/memcached.service");
    if debian.exists() {
        let theirs = score(debian).expect("memcached's score");
        assert!(
            ops.contains(&format!("exposure {theirs}")),
            "docs/operations.md should quote memcached's exposure {theirs}"
        );
    }
}
