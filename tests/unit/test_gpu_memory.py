"""The GPU memory policy's variables and the peak memory read from the sampler's readings."""

from __future__ import annotations

import pytest

from bench.machine import nvml
from bench.machine.telemetry import Sampler, memory_peak, unavailable
from bench.training import backends
from tests.fakes.nvml import FakeNvml


def test_on_demand_turns_preallocation_off_and_growth_on() -> None:
    environ: dict[str, str] = {}
    applied = backends.apply_gpu_memory_policy("on-demand", environ)
    assert environ == backends.ON_DEMAND_ENV
    assert environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert applied == {"policy": "on-demand", "env": environ}


def test_a_users_own_setting_wins_and_is_recorded() -> None:
    environ = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.1", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
    applied = backends.apply_gpu_memory_policy("on-demand", environ)
    assert applied["env"] == {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.1",
    }


def test_framework_default_sets_nothing() -> None:
    environ: dict[str, str] = {"PATH": "/bin"}
    applied = backends.apply_gpu_memory_policy("framework-default", environ)
    assert environ == {"PATH": "/bin"} and applied["env"] == {}


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="on-demand"):
        backends.apply_gpu_memory_policy("all", {})


def test_peak_is_the_largest_rise_over_the_first_reading() -> None:
    session = nvml.open_nvml(lambda: FakeNvml("healthy"))
    assert isinstance(session, nvml.NvmlSession)
    sampler = Sampler(session, interval_s=0.2)
    for _ in range(4):  # by hand, no thread: the first reading stands for "before the worker"
        sampler.sample_once()
    telemetry = sampler.result()
    used = [s["mem_used_mib"] for s in telemetry["samples"]]
    assert used == sorted(used) and used[-1] > used[0], "the fake's memory grows per reading"
    peak = memory_peak(telemetry)
    assert peak["peak_mib"] == max(used) and peak["before_mib"] == used[0]
    assert peak["run_peak_mib"] == max(used) - used[0] and peak["reason"] is None


def test_without_telemetry_the_peak_says_why() -> None:
    peak = memory_peak(unavailable("no NVIDIA driver"))
    assert peak["peak_mib"] is None and peak["run_peak_mib"] is None
    assert peak["reason"] == "no NVIDIA driver"
