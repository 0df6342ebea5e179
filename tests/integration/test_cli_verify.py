"""`dlbench verify` on this machine (no GPU): the CPU path, as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import dlbench


@pytest.mark.slow
def test_verify_without_gpu_checks_the_cpu_path() -> None:
    done = dlbench("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no NVIDIA GPU usable: NVML did not start" in done.stdout
    assert "PASS  backend          tensorflow computes on CPU" in done.stdout
    assert "the text's reuters model trains on CPU" in done.stdout
    assert done.stdout.strip().endswith("verdict: PASS")


@pytest.mark.slow
def test_verify_expecting_a_gpu_fails_here_with_json() -> None:
    done = dlbench("verify", "--expect-gpu", "--no-workload", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["verdict"] == "FAIL"
    gpu = next(c for c in report["checks"] if c["name"] == "gpu")
    assert gpu["status"] == "FAIL" and "install the NVIDIA driver" in gpu["fix"]
