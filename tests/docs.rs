//! The documentation stays in step with the code: every key of
//! config/shmcached.toml and every key the daemon accepts is in
//! docs/configuration.md, every flag of `shmcached -h` is there too, every
//! `stats` key is explained in docs/operations.md, and local links resolve.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{SHMCACHED, Server};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Keys of config/shmcached.toml, set or commented out (`# pid_file = "..."`):
/// a line that is, without its `# `, a one-key TOML document.
fn config_file_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for line in read("config/shmcached.toml").lines() {
        let candidate = line.strip_prefix("# ").unwrap_or(line);
        if let Ok(table) = candidate.parse::<toml::Table>()
            && table.len() == 1
        {
            keys.extend(table.keys().cloned());
        }
    }
    keys
}

#[test]
fn config_file_keys_are_documented() {
    let keys = config_file_keys();
    // The commented-out ones are found too.
    for k in [
        "port",
        "listen",
        "pid_file",
        "user",
        "auth_file",
        "seed_element_size",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not found in {keys:?}");
    }
    let docs = read("docs/configuration.md");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !docs.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks keys {missing:?}"
    );
}

/// The daemon's own list of keys, from its error for an unknown one.
#[test]
fn every_key_the_daemon_accepts_is_in_the_config_file_and_docs() {
    let dir = std::env::temp_dir().join(format!("shmcached-docs-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("unknown.toml");
    fs::write(&file, "no_such_key_for_docs = 1\n").unwrap();
    let out = Command::new(SHMCACHED)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let list = stderr
        .split("(expected one of: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no key list in {stderr:?}"));
    let known: Vec<&str> = list.split(", ").collect();
    assert!(
        known.contains(&"port") && known.contains(&"workers"),
        "{known:?}"
    );
    let in_file = config_file_keys();
    let docs = read("docs/configuration.md");
    for key in known {
        assert!(
            in_file.iter().any(|k| k == key),
            "config/shmcached.toml lacks {key}"
        );
        assert!(
            docs.contains(&format!("`{key}`")),
            "docs/configuration.md lacks {key}"
        );
    }
}

/// Flags of `shmcached -h`: short (`-p`, `-vv`), long (`--port`) and `-o` keys.
fn help_flags() -> BTreeSet<String> {
    let help = Command::new(SHMCACHED).arg("-h").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        if let Some(sub) = line.strip_prefix("   - ") {
            // `-o` keys: "   - idle_timeout:   ..."
            if let Some((key, _)) = sub.split_once(':')
                && !key.contains(' ')
            {
                flags.insert(key.to_string());
            }
            continue;
        }
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split_whitespace() {
            let word = word.trim_end_matches(',');
            if !word.starts_with('-') {
                break;
            }
            // `--port=<num>` -> `--port`
            let name = word.split('=').next().unwrap();
            flags.insert(name.to_string());
        }
    }
    // The ignored `-o` keys, listed under their heading.
    if let Some(rest) = help.split("accepted and ignored").nth(1) {
        for line in rest.lines().skip(1) {
            if !line.starts_with("                          ") {
                break;
            }
            flags.extend(
                line.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_string),
            );
        }
    }
    flags
}

#[test]
fn help_flags_are_documented() {
    let flags = help_flags();
    for f in [
        "-p",
        "--port",
        "-vv",
        "--config",
        "idle_timeout",
        "hash_algorithm",
    ] {
        assert!(flags.contains(f), "{f} not parsed from -h: {flags:?}");
    }
    // A flag named only among the refused ones is not documented.
    let all = read("docs/configuration.md");
    let docs = match all.find("### Refused") {
        Some(start) => {
            let end = all[start + 1..]
                .find("\n#")
                .map_or(all.len(), |e| start + 1 + e);
            format!("{}{}", &all[..start], &all[end..])
        }
        None => all,
    };
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| {
            if f.starts_with('-') {
                // In backquotes, alone or followed by a value or a comma:
                // "`-p <port>`", "`--port`", "`-vv`".
                ![" ", "`", ",", "="]
                    .iter()
                    .any(|end| docs.contains(&format!("`{f}{end}")))
            } else {
                !docs.contains(f.as_str())
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks these flags of shmcached -h: {missing:?}"
    );
}

/// Every key of `stats` and `stats workers` is explained in
/// docs/operations.md (`idle_kicks` shows only with idle_timeout set).
#[test]
fn stats_keys_are_documented() {
    let server = Server::shmcached(&["-t", "1", "-o", "idle_timeout=60"]);
    let mut conn = server.connect();
    let reply = conn.roundtrip(b"stats\r\nstats workers\r\n");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let ops = read("docs/operations.md");
    let mut missing = Vec::new();
    for line in reply.lines() {
        let Some(name) = line.strip_prefix("STAT ").and_then(|l| l.split(' ').next()) else {
            continue;
        };
        // worker:0:pid -> worker:<n>:pid
        let name = match name.split(':').collect::<Vec<_>>()[..] {
            [prefix, _, key] => format!("{prefix}:<n>:{key}"),
            _ => name.to_string(),
        };
        if !ops.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    assert!(reply.contains("STAT workers_alive "), "{reply}");
    assert!(
        missing.is_empty(),
        "docs/operations.md lacks stats {missing:?}"
    );
}

/// Relative links in README.md and docs/*.md point at files that exist.
#[test]
fn local_links_resolve() {
    let mut pages = vec![Path::new(REPO).join("README.md")];
    for entry in fs::read_dir(Path::new(REPO).join("docs"))
        .unwrap()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "md") {
            pages.push(entry.path());
        }
    }
    for page in pages {
        let text = fs::read_to_string(&page).unwrap();
        for target in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            let target = target.split('#').next().unwrap();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            let path = page.parent().unwrap().join(target);
            assert!(path.exists(), "{}: broken link {target}", page.display());
        }
    }
}
