"""The workloads' data: Keras's own files and loaders, the encode cache, synthetic stand-ins.

Real data always goes through `keras.datasets.<name>.load_data`, which checks the file's hash.
We check the same hash first, because on a hash mismatch Keras re-downloads *over* the cached
path, and that path is a link to the user's own copy.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.training.workloads.spec import Workload

DATA_DIR_ENV = "DLSTATION_DATA_DIR"
CACHE_DIR_ENV = "DLSTATION_CACHE_DIR"
# Bump when the cached arrays change meaning, so old caches are not read.
ENCODING_VERSION = 1
_HASH_CHUNK = 1 << 20
_CACHED_ARRAYS = ("x_train", "x_test", "labels_train", "labels_test")
# What reading a truncated, corrupt or foreign .npz raises: each means "rebuild it".
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


class DataError(RuntimeError):
    """Data is missing, corrupt or unreachable; the message says which file and what to do."""


@dataclass
class WorkloadData:
    """The arrays a workload trains, validates and tests on, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)


def resolve_data_dir(cli_value: str | None) -> Path | None:
    """Keras's files: --data-dir, else $DLSTATION_DATA_DIR, else None (Keras's own cache)."""
    value = cli_value or os.environ.get(DATA_DIR_ENV) or None
    return Path(value).expanduser().resolve() if value else None


def resolve_cache_dir(cli_value: str | None) -> Path:
    """Where encoded arrays and the private Keras home live; a temp folder if none is writable."""
    if cli_value or os.environ.get(CACHE_DIR_ENV):
        return Path(cli_value or os.environ[CACHE_DIR_ENV]).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidate = Path(xdg) / "dlstation"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path(tempfile.gettempdir()) / "dlstation-cache"
    if os.access(candidate, os.W_OK):
        return candidate
    return Path(tempfile.gettempdir()) / "dlstation-cache"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_data_file(workload: Workload, data_dir: Path) -> Path:
    """The workload's file in data_dir, or DataError naming what is wrong and the fix."""
    expected = workload.data_file
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist; point --data-dir (or ${DATA_DIR_ENV}) "
            f"at a folder holding Keras's {expected.name}, or unset both to use Keras's download"
        )
    path = data_dir / expected.name
    if not path.is_file():
        raise DataError(
            f"{expected.name} not found in {data_dir}; copy Keras's {expected.name} there "
            f"(sha256 {expected.sha256}), or unset --data-dir/${DATA_DIR_ENV} to let Keras fetch it"
        )
    actual = sha256_of(path)
    if actual != expected.sha256:
        raise DataError(
            f"{path} is corrupt or not Keras's file ({path.stat().st_size:,} bytes, "
            f"sha256 {actual}, expected {expected.sha256}); replace it with Keras's {expected.name}"
        )
    return path


def prepare_keras_home(data_file: Path, cache_dir: Path) -> Path:
    """A private KERAS_HOME whose datasets/ links to the verified file, for Keras's loader.

    Safe for runs that start together on a fresh cache: the link is made under a name of its
    own and renamed into place, so no run sees a half-made link or a FileExistsError.
    """
    keras_home = cache_dir / "keras_home"
    datasets = keras_home / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    link = datasets / data_file.name
    if link.is_symlink() and link.resolve() == data_file.resolve():
        return keras_home
    staged = datasets / f".{data_file.name}.{os.getpid()}.link"
    staged.unlink(missing_ok=True)
    staged.symlink_to(data_file)
    try:
        staged.replace(link)
    except OSError:
        staged.unlink(missing_ok=True)
        raise
    return keras_home


