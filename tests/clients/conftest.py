"""Shared by the client tests: a real server process (shmcached, or memcached
with SHMCACHED_TEST_SERVER=memcached) on a free loopback port, or on a unix
socket (`-s`) in a temporary directory, one per module."""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MEMCACHED = "/usr/bin/memcached"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shmcached_binary():
    binary = Path(os.environ.get("SHMCACHED_BIN", REPO_ROOT / "target" / "debug" / "shmcached"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: run `cargo build` first or set SHMCACHED_BIN")
    return binary


def server_command(port, unix_socket=None):
    """The server on `port`, or on `unix_socket` (which turns TCP off)."""
    where = ["-s", str(unix_socket)] if unix_socket else ["-p", str(port), "-l", "127.0.0.1"]
    if os.environ.get("SHMCACHED_TEST_SERVER") == "memcached":
        return [MEMCACHED, "-U", "0", *where, "-u", "root", "-t", "2"]
    return [str(shmcached_binary()), *where, "-u", "root", "-t", "2"]


class Daemon:
    """A server process on 127.0.0.1 and a port of its own, or on a unix
    socket when `unix` is true; `stop` always reaps it."""

    def __init__(self, unix=False):
        self.proc = None
        self.unix_socket = None
        if unix:
            self.tmpdir = tempfile.TemporaryDirectory(prefix="shmcached-clients-")
            self.unix_socket = os.path.join(self.tmpdir.name, "memcached.sock")
        last_failure = ""
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            self.command = server_command(self.port, self.unix_socket)
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
            )
            failure = self._wait_ready()
            if failure is None:
                return
            last_failure = failure
            self.stop()
        pytest.fail(f"server did not start after {PORT_ATTEMPTS} attempts:\n{last_failure}")

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"`{' '.join(self.command)}` exited with {self.proc.returncode}:\n{self.output()}"
            try:
                self.connect().close()
                if self.proc.poll() is None:
                    return None
            except OSError:
                time.sleep(0.02)
        return f"`{' '.join(self.command)}` did not accept connections in {READY_TIMEOUT} s:\n{self.output()}"

    def connect(self):
        """A plain socket to the server."""
        if self.unix_socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1)
            try:
                s.connect(self.unix_socket)
            except OSError:
                s.close()
                raise
            return s
        return socket.create_connection(("127.0.0.1", self.port), timeout=1)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def daemon():
    """One server for the module (memcached takes up to a second to stop);
    each test starts from an empty cache (see `client`)."""
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def unix_daemon():
    """One server on a unix socket (`-s`) for the module."""
    d = Daemon(unix=True)
    yield d
    d.stop()
