"""bench/app.py, the one layer under `dlbench` and `bench.api`: both get the same checks."""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bench import api, app, cli
from bench.training import backends

BACKEND = next((b for b in ("jax", "tensorflow", "torch") if backends.installed(b)), "jax")


@pytest.mark.realdata
def test_the_shell_and_python_build_the_same_keras_home(
    real_data_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    request = app.RunRequest(
        workloads=("imdb", "reuters"),
        backend=BACKEND,
        data_dir=str(real_data_dir),
        cache_dir=str(cache),
        out=str(tmp_path / "out"),
    )
    home = app.prepare_run(request).plan.keras_home
    assert home is not None and home == api.keras_home(str(real_data_dir), str(cache))
    for name in ("imdb_word_index.json", "reuters_word_index.json"):
        copy = home / "datasets" / name
        assert copy.is_file() and not copy.is_symlink()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (app.RunRequest(workloads=("nosuch",), backend=BACKEND), "nosuch"),
        (app.RunRequest(backend=BACKEND, seed=2**32 - 1, repeats=2), "runs past 2\\*\\*32-1"),
        (app.RunRequest(backend="torch", mode="compiled"), "--mode compiled"),
        (app.RunRequest(backend=BACKEND, prices=app.Prices(region="us-east-1")), "--region"),
    ],
)
def test_bad_input_is_one_usage_error_before_any_work(
    request_: app.RunRequest, message: str
) -> None:
    with pytest.raises(app.UsageError, match=message):
        app.prepare_run(request_)


def test_python_gets_the_same_usage_error_as_the_shell() -> None:
    assert api.UsageError is app.UsageError
    with pytest.raises(api.UsageError, match="nosuch"):
        api.run("nosuch", BACKEND, synthetic=True)


def test_a_result_file_is_named_for_host_backend_mode_and_time(tmp_path: Path) -> None:
    request = app.RunRequest(backend="jax", mode="compiled", out=str(tmp_path))
    path = app.output_path(request, now=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    host = socket.gethostname()
    assert path == tmp_path.resolve() / f"dlbench-{host}-jax-compiled-20260102T030405Z.json"
    with pytest.raises(app.UsageError, match="is a folder"):
        app.output_path(app.RunRequest(output=str(tmp_path)))


def test_the_cli_passes_its_options_as_values_and_does_no_work_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def prepare(request: app.RunRequest) -> str:
        seen["request"] = request
        return "prepared"

    def run(prepared: str, command: list[str], progress: object) -> tuple[int, None]:
        seen["run"] = (prepared, command)
        return 0, None

    monkeypatch.setattr(app, "prepare_run", prepare)
    monkeypatch.setattr(app, "run", run)
    argv = ["run", "reuters", "--epochs", "2", "--seed", "7", "--synthetic", "--no-imds"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    request = seen["request"]
    assert (request.workloads, request.epochs, request.seed, request.synthetic) == (
        ("reuters",),
        2,
        7,
        True,
    )
    assert request.prices == app.Prices(ask_imds=False) and request.out == str(tmp_path)
    assert seen["run"] == ("prepared", ["dlbench", *argv, "--out", str(tmp_path)])
