"""Benchmark: fit against compiled against a bare JAX loop, and the compiled mode with and
without each opt-in change, in one run.

    python -m bench.perf.modes [--backend jax|tensorflow] [--data-dir DIR] [--epochs 20]
                               [--workloads imdb reuters] [--repeats 1] [--quick]
                               [--changes] [--keep DIR] [--load N]

Every run is its own process (as dlbench runs them), in this order per workload: fit with a
cold encode cache, compiled with a cold compilation cache, then --repeats rounds of fit warm
and compiled warm (alternating, so a busy machine slows both alike; figures are the medians),
the bare JAX loop, and with --changes the compiled mode warm once more per opt-in change
(bench/training/modes/options.py; each after a run that fills the compilation cache) and with the
frameworks' GPU memory default. --quick skips the cold runs and the bare loop. Prints the
machine, date and versions, one table, and the ratios the compiled mode is held to. Steady
epochs count training and validation for fit and compiled; samples/s count training only; the
bare loop trains only, which favours it. --keep DIR keeps every run's result file. --load N
runs N busy processes beside the benchmark (a machine others use); the machine's load
average after each run is printed with the figures, as are the per-round ratios' spread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.results import document as results
from bench.training.progress import table

# The changes measured with --changes, each alone against the compiled mode's default: the
# opt-in ones (bench/training/modes/options.py), and the frameworks' own GPU memory handling.
CHANGES = {
    "command-buffers": ("--opt-in", "command-buffers"),
    "bf16": ("--opt-in", "bf16"),
    "compiled-evaluation": ("--opt-in", "compiled-evaluation"),
    "gpu-memory framework-default": ("--gpu-memory", "framework-default"),
}
# Process start to the first training step: the parts before the first epoch's run.
TO_FIRST_STEP = (
    "interpreter_s",
    "import_s",
    "backend_start_s",
    "data_s",
    "build_s",
    "first_epoch_transfer_s",
    "first_epoch_trace_s",
    "first_epoch_compile_s",
)


def run_child(command: list[str], env: dict[str, str] | None = None) -> str:
    """A child's stdout; on failure its stderr's end, so a cut-short benchmark says why."""
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{' '.join(command[2:5])} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def figures(run: Mapping[str, Any]) -> dict[str, Any]:
    """What the tables show, from one run record."""
    timing = run["timing"]
    parts = [timing.get(p) for p in TO_FIRST_STEP]
    return {
        "first_epoch_s": timing["first_epoch_s"],
        "steady_epoch_s": timing["steady_epoch_s"],
        "steady_samples_per_s": run["throughput"]["steady_samples_per_s"],
        "end_to_end_s": timing["end_to_end_s"],
        "import_s": timing.get("import_s"),
        "data_s": timing.get("data_s"),
        "eval_s": timing.get("eval_s"),
        # fit traces and compiles inside its first epoch: no figure for it.
        "to_first_step_s": sum(p for p in parts if p)
        if timing.get("first_epoch_trace_s")
        else None,
        "test_accuracy": (run.get("test") or {}).get("accuracy"),
        "gpu_run_peak_mib": (run.get("gpu_memory") or {}).get("run_peak_mib"),
        "fallbacks": (run.get("options") or {}).get("fallbacks") or {},
        "device": (run.get("backend") or {}).get("device_name"),
        "versions": run.get("backend") or {},
    }


@contextlib.contextmanager
def background_load(processes: int) -> Iterator[None]:
    """N processes that each spin one core for as long as the block runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def spread_text(values: list[float], digits: int = 2) -> str:
    """'1.05x [0.98-1.12]' for ratios over rounds."""
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}x"
    return f"{middle:.{digits}f}x [{min(values):.{digits}f}-{max(values):.{digits}f}]"


