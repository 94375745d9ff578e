//! The TOML file (`--config FILE`): one top-level key per setting an operator
//! sets, named as the [`Settings`](super::Settings) field (see
//! config/shmcached.toml and docs/configuration.md). This file only reads the
//! values and notes the line of each; `validate.rs` checks them.
//!
//! Every error is one line naming the file, the line and the key:
//!
//! ```text
//! config error: /etc/shmcached/shmcached.toml line 7: unknown key "memory_limt_mb" (expected one of: port, ...)
//! config error: /etc/shmcached/shmcached.toml line 3: port = 70000: out of range (-1..65535)
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

use super::ConfigError;
use super::validate::{Given, Origin, RawSettings};

/// The keys, each with the TOML types it takes (for "expected ..., found ...").
/// The same names as [`FileSettings`]'s fields, in the order of the default file.
const KEYS: &[(&str, &[&str])] = &[
    ("port", INTEGER),
    ("unix_socket", STRING),
    ("unix_socket_mode", STRING),
    ("listen", ARRAY),
    ("memory_limit_mb", INTEGER),
    ("evictions", BOOLEAN),
    ("max_connections", INTEGER),
    ("workers", INTEGER),
    ("max_workers", INTEGER),
    ("item_size_max", STRING_OR_INTEGER),
    ("growth_factor", FLOAT),
    ("chunk_size", INTEGER),
    ("slab_automove", INTEGER),
    ("slab_automove_ratio", FLOAT),
    ("slab_automove_window", INTEGER),
    ("track_sizes", BOOLEAN),
    ("lru_crawler", BOOLEAN),
    ("lru_crawler_sleep", INTEGER),
    ("lru_crawler_tocrawl", INTEGER),
    ("verbosity", INTEGER),
    ("cas_enabled", BOOLEAN),
    ("flush_enabled", BOOLEAN),
    ("dump_enabled", BOOLEAN),
    ("shutdown_enabled", BOOLEAN),
    ("backlog", INTEGER),
    ("protocol", STRING),
    ("reqs_per_event", INTEGER),
    ("pid_file", STRING),
    ("user", STRING),
    ("auth_file", STRING),
    ("memory_file", STRING),
    ("drain_timeout_secs", INTEGER),
    ("idle_timeout_secs", INTEGER),
    ("seed_num_elements", INTEGER),
    ("seed_element_size", INTEGER),
];
const INTEGER: &[&str] = &["an integer"];
const FLOAT: &[&str] = &["a float"];
const BOOLEAN: &[&str] = &["a boolean"];
const STRING: &[&str] = &["a string"];
const ARRAY: &[&str] = &["an array"];
const STRING_OR_INTEGER: &[&str] = &["a string", "an integer"];

/// The file as written. Integers stay `i64` so that range errors quote them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileSettings {
    port: Option<Spanned<i64>>,
    unix_socket: Option<Spanned<String>>,
    unix_socket_mode: Option<Spanned<String>>,
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    memory_limit_mb: Option<Spanned<i64>>,
    evictions: Option<Spanned<bool>>,
    max_connections: Option<Spanned<i64>>,
    workers: Option<Spanned<i64>>,
    max_workers: Option<Spanned<i64>>,
    item_size_max: Option<Spanned<Size>>,
    growth_factor: Option<Spanned<f64>>,
    chunk_size: Option<Spanned<i64>>,
    slab_automove: Option<Spanned<i64>>,
    slab_automove_ratio: Option<Spanned<f64>>,
    slab_automove_window: Option<Spanned<i64>>,
    track_sizes: Option<Spanned<bool>>,
    lru_crawler: Option<Spanned<bool>>,
    lru_crawler_sleep: Option<Spanned<i64>>,
    lru_crawler_tocrawl: Option<Spanned<i64>>,
    verbosity: Option<Spanned<i64>>,
    cas_enabled: Option<Spanned<bool>>,
    flush_enabled: Option<Spanned<bool>>,
    dump_enabled: Option<Spanned<bool>>,
    shutdown_enabled: Option<Spanned<bool>>,
    backlog: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    reqs_per_event: Option<Spanned<i64>>,
    pid_file: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    auth_file: Option<Spanned<String>>,
    memory_file: Option<Spanned<String>>,
    drain_timeout_secs: Option<Spanned<i64>>,
    idle_timeout_secs: Option<Spanned<i64>>,
    seed_num_elements: Option<Spanned<i64>>,
    seed_element_size: Option<Spanned<i64>>,
}

