"""The test suite's loopback-only guard: it refuses, records and fails a test for the attempt."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.machine import imds
from tests.conftest import REPO
from tests.netguard import loopback_guard

# The guard's own tests allow 127.0.0.1 only and dial 127.0.0.2: "outside" for the guard, yet
# loopback, so a broken guard would still send nothing beyond this machine.
NARROW = "127.0.0.1/32"
OUTSIDE = "127.0.0.2"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.255.255.1", False),
        ("169.254.169.254", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
    ],
)
def test_loopback_is_127_slash_8_and_colon_colon_1(host: str, loopback: bool) -> None:
    assert loopback_guard.is_loopback(host) is loopback


def test_the_allowed_networks_can_be_narrowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loopback_guard.NETWORKS_ENV, NARROW)
    assert loopback_guard.is_loopback("127.0.0.1")
    assert not loopback_guard.is_loopback(OUTSIDE)
    assert not loopback_guard.is_loopback("::1")


def test_this_process_is_refused_and_the_attempt_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "refused.log"
    # A private log: the attempt is this test's subject, not a leak to fail it for.
    monkeypatch.setenv(loopback_guard.LOG_ENV, str(log))
    monkeypatch.setenv(loopback_guard.NETWORKS_ENV, NARROW)
    # PermissionError: under pytest-xdist the guard came first as sitecustomize's own module.
    with pytest.raises(PermissionError, match=r"guard: connection to 127\.0\.0\.2:80"):
        socket.create_connection((OUTSIDE, 80), timeout=1)
    assert "-> 127.0.0.2:80" in log.read_text()


def test_loopback_connections_pass() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=5).close()


def test_subprocesses_inherit_the_guard(tmp_path: Path) -> None:
    log = tmp_path / "refused.log"
    code = f"import socket; socket.create_connection(({OUTSIDE!r}, 80), timeout=1)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, loopback_guard.LOG_ENV: str(log), loopback_guard.NETWORKS_ENV: NARROW},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "NonLoopbackConnectionError" in done.stderr
    assert "-> 127.0.0.2:80" in log.read_text()


def test_metadata_probes_point_at_loopback() -> None:
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert imds.base_url().startswith("http://127.0.0.1:")


def test_a_leak_from_a_subprocess_fails_the_test() -> None:
    """A whole pytest session over probe_leak.py: the leaking test fails, the index one passes."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env[loopback_guard.NETWORKS_ENV] = NARROW
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "tests/netguard/probe_leak.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    assert "1 failed" in out, out
    assert "connections beyond loopback" in out and "-> 127.0.0.2:80" in out, out
    assert "test_subprocess_reaches_beyond_loopback" in out
    # The index test passes where the index is allowed, or skips where it is unreachable.
    assert "1 passed" in out or "1 skipped" in out, out
