"""NVML access and the sampler, on the fake NVML's named scenarios."""

from __future__ import annotations

import pytest

from bench.machine import nvml
from bench.machine.telemetry import Sampler
from tests.fakes.nvml import FakeNvml


def session(scenario: str, **kwargs) -> nvml.NvmlSession:
    opened = nvml.open_nvml(lambda: FakeNvml(scenario, **kwargs))
    assert isinstance(opened, nvml.NvmlSession), opened
    return opened


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("no_driver", "no NVIDIA driver is installed here"),
        ("mismatch", "driver/library version mismatch: the driver's user libraries were upgraded"),
    ],
)
def test_no_nvml_gives_a_reason(scenario: str, reason: str) -> None:
    opened = nvml.open_nvml(lambda: FakeNvml(scenario))
    assert isinstance(opened, str)
    assert reason in opened


def test_missing_binding_gives_a_reason() -> None:
    def no_module() -> None:
        raise ImportError("No module named 'pynvml'")

    assert "nvidia-ml-py is not installed" in str(nvml.open_nvml(no_module))


def test_real_nvml_here_says_why_it_is_missing() -> None:
    """Machines without an NVIDIA driver: the real binding must say so, not crash."""
    opened = nvml.open_nvml()
    if isinstance(opened, nvml.NvmlSession):  # a GPU machine: then it must see a GPU
        assert opened.device_count() >= 1
        opened.close()
    else:
        assert "NVML did not start" in opened or "not installed" in opened


def test_fingerprint_of_a_healthy_gpu() -> None:
    fingerprint = session("healthy").fingerprint(0)
    assert fingerprint == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000000-fake",
        "memory_total_mib": 81920,
        "driver_version": "580.95.05",
        "cuda_driver_version": "13.0",
        "compute_capability": "9.0",
        "pcie_generation": 5,
        "pcie_width": 16,
        "power_limit_w": 700.0,
        "persistence_mode": True,
    }


def test_unsupported_metrics_are_none_not_a_crash() -> None:
    opened = session("unsupported")
    assert opened.fingerprint(0)["power_limit_w"] is None
    reading = opened.sample(0)
    assert reading["power_w"] is None and reading["energy_mj"] is None
    assert reading["throttle"] is None
    assert reading["gpu_util"] is not None


def fake_clock(step: float = 0.2):
    ticks = iter(range(10_000))
    return lambda: next(ticks) * step


def test_sampler_tags_phases_and_measures_energy_from_the_counter() -> None:
    sampler = Sampler(session("healthy"), clock=fake_clock())
    sampler.start()
    sampler._stop.set()  # drive it by hand: deterministic samples
    sampler._thread.join()
    for phase in ("data_load", "first_epoch", "first_epoch", "steady_epochs", "evaluation"):
        sampler.set_phase(phase)
        sampler.sample_once()
    result = sampler.stop()
    device = result["devices"][0]
    assert list(device["phases"]) == [
        "startup",
        "data_load",
        "first_epoch",
        "steady_epochs",
        "evaluation",
    ]
    assert device["phases"]["first_epoch"]["gpu_util"] == {"mean": 35.0, "max": 40}
    # 7 counter readings, 60 J apart: 6 intervals
    assert device["energy_j"] == pytest.approx(360.0)
    assert device["energy_source"] == "nvml_total_energy_counter"
    assert device["harmful_throttle"] == []


def test_sampler_integrates_power_without_an_energy_counter() -> None:
    opened = session("healthy")
    opened.lib.nvmlDeviceGetTotalEnergyConsumption = lambda handle: (_ for _ in ()).throw(
        opened.lib.NVMLError(3)
    )
    sampler = Sampler(opened, clock=fake_clock(0.5))
    sampler.start()
    sampler._stop.set()
    sampler._thread.join()
    sampler.sample_once()
    result = sampler.stop()
    # 300 W over readings 0.5 s apart, three readings: 1.0 s * 300 W
    assert result["devices"][0]["energy_j"] == pytest.approx(300.0)
    assert result["devices"][0]["energy_source"] == "integrated_power"


def test_gpu_lost_mid_run_is_recorded_not_fatal() -> None:
    sampler = Sampler(session("lost", lose_after=2), clock=fake_clock())
    sampler.start()
    sampler._stop.set()
    sampler._thread.join()
    sampler.set_phase("steady_epochs")
    for _ in range(4):
        sampler.sample_once()
    result = sampler.stop()
    assert [e["event"] for e in result["events"]] == ["gpu_lost"]
    assert result["events"][0]["phase"] == "steady_epochs"
    assert result["devices"][0]["lost"] is True
    assert result["devices"][0]["samples"] == 2


def test_throttling_is_named() -> None:
    sampler = Sampler(session("throttling"), clock=fake_clock()).start()
    result = sampler.stop()
    assert result["devices"][0]["harmful_throttle"] == ["hw_thermal_slowdown", "sw_power_cap"]


def test_background_thread_samples_on_its_own() -> None:
    sampler = Sampler(session("two_gpus"), interval_s=0.01).start()
    import time

    time.sleep(0.2)
    result = sampler.stop()
    assert len(result["devices"]) == 2
    assert all(d["samples"] >= 5 for d in result["devices"])


class CountingNvml(FakeNvml):
    """The healthy fake, counting the driver round trips a reading makes."""

    def __init__(self) -> None:
        super().__init__("healthy")
        self.calls: dict[str, int] = {}

    def __getattribute__(self, name: str):
        if name.startswith("nvmlDevice"):
            calls = object.__getattribute__(self, "calls")
            calls[name] = calls.get(name, 0) + 1
        return object.__getattribute__(self, name)


def counting_sampler(interval_s: float, ticks: int) -> tuple[CountingNvml, Sampler]:
    """A sampler on the counting fake, ticked by hand `ticks` times."""
    lib = CountingNvml()
    opened = nvml.open_nvml(lambda: lib)
    assert isinstance(opened, nvml.NvmlSession)
    sampler = Sampler(opened, interval_s=interval_s)
    for _ in range(ticks):
        sampler.sample_once()
    return lib, sampler


def test_the_costly_energy_counter_is_read_every_five_seconds_and_at_stop() -> None:
    lib, sampler = counting_sampler(0.2, 60)
    result = sampler.stop()  # not started: stop() takes the last reading only
    assert lib.calls["nvmlDeviceGetHandleByIndex"] == 1  # looked up once, not per reading
    assert lib.calls["nvmlDeviceGetUtilizationRates"] == 61
    assert lib.calls["nvmlDeviceGetMemoryInfo"] == 61
    assert lib.calls["nvmlDeviceGetTotalEnergyConsumption"] == 4  # ticks 0, 25, 50 and stop
    reads = [i for i, s in enumerate(sampler.samples) if s["energy_mj"] is not None]
    assert reads == [0, 25, 50, 60]
    # From the counter's first and last reads: 60 readings of 0.2 s at the fake's 300 W.
    assert result["devices"][0]["energy_j"] == pytest.approx(60 * 60.0)
    assert result["devices"][0]["energy_source"] == "nvml_total_energy_counter"


def test_every_reading_reads_energy_when_the_interval_is_five_seconds() -> None:
    lib, _ = counting_sampler(5.0, 3)
    assert lib.calls["nvmlDeviceGetTotalEnergyConsumption"] == 3
