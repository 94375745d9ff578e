"""shmcached through libmemcached's command-line tools (Debian's
libmemcached-tools): the stats parser operators already use (memcstat), and
the copy/read/remove/flush/touch tools; over TCP and over a unix socket (a
server given as a path: `--servers=/path/to.sock`).

Run from the repository root after `cargo build`: python3 -m pytest tests/clients
"""

import shutil
import subprocess

import pytest

TOOLS = ["memcstat", "memccp", "memccat", "memcrm", "memcflush", "memctouch", "memcexist"]


@pytest.fixture(params=["tcp", "unix"])
def server(request):
    """The module's TCP server, then its unix-socket one."""
    return request.getfixturevalue("unix_daemon" if request.param == "unix" else "daemon")


def server_spec(daemon):
    return daemon.unix_socket or f"127.0.0.1:{daemon.port}"


def run(tool, daemon, *args):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"libmemcached-tools missing ({missing}): tests/run.sh installs them")
    servers = f"--servers={server_spec(daemon)}"
    return subprocess.run([tool, servers, *args], capture_output=True, timeout=10)


def test_memcstat_parses_every_stats_line(server):
    daemon = server
    out = run("memcstat", daemon)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0].startswith(f"Server: {daemon.unix_socket or '127.0.0.1'}")
    stats = dict(l.strip().split(": ", 1) for l in lines[1:] if ": " in l)
    # memcstat prints each STAT line it parsed, as `name: value`.
    for key in ["pid", "uptime", "version", "curr_connections", "cmd_get", "curr_items", "bytes"]:
        assert key in stats, f"{key} missing from memcstat's view: {stats}"
    assert stats["version"] == "1.6.18"


def test_copy_read_touch_remove_flush(server, tmp_path):
    daemon = server
    path = tmp_path / "greeting"
    path.write_bytes(b"hello from a file\n")
    assert run("memccp", daemon, str(path)).returncode == 0
    out = run("memccat", daemon, "greeting")
    # memccat prints the value and a newline.
    assert out.returncode == 0 and out.stdout == b"hello from a file\n\n"
    assert run("memcexist", daemon, "greeting").returncode == 0
    assert run("memctouch", daemon, "--expire=100", "greeting").returncode == 0
    assert run("memcrm", daemon, "greeting").returncode == 0
    assert run("memcexist", daemon, "greeting").returncode != 0
    assert run("memccp", daemon, str(path)).returncode == 0
    assert run("memcflush", daemon).returncode == 0
    assert run("memcexist", daemon, "greeting").returncode != 0
