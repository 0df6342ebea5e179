"""Results gathered for a report: loaded, refused with reasons, grouped without mixing modes
or settings."""

from __future__ import annotations

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
    def machine(self) -> str:
        """Host and accelerator, e.g. 'gpu-box · NVIDIA H100 80GB HBM3' or 'vm · CPU'."""
        host = self.document["host"]["hostname"]
        gpus = self.document.get("gpus") or []
        return f"{host} · {gpus[0]['name']}" if gpus else f"{host} · CPU"


@dataclass
class Collection:
    """What was read, and what was refused with the reason."""

    results: list[LoadedResult] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    verifies: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # verify --json


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders searched recursively for *.json."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        else:
            found.append(path)
    return found


def verify_document(path: Path) -> dict[str, Any] | None:
    """The document if the file is `dlbench verify --json` output, else None."""
    from bench.machine.verify import DOCUMENT_KIND

    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return (
        document
        if isinstance(document, dict) and document.get("document") == DOCUMENT_KIND
        else None
    )


def collect(paths: Iterable[Path]) -> Collection:
    collection = Collection()
    for path in expand(paths):
        verified = verify_document(path)
        if verified is not None:
            collection.verifies.append((path, verified))
            continue
        try:
            collection.results.append(LoadedResult(path, results.load(path)))
        except results.ResultError as error:
            collection.refused.append((path, str(error)))
    return collection


@dataclass(frozen=True)
class Setup:
    """The settings that change what a run's figures mean: runs that differ in one are never
    pooled (epochs change end to end and test accuracy, synthetic data has no accuracy)."""

    epochs: int
    batch_size: int
    seed: int | None  # the base seed: repeat i uses seed + i
    data: str  # "synthetic", or the data file's name and the start of its sha256

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    def label(self) -> str:
        seed = "-" if self.seed is None else f"{self.seed}+i"
        return f"{self.epochs} epochs, batch {self.batch_size}, seed {seed}, {self.data}"

    def differences(self, other: Setup) -> list[str]:
        """'epochs 4 vs 20' for each setting that differs."""
        return [
            f"{name} {mine} vs {theirs}"
            for name, mine, theirs in (
                ("epochs", self.epochs, other.epochs),
                ("batch", self.batch_size, other.batch_size),
                ("seed", self.seed, other.seed),
                ("data", self.data, other.data),
            )
            if mine != theirs
        ]


def setup_of(run: Mapping[str, Any], settings: Mapping[str, Any]) -> Setup:
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
    return Setup(definition["epochs"], definition["batch_size"], settings.get("seed"), source)


@dataclass
class Group:
    """Runs of one workload on one machine with one backend, one mode and one Setup."""

    machine: str
    backend: str
    mode: str
    workload: str
    setup: Setup
    runs: list[results.Run]
    sources: list[LoadedResult]

    @property
    def key(self) -> tuple[str, str, str, str, Setup]:
        return (self.machine, self.backend, self.mode, self.workload, self.setup)

    @property
    def complete(self) -> list[results.Run]:
        return [r for r in self.runs if r["status"] == "complete"]

    @property
    def synthetic(self) -> bool:
        return self.setup.synthetic

    def summary(self) -> dict[str, dict[str, Any]]:
        return results.summarize(self.complete)[self.workload] if self.complete else {}


def groups(collection: Collection) -> list[Group]:
    found: dict[tuple[str, str, str, str, Setup], Group] = {}
    for loaded in collection.results:
        settings = loaded.document["settings"]
        for run in loaded.document["runs"]:
            setup = setup_of(run, settings)
            key = (loaded.machine, settings["backend"], settings["mode"], run["workload"], setup)
            group = found.setdefault(key, Group(*key, runs=[], sources=[]))
            group.runs.append(run)
            if loaded not in group.sources:
                group.sources.append(loaded)
    return sorted(
        found.values(), key=lambda g: (g.workload, g.mode, g.backend, g.machine, g.setup.label())
    )
