"""Benchmark: what GPU telemetry costs a run. Prints ratios measured in this one run.

    python -m bench.perf.sampler_overhead [--backend tensorflow|jax|torch] [--repeats 3]
                                          [--epochs 4] [--interval 0.2]

Three measures: (1) the mean cost of one tick (all GPUs; the energy counter on its own,
slower cadence) against the interval, i.e. the share of one core the sampler thread takes;
(2) the same short training run (reuters, synthetic data, fit) with telemetry on and off,
alternated, compared by steady epoch time; (3) the cost of each NVML call of a reading.
It needs real NVML (an NVIDIA driver and GPU): what it measures is the driver's cost.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import nvml
from bench.machine.telemetry import Sampler
from bench.training.progress import table
from bench.training.runner import run_plan, short_check_plan


def open_session() -> nvml.NvmlSession:
    """Real NVML, or exit saying why there is none: a fake would time only itself."""
    real = nvml.open_nvml()
    if isinstance(real, str):
        raise SystemExit(f"sampler_overhead needs a GPU with a working NVIDIA driver: {real}")
    return real


def per_sample_seconds(session: nvml.NvmlSession, interval: float, count: int = 2000) -> float:
    """Mean cost of one tick of the sampler, the energy counter read on its own cadence."""
    sampler = Sampler(session, interval_s=interval)  # not started: called by hand
    started = time.perf_counter()
    for _ in range(count):
        sampler.sample_once()
    return (time.perf_counter() - started) / count


def per_call_microseconds(session: nvml.NvmlSession, count: int = 300) -> list[list[str]]:
    """What each NVML call of a reading costs on this machine (GPU 0)."""
    lib, handle = session.lib, session.handle(0)
    calls: dict[str, Callable[[], Any]] = {
        "nvmlDeviceGetHandleByIndex": lambda: lib.nvmlDeviceGetHandleByIndex(0),
        "nvmlDeviceGetUtilizationRates": lambda: lib.nvmlDeviceGetUtilizationRates(handle),
        "nvmlDeviceGetPowerUsage": lambda: lib.nvmlDeviceGetPowerUsage(handle),
        "nvmlDeviceGetTotalEnergyConsumption": lambda: lib.nvmlDeviceGetTotalEnergyConsumption(
            handle
        ),
        "nvmlDeviceGetMemoryInfo": lambda: lib.nvmlDeviceGetMemoryInfo(handle),
        "nvmlDeviceGetTemperature": lambda: lib.nvmlDeviceGetTemperature(
            handle, lib.NVML_TEMPERATURE_GPU
        ),
        "nvmlDeviceGetClockInfo": lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_SM),
        "nvmlDeviceGetCurrentClocksEventReasons": (
            lambda: lib.nvmlDeviceGetCurrentClocksEventReasons(handle)
        ),
    }
    rows = []
    for name, call in calls.items():
        started = time.perf_counter()
        try:
            for _ in range(count):
                call()
        except lib.NVMLError as error:
            rows.append([name, f"fails: {error}"])
            continue
        rows.append([name, f"{(time.perf_counter() - started) / count * 1e6:.1f} us"])
    return rows


def one_run(
    session: nvml.NvmlSession, interval: float, epochs: int, folder: Path, backend: str
) -> tuple[float, float | None]:
    """Steady epoch time, and the sampler's CPU share of the run's wall time (None if off)."""
    output = folder / f"r-{time.monotonic_ns()}.json"
    plan = short_check_plan(backend, epochs, folder, output, telemetry_interval_s=interval)
    document = run_plan(plan, session, "not priced", ["perf"])
    run = document["runs"][0]
    steady = run["timing"]["steady_epoch_s"]
    if steady is None:
        raise SystemExit(f"the {backend} run did not finish: {run.get('error') or run['status']}")
    telemetry = run["telemetry"]
    assert telemetry is not None  # every closed run records its telemetry, or why there is none
    share = telemetry["sampler_cpu_s"] / telemetry["duration_s"] if telemetry["available"] else None
    return float(steady), share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax", "torch"])
    args = parser.parse_args(argv)
    session = open_session()
    cost = per_sample_seconds(session, args.interval)
    energy_ticks = Sampler(session, interval_s=args.interval).energy_every
    calls = per_call_microseconds(session) if session.device_count() else []
    on: list[float] = []
    off: list[float] = []
    shares: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            off.append(one_run(session, 0, args.epochs, Path(folder), args.backend)[0])
            steady, share = one_run(session, args.interval, args.epochs, Path(folder), args.backend)
            on.append(steady)
            shares.append(share or 0.0)
    median_on, median_off = statistics.median(on), statistics.median(off)
    overlap = min(on) <= max(off) and min(off) <= max(on)
    print(
        f"sampler overhead, real NVML, {session.device_count()} GPU(s), interval {args.interval} s,"
        f" {args.backend} backend"
    )
    print(
        table(
            ["measure", "value"],
            [
                [
                    f"one tick, all GPUs (mean; energy counter every {energy_ticks} ticks)",
                    f"{cost * 1e6:.1f} us",
                ],
                ["sampler thread duty cycle (sample / interval)", f"{cost / args.interval:.4%}"],
                ["sampler CPU time / run wall time (median)", f"{statistics.median(shares):.4%}"],
                [
                    "steady epoch, telemetry off: median [range]",
                    f"{median_off:.3f} s [{min(off):.3f}-{max(off):.3f}]",
                ],
                [
                    "steady epoch, telemetry on: median [range]",
                    f"{median_on:.3f} s [{min(on):.3f}-{max(on):.3f}]",
                ],
                [
                    "on / off (medians)",
                    f"{median_on / median_off:.3f}"
                    + ("  (ranges overlap: within this machine's noise)" if overlap else ""),
                ],
            ],
        )
    )
    if calls:
        print()
        print(table(["NVML call (GPU 0)", "mean cost"], calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