@dataclass
class Bench:
    """One benchmark's settings and its scratch folder."""

    args: argparse.Namespace
    root: Path
    loads: list[float] = field(default_factory=list)  # 1-minute load average after each run

    def extra(self) -> list[str]:
        data = ["--data-dir", self.args.data_dir] if self.args.data_dir else ["--synthetic"]
        return ["--epochs", str(self.args.epochs), *data]

    def run(self, workload: str, mode: str, label: str, more: tuple[str, ...] = ()) -> dict:
        """One dlbench run in its own process; its figures."""
        cache, out = self.root / f"cache-{workload}", self.root / f"out-{workload}"
        out.mkdir(parents=True, exist_ok=True)
        output = out / f"{workload}-{self.args.backend}-{mode}-{label}.json"
        run_child(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                workload,
                "--backend",
                self.args.backend,
                "--mode",
                mode,
                "--cache-dir",
                str(cache),
                "--output",
                str(output),
                "--quiet",
                "--no-imds",
                *self.extra(),
                *more,
            ],
        )
        run = results.load(output)["runs"][0]
        self.loads.append(os.getloadavg()[0])
        # On stderr: on a lent GPU machine a run cut short should still show what it did.
        end_to_end = run["timing"]["end_to_end_s"]
        print(f"{workload} {mode} {label}: {end_to_end:.1f} s", file=sys.stderr)
        return figures(run)

    def measure(self, workload: str) -> dict[str, dict[str, Any]]:
        """Every run of one workload, by label."""
        measured: dict[str, dict[str, Any]] = {}
        if self.args.quick:
            self.run(workload, "fit", "cache-fill")  # the encode cache: every run below is warm
            self.run(workload, "compiled", "cache-fill")
        else:
            measured["fit (cold)"] = self.run(workload, "fit", "cold")
            measured["compiled (cold)"] = self.run(workload, "compiled", "cold")
        warm: dict[str, list[dict[str, Any]]] = {"fit": [], "compiled": []}
        for repeat in range(self.args.repeats):
            for mode in ("fit", "compiled"):
                warm[mode].append(self.run(workload, mode, f"warm-{repeat}"))
        measured["fit (warm)"] = median_of(warm["fit"])
        measured["compiled (warm)"] = median_of(warm["compiled"])
        if not self.args.quick:
            measured["bare jax"] = bare(workload, self.args.data_dir, self.args.epochs)
        if self.args.changes:
            for change, more in CHANGES.items():
                label = change.replace(" ", "-")
                if more[0] == "--opt-in":
                    # A change to the programs compiles anew: a first run fills the cache, so
                    # that the measured one is warm like compiled (warm).
                    self.run(workload, "compiled", f"{label}-cache-fill", more)
                measured[f"compiled +{change}"] = self.run(workload, "compiled", label, more)
        if self.args.keep:
            self.args.keep.mkdir(parents=True, exist_ok=True)
            for kept in (self.root / f"out-{workload}").glob("*.json"):
                shutil.copy2(kept, self.args.keep / kept.name)
        return measured


def bare(workload: str, data_dir: str | None, epochs: int) -> dict[str, Any]:
    stdout = run_child(
        [
            sys.executable,
            "-m",
            "bench.perf.bare_jax",
            workload,
            *([data_dir] if data_dir else []),
            "--epochs",
            str(epochs),
        ],
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")},
    )
    measured: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    print(f"{workload} bare jax: {measured['end_to_end_s']:.1f} s end to end", file=sys.stderr)
    return measured


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over repeats (numbers); the first run's value otherwise."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if isinstance(value, int | float) and len(values) == len(runs):
            merged[key] = statistics.median(values)
    merged["repeats"] = len(runs)
    merged["samples_each"] = [r["steady_samples_per_s"] for r in runs]
    merged["epoch_each"] = [r["steady_epoch_s"] for r in runs]
    return merged


