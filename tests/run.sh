#!/usr/bin/env bash
# Installs what the test suite needs (Debian's memcached for differential
# tests, pymemcache and pytest for client tests), then runs the whole suite:
# unit tests, integration tests against the real daemon, client tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v memcached >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
fi
# The memcached package starts a system instance on 11211; tests use their own ports.
# tests/package.rs: systemd-analyze and systemd-sysusers check the unit, strace
# checks its system call filter (dpkg-deb is part of every Debian system).
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check pymemcache pytest

cargo build --all-targets
cargo test
SHMCACHED_BIN="$PWD/target/debug/shmcached" python3 -m pytest -q tests/clients
