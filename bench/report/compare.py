"""`dlbench compare A B`: per shared workload, B's figures as ratios of A's, with their spread;
settings that differ between the sides are named on every row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.report.model import Collection, Setup, setup_of
from bench.results import document as results
from bench.textfmt import format_spread, table

FIGURES = (
    ("steady_samples_per_s", "samples/s", 0),
    ("steady_epoch_s", "steady epoch s", 3),
    ("first_epoch_s", "first epoch s", 2),
    ("end_to_end_s", "end-to-end s", 1),
    ("test_accuracy", "test accuracy", 3),
    ("run_usd", "$/run", 4),
)


class CompareError(ValueError):
    """Sides that cannot be compared honestly (mixed modes or settings, nothing shared)."""


@dataclass
class Side:
    label: str
    mode: str
    summary: dict[str, dict[str, Any]]
    setups: dict[str, Setup]


def side(collection: Collection, label: str) -> Side:
    if not collection.results:
        reasons = "; ".join(why for _, why in collection.refused) or "no files"
        raise CompareError(f"{label}: no dlbench results ({reasons})")
    modes = {r.document["settings"]["mode"] for r in collection.results}
    if len(modes) > 1:
        raise CompareError(f"{label} mixes modes {sorted(modes)}: compare one mode at a time")
    runs = [run for r in collection.results for run in r.document["runs"]]
    setups: dict[str, set[Setup]] = {}
    for loaded in collection.results:
        for run in loaded.document["runs"]:
            setups.setdefault(run["workload"], set()).add(
                setup_of(run, loaded.document["settings"])
            )
    for workload, found in setups.items():
        if len(found) > 1:
            labels = "; ".join(sorted(s.label() for s in found))
            raise CompareError(
                f"{label} mixes settings for {workload} ({labels}): "
                "compare runs of one setting at a time"
            )
    return Side(
        label,
        modes.pop(),
        results.summarize(runs),
        {workload: found.pop() for workload, found in setups.items()},
    )


def noise_note(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["n"] < 2 or b["n"] < 2:
        return "single run on a side: spread unknown"
    overlap = a["min"] <= b["max"] and b["min"] <= a["max"]
    return "within noise (ranges overlap)" if overlap else "beyond noise"


def compare(a: Side, b: Side) -> list[list[str]]:
    if a.mode != b.mode:
        raise CompareError(
            f"A is mode {a.mode}, B is mode {b.mode}: fit and compiled measure different things; "
            "compare results of the same mode"
        )
    shared = [w for w in a.summary if w in b.summary]
    if not shared:
        raise CompareError(f"no workload in both: A has {sorted(a.summary)}, B {sorted(b.summary)}")
    rows = []
    for workload in shared:
        differ = a.setups[workload].differences(b.setups[workload])
        flag = f"; settings differ: {', '.join(differ)}" if differ else ""
        for name, label, digits in FIGURES:
            fa, fb = a.summary[workload].get(name) or {}, b.summary[workload].get(name) or {}
            if not fa.get("median") or not fb.get("median"):
                continue
            rows.append(
                [
                    workload,
                    label,
                    format_spread(fa, digits),
                    format_spread(fb, digits),
                    f"{fb['median'] / fa['median']:.3f}",
                    noise_note(fa, fb) + flag,
                ]
            )
    return rows


def render(a: Side, b: Side) -> str:
    header = ["workload", "figure", f"A: {a.label}", f"B: {b.label}", "B/A", "note"]
    return table(header, compare(a, b))
