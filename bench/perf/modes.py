"""Benchmark: fit against compiled against a bare JAX loop, for both workloads, in one run.

    python -m bench.perf.modes [--backend jax|tensorflow] [--data-dir DIR] [--epochs 20]
                               [--keep DIR]

Every run is its own process (as dlbench runs them), in this order per workload: fit with a
cold encode cache, fit warm, compiled with a cold compilation cache, compiled warm, bare JAX.
Prints one table and the ratios the compiled mode is held to. Steady epochs count training and
validation for fit and compiled; the bare loop trains only, which favours it. --keep DIR keeps
every run's result file (bench/reference/ holds the warm ones of a GPU run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import results
from bench.progress import table


def run_child(command: list[str], env: dict[str, str] | None = None) -> str:
    """A child's stdout; on failure its stderr's end, so a cut-short benchmark says why."""
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{' '.join(command[2:5])} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def dlbench_run(
    workload: str, mode: str, cache: Path, out: Path, extra: list[str], *, backend: str
) -> dict[str, Any]:
    cold = not list(out.glob(f"{workload}-{backend}-{mode}-*.json"))
    output = out / f"{workload}-{backend}-{mode}-{'cold' if cold else 'warm'}.json"
    run_child(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            workload,
            "--backend",
            backend,
            "--mode",
            mode,
            "--cache-dir",
            str(cache),
            "--output",
            str(output),
            "--quiet",
            "--no-imds",
            *extra,
        ],
    )
    run: dict[str, Any] = results.load(output)["runs"][0]
    # Progress on stderr: on a lent GPU machine a run cut short should still show what it did.
    print(f"{workload} {mode}: {run['timing']['end_to_end_s']:.1f} s end to end", file=sys.stderr)
    return {
        "first_epoch_s": run["timing"]["first_epoch_s"],
        "steady_epoch_s": run["timing"]["steady_epoch_s"],
        "steady_samples_per_s": run["throughput"]["steady_samples_per_s"],
        "end_to_end_s": run["timing"]["end_to_end_s"],
        "data_s": run["timing"].get("data_s"),
        "test_accuracy": (run.get("test") or {}).get("accuracy"),
        "device": (run.get("backend") or {}).get("device_name"),
    }


def bare(workload: str, data_dir: str | None) -> dict[str, Any]:
    stdout = run_child(
        [sys.executable, "-m", "bench.perf.bare_jax", workload, *([data_dir] if data_dir else [])],
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")},
    )
    measured: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    print(f"{workload} bare jax: {measured['end_to_end_s']:.1f} s end to end", file=sys.stderr)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DLSTATION_DATA_DIR"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--backend",
        default="jax",
        choices=["jax", "tensorflow"],
        help="the bare reference loop is JAX's, whatever the backend",
    )
    parser.add_argument(
        "--keep", type=Path, help="copy every run's result file into this folder (reference data)"
    )
    args = parser.parse_args(argv)
    extra = ["--epochs", str(args.epochs)]
    extra += ["--data-dir", args.data_dir] if args.data_dir else ["--synthetic"]
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for workload in ("imdb", "reuters"):
            cache, out = root / f"cache-{workload}", root / f"out-{workload}"
            out.mkdir()
            measured = {
                "fit (cold)": dlbench_run(workload, "fit", cache, out, extra, backend=args.backend),
                "fit (warm)": dlbench_run(workload, "fit", cache, out, extra, backend=args.backend),
                "compiled (cold)": dlbench_run(
                    workload, "compiled", cache, out, extra, backend=args.backend
                ),
                "compiled (warm)": dlbench_run(
                    workload, "compiled", cache, out, extra, backend=args.backend
                ),
                "bare jax": bare(workload, args.data_dir),
            }
            for label, m in measured.items():
                rows.append(
                    [
                        workload,
                        label,
                        f"{m['first_epoch_s']:.3f}",
                        f"{m['steady_epoch_s']:.4f}",
                        f"{m['steady_samples_per_s']:,.0f}",
                        f"{m['end_to_end_s']:.1f}",
                        "-" if m.get("data_s") is None else f"{m['data_s']:.2f}",
                        "-" if m.get("test_accuracy") is None else f"{m['test_accuracy']:.3f}",
                    ]
                )
            fit, compiled, floor = (
                measured["fit (warm)"],
                measured["compiled (warm)"],
                measured["bare jax"],
            )
            cold_fit, cold_compiled = measured["fit (cold)"], measured["compiled (cold)"]
            ratios += [
                [
                    workload,
                    "steady epoch: fit / compiled",
                    f"{fit['steady_epoch_s'] / compiled['steady_epoch_s']:.2f}x",
                    ">= 40x (GPU)",
                ],
                [
                    workload,
                    "steady epoch: compiled / bare jax",
                    f"{compiled['steady_epoch_s'] / floor['steady_epoch_s']:.2f}x",
                    "<= 2x (GPU)",
                ],
                [
                    workload,
                    "end to end, warm: fit / compiled",
                    f"{fit['end_to_end_s'] / compiled['end_to_end_s']:.2f}x",
                    ">= 5x (GPU)",
                ],
                [
                    workload,
                    "end to end, cold: fit / compiled",
                    f"{cold_fit['end_to_end_s'] / cold_compiled['end_to_end_s']:.2f}x",
                    "reported",
                ],
                [
                    workload,
                    "first epoch, compiled warm",
                    f"{compiled['first_epoch_s']:.2f} s",
                    "< 1 s (GPU)",
                ],
                [
                    workload,
                    "data load, warm: compiled (uint8) | fit (float32)",
                    f"{compiled['data_s']:.2f} s | {fit['data_s']:.2f} s",
                    "< 1 s (imdb)",
                ],
                [
                    workload,
                    "steady epoch: compiled / fit (CPU goal >= 1x)",
                    f"{fit['steady_epoch_s'] / compiled['steady_epoch_s']:.2f}x",
                    ">= 1x (CPU)",
                ],
            ]
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for kept in out.glob("*.json"):
                    shutil.copy2(kept, args.keep / kept.name)
        device = measured["fit (warm)"]["device"]
    source = f"real data from {args.data_dir}" if args.data_dir else "synthetic data"
    print(f"modes benchmark: {args.backend} backend on {device}, {args.epochs} epochs, {source}")
    print(
        table(
            [
                "workload",
                "run",
                "first epoch s",
                "steady epoch s",
                "samples/s",
                "end-to-end s",
                "data s",
                "test acc",
            ],
            rows,
        )
    )
    print()
    print(table(["workload", "ratio", "measured", "goal"], ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
