"""A background sampler of GPU metrics, tagged by the run's phase (after nvitop's collector)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.machine.nvml import HARMFUL_THROTTLE, GpuLostError, NvmlSession

DEFAULT_INTERVAL_S = 0.2
# The energy counter is cumulative, so run energy needs only its first and last reads; it is
# read at start, stop and every few seconds because one read took 3.9 ms on an H100 (2 % of a
# core at 0.2 s), against 1 to 5 us for each other metric.
ENERGY_EVERY_S = 5.0
METRICS = ("gpu_util", "mem_util", "mem_used_mib", "power_w", "temp_c", "sm_clock_mhz")


def unavailable(reason: str) -> dict[str, Any]:
    """The telemetry record of a run that had none, saying why."""
    return {
        "available": False,
        "reason": reason,
        "interval_s": None,
        "devices": [],
        "samples": [],
        "events": [],
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": sum(values) / len(values), "max": max(values)}


def _integrate_power(samples: list[dict[str, Any]]) -> float | None:
    """Joules from power readings by the trapezoid rule; None without two readings."""
    points = [(s["t"], s["power_w"]) for s in samples if s["power_w"] is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(points))


def memory_peak(telemetry: Mapping[str, Any]) -> dict[str, Any]:
    """The GPU memory a run took at its peak, from the sampler's NVML readings: the largest
    rise over the reading taken before the worker started, over the GPUs sampled."""
    devices = [
        d
        for d in telemetry.get("devices") or []
        if d.get("mem_used_mib_peak") is not None and d.get("mem_used_mib_first") is not None
    ]
    if not telemetry.get("available") or not devices:
        reason = telemetry.get("reason") or "no GPU memory readings"
        return {"peak_mib": None, "before_mib": None, "run_peak_mib": None, "reason": reason}
    top = max(devices, key=lambda d: d["mem_used_mib_peak"] - d["mem_used_mib_first"])
    return {
        "gpu": top["index"],
        "peak_mib": top["mem_used_mib_peak"],
        "before_mib": top["mem_used_mib_first"],
        "run_peak_mib": top["mem_used_mib_peak"] - top["mem_used_mib_first"],
        "source": f"NVML memory used, sampled every {telemetry['interval_s']} s",
        "reason": None,
    }


class Sampler:
    """Samples every GPU each interval on a daemon thread until stop()."""

    def __init__(
        self,
        session: NvmlSession,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.session = session
        self.interval_s = interval_s
        self.clock = clock
        self.phase = "startup"
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.active = list(range(session.device_count()))
        self.energy_every = max(1, round(ENERGY_EVERY_S / interval_s)) if interval_s > 0 else 1
        self._ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
        self._started = 0.0
        self.cpu_s = 0.0  # CPU time the sampling itself took: its cost, recorded in the result

    def start(self) -> Sampler:
        self._started = self.clock()
        self.sample_once()
        self._thread.start()
        return self

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sample_once(energy=True)
        return self.result()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            before = time.thread_time()
            self.sample_once()
            self.cpu_s += time.thread_time() - before

    def sample_once(self, energy: bool | None = None) -> None:
        """One reading of every active GPU; the energy counter on every energy_every-th call."""
        now = self.clock() - self._started
        if energy is None:
            energy = self._ticks % self.energy_every == 0
        self._ticks += 1
        for index in list(self.active):
            try:
                reading = self.session.sample(index, energy=energy)
            except GpuLostError as error:
                # Recorded, not fatal: the run goes on without this GPU's metrics.
                self.active.remove(index)
                self.events.append(
                    {
                        "t": now,
                        "gpu": index,
                        "event": "gpu_lost",
                        "phase": self.phase,
                        "message": str(error),
                    }
                )
                continue
            self.samples.append({"t": now, "gpu": index, "phase": self.phase, **reading})

    def result(self) -> dict[str, Any]:
        """Per device: per-phase mean and max of each metric, energy, throttle reasons seen."""
        devices = []
        for index in range(self.session.device_count() or 0):
            mine = [s for s in self.samples if s["gpu"] == index]
            phases: dict[str, dict[str, Any]] = {}
            for phase in dict.fromkeys(s["phase"] for s in mine):
                in_phase = [s for s in mine if s["phase"] == phase]
                phases[phase] = {
                    m: _stats([s[m] for s in in_phase if s[m] is not None]) for m in METRICS
                }
            counters = [s["energy_mj"] for s in mine if s["energy_mj"] is not None]
            if len(counters) >= 2:
                energy, source = (counters[-1] - counters[0]) / 1000, "nvml_total_energy_counter"
            else:
                energy, source = _integrate_power(mine), "integrated_power"
            seen = sorted({r for s in mine for r in (s["throttle"] or [])})
            memory = [s["mem_used_mib"] for s in mine if s["mem_used_mib"] is not None]
            devices.append(
                {
                    "index": index,
                    "samples": len(mine),
                    # The first reading is taken before the worker starts: what others held.
                    "mem_used_mib_first": memory[0] if memory else None,
                    "mem_used_mib_peak": max(memory) if memory else None,
                    "phases": phases,
                    "energy_j": energy,
                    "energy_source": source if energy is not None else None,
                    "throttle_seen": seen,
                    "harmful_throttle": sorted(set(seen) & HARMFUL_THROTTLE),
                    "lost": any(e["gpu"] == index for e in self.events),
                }
            )
        return {
            "available": True,
            "reason": None,
            "interval_s": self.interval_s,
            "sampler_cpu_s": self.cpu_s,
            "duration_s": self.clock() - self._started,
            "devices": devices,
            "samples": self.samples,
            "events": self.events,
        }