/// `item_size_max = "1m"` or `item_size_max = 1048576`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(i64),
    Text(String),
}

/// Read `path` into the settings it sets.
pub(crate) fn load(path: &Path) -> Result<RawSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "config error: {}: cannot read: {e}",
            path.display()
        ))
    })?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<RawSettings, ConfigError> {
    let doc = Document { path, text };
    let table = DeTable::parse(text).map_err(|e| doc.syntax_error(&e))?;
    // Kept aside to name the key of an error: deserializing consumes the table.
    let entries = Entry::list(table.get_ref());
    let file = FileSettings::deserialize(Deserializer::from(table))
        .map_err(|e| doc.value_error(&e, &entries))?;
    Ok(doc.raw_settings(file))
}

/// The file being read, to turn spans into lines and values as written.
struct Document<'a> {
    path: &'a Path,
    text: &'a str,
}

/// A top-level key: its name, spans and type, for error messages.
struct Entry {
    key: String,
    key_span: Range<usize>,
    value_span: Range<usize>,
    type_name: &'static str,
}

impl Entry {
    fn list(table: &DeTable<'_>) -> Vec<Entry> {
        table
            .iter()
            .map(|(k, v)| Entry {
                key: k.get_ref().to_string(),
                key_span: k.span(),
                value_span: v.span(),
                type_name: type_name(v.get_ref()),
            })
            .collect()
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Document<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The text of a span on one line (a multi-line array folds up).
    fn snippet(&self, span: Range<usize>) -> String {
        let raw = self.text.get(span).unwrap_or("");
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn error(&self, offset: usize, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!(
            "config error: {} line {}: {msg}",
            self.path.display(),
            self.line(offset)
        ))
    }

    /// Not TOML at all: toml's message, first line only.
    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().lines().next().unwrap_or("invalid TOML");
        let offset = e.span().map_or(0, |s| s.start);
        let line_text = self.text.lines().nth(self.line(offset) - 1).unwrap_or("");
        self.error(
            offset,
            format_args!("invalid TOML: {msg} ({})", line_text.trim()),
        )
    }

    /// TOML, but not ours: an unknown key or a value of the wrong type.
    fn value_error(&self, e: &toml::de::Error, entries: &[Entry]) -> ConfigError {
        let first_line = e.message().lines().next().unwrap_or("invalid value");
        let Some(span) = e.span() else {
            return ConfigError(format!(
                "config error: {}: {first_line}",
                self.path.display()
            ));
        };
        let entry = entries.iter().find(|entry| {
            entry.key_span.contains(&span.start) || entry.value_span.contains(&span.start)
        });
        let Some(entry) = entry else {
            return self.error(span.start, first_line);
        };
        let Some((_, accepted)) = KEYS.iter().find(|(key, _)| *key == entry.key) else {
            let keys: Vec<&str> = KEYS.iter().map(|(key, _)| *key).collect();
            return self.error(
                entry.key_span.start,
                format_args!(
                    "unknown key \"{}\" (expected one of: {})",
                    entry.key,
                    keys.join(", ")
                ),
            );
        };
        let value = self.snippet(entry.value_span.clone());
        // The key's own type is right: the error is inside (an integer beyond
        // i64, an array element).
        let why = if entry.type_name == "an integer" && accepted.contains(&entry.type_name) {
            "out of range".to_string()
        } else if accepted.contains(&entry.type_name) {
            first_line.to_string()
        } else {
            format!(
                "expected {}, found {}",
                accepted.join(" or "),
                entry.type_name
            )
        };
        self.error(span.start, format_args!("{} = {value}: {why}", entry.key))
    }

