"""Scale-out: a pool of three shmcached instances, reached through twemproxy
(nutcracker) or through client-side hashing (pymemcache's HashClient).

Each test stores 10,000 keys, checks that every key reads back and that each
instance holds a fair share (20-50 %), then stops one instance and checks that
only that instance's keys miss while the others are still served.

Run from the repository root after `cargo build`:

    SHMCACHED_BIN=$PWD/target/debug/shmcached python3 -m pytest -q tests/clients/test_scaling.py

The proxy test needs `nutcracker` (Debian package `nutcracker`; tests/run.sh
installs it). The pool config is tests/scaling/nutcracker.yml.in.
"""

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import REPO_ROOT, Daemon, free_port

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError

KEYS = 10_000
BATCH = 500
MIN_SHARE, MAX_SHARE = 0.20, 0.50
WAIT = 10.0  # bound on every wait for the proxy (start, ejection)
NUTCRACKER_CONFIG = REPO_ROOT / "tests" / "scaling" / "nutcracker.yml.in"

VALUES = {f"scale-key-{i}": f"scale-value-{i}".encode() for i in range(KEYS)}


def batches(keys):
    keys = list(keys)
    for i in range(0, len(keys), BATCH):
        yield keys[i : i + BATCH]


def make_client(port):
    return Client(("127.0.0.1", port), connect_timeout=2, timeout=2, default_noreply=False)


def start_pool():
    daemons = []
    try:
        for _ in range(3):
            daemons.append(Daemon())
    except BaseException:
        for d in daemons:
            d.stop()
        raise
    return daemons


def held_keys(daemon):
    """The keys of VALUES an instance holds, asked directly (with their values checked)."""
    c = make_client(daemon.port)
    try:
        found = {}
        for chunk in batches(VALUES):
            found.update(c.get_many(chunk))
        assert all(VALUES[k] == v for k, v in found.items())
        curr_items = int(c.stats()[b"curr_items"])
        assert curr_items == len(found), f"port {daemon.port}: curr_items {curr_items}, found {len(found)}"
        return set(found)
    finally:
        c.close()


def owners_and_shares(daemons):
    owners = {}
    for i, d in enumerate(daemons):
        for key in held_keys(d):
            assert key not in owners, f"{key} is on two instances"
            owners[key] = i
    assert set(owners) == set(VALUES), f"{KEYS - len(owners)} keys are on no instance"
    shares = [sum(1 for o in owners.values() if o == i) / KEYS for i in range(len(daemons))]
    for share in shares:
        assert MIN_SHARE <= share <= MAX_SHARE, f"unfair shares {shares}"
    return owners, shares


