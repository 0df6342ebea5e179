"""What `dlbench run` prints while it works, and the summary table at the end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from bench.results.document import Document, Run
from bench.textfmt import format_spread, table
from bench.training.workloads.spec import Workload


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(document: Document) -> str:
    """One row per workload: accuracy, epoch times, throughput, time to target."""
    header = [
        "workload",
        "runs",
        "test acc",
        "first epoch s (train + validation)",
        "epoch s (train + validation)",
        "train samples/s",
        "end-to-end s per run",
        "to target s",
    ]
    rows = []
    for name, figures in document["summary"].items():
        runs = [r for r in document["runs"] if r["workload"] == name]
        done = sum(r["status"] == "complete" for r in runs)
        synthetic = any((r["data"] or {}).get("source") == "synthetic" for r in runs)
        rows.append(
            [
                name,
                f"{done}/{len(runs)}",
                "n/a (synthetic)" if synthetic else format_spread(figures["test_accuracy"]),
                format_spread(figures["first_epoch_s"], 2),
                format_spread(figures["steady_epoch_s"], 3),
                format_spread(figures["steady_samples_per_s"], 0),
                format_spread(figures["end_to_end_s"], 1),
                "n/a (synthetic)" if synthetic else format_spread(figures["time_to_target_s"], 2),
            ]
        )
    # Cost and GPU columns only when some run has them: a CPU run without a price shows none.
    extras = [
        ("$/run", "run_usd", 4),
        ("GPU util %", "steady_gpu_util", 0),
        ("energy J", "energy_j", 0),
    ]
    for title, figure, digits in extras:
        column = [document["summary"][name].get(figure) or {} for name in document["summary"]]
        if any(c.get("n") for c in column):
            header.append(title)
            for row, cell in zip(rows, column, strict=True):
                row.append(format_spread(cell, digits))
    return table(header, rows)


class Progress:
    """One line per epoch and per run; silent but for the result path when quiet."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stdout

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def run_started(self, workload: Workload, repeat: int, repeats: int) -> None:
        self.say(
            f"{workload.name}: repeat {repeat + 1}/{repeats}, {workload.epochs} epochs, "
            f"batch {workload.batch_size} (starting backend, loading data)"
        )

    def epoch(self, run: Run) -> None:
        e = run["epochs"][-1]
        total = run["definition"]["epochs"]
        self.say(
            f"  {run['workload']} epoch {e['epoch']:>2}/{total}  {e['wall_s']:7.3f} s  "
            f"loss {_num(e.get('loss'), 4)} acc {_num(e.get('accuracy'), 4)}  "
            f"val_loss {_num(e.get('val_loss'), 4)} val_acc {_num(e.get('val_accuracy'), 4)}"
        )

    def run_finished(self, run: Run) -> None:
        if run["status"] == "complete":
            test = run["test"]
            acc = f"test accuracy {test['accuracy']:.4f}" if test else "synthetic data: no accuracy"
            device = (run["backend"] or {}).get("device_name", "?")
            self.say(
                f"  {run['workload']} done on {device}: {acc}, "
                f"{run['timing']['end_to_end_s']:.1f} s end to end"
            )
        else:
            error = run["error"] or {}
            print(
                f"dlbench: {run['workload']} failed: {error.get('message', 'unknown error')}"
                + (f" (log: {error['log']})" if error.get("log") else ""),
                file=sys.stderr,
            )

    def write_failed(self, line: str) -> None:
        print(f"dlbench: {line}", file=sys.stderr)

    def interrupted(self, reason: str, output: Path) -> None:
        print(f"dlbench: {reason}; partial result saved to {output}", file=sys.stderr)

    def finished(self, document: Document, output: Path) -> None:
        if self.quiet:
            print(output, file=self.stream)
            return
        self.say("")
        self.say(summary_table(document))
        if (startup := document.get("startup_s")) is not None:
            self.say(f"dlbench's own start-up before the first run: {startup:.1f} s")
        self.say(f"\nresult: {output} ({document['status']})")
