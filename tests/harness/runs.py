"""Subprocess runs the integration tests share: dlbench, Python with a backend, ansible-playbook.

Each runs from the repository root, as a user's shell would, and never raises on a non-zero
exit: the test reads the exit code and the output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def dlbench_argv(*args: str, cache: Path | None = None) -> list[str]:
    """The dlbench command line; `cache`: its own encode cache (--cache-dir) at the end."""
    return [sys.executable, "-m", "bench", *args, *(["--cache-dir", str(cache)] if cache else [])]


def run_captured(
    argv: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """argv run to its end from the repository root, its output captured as text."""
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def start(argv: list[str]) -> subprocess.Popen[str]:
    """argv running on from the repository root, stdout and stderr piped as text."""
    return subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def python_with_backend(*args: str, backend: str) -> subprocess.CompletedProcess[str]:
    """This Python with these arguments, Keras on `backend`, the repository importable."""
    return run_captured(
        [sys.executable, *args],
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)},
        timeout=600,
    )


def wait_for_epochs(path_glob: Path, count: int, timeout: float = 240) -> Path:
    """The first result file matching path_glob whose last run has `count` epochs written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in path_glob.parent.glob(path_glob.name):
            try:
                document = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            # A claimed file holds the "starting" document (no runs yet) until the first write.
            runs = document.get("runs")
            if runs and len(runs[-1]["epochs"]) >= count:
                return path
        time.sleep(0.2)
    raise AssertionError(f"no result with {count} epochs in {timeout} s")


def play_on_localhost(playbook: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook of this venv on localhost, with the project's config and roles."""
    executable = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert executable, "ansible-playbook comes with the dev extra"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "playbooks" / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return run_captured(
        [executable, "-i", "localhost,", str(playbook), *args], env=env, timeout=600
    )
