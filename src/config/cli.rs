//! memcached's command-line flags, with getopt's habits: clustered `-vv`,
//! attached `-p11211` or separate `-p 11211` values, values that start with
//! `-` (`-p -1`), `--` ending the options. memcached's long names
//! (`--port=11211`) work too, plus our `--config <FILE>`.
//!
//! This file only gathers values into [`RawSettings`]; `validate.rs` checks
//! them. Positional arguments are the seed's forms:
//!
//! ```text
//! shmcached [options] [num_elements [element_size]]
//! shmcached [options] <port> <num_elements> <element_size>
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::{Arg, Parser};

use super::ConfigError;
use super::validate::{Given, Origin, RawSettings};

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum CommandLine {
    /// `-h`, `-V`: print this and exit 0.
    Print(String),
    /// Start: read `config` (if any), then apply `flags` over it.
    Run {
        config: Option<PathBuf>,
        flags: Box<RawSettings>,
    },
}

/// memcached's long option names, each the twin of a short flag.
const LONG_OPTIONS: &[(&str, char)] = &[
    ("port", 'p'),
    ("udp-port", 'U'),
    ("listen", 'l'),
    ("unix-socket", 's'),
    ("unix-mask", 'a'),
    ("enable-shutdown", 'A'),
    ("daemon", 'd'),
    ("user", 'u'),
    ("memory-limit", 'm'),
    ("disable-evictions", 'M'),
    ("conn-limit", 'c'),
    ("verbose", 'v'),
    ("help", 'h'),
    ("version", 'V'),
    ("pidfile", 'P'),
    ("threads", 't'),
    ("max-reqs-per-event", 'R'),
    ("disable-cas", 'C'),
    ("listen-backlog", 'b'),
    ("protocol", 'B'),
    ("max-item-size", 'I'),
    ("slab-growth-factor", 'f'),
    ("slab-min-size", 'n'),
    ("disable-flush-all", 'F'),
    ("disable-dumping", 'X'),
    ("auth-file", 'Y'),
    ("memory-file", 'e'),
    ("extended", 'o'),
];

/// How an accepted-and-ignored `-o` key checks its value (memcached's rules).
type SuboptionCheck = fn(Option<&str>) -> Result<(), &'static str>;

/// memcached's `-o` tuning keys that mean nothing for shmcached (its LRU, slab
/// and hash internals are not ours): accepted so that a memcached command line
/// still starts, and ignored. Values are checked as memcached does.
const IGNORED_SUBOPTIONS: &[(&str, SuboptionCheck)] = &[
    ("relaxed_privileges", any_value),
    ("no_lru_maintainer", any_value),
    ("lru_maintainer", any_value),
    ("modern", any_value),
    ("no_modern", any_value),
    ("hash_algorithm", hash_algorithm),
];

fn any_value(_: Option<&str>) -> Result<(), &'static str> {
    Ok(())
}

fn hash_algorithm(value: Option<&str>) -> Result<(), &'static str> {
    match value {
        None => Err("Missing hash_algorithm argument"),
        Some("jenkins" | "murmur3" | "xxh3") => Ok(()),
        Some(_) => Err("Unknown hash_algorithm option (jenkins, murmur3, xxh3)"),
    }
}

/// Read the command line (without argv[0]).
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<CommandLine, ConfigError> {
    let mut parser = Parser::from_args(args);
    // getopt reads `-p=1` as the value "=1"; so do we.
    parser.set_short_equals(false);
    let mut flags = RawSettings::default();
    let mut config: Option<PathBuf> = None;
    let mut verbosity = 0;
    let mut positional: Vec<OsString> = Vec::new();

    while let Some(arg) = parser.next().map_err(lexopt_error)? {
        let (flag, name) = match arg {
            Arg::Short(c) => (c, format!("-{c}")),
            Arg::Long("config") => {
                let path = parser.value().map_err(lexopt_error)?;
                if config.replace(path.into()).is_some() {
                    return Err(ConfigError("--config given more than once".into()));
                }
                continue;
            }
            Arg::Long("help-man") => return Ok(CommandLine::Print(help_man())),
            Arg::Long(long) => match LONG_OPTIONS.iter().find(|(name, _)| *name == long) {
                Some(&(_, c)) => (c, format!("--{long}")),
                None => return Err(ConfigError(format!("unrecognized option '--{long}'"))),
            },
            Arg::Value(value) => {
                positional.push(value);
                continue;
            }
        };
        match flag {
            'p' => flags.port = Some(integer(&mut parser, &name)?),
            'U' => flags.udp_port = Some(integer(&mut parser, &name)?),
            'l' => {
                let value = text(&mut parser, &name)?;
                flags.listen.get_or_insert_with(Vec::new).push(value);
            }
            's' => flags.unix_socket = Some(path(&mut parser, &name)?),
            'a' => flags.unix_socket_mode = Some(text(&mut parser, &name)?),
            'm' => flags.memory_limit_mb = Some(integer(&mut parser, &name)?),
            'M' => flags.evictions = Some(switch(&name, false)),
            'c' => flags.max_connections = Some(integer(&mut parser, &name)?),
            't' => flags.workers = Some(integer(&mut parser, &name)?),
            'I' => flags.item_size_max = Some(text(&mut parser, &name)?),
            'f' => flags.growth_factor = Some(float(&mut parser, &name)?),
            'n' => flags.chunk_size = Some(integer(&mut parser, &name)?),
            // memcached takes any number of v's; past 3 they add nothing.
            'v' => {
                verbosity = (verbosity + 1).min(3);
                flags.verbosity = Some(Given {
                    value: verbosity,
                    origin: Origin::Arg(name),
                });
            }
            'C' => flags.cas_enabled = Some(switch(&name, false)),
            'F' => flags.flush_enabled = Some(switch(&name, false)),
            'X' => flags.dump_enabled = Some(switch(&name, false)),
            'A' => flags.shutdown_enabled = Some(switch(&name, true)),
            'b' => flags.backlog = Some(integer(&mut parser, &name)?),
            'B' => flags.protocol = Some(text(&mut parser, &name)?),
            'R' => flags.reqs_per_event = Some(integer(&mut parser, &name)?),
            'P' => flags.pid_file = Some(path(&mut parser, &name)?),
            'u' => flags.user = Some(text(&mut parser, &name)?),
            'Y' => flags.auth_file = Some(path(&mut parser, &name)?),
            'e' => flags.memory_file = Some(path(&mut parser, &name)?),
            'D' => flags.stats_prefix_delimiter = Some(text(&mut parser, &name)?),
            'o' => {
                let value = parser.value().map_err(lexopt_error)?;
                suboptions(&utf8(value, &name)?, &mut flags)?;
            }
            'd' => flags.daemonize = Some(switch(&name, true)),
            'h' => return Ok(CommandLine::Print(help())),
            'V' => return Ok(CommandLine::Print(version())),
            other => return Err(ConfigError(format!("invalid option -- '{other}'"))),
        }
    }
    seed_arguments(&positional, &mut flags)?;
    Ok(CommandLine::Run {
        config,
        flags: Box::new(flags),
    })
}

