"""libmemcached's conformance suite, memccapable (Debian's libmemcached-tools),
against the daemon over TCP: every ascii test and every binary test.

memccapable prints one `<name> [pass]` or `[FAIL]` line per test and exits 1
when any failed. The binary half needs the binary protocol (`-B auto`, the
default): it passes on a build that has it, and fails on one that does not.

Run from the repository root after `cargo build`: python3 -m pytest tests/clients
"""

import re
import shutil
import subprocess

import pytest

# memccapable's io timeout (-t, seconds): a test the server does not answer
# fails after this long instead of hanging.
IO_TIMEOUT = "2"


def memccapable(daemon, *args):
    if shutil.which("memccapable") is None:
        pytest.fail("memccapable missing: tests/run.sh installs libmemcached-tools")
    out = subprocess.run(
        ["memccapable", "-t", IO_TIMEOUT, "-h", "127.0.0.1", "-p", str(daemon.port), *args],
        capture_output=True,
        timeout=600,
    )
    stdout = out.stdout.decode(errors="replace")
    text = stdout + out.stderr.decode(errors="replace")
    # stdout: each test's name padded to a column, then `[pass]` and a
    # newline; a failed test's error and `[FAIL]` go to stderr, so its name
    # runs into the next one's. Anything but [pass] is a failure.
    results = {}
    for chunk in re.split(r"(?=\b(?:ascii|binary) )", stdout):
        if not chunk.startswith(("ascii ", "binary ")):
            continue
        name = re.split(r"\s{2,}|\[", chunk, maxsplit=1)[0].strip()
        results[name] = "pass" if "[pass]" in chunk else "FAIL"
    return out.returncode, results, text


def test_every_ascii_test_passes(daemon):
    code, results, text = memccapable(daemon, "-a")
    failed = sorted(n for n, r in results.items() if r != "pass")
    assert code == 0 and not failed, f"failed: {failed}\n{text}"
    assert len(results) == 27, text
    assert all(n.startswith("ascii ") for n in results), text


def test_the_full_suite_ascii_and_binary_passes(daemon):
    code, results, text = memccapable(daemon)
    failed = sorted(n for n, r in results.items() if r != "pass")
    assert code == 0 and not failed, f"{len(failed)} failed: {failed}\n{text}"
    assert len(results) == 54, text
    assert "All tests passed" in text
