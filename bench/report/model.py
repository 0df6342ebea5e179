"""Results gathered for a report: loaded, refused with reasons, grouped without mixing modes
or settings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import document as results


@dataclass
class LoadedResult:
    path: Path
    document: results.Document

    @property
    def machine_id(self) -> str:
        """The hardware's id as recorded, or derived from the same facts for older files."""
        host = self.document["host"]
        recorded = host.get("machine_id")
        return (
            recorded
            if isinstance(recorded, str)
            else results.machine_id(host, self.document.get("gpus") or [])
        )

    @property
    def machine(self) -> str:
        """Host, accelerator and hardware id, e.g. 'gpu-box · NVIDIA H100 80GB HBM3 · m-1a2b...'."""
        host = self.document["host"]["hostname"]
        gpus = self.document.get("gpus") or []
        name = gpus[0]["name"] if gpus else "CPU"
        accelerator = f"{len(gpus)}x {name}" if len(gpus) > 1 else name
        return f"{host} · {accelerator} · {self.machine_id}"


@dataclass
class Collection:
    """What was read, and what was refused with the reason."""

    results: list[LoadedResult] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    verifies: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # verify --json


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders searched recursively for *.json, every entry kept (a FIFO, a
    device or a broken link too), so that collect lists each it refuses with the reason."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob("*.json")))
        else:
            found.append(path)
    return found


VERDICTS = ("PASS", "WARN", "FAIL")


def _checks_valid(checks: Any) -> bool:
    return isinstance(checks, list) and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("status"), str)
        for c in checks
    )


def verify_problem(document: Mapping[str, Any]) -> str | None:
    """Why a `dlbench verify --json` document cannot be reported, or None when it can."""
    if document.get("verdict") not in VERDICTS:
        return f"no verdict (one of {', '.join(VERDICTS)})"
    if not isinstance(document.get("level"), str):
        return "no level"
    if not isinstance(document.get("host", ""), str):
        return "host is not a name"
    if not _checks_valid(document.get("machine", [])):
        return "machine checks are not a list of named checks"
    gpus = document.get("gpus", [])
    if not isinstance(gpus, list) or not all(
        isinstance(g, dict) and _checks_valid(g.get("checks", [])) for g in gpus
    ):
        return "gpus are not a list of GPUs with checks"
    return None


def collect(paths: Iterable[Path]) -> Collection:
    """Each file read once, checked, and kept or refused with its reason."""
    from bench.machine.verify import DOCUMENT_KIND

    collection = Collection()
    for path in expand(paths):
        try:
            value = results.read_json(path)
            if not (isinstance(value, dict) and value.get("document") == DOCUMENT_KIND):
                collection.results.append(LoadedResult(path, results.parse(path, value)))
            elif why := verify_problem(value):
                collection.refused.append((path, f"{path}: not a readable dlbench verify ({why})"))
            else:
                collection.verifies.append((path, value))
        except results.ResultError as error:
            collection.refused.append((path, str(error)))
    return collection