def cell(value: Any, digits: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def row(workload: str, label: str, m: dict[str, Any]) -> list[str]:
    return [
        workload,
        label + (f" x{m['repeats']}" if m.get("repeats", 1) > 1 else ""),
        cell(m["first_epoch_s"], 3),
        cell(m["steady_epoch_s"], 4),
        cell(m["steady_samples_per_s"], 0),
        cell(m["end_to_end_s"], 1),
        cell(m.get("to_first_step_s"), 2),
        cell(m.get("import_s"), 2),
        cell(m.get("eval_s"), 2),
        cell(m.get("gpu_run_peak_mib"), 0),
        cell(m.get("test_accuracy"), 3),
    ]


HEADER = [
    "workload",
    "run",
    "first epoch s",
    "epoch s (train + val)",
    "train samples/s",
    "end-to-end s",
    "to 1st step s",
    "import s",
    "eval s",
    "GPU MiB",
    "test acc",
]


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def mode_ratios(workload: str, measured: dict[str, dict[str, Any]]) -> list[list[str]]:
    fit, compiled = measured["fit (warm)"], measured["compiled (warm)"]
    rows = [
        [
            workload,
            "steady epoch: fit / compiled",
            ratio(fit["steady_epoch_s"], compiled["steady_epoch_s"]),
            ">= 40x (GPU), >= 1x (CPU)",
        ],
        [
            workload,
            "training samples/s: compiled / fit",
            ratio(compiled["steady_samples_per_s"], fit["steady_samples_per_s"]),
            ">= 1x (CPU)",
        ],
        [
            workload,
            "end to end, warm: fit / compiled",
            ratio(fit["end_to_end_s"], compiled["end_to_end_s"]),
            ">= 5x (GPU)",
        ],
        [
            workload,
            "first epoch, compiled warm",
            cell(compiled["first_epoch_s"], 2, " s"),
            "< 1 s (GPU)",
        ],
        [
            workload,
            "process start to first step, compiled warm",
            cell(compiled["to_first_step_s"], 2, " s"),
            "<= 3 s (GPU)",
        ],
        [
            workload,
            "GPU memory peak, compiled warm",
            cell(compiled["gpu_run_peak_mib"], 0, " MiB"),
            "<= 2048 MiB (GPU)",
        ],
    ]
    if "bare jax" in measured:
        rows.insert(
            1,
            [
                workload,
                "steady epoch: compiled / bare jax",
                ratio(compiled["steady_epoch_s"], measured["bare jax"]["steady_epoch_s"]),
                "<= 2x (GPU)",
            ],
        )
    if fit.get("repeats", 1) > 1:
        each = " | ".join(" ".join(f"{v:,.0f}" for v in m["samples_each"]) for m in (compiled, fit))
        rows.insert(2, [workload, "training samples/s each: compiled | fit", each, "reported"])
        # Round i's compiled against round i's fit: they ran one after the other, so a load
        # that comes and goes moves both.
        pairs = zip(compiled["samples_each"], fit["samples_each"], strict=True)
        rounds = [c / f for c, f in pairs if c and f]
        rows.insert(
            3,
            [workload, "training samples/s per round: compiled / fit", spread_text(rounds), ""],
        )
        pairs = zip(fit["epoch_each"], compiled["epoch_each"], strict=True)
        rounds = [f / c for f, c in pairs if c and f]
        rows.insert(
            4, [workload, "steady epoch per round: fit / compiled", spread_text(rounds), ""]
        )
    if "fit (cold)" in measured:
        rows.append(
            [
                workload,
                "end to end, cold: fit / compiled",
                ratio(
                    measured["fit (cold)"]["end_to_end_s"],
                    measured["compiled (cold)"]["end_to_end_s"],
                ),
                "reported",
            ]
        )
    return rows


def change_ratios(workload: str, measured: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Each change against the compiled mode's default: > 1x is faster (or smaller)."""
    base = measured["compiled (warm)"]
    rows = []
    for change in CHANGES:
        m = measured.get(f"compiled +{change}")
        if m is None:
            continue
        fell_back = "; ".join(f"{k}: {v}" for k, v in m["fallbacks"].items())
        rows.append(
            [
                workload,
                change,
                ratio(base["steady_epoch_s"], m["steady_epoch_s"]),
                ratio(base["first_epoch_s"], m["first_epoch_s"]),
                ratio(base["eval_s"], m["eval_s"]),
                ratio(base["end_to_end_s"], m["end_to_end_s"]),
                cell(m["test_accuracy"], 3) + " vs " + cell(base["test_accuracy"], 3),
                cell(m["gpu_run_peak_mib"], 0) + " vs " + cell(base["gpu_run_peak_mib"], 0),
                fell_back or "applied",
            ]
        )
    return rows


def versions_line(measured: dict[str, Any], backend: str) -> str:
    found = measured["versions"]
    return ", ".join(
        [
            f"{datetime.now(timezone.utc):%Y-%m-%d}",
            platform.node(),
            f"{os.cpu_count()} CPUs",
            f"{found.get('name', backend)} {found.get('version', '?')}",
            f"keras {found.get('keras_version', '?')}",
            f"python {platform.python_version()}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DLSTATION_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workloads", nargs="+", default=["imdb", "reuters"])
    parser.add_argument("--repeats", type=int, default=1, help="warm fit/compiled rounds")
    parser.add_argument("--quick", action="store_true", help="no cold runs, no bare loop")
    parser.add_argument(
        "--changes", action="store_true", help=f"also compiled with each of: {', '.join(CHANGES)}"
    )
    parser.add_argument(
        "--backend",
        default="jax",
        choices=["jax", "tensorflow"],
        help="the bare reference loop is JAX's, whatever the backend",
    )
    parser.add_argument(
        "--keep", type=Path, help="copy every run's result file into this folder (reference data)"
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="run N busy processes beside the benchmark, as on a machine others use (default: 0)",
    )
    args = parser.parse_args(argv)
    rows, ratios, changes = [], [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder, background_load(args.load):
        bench = Bench(args, Path(folder))
        for workload in args.workloads:
            measured = bench.measure(workload)
            rows += [row(workload, label, m) for label, m in measured.items()]
            ratios += mode_ratios(workload, measured)
            changes += change_ratios(workload, measured)
    report(args, measured["fit (warm)"], rows, ratios, changes)
    print(
        f"conditions: {args.load} busy background process(es) added; the machine's 1-minute "
        f"load average after each run {min(bench.loads):.1f} to {max(bench.loads):.1f} on "
        f"{os.cpu_count()} CPUs; {time.monotonic() - started:.0f} s in all"
    )
    return 0


def report(
    args: argparse.Namespace,
    warm_fit: dict[str, Any],
    rows: list[list[str]],
    ratios: list[list[str]],
    changes: list[list[str]],
) -> None:
    source = f"real data from {args.data_dir}" if args.data_dir else "synthetic data"
    device = warm_fit["device"]
    print(f"modes benchmark: {args.backend} backend on {device}, {args.epochs} epochs, {source}")
    print(versions_line(warm_fit, args.backend))
    print(table(HEADER, rows))
    if args.repeats > 1:
        print("(xN: medians of N fresh processes each, samples/s alternating fit and compiled)")
    print()
    print(table(["workload", "ratio", "measured", "goal"], ratios))
    if changes:
        print()
        print("opt-in changes against compiled (warm) without them: default / with, > 1x faster")
        header = ["workload", "change", "steady epoch", "first epoch", "eval", "end to end"]
        print(table([*header, "test acc", "GPU MiB", "status"], changes))


if __name__ == "__main__":
    raise SystemExit(main())
