"""A run whose loss turns NaN: the finite epochs are kept, the file stays valid JSON and schema."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.results import document as results
from bench.training import runner


class NanWorker:
    """Stands in for the worker process: one good epoch, then a NaN loss, then more epochs."""

    terminated = False

    def __init__(self, job: Any, env: Any, log: Path) -> None:
        self.log = log

    def events(self) -> Iterator[dict[str, Any]]:
        # The worker's start on the clock both processes share, as a real worker reports it.
        yield {"event": "started", "clock_s": time.perf_counter()}
        for epoch, loss in ((1, 0.5), (2, math.nan), (3, 0.4)):
            yield {
                "event": "epoch",
                "epoch": epoch,
                "wall_s": 0.1,
                "train_s": 0.08,
                "val_s": 0.02,
                "loss": loss,
                "accuracy": 0.7,
                "val_loss": 0.6,
                "val_accuracy": 0.7,
            }

    def terminate(self) -> None:
        NanWorker.terminated = True

    def wait(self) -> int:
        return -15 if NanWorker.terminated else 0

    def log_tail(self, lines: int = 15) -> str:
        return ""


def test_a_nan_loss_ends_the_run_as_diverged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(runner, "WorkerProcess", NanWorker)
    plan = runner.short_check_plan("tensorflow", 3, tmp_path / "cache", tmp_path / "r.json", 0)
    document = runner.run_plan(plan, "no NVML in this test", "not priced", ["dlbench", "run"])
    run: Mapping[str, Any] = document["runs"][0]
    assert NanWorker.terminated
    assert run["status"] == "failed" and run["error"]["type"] == "Diverged"
    assert "loss is nan at epoch 2" in run["error"]["message"]
    assert [e["epoch"] for e in run["epochs"]] == [1]
    saved = json.loads((tmp_path / "r.json").read_text())  # strict JSON: no NaN in the file
    results.validate(saved)


def test_finite_events_pass() -> None:
    assert runner.non_finite({"epoch": 1, "loss": 0.3, "wall_s": 1.0}) is None
    assert "in the evaluation" in str(runner.non_finite({"loss": math.inf, "accuracy": 0.5}))