class Nutcracker:
    """nutcracker in the foreground on a listen and a stats port of its own;
    `stop` always kills and reaps it."""

    def __init__(self, backends, workdir):
        if shutil.which("nutcracker") is None:
            pytest.skip("nutcracker is not installed (Debian package `nutcracker`)")
        self.proc = None
        self.log = Path(workdir) / "nutcracker.log"
        last_failure = ""
        for _ in range(3):
            self.port, self.stats_port = free_port(), free_port()
            config = NUTCRACKER_CONFIG.read_text().format(
                listen=f"127.0.0.1:{self.port}",
                port1=backends[0].port,
                port2=backends[1].port,
                port3=backends[2].port,
            )
            self.config = Path(workdir) / "nutcracker.yml"
            self.config.write_text(config)
            check = subprocess.run(
                ["nutcracker", "--test-conf", "-c", str(self.config)], capture_output=True, text=True
            )
            assert check.returncode == 0, f"nutcracker rejects the config:\n{check.stdout}{check.stderr}"
            self.proc = subprocess.Popen(
                # -i: aggregate stats every 100 ms instead of every 30 s.
                ["nutcracker", "-c", str(self.config), "-o", str(self.log),
                 "-s", str(self.stats_port), "-a", "127.0.0.1", "-i", "100"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            last_failure = self._wait_ready()
            if last_failure is None:
                return
            self.stop()
        pytest.fail(f"nutcracker did not start:\n{last_failure}")

    def _wait_ready(self):
        """Ready when a get through the proxy answers (it reaches a backend)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"nutcracker exited with {self.proc.returncode}:\n{self.output()}"
            c = make_client(self.port)
            try:
                c.get("scale-ready-probe")
                return None
            except (OSError, MemcacheError):
                time.sleep(0.05)
            finally:
                c.close()
        return f"nutcracker did not answer in {WAIT} s:\n{self.output()}"

    def stats(self):
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=2) as s:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data)

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait()


def read_through(client_factory, keys):
    """Reads keys through the proxy in batches. After a backend died, twemproxy
    answers one request with SERVER_ERROR each time it retries the dead host
    (every server_retry_timeout), so a batch that fails is retried, bounded in time."""
    found = {}
    c = client_factory()
    try:
        for chunk in batches(keys):
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    found.update(c.get_many(chunk))
                    break
                except (OSError, MemcacheError):
                    if time.monotonic() > deadline:
                        raise
                    c.close()
                    c = client_factory()
    finally:
        c.close()
    return found


def test_nutcracker_pool():
    daemons = start_pool()
    workdir = tempfile.TemporaryDirectory()
    proxy = None
    try:
        proxy = Nutcracker(daemons, workdir.name)
        stats = proxy.stats()
        assert set(stats["shmcached"]) >= {"mc1", "mc2", "mc3"}, stats

        c = make_client(proxy.port)
        for chunk in batches(VALUES):
            assert c.set_many({k: VALUES[k] for k in chunk}) == []
        c.close()
        assert read_through(lambda: make_client(proxy.port), VALUES) == VALUES

        owners, _ = owners_and_shares(daemons)

        # Stop one instance; wait until the proxy has ejected it: a read of one
        # of its keys misses instead of failing with SERVER_ERROR.
        dead = 1
        daemons[dead].stop()
        dead_keys = {k for k, o in owners.items() if o == dead}
        probe = next(iter(sorted(dead_keys)))
        deadline = time.monotonic() + WAIT
        while True:
            c = make_client(proxy.port)
            try:
                if c.get(probe) is None:
                    break
            except (OSError, MemcacheError):
                pass
            finally:
                c.close()
            assert time.monotonic() < deadline, f"the proxy did not eject mc{dead + 1}:\n{proxy.output()}"
            time.sleep(0.05)

        found = read_through(lambda: make_client(proxy.port), VALUES)
        assert set(VALUES) - set(found) == dead_keys
        assert found == {k: v for k, v in VALUES.items() if k not in dead_keys}
    except BaseException:
        if proxy is not None:
            print(f"--- nutcracker log ---\n{proxy.output()}")
        raise
    finally:
        if proxy is not None:
            proxy.stop()
        for d in daemons:
            d.stop()
        workdir.cleanup()


def test_hashclient_pool():
    """Client-side hashing, no proxy. pymemcache's HashClient hashes with
    rendezvous hashing (RendezvousHash, murmur3) by default, not ketama: when a
    node goes away, only that node's keys move."""
    daemons = start_pool()
    try:
        servers = [("127.0.0.1", d.port) for d in daemons]
        names = [f"127.0.0.1:{d.port}" for d in daemons]
        # ignore_exc: a dead node's keys miss instead of raising. After
        # retry_attempts failures the node is removed from the hasher for
        # dead_timeout seconds, and its keys hash to the survivors (and miss there).
        hc = HashClient(
            servers, connect_timeout=1, timeout=2, default_noreply=False,
            ignore_exc=True, retry_attempts=1, retry_timeout=0, dead_timeout=60,
        )
        assert isinstance(hc.hasher, RendezvousHash)
        for chunk in batches(VALUES):
            assert hc.set_many({k: VALUES[k] for k in chunk}) == []
        found = {}
        for chunk in batches(VALUES):
            found.update(hc.get_many(chunk))
        assert found == VALUES

        owners, _ = owners_and_shares(daemons)
        for key, owner in owners.items():
            assert hc.hasher.get_node(key) == names[owner]

        dead = 2
        daemons[dead].stop()
        dead_keys = {k for k, o in owners.items() if o == dead}
        # Touch the dead node until the client gives up on it (bounded).
        probe = sorted(dead_keys)
        for attempt in range(10):
            if names[dead] not in hc.hasher.nodes:
                break
            assert hc.get(probe[attempt]) is None
        assert names[dead] not in hc.hasher.nodes, "HashClient did not mark the stopped node dead"

        found = {}
        for chunk in batches(VALUES):
            found.update(hc.get_many(chunk))
        assert set(VALUES) - set(found) == dead_keys
        assert found == {k: v for k, v in VALUES.items() if k not in dead_keys}
        # Owners are stable: the keys that lived on the survivors did not move.
        for key, owner in owners.items():
            if owner != dead:
                assert hc.hasher.get_node(key) == names[owner]
        hc.close()
    finally:
        for d in daemons:
            d.stop()
