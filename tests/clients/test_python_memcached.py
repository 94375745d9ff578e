"""shmcached through python-memcached (the `memcache` module, pure Python,
text protocol), over TCP and over the unix socket (`unix:/path`, `-s`).

Run from the repository root after `cargo build`: python3 -m pytest tests/clients
"""

import pytest

try:
    import memcache
except ImportError:  # pragma: no cover - tests/run.sh installs it
    memcache = None


@pytest.fixture(params=["tcp", "unix"])
def mc(request):
    if memcache is None:
        pytest.fail("python-memcached is missing: tests/run.sh installs it (pip install python-memcached)")
    if request.param == "unix":
        daemon = request.getfixturevalue("unix_daemon")
        server = f"unix:{daemon.unix_socket}"
    else:
        daemon = request.getfixturevalue("daemon")
        server = f"127.0.0.1:{daemon.port}"
    # cache_cas: gets() remembers the cas unique that cas() sends back.
    client = memcache.Client([server], cache_cas=True, socket_timeout=5)
    assert client.flush_all() is None
    yield client
    client.disconnect_all()
    print(f"--- output of `{' '.join(daemon.command)}` ---\n{daemon.output()}")


def test_server_is_reachable_and_reports_itself(mc):
    stats = mc.get_stats()
    assert len(stats) == 1
    _, values = stats[0]
    assert values["version"] == "1.6.18"
    assert int(values["curr_connections"]) >= 1


def test_set_get_delete(mc):
    assert mc.set("alpha", "one") is True
    assert mc.get("alpha") == "one"
    assert mc.get("missing") is None
    assert mc.delete("alpha") == 1
    assert mc.get("alpha") is None
    assert mc.delete("alpha") == 0  # NOT_FOUND


def test_types_are_kept_through_flags(mc):
    # python-memcached encodes the Python type in the flags; the server
    # must store and return them untouched.
    assert mc.set("int", 42) is True
    assert mc.set("bytes", b"\x00\xffraw") is True
    assert mc.set("obj", {"a": [1, 2, 3]}) is True
    assert mc.set("big", "x" * 300_000) is True
    assert mc.get("int") == 42
    assert mc.get("bytes") == b"\x00\xffraw"
    assert mc.get("obj") == {"a": [1, 2, 3]}
    assert mc.get("big") == "x" * 300_000


def test_multi(mc):
    values = {f"multi{i}": f"v{i}" for i in range(40)}
    assert mc.set_multi(values) == []
    got = mc.get_multi(list(values) + ["multi-missing"])
    assert got == values
    # key_prefix is prepended on the wire and stripped from the answer.
    assert mc.set_multi({"a": "1", "b": "2"}, key_prefix="pre:") == []
    assert mc.get("pre:a") == "1"
    assert mc.get_multi(["a", "b", "c"], key_prefix="pre:") == {"a": "1", "b": "2"}
    assert mc.delete_multi(["multi1", "multi2"]) == 1
    assert mc.get_multi(["multi1", "multi2", "multi3"]) == {"multi3": "v3"}


def test_incr_decr(mc):
    assert mc.set("counter", "10") is True
    assert mc.incr("counter") == 11
    assert mc.incr("counter", 9) == 20
    assert mc.decr("counter", 25) == 0
    assert mc.incr("nocounter") is None
    assert mc.decr("nocounter") is None
    assert mc.set("n", 5) is True
    assert mc.incr("n", 2) == 7
    assert mc.get("n") == 7


def test_add_replace_append_prepend(mc):
    assert mc.add("beta", "a") is True
    assert mc.add("beta", "b") is False
    assert mc.replace("beta", "c") is True
    assert mc.replace("nobeta", "c") is False
    assert mc.append("beta", "-end") is True
    assert mc.prepend("beta", "start-") is True
    assert mc.get("beta") == "start-c-end"
    assert mc.append("nobeta", "x") is False


def test_gets_and_cas(mc):
    assert mc.set("gamma", "first") is True
    assert mc.gets("gamma") == "first"
    assert mc.cas("gamma", "second") is True
    # The remembered cas unique is stale now: another client's write wins.
    assert mc.gets("gamma") == "second"
    other = memcache.Client([mc_server_spec(mc)], socket_timeout=5)
    assert other.set("gamma", "other") is True
    other.disconnect_all()
    assert mc.cas("gamma", "third") is False
    assert mc.get("gamma") == "other"
    # Without a remembered cas, cas() is a plain set.
    mc.reset_cas()
    assert mc.cas("gamma", "fourth") is True
    assert mc.get("gamma") == "fourth"


def mc_server_spec(mc):
    """The server string `mc` was made with (`host:port` or `unix:/path`)."""
    host = mc.servers[0]
    if host.family == __import__("socket").AF_UNIX:
        return f"unix:{host.address}"
    return f"{host.address[0]}:{host.address[1]}"


def test_touch_and_expiry(mc):
    assert mc.set("zeta", "z", time=100) is True
    assert mc.touch("zeta", 0) == 1  # TOUCHED
    assert mc.touch("nozeta", 0) == 0  # NOT_FOUND
    assert mc.get("zeta") == "z"
    assert mc.set("eta", "e", time=-1) is True
    assert mc.get("eta") is None


def test_flush_all(mc):
    assert mc.set_multi({"iota": "1", "kappa": "2"}) == []
    mc.flush_all()
    assert mc.get_multi(["iota", "kappa"]) == {}