@dataclass(frozen=True)
class Setup:
    """The settings that change what a run's figures mean: runs that differ in one are never
    pooled (epochs change end to end and test accuracy, synthetic data has no accuracy, bf16
    changes the arithmetic). Seeds are not among them: runs of other seeds are the spread."""

    epochs: int
    batch_size: int
    seed_policy: str  # how repeat i's seed is chosen: "seed+i" (the only policy today)
    data: str  # "synthetic", or the data file's name and the start of its sha256
    target_accuracy: float
    options: tuple[str, ...] = ()  # opt-in changes (--opt-in), sorted
    precision: str = "float32"
    gpu_memory: str = "on-demand"
    # The run definition's other fields (layers, optimizer, loss, ...), each as JSON, sorted.
    model: tuple[tuple[str, str], ...] = ()
    software: str = ""  # the framework and its version, e.g. "tensorflow 2.21.0, keras 3.15.1"

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    def label(self) -> str:
        """e.g. '20 epochs, batch 512, imdb.npz 69664113, target 0.88, opt-in bf16, bf16'."""
        parts = [f"{self.epochs} epochs", f"batch {self.batch_size}", self.data]
        parts.append(f"target {self.target_accuracy:g}")
        if self.options:
            parts.append(f"opt-in {'+'.join(self.options)}")
        if self.precision != "float32":
            parts.append(self.precision)
        if self.gpu_memory != "on-demand":
            parts.append(f"GPU memory {self.gpu_memory}")
        if self.software:
            parts.append(self.software)
        if self.model:
            parts.append(f"model {self.model_id}")
        return ", ".join(parts)

    @property
    def model_id(self) -> str:
        """A short digest of the model's definition: equal for equal definitions."""
        text = json.dumps(self.model, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def differences(self, other: Setup) -> list[str]:
        """'epochs 4 vs 20' for each setting that differs."""
        return [
            f"{name} {mine} vs {theirs}"
            for name, mine, theirs in (
                ("epochs", self.epochs, other.epochs),
                ("batch", self.batch_size, other.batch_size),
                ("seeds", self.seed_policy, other.seed_policy),
                ("data", self.data, other.data),
                ("target", self.target_accuracy, other.target_accuracy),
                ("options", "+".join(self.options) or "none", "+".join(other.options) or "none"),
                ("precision", self.precision, other.precision),
                ("GPU memory", self.gpu_memory, other.gpu_memory),
                ("software", self.software or "?", other.software or "?"),
            )
            if mine != theirs
        ] + [
            f"{name} {mine} vs {theirs}"
            for name in sorted(set(dict(self.model)) | set(dict(other.model)))
            if (mine := dict(self.model).get(name, "-"))
            != (theirs := dict(other.model).get(name, "-"))
        ]


# Definition fields that are not the model: its words, or settings the Setup holds apart.
NOT_MODEL = frozenset(
    {"name", "title", "reference", "notes", "seed", "mode", "backend", "epochs", "batch_size"}
    | {"target_accuracy", "data_file"}
)
# The opt-in changes that change the arithmetic's precision, and to what.
PRECISION_OPTIONS = {"bf16": "mixed_bfloat16"}


def software_of(backend: str, packages: Mapping[str, Any]) -> str:
    """The backend's packages and Keras with versions, e.g. 'keras 3.15.1, tensorflow 2.21.0'."""
    family = {backend, "keras"} | ({"jaxlib"} if backend == "jax" else set())
    return ", ".join(
        f"{name} {version}"
        for name, version in sorted(packages.items())
        if name in family or (backend and name.startswith(f"{backend}-"))
    )


def setup_of(
    run: Mapping[str, Any], settings: Mapping[str, Any], packages: Mapping[str, Any] | None = None
) -> Setup:
    """A run's Setup from what it recorded; the definition's data file where no data was loaded."""
    definition = run["definition"]
    data = run.get("data") or {}
    if data.get("source") == "synthetic" or (not data and settings.get("synthetic")):
        source = "synthetic"
    else:
        expected = definition.get("data_file") or {}
        name = data.get("file") or expected.get("name") or "?"
        sha = data.get("sha256") or expected.get("sha256") or ""
        source = f"{name} {sha[:8]}".strip()
    options = tuple(sorted(str(o) for o in settings.get("options") or []))
    precision = next((PRECISION_OPTIONS[o] for o in options if o in PRECISION_OPTIONS), "float32")
    model = tuple(
        sorted(
            (key, json.dumps(value, sort_keys=True))
            for key, value in definition.items()
            if key not in NOT_MODEL
        )
    )
    software = software_of(settings.get("backend", ""), packages or {})
    return Setup(
        model=model,
        software=software,
        epochs=definition["epochs"],
        batch_size=definition["batch_size"],
        seed_policy="seed+i",
        data=source,
        target_accuracy=float(definition["target_accuracy"]),
        options=options,
        precision=precision,
        gpu_memory=str(settings.get("gpu_memory") or "on-demand"),
    )


def seeds_of(runs: Iterable[Mapping[str, Any]]) -> str:
    """The seeds a group's runs used, e.g. '0-299' or '0, 7'."""
    seeds = sorted({int(r["definition"]["seed"]) for r in runs})
    if not seeds:
        return "-"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds[:5])) + (f", ... ({len(seeds)})" if len(seeds) > 5 else "")


GroupKey = tuple[str, str, str, str, Setup]


@dataclass
class Group:
    """Runs of one workload on one machine (by hardware id) with one backend, one mode and one
    Setup."""

    machine_id: str
    backend: str
    mode: str
    workload: str
    setup: Setup
    runs: list[results.Run]
    sources: list[LoadedResult]

    @property
    def key(self) -> GroupKey:
        return (self.machine_id, self.backend, self.mode, self.workload, self.setup)

    @property
    def machine(self) -> str:
        """The sources' hosts and accelerator with the hardware id."""
        labels = sorted({s.machine for s in self.sources})
        return labels[0] if len(labels) == 1 else f"{labels[0]} (+{len(labels) - 1} hosts)"

    @property
    def complete(self) -> list[results.Run]:
        return [r for r in self.runs if r["status"] == "complete"]

    @property
    def synthetic(self) -> bool:
        return self.setup.synthetic

    def settings_label(self) -> str:
        return f"{self.setup.label()}, seeds {seeds_of(self.runs)}"

    def summary(self) -> dict[str, dict[str, Any]]:
        return results.summarize(self.complete)[self.workload] if self.complete else {}


def group_key(loaded: LoadedResult, run: Mapping[str, Any]) -> GroupKey:
    settings = loaded.document["settings"]
    return (
        loaded.machine_id,
        settings["backend"],
        settings["mode"],
        run["workload"],
        setup_of(run, settings, loaded.document["host"].get("packages")),
    )


def groups(collection: Collection) -> list[Group]:
    found: dict[GroupKey, Group] = {}
    for loaded in collection.results:
        for run in loaded.document["runs"]:
            key = group_key(loaded, run)
            group = found.setdefault(key, Group(*key, runs=[], sources=[]))
            group.runs.append(run)
            if not group.sources or group.sources[-1] is not loaded:
                group.sources.append(loaded)
    return sorted(
        found.values(), key=lambda g: (g.workload, g.mode, g.backend, g.machine, g.setup.label())
    )
