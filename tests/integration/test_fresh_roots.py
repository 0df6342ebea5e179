"""setup.yml on fresh Debian 12 and Debian 13 roots made with debootstrap, through Ansible's
chroot connection: real apt and pip installs, the venv, JupyterLab's unit, verify's CPU verdict,
then a second run that changes nothing.

The roots get one backend (JAX) to keep CI's time down: the other backends' install path is the
same pip task, which the check-mode scenarios of every platform cover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.facts import platforms
from tests.conftest import REPO

MIRROR = "http://deb.debian.org/debian"
# What a minimal root needs before Ansible can reach it: Python for the modules, sudo for
# become, CA certificates for pip and NVIDIA's repository.
INCLUDE = "python3,sudo,ca-certificates"
RELEASES = {"bookworm": ("12", "3.11"), "trixie": ("13", "3.13")}
# Bind-mounted from the host, in this order (unmounted in reverse, whatever happened).
MOUNTS = ("proc", "sys", "dev")


def run(argv: list[str], timeout: float = 1800, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def tarball(release: str, cache: Path) -> Path:
    """debootstrap's packages for the release, downloaded once per run (or per cache folder)."""
    path = cache / f"debootstrap-{release}-minbase.tgz"
    if not path.is_file():
        work = cache / f"work-{release}"
        done = run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={INCLUDE}",
                f"--make-tarball={path}",
                release,
                str(work),
                MIRROR,
            ]
        )
        shutil.rmtree(work, ignore_errors=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return path


def unmount_all(root: Path) -> None:
    for name in reversed(MOUNTS):
        target = root / name
        if os.path.ismount(target):
            run(["umount", "--lazy", str(target)], timeout=60)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("DLSTATION_CACHE_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("debootstrap-cache")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module", params=sorted(RELEASES))
def fresh_root(
    request: pytest.FixtureRequest, cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A fresh root of the release with /proc, /sys and /dev bound in; unmounted at the end."""
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("needs root and debootstrap (.ci/test-prereqs installs it)")
    release: str = request.param
    started = time.monotonic()
    packages = tarball(release, cache)
    downloaded = time.monotonic()
    root = tmp_path_factory.mktemp(f"root-{release}")
    done = run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={INCLUDE}",
            f"--unpack-tarball={packages}",
            release,
            str(root),
            MIRROR,
        ]
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # The host's name resolution and CA bundle, as a machine on this network would have them.
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    try:
        for name in MOUNTS:
            mounted = run(["mount", "--bind", f"/{name}", str(root / name)], timeout=60)
            assert mounted.returncode == 0, mounted.stderr
        yield {
            "release": release,
            "root": root,
            "timings": {"debootstrap download": downloaded - started},
            "fetched": tmp_path_factory.mktemp(f"verify-{release}"),
        }
    finally:
        unmount_all(root)
        assert not any(os.path.ismount(root / name) for name in MOUNTS), "a mount was left"


def provision(fresh: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert executable, "ansible-playbook comes with the dev extra"
    inventory = fresh["fetched"].parent / f"inventory-{fresh['release']}.json"
    host = {
        "ansible_connection": "community.general.chroot",
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    inventory.write_text(json.dumps({"all": {"hosts": {str(fresh["root"]): host}}}))
    variables = {"keras_env_backends": ["jax"], "verify_fetch_dir": str(fresh["fetched"])}
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "false"
    return run(
        [
            executable,
            "-i",
            str(inventory),
            "setup.yml",
            "-e",
            json.dumps(variables),
        ],
        timeout=2400,
        cwd=REPO,
        env=env,
    )


def recap(output: str, host: Path) -> dict[str, int]:
    line = next(x for x in output.splitlines() if x.startswith(str(host)) and "ok=" in x)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


@pytest.fixture(scope="module")
def first_run(fresh_root: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    done = provision(fresh_root)
    fresh_root["timings"]["first setup.yml"] = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    return {**fresh_root, "first": done}


@pytest.mark.provision
def test_a_fresh_root_provisions_and_verifies(first_run: dict[str, Any]) -> None:
    root: Path = first_run["root"]
    version, python = RELEASES[first_run["release"]]
    output = first_run["first"].stdout
    assert recap(output, root)["failed"] == 0
    assert f"Debian {version} x86_64" in output
    assert "NVIDIA GPU: none found" in output
    assert "verdict: PASS" in output, "verify's CPU verdict"
    assert "systemd is not running here" in output
    venv = root / "opt" / "dlstation" / "venv"
    assert (venv / "bin" / "dlbench").is_file() and (venv / "bin" / "jupyter").is_file()
    assert (root / "etc" / "systemd" / "system" / "dlstation-jupyter.service").is_file()
    found = run(
        [
            "chroot",
            str(root),
            "/opt/dlstation/venv/bin/python",
            "-c",
            "import sys, keras, jax; "
            "print('%d.%d' % sys.version_info[:2], keras.__version__, jax.__version__)",
        ],
        # A login's environment inside the root, not this test process's KERAS_BACKEND.
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
    )
    assert found.returncode == 0, found.stderr[-2000:]
    row = platforms.versions(python)
    assert found.stdout.split() == [python, row["keras"], row["jax"]], "the table's row"
    keras_json = json.loads((root / "root" / ".keras" / "keras.json").read_text())
    assert keras_json["backend"] == "jax"
    assert (first_run["fetched"] / f"{root}.json").is_file() or any(first_run["fetched"].iterdir())


@pytest.mark.provision
def test_a_second_run_changes_nothing(first_run: dict[str, Any]) -> None:
    started = time.monotonic()
    done = provision(first_run)
    first_run["timings"]["second setup.yml"] = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:]
    counts = recap(done.stdout, first_run["root"])
    changed = [x for x in done.stdout.splitlines() if x.startswith("changed:")]
    assert counts["changed"] == 0, changed
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in first_run["timings"].items())
    print(f"\nDebian {RELEASES[first_run['release']][0]} fresh root: {timings}")
