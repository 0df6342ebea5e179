"""Shared fixtures: small Keras-format data files, the real data folder, CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# In-process Keras (data loader tests) uses the default backend; workers set their own.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests read the packaged price catalog, never a user's refreshed copy.
os.environ["DLSTATION_CATALOG"] = str(REPO / "tests" / "no-user-catalog.json")


def write_keras_npz(path: Path, dataset: str, samples: int, num_words: int, seed: int = 0) -> None:
    """A small file laid out as Keras's imdb.npz / reuters.npz: ragged lists of word indices."""
    rng = np.random.default_rng(seed)

    def sequences(n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = [1, *rng.integers(2, num_words * 2, size=rng.integers(3, 30)).tolist()]
        return out

    if dataset == "imdb":
        np.savez(
            path,
            x_train=sequences(samples),
            y_train=rng.integers(0, 2, samples),
            x_test=sequences(samples),
            y_test=rng.integers(0, 2, samples),
        )
    else:
        np.savez(path, x=sequences(samples), y=rng.integers(0, 46, samples))


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Path:
    """A folder holding small imdb.npz and reuters.npz in Keras's format."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_keras_npz(folder / "imdb.npz", "imdb", samples=60, num_words=50)
    write_keras_npz(folder / "reuters.npz", "reuters", samples=150, num_words=50)
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real files: $DLSTATION_DATA_DIR or ../shared/datasets. Missing is a failure."""
    candidates = [os.environ.get("DLSTATION_DATA_DIR"), str(REPO.parent / "shared" / "datasets")]
    for candidate in filter(None, candidates):
        folder = Path(candidate)
        if (folder / "imdb.npz").is_file() and (folder / "reuters.npz").is_file():
            return folder
    pytest.fail(
        "real data not found: set DLSTATION_DATA_DIR to a folder with Keras's imdb.npz and "
        "reuters.npz (CI has them in ../shared/datasets)"
    )


def dlbench(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the real dlbench executable as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        check=False,
    )
