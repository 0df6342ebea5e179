"""The result file: one JSON document per `dlbench run`, written atomically, checked by a schema."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import signal
import stat
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import jsonschema

SCHEMA_VERSION = 1
# Reading limits: a result is a few MB even with hours of GPU telemetry; deeper nesting or
# bigger numbers than these are never ours.
MAX_FILE_BYTES = 16 * 2**20
MAX_DEPTH = 64
MAX_INT = 2**63
# Spaces after each written document (JSON allows them): room for the failure mark that a full
# disk may later need to write over the file's own bytes (record_failure).
FAILURE_RESERVE = 1024
# Set (to 1) where every written result must be checked against the schema: the test suite.
VALIDATE_ENV = "DLSTATION_VALIDATE_RESULTS"
# The figures summarised across repeats, each a path into a run record.
SUMMARY_FIGURES: dict[str, tuple[str, ...]] = {
    "steady_samples_per_s": ("throughput", "steady_samples_per_s"),
    "steady_epoch_s": ("timing", "steady_epoch_s"),
    "first_epoch_s": ("timing", "first_epoch_s"),
    "end_to_end_s": ("timing", "end_to_end_s"),
    "test_accuracy": ("test", "accuracy"),
    "time_to_target_s": ("target", "reached_s"),
    "peak_rss_mb": ("peak_rss_mb",),
    "run_usd": ("cost", "run_usd"),
    "to_target_usd": ("cost", "to_target_usd"),
    "energy_j": ("energy_j",),
    "steady_gpu_util": ("steady_gpu_util",),
}


class EpochRequired(TypedDict):
    """The keys every epoch has (schema: $defs/epoch's required)."""

    epoch: int
    wall_s: float
    train_s: float
    val_s: float
    loss: float


class Epoch(EpochRequired, total=False):
    """One epoch as Keras's history reports it, with our clocks (schema: $defs/epoch)."""

    accuracy: float
    val_loss: float
    val_accuracy: float


class Timing(TypedDict, total=False):
    """Seconds per phase of a run; None where the run did not get that far."""

    interpreter_s: float | None
    import_s: float | None
    backend_start_s: float | None
    data_s: float | None
    build_s: float | None
    fit_setup_s: float | None
    first_epoch_s: float | None
    first_epoch_transfer_s: float | None
    first_epoch_trace_s: float | None
    first_epoch_compile_s: float | None
    first_epoch_run_s: float | None
    steady_epoch_s: float | None
    steady_train_s: float | None
    train_s: float | None
    eval_s: float | None
    result_write_s: float | None
    exit_s: float | None
    end_to_end_s: float | None


RunStatus = Literal["complete", "incomplete", "failed"]


class RunRequired(TypedDict):
    """The keys every run has (schema: $defs/run's required)."""

    workload: str
    repeat: int
    status: RunStatus
    definition: dict[str, Any]
    data: dict[str, Any] | None
    backend: dict[str, Any] | None
    timing: Timing
    throughput: dict[str, Any]
    epochs: list[Epoch]
    test: dict[str, float] | None
    target: dict[str, Any] | None
    phases: list[dict[str, Any]]
    peak_rss_mb: float | None
    telemetry: dict[str, Any] | None
    diagnosis: dict[str, str] | None
    cost: dict[str, Any] | None
    error: dict[str, Any] | None


class Run(RunRequired, total=False):
    """One training run in its own process (schema: $defs/run)."""

    options: dict[str, Any]
    evaluation: dict[str, Any]
    gpu_memory: dict[str, Any]
    parts: dict[str, float]  # the run's wall time in named parts that sum to end_to_end_s


class DocumentRequired(TypedDict):
    """The keys every result file has (schema: the top level's required)."""

    schema_version: int
    tool: Literal["dlbench"]
    dlstation_version: str
    git_commit: str | None
    created: str
    finished: str | None
    status: RunStatus
    incomplete_reason: str | None
    command: list[str]
    settings: dict[str, Any]
    host: dict[str, Any]
    gpus: list[dict[str, Any]]
    nvml: str | None
    pricing: dict[str, Any] | str | None
    runs: list[Run]
    summary: dict[str, dict[str, Any]]


class Document(DocumentRequired, total=False):
    """The whole result file (schema: the top level); code keys from hostinfo.describe_code()."""

    startup_s: float  # the command's own start: its process start to the first run's start


class ResultError(ValueError):
    """A file that is not a dlbench result, or of a schema version we cannot read."""


class ResultWriteError(OSError):
    """The result file could not be written (a full disk, a vanished folder); one line why."""


def machine_id(host: Mapping[str, Any], gpus: Sequence[Mapping[str, Any]]) -> str:
    """A stable id of the hardware: CPU model, core count, memory, GPU models and count.

    Not the hostname: every VM may be called `vm`. Memory is its nominal size (memory_class),
    so a kernel or firmware that reserves a little more does not make a new machine.
    """
    memory = host.get("memory_gb")
    facts = {
        "cpu_model": host.get("cpu_model"),
        "cpu_count": host.get("cpu_count"),
        "memory_gib": memory_class(memory) if isinstance(memory, int | float) else None,
        "gpus": sorted(str(g.get("name")) for g in gpus),
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
    return f"m-{digest[:10]}"


def memory_class(gib: float) -> float:
    """The nominal size nearest (by ratio) to the memory a machine reports: a power of two or
    1.5 times one (16, 24, 32, 48, ...). Reported memory is a few percent under nominal; the
    nearest neighbours are 33 % or more apart, so a small difference never changes the class."""
    if gib <= 0:
        return 0.0
    sizes = [base * 2.0**k for k in range(-4, 20) for base in (1.0, 1.5)]
    return min(sizes, key=lambda size: abs(math.log(gib / size)))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_document(
    command: list[str], settings: dict[str, Any], host: dict[str, Any], code: dict[str, Any]
) -> Document:
    """An empty result marked incomplete until the last run finishes."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "dlbench",
        "dlstation_version": code["dlstation_version"],
        "git_commit": code["git_commit"],
        "created": utc_now(),
        "finished": None,
        "status": "incomplete",
        "incomplete_reason": "running",
        "command": command,
        "settings": settings,
        "host": host,
        "gpus": [],
        "nvml": None,
        "pricing": None,
        "runs": [],
        "summary": {},
    }


def new_run(workload: str, repeat: int, definition: dict[str, Any]) -> Run:
    """A run record that is valid from its first moment, filled in as events arrive."""
    return {
        "workload": workload,
        "repeat": repeat,
        "status": "incomplete",
        "definition": definition,
        "data": None,
        "backend": None,
        "timing": {},
        "throughput": {},
        "epochs": [],
        "test": None,
        "target": None,
        "phases": [],
        "peak_rss_mb": None,
        "telemetry": None,
        "diagnosis": None,
        "cost": None,
        "error": None,
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def derive_figures(run: Run) -> None:
    """First epoch, steady state, time to target: computed from the epochs that finished."""
    epochs = run["epochs"]
    data = run["data"] or {}
    train_samples = data.get("train_samples")
    timing = run["timing"]
    timing["first_epoch_s"] = epochs[0]["wall_s"] if epochs else None
    steady = epochs[1:]
    timing["steady_epoch_s"] = _median([e["wall_s"] for e in steady])
    steady_train_s = _median([e["train_s"] for e in steady])
    timing["steady_train_s"] = steady_train_s
    timing["train_s"] = sum(e["wall_s"] for e in epochs) if epochs else None
    run["throughput"] = {
        "steady_samples_per_s": (
            train_samples / steady_train_s if train_samples and steady_train_s else None
        ),
        "first_epoch_samples_per_s": (
            train_samples / epochs[0]["train_s"] if train_samples and epochs else None
        ),
        "basis": "training samples / median training time of epochs 2..N (validation excluded)",
    }
    target = run["definition"]["target_accuracy"]
    if data.get("source") == "synthetic":
        run["target"] = None
        return
    reached_epoch, reached_s, elapsed = None, None, 0.0
    for epoch in epochs:
        elapsed += epoch["wall_s"]
        if epoch.get("val_accuracy", 0.0) >= target:
            reached_epoch, reached_s = epoch["epoch"], elapsed
            break
    run["target"] = {
        "metric": "val_accuracy",
        "value": target,
        "reached_epoch": reached_epoch,
        "reached_s": reached_s,
    }


def _dig(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def telemetry_figures(run: Mapping[str, Any]) -> dict[str, float | None]:
    """Energy of all GPUs, and GPU 0's mean utilisation over the steady epochs.

    The utilisation is None when fewer than two readings fell in the steady epochs (the
    compiled mode's 20 epochs can take less than one 0.2 s interval on a GPU): one reading of
    NVML's time-averaged figure would mostly describe the phase before.
    """
    telemetry = run.get("telemetry") or {}
    devices = telemetry.get("devices") or []
    energies = [d["energy_j"] for d in devices if d.get("energy_j") is not None]
    readings = [
        s["gpu_util"]
        for s in telemetry.get("samples") or []
        if s.get("gpu") == 0 and s.get("phase") == "steady_epochs" and s.get("gpu_util") is not None
    ]
    util = statistics.fmean(readings) if len(readings) >= 2 else None
    return {"energy_j": sum(energies) if energies else None, "steady_gpu_util": util}


def spread(values: list[float]) -> dict[str, Any]:
    """Median and range of a figure over repeats."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarize(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per workload, the spread of each figure over its complete runs."""
    summary: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(run["workload"] for run in runs):
        done = [r for r in runs if r["workload"] == name and r["status"] == "complete"]
        figures = {}
        enriched = [{**r, **telemetry_figures(r)} for r in done]
        for figure, path in SUMMARY_FIGURES.items():
            values = [
                v
                for v in (_dig(r, path) for r in enriched)
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            figures[figure] = spread([float(v) for v in values])
        summary[name] = figures
    return summary


# Called with the temp file's path once it holds the whole document, just before the rename:
# the one moment a signal or a crash could leave it behind (tests stop the run here).
BEFORE_RENAME: list[Callable[[Path], None]] = []


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, so a write is never cut in half."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def write_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file.

    A failed write removes its temp file and raises ResultWriteError; SIGINT and SIGTERM are
    held until the write is over. With $DLSTATION_VALIDATE_RESULTS=1 (the tests) a document
    that breaks the schema is refused.
    """
    if os.environ.get(VALIDATE_ENV) == "1":
        validate(document)
    text = json.dumps(document, indent=1, allow_nan=False)
    write_text_atomic(path, text + " " * FAILURE_RESERVE + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """write_atomic's temp file and rename, for text that is already a whole document."""
    umask = os.umask(0)
    os.umask(umask)
    with signals_held():
        tmp: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
            ) as handle:
                tmp = Path(handle.name)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.chmod(0o666 & ~umask)  # temp files are 0600; results are for sharing
            for hook in BEFORE_RENAME:
                hook(tmp)
            tmp.replace(path)
        except BaseException as error:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise ResultWriteError(
                    error.errno, f"cannot write {path}: {error.strerror or error}"
                ) from error
            raise


def mark_failed(document: Document, reason: str) -> None:
    """The document as a run that stopped for `reason`: failed, and so is each unfinished run."""
    document["status"] = "failed"
    document["incomplete_reason"] = reason
    document["finished"] = utc_now()
    for run in document["runs"]:
        if run["status"] == "incomplete":
            run["status"] = "failed"
            run["error"] = run["error"] or {"type": "ResultWriteError", "message": reason}
    document["summary"] = summarize(document["runs"])


def record_failure(path: Path, document: Document, reason: str) -> str:
    """On a full disk, mark path failed in its own bytes: the whole document if it fits, else
    the last document written there (it always fits: each write reserves room). Says which:
    "all", "last write" or "none" (path keeps its last write, unmarked)."""
    mark_failed(document, reason)
    if overwrite_in_place(path, document):
        return "all"
    try:
        last = parse(path, read_json(path))
    except ResultError:
        return "none"
    mark_failed(last, reason)
    return "last write" if overwrite_in_place(path, last) else "none"


def overwrite_in_place(path: Path, document: Mapping[str, Any]) -> bool:
    """Last resort on a full disk: the document, compact, over the file's own bytes.

    Only when it fits in the file's current size (padded with spaces, which JSON allows), so
    no new block is needed; not atomic, so only for the final word on a run that failed.
    True when written.
    """
    text = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    with signals_held():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            size = os.fstat(fd).st_size
            if len(text) + 1 > size:
                return False
            os.pwrite(fd, text + b" " * (size - len(text) - 1) + b"\n", 0)
            os.fsync(fd)
        except OSError:
            return False
        finally:
            os.close(fd)
    return True


def _strict_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _strict_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) > MAX_INT:
        raise ValueError(f"number {text[:20]}... is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth_within(value: Any, limit: int) -> bool:
    """True when no list or object nests deeper than limit (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def read_json(path: Path, limit: int = MAX_FILE_BYTES) -> Any:
    """A regular file's JSON, strictly: finite numbers only, bounded size and depth.

    A FIFO, a device or a folder is refused before it is read, so /dev/zero cannot fill memory
    and a FIFO cannot hang the reader. Raises ResultError saying why.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ResultError(f"{path}: not a regular file; refused unread")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise ResultError(f"{path}: cannot be read ({error.strerror or error})") from error
    with os.fdopen(fd, "rb") as handle:
        # The name may have been swapped since the stat: check what was opened.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ResultError(f"{path}: not a regular file; refused unread")
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise ResultError(f"{path}: over {limit // 2**20} MiB, larger than any dlbench result")
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_float=_strict_float,
            parse_int=_strict_int,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise ResultError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ResultError(f"{path}: not a dlbench result (not valid JSON: {error})") from None
    if not _depth_within(value, MAX_DEPTH):
        raise ResultError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    return value


def schema() -> dict[str, Any]:
    text = resources.files("bench.results").joinpath("schema/result.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator() -> Any:
    """The schema checked once and its validator built once: per file, that was 90 % of a
    report's time (0.35 s of 0.38 s on a 2-core machine)."""
    loaded = schema()
    cls = jsonschema.validators.validator_for(loaded)
    cls.check_schema(loaded)
    return cls(loaded)


def validate(document: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the document breaks the schema."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is not None:
        raise error


def load(path: Path) -> Document:
    """Read a result file, refusing what is not a dlbench result of a version we know."""
    return parse(path, read_json(path))


def parse(path: Path, document: Any) -> Document:
    """A value read by read_json as a result document, or ResultError saying why not."""
    if not isinstance(document, dict) or document.get("tool") != "dlbench":
        raise ResultError(f'{path}: not a dlbench result (no "tool": "dlbench")')
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultError(
            f"{path}: schema_version {version!r} is not readable by this dlbench "
            f"(reads {SCHEMA_VERSION}); re-run the benchmark or use the dlbench that wrote it"
        )
    if document.get("incomplete_reason") == "starting" and "runs" not in document:
        raise ResultError(f"{path}: a run that stopped before its first write; nothing in it")
    try:
        validate(document)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise ResultError(f"{path}: invalid dlbench result at {where}: {error.message}") from error
    for index, run in enumerate(document["runs"]):
        problem = run_problem(run)
        if problem is not None:
            raise ResultError(f"{path}: invalid dlbench result at runs/{index}: {problem}")
    return cast(Document, document)


# The derived figures a run records, checked against its epochs (rounding aside).
DERIVED: tuple[tuple[str, str], ...] = (
    ("timing", "first_epoch_s"),
    ("timing", "steady_epoch_s"),
    ("throughput", "steady_samples_per_s"),
)


def run_problem(run: Mapping[str, Any]) -> str | None:
    """What in a schema-valid run contradicts itself, or None: epochs that are not 1..N in
    order, a complete run short of its epochs, figures that its epochs do not give."""
    numbers = [e["epoch"] for e in run["epochs"]]
    if numbers != list(range(1, len(numbers) + 1)):
        return f"epochs {numbers[:10]} are not 1..{len(numbers)} in order"
    planned = run["definition"]["epochs"]
    if run["status"] == "complete" and len(numbers) != planned:
        return f"marked complete with {len(numbers)} of its {planned} epochs"
    derived = cast(Run, json.loads(json.dumps(run)))
    derive_figures(derived)
    for where in DERIVED:
        recorded, expected = _dig(run, where), _dig(derived, where)
        if recorded is None and expected is None:
            continue
        if (
            recorded is None
            or expected is None
            or not math.isclose(recorded, expected, rel_tol=1e-3, abs_tol=1e-3)
        ):
            return f"{'.'.join(where)} is {recorded}, its epochs give {expected}"
    return None
