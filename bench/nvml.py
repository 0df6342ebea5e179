"""The one module that talks to NVML (nvidia-ml-py): every call guarded, every failure a reason.

A metric the card does not support reads as None; a missing library or driver makes
`open_nvml` return the reason instead of a session; a GPU lost mid-run raises GpuLostError so
the sampler can record it and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Clock event (throttle) reason bits, named as nvidia-smi names them.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the card runs slower than it could while busy.
HARMFUL_THROTTLE = {
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
}


# NVML start-up error codes: what each means for the user.
_START_ADVICE = {
    12: "no NVIDIA driver is installed here (libnvidia-ml.so not found)",
    9: "the NVIDIA kernel module is not loaded: reboot after installing the driver, and check "
    "that Secure Boot is not blocking it (mokutil --sb-state)",
    18: "driver/library version mismatch: the driver was upgraded without a reboot; reboot",
    4: "no permission to use the GPU device files (/dev/nvidia*)",
}


class GpuLostError(RuntimeError):
    """The GPU stopped answering (fell off the bus, driver reset)."""


def load_library() -> Any:
    """The real binding; imported lazily so machines without it still run the CPU path."""
    import pynvml

    return pynvml


def decode_throttle(mask: int | None) -> list[str] | None:
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSession:
    """An initialised NVML with guarded accessors; close() shuts it down."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self._handles: dict[int, Any] = {}

    def guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        """The call's value, None if unsupported or failing; GpuLostError if the GPU is gone."""
        try:
            return call(*args)
        except self.lib.NVMLError as error:
            if getattr(error, "value", None) == self.lib.NVML_ERROR_GPU_IS_LOST:
                raise GpuLostError(str(error)) from error
            return None

    def device_count(self) -> int:
        return int(self.guarded(self.lib.nvmlDeviceGetCount) or 0)

    def handle(self, index: int) -> Any:
        """The device handle, looked up once: every NVML call costs a driver round trip."""
        if self._handles.get(index) is None:
            self._handles[index] = self.guarded(self.lib.nvmlDeviceGetHandleByIndex, index)
        return self._handles[index]

    def fingerprint(self, index: int) -> dict[str, Any]:
        """What identifies a GPU and its setup, as recorded in every result."""
        lib, handle = self.lib, self.handle(index)
        memory = self.guarded(lib.nvmlDeviceGetMemoryInfo, handle)
        capability = self.guarded(lib.nvmlDeviceGetCudaComputeCapability, handle)
        cuda = self.guarded(lib.nvmlSystemGetCudaDriverVersion)
        power_limit = self.guarded(lib.nvmlDeviceGetPowerManagementLimit, handle)
        persistence = self.guarded(lib.nvmlDeviceGetPersistenceMode, handle)
        name = self.guarded(lib.nvmlDeviceGetName, handle)
        uuid = self.guarded(lib.nvmlDeviceGetUUID, handle)
        driver = self.guarded(lib.nvmlSystemGetDriverVersion)
        return {
            "index": index,
            "name": None if name is None else _text(name),
            "uuid": None if uuid is None else _text(uuid),
            "memory_total_mib": None if memory is None else round(memory.total / 2**20),
            "driver_version": None if driver is None else _text(driver),
            "cuda_driver_version": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
            "compute_capability": None
            if capability is None
            else f"{capability[0]}.{capability[1]}",
            "pcie_generation": self.guarded(lib.nvmlDeviceGetCurrPcieLinkGeneration, handle),
            "pcie_width": self.guarded(lib.nvmlDeviceGetCurrPcieLinkWidth, handle),
            "power_limit_w": None if power_limit is None else power_limit / 1000,
            "persistence_mode": None if persistence is None else bool(persistence),
        }

    def sample(self, index: int, energy: bool = True) -> dict[str, Any]:
        """One reading of the live metrics; unsupported ones are None.

        energy=False skips the total-energy counter, which took 3.9 ms per read on an H100
        (every other call here took 1 to 5 us); energy_mj is then None.
        """
        lib, handle = self.lib, self.handle(index)
        if handle is None:
            raise GpuLostError(f"GPU {index} no longer has a handle")
        utilization = self.guarded(lib.nvmlDeviceGetUtilizationRates, handle)
        memory = self.guarded(lib.nvmlDeviceGetMemoryInfo, handle)
        power = self.guarded(lib.nvmlDeviceGetPowerUsage, handle)
        throttle = self.guarded(lib.nvmlDeviceGetCurrentClocksEventReasons, handle)
        return {
            "gpu_util": None if utilization is None else utilization.gpu,
            "mem_util": None if utilization is None else utilization.memory,
            "mem_used_mib": None if memory is None else round(memory.used / 2**20),
            "power_w": None if power is None else power / 1000,
            "energy_mj": self.guarded(lib.nvmlDeviceGetTotalEnergyConsumption, handle)
            if energy
            else None,
            "temp_c": self.guarded(lib.nvmlDeviceGetTemperature, handle, lib.NVML_TEMPERATURE_GPU),
            "sm_clock_mhz": self.guarded(lib.nvmlDeviceGetClockInfo, handle, lib.NVML_CLOCK_SM),
            "throttle": decode_throttle(throttle),
        }

    def close(self) -> None:
        try:
            self.lib.nvmlShutdown()
        except self.lib.NVMLError:
            return


def open_nvml(loader: Callable[[], Any] = load_library) -> NvmlSession | str:
    """A session, or the reason there is none (no binding, no library, no driver, no GPU)."""
    try:
        lib = loader()
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        lib.nvmlInit()
    except lib.NVMLError as error:
        advice = _START_ADVICE.get(int(getattr(error, "value", -1)), "")
        return f"NVML did not start: {error}; {advice}"
    session = NvmlSession(lib)
    if session.device_count() == 0:
        session.close()
        return "NVML found no NVIDIA GPU"
    return session
