"""Results gathered for a report: loaded, refused with reasons, grouped without mixing modes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import results


@dataclass
class LoadedResult:
    path: Path
    document: dict[str, Any]

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
    from bench.verify import DOCUMENT_KIND

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


@dataclass
class Group:
    """Runs of one workload on one machine with one backend and one mode."""

    machine: str
    backend: str
    mode: str
    workload: str
    runs: list[dict[str, Any]]
    sources: list[LoadedResult]

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.machine, self.backend, self.mode, self.workload)

    @property
    def complete(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "complete"]

    @property
    def synthetic(self) -> bool:
        return any((r.get("data") or {}).get("source") == "synthetic" for r in self.runs)

    def summary(self) -> dict[str, dict[str, Any]]:
        return results.summarize(self.complete)[self.workload] if self.complete else {}


def groups(collection: Collection) -> list[Group]:
    found: dict[tuple[str, str, str, str], Group] = {}
    for loaded in collection.results:
        settings = loaded.document["settings"]
        for run in loaded.document["runs"]:
            key = (loaded.machine, settings["backend"], settings["mode"], run["workload"])
            group = found.setdefault(key, Group(*key, runs=[], sources=[]))
            group.runs.append(run)
            if loaded not in group.sources:
                group.sources.append(loaded)
    return sorted(found.values(), key=lambda g: (g.workload, g.mode, g.backend, g.machine))
