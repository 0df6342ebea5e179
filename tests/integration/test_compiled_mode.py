"""The compiled mode against the text's fit: same weights after an epoch, same accuracy band."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.results import document as results
from tests.conftest import REPO, dlbench
from tests.harness.runs import python_with_backend


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
@pytest.mark.parametrize("workload", ["imdb", "reuters"])
def test_one_epoch_gives_the_same_weights_as_fit(workload: str, backend: str) -> None:
    check = REPO / "tests" / "integration" / "equivalence_check.py"
    done = python_with_backend(str(check), workload, backend=backend)
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
    run: Mapping[str, Any] = results.load(out)["runs"][0]
    assert run["definition"]["mode"] == "compiled" and run["backend"]["name"] == "tensorflow"
    assert run["epochs"][0]["trace_s"] > 0 and run["epochs"][0]["transfer_s"] > 0
    assert len(run["epochs"]) == 3
    assert set(run["timing"]) <= set(results.Timing.__annotations__), "the typed record lags"


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
    runs: dict[str, Mapping[str, Any]] = {r["workload"]: r for r in document["runs"]}
    assert runs["imdb"]["test"]["accuracy"] >= 0.84
    assert runs["reuters"]["test"]["accuracy"] >= 0.76
    first = runs["imdb"]["epochs"][0]
    assert first["trace_s"] > 0 and first["transfer_s"] > 0
    if backend == "jax":
        assert first["compile_s"] > 0
    assert runs["imdb"]["definition"]["mode"] == "compiled"


COMPILED_EVALUATION_CHECK = """
import json
import keras
from bench.training import data
from bench.training.model import build_model
from bench.training.modes import compiled
from bench.training.workloads import get_workload

compiled.EVALUATION_CHUNK = 1000  # three chunks, the last one padded with weight-0 rows
workload = get_workload("reuters")
loaded = data.load_synthetic(workload, 0, "uint8")
keras.utils.set_random_seed(0)
model = build_model(keras, workload)
model.fit(loaded.x_train[:2000], loaded.y_train[:2000], epochs=1, batch_size=512, verbose=0)
ours = compiled.evaluate_jax(keras, model, loaded.x_test, loaded.y_test)
theirs = model.evaluate(loaded.x_test, loaded.y_test, verbose=0)
print(json.dumps({"compiled": ours, "keras": [float(v) for v in theirs], "n": len(loaded.x_test)}))
"""


@pytest.mark.slow
def test_compiled_evaluation_scores_as_keras_evaluate_does() -> None:
    done = python_with_backend("-c", COMPILED_EVALUATION_CHECK, backend="jax")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["n"] % 1000 != 0, "the padding must be exercised"
    assert report["compiled"][0] == pytest.approx(report["keras"][0], rel=1e-5)
    assert report["compiled"][1] == pytest.approx(report["keras"][1], abs=0.5 / report["n"])


@pytest.mark.slow
def test_opt_in_changes_are_recorded_in_the_result(tmp_path: Path) -> None:
    out = tmp_path / "opt-in.json"
    done = dlbench(
        "run",
        "reuters",
        "--synthetic",
        "--epochs",
        "2",
        "--backend",
        "jax",
        "--mode",
        "compiled",
        "--opt-in",
        "compiled-evaluation",
        "--opt-in",
        "command-buffers",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = results.load(out)
    run = document["runs"][0]
    assert document["settings"]["options"] == ["compiled-evaluation", "command-buffers"]
    assert run["evaluation"]["method"] == "compiled"
    recorded = run["options"]
    assert "compiled-evaluation" in recorded["applied"]
    # Applied, with the flags in the record, or fallen back with the reason: never silent.
    if "command-buffers" in recorded["applied"]:
        assert "WHILE" in recorded["xla_flags"] and not recorded["fallbacks"]
    else:
        assert recorded["fallbacks"]["command-buffers"]


def test_opt_in_that_the_mode_cannot_use_is_refused(tmp_path: Path) -> None:
    done = dlbench(
        "run", "reuters", "--synthetic", "--opt-in", "compiled-evaluation", "--out", str(tmp_path)
    )
    assert done.returncode == 2
    assert "compiled-evaluation needs --mode compiled --backend jax" in done.stderr
