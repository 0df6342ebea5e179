"""Locating, verifying, loading, encoding and caching the workloads' data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.training import data
from bench.training.workloads import WORKLOADS
from bench.training.workloads.spec import KerasDataFile, Workload


def vectorize_sequences_as_in_the_text(sequences, dimension):
    results = np.zeros((len(sequences), dimension))
    for i, sequence in enumerate(sequences):
        for j in sequence:
            results[i, j] = 1.0
    return results


def test_multi_hot_equals_the_texts_loop() -> None:
    rng = np.random.default_rng(1)
    sequences = [rng.integers(0, 100, size=rng.integers(0, 40)).tolist() for _ in range(300)]
    sequences[5] = []  # an empty review must stay a zero row
    np.testing.assert_array_equal(
        data.multi_hot(sequences, 100), vectorize_sequences_as_in_the_text(sequences, 100)
    )


def test_one_hot_labels_like_to_categorical() -> None:
    labels = data.encode_labels(np.array([0, 3, 45]), WORKLOADS["reuters"])
    assert labels.shape == (3, 46)
    assert labels.dtype == np.float32
    assert labels.argmax(axis=1).tolist() == [0, 3, 45]
    assert labels.sum() == 3


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_unpack_matches_unpackbits_across_chunks(dtype: str) -> None:
    rng = np.random.default_rng(2)
    dense = (rng.random((1000, 77)) < 0.1).astype(np.uint8)
    packed = np.packbits(dense, axis=1)
    out = data.unpack(packed, 77, dtype, rows_per_chunk=64)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, dense)


def test_cache_round_trip_and_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    cache = data.EncodedCache(tmp_path)
    workload = WORKLOADS["reuters"]
    path = cache.path_for(workload, "ab" * 32)
    arrays: dict[str, np.ndarray] = {
        "x_train": (np.random.default_rng(3).random((20, 10_000)) < 0.01).astype(np.uint8),
        "x_test": np.zeros((5, 10_000), dtype=np.uint8),
        "labels_train": np.arange(20),
        "labels_test": np.arange(5),
    }
    cache.store(path, arrays)
    loaded = cache.load(path, 10_000)
    assert loaded is not None
    np.testing.assert_array_equal(loaded["x_train"], arrays["x_train"])
    np.testing.assert_array_equal(loaded["labels_test"], arrays["labels_test"])
    path.write_bytes(b"not an npz")
    assert cache.load(path, 10_000) is None


def stored_cache(tmp_path: Path) -> tuple[data.EncodedCache, Path]:
    cache = data.EncodedCache(tmp_path)
    path = cache.path_for(WORKLOADS["reuters"], "cd" * 32)
    cache.store(
        path,
        {
            "x_train": np.ones((40, 10_000), dtype=np.uint8),
            "x_test": np.zeros((8, 10_000), dtype=np.uint8),
            "labels_train": np.arange(40),
            "labels_test": np.arange(8),
        },
    )
    return cache, path


def flip_a_byte_in_the_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a zip file"),
        (flip_a_byte_in_the_middle, "Bad CRC"),
        (lambda p: p.write_bytes(b""), "not a zip file"),
    ],
)
def test_unreadable_cache_is_removed_with_one_line(
    tmp_path: Path, damage, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, path = stored_cache(tmp_path)
    assert cache.check(path) is None, "a sound file passes"
    damage(path)
    note = cache.check(path)
    assert note is not None and "was unreadable" in note and "rebuilding it" in note
    assert why.lower() in note.lower()
    assert not path.exists()
    assert capsys.readouterr().err.strip().splitlines() == [f"dlbench: {note}"]
    assert cache.check(path) is None, "absent is a plain miss"


def test_truncated_cache_is_rebuilt_by_the_next_load(tmp_path: Path) -> None:
    """The corrupt-cache report: a truncated .npz is a miss, rebuilt, and read the time after."""
    workload = dataclasses.replace(WORKLOADS["reuters"], num_words=50, validation_samples=5)
    calls = []

    def loader(w: Workload):
        calls.append(w.name)
        rng = np.random.default_rng(1)
        sequences = [list(rng.integers(1, 50, size=8)) for _ in range(28)]
        labels = rng.integers(0, 46, size=28)
        return (sequences[:20], labels[:20]), (sequences[20:], labels[20:])

    first = data.load_real(workload, tmp_path, loader=loader)
    cache_path = Path(first.provenance["cache_path"])
    cache_path.write_bytes(cache_path.read_bytes()[:300])
    second = data.load_real(workload, tmp_path, loader=loader)
    assert calls == ["reuters", "reuters"]
    assert not second.provenance["cache_hit"]
    assert "was unreadable" in second.provenance["cache_rebuilt_because"]
    np.testing.assert_array_equal(second.x_train, first.x_train)
    third = data.load_real(workload, tmp_path, loader=loader)
    assert third.provenance["cache_hit"] and "cache_rebuilt_because" not in third.provenance
    assert len(calls) == 2


def test_check_encode_cache_looks_where_load_real_reads(tmp_path: Path) -> None:
    workload = WORKLOADS["imdb"]
    path = data.EncodedCache(tmp_path).path_for(workload, workload.data_file.sha256)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    assert "was unreadable" in str(data.check_encode_cache(workload, tmp_path))
    assert not path.exists()


def test_cache_key_changes_with_file_hash_and_num_words(tmp_path: Path) -> None:
    cache = data.EncodedCache(tmp_path)
    imdb = WORKLOADS["imdb"]
    keys = {
        cache.path_for(imdb, "a" * 64),
        cache.path_for(imdb, "b" * 64),
        cache.path_for(dataclasses.replace(imdb, num_words=5000), "a" * 64),
    }
    assert len(keys) == 3


@pytest.mark.parametrize("name", [pytest.param("imdb", marks=pytest.mark.slow), "reuters"])
def test_synthetic_data_has_real_shapes_and_sparsity(name: str) -> None:
    workload = WORKLOADS[name]
    loaded = data.load_synthetic(workload, seed=0)
    assert len(loaded.x_train) + len(loaded.x_val) == workload.synthetic_train_samples
    assert len(loaded.x_val) == workload.validation_samples
    assert loaded.x_test.shape == (workload.synthetic_test_samples, workload.num_words)
    words = loaded.x_train.sum(axis=1).mean()
    # Collisions of skewed draws make rows a little sparser than asked; within a fifth is the bar.
    assert 0.8 * workload.synthetic_words_per_sample <= words <= workload.synthetic_words_per_sample
    assert loaded.provenance["source"] == "synthetic"


def test_verify_data_file_names_the_problem(small_data_dir: Path, tmp_path: Path) -> None:
    workload = WORKLOADS["imdb"]
    with pytest.raises(data.DataError, match="does not exist"):
        data.verify_data_file(workload, tmp_path / "nowhere")
    with pytest.raises(data.DataError, match=r"imdb.npz not found in .*copy Keras's imdb.npz"):
        data.verify_data_file(workload, tmp_path)
    with pytest.raises(data.DataError, match=r"corrupt or not Keras's file .*expected 69664113"):
        data.verify_data_file(workload, small_data_dir)


def test_truncated_real_file_is_refused(real_data_dir: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "reuters.npz"
    truncated.write_bytes((real_data_dir / "reuters.npz").read_bytes()[:100_000])
    with pytest.raises(data.DataError, match="100,000 bytes"):
        data.verify_data_file(WORKLOADS["reuters"], tmp_path)


def small_workload(name: str, data_dir: Path) -> Workload:
    base = WORKLOADS[name]
    sha = data.sha256_of(data_dir / base.data_file.name)
    return dataclasses.replace(
        base,
        data_file=KerasDataFile(base.data_file.name, sha),
        num_words=50,
        validation_samples=10,
    )


@pytest.mark.parametrize("name", [pytest.param("imdb", marks=pytest.mark.slow), "reuters"])
def test_load_through_keras_loader_then_from_cache(
    name: str, small_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras's real load_data reads our linked file; only its built-in hash is swapped for ours."""
    import keras.src.backend.config as keras_config

    module = __import__(f"keras.src.datasets.{name}", fromlist=["get_file"])
    workload = small_workload(name, small_data_dir)
    path = data.verify_data_file(workload, small_data_dir)
    keras_home = data.prepare_keras_home(path, tmp_path / "cache")
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(keras_home))
    real_get_file = module.get_file

    def get_file_with_test_hash(*args, **kwargs):
        kwargs["file_hash"] = workload.data_file.sha256
        return real_get_file(*args, **kwargs)

    monkeypatch.setattr(module, "get_file", get_file_with_test_hash)

    first = data.load_real(workload, tmp_path / "cache")
    assert not first.provenance["cache_hit"]
    assert first.x_train.shape[1] == 50
    assert len(first.x_val) == 10
    assert set(np.unique(first.x_train)) <= {0.0, 1.0}
    assert first.x_train[:, 1].all(), "Keras prepends start token 1 to every sample"
    assert first.x_train[:, 0].sum() == 0, "index 0 is padding and never a word"

    def no_loader(workload: Workload) -> None:
        raise AssertionError("the cache should have been used")

    second = data.load_real(workload, tmp_path / "cache", loader=no_loader)  # type: ignore[arg-type]
    assert second.provenance["cache_hit"]
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)


def test_keras_failure_becomes_data_error(tmp_path: Path) -> None:
    def offline(workload: Workload):
        raise data.DataError("no network")

    with pytest.raises(data.DataError, match="no network"):
        data.load_real(WORKLOADS["imdb"], tmp_path, loader=offline)


def test_resolve_data_dir_prefers_flag_over_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert data.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir(None) is None