    fn origin(&self, key: &'static str, span: Range<usize>) -> Origin {
        Origin::Key {
            file: PathBuf::from(self.path),
            line: self.line(span.start),
            key,
            text: self.snippet(span),
        }
    }

    fn given<T>(&self, key: &'static str, value: Option<Spanned<T>>) -> Option<Given<T>> {
        value.map(|v| Given {
            origin: self.origin(key, v.span()),
            value: v.into_inner(),
        })
    }

    fn raw_settings(&self, f: FileSettings) -> RawSettings {
        let listen = f.listen.map(|list| {
            let whole = self.origin("listen", list.span());
            let items: Vec<Given<String>> = list
                .into_inner()
                .into_iter()
                .map(|item| Given {
                    origin: self.origin("listen", item.span()),
                    value: item.into_inner(),
                })
                .collect();
            if items.is_empty() {
                // `listen = []`: validation refuses it, naming this line.
                vec![Given {
                    value: String::new(),
                    origin: whole,
                }]
            } else {
                items
            }
        });
        let item_size_max = f.item_size_max.map(|size| Given {
            origin: self.origin("item_size_max", size.span()),
            value: match size.into_inner() {
                Size::Bytes(n) => n.to_string(),
                Size::Text(s) => s,
            },
        });
        RawSettings {
            port: self.given("port", f.port),
            unix_socket: self.given("unix_socket", f.unix_socket).map(|g| Given {
                value: PathBuf::from(g.value),
                origin: g.origin,
            }),
            unix_socket_mode: self.given("unix_socket_mode", f.unix_socket_mode),
            udp_port: None,
            listen,
            memory_limit_mb: self.given("memory_limit_mb", f.memory_limit_mb),
            evictions: self.given("evictions", f.evictions),
            max_connections: self.given("max_connections", f.max_connections),
            workers: self.given("workers", f.workers),
            max_workers: self.given("max_workers", f.max_workers),
            item_size_max,
            growth_factor: self.given("growth_factor", f.growth_factor),
            chunk_size: self.given("chunk_size", f.chunk_size),
            slab_automove: self.given("slab_automove", f.slab_automove),
            slab_automove_ratio: self.given("slab_automove_ratio", f.slab_automove_ratio),
            slab_automove_window: self.given("slab_automove_window", f.slab_automove_window),
            track_sizes: self.given("track_sizes", f.track_sizes),
            lru_crawler: self.given("lru_crawler", f.lru_crawler),
            lru_crawler_sleep: self.given("lru_crawler_sleep", f.lru_crawler_sleep),
            lru_crawler_tocrawl: self.given("lru_crawler_tocrawl", f.lru_crawler_tocrawl),
            verbosity: self.given("verbosity", f.verbosity),
            cas_enabled: self.given("cas_enabled", f.cas_enabled),
            flush_enabled: self.given("flush_enabled", f.flush_enabled),
            dump_enabled: self.given("dump_enabled", f.dump_enabled),
            shutdown_enabled: self.given("shutdown_enabled", f.shutdown_enabled),
            backlog: self.given("backlog", f.backlog),
            protocol: self.given("protocol", f.protocol),
            reqs_per_event: self.given("reqs_per_event", f.reqs_per_event),
            pid_file: self.given("pid_file", f.pid_file).map(|g| Given {
                value: PathBuf::from(g.value),
                origin: g.origin,
            }),
            daemonize: None,
            user: self.given("user", f.user),
            auth_file: self.given("auth_file", f.auth_file).map(|g| Given {
                value: PathBuf::from(g.value),
                origin: g.origin,
            }),
            memory_file: self.given("memory_file", f.memory_file).map(|g| Given {
                value: PathBuf::from(g.value),
                origin: g.origin,
            }),
            drain_timeout_secs: self.given("drain_timeout_secs", f.drain_timeout_secs),
            idle_timeout_secs: self.given("idle_timeout_secs", f.idle_timeout_secs),
            seed_num_elements: self.given("seed_num_elements", f.seed_num_elements),
            seed_element_size: self.given("seed_element_size", f.seed_element_size),
            stats_prefix_delimiter: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::config::{Action, Settings, load};
    use crate::protocol::Dialect;

    /// A TOML file under the temp dir, removed on drop.
    struct TempToml(PathBuf);

    impl TempToml {
        fn new(text: &str) -> TempToml {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "shmcached-config-test-{}-{}.toml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).unwrap();
            TempToml(path)
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// `load` with `--config <file of text>` and then `flags`; errors with the
    /// file's path replaced by `{file}`.
    fn run(text: &str, flags: &[&str]) -> Result<Settings, String> {
        let file = TempToml::new(text);
        run_path(&file.0, flags)
    }

    fn run_path(path: &Path, flags: &[&str]) -> Result<Settings, String> {
        let mut args = vec!["--config".into(), path.as_os_str().to_owned()];
        args.extend(flags.iter().map(Into::into));
        match load(args) {
            Ok(Action::Run(settings)) => Ok(*settings),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.0.replace(&path.display().to_string(), "{file}")),
        }
    }

    #[test]
    fn default_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shmcached.toml");
        assert_eq!(run_path(&path, &[]), Ok(Settings::default()));
        // Every key is in it, set or commented out.
        let text = std::fs::read_to_string(&path).unwrap();
        for (key, _) in super::KEYS {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "config/shmcached.toml lacks {key}"
            );
        }
    }

    /// `KEYS` (used in error messages) lists exactly `FileSettings`'s fields.
    #[test]
    fn keys_are_the_fields() {
        let e = toml::from_str::<super::FileSettings>("x = 1").unwrap_err();
        let fields: Vec<String> = super::KEYS.iter().map(|(k, _)| format!("`{k}`")).collect();
        assert_eq!(
            e.message(),
            format!("unknown field `x`, expected one of {}", fields.join(", "))
        );
    }

    #[test]
    fn keys() {
        type Change = fn(&mut Settings);
        let table: &[(&str, Change)] = &[
            ("", |_| {}),
            ("# nothing but a comment\n", |_| {}),
            ("port = 11311", |s| s.port = 11311),
            ("port = -1", |s| s.port = 0),
            ("unix_socket = \"/run/shmcached/shmcached.sock\"", |s| {
                s.unix_socket = Some("/run/shmcached/shmcached.sock".into())
            }),
            (
                "unix_socket = \"x.sock\"\nunix_socket_mode = \"0770\"\nport = 0",
                |s| {
                    s.unix_socket = Some("x.sock".into());
                    s.unix_socket_mode = 0o770;
                    s.port = 0;
                },
            ),
            ("listen = [\"0.0.0.0\", \"::\"]", |s| {
                s.listen = vec![[0, 0, 0, 0].into(), "::".parse().unwrap()]
            }),
            ("listen = [\"127.0.0.1,::1\"]", |s| {
                s.listen = vec![[127, 0, 0, 1].into(), "::1".parse().unwrap()]
            }),
            ("listen = [\"localhost\"]", |s| {
                s.listen = vec![IpAddr::from([127, 0, 0, 1])]
            }),
            ("memory_limit_mb = 1024", |s| s.memory_limit = 1 << 30),
            ("evictions = false", |s| s.evictions = false),
            ("max_connections = 10", |s| s.max_connections = 10),
            ("workers = 16", |s| s.workers = 16),
            ("workers = 2\nmax_workers = 6", |s| {
                s.workers = 2;
                s.max_workers = Some(6);
            }),
            ("item_size_max = \"2m\"", |s| s.item_size_max = 2 << 20),
            ("item_size_max = \"512k\"", |s| s.item_size_max = 512 << 10),
            ("item_size_max = 4096", |s| s.item_size_max = 4096),
            ("item_size_max = \"4096\"", |s| s.item_size_max = 4096),
            ("verbosity = 3", |s| s.verbosity = 3),
            ("cas_enabled = false", |s| s.cas_enabled = false),
            ("flush_enabled = false", |s| s.flush_enabled = false),
            ("dump_enabled = false", |s| s.dump_enabled = false),
            ("lru_crawler = false", |s| s.lru_crawler = false),
            ("lru_crawler_sleep = 7", |s| s.lru_crawler_sleep = 7),
            ("lru_crawler_tocrawl = 70", |s| s.lru_crawler_tocrawl = 70),
            ("shutdown_enabled = true", |s| s.shutdown_enabled = true),
            ("backlog = 16", |s| s.backlog = 16),
            ("growth_factor = 1.25", |s| s.growth_factor = 1.25),
            ("chunk_size = 48", |s| s.chunk_size = 48),
            ("slab_automove = 0", |s| s.slab_automove = 0),
            ("slab_automove = 2", |s| s.slab_automove = 2),
            ("slab_automove_ratio = 0.5", |s| s.slab_automove_ratio = 0.5),
            ("slab_automove_ratio = 1.0", |s| s.slab_automove_ratio = 1.0),
            ("slab_automove_window = 3", |s| s.slab_automove_window = 3),
            ("track_sizes = true", |s| s.track_sizes = true),
            ("protocol = \"ascii\"", |s| s.protocol = Dialect::Ascii),
            ("protocol = \"binary\"", |s| s.protocol = Dialect::Binary),
            ("reqs_per_event = 5", |s| s.reqs_per_event = 5),
            ("memory_file = \"/dev/shm/cache\"", |s| {
                s.memory_file = Some("/dev/shm/cache".into())
            }),
            ("pid_file = \"/run/x.pid\"", |s| {
                s.pid_file = Some("/run/x.pid".into())
            }),
            ("user = \"memcache\"", |s| s.user = Some("memcache".into())),
            ("drain_timeout_secs = 30", |s| {
                s.drain_timeout = Duration::from_secs(30)
            }),
            ("idle_timeout_secs = 600", |s| {
                s.idle_timeout = Duration::from_secs(600)
            }),
            ("seed_num_elements = 10\nseed_element_size = 1000", |s| {
                s.seed_num_elements = Some(10);
                s.seed_element_size = Some(1000);
            }),
            ("seed_element_size = 5000000", |s| {
                s.seed_element_size = Some(5_000_000);
                s.item_size_max = 4884 << 10;
            }),
            ("seed_num_elements = 1000", |s| {
                s.seed_num_elements = Some(1000);
                s.memory_limit = 1000 << 20;
            }),
        ];
        for (text, change) in table {
            let mut want = Settings::default();
            change(&mut want);
            assert_eq!(run(text, &[]), Ok(want), "{text:?}");
        }
    }

    /// Flags win over the file, before or after `--config`.
    #[test]
    fn flags_override_the_file() {
        let text = "port = 11311\nworkers = 8\nlisten = [\"0.0.0.0\"]\nverbosity = 1\n\
                    evictions = true\nidle_timeout_secs = 10\nitem_size_max = \"2m\"\n";
        let from_file = |s: &mut Settings| {
            s.port = 11311;
            s.workers = 8;
            s.listen = vec![[0, 0, 0, 0].into()];
            s.verbosity = 1;
            s.idle_timeout = Duration::from_secs(10);
            s.item_size_max = 2 << 20;
        };
        type Change = fn(&mut Settings);
        let table: &[(&[&str], Change)] = &[
            (&[], |_| {}),
            (&["-p", "12000"], |s| s.port = 12000),
            (&["-t", "2", "-l", "::1"], |s| {
                s.workers = 2;
                s.listen = vec!["::1".parse().unwrap()];
            }),
            (&["-vvv", "-M"], |s| {
                s.verbosity = 3;
                s.evictions = false;
            }),
            (&["-o", "idle_timeout=0"], |s| {
                s.idle_timeout = Duration::ZERO
            }),
            (&["-I", "1m"], |s| s.item_size_max = 1 << 20),
            (&["12001", "10", "100"], |s| {
                s.port = 12001;
                s.seed_num_elements = Some(10);
                s.seed_element_size = Some(100);
            }),
        ];
        for (flags, change) in table {
            let mut want = Settings::default();
            from_file(&mut want);
            change(&mut want);
            assert_eq!(
                run(text, flags),
                Ok(want.clone()),
                "{flags:?} after --config"
            );
            // The same flags before --config.
            let file = TempToml::new(text);
            let mut args: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
            args.extend(["--config".into(), file.0.clone().into_os_string()]);
            assert_eq!(
                load(args),
                Ok(Action::Run(Box::new(want))),
                "{flags:?} before --config"
            );
        }
        // A flag overriding a bad value hides it: the file's value is never used.
        assert_eq!(run("port = 0\n", &["-p", "11211"]), Ok(Settings::default()));
        // A flag's own error is the flag's, not the file's.
        assert_eq!(
            run("port = 11311\n", &["-p", "0"]).map_err(|e| e.starts_with("-p 0: ")),
            Err(true)
        );
        // The -I vs -m rule sees both layers: the file's memory, the flag's item size.
        assert_eq!(
            run("memory_limit_mb = 4\n", &["-I", "3m"]),
            Err(
                "-I 3m: Cannot set item size limit higher than 1/2 of memory max. \
                 (memory limit is 4 MB)"
                    .into()
            )
        );
        assert_eq!(
            run("item_size_max = \"3m\"\n", &["-m", "4"]),
            Err(
                "config error: {file} line 1: item_size_max = \"3m\": Cannot set item size \
                 limit higher than 1/2 of memory max. (memory limit is 4 MB)"
                    .into()
            )
        );
    }

    /// Every error kind: one line, the file, the line number, the key.
    #[test]
    fn errors() {
        let unknown = "(expected one of: port, unix_socket, unix_socket_mode, listen, memory_limit_mb, evictions, \
                       max_connections, workers, max_workers, item_size_max, growth_factor, chunk_size, \
                       slab_automove, slab_automove_ratio, slab_automove_window, track_sizes, lru_crawler, \
                       lru_crawler_sleep, lru_crawler_tocrawl, verbosity, cas_enabled, \
                       flush_enabled, dump_enabled, shutdown_enabled, backlog, protocol, reqs_per_event, \
                       pid_file, user, auth_file, memory_file, drain_timeout_secs, \
                       idle_timeout_secs, seed_num_elements, seed_element_size)";
        let table: &[(&str, &str)] = &[
            // Unknown keys.
            (
                "port = 1\n\n# typo below\nmemory_limt_mb = 5\n",
                "line 4: unknown key \"memory_limt_mb\" {keys}",
            ),
            (
                "[server]\nport = 5\n",
                "line 1: unknown key \"server\" {keys}",
            ),
            (
                "port = 1\nmemory.limit = 5\n",
                "line 2: unknown key \"memory\" {keys}",
            ),
            // TOML syntax.
            (
                "port = 1\nport = 2\n",
                "line 2: invalid TOML: duplicate key (port = 2)",
            ),
            (
                "\nport 5\n",
                "line 2: invalid TOML: key with no value, expected `=` (port 5)",
            ),
            (
                "port = \n",
                "line 1: invalid TOML: string values must be quoted, expected literal string (port =)",
            ),
            // Wrong types.
            (
                "# c\n\nport = \"abc\"\n",
                "line 3: port = \"abc\": expected an integer, found a string",
            ),
            (
                "port = 1.5",
                "line 1: port = 1.5: expected an integer, found a float",
            ),
            (
                "listen = \"127.0.0.1\"",
                "line 1: listen = \"127.0.0.1\": expected an array, found a string",
            ),
            (
                "listen = [\"127.0.0.1\", 5]",
                "line 1: listen = [\"127.0.0.1\", 5]: invalid type: integer `5`, expected a string",
            ),
            (
                "evictions = \"yes\"",
                "line 1: evictions = \"yes\": expected a boolean, found a string",
            ),
            (
                "item_size_max = true",
                "line 1: item_size_max = true: expected a string or an integer, found a boolean",
            ),
            (
                "verbosity = [1]",
                "line 1: verbosity = [1]: expected an integer, found an array",
            ),
            (
                "user = 0",
                "line 1: user = 0: expected a string, found an integer",
            ),
            (
                "port = 99999999999999999999",
                "line 1: port = 99999999999999999999: out of range",
            ),
            // Bad values.
            (
                "port = 70000",
                "line 1: port = 70000: out of range (-1..65535)",
            ),
            (
                "port = 0",
                "line 1: port = 0: port 0 turns TCP off, which leaves nothing to listen on \
                 without a unix socket (-s); use -1 for an ephemeral port",
            ),
            (
                "unix_socket_mode = \"0o770\"",
                "line 1: unix_socket_mode = \"0o770\": not a permission mode (octal, 0 to \
                 0777, e.g. 0770)",
            ),
            (
                "unix_socket_mode = 770",
                "line 1: unix_socket_mode = 770: expected a string, found an integer",
            ),
            (
                "unix_socket = \"\"",
                "line 1: unix_socket = \"\": must not be empty",
            ),
            (
                "listen = [\n  \"127.0.0.1\",\n  \"127.0.0.1:80\",\n]\n",
                "line 3: listen = \"127.0.0.1:80\": \"127.0.0.1:80\": per-address ports \
                 (<addr>:<port>) are not supported; use -p",
            ),
            ("listen = []", "line 1: listen = []: no listen address"),
            (
                "memory_limit_mb = 0",
                "line 1: memory_limit_mb = 0: Memory limit must be greater than 0",
            ),
            (
                "memory_limit_mb = 1",
                "line 1: memory_limit_mb = 1: Cannot set item size limit higher than 1/2 of \
                 memory max. (item size limit is 1048576 bytes)",
            ),
            (
                "max_connections = -1",
                "line 1: max_connections = -1: Maximum connections must be greater than 0",
            ),
            (
                "workers = 0",
                "line 1: workers = 0: Number of threads must be greater than 0",
            ),
            (
                "workers = 5000",
                "line 1: workers = 5000: out of range (1..1024)",
            ),
            (
                "workers = 4\nmax_workers = 3",
                "line 2: max_workers = 3: fewer than the 4 workers asked for",
            ),
            (
                "item_size_max = \"1x\"",
                "line 1: item_size_max = \"1x\": not a size (expected bytes, or a number with a \
                 k, m or g suffix: 512k, 1m)",
            ),
            (
                "item_size_max = -5",
                "line 1: item_size_max = -5: not a size (expected bytes, or a number with a \
                 k, m or g suffix: 512k, 1m)",
            ),
            (
                "item_size_max = 512",
                "line 1: item_size_max = 512: Item max size cannot be less than 1024 bytes.",
            ),
            (
                "memory_limit_mb = 8192\nitem_size_max = \"2g\"",
                "line 2: item_size_max = \"2g\": Cannot set item size limit higher than a \
                 gigabyte.",
            ),
            (
                "slab_automove = 3",
                "line 1: slab_automove = 3: slab_automove must be between 0 and 2",
            ),
            (
                "slab_automove = \"1\"",
                "line 1: slab_automove = \"1\": expected an integer, found a string",
            ),
            (
                "# r\nslab_automove_ratio = 1.5",
                "line 2: slab_automove_ratio = 1.5: slab_automove_ratio must be > 0 and < 1",
            ),
            (
                "slab_automove_ratio = 0.0",
                "line 1: slab_automove_ratio = 0.0: slab_automove_ratio must be > 0 and < 1",
            ),
            (
                "slab_automove_ratio = nan",
                "line 1: slab_automove_ratio = nan: slab_automove_ratio must be > 0 and < 1",
            ),
            (
                "slab_automove_window = 2",
                "line 1: slab_automove_window = 2: slab_automove_window must be > 2",
            ),
            (
                "slab_automove_window = 100000",
                "line 1: slab_automove_window = 100000: out of range (3..3600)",
            ),
            (
                "verbosity = 4",
                "line 1: verbosity = 4: out of range (0..3)",
            ),
            (
                "backlog = 0",
                "line 1: backlog = 0: Listen backlog must be greater than 0",
            ),
            (
                "protocol = \"text\"",
                "line 1: protocol = \"text\": Invalid value for binding protocol: text -- \
                 should be one of auto, binary, or ascii",
            ),
            (
                "reqs_per_event = 0",
                "line 1: reqs_per_event = 0: Number of requests per event must be greater than 0",
            ),
            (
                "pid_file = \"\"",
                "line 1: pid_file = \"\": must not be empty",
            ),
            ("user = \"\"", "line 1: user = \"\": must not be empty"),
            (
                "drain_timeout_secs = -1",
                "line 1: drain_timeout_secs = -1: out of range (0..4294967295)",
            ),
            (
                "idle_timeout_secs = 4294967296",
                "line 1: idle_timeout_secs = 4294967296: out of range (0..4294967295)",
            ),
            (
                "seed_num_elements = 0",
                "line 1: seed_num_elements = 0: must be greater than 0",
            ),
            (
                "seed_element_size = -3",
                "line 1: seed_element_size = -3: must be greater than 0",
            ),
        ];
        for (text, want) in table {
            let want = format!("config error: {{file}} {want}").replace("{keys}", unknown);
            let got = run(text, &[]);
            assert_eq!(got, Err(want), "{text:?}");
            let got = got.unwrap_err();
            assert!(!got.contains('\n'), "{got}");
        }
    }

    #[test]
    fn unreadable_file() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("shmcached-no-such-{}.toml", std::process::id()));
        let got = load(["--config".into(), missing.clone().into_os_string()]).unwrap_err();
        assert_eq!(
            got.0,
            format!(
                "config error: {}: cannot read: No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert_eq!(got.exit_code(), 78);
        let got = load(["--config".into(), dir.clone().into_os_string()]).unwrap_err();
        assert!(
            got.0
                .starts_with(&format!("config error: {}: cannot read: ", dir.display())),
            "{got}"
        );
        let file = TempToml::new("");
        std::fs::write(&file.0, b"port = \"\xff\"\n").unwrap();
        let got = run_path(&file.0, &[]).unwrap_err();
        assert_eq!(
            got,
            "config error: {file}: cannot read: stream did not contain valid UTF-8"
        );
    }

    /// `auth_file` is read like `-Y`, its errors name the key; a flag wins.
    #[test]
    fn auth_file() {
        let auth = TempToml::new("user:secret\n");
        let shown = auth.0.display().to_string();
        let s = run(&format!("auth_file = \"{shown}\"\n"), &[]).unwrap();
        assert_eq!(s.auth_file.as_deref(), Some(auth.0.as_path()));
        assert!(s.auth.is_some_and(|a| a.check(b"user", b"secret")));
        let missing = format!("{shown}.missing");
        assert_eq!(
            run(&format!("# auth\nauth_file = \"{missing}\"\n"), &[]),
            Err(format!(
                "config error: {{file}} line 2: auth_file = \"{missing}\": Could not open \
                 authfile [{missing}] for reading, error No such file or directory"
            ))
        );
        let s = run(&format!("auth_file = \"{missing}\"\n"), &["-Y", &shown]).unwrap();
        assert_eq!(s.auth_file.as_deref(), Some(auth.0.as_path()));
    }

    #[test]
    fn exit_codes() {
        let file = TempToml::new("port = 0");
        let e = load(["--config".into(), file.0.clone().into_os_string()]).unwrap_err();
        assert_eq!(e.exit_code(), 78);
        let e = load(["-p".into(), "0".into()]).unwrap_err();
        assert_eq!(e.exit_code(), 64);
    }
}
