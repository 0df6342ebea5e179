"""`dlbench compare A B`: per shared workload, B's figures as ratios of A's, with their spread.

Each side must be one machine, backend, mode and setting per workload (else it is refused);
every way A and B differ (machine, backend, settings) is named on every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.report.model import Collection, GroupKey, group_key
from bench.results import document as results
from bench.textfmt import format_spread, table

# Each figure, and the label that says what it counts.
FIGURES = (
    ("steady_samples_per_s", "train samples/s", 0),
    ("steady_epoch_s", "epoch s (train + validation)", 3),
    ("first_epoch_s", "first epoch s (train + validation)", 2),
    ("end_to_end_s", "end-to-end s per run (spawn to exit)", 1),
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
    keys: dict[str, GroupKey]  # per workload: machine, backend, mode, workload, setup
    machines: dict[str, str]  # per workload: the machine's label


def side(collection: Collection, label: str) -> Side:
    if not collection.results:
        reasons = "; ".join(why for _, why in collection.refused) or "no files"
        raise CompareError(f"{label}: no dlbench results ({reasons})")
    found: dict[str, set[GroupKey]] = {}
    machines: dict[str, str] = {}
    runs = []
    for loaded in collection.results:
        for run in loaded.document["runs"]:
            found.setdefault(run["workload"], set()).add(group_key(loaded, run))
            machines[run["workload"]] = loaded.machine
            runs.append(run)
    modes = {key[2] for keys in found.values() for key in keys}
    if len(modes) > 1:
        raise CompareError(f"{label} mixes modes {sorted(modes)}: compare one mode at a time")
    for workload, keys in found.items():
        if len(keys) > 1:
            kinds = "; ".join(sorted(f"{k[0]} {k[1]} {k[4].label()}" for k in keys))
            raise CompareError(
                f"{label} mixes machines, backends or settings for {workload} ({kinds}): "
                "compare runs of one machine, backend and setting at a time"
            )
    summary = results.summarize(runs)
    complete = {w for w in summary if any(f["n"] for f in summary[w].values())}
    if not complete:
        raise CompareError(
            f"{label}: no complete run (statuses: "
            f"{', '.join(sorted({r['status'] for r in runs})) or 'no runs'}); nothing to compare"
        )
    return Side(
        label,
        modes.pop(),
        {w: f for w, f in summary.items() if w in complete},
        {workload: keys.pop() for workload, keys in found.items()},
        machines,
    )


def noise_note(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["n"] < 2 or b["n"] < 2:
        return "single run on a side: spread unknown"
    overlap = a["min"] <= b["max"] and b["min"] <= a["max"]
    return "within noise (ranges overlap)" if overlap else "beyond noise"


def differences(a: Side, b: Side, workload: str) -> list[str]:
    """Every way the two sides' runs of a workload differ, e.g. 'backend jax vs tensorflow'."""
    ka, kb = a.keys[workload], b.keys[workload]
    found = []
    if ka[0] != kb[0]:
        # Host and accelerator where they tell the two apart; the hardware ids where not.
        one, two = (m.rsplit(" · ", 1)[0] for m in (a.machines[workload], b.machines[workload]))
        found.append(f"machine {one} vs {two}" if one != two else f"machine {ka[0]} vs {kb[0]}")
    if ka[1] != kb[1]:
        found.append(f"backend {ka[1]} vs {kb[1]}")
    return found + ka[4].differences(kb[4])


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
        differ = differences(a, b, workload)
        flag = f"; differ: {', '.join(differ)}" if differ else ""
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
