"""Benchmark: a worker's start (import Keras, seed it) with and without skipping the imports
it never uses.

    python -m bench.perf.startup [--backend jax|tensorflow] [--repeats 3]

Each measurement is a fresh interpreter, alternating the variants so that a busy machine
slows both alike; prints medians of wall and CPU time (CPU time: less disturbed by other work on
a shared machine) and the ratios. The worker skips bench.training.worker.UNUSED_IMPORTS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from bench.training.progress import table

TIMED = """
import time
started, cpu = time.perf_counter(), time.process_time()
{prelude}
{statement}
print(time.perf_counter() - started, time.process_time() - cpu)
"""
SKIP = "from bench.training.worker import skip_unused_imports\nskip_unused_imports({backend!r})"


def timed_import(statement: str, prelude: str, backend: str) -> tuple[float, float]:
    """Wall and CPU seconds one fresh interpreter takes to run statement after the prelude."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    code = TIMED.format(prelude=prelude, statement=statement)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax", choices=["jax", "tensorflow"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    # The skip's own import (bench.training.worker) is timed too: it is part of the cost.
    start = "import keras; keras.utils.set_random_seed(0)"  # as the worker starts
    variants = {
        f"import {args.backend}": (f"import {args.backend}", ""),
        "import keras, seed": (start, ""),
        "import keras, seed, unused imports skipped": (start, SKIP.format(backend=args.backend)),
    }
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    for _ in range(args.repeats):
        for label, (statement, prelude) in variants.items():
            times[label].append(timed_import(statement, prelude, args.backend))
    wall = {label: statistics.median(w for w, _ in values) for label, values in times.items()}
    cpu = {label: statistics.median(c for _, c in values) for label, values in times.items()}
    rows = [
        [label, f"{wall[label]:.2f}", f"{cpu[label]:.2f}", " ".join(f"{w:.2f}" for w, _ in values)]
        for label, values in times.items()
    ]
    print(f"import times, {args.backend} backend, {args.repeats} fresh interpreters each")
    print(table(["import", "median wall s", "median CPU s", "each wall s"], rows))
    before, after = "import keras, seed", "import keras, seed, unused imports skipped"
    print(
        f"\nimport keras and seed, before / after skipping unused imports: wall "
        f"{wall[before] / wall[after]:.2f}x, CPU {cpu[before] / cpu[after]:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
