"""Shared fixtures: small Keras-format data files, the real data folder, CLI helpers.

Also the test environment itself: loopback-only networking (a guard in this process and in
every Python subprocess), metadata probes pointed at loopback, and the markers whose
prerequisite may be missing (skipped on a contributor's machine, a failure under CI=true).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tests.netguard import loopback_guard

REPO = Path(__file__).resolve().parent.parent
GUARD_DIR = Path(loopback_guard.__file__).resolve().parent
# In-process Keras (data loader tests) uses the default backend; workers set their own.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests read the packaged price catalog, never a user's refreshed copy.
os.environ["DLSTATION_CATALOG"] = str(REPO / "tests" / "no-user-catalog.json")
# Metadata probes never leave the machine: boto3's off, dlbench's at a closed loopback port.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["DLSTATION_IMDS_URL"] = "http://127.0.0.1:9"
# Every result file written during the tests is checked against the JSON Schema.
os.environ["DLSTATION_VALIDATE_RESULTS"] = "1"
# The guard: this process now, every Python subprocess through sitecustomize on PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")])
)
GUARD_LOG = Path(tempfile.mkdtemp(prefix="dlstation-netguard-")) / "refused.log"
os.environ[loopback_guard.LOG_ENV] = str(GUARD_LOG)
os.environ.pop(loopback_guard.ALLOW_ENV, None)
loopback_guard.install()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def network_guard_env() -> dict[str, str]:
    """The variables that carry the guard into a subprocess; for environments built from scratch."""
    return {key: os.environ[key] for key in ("PYTHONPATH", loopback_guard.LOG_ENV)}


PROVISION_ENV = "DLSTATION_TEST_PROVISION"
INDEX_HOST = ("pypi.org", 443)
# Markers whose tests may reach the network (the package index; provisioning installs from it).
NETWORK_MARKERS = ("index", "provision")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_real_data() -> Path | None:
    """$DLSTATION_DATA_DIR or ../shared/datasets, when it holds both of Keras's files."""
    candidates = [os.environ.get("DLSTATION_DATA_DIR"), str(REPO.parent / "shared" / "datasets")]
    for candidate in filter(None, candidates):
        folder = Path(candidate)
        if (folder / "imdb.npz").is_file() and (folder / "reuters.npz").is_file():
            return folder
    return None


def _missing_realdata() -> str | None:
    if find_real_data() is None:
        return (
            "real data not found: set DLSTATION_DATA_DIR to a folder with Keras's imdb.npz and "
            "reuters.npz"
        )
    return None


def _missing_chromium() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium not installed: `make test` installs it as root (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright not installed: pip install -e '.[dev]'"
    return None


def _missing_motoserver() -> str | None:
    try:
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as error:
        return f"moto's server is not installed ({error}): pip install -e '.[dev]'"
    return None


def _missing_index() -> str | None:
    # Asked from the setup of an index test, where the network is already allowed.
    try:
        socket.create_connection(INDEX_HOST, timeout=5).close()
    except OSError as error:
        return f"the package index ({INDEX_HOST[0]}) is not reachable: {error}"
    return None


def _missing_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mknod, mount -t tmpfs for a small full disk): run as root, as CI does"
    return None


SSHD = Path("/usr/sbin/sshd")


def _missing_sshd() -> str | None:
    if not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("sudo") is None:
        return "sshd, ssh or sudo not installed: `make test` installs them as root"
    if os.geteuid() != 0:
        return "the sshd tests log in as root to a test sshd on 127.0.0.1: run them as root"
    if not (Path(sys.executable).parent / "ansible-playbook").is_file():
        return "ansible-playbook not next to this Python: pip install -e '.[dev]'"
    return None


PREREQUISITES = {
    "root": _missing_root,
    "realdata": _missing_realdata,
    "chromium": _missing_chromium,
    "motoserver": _missing_motoserver,
    "index": _missing_index,
    "sshd": _missing_sshd,
}


@cache
def missing(marker: str) -> str | None:
    """Why the marker's prerequisite is missing here, or None; asked once per session."""
    return PREREQUISITES[marker]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or under CI, fail) a test whose prerequisite is missing; provisioning is opt-in."""
    if item.get_closest_marker("provision") and os.environ.get(PROVISION_ENV) != "1":
        pytest.skip(
            f"provisions this machine for real (apt, /opt, systemd, ~/.keras): "
            f"run with {PROVISION_ENV}=1 (.ci/run does)"
        )
    for marker in PREREQUISITES:
        if item.get_closest_marker(marker) is None:
            continue
        reason = missing(marker)
        if reason is None:
            continue
        if in_ci():
            pytest.fail(f"CI requires this prerequisite: {reason}", pytrace=False)
        pytest.skip(reason)


def refused_connections() -> list[str]:
    """Connections the guard has refused so far, in this process and its subprocesses."""
    return GUARD_LOG.read_text().splitlines() if GUARD_LOG.is_file() else []


REFUSED_BEFORE = pytest.StashKey[int]()


def _fail_on_new_refusals(item: pytest.Item) -> None:
    refused = refused_connections()
    new, item.stash[REFUSED_BEFORE] = refused[item.stash[REFUSED_BEFORE] :], len(refused)
    if new:
        pytest.fail(
            "connections beyond loopback (tests talk to 127.0.0.0/8 and ::1 only):\n"
            + "\n".join(new),
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Tests marked index or provision may reach the network, module fixtures included."""
    item.stash[REFUSED_BEFORE] = len(refused_connections())
    allowed = any(item.get_closest_marker(m) for m in NETWORK_MARKERS)
    if allowed:
        os.environ[loopback_guard.ALLOW_ENV] = "1"
    try:
        return (yield)
    finally:
        if allowed:
            os.environ.pop(loopback_guard.ALLOW_ENV, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """The test fails if it (or a fixture, or any process they started) left loopback."""
    result = yield
    _fail_on_new_refusals(item)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Attempts made while tearing down are an error of that test's teardown."""
    result = yield
    _fail_on_new_refusals(item)
    return result


def write_keras_npz(path: Path, dataset: str, samples: int, num_words: int, seed: int = 0) -> None:
    """A small file laid out as Keras's imdb.npz / reuters.npz: ragged lists of word indices."""
    rng = np.random.default_rng(seed)

    def sequences(n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = [1, *rng.integers(2, num_words * 2, size=rng.integers(3, 30)).tolist()]
        return out

    if dataset == "imdb":
        np.savez(
            path,
            x_train=sequences(samples),
            y_train=rng.integers(0, 2, samples),
            x_test=sequences(samples),
            y_test=rng.integers(0, 2, samples),
        )
    else:
        np.savez(path, x=sequences(samples), y=rng.integers(0, 46, samples))


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Path:
    """A folder holding small imdb.npz and reuters.npz in Keras's format."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_keras_npz(folder / "imdb.npz", "imdb", samples=60, num_words=50)
    write_keras_npz(folder / "reuters.npz", "reuters", samples=150, num_words=50)
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real files (tests using them are marked realdata, so missing data skips first)."""
    folder = find_real_data()
    if folder is None:
        pytest.fail(_missing_realdata() or "real data not found", pytrace=False)
    return folder


def dlbench(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the real dlbench executable as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        check=False,
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(GUARD_LOG.parent, ignore_errors=True)
