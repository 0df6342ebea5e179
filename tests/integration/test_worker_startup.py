"""A real worker under the runner: start-up timed in parts, the GPU memory policy applied before
the backend's import and recorded, the peak memory read from the fake NVML."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.machine import nvml
from bench.results import document as results
from bench.training.runner import run_plan, short_check_plan
from tests.conftest import REPO
from tests.fakes.nvml import FakeNvml

PARTS = (
    "interpreter_s",
    "import_s",
    "backend_start_s",
    "data_s",
    "build_s",
    "first_epoch_s",
    "steady_epoch_s",
    "eval_s",
    "result_write_s",
    "exit_s",
    "end_to_end_s",
)


def run(tmp_path: Path, gpu_memory: str) -> Mapping[str, Any]:
    session = nvml.open_nvml(lambda: FakeNvml("healthy"))
    assert isinstance(session, nvml.NvmlSession)
    plan = dataclasses.replace(
        short_check_plan(
            "tensorflow", 2, tmp_path / "cache", tmp_path / "r.json", telemetry_interval_s=0.05
        ),
        gpu_memory=gpu_memory,
    )
    document = run_plan(plan, session, "no price", ["dlbench", "run"])
    assert document["status"] == "complete"
    return results.load(plan.output)


@pytest.fixture(autouse=True)
def no_memory_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_on_demand_memory_and_start_up_in_parts(tmp_path: Path) -> None:
    document = run(tmp_path, "on-demand")
    run_record = document["runs"][0]
    assert document["settings"]["gpu_memory"] == "on-demand"
    memory = run_record["gpu_memory"]
    assert memory["policy"] == "on-demand"
    assert memory["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert memory["env"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    used = [s["mem_used_mib"] for s in run_record["telemetry"]["samples"]]
    assert memory["peak_mib"] == max(used) and memory["run_peak_mib"] == max(used) - used[0]
    timing = run_record["timing"]
    for part in PARTS:
        assert timing[part] is not None and timing[part] >= 0, part
    # Disjoint pieces of the whole (the parent's writes run beside the worker's epochs).
    sequential = [p for p in PARTS if p not in ("end_to_end_s", "steady_epoch_s", "result_write_s")]
    parts = sum(timing[p] for p in sequential)
    assert parts <= timing["end_to_end_s"]
    phases = [p["phase"] for p in run_record["phases"]]
    assert phases[:3] == ["startup", "backend_start", "data_load"]


@pytest.mark.slow
def test_framework_default_leaves_the_frameworks_alone(tmp_path: Path) -> None:
    memory = run(tmp_path, "framework-default")["runs"][0]["gpu_memory"]
    assert memory["policy"] == "framework-default"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in memory["env"]
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in memory["env"]


SEEDED_IMPORTS = """
import json, sys
from bench.training.worker import skip_unused_imports
skip_unused_imports({backend!r})
import keras
keras.utils.set_random_seed(0)
loaded = [n for n in ("tensorflow", "matplotlib") if sys.modules.get(n) is not None]
print(json.dumps(loaded))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "expected"), [("jax", []), ("tensorflow", ["tensorflow"])])
def test_a_worker_imports_only_its_own_backend(backend: str, expected: list[str]) -> None:
    """Keras's set_random_seed would import TensorFlow for any backend, and Keras matplotlib."""
    done = subprocess.run(
        [sys.executable, "-c", SEEDED_IMPORTS.format(backend=backend)],
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
