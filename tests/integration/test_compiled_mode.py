"""The compiled mode against the text's fit: same weights after an epoch, same accuracy band."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import results
from tests.conftest import REPO, dlbench


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
@pytest.mark.parametrize("workload", ["imdb", "reuters"])
def test_one_epoch_gives_the_same_weights_as_fit(workload: str, backend: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "integration" / "equivalence_check.py"), workload],
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["min_weight_move"] > 1e-4, "training must have changed every weight"
    assert report["max_weight_diff"] < 1e-5, report
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert report["compiled"][metric] == pytest.approx(report["fit"][metric], abs=1e-4), metric


def test_compiled_mode_for_torch_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    done = dlbench(
        "run",
        "reuters",
        "--synthetic",
        "--mode",
        "compiled",
        "--backend",
        "torch",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 2
    assert (
        "--mode compiled is implemented for the jax and tensorflow backends, not torch"
        in done.stderr
    )


@pytest.mark.slow
def test_tensorflow_compiled_run_records_its_start_up(tmp_path: Path) -> None:
    out = tmp_path / "tf.json"
    done = dlbench(
        "run",
        "reuters",
        "--synthetic",
        "--epochs",
        "3",
        "--mode",
        "compiled",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = results.load(out)["runs"][0]
    assert run["definition"]["mode"] == "compiled" and run["backend"]["name"] == "tensorflow"
    assert run["epochs"][0]["trace_s"] > 0 and run["epochs"][0]["transfer_s"] > 0
    assert len(run["epochs"]) == 3


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_compiled_mode_reaches_the_texts_accuracy(
    real_data_dir: Path, tmp_path: Path, backend: str
) -> None:
    out = tmp_path / "compiled.json"
    done = dlbench(
        "run",
        "--backend",
        backend,
        "--mode",
        "compiled",
        "--data-dir",
        str(real_data_dir),
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = results.load(out)
    assert document["settings"]["mode"] == "compiled"
    runs = {r["workload"]: r for r in document["runs"]}
    assert runs["imdb"]["test"]["accuracy"] >= 0.84
    assert runs["reuters"]["test"]["accuracy"] >= 0.76
    first = runs["imdb"]["epochs"][0]
    assert first["trace_s"] > 0 and first["transfer_s"] > 0
    if backend == "jax":
        assert first["compile_s"] > 0
    assert runs["imdb"]["definition"]["mode"] == "compiled"