/// `shmcached [num_elements [element_size]]` or `<port> <num_elements> <element_size>`.
fn seed_arguments(values: &[OsString], flags: &mut RawSettings) -> Result<(), ConfigError> {
    const FORMS: &str = "the only arguments are [num_elements [element_size]] \
                         or <port> <num_elements> <element_size>";
    let mut numbers = Vec::with_capacity(values.len());
    for value in values {
        match value.to_str() {
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => numbers.push(s),
            _ => {
                return Err(ConfigError(format!(
                    "unexpected argument \"{}\": {FORMS}",
                    value.to_string_lossy()
                )));
            }
        }
    }
    let names: &[&str] = match numbers.len() {
        0 => &[],
        1 => &["num_elements"],
        2 => &["num_elements", "element_size"],
        3 => &["port", "num_elements", "element_size"],
        _ => return Err(ConfigError(format!("too many arguments: {FORMS}"))),
    };
    for (text, name) in numbers.iter().zip(names) {
        let given = Some(Given {
            // All digits: only overflow can fail, and saturating keeps it out of range.
            value: text.parse().unwrap_or(i64::MAX),
            origin: Origin::Arg(format!("argument \"{text}\" ({name})")),
        });
        match *name {
            "port" => {
                // Which came last is lost by now; refuse rather than guess.
                if let Some(g) = &flags.port {
                    return Err(g.origin.error(format_args!(
                        "the port is also given as argument \"{text}\""
                    )));
                }
                flags.port = given;
            }
            "num_elements" => flags.seed_num_elements = given,
            _ => flags.seed_element_size = given,
        }
    }
    Ok(())
}

/// `-o k[=v],...`: ours (`idle_timeout`, `drain_timeout`, `max_workers`), the slab mover's
/// (as memcached), or one memcached key that we ignore; anything else is memcached's
/// `Illegal suboption`.
fn suboptions(list: &str, flags: &mut RawSettings) -> Result<(), ConfigError> {
    let tokens: Vec<&str> = list.split(',').collect();
    for (i, token) in tokens.iter().enumerate() {
        // memcached stops at the end of the string: one trailing comma is fine.
        if token.is_empty() && i == tokens.len() - 1 {
            break;
        }
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (*token, None),
        };
        let number = match key {
            // Page moves are always on, as memcached's default since 1.5.
            "slab_reassign" => continue,
            // memcached ignores a value here.
            "track_sizes" => {
                flags.track_sizes = Some(switch(&format!("-o {token}"), true));
                continue;
            }
            // memcached: no value is level 1.
            "slab_automove" => {
                let value = value.unwrap_or("1");
                flags.slab_automove = Some(parse_integer(value, format!("-o {token}"))?);
                continue;
            }
            "slab_automove_ratio" => {
                let Some(value) = value else {
                    return Err(ConfigError("Missing slab_automove_ratio argument".into()));
                };
                flags.slab_automove_ratio = Some(parse_float(value, format!("-o {token}"))?);
                continue;
            }
            // memcached: a value is ignored.
            "lru_crawler" | "no_lru_crawler" => {
                flags.lru_crawler = Some(switch(&format!("-o {token}"), key == "lru_crawler"));
                continue;
            }
            "lru_crawler_sleep" | "lru_crawler_tocrawl" if value.is_none() => {
                return Err(ConfigError(format!("Missing {key} value")));
            }
            "lru_crawler_sleep" => &mut flags.lru_crawler_sleep,
            "lru_crawler_tocrawl" => &mut flags.lru_crawler_tocrawl,
            "slab_automove_window" => {
                if value.is_none() {
                    return Err(ConfigError("Missing slab_automove_window argument".into()));
                }
                &mut flags.slab_automove_window
            }
            "idle_timeout" => &mut flags.idle_timeout_secs,
            "drain_timeout" => &mut flags.drain_timeout_secs,
            "max_workers" => &mut flags.max_workers,
            _ => match IGNORED_SUBOPTIONS.iter().find(|(name, _)| *name == key) {
                Some((_, check)) => {
                    check(value).map_err(|msg| ConfigError(msg.into()))?;
                    continue;
                }
                None => return Err(ConfigError(format!("Illegal suboption \"{token}\""))),
            },
        };
        let Some(value) = value else {
            return Err(ConfigError(format!("Missing numeric argument for {key}")));
        };
        *number = Some(parse_integer(value, format!("-o {token}"))?);
    }
    Ok(())
}

/// The next value, as an integer (checked later); `-c abc` fails here.
fn integer(parser: &mut Parser, name: &str) -> Result<Given<i64>, ConfigError> {
    let value = utf8(parser.value().map_err(lexopt_error)?, name)?;
    parse_integer(&value, format!("{name} {value}"))
}

fn parse_integer(text: &str, origin: String) -> Result<Given<i64>, ConfigError> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError(format!("{origin}: not an integer")));
    }
    // Too many digits saturates, so that the range check quotes the value.
    let value = text.parse().unwrap_or(if text.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    });
    Ok(Given {
        value,
        origin: Origin::Arg(origin),
    })
}

/// The next value, as a finite float.
fn float(parser: &mut Parser, name: &str) -> Result<Given<f64>, ConfigError> {
    let value = utf8(parser.value().map_err(lexopt_error)?, name)?;
    parse_float(&value, format!("{name} {value}"))
}

fn parse_float(text: &str, origin: String) -> Result<Given<f64>, ConfigError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Given {
            value: v,
            origin: Origin::Arg(origin),
        }),
        _ => Err(ConfigError(format!("{origin}: not a number"))),
    }
}

/// The next value, as UTF-8 text.
fn text(parser: &mut Parser, name: &str) -> Result<Given<String>, ConfigError> {
    let value = utf8(parser.value().map_err(lexopt_error)?, name)?;
    Ok(Given {
        origin: Origin::Arg(format!("{name} {value}")),
        value,
    })
}

/// The next value, as a path (any bytes).
fn path(parser: &mut Parser, name: &str) -> Result<Given<PathBuf>, ConfigError> {
    let value = parser.value().map_err(lexopt_error)?;
    Ok(Given {
        origin: Origin::Arg(format!("{name} {}", value.to_string_lossy())),
        value: value.into(),
    })
}

