"""The dlbench executable as a user runs it: bad input, interruption, the real data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.results import document as results
from bench.training import backends
from tests.conftest import REPO, dlbench
from tests.harness.runs import dlbench_argv, start, wait_for_epochs


def run_main(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code or 0)


def test_list_prints_every_definition(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main("list") == 0
    out = capsys.readouterr().out
    assert "Dense(16, relu) -> Dense(16, relu) -> Dense(1, sigmoid)" in out
    assert "Dense(64, relu) -> Dense(64, relu) -> Dense(46, softmax)" in out
    assert "validation = first 10,000 training samples" in out
    assert "epochs=20, batch_size=512" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "mnist"], "unknown workload 'mnist'; valid workloads: imdb, reuters"),
        (["run", "imdb", "--epochs", "0"], "must be at least 1, got 0"),
        (["run", "imdb", "--epochs", "-3"], "must be at least 1, got -3"),
        (["run", "imdb", "--backend", "theano"], "invalid choice: 'theano'"),
        (
            ["run", "imdb", "--data-dir", "/nonexistent/datasets"],
            "data folder /nonexistent/datasets does not exist",
        ),
        (["run", "imdb", "--target-accuracy", "88"], "must be in (0, 1]"),
        (["run", "imdb", "--target-accuracy", "nan"], "must be in (0, 1]"),
        (["run", "imdb", "--batch-size", "big"], "'big' is not a whole number"),
        (["run", "imdb", "--repeats", "0"], "must be at least 1, got 0"),
        (["run", "imdb", "--price-per-hour", "-3"], "must be a number of 0 or more, got -3"),
        (["run", "imdb", "--price-per-hour", "nan"], "must be a number of 0 or more, got nan"),
        (["run", "imdb", "--price-per-hour", "cheap"], "'cheap' is not a number"),
        (["run", "imdb", "--electricity-price", "-1"], "must be a number of 0 or more, got -1"),
        (
            ["run", "imdb", "--electricity-price", "0.3", "--amortisation-per-hour", "-1"],
            "must be a number of 0 or more, got -1",
        ),
        (
            ["run", "imdb", "--amortisation-per-hour", "0.1"],
            "--amortisation-per-hour is added to --electricity-price; pass both",
        ),
        (["run", "imdb", "--telemetry-interval", "-1"], "must be a number of 0 or more, got -1"),
        (["run", "imdb", "--telemetry-interval", "inf"], "must be a number of 0 or more, got inf"),
        (["run", "imdb", "--seed", "-5"], "must be from 0 to 2**32-1 (4294967295), got -5"),
        (["run", "imdb", "--seed", str(2**32)], "must be from 0 to 2**32-1"),
        (["run", "imdb", "--seed", "1.5"], "'1.5' is not a whole number"),
        (
            ["run", "imdb", "--seed", str(2**32 - 1), "--repeats", "2"],
            "the largest seed for 2 repeats is 4294967294",
        ),
        (
            ["run", "imdb", "--instance-type", "p9.mega"],
            "--instance-type: 'p9.mega' is not a GPU instance type in dlstation's catalog",
        ),
        (
            ["run", "imdb", "--price-per-hour", "1", "--instance-type", "p9.mega"],
            "'p9.mega' is not a GPU instance type",
        ),
        (["run", "imdb", "--region", "us-west-2"], "--region prices --instance-type"),
        (
            ["run", "imdb", "--instance-type", "g5.xlarge", "--region", "Virginia"],
            "--region 'Virginia' is not an EC2 region (botocore knows",
        ),
        (
            ["run", "imdb", "--synthetic", "--cache-dir", "/proc/nope"],
            "cannot write the cache to /proc/nope",
        ),
        (["run", "imdb", "--mode", "turbo"], "invalid choice: 'turbo'"),
        (["run", "imdb", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["report", "tests/data/results", "--out", "/proc/nope"], "cannot write the report to"),
        (["compare", "/nonexistent/a", "/nonexistent/b"], "no dlbench results"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    args, message, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(*args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_cache_dir_under_a_file_is_refused(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run_main("run", "imdb", "--synthetic", "--cache-dir", str(blocker / "cache")) == 2
    assert f"cannot write the cache to {blocker / 'cache'} (Not a directory)" in (
        capsys.readouterr().err
    )


def test_output_that_is_a_folder_is_refused(tmp_path: Path, capsys) -> None:
    assert run_main("run", "imdb", "--synthetic", "--output", str(tmp_path)) == 2
    assert f"--output {tmp_path} is a folder" in capsys.readouterr().err


def test_a_backend_that_is_not_installed_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(backends, "installed", lambda name: name != "jax")
    assert run_main("run", "imdb", "--synthetic", "--backend", "jax") == 2
    assert "the jax backend is not installed here: pip install 'dlstation[jax]'" in (
        capsys.readouterr().err
    )


def test_bad_input_from_the_shell_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    """The real executable: refused before any work (no result file, no worker), exit 2."""
    done = dlbench("run", "reuters", "--seed", "-5", "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dlbench run: error: argument --seed: must be from 0 to 2**32-1 (4294967295), got -5 "
        "(see dlbench run --help)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_corrupt_npz_is_refused_with_hash_message(small_data_dir: Path, capsys) -> None:
    assert run_main("run", "reuters", "--data-dir", str(small_data_dir)) == 2
    err = capsys.readouterr().err
    assert "reuters.npz is corrupt or not Keras's file" in err
    assert "expected d6586e69" in err


def test_unwritable_output_dir(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run_main("run", "imdb", "--synthetic", "--out", str(blocker / "results")) == 2
    assert "cannot write results to" in capsys.readouterr().err


def start_run(out: Path, cache: Path) -> subprocess.Popen[str]:
    return start(
        dlbench_argv(
            "run", "reuters", "--synthetic", "--epochs", "200", "--out", str(out), cache=cache
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 143)]
)
def test_signal_leaves_a_valid_incomplete_result(tmp_path: Path, signum: int, code: int) -> None:
    process = start_run(tmp_path / "out", tmp_path / "cache")
    path = wait_for_epochs(tmp_path / "out" / "*.json", 2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code
    assert f"interrupted by {signal.Signals(signum).name}; partial result saved" in err
    document = results.load(path)
    assert document["status"] == "incomplete"
    assert document["incomplete_reason"] == f"interrupted by {signal.Signals(signum).name}"
    run = document["runs"][0]
    assert run["status"] == "incomplete"
    assert 2 <= len(run["epochs"]) < 200
    assert [e["epoch"] for e in run["epochs"]] == list(range(1, len(run["epochs"]) + 1))


@pytest.mark.slow
def test_sigkill_still_leaves_a_valid_file(tmp_path: Path) -> None:
    process = start_run(tmp_path / "out", tmp_path / "cache")
    path = wait_for_epochs(tmp_path / "out" / "*.json", 2)
    process.kill()
    process.communicate(timeout=30)
    document = results.load(path)
    assert document["status"] == "incomplete"
    assert len(document["runs"][0]["epochs"]) >= 2


@pytest.mark.slow
def test_synthetic_run_reports_no_accuracy(tmp_path: Path) -> None:
    done = dlbench(
        "run",
        "reuters",
        "--synthetic",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr
    assert "n/a (synthetic)" in done.stdout
    document = results.load(next(tmp_path.glob("*.json")))
    run: Mapping[str, Any] = document["runs"][0]
    assert run["data"]["source"] == "synthetic"
    assert set(run["timing"]) <= set(results.Timing.__annotations__), "the typed record lags"
    assert run["test"] is None
    assert run["target"] is None
    assert document["settings"]["synthetic"] is True


@pytest.mark.slow
@pytest.mark.realdata
def test_text_workloads_on_real_data_reach_the_texts_accuracy(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """Both workloads, 20 epochs, TensorFlow on the CPU: the text's accuracy band."""
    out = tmp_path / "result.json"
    done = dlbench(
        "run",
        "--data-dir",
        str(real_data_dir),
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    document = results.load(out)
    assert document["status"] == "complete"
    runs: dict[str, Mapping[str, Any]] = {r["workload"]: r for r in document["runs"]}
    assert runs["imdb"]["test"]["accuracy"] >= 0.84
    assert runs["reuters"]["test"]["accuracy"] >= 0.76
    for run in runs.values():
        assert len(run["epochs"]) == 20
        assert run["definition"]["epochs"] == 20 and run["definition"]["batch_size"] == 512
        assert run["backend"]["name"] == "tensorflow"
        assert run["backend"]["device_type"] == "CPU"
        assert run["data"]["source"] == "keras" and not run["data"]["cache_hit"]
        assert run["throughput"]["steady_samples_per_s"] > 0
        assert run["peak_rss_mb"] > 0
    assert runs["imdb"]["data"]["train_samples"] == 15_000
    assert runs["imdb"]["data"]["test_samples"] == 25_000
    assert runs["reuters"]["data"]["train_samples"] == 7_982
    assert runs["reuters"]["data"]["test_samples"] == 2_246
    assert runs["imdb"]["target"]["reached_epoch"] is not None
    assert "imdb" in done.stdout and "test acc" in done.stdout  # the summary table


@pytest.mark.slow
@pytest.mark.realdata
def test_second_run_reads_the_encode_cache_and_a_truncated_one_is_rebuilt(
    real_data_dir: Path, tmp_path: Path
) -> None:
    env = {"DLSTATION_DATA_DIR": str(real_data_dir), "DLSTATION_CACHE_DIR": str(tmp_path / "cache")}
    for attempt, expected_hit in enumerate((False, True, False)):
        if attempt == 2:
            (cached,) = (tmp_path / "cache" / "encoded").glob("reuters-*.npz")
            cached.write_bytes(cached.read_bytes()[:100_000])
        out = tmp_path / f"r-{attempt}.json"
        done = dlbench("run", "reuters", "--epochs", "1", "--output", str(out), "--quiet", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(out)
        data = results.load(out)["runs"][0]["data"]
        assert data is not None and data["cache_hit"] is expected_hit
    assert f"dlbench: encode cache {cached} was unreadable" in done.stderr
    assert "rebuilding it" in done.stderr


@pytest.mark.slow
def test_repeats_each_in_its_own_process_with_spread(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = dlbench(
        "run",
        "reuters",
        "--synthetic",
        "--epochs",
        "2",
        "--repeats",
        "2",
        "--output",
        str(out),
        "--seed",
        "7",
    )
    assert done.returncode == 0, done.stderr
    document = results.load(out)
    assert [r["definition"]["seed"] for r in document["runs"]] == [7, 8]
    assert document["summary"]["reuters"]["steady_epoch_s"]["n"] == 2


# Stops a Python process inside the import of one module until a signal comes: sitecustomize
# installs a finder that says "ready" (a file), then blocks opening a FIFO nobody writes.
HOLD_IN_IMPORT = """import os, sys
class _Hold:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["DLSTATION_TEST_HOLD_MODULE"]:
            sys.meta_path.remove(self)
            open(os.environ["DLSTATION_TEST_READY"], "w").close()
            os.open(os.environ["DLSTATION_TEST_FIFO"], os.O_RDONLY)
        return None
sys.meta_path.insert(0, _Hold())
"""


@pytest.mark.parametrize(
    "entry",
    [("bench", "dlbench", "bench.cli"), ("cloud", "dlcloud", "cloud.cli")],
    ids=["dlbench", "dlcloud"],
)
@pytest.mark.parametrize(
    "stop",
    [
        (signal.SIGINT, 130, "interrupted while starting"),
        (signal.SIGTERM, 143, "stopped by SIGTERM while starting"),
        (signal.SIGHUP, 143, "stopped by SIGHUP while starting"),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_signal_while_the_command_loads_is_one_line_and_the_tables_code(
    tmp_path: Path, entry: tuple[str, str, str], stop: tuple[int, int, str]
) -> None:
    package, command, module = entry
    signum, code, said = stop
    (tmp_path / "sitecustomize.py").write_text(HOLD_IN_IMPORT)
    os.mkfifo(tmp_path / "fifo")
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}:{REPO}",
        "DLSTATION_TEST_HOLD_MODULE": module,
        "DLSTATION_TEST_READY": str(ready),
        "DLSTATION_TEST_FIFO": str(tmp_path / "fifo"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", package, "--help"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate(timeout=30)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert err == f"{command}: {said}\n"
    assert out == ""
