"""`dlbench verify` on this machine (no GPU): the CPU path and the quick level."""

from __future__ import annotations

import json

import pytest

from tests.conftest import dlbench


@pytest.mark.slow
def test_verify_without_gpu_checks_the_cpu_path() -> None:
    done = dlbench("verify", "--no-imds")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("  INFO  machine nvml            no NVIDIA GPU usable: NVML did not")
    assert "  PASS  host    backend         tensorflow computes on CPU" in lines
    assert "the text's reuters model trains on CPU" in done.stdout
    assert lines[-1] == "verdict: PASS"


@pytest.mark.slow
def test_verify_expecting_gpus_fails_here_with_json_and_timings() -> None:
    done = dlbench("verify", "--expect-gpus", "2", "--no-workload", "--json", "--no-imds")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["verdict"] == "FAIL" and report["expected"]["count"] == 2
    nvml = next(c for c in report["machine"] if c["name"] == "nvml")
    assert nvml["status"] == "FAIL" and "install the NVIDIA driver" in nvml["fix"]
    assert report["gpus"][0]["key"] == "host" and report["gpus"][0]["probe"]["device_type"] == "CPU"
    assert {"nvml_start_s", "startup_s", "probes_wall_s", "total_s"} <= set(report["timing"])
    assert report["timing"]["per_gpu"]["host"]["probe_s"] > 0


def test_quick_level_takes_no_load() -> None:
    done = dlbench("verify", "--level", "quick", "--json", "--no-imds")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["level"] == "quick" and report["gpus"] == []
    assert "probes_wall_s" not in report["timing"]
