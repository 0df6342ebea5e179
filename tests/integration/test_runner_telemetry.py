"""The runner with a real worker process and the fake NVML: telemetry, fingerprint, cost."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.machine import nvml
from bench.results import document as results
from bench.results.cost import Pricing
from bench.training.runner import run_plan, short_check_plan
from tests.fakes.nvml import FakeNvml


def run_with(tmp_path: Path, scenario: str) -> Mapping[str, Any]:
    session = nvml.open_nvml(lambda: FakeNvml(scenario, lose_after=4))
    assert isinstance(session, nvml.NvmlSession)
    plan = short_check_plan(
        "tensorflow", 3, tmp_path / "cache", tmp_path / "result.json", telemetry_interval_s=0.05
    )
    pricing = Pricing(1.006, "test price", "2026-11-26")
    document = run_plan(plan, session, pricing, ["dlbench", "run"])
    assert document["status"] == "complete"
    return results.load(plan.output)


@pytest.mark.slow
def test_telemetry_follows_the_workers_phases(tmp_path: Path) -> None:
    document = run_with(tmp_path, "healthy")
    run = document["runs"][0]
    telemetry = run["telemetry"]
    assert telemetry["available"] is True
    phases = list(telemetry["devices"][0]["phases"])
    assert phases[0] == "startup"
    assert {"data_load", "first_epoch", "steady_epochs", "evaluation"} <= set(phases)
    assert telemetry["devices"][0]["energy_source"] == "nvml_total_energy_counter"
    assert telemetry["devices"][0]["energy_j"] > 0
    assert document["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    # The fake says there is an H100 while TensorFlow computed on the CPU: named for what it is.
    assert run["diagnosis"]["cause"].startswith("the installed TensorFlow is a CPU-only build")
    assert run["cost"]["run_usd"] > 0 and run["cost"]["usd_per_hour"] == 1.006
    assert document["summary"]["reuters"]["energy_j"]["n"] == 1


@pytest.mark.slow
def test_gpu_lost_mid_run_does_not_stop_the_run(tmp_path: Path) -> None:
    document = run_with(tmp_path, "lost")
    run = document["runs"][0]
    assert run["status"] == "complete"
    assert [e["event"] for e in run["telemetry"]["events"]] == ["gpu_lost"]
    assert len(run["epochs"]) == 3
