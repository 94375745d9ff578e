"""shmcached through memcached's own operator script, memcached-tool (in
Debian's memcached package): `dump` (which lists keys with
`lru_crawler metadump all` and then reads each value) and `display`/`keys`.

Run from the repository root after `cargo build`: python3 -m pytest tests/clients
"""

import os
import socket
import subprocess

import pytest

TOOL = "/usr/share/memcached/scripts/memcached-tool"


def tool(daemon, *args):
    if not os.path.exists(TOOL):
        pytest.fail(f"{TOOL} missing: tests/run.sh installs the memcached package")
    return subprocess.run(
        ["perl", TOOL, f"127.0.0.1:{daemon.port}", *args], capture_output=True, timeout=20
    )


def send(daemon, request):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
        s.sendall(request + b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") or b"VERSION" not in reply:
            reply += s.recv(65536)
        return reply


def test_dump_gives_back_every_item_as_add_commands(daemon):
    send(daemon, b"flush_all\r\n")
    send(
        daemon,
        b"set tool:alpha 3 0 5\r\nhello\r\nset tool:beta 0 1000 2\r\nhi\r\n"
        b"set tool:gone 0 -1 1\r\nx\r\n",
    )
    out = tool(daemon, "dump")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    # memcached-tool prints "add <key> <flags> <exptime> <bytes>\r\n<value>\r\n".
    assert "add tool:alpha 3 0 5\r\nhello\r\n" in text, text
    lines = [line for line in text.split("\r\n") if line.startswith("add ")]
    beta = [line for line in lines if line.startswith("add tool:beta 0 ")]
    assert len(beta) == 1 and int(beta[0].split()[3]) > 1_000_000_000, lines
    assert not any("tool:gone" in line for line in lines), lines
    assert len(lines) == 2, lines


def test_keys_lists_the_metadump_lines(daemon):
    send(daemon, b"flush_all\r\n")
    send(daemon, b"set tool:k1 0 0 1\r\na\r\n")
    out = tool(daemon, "keys")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "key=tool%3Ak1 exp=-1 " in text, text
