"""shmcached through a real client library: pymemcache's Client (over TCP
and over a unix socket, `-s`) and HashClient.

Run from the repository root after `cargo build`:

    python3 -m pytest tests/clients

Environment:
    SHMCACHED_BIN           the daemon to test (default: target/debug/shmcached)
    SHMCACHED_TEST_SERVER   `memcached` runs /usr/bin/memcached instead, to
                            check these tests themselves
"""

from conftest import Daemon

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient


def make_client(port):
    return Client(("127.0.0.1", port), connect_timeout=5, timeout=5, default_noreply=False)


@pytest.fixture(params=["tcp", "unix"])
def client(request):
    """Every test runs over TCP and over the unix socket (pymemcache takes a
    path for a server)."""
    if request.param == "unix":
        daemon = request.getfixturevalue("unix_daemon")
        c = Client(daemon.unix_socket, connect_timeout=5, timeout=5, default_noreply=False)
    else:
        daemon = request.getfixturevalue("daemon")
        c = make_client(daemon.port)
    assert c.flush_all() is True
    yield c
    c.close()
    # pytest shows this only for a failed test.
    print(f"--- output of `{' '.join(daemon.command)}` ---\n{daemon.output()}")


def test_version(client):
    assert client.version() == b"1.6.18"


def test_set_get_delete(client):
    assert client.set("alpha", b"one") is True
    assert client.get("alpha") == b"one"
    assert client.get("missing") is None
    assert client.get("missing", default=b"d") == b"d"
    assert client.delete("alpha") is True
    assert client.delete("alpha") is False
    assert client.get("alpha") is None


def test_set_overwrite_flags_and_large_value(client):
    assert client.set("beta", b"x", flags=7) is True
    assert client.set("beta", b"y" * 500_000) is True
    assert client.get("beta") == b"y" * 500_000
    assert client.set("bin", bytes(range(256))) is True
    assert client.get("bin") == bytes(range(256))


def test_incr_decr(client):
    assert client.set("counter", b"10") is True
    assert client.incr("counter", 5) == 15
    assert client.decr("counter", 20) == 0
    assert client.incr("counter", 18446744073709551615) == 18446744073709551615
    assert client.incr("counter", 1) == 0
    assert client.incr("nocounter", 1) is None
    assert client.decr("nocounter", 1) is None
    # A shorter result keeps the length, padded with spaces.
    assert client.set("pad", b"10") is True
    assert client.decr("pad", 1) == 9
    assert client.get("pad") == b"9 "
    assert client.set("text", b"abc") is True
    with pytest.raises(Exception, match="non-numeric"):
        client.incr("text", 1)


def test_gets_and_cas(client):
    assert client.gets("nocas") == (None, None)
    assert client.cas("nocas", b"v", b"1") is None  # NOT_FOUND
    assert client.set("gamma", b"first") is True
    value, cas = client.gets("gamma")
    assert value == b"first"
    assert client.cas("gamma", b"second", cas) is True
    assert client.cas("gamma", b"third", cas) is False  # EXISTS: cas is stale
    value2, cas2 = client.gets("gamma")
    assert value2 == b"second" and cas2 != cas
    assert client.cas("gamma", b"third", cas2) is True
    assert client.get("gamma") == b"third"


def test_add_replace(client):
    assert client.add("delta", b"a") is True
    assert client.add("delta", b"b") is False
    assert client.get("delta") == b"a"
    assert client.replace("delta", b"c") is True
    assert client.replace("nodelta", b"c") is False
    assert client.get("delta") == b"c"
    assert client.get("nodelta") is None


def test_append_prepend(client):
    assert client.append("noeps", b"x") is False
    assert client.prepend("noeps", b"x") is False
    assert client.set("eps", b"mid", flags=3) is True
    assert client.append("eps", b"-end") is True
    assert client.prepend("eps", b"start-") is True
    assert client.get("eps") == b"start-mid-end"


def test_get_many_set_many(client):
    values = {f"many{i}": f"value{i}".encode() for i in range(50)}
    assert client.set_many(values) == []
    got = client.get_many(list(values) + ["many-missing"])
    assert got == {k: v for k, v in values.items()}
    got = client.gets_many(["many1", "many2"])
    assert set(got) == {"many1", "many2"}
    assert all(isinstance(cas, bytes) and cas.isdigit() for _, cas in got.values())
    assert client.delete_many(["many1", "many2"]) is True
    assert client.get_many(["many1", "many2", "many3"]) == {"many3": b"value3"}


def test_touch(client):
    assert client.set("zeta", b"z", expire=100) is True
    assert client.touch("zeta", 0) is True
    assert client.touch("nozeta", 0) is False
    assert client.get("zeta") == b"z"
    assert client.touch("zeta", -1) is True
    assert client.get("zeta") is None


def test_expire(client):
    assert client.set("eta", b"e", expire=-1) is True
    assert client.get("eta") is None
    assert client.set("theta", b"t", expire=3600) is True
    assert client.get("theta") == b"t"


def test_flush_all(client):
    assert client.set_many({"iota": b"1", "kappa": b"2"}) == []
    assert client.flush_all() is True
    assert client.get_many(["iota", "kappa"]) == {}
    assert client.set("iota", b"3") is True
    assert client.get("iota") == b"3"


def test_hash_client_spreads_keys_over_three_instances():
    daemons = [Daemon() for _ in range(3)]
    try:
        servers = [("127.0.0.1", d.port) for d in daemons]
        hc = HashClient(servers, connect_timeout=5, timeout=5, default_noreply=False)
        values = {f"hash-key-{i}": f"hash-value-{i}".encode() for i in range(300)}
        assert hc.set_many(values) == []
        assert hc.get_many(list(values)) == values
        for key, value in list(values.items())[:20]:
            assert hc.get(key) == value
        # Every instance holds some of the keys, and together they hold each key once.
        held = []
        for d in daemons:
            direct = make_client(d.port)
            found = direct.get_many(list(values))
            direct.close()
            assert found, f"instance on port {d.port} holds none of the keys"
            held.extend(found)
        assert sorted(held) == sorted(values)
        assert hc.delete("hash-key-0") is True
        assert hc.get("hash-key-0") is None
        hc.close()
    finally:
        for d in daemons:
            d.stop()
