"""What report and compare keep apart (machine hardware, options, target, precision), what
they say when sides differ, and the command-line odds: pipes, `~`, regions, racing first runs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.report import model
from bench.results import document as results
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "data" / "results" / "fixture-cpu-b.json"


def base() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text())
    return loaded


def variant(**changes: Any) -> dict[str, Any]:
    """The fixture with settings, host or every run's definition changed."""
    document = copy.deepcopy(base())
    for key, value in changes.items():
        where, field = key.split("__")
        if where == "run":
            for run in document["runs"]:
                run["definition"][field] = value
        else:
            document[where][field] = value
    return document


def write(folder: Path, documents: dict[str, dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():
        (folder / f"{name}.json").write_text(json.dumps(document))
    return folder


def cli(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("bf16", {"settings__options": ["bf16"]}),
        ("target", {"run__target_accuracy": 0.7}),
        ("other CPU, same hostname", {"host__cpu_model": "Another CPU"}),
        ("more cores, same hostname", {"host__cpu_count": 64}),
        ("GPU memory policy", {"settings__gpu_memory": "framework-default"}),
        ("model layers", {"run__hidden_units": [4, 4]}),
        ("optimizer", {"run__optimizer": "sgd"}),
        ("framework versions", {"host__packages": {"keras": "3.0.0", "tensorflow-cpu": "2.12.0"}}),
    ],
)
def test_report_keeps_apart_what_changes_the_work(
    tmp_path: Path, name: str, changes: dict[str, Any]
) -> None:
    folder = write(tmp_path, {"default": base(), "changed": variant(**changes)})
    found = model.groups(model.collect([folder]))
    assert len(found) == 2, f"{name}: pooled into {[g.settings_label() for g in found]}"
    assert all(len(g.runs) == 2 for g in found)


def test_the_machine_id_is_the_hardware_not_the_hostname() -> None:
    host = base()["host"]
    same = results.machine_id({**host, "hostname": "elsewhere"}, [])
    assert same == results.machine_id(host, [])
    assert results.machine_id(host, [{"name": "NVIDIA H100"}]) != results.machine_id(host, [])
    two = [{"name": "NVIDIA H100"}, {"name": "NVIDIA H100"}]
    assert results.machine_id(host, two) != results.machine_id(host, two[:1])
    assert results.machine_id({**host, "memory_gb": host["memory_gb"] + 0.2}, []) == same


@pytest.mark.parametrize(
    ("reported", "other"), [(23.4, 23.5), (15.6, 16.2), (62.8, 64.0), (0.9, 1.02)]
)
def test_one_machine_reporting_a_little_more_or_less_memory_keeps_its_id(
    reported: float, other: float
) -> None:
    host = base()["host"]
    assert results.machine_id({**host, "memory_gb": reported}, []) == results.machine_id(
        {**host, "memory_gb": other}, []
    )


def test_machines_of_different_memory_sizes_have_different_ids() -> None:
    host = base()["host"]
    ids = {results.machine_id({**host, "memory_gb": gib}, []) for gib in (15.6, 23.4, 31.3, 47)}
    assert len(ids) == 4


def test_compare_refuses_a_side_that_pools_machines(tmp_path: Path) -> None:
    side = write(tmp_path / "a", {"one": base(), "two": variant(host__cpu_model="Another CPU")})
    done = cli("compare", str(side), str(FIXTURE))
    assert done.returncode == 2
    assert "mixes machines, backends or settings for reuters" in done.stderr


def test_compare_names_every_difference_between_the_sides(tmp_path: Path) -> None:
    b = variant(settings__backend="jax", settings__options=["bf16"], host__cpu_model="Other")
    write(tmp_path, {"b": b})
    done = cli("compare", str(FIXTURE), str(tmp_path / "b.json"))
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    assert rows
    for row in rows:
        assert "backend tensorflow vs jax" in row
        assert "options none vs bf16" in row and "precision float32 vs mixed_bfloat16" in row
        assert "machine m-" in row, "same host and accelerator: the hardware ids tell them apart"
    assert "train samples/s" in done.stdout and "epoch s (train + validation)" in done.stdout


def test_compare_names_a_changed_model_and_framework(tmp_path: Path) -> None:
    b = variant(run__optimizer="sgd", host__packages={"keras": "3.0.0", "tensorflow-cpu": "2.12.0"})
    write(tmp_path, {"b": b})
    done = cli("compare", str(FIXTURE), str(tmp_path / "b.json"))
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    assert rows
    for row in rows:
        assert 'optimizer "rmsprop" vs "sgd"' in row, row
        assert (
            "software keras 3.15.1, tensorflow-cpu 2.21.0 vs keras 3.0.0, tensorflow-cpu 2.12.0"
            in row
        )


def test_compare_with_no_complete_run_on_a_side_is_an_error(tmp_path: Path) -> None:
    broken = base()
    for run in broken["runs"]:
        run["status"] = "failed"
    write(tmp_path, {"failed": broken})
    done = cli("compare", str(tmp_path / "failed.json"), str(FIXTURE))
    assert done.returncode == 2
    assert "no complete run (statuses: failed); nothing to compare" in done.stderr


def test_compare_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`compare A B | head -3` where head has gone: the reader closed before we wrote."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "compare", str(FIXTURE), str(FIXTURE)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr
    assert process.returncode == 0


def test_report_out_with_a_tilde_is_the_home_folder(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    done = cli("report", str(FIXTURE), "--out", "~/rep", cwd=work, HOME=str(home))
    assert done.returncode == 0, done.stderr
    assert (home / "rep" / "report.html").is_file()
    assert list(work.iterdir()) == [], "no ./~ folder"


def test_a_region_ec2_does_not_have_is_refused() -> None:
    done = cli(
        "run", "reuters", "--synthetic", "--instance-type", "g5.xlarge", "--region", "ap-mars-1"
    )
    assert done.returncode == 2
    assert done.stderr.startswith("dlbench: error: --region 'ap-mars-1' is not an EC2 region")
    assert len(done.stderr.strip().splitlines()) == 1


def test_first_runs_racing_on_a_fresh_cache_link_the_data_once(tmp_path: Path) -> None:
    """Eight processes call prepare_keras_home together on a fresh cache, five times over."""
    datafile = tmp_path / "reuters.npz"
    datafile.write_bytes(b"x")
    script = (
        "import sys; from pathlib import Path; from bench.training import data; "
        "sys.stdin.read(1); data.prepare_keras_home(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    for round_ in range(5):
        cache = tmp_path / f"cache-{round_}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(datafile), str(cache)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(8)
        ]
        # Each has imported and waits on its stdin: one byte each releases them together.
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"x")
            process.stdin.flush()
        for process in processes:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr.decode()
        link = cache / "keras_home" / "datasets" / "reuters.npz"
        assert link.is_symlink() and link.resolve() == datafile.resolve()
        assert [p.name for p in link.parent.iterdir()] == ["reuters.npz"]


def test_three_hundred_seeds_are_one_row_and_a_small_report(tmp_path: Path) -> None:
    documents = {}
    for seed in range(300):
        document = base()
        document["settings"]["seed"] = 2 * seed
        for run in document["runs"]:
            run["definition"]["seed"] = 2 * seed + run["repeat"]
        documents[f"seed-{seed}"] = document
    folder = write(tmp_path / "in", documents)
    started = time.perf_counter()
    done = cli("report", str(folder), "--out", str(tmp_path / "out"))
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "out" / "report.html").stat().st_size
    print(f"300 files: {elapsed:.1f} s, report.html {html / 1e6:.2f} MB")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| 600/600 |" in text and "seeds 0-599" in text
    assert html < 2_000_000
