"""The modes benchmark's own parts: the background load it adds, the per-round spread."""

from __future__ import annotations

import time

import psutil

from bench.perf import modes


def test_background_load_spins_while_inside_and_is_gone_after() -> None:
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with modes.background_load(2):
        spinners = [p for p in me.children() if p.pid not in before]
        assert len(spinners) == 2
        deadline = time.monotonic() + 60
        # Each is busy: its CPU time grows (waited for, not slept on a guess).
        while min(p.cpu_times().user for p in spinners) < 0.05:
            assert time.monotonic() < deadline, "the spinners never ran"
            time.sleep(0.05)
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in spinners)


def figures(samples: list[float], epochs: list[float]) -> dict[str, object]:
    return {
        "steady_epoch_s": sorted(epochs)[len(epochs) // 2],
        "steady_samples_per_s": sorted(samples)[len(samples) // 2],
        "end_to_end_s": 10.0,
        "first_epoch_s": 1.0,
        "to_first_step_s": None,
        "gpu_run_peak_mib": None,
        "repeats": len(samples),
        "samples_each": samples,
        "epoch_each": epochs,
    }


def test_the_ratios_carry_their_spread_over_rounds() -> None:
    measured = {
        "fit (warm)": figures([100.0, 100.0, 100.0], [1.0, 1.0, 1.0]),
        "compiled (warm)": figures([90.0, 120.0, 150.0], [1.0, 0.5, 0.8]),
    }
    rows = {row[1]: row[2] for row in modes.mode_ratios("imdb", measured)}
    assert rows["training samples/s per round: compiled / fit"] == "1.20x [0.90-1.50]"
    assert rows["steady epoch per round: fit / compiled"] == "1.25x [1.00-2.00]"
    assert modes.spread_text([]) == "-" and modes.spread_text([2.0]) == "2.00x"
