"""A fake pynvml with named scenarios, for the one module that talks to NVML (bench/nvml.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
MESSAGES = {
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "Driver/library version mismatch",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(MESSAGES.get(value, str(value)))
        self.value = value


SCENARIOS = ("no_driver", "mismatch", "healthy", "unsupported", "lost", "throttling", "two_gpus")


class FakeNvml:
    """Answers like pynvml for the scenario; counts samples so 'lost' can fail mid-run."""

    NVMLError = NVMLError
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(
        self, scenario: str = "healthy", name: str = "NVIDIA H100 80GB HBM3", lose_after: int = 3
    ) -> None:
        assert scenario in SCENARIOS, scenario
        self.scenario = scenario
        self.name = name
        self.lose_after = lose_after
        self.samples = 0
        self.energy_mj = 1_000_000
        self.shut_down = False

    def _unsupported_here(self) -> bool:
        return self.scenario == "unsupported"

    def nvmlInit(self) -> None:
        if self.scenario == "no_driver":
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.scenario == "mismatch":
            raise NVMLError(NVML_ERROR_LIB_RM_VERSION_MISMATCH)

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return 2 if self.scenario == "two_gpus" else 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self.name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}-fake"

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.95.05"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return (9, 0)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: int) -> int:
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: int) -> int:
        return 16

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        if self._unsupported_here():
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return 700_000

    def nvmlDeviceGetPersistenceMode(self, handle: int) -> int:
        return 1

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=80 * 2**30, used=(2 + self.samples) * 2**30, free=0)

    def _tick(self) -> None:
        if self.scenario == "lost" and self.samples >= self.lose_after:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._tick()
        self.samples += 1
        return SimpleNamespace(gpu=min(100, 10 * self.samples), memory=5)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if self._unsupported_here():
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if self._unsupported_here():
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        # A counter, as the driver's: 300 W for each 0.2 s reading so far, however often read.
        return self.energy_mj + 60_000 * self.samples

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 88 if self.scenario == "throttling" else 45

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        return 1005 if self.scenario == "throttling" else 1980

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        if self._unsupported_here():
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return 0x4 | 0x40 if self.scenario == "throttling" else 0x0
