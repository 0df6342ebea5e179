"""bench.api's data folder and runtime report, as the notebooks' first cells use them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from bench import api
from bench.training import data


def test_keras_home_links_the_data_and_copies_the_word_indexes(
    real_data_dir: Path, tmp_path: Path
) -> None:
    home = api.keras_home(str(real_data_dir), str(tmp_path / "cache"))
    assert home == tmp_path / "cache" / "keras_home"
    for name in ("imdb.npz", "reuters.npz"):
        link = home / "datasets" / name
        assert link.is_symlink() and link.resolve() == (real_data_dir / name).resolve()
    for name in ("imdb_word_index.json", "reuters_word_index.json"):
        copy = home / "datasets" / name
        assert not copy.is_symlink(), "a Keras re-download must not write through to the user's"
        assert copy.read_bytes() == (real_data_dir / name).read_bytes()


def test_keras_home_is_none_without_a_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert api.keras_home() is None


def test_a_corrupt_data_file_is_named_with_the_fix(real_data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "datasets"
    folder.mkdir()
    shutil.copy(real_data_dir / "imdb.npz", folder / "imdb.npz")
    (folder / "reuters.npz").write_bytes(b"not keras's file")
    with pytest.raises(api.UsageError, match=r"reuters\.npz is corrupt .* replace it"):
        api.keras_home(str(folder), str(tmp_path / "cache"))


def test_use_data_dir_sets_keras_home_before_keras_is_imported(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    # setenv first, so the value use_data_dir sets is undone after the test.
    monkeypatch.setenv(api.KERAS_HOME_ENV, "unset")
    monkeypatch.delenv(api.KERAS_HOME_ENV)
    home = api.use_data_dir(str(real_data_dir), str(tmp_path / "cache"))
    assert home is not None
    assert os.environ[api.KERAS_HOME_ENV] == str(home)


def test_use_data_dir_after_import_keras_says_to_restart(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "keras", object())
    monkeypatch.setenv(api.KERAS_HOME_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(api.UsageError, match="restart the kernel"):
        api.use_data_dir(str(real_data_dir), str(tmp_path / "cache"))


def test_the_runtime_summary_warns_when_a_gpu_sits_idle() -> None:
    runtime = api.Runtime(
        python="/opt/dlstation/venv/bin/python",
        keras_version="3.15.1",
        backend={
            "name": "tensorflow",
            "version": "2.21.0",
            "device_type": "CPU",
            "device_name": "CPU",
            "placement": "/device:CPU:0",
        },
        nvml_gpus=["NVIDIA H100 80GB HBM3"],
        nvml_reason=None,
        diagnosis={"problem": "a GPU is present", "cause": "CPU-only build", "fix": "pip install"},
    )
    summary = runtime.summary()
    assert "kernel:  /opt/dlstation/venv/bin/python" in summary
    assert "NVIDIA GPUs on this machine: NVIDIA H100 80GB HBM3" in summary
    assert "WARNING: a GPU is present." in summary
    assert "what to do: pip install; or pick the dlstation kernel" in summary


@pytest.mark.slow
def test_describe_runtime_asks_the_backend() -> None:
    runtime = api.describe_runtime()
    assert runtime.python == sys.executable
    assert runtime.backend["name"] == "tensorflow"
    assert runtime.backend["device_type"] in ("CPU", "GPU")
    assert "backend tensorflow" in runtime.summary()


def test_the_notebooks_ship_inside_the_package() -> None:
    names = sorted(path.name for path in api.notebooks_dir().glob("*.ipynb"))
    assert names == ["imdb.ipynb", "reuters.ipynb", "this-machine.ipynb"]
