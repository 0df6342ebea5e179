"""Derived figures, summaries, atomic writes and the schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from bench.machine import hostinfo
from bench.results import document as results
from bench.training.workloads import WORKLOADS


def recorded_run(epochs: list[tuple[float, float, float]], source: str = "keras") -> results.Run:
    """A run record with (wall_s, train_s, val_accuracy) per epoch, as a worker would report."""
    definition = {**WORKLOADS["imdb"].describe(), "seed": 0, "mode": "fit", "backend": "tensorflow"}
    run = results.new_run("imdb", 0, definition)
    run["data"] = {
        "source": source,
        "train_samples": 15_000,
        "val_samples": 10_000,
        "test_samples": 25_000,
    }
    run["epochs"] = [
        {
            "epoch": i + 1,
            "wall_s": wall,
            "train_s": train,
            "val_s": wall - train,
            "loss": 0.5,
            "accuracy": 0.8,
            "val_loss": 0.4,
            "val_accuracy": acc,
        }
        for i, (wall, train, acc) in enumerate(epochs)
    ]
    return run


def test_first_epoch_steady_state_and_target() -> None:
    run = recorded_run([(4.0, 3.5, 0.85), (1.0, 0.5, 0.87), (1.2, 0.6, 0.885), (1.1, 0.4, 0.89)])
    results.derive_figures(run)
    assert run["timing"]["first_epoch_s"] == 4.0
    assert run["timing"]["steady_epoch_s"] == 1.1
    # median training time of epochs 2..4 is 0.5 s: 15,000 samples / 0.5 s
    assert run["throughput"]["steady_samples_per_s"] == pytest.approx(30_000)
    assert run["target"] == {
        "metric": "val_accuracy",
        "value": 0.88,
        "reached_epoch": 3,
        "reached_s": 6.2,
    }


def test_target_not_reached_and_single_epoch() -> None:
    run = recorded_run([(4.0, 3.5, 0.5)])
    results.derive_figures(run)
    assert run["timing"]["steady_epoch_s"] is None
    assert run["throughput"]["steady_samples_per_s"] is None
    assert run["target"] is not None and run["target"]["reached_epoch"] is None


def test_synthetic_runs_have_no_target() -> None:
    run = recorded_run([(1.0, 0.5, 0.99), (1.0, 0.5, 0.99)], source="synthetic")
    results.derive_figures(run)
    assert run["target"] is None


def test_summary_spread_over_complete_runs_only() -> None:
    runs = []
    for wall in (1.0, 2.0, 4.0):
        run = recorded_run([(5.0, 4.0, 0.5), (wall, wall / 2, 0.5)])
        run["status"] = "complete"
        results.derive_figures(run)
        runs.append(run)
    runs[-1]["status"] = "failed"
    summary = results.summarize(runs)
    assert summary["imdb"]["steady_epoch_s"] == {"median": 1.5, "min": 1.0, "max": 2.0, "n": 2}
    assert summary["imdb"]["test_accuracy"]["n"] == 0


def document_with(run: results.Run) -> results.Document:
    settings = {
        "backend": "tensorflow",
        "mode": "fit",
        "workloads": ["imdb"],
        "repeats": 1,
        "synthetic": False,
        "data_dir": None,
        "seed": 0,
    }
    document = results.new_document(
        ["dlbench", "run"], settings, hostinfo.describe_host(), hostinfo.describe_code()
    )
    document["runs"].append(run)
    document["summary"] = results.summarize(document["runs"])
    return document


def test_documents_validate_and_broken_ones_do_not() -> None:
    run = recorded_run([(4.0, 3.5, 0.85), (1.0, 0.5, 0.9)])
    results.derive_figures(run)
    document = document_with(run)
    results.validate(document)
    document["runs"][0]["epochs"][0]["wall_s"] = "slow"  # type: ignore[typeddict-item]
    with pytest.raises(jsonschema.ValidationError):
        results.validate(document)


def test_write_atomic_then_load(tmp_path: Path) -> None:
    run = recorded_run([(4.0, 3.5, 0.85)])
    results.derive_figures(run)
    path = tmp_path / "out" / "r.json"
    results.write_atomic(path, document_with(run))
    assert results.load(path)["runs"][0]["workload"] == "imdb"
    assert [p.name for p in path.parent.iterdir()] == ["r.json"], "no temp files left behind"


def test_load_refuses_other_files_and_versions(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(results.ResultError, match="not a dlbench result"):
        results.load(other)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"tool": "dlbench", "schema_version": 0}))
    with pytest.raises(results.ResultError, match="schema_version 0 is not readable"):
        results.load(old)
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\x01")
    with pytest.raises(results.ResultError, match="not a dlbench result"):
        results.load(garbage)


def _telemetry_run(steady_readings: list[float]) -> dict:
    samples = [{"gpu": 0, "phase": "first_epoch", "gpu_util": 90.0}]
    samples += [{"gpu": 0, "phase": "steady_epochs", "gpu_util": u} for u in steady_readings]
    samples.append({"gpu": 1, "phase": "steady_epochs", "gpu_util": 100.0})  # GPU 1: not counted
    return {"telemetry": {"devices": [{"energy_j": 12.5}, {"energy_j": 7.5}], "samples": samples}}


def test_gpu_utilisation_needs_two_readings_in_the_steady_epochs() -> None:
    assert results.telemetry_figures(_telemetry_run([40.0, 60.0])) == {
        "energy_j": 20.0,
        "steady_gpu_util": 50.0,
    }
    # One reading (a compiled run's 20 epochs inside one interval) says too little to report.
    assert results.telemetry_figures(_telemetry_run([0.0]))["steady_gpu_util"] is None
    assert results.telemetry_figures({"telemetry": None}) == {
        "energy_j": None,
        "steady_gpu_util": None,
    }


def test_write_atomic_refuses_an_invalid_document_where_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tests set DLSTATION_VALIDATE_RESULTS=1: every result written under them is checked."""
    assert os.environ[results.VALIDATE_ENV] == "1"
    run = recorded_run([(4.0, 3.5, 0.85)])
    run["status"] = "finished"  # type: ignore[typeddict-item]  # off the schema on purpose
    path = tmp_path / "r.json"
    with pytest.raises(jsonschema.ValidationError, match="'finished' is not one of"):
        results.write_atomic(path, document_with(run))
    assert list(tmp_path.iterdir()) == [], "nothing written"
    monkeypatch.delenv(results.VALIDATE_ENV)
    results.write_atomic(path, document_with(run))  # users' runs are not slowed by the check
    assert path.is_file()


@pytest.mark.parametrize(
    ("record", "schema_path"),
    [
        (results.Document, ()),
        (results.Run, ("$defs", "run")),
        (results.Epoch, ("$defs", "epoch")),
    ],
)
def test_typed_records_name_the_schemas_fields(record: type, schema_path: tuple[str, ...]) -> None:
    """The TypedDicts and the JSON Schema list the same keys, and agree on which are required."""
    part = results.schema()
    for key in schema_path:
        part = part[key]
    keys = record.__required_keys__ | record.__optional_keys__  # type: ignore[attr-defined]
    assert keys == set(part["properties"])
    assert record.__required_keys__ == set(part.get("required", ()))  # type: ignore[attr-defined]
