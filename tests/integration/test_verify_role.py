"""The verify role on this machine with a stand-in dlbench: a FAIL verdict fails the host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.harness.runs import play_on_localhost

FAILING = """dlbench verify (jax backend, full level, 2 GPU(s) expected)
  PASS  machine nvml            NVML answers: driver 580.95.05, CUDA 13.0
  PASS  gpu0    row remap       none pending, none failed
  FAIL  gpu1    row remap       row remapping failed: the memory cannot be repaired
                                what to do: the GPU needs replacing
per GPU: gpu0 PASS, gpu1 FAIL
verdict: FAIL
"""


def stand_in_venv(folder: Path, verdict_text: str, code: int) -> Path:
    """A venv whose python is this one and whose dlbench prints a fixed verdict."""
    bin_dir = folder / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (folder / "verdict.txt").write_text(verdict_text)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "dlbench").write_text(f"#!/bin/sh\ncat {folder / 'verdict.txt'}\nexit {code}\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    return folder / "venv"


def play(folder: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    playbook = folder / "verify.yml"
    playbook.write_text(
        f"""- name: Verify with a stand-in dlbench
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    preflight_facts: {{gpu_present: false, driver_needed: false}}
    keras_env_venv: {venv}
    keras_env_backends: [jax]
    keras_env_root: {folder}
    dlstation_configure_keras_env: false  # the role alone; its keras_env is the stand-in venv
    dlstation_platforms_file: {REPO / "bench" / "facts" / "platforms.json"}
    ansible_python_interpreter: {sys.executable}
  roles:
    - role: verify
"""
    )
    return play_on_localhost(playbook)


def test_a_fail_verdict_fails_the_host_with_its_failing_lines(tmp_path: Path) -> None:
    done = play(tmp_path, stand_in_venv(tmp_path, FAILING, 1))
    assert done.returncode != 0
    failed = done.stdout[done.stdout.index("TASK [verify : Fail a host whose verdict is FAIL]") :]
    assert "dlbench verify says FAIL:" in failed
    assert "FAIL  gpu1    row remap       row remapping failed" in failed
    assert "per GPU: gpu0 PASS, gpu1 FAIL" in failed
    assert "PASS  gpu0" not in failed
    assert "Run a short benchmark" not in done.stdout


def test_an_internal_error_fails_the_host_as_a_tool_failure_not_a_verdict(tmp_path: Path) -> None:
    venv = stand_in_venv(tmp_path, "", 70)
    crash = (
        "Traceback (most recent call last):\nRuntimeError: boom\n"
        "dlbench: internal error in `dlbench verify` (a bug in dlstation, exit 70): the "
        "traceback is above; please report it"
    )
    (venv / "bin" / "dlbench").write_text(f"#!/bin/sh\necho '{crash}' >&2\nexit 70\n")
    done = play(tmp_path, venv)
    assert done.returncode != 0
    failed = done.stdout[done.stdout.index("TASK [verify : Check that dlbench verify reached") :]
    assert "dlbench verify crashed (exit 70, internal error: a bug in dlstation" in failed
    assert "not a verdict on this machine" in failed and "RuntimeError: boom" in failed
    assert "dlbench verify says FAIL" not in done.stdout
    assert "Run a short benchmark" not in done.stdout