fn utf8(value: OsString, name: &str) -> Result<String, ConfigError> {
    value.into_string().map_err(|value| {
        ConfigError(format!(
            "{name} {}: not valid UTF-8",
            value.to_string_lossy()
        ))
    })
}

fn switch(name: &str, value: bool) -> Given<bool> {
    Given {
        value,
        origin: Origin::Arg(name.to_string()),
    }
}

/// lexopt's errors in getopt's words.
fn lexopt_error(e: lexopt::Error) -> ConfigError {
    ConfigError(match e {
        lexopt::Error::MissingValue {
            option: Some(option),
        } => match option.strip_prefix("--") {
            Some(long) => format!("option '--{long}' requires an argument"),
            None => format!(
                "option requires an argument -- '{}'",
                option.trim_start_matches('-')
            ),
        },
        lexopt::Error::UnexpectedValue { option, .. } => {
            format!("option '{option}' doesn't allow an argument")
        }
        other => other.to_string(),
    })
}

pub(crate) fn version() -> String {
    format!(
        "shmcached {} (memcached 1.6.18 compatible)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `-h`: memcached's layout, our flags only.
pub(crate) fn help() -> String {
    // The ignored keys, wrapped under the description column.
    let mut ignored = String::new();
    let mut width = 0;
    for (i, (key, _)) in IGNORED_SUBOPTIONS.iter().enumerate() {
        if i > 0 && width + 2 + key.len() > 52 {
            ignored.push_str(",\n                          ");
            width = 0;
        } else if i > 0 {
            ignored.push_str(", ");
            width += 2;
        }
        ignored.push_str(key);
        width += key.len();
    }
    format!(
        "{version}\
usage: shmcached [options] [num_elements [element_size]]
       shmcached [options] <port> <num_elements> <element_size>
-p, --port=<num>          TCP port to listen on (default: 11211, -1: ephemeral)
-s, --unix-socket=<file>  UNIX socket to listen on (disables network support)
-a, --unix-mask=<mask>    access mask for UNIX socket, in octal (default: 700)
-U, --udp-port=<num>      UDP port: only 0 (off) is accepted, no UDP support
-A, --enable-shutdown     enable ascii \"shutdown\" command
-l, --listen=<addr>       interface to listen on (default: 127.0.0.1)
                          repeatable, comma separated: IPv4, IPv6, localhost
                          or a host name
-d, --daemon              run as a daemon (returns once it serves; with -P)
-u, --user=<user>         assume identity of <username> (only when run as root)
-m, --memory-limit=<num>  item memory in megabytes (default: 64)
-M, --disable-evictions   return error on memory exhausted instead of evicting
-c, --conn-limit=<num>    max simultaneous connections (default: 1024)
-v, --verbose             verbose (print errors/warnings while in event loop)
-vv                       very verbose (also print client commands/responses)
-vvv                      extremely verbose (internal state transitions)
-h, --help                print this help and exit
-V, --version             print version and exit
-P, --pidfile=<file>      save PID in <file>
-t, --threads=<num>       number of worker processes to use (default: 4, max: 1024)
-R, --max-reqs-per-event  maximum number of requests per event, limits the
                          requests processed per connection to prevent
                          starvation (default: 20)
-C, --disable-cas         disable use of CAS
-b, --listen-backlog=<num> set the backlog queue limit (default: 1024)
-B, --protocol=<name>     protocol - one of ascii, binary, or auto (default: auto)
-I, --max-item-size=<num> adjusts max item size
                          (default: 1m, min: 1k, max: 1g; k, m, g suffixes)
-f, --slab-growth-factor=<num> chunk size growth factor (default: 1.08;
                          memcached's is 1.25)
-n, --slab-min-size=<bytes> min space used for key+value+flags (default: 16;
                          memcached's is 48)
-F, --disable-flush-all   disable flush_all command
-X, --disable-dumping     disable stats cachedump and lru_crawler metadump
-Y, --auth-file=<file>    enable ASCII protocol authentication. format:
                          user:pass\\nuser2:pass2\\n
-e, --memory-file=<file>  keep the cache in <file> (on a tmpfs such as
                          /dev/shm) so that it survives a restart (warm
                          restart after SIGTERM or SIGUSR1)
-D <char>                 delimiter between key prefixes and IDs for the
                          per-prefix stats (stats detail dump; default: ':');
                          turns per-prefix stats on
-o, --extended            comma separated list of extended options
   - idle_timeout:        timeout for idle connections. (default: 0, no timeout)
   - drain_timeout:       seconds a graceful stop waits for requests in flight
                          (default: 5)
   - max_workers:         worker slots made at start: the most workers a reload
                          (SIGHUP) can raise -t to (default: -t)
   - slab_reassign:       accepted: pages always move between slab classes
   - slab_automove:       0: pages move on \"slabs reassign\" only; 1: free pages
                          go to a pool, then to the classes that need them;
                          2: a page moves at every eviction (default: 1)
   - slab_automove_ratio: pages go to a class whose oldest item is younger than
                          this fraction of the others' (default: 0.8)
   - slab_automove_window: seconds of history the automover judges by
                          (default: 30)
   - track_sizes:         the item size histogram (stats sizes) counts from the
                          start
   - accepted and ignored (memcached internals that shmcached does not have):
                          {ignored}
--config=<file>           read settings from a TOML file; flags override it

num_elements, element_size: the seed server's arguments; memory and the max
item size grow so that num_elements items of element_size bytes fit.
",
        version = version(),
        ignored = ignored,
    )
}

/// `--help-man`: the help above, and `shmcached check`'s, as a man page
/// (roff), so that `man shmcached` says what `-h` says. The packaging
/// (packaging/build-deb.sh) installs it as shmcached.1.
pub(crate) fn help_man() -> String {
    /// A flag entry: its tag (`-p, --port=<num>`) and its description.
    struct Entry {
        nested: bool,
        tag: String,
        text: String,
    }
    /// The usage lines, the entries, and the paragraph after them.
    fn split(help: &str) -> (Vec<String>, Vec<Entry>, String) {
        let (mut usage, mut entries, mut notes) = (Vec::new(), Vec::<Entry>::new(), Vec::new());
        let mut blank = false;
        for line in help.lines() {
            let trimmed = line.trim();
            if let Some(u) = line.strip_prefix("usage: ") {
                usage.push(u.trim().to_string());
            } else if line.starts_with("       shmcached") {
                usage.push(trimmed.to_string());
            } else if trimmed.is_empty() {
                blank = true;
            } else if blank && !entries.is_empty() && !line.starts_with([' ', '-']) {
                notes.push(trimmed);
            } else if line.starts_with('-') {
                // The tag is the leading `-x,` `--long=<v>` `<v>` words.
                let words: Vec<&str> = trimmed.split_whitespace().collect();
                let n = words
                    .iter()
                    .take_while(|w| w.starts_with('-') || w.starts_with('<'))
                    .count();
                entries.push(Entry {
                    nested: false,
                    tag: words[..n].join(" "),
                    text: words[n..].join(" "),
                });
            } else if let Some(sub) = line.strip_prefix("   - ") {
                let (tag, text) = sub.split_once(':').unwrap_or((sub, ""));
                entries.push(Entry {
                    nested: true,
                    tag: tag.trim().to_string(),
                    text: text.trim().to_string(),
                });
            } else if let Some(last) = entries.last_mut() {
                if !last.text.is_empty() {
                    last.text.push(' ');
                }
                last.text.push_str(trimmed);
            }
        }
        (usage, entries, notes.join(" "))
    }
    /// Escape for roff: backslashes, a leading `.` or `'`, and dashes that
    /// start a word (options, negative numbers) as `\-`.
    fn esc(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut prev = ' ';
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' if prev == ' ' || prev == '(' || prev == '-' || prev == '[' => {
                    out.push_str("\\-")
                }
                _ => out.push(c),
            }
            prev = c;
        }
        if out.starts_with(['.', '\'']) {
            out.insert_str(0, "\\&");
        }
        out
    }
    fn options(out: &mut String, entries: &[Entry]) {
        let mut nested = false;
        for e in entries {
            if e.nested != nested {
                out.push_str(if e.nested { ".RS\n" } else { ".RE\n" });
                nested = e.nested;
            }
            let font = if e.nested { ".I" } else { ".B" };
            out.push_str(&format!(
                ".TP\n{font} \"{}\"\n{}\n",
                esc(&e.tag),
                esc(&e.text)
            ));
        }
        if nested {
            out.push_str(".RE\n");
        }
    }

    let version = version();
    let release = version.split(" (").next().unwrap_or("shmcached");
    let (usage, entries, notes) = split(&help());
    let (check_usage, check_entries, check_notes) = split(crate::check::HELP);
    let mut out = format!(
        ".\\\" Generated by `shmcached --help-man` from the text of `shmcached -h`.\n\
         .TH SHMCACHED 1 \"\" \"{release}\" \"User Commands\"\n\
         .SH NAME\n\
         shmcached \\- memcached\\-compatible cache daemon with prefork workers over shared memory\n\
         .SH SYNOPSIS\n"
    );
    for u in usage.iter().chain(&check_usage) {
        let (cmd, args) = match u.strip_prefix("shmcached check") {
            Some(rest) => ("shmcached check", rest),
            None => ("shmcached", u.strip_prefix("shmcached").unwrap_or(u)),
        };
        out.push_str(&format!(".B {cmd}\n{}\n.br\n", esc(args.trim())));
    }
    out.push_str(&format!(
        ".SH DESCRIPTION\n\
         shmcached speaks memcached's text and binary protocols. A supervisor process forks worker \
         processes that accept on one port and serve one hashtable kept in a shared\\-memory \
         segment in /dev/shm; a worker that dies is respawned and the others go on serving \
         the same data. It takes memcached's flags, and the same settings from a TOML file \
         (\\fB\\-\\-config\\fR); flags override the file.\n\
         .PP\n{}\n\
         .SH OPTIONS\n",
        esc(&notes)
    ));
    options(&mut out, &entries);
    out.push_str(".SH HEALTH CHECK\n");
    out.push_str(&format!("{}\n.PP\n", esc(&check_notes)));
    options(&mut out, &check_entries);
    out.push_str(
        ".SH SIGNALS\n\
         SIGTERM and SIGINT stop gracefully (requests in flight finish, bounded by \
         drain_timeout); SIGHUP asks for a reload. A worker killed with SIGKILL is respawned.\n\
         .SH FILES\n\
         .TP\n/etc/shmcached/shmcached.toml\nthe settings read by the systemd unit\n\
         .TP\n/dev/shm/shmcached\\-*\nthe shared segment of a running instance\n\
         .SH SEE ALSO\n\
         .BR memcached (1),\n\
         .BR systemctl (1),\n\
         /usr/share/doc/shmcached/docs/operations.md,\n\
         /usr/share/doc/shmcached/docs/configuration.md\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::{Action, Settings, load};
    use crate::protocol::Dialect;

    fn run(args: &[&str]) -> Result<Action, String> {
        load(args.iter().map(Into::into)).map_err(|e| e.0)
    }

    /// Flags and what they change from the defaults.
    #[test]
    fn flags() {
        type Change = fn(&mut Settings);
        let table: &[(&[&str], Change)] = &[
            (&[], |_| {}),
            (&["-p", "11311"], |s| s.port = 11311),
            (&["-p11311"], |s| s.port = 11311),
            (&["-p", "-1"], |s| s.port = 0),
            (&["-p-1"], |s| s.port = 0),
            (&["-p", "65535"], |s| s.port = 65535),
            (&["--port=11311"], |s| s.port = 11311),
            (&["--port", "11311"], |s| s.port = 11311),
            (&["-p", "1", "-p", "2"], |s| s.port = 2),
            (&["-s", "/run/x.sock"], |s| {
                s.unix_socket = Some("/run/x.sock".into())
            }),
            (&["-s", "x.sock", "-a", "0770"], |s| {
                s.unix_socket = Some("x.sock".into());
                s.unix_socket_mode = 0o770;
            }),
            (&["--unix-socket=/x", "--unix-mask=666"], |s| {
                s.unix_socket = Some("/x".into());
                s.unix_socket_mode = 0o666;
            }),
            (&["-s", "/x", "-a", "0"], |s| {
                s.unix_socket = Some("/x".into());
                s.unix_socket_mode = 0;
            }),
            // -a alone is accepted and has nothing to apply to, as in memcached.
            (&["-a", "0777"], |s| s.unix_socket_mode = 0o777),
            (&["-s", "/x", "-p", "0"], |s| {
                s.unix_socket = Some("/x".into());
                s.port = 0;
            }),
            (&["-p", "0", "-s", "/x"], |s| {
                s.unix_socket = Some("/x".into());
                s.port = 0;
            }),
            (&["-U", "0"], |_| {}),
            (&["-D", "#"], |s| {
                s.stats_prefix_delimiter = b'#';
                s.detail_enabled = true;
            }),
            (&["-D/x"], |s| {
                s.stats_prefix_delimiter = b'/';
                s.detail_enabled = true;
            }),
            (&["-U0"], |_| {}),
            (&["-l", "0.0.0.0"], |s| s.listen = vec![[0, 0, 0, 0].into()]),
            (&["-l", "127.0.0.1,::1"], |s| {
                s.listen = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]
            }),
            (&["-l", "10.0.0.1", "-l", "::", "-l", "10.0.0.1"], |s| {
                s.listen = vec!["10.0.0.1".parse().unwrap(), "::".parse().unwrap()]
            }),
            (&["-l", "[::1]"], |s| {
                s.listen = vec!["::1".parse().unwrap()]
            }),
            (&["-llocalhost"], |s| s.listen = vec![[127, 0, 0, 1].into()]),
            // Empty list items are skipped, as memcached's strtok does.
            (&["-l", "10.0.0.1,", "-l", ""], |s| {
                s.listen = vec![[10, 0, 0, 1].into()]
            }),
            (&["-m", "128"], |s| s.memory_limit = 128 << 20),
            (&["-m2"], |s| s.memory_limit = 2 << 20),
            (&["-M"], |s| s.evictions = false),
            (&["-c", "1"], |s| s.max_connections = 1),
            (&["-c", "4294967295"], |s| s.max_connections = u32::MAX),
            (&["-t", "1"], |s| s.workers = 1),
            (&["-t", "1024"], |s| s.workers = 1024),
            (&["--threads=8"], |s| s.workers = 8),
            (&["-I", "1k"], |s| s.item_size_max = 1024),
            (&["-I", "1024"], |s| s.item_size_max = 1024),
            (&["-I", "2m"], |s| s.item_size_max = 2 << 20),
            (&["-I", "32M"], |s| s.item_size_max = 32 << 20),
            (&["-I", "512K"], |s| s.item_size_max = 512 << 10),
            (&["-m", "4096", "-I", "1g"], |s| {
                s.memory_limit = 4096 << 20;
                s.item_size_max = 1 << 30;
            }),
            (&["-v"], |s| s.verbosity = 1),
            (&["-vv"], |s| s.verbosity = 2),
            (&["-v", "-v", "-v"], |s| s.verbosity = 3),
            (&["-vvvvv"], |s| s.verbosity = 3),
            (&["-C"], |s| s.cas_enabled = false),
            (&["-F"], |s| s.flush_enabled = false),
            (&["-X"], |s| s.dump_enabled = false),
            (&["--disable-dumping"], |s| s.dump_enabled = false),
            (&["-A"], |s| s.shutdown_enabled = true),
            (&["-b", "16"], |s| s.backlog = 16),
            (&["-f", "1.25"], |s| s.growth_factor = 1.25),
            (&["-n", "48"], |s| s.chunk_size = 48),
            (&["-B", "auto"], |_| {}),
            (&["-B", "ascii"], |s| s.protocol = Dialect::Ascii),
            (&["-B", "binary"], |s| s.protocol = Dialect::Binary),
            (&["-R", "1"], |s| s.reqs_per_event = 1),
            (&["-P", "/run/shmcached.pid"], |s| {
                s.pid_file = Some(PathBuf::from("/run/shmcached.pid"))
            }),
            (&["-u", "memcache"], |s| s.user = Some("memcache".into())),
            (&["-o", "idle_timeout=30"], |s| {
                s.idle_timeout = Duration::from_secs(30)
            }),
            (&["-o", "drain_timeout=0"], |s| {
                s.drain_timeout = Duration::ZERO
            }),
            (&["-o", "idle_timeout=1,drain_timeout=2"], |s| {
                s.idle_timeout = Duration::from_secs(1);
                s.drain_timeout = Duration::from_secs(2);
            }),
            (&["-o", "relaxed_privileges"], |_| {}),
            (&["-d"], |s| s.daemonize = true),
            (&["--daemon"], |s| s.daemonize = true),
            (&["-t", "2", "-o", "max_workers=8"], |s| {
                s.workers = 2;
                s.max_workers = Some(8);
            }),
            (
                &[
                    "-o",
                    "no_lru_crawler,lru_crawler,no_lru_maintainer,lru_maintainer",
                ],
                |_| {},
            ),
            (&["-o", "slab_reassign,slab_reassign=x"], |_| {}),
            (&["-o", "slab_automove=2"], |s| s.slab_automove = 2),
            (&["-o", "no_lru_crawler"], |s| s.lru_crawler = false),
            (&["-o", "no_lru_crawler,lru_crawler"], |_| {}),
            (&["-o", "lru_crawler_sleep=0"], |s| s.lru_crawler_sleep = 0),
            (&["-o", "lru_crawler_tocrawl=5000"], |s| {
                s.lru_crawler_tocrawl = 5000
            }),
            (&["-o", "slab_automove=0"], |s| s.slab_automove = 0),
            // memcached: no value is 1.
            (&["-o", "slab_automove=0,slab_automove"], |_| {}),
            (&["-o", "slab_automove_ratio=0.5"], |s| {
                s.slab_automove_ratio = 0.5
            }),
            // memcached's check lets 1 through, whatever its message says.
            (&["-o", "slab_automove_ratio=1"], |s| {
                s.slab_automove_ratio = 1.0
            }),
            (&["-o", "track_sizes"], |s| s.track_sizes = true),
            (&["-o", "slab_automove_window=3"], |s| {
                s.slab_automove_window = 3
            }),
            (
                &[
                    "-o",
                    "slab_automove=2,slab_automove_ratio=.25,slab_automove_window=60",
                ],
                |s| {
                    s.slab_automove = 2;
                    s.slab_automove_ratio = 0.25;
                    s.slab_automove_window = 60;
                },
            ),
            (&["-o", "modern", "-o", "no_modern"], |_| {}),
            (
                &["-o", "hash_algorithm=murmur3,hash_algorithm=xxh3"],
                |_| {},
            ),
            (&["-o", "hash_algorithm=jenkins,"], |_| {}),
            (&["-o", ""], |_| {}),
            // Clustered flags, the last one taking the rest as its value.
            (&["-vMCFAp11311"], |s| {
                s.verbosity = 1;
                s.evictions = false;
                s.cas_enabled = false;
                s.flush_enabled = false;
                s.shutdown_enabled = true;
                s.port = 11311;
            }),
            (&["-Mvc", "10"], |s| {
                s.evictions = false;
                s.verbosity = 1;
                s.max_connections = 10;
            }),
            // The seed's positional forms.
            (&["100"], |s| {
                s.seed_num_elements = Some(100);
                // 100 items of the default item size (1 MiB) need 100 MiB.
                s.memory_limit = 100 << 20;
            }),
            (&["10", "1000"], |s| {
                s.seed_num_elements = Some(10);
                s.seed_element_size = Some(1000);
            }),
            (&["1000000", "4000"], |s| {
                s.seed_num_elements = Some(1_000_000);
                s.seed_element_size = Some(4000);
                // 1e6 * 4320 bytes = 4119.87 MiB, rounded up.
                s.memory_limit = 4120 << 20;
            }),
            (&["11311", "10", "1000"], |s| {
                s.port = 11311;
                s.seed_num_elements = Some(10);
                s.seed_element_size = Some(1000);
            }),
            (&["1", "5000000"], |s| {
                s.seed_num_elements = Some(1);
                s.seed_element_size = Some(5_000_000);
                // 5000320 bytes rounded up to KiB, memory twice that in MiB.
                s.item_size_max = 4884 << 10;
                s.memory_limit = 64 << 20;
            }),
            (&["-m", "1024", "1", "100000000"], |s| {
                s.seed_num_elements = Some(1);
                s.seed_element_size = Some(100_000_000);
                s.item_size_max = 97657 << 10;
                s.memory_limit = 1024 << 20;
            }),
            (&["1", "100000000"], |s| {
                s.seed_num_elements = Some(1);
                s.seed_element_size = Some(100_000_000);
                s.item_size_max = 97657 << 10;
                // Twice the item size, rounded up to MiB.
                s.memory_limit = 191 << 20;
            }),
            (&["-I", "2m", "10", "1000"], |s| {
                s.item_size_max = 2 << 20;
                s.seed_num_elements = Some(10);
                s.seed_element_size = Some(1000);
            }),
            (&["-p", "1", "--", "2", "3"], |s| {
                s.port = 1;
                s.seed_num_elements = Some(2);
                s.seed_element_size = Some(3);
            }),
        ];
        for (args, change) in table {
            let mut want = Settings::default();
            change(&mut want);
            assert_eq!(run(args), Ok(Action::Run(Box::new(want))), "{args:?}");
        }
    }

    /// Bad flags and their one-line errors.
    #[test]
    fn flag_errors() {
        let table: &[(&[&str], &str)] = &[
            (&["-p"], "option requires an argument -- 'p'"),
            (&["--port"], "option '--port' requires an argument"),
            (&["-Q"], "invalid option -- 'Q'"),
            (&["--frobnicate"], "unrecognized option '--frobnicate'"),
            (
                &["--disable-cas=yes"],
                "option '--disable-cas' doesn't allow an argument",
            ),
            (&["-p", "abc"], "-p abc: not an integer"),
            (&["-p=1"], "-p =1: not an integer"),
            (&["-p", "70000"], "-p 70000: out of range (-1..65535)"),
            (&["-p", "-2"], "-p -2: out of range (-1..65535)"),
            (
                &["-p", "0"],
                "-p 0: port 0 turns TCP off, which leaves nothing to listen on without a unix \
                 socket (-s); use -1 for an ephemeral port",
            ),
            (&["-s", ""], "-s : must not be empty"),
            (&["-s"], "option requires an argument -- 's'"),
            (
                &["-a", "888"],
                "-a 888: not a permission mode (octal, 0 to 0777, e.g. 0770)",
            ),
            (
                &["-a", "01777"],
                "-a 01777: not a permission mode (octal, 0 to 0777, e.g. 0770)",
            ),
            (
                &["-a", "rwx"],
                "-a rwx: not a permission mode (octal, 0 to 0777, e.g. 0770)",
            ),
            (
                &["-a", ""],
                "-a : not a permission mode (octal, 0 to 0777, e.g. 0770)",
            ),
            (
                &[
                    "-s",
                    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ],
                "-s /tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: \
                 too long for a unix socket (108 bytes, at most 107)",
            ),
            (
                &["-p", "99999999999999999999"],
                "-p 99999999999999999999: out of range (-1..65535)",
            ),
            (
                &["-U", "5"],
                "-U 5: UDP is not supported (only -U 0, UDP off, is accepted)",
            ),
            (
                &["-U", "-1"],
                "-U -1: UDP is not supported (only -U 0, UDP off, is accepted)",
            ),
            (&["-U", "x"], "-U x: not an integer"),
            (
                &["-l", "nosuch.invalid"],
                "-l nosuch.invalid: cannot resolve \"nosuch.invalid\": ",
            ),
            (&["-l", ""], "-l : no listen address"),
            (&["-l", ","], "-l ,: no listen address"),
            (
                &["-l", "127.0.0.1:11211"],
                "-l 127.0.0.1:11211: \"127.0.0.1:11211\": per-address ports (<addr>:<port>) \
                 are not supported; use -p",
            ),
            (&["-m", "0"], "-m 0: Memory limit must be greater than 0"),
            (&["-m", "-1"], "-m -1: Memory limit must be greater than 0"),
            (&["-m", "1g"], "-m 1g: not an integer"),
            (
                &["-m", "1073741825"],
                "-m 1073741825: out of range (1..1073741824)",
            ),
            (
                &["-m", "1"],
                "-m 1: Cannot set item size limit higher than 1/2 of memory max. \
                 (item size limit is 1048576 bytes)",
            ),
            (
                &["-c", "0"],
                "-c 0: Maximum connections must be greater than 0",
            ),
            (
                &["-c", "-5"],
                "-c -5: Maximum connections must be greater than 0",
            ),
            (&["-c", "abc"], "-c abc: not an integer"),
            (
                &["-c", "4294967296"],
                "-c 4294967296: out of range (1..4294967295)",
            ),
            (
                &["-t", "0"],
                "-t 0: Number of threads must be greater than 0",
            ),
            (
                &["-t", "-1"],
                "-t -1: Number of threads must be greater than 0",
            ),
            (&["-t", "1025"], "-t 1025: out of range (1..1024)"),
            (
                &["--threads=0"],
                "--threads 0: Number of threads must be greater than 0",
            ),
            (
                &["-I", "512"],
                "-I 512: Item max size cannot be less than 1024 bytes.",
            ),
            (
                &["-I", "1023"],
                "-I 1023: Item max size cannot be less than 1024 bytes.",
            ),
            (
                &["-I", "0k"],
                "-I 0k: Item max size cannot be less than 1024 bytes.",
            ),
            (
                &["-I", "64m"],
                "-I 64m: Cannot set item size limit higher than 1/2 of memory max. \
                 (memory limit is 64 MB)",
            ),
            (
                &["-I", "33m"],
                "-I 33m: Cannot set item size limit higher than 1/2 of memory max. \
                 (memory limit is 64 MB)",
            ),
            (
                &["-m", "8192", "-I", "1025m"],
                "-I 1025m: Cannot set item size limit higher than a gigabyte.",
            ),
            (
                &["-m", "8192", "-I", "2g"],
                "-I 2g: Cannot set item size limit higher than a gigabyte.",
            ),
            (
                &["-I", "xx"],
                "-I xx: not a size (expected bytes, or a number with a k, m or g suffix: 512k, 1m)",
            ),
            (
                &["-I", "1x"],
                "-I 1x: not a size (expected bytes, or a number with a k, m or g suffix: 512k, 1m)",
            ),
            (&["-b", "0"], "-b 0: Listen backlog must be greater than 0"),
            (
                &["-f", "1"],
                "-f 1: Factor must be greater than 1 (and at most 16)",
            ),
            (&["-f", "1.5x"], "-f 1.5x: not a number"),
            (&["-n", "0"], "-n 0: Chunk size must be greater than 0"),
            (
                &["-b", "2147483648"],
                "-b 2147483648: out of range (1..2147483647)",
            ),
            (
                &["-B", "xx"],
                "-B xx: Invalid value for binding protocol: xx -- should be one of auto, \
                 binary, or ascii",
            ),
            (
                &["-B", "AUTO"],
                "-B AUTO: Invalid value for binding protocol: AUTO -- should be one of auto, \
                 binary, or ascii",
            ),
            (
                &["-R", "0"],
                "-R 0: Number of requests per event must be greater than 0",
            ),
            (&["-R", "abc"], "-R abc: not an integer"),
            (&["-P", ""], "-P : must not be empty"),
            (&["-u", ""], "-u : must not be empty"),
            (&["-o", "foo"], "Illegal suboption \"foo\""),
            (&["-o", "foo=1"], "Illegal suboption \"foo=1\""),
            (&["-o", "modern,bar=1"], "Illegal suboption \"bar=1\""),
            (&["-o", ",,"], "Illegal suboption \"\""),
            (&["-o", "=5"], "Illegal suboption \"=5\""),
            (
                &["-o", "slab_chunk_max=512"],
                "Illegal suboption \"slab_chunk_max=512\"",
            ),
            (
                &["-o", "idle_timeout"],
                "Missing numeric argument for idle_timeout",
            ),
            (
                &["-o", "drain_timeout"],
                "Missing numeric argument for drain_timeout",
            ),
            (
                &["-t", "4", "-o", "max_workers=2"],
                "-o max_workers=2: fewer than the 4 workers asked for",
            ),
            (
                &["-o", "max_workers=0"],
                "-o max_workers=0: must be greater than 0",
            ),
            (
                &["-o", "idle_timeout=abc"],
                "-o idle_timeout=abc: not an integer",
            ),
            (&["-o", "idle_timeout="], "-o idle_timeout=: not an integer"),
            (
                &["-o", "idle_timeout=-5"],
                "-o idle_timeout=-5: out of range (0..4294967295)",
            ),
            (
                &["-o", "drain_timeout=4294967296"],
                "-o drain_timeout=4294967296: out of range (0..4294967295)",
            ),
            (
                &["-o", "slab_automove=9"],
                "-o slab_automove=9: slab_automove must be between 0 and 2",
            ),
            (
                &["-o", "slab_automove=-1"],
                "-o slab_automove=-1: slab_automove must be between 0 and 2",
            ),
            (
                &["-o", "slab_automove=abc"],
                "-o slab_automove=abc: not an integer",
            ),
            (
                &["-o", "lru_crawler_sleep"],
                "Missing lru_crawler_sleep value",
            ),
            (
                &["-o", "lru_crawler_sleep=1000001"],
                "-o lru_crawler_sleep=1000001: LRU crawler sleep must be between 0 and 1 second (0..1000000 µs)",
            ),
            (
                &["-o", "lru_crawler_tocrawl=-1"],
                "-o lru_crawler_tocrawl=-1: out of range (0..4294967295)",
            ),
            (
                &["-o", "slab_automove_ratio"],
                "Missing slab_automove_ratio argument",
            ),
            (
                &["-o", "slab_automove_ratio=2"],
                "-o slab_automove_ratio=2: slab_automove_ratio must be > 0 and < 1",
            ),
            (
                &["-o", "slab_automove_ratio=0"],
                "-o slab_automove_ratio=0: slab_automove_ratio must be > 0 and < 1",
            ),
            (
                &["-o", "slab_automove_ratio=-0.5"],
                "-o slab_automove_ratio=-0.5: slab_automove_ratio must be > 0 and < 1",
            ),
            (
                &["-o", "slab_automove_ratio=abc"],
                "-o slab_automove_ratio=abc: not a number",
            ),
            (
                &["-o", "slab_automove_ratio=nan"],
                "-o slab_automove_ratio=nan: not a number",
            ),
            (
                &["-o", "slab_automove_window"],
                "Missing slab_automove_window argument",
            ),
            (
                &["-o", "slab_automove_window=2"],
                "-o slab_automove_window=2: slab_automove_window must be > 2",
            ),
            (
                &["-o", "slab_automove_window=-1"],
                "-o slab_automove_window=-1: slab_automove_window must be > 2",
            ),
            (
                &["-o", "slab_automove_window=3601"],
                "-o slab_automove_window=3601: out of range (3..3600)",
            ),
            (
                &["-o", "slab_automove_window=3x"],
                "-o slab_automove_window=3x: not an integer",
            ),
            (&["-o", "hash_algorithm"], "Missing hash_algorithm argument"),
            (
                &["-o", "hash_algorithm=foo"],
                "Unknown hash_algorithm option (jenkins, murmur3, xxh3)",
            ),
            (&["-o"], "option requires an argument -- 'o'"),
            (
                &["foo"],
                "unexpected argument \"foo\": the only arguments are [num_elements [element_size]] \
                 or <port> <num_elements> <element_size>",
            ),
            (
                &["10", "1k"],
                "unexpected argument \"1k\": the only arguments are [num_elements [element_size]] \
                 or <port> <num_elements> <element_size>",
            ),
            (
                &["1", "2", "3", "4"],
                "too many arguments: the only arguments are [num_elements [element_size]] \
                 or <port> <num_elements> <element_size>",
            ),
            (
                &["0"],
                "argument \"0\" (num_elements): must be greater than 0",
            ),
            (
                &["10", "0"],
                "argument \"0\" (element_size): must be greater than 0",
            ),
            (
                &["0", "10", "10"],
                "argument \"0\" (port): port 0 turns TCP off, which leaves nothing to listen on \
                 without a unix socket (-s); use -1 for an ephemeral port",
            ),
            (
                &["-p", "1", "2", "3", "4"],
                "-p 1: the port is also given as argument \"2\"",
            ),
            (
                &["2", "3", "4", "--port=1"],
                "--port 1: the port is also given as argument \"2\"",
            ),
            (
                &["70000", "10", "10"],
                "argument \"70000\" (port): out of range (-1..65535)",
            ),
            (
                &["1", "1073741505"],
                "argument \"1073741505\" (element_size): out of range (1..1073741504)",
            ),
            (
                &["99999999999", "1000000"],
                "argument \"99999999999\" (num_elements): the seed table would need more than \
                 1073741824 MB of memory",
            ),
            (
                &["--config", "a", "--config", "b"],
                "--config given more than once",
            ),
            (&["--config"], "option '--config' requires an argument"),
        ];
        for (args, want) in table {
            let got = run(args);
            let ok = match &got {
                // A resolver's words vary: only the start is ours.
                Err(e) if want.ends_with(": ") => e.starts_with(want),
                Err(e) => e == want,
                Ok(_) => false,
            };
            assert!(ok, "{args:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn help_and_version() {
        let version = format!(
            "shmcached {} (memcached 1.6.18 compatible)\n",
            env!("CARGO_PKG_VERSION")
        );
        for args in [&["-V"][..], &["--version"], &["-V", "-p", "0"], &["-vV"]] {
            assert_eq!(run(args), Ok(Action::Print(version.clone())), "{args:?}");
        }
        for args in [&["-h"][..], &["--help"], &["-h", "-Q"], &["-p", "0", "-h"]] {
            let Ok(Action::Print(text)) = run(args) else {
                panic!("{args:?}: no help")
            };
            assert!(text.starts_with(&version), "{args:?}");
            // Every flag we accept is in the help.
            for flag in [
                "-p,",
                "-U,",
                "-A,",
                "-l,",
                "-d,",
                "-u,",
                "-m,",
                "-M,",
                "-c,",
                "-v,",
                "-vv ",
                "-vvv ",
                "-h,",
                "-V,",
                "-P,",
                "-t,",
                "-R,",
                "-C,",
                "-b,",
                "-B,",
                "-I,",
                "-F,",
                "-Y,",
                "-e,",
                "-D ",
                "-o,",
                "idle_timeout",
                "drain_timeout",
                "--config",
                "relaxed_privileges",
                "hash_algorithm",
                "slab_reassign",
                "slab_automove",
                "slab_automove_ratio",
                "slab_automove_window",
                "track_sizes",
            ] {
                assert!(text.contains(flag), "help lacks {flag}");
            }
        }
        // An error before -h wins, as with getopt.
        assert_eq!(run(&["-Q", "-h"]), Err("invalid option -- 'Q'".into()));
    }

    #[test]
    fn every_long_option_works() {
        for (long, short) in super::LONG_OPTIONS {
            let takes_value = "pUlsaumctRbBIPoYefn".contains(*short);
            let value = match short {
                'l' => "127.0.0.1",
                'u' => "nobody",
                'B' => "ascii",
                'I' => "2m",
                'P' | 'e' => "/tmp/x.pid",
                'o' => "modern",
                's' => "/tmp/x.sock",
                'a' => "0770",
                _ => "7",
            };
            let long_form: Vec<String> = if takes_value {
                vec![format!("--{long}={value}")]
            } else {
                vec![format!("--{long}")]
            };
            let short_form: Vec<String> = if takes_value {
                vec![format!("-{short}"), value.to_string()]
            } else {
                vec![format!("-{short}")]
            };
            let l = load(long_form.iter().map(Into::into));
            let s = load(short_form.iter().map(Into::into));
            // Same outcome; errors differ only by the flag's spelling.
            match (l, s) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "--{long}"),
                (Err(a), Err(b)) => assert_eq!(
                    a.0.replacen(&format!("--{long}"), &format!("-{short}"), 1),
                    b.0,
                    "--{long}"
                ),
                (a, b) => panic!("--{long}: {a:?} vs -{short}: {b:?}"),
            }
        }
    }

    #[test]
    fn listen_localhost_is_loopback() {
        let Ok(Action::Run(s)) = run(&["-l", "localhost,::1"]) else {
            panic!()
        };
        assert_eq!(
            s.listen,
            vec![IpAddr::from([127, 0, 0, 1]), "::1".parse().unwrap()]
        );
    }

    /// `-Y` reads the file at once: its entries, or memcached's words for why not.
    #[test]
    fn auth_file() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("shmcached-cli-auth-{}", std::process::id()));
        let shown = path.display().to_string();
        std::fs::write(&path, "user:secret\nother:pw2\n").unwrap();
        for args in [
            &["-Y", shown.as_str()][..],
            &[&format!("--auth-file={shown}")],
        ] {
            let Ok(Action::Run(s)) = run(args) else {
                panic!("{args:?}")
            };
            assert_eq!(s.auth_file.as_deref(), Some(path.as_path()));
            // As memcached: authentication is a text-protocol feature.
            assert_eq!(s.protocol, Dialect::Ascii);
            let auth = s.auth.expect("credentials");
            assert!(auth.check(b"user", b"secret") && auth.check(b"other", b"pw2"));
            assert!(!auth.check(b"user", b"pw2"));
        }
        let Ok(Action::Run(s)) = run(&["-B", "ascii", "-Y", &shown]) else {
            panic!("-B ascii -Y")
        };
        assert_eq!(s.protocol, Dialect::Ascii);
        for protocol in ["binary", "auto"] {
            assert_eq!(
                run(&["-Y", &shown, "-B", protocol]),
                Err(format!(
                    "-B {protocol}: You cannot allow the BINARY protocol while using ascii \
                     authentication tokens."
                ))
            );
        }
        std::fs::write(&path, "user:secret\n\n").unwrap();
        let malformed = run(&["-Y", &shown]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            malformed,
            Err(format!(
                "-Y {shown}: Authfile [{shown}] has a malformed entry. Should be \
                 'user:password' (line 2)"
            ))
        );
        assert_eq!(
            run(&["-Y", &shown]),
            Err(format!(
                "-Y {shown}: Could not open authfile [{shown}] for reading, error No such \
                 file or directory"
            ))
        );
        assert_eq!(
            run(&["-Y"]),
            Err("option requires an argument -- 'Y'".into())
        );
        assert_eq!(
            run(&["-Y", ""]),
            Err(
                "-Y : Could not open authfile [] for reading, error No such file or directory"
                    .into()
            )
        );
    }
}
