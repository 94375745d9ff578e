#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages below; pymemcache,
# python-memcached and pytest for client tests; the Rust client crate comes
# with Cargo as a dev-dependency), then runs the whole suite:
# unit tests, integration tests against the real daemon, client tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# What the tests run besides the daemon, by command and Debian package:
# memcached (differential tests), libmemcached's tools (client tests:
# memcstat and friends, and the memccapable conformance suite),
# systemd-analyze and systemd-sysusers (tests/package.rs checks the unit),
# strace (checks the unit's system call filter), nutcracker (twemproxy, for the
# scale-out tests). dpkg-deb is on every Debian.
missing=()
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
{ command -v memcstat && command -v memccapable; } >/dev/null 2>&1 || missing+=(libmemcached-tools)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v nutcracker >/dev/null 2>&1 || missing+=(nutcracker)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The memcached package may start a system instance on 11211; tests use their own ports.
python3 -m pip install -q --disable-pip-version-check pymemcache python-memcached pytest

cargo build --all-targets
cargo test
SHMCACHED_BIN="$PWD/target/debug/shmcached" python3 -m pytest -q tests/clients