def multi_hot(sequences: Sequence[Sequence[int]], num_words: int) -> np.ndarray:
    """The text's vectorize_sequences as one numpy scatter: row i has 1 at each word index of i."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    words = np.fromiter(
        itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum())
    )
    rows = np.repeat(np.arange(len(sequences)), lengths)
    encoded = np.zeros((len(sequences), num_words), dtype=np.uint8)
    encoded[rows, words] = 1
    return encoded


def encode_labels(labels: np.ndarray, workload: Workload) -> np.ndarray:
    """Binary labels as float32, topic labels one-hot (the text's to_categorical)."""
    labels = np.asarray(labels)
    if workload.labels == "binary":
        return labels.astype("float32")
    return np.eye(workload.output_units, dtype="float32")[labels]


def unpack(
    packed: np.ndarray, num_words: int, dtype: str = "float32", rows_per_chunk: int = 2048
) -> np.ndarray:
    """Bit-packed rows to 0/1 of `dtype`; float32 a chunk at a time, to avoid a big temporary."""
    if np.dtype(dtype) == np.uint8:
        return np.unpackbits(packed, axis=1, count=num_words)
    out = np.empty((packed.shape[0], num_words), dtype=dtype)
    for start in range(0, packed.shape[0], rows_per_chunk):
        chunk = packed[start : start + rows_per_chunk]
        out[start : start + rows_per_chunk] = np.unpackbits(chunk, axis=1, count=num_words)
    return out


class EncodedCache:
    """Multi-hot matrices, bit-packed (32x smaller than float32), keyed by file hash and params."""

    def __init__(self, cache_dir: Path) -> None:
        self.folder = cache_dir / "encoded"
        self.rebuilt_because: str | None = None

    def path_for(self, workload: Workload, source_sha256: str) -> Path:
        key = f"{workload.dataset}-{source_sha256[:16]}-w{workload.num_words}-v{ENCODING_VERSION}"
        return self.folder / f"{key}.npz"

    def load(
        self, path: Path, num_words: int, dtype: str = "float32"
    ) -> dict[str, np.ndarray] | None:
        """The cached arrays (inputs already of `dtype`), or None when absent or unreadable."""
        self.rebuilt_because = None
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return {
                    "x_train": unpack(stored["x_train"], num_words, dtype),
                    "x_test": unpack(stored["x_test"], num_words, dtype),
                    "labels_train": stored["labels_train"],
                    "labels_test": stored["labels_test"],
                }
        except _UNREADABLE as error:
            self.rebuilt_because = self.discard(path, error)
            return None

    def check(self, path: Path) -> str | None:
        """Read the whole file (CRCs included) without decoding; an unreadable one is removed.

        Returns the one line saying so, or None when the file is absent or sound.
        """
        if not path.is_file():
            return None
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                names = {name.removesuffix(".npy") for name in archive.namelist()}
            if bad is not None:
                raise zipfile.BadZipFile(f"bad CRC in {bad}")
            if absent := [name for name in _CACHED_ARRAYS if name not in names]:
                raise KeyError(f"no {', '.join(absent)}")
        except _UNREADABLE as error:
            return self.discard(path, error)
        return None

    def discard(self, path: Path, error: BaseException) -> str:
        """Remove an unreadable cache file (it is rebuilt); the line that says so, also printed."""
        path.unlink(missing_ok=True)
        note = f"encode cache {path} was unreadable ({error}); rebuilding it"
        print(f"dlbench: {note}", file=sys.stderr)
        return note

    def store(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically; a cache we cannot write only costs time, so failures are ignored."""
        tmp: Path | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.folder, prefix=f".{path.stem}.", suffix=".tmp", delete=False
            ) as handle:
                tmp = Path(handle.name)
                np.savez(
                    handle,
                    x_train=np.packbits(arrays["x_train"], axis=1),
                    x_test=np.packbits(arrays["x_test"], axis=1),
                    labels_train=arrays["labels_train"],
                    labels_test=arrays["labels_test"],
                )
            tmp.replace(path)
        except BaseException as error:
            # A partial file would stay forever, one more after each failed run.
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if not isinstance(error, OSError):
                raise


def check_encode_cache(workload: Workload, cache_dir: Path) -> str | None:
    """Before a run: remove the workload's cache file if it cannot be read (a miss, rebuilt)."""
    cache = EncodedCache(cache_dir)
    return cache.check(cache.path_for(workload, workload.data_file.sha256))


KerasLoader = Callable[[Workload], tuple[tuple[Any, Any], tuple[Any, Any]]]


def keras_loader(workload: Workload) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """keras.datasets.<dataset>.load_data(num_words=...), its failures turned into DataError."""
    import keras

    module = getattr(keras.datasets, workload.dataset)
    try:
        result: tuple[tuple[Any, Any], tuple[Any, Any]] = module.load_data(
            num_words=workload.num_words
        )
    except Exception as error:
        raise DataError(
            f"Keras could not load {workload.data_file.name} ({error}); without network access, "
            f"pass --data-dir (or set ${DATA_DIR_ENV}) to a folder holding Keras's "
            f"{workload.data_file.name}"
        ) from error
    return result


def load_real(
    workload: Workload,
    cache_dir: Path,
    loader: KerasLoader = keras_loader,
    dtype: str = "float32",
) -> WorkloadData:
    """Encoded arrays from the cache, or from Keras's loader (then cached).

    Inputs are float32 as the text builds them; the compiled mode asks for uint8 (the same
    0/1 values in a quarter of the memory), converted on the device.
    """
    started = time.perf_counter()
    cache = EncodedCache(cache_dir)
    cache_path = cache.path_for(workload, workload.data_file.sha256)
    arrays = cache.load(cache_path, workload.num_words, dtype)
    cache_hit = arrays is not None
    encode_s = 0.0
    if arrays is None:
        (train_seqs, labels_train), (test_seqs, labels_test) = loader(workload)
        encode_started = time.perf_counter()
        arrays = {
            "x_train": multi_hot(train_seqs, workload.num_words),
            "x_test": multi_hot(test_seqs, workload.num_words),
            "labels_train": np.asarray(labels_train),
            "labels_test": np.asarray(labels_test),
        }
        encode_s = time.perf_counter() - encode_started
        cache.store(cache_path, arrays)
    data = split(workload, arrays, dtype)
    data.provenance = {
        **({"cache_rebuilt_because": cache.rebuilt_because} if cache.rebuilt_because else {}),
        "source": "keras",
        "input_dtype": dtype,
        "file": workload.data_file.name,
        "sha256": workload.data_file.sha256,
        "cache_hit": cache_hit,
        "cache_path": str(cache_path),
        "encode_s": encode_s,
        "load_s": time.perf_counter() - started,
    }
    return data


def split(
    workload: Workload, arrays: dict[str, np.ndarray], dtype: str = "float32"
) -> WorkloadData:
    """Inputs of `dtype`; the first N training samples become validation."""
    # astype copies nothing when the cache already produced that dtype.
    x_train = arrays["x_train"].astype(dtype, copy=False)
    x_test = arrays["x_test"].astype(dtype, copy=False)
    y_train = encode_labels(arrays["labels_train"], workload)
    y_test = encode_labels(arrays["labels_test"], workload)
    n_val = workload.validation_samples
    if n_val >= len(x_train):
        raise DataError(
            f"{workload.name}: {len(x_train)} training samples cannot hold {n_val} for validation"
        )
    return WorkloadData(
        x_train=x_train[n_val:],
        y_train=y_train[n_val:],
        x_val=x_train[:n_val],
        y_val=y_train[:n_val],
        x_test=x_test,
        y_test=y_test,
    )


def synthetic_arrays(workload: Workload, seed: int) -> dict[str, np.ndarray]:
    """Random multi-hot data with the real data's shapes and words per sample; labels are noise."""
    rng = np.random.default_rng(seed)

    def matrix(samples: int) -> np.ndarray:
        # Word frequencies in text fall off steeply; cubing a uniform draw skews indices low alike.
        draws = int(samples * workload.synthetic_words_per_sample)
        words = (rng.random(draws) ** 3 * workload.num_words).astype(np.int64)
        rows = rng.integers(0, samples, size=draws)
        encoded = np.zeros((samples, workload.num_words), dtype=np.uint8)
        encoded[rows, words] = 1
        return encoded

    classes = 2 if workload.labels == "binary" else workload.output_units
    return {
        "x_train": matrix(workload.synthetic_train_samples),
        "x_test": matrix(workload.synthetic_test_samples),
        "labels_train": rng.integers(0, classes, size=workload.synthetic_train_samples),
        "labels_test": rng.integers(0, classes, size=workload.synthetic_test_samples),
    }


def load_synthetic(workload: Workload, seed: int, dtype: str = "float32") -> WorkloadData:
    """Throughput-only stand-in data; accuracy on it means nothing and is not reported."""
    started = time.perf_counter()
    data = split(workload, synthetic_arrays(workload, seed), dtype)
    data.provenance = {
        "source": "synthetic",
        "seed": seed,
        "words_per_sample": workload.synthetic_words_per_sample,
        "cache_hit": False,
        "load_s": time.perf_counter() - started,
    }
    return data
