"""A fake pynvml with named scenarios, for the one NVML seam (bench/machine/nvml.py).

Two families: the telemetry scenarios (one card, `FakeNvml("healthy")` and friends) and the
machine scenarios of `dlbench verify` (`machine("a100x8")`, ...), where each GPU has its own
health counters and answers differently when a (fake) probe process marks it loaded.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999
MESSAGES = {
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_UNKNOWN: "Unknown Error",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "Driver/library version mismatch",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(MESSAGES.get(value, str(value)))
        self.value = value


def unsupported() -> NVMLError:
    return NVMLError(NVML_ERROR_NOT_SUPPORTED)


SCENARIOS = ("no_driver", "mismatch", "healthy", "unsupported", "lost", "throttling", "two_gpus")


@dataclass
class FakeGpu:
    """One card's answers. None for a counter means the card does not support it."""

    name: str = "NVIDIA H100 80GB HBM3"
    capability: tuple[int, int] = (9, 0)
    memory_gib: int = 80
    ecc_enabled: bool | None = True
    ecc_uncorrected: tuple[int, int] = (0, 0)  # volatile, aggregate
    retired_pages_pending: bool | None = False
    remapped_rows: tuple[int, int, int, int] | None = (0, 0, 0, 0)  # corr, unc, pending, failed
    pcie_max: tuple[int, int, int] = (5, 5, 16)  # GPU max gen, slot max gen, max width
    pcie_idle: tuple[int, int] = (5, 16)  # gen, width while idle (real cards drop gen)
    pcie_load: tuple[int, int] = (5, 16)  # gen, width while a probe runs on it
    pcie_replay: int = 0
    temp_c: tuple[int, int] = (45, 45)  # idle, loaded
    slowdown_c: int | None = 87
    persistence: int = 1
    thermal_reads: int = 0  # the first N loaded throttle reads also show hw_thermal_slowdown
    xid_after_reads: tuple[int, int] | None = None  # (loaded reads, xid): raised, then lost
    bus_id: str = ""
    # NVML calls this card answers with an error code instead ('name' or 'name:argument').
    refuses: dict[str, int] = field(default_factory=dict)
    # What a probe process pinned to this card reports differently (the software side).
    probe: dict[str, Any] = field(default_factory=dict)
    loaded: bool = False
    loaded_reads: int = 0
    lost: bool = False


A100 = FakeGpu(
    name="NVIDIA A100-SXM4-80GB",
    capability=(8, 0),
    pcie_max=(4, 4, 16),
    pcie_idle=(1, 16),
    pcie_load=(4, 16),
    temp_c=(34, 66),
    slowdown_c=87,
)
A10G = dataclasses.replace(
    A100, name="NVIDIA A10G", capability=(8, 6), memory_gib=24, temp_c=(30, 71), slowdown_c=93
)
RTX_4090 = dataclasses.replace(
    A100,
    name="NVIDIA GeForce RTX 4090",
    capability=(8, 9),
    memory_gib=24,
    ecc_enabled=None,
    retired_pages_pending=None,
    remapped_rows=None,
    temp_c=(38, 74),
    slowdown_c=90,
    persistence=0,
)


def _fleet(base: FakeGpu, count: int, **changed_gpu: dict[str, Any]) -> list[FakeGpu]:
    """`count` copies of base; changed_gpu maps 'gpuN' to the fields that GPU differs in."""
    gpus = []
    for index in range(count):
        changes = changed_gpu.get(f"gpu{index}", {})
        gpus.append(
            dataclasses.replace(base, bus_id=f"00000000:{0x10 + index:02X}:00.0", **changes)
        )
    return gpus


H100 = dataclasses.replace(
    A100,
    name="NVIDIA H100 80GB HBM3",
    capability=(9, 0),
    pcie_max=(5, 5, 16),
    pcie_load=(5, 16),
    probe={"rates": {"float32": 51.0, "bfloat16": 700.0, "copy": 2900.0}},
)
REFUSED = NVML_ERROR_UNKNOWN


def _one(base: FakeGpu = A100, **changes: Any) -> list[FakeGpu]:
    if "probe" in changes:
        changes["probe"] = {**base.probe, **changes["probe"]}
    return _fleet(base, 1, gpu0=changes)


# The machine scenarios of `dlbench verify`, each a test in tests/unit/test_verify.py.
MACHINES: dict[str, Any] = {
    "no_gpu_found": lambda: [],
    "ecc_off": lambda: _one(ecc_enabled=False),
    "ecc_lifetime_only": lambda: _one(ecc_uncorrected=(0, 3)),
    "ecc_mode_unreadable": lambda: _one(refuses={"nvmlDeviceGetEccMode": NVML_ERROR_NO_PERMISSION}),
    "ecc_counters_unreadable": lambda: _one(refuses={"nvmlDeviceGetTotalEccErrors": REFUSED}),
    "ecc_lifetime_unreadable": lambda: _one(refuses={"nvmlDeviceGetTotalEccErrors:1": REFUSED}),
    "ecc_errors_lifetime_unreadable": lambda: _one(
        ecc_uncorrected=(4, 0), refuses={"nvmlDeviceGetTotalEccErrors:1": REFUSED}
    ),
    "retired_pages_pending": lambda: _one(retired_pages_pending=True),
    "retired_pages_unreadable": lambda: _one(
        refuses={"nvmlDeviceGetRetiredPagesPendingStatus": REFUSED}
    ),
    "row_remap_unreadable": lambda: _one(refuses={"nvmlDeviceGetRemappedRows": REFUSED}),
    "slot_limits_link": lambda: _one(H100, pcie_max=(5, 4, 16), pcie_load=(4, 16)),
    "link_maxima_unsupported": lambda: _one(
        refuses={"nvmlDeviceGetGpuMaxPcieLinkGeneration": NVML_ERROR_NOT_SUPPORTED}
    ),
    "link_maxima_unreadable": lambda: _one(refuses={"nvmlDeviceGetMaxPcieLinkWidth": REFUSED}),
    "narrow_link_maxima_unreadable": lambda: _one(
        pcie_load=(4, 8), refuses={"nvmlDeviceGetGpuMaxPcieLinkGeneration": REFUSED}
    ),
    "link_unreported_under_load": lambda: _one(
        refuses={"nvmlDeviceGetCurrPcieLinkGeneration": NVML_ERROR_NOT_SUPPORTED}
    ),
    "replay_high": lambda: _one(pcie_replay=250),
    "replay_unreadable": lambda: _one(refuses={"nvmlDeviceGetPcieReplayCounter": REFUSED}),
    "throttle_unreadable": lambda: _one(
        refuses={"nvmlDeviceGetCurrentClocksEventReasons": REFUSED}
    ),
    "thermal_short": lambda: _one(thermal_reads=1),
    "hot_near_slowdown": lambda: _one(temp_c=(40, 84)),
    "slowdown_unsupported": lambda: _one(slowdown_c=None),
    "temperature_unreadable": lambda: _one(refuses={"nvmlDeviceGetTemperature": REFUSED}),
    "persistence_unreadable": lambda: _one(
        refuses={"nvmlDeviceGetPersistenceMode": NVML_ERROR_NO_PERMISSION}
    ),
    "lost_under_load": lambda: _one(xid_after_reads=(1, 79)),
    "unknown_card": lambda: _one(name="NVIDIA Imaginary X1"),
    "slow_matmul": lambda: _one(probe={"rates": {"float32": 7.0, "bfloat16": 60.0}}),
    "slow_copy": lambda: _one(probe={"rates": {"copy": 1000.0}}),
    "cpu_only_backend_build": lambda: _one(probe={"device_type": "CPU", "cuda_build": False}),
    "cuda_libraries_missing": lambda: _one(probe={"device_type": "CPU", "cuda_build": True}),
    "cuda_visible_empty": _one,
    "cuda_visible_subset": lambda: _fleet(A100, 2),
    "probe_crashed": lambda: _one(probe={"error": "ImportError: libcudart.so.12: not found"}),
    "workload_failed": lambda: _one(probe={"workload": "failed"}),
    "h100_at_reference": lambda: _one(H100),
    "t4_without_bfloat16": lambda: _one(
        name="Tesla T4", probe={"rates": {"float32": 7.0, "copy": 250.0}}
    ),
    "second_gpu_on_cpu": lambda: _fleet(
        A100, 2, gpu1={"probe": {"device_type": "CPU", "cuda_build": True}}
    ),
    "kernel_xid_unplaced": _one,
    "h100_below_reference": lambda: _one(H100, probe={"samples_per_s": 40_000.0}),
    "a100x8": lambda: _fleet(A100, 8),
    "x8_gen3_under_load": lambda: _fleet(A100, 8, gpu5={"pcie_load": (3, 8)}),
    "row_remap_pending": lambda: _fleet(A100, 4, gpu2={"remapped_rows": (0, 1, 1, 0)}),
    "row_remap_failure": lambda: _fleet(A100, 4, gpu1={"remapped_rows": (0, 8, 0, 1)}),
    "uncorrected_ecc": lambda: _fleet(A100, 4, gpu3={"ecc_uncorrected": (2, 5)}),
    "xid79_mid_verify": lambda: _fleet(A100, 4, gpu1={"xid_after_reads": (3, 79)}),
    "three_of_four_a10g": lambda: _fleet(A10G, 3),
    "lost_at_start": lambda: _fleet(A100, 2, gpu1={"lost": True}),
    "geforce_no_ecc": lambda: _fleet(RTX_4090, 1),
    "thermal_half_load": lambda: _fleet(A100, 2, gpu0={"thermal_reads": 5, "temp_c": (40, 86)}),
    "driver_version_unreadable": _one,
    "gpu_name_unreadable": lambda: _one(refuses={"nvmlDeviceGetName": REFUSED}),
    "gpu_count_unreadable": _one,
    "handle_unreadable": _one,
}
# NVML calls that are not about one card (the driver, the count, the handles), refused with
# an error in a scenario's machine.
SYSTEM_REFUSES: dict[str, dict[str, int]] = {
    "driver_version_unreadable": {
        "nvmlSystemGetDriverVersion": REFUSED,
        "nvmlSystemGetCudaDriverVersion": REFUSED,
    },
    "gpu_count_unreadable": {"nvmlDeviceGetCount": REFUSED},
    "handle_unreadable": {"nvmlDeviceGetHandleByIndex": REFUSED},
}
# The kernel log a scenario's verify reads (none otherwise).
KERNEL_LOG: dict[str, list[str]] = {
    "kernel_xid_unplaced": ["[  9.1] NVRM: Xid (PCI:0000:99:00): 48, pid=12, name=python, DBE"],
}
# The environment verify runs in, where a scenario's differs from an empty one.
ENVIRON: dict[str, dict[str, str]] = {
    "cuda_visible_empty": {"CUDA_VISIBLE_DEVICES": ""},
    "cuda_visible_subset": {"CUDA_VISIBLE_DEVICES": "1"},
}


class FakeNvml:
    """Answers like pynvml for the scenario; counts samples so 'lost' can fail mid-run."""

    NVMLError = NVMLError
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1

    def __init__(
        self,
        scenario: str = "healthy",
        name: str = "NVIDIA H100 80GB HBM3",
        lose_after: int = 3,
        gpus: list[FakeGpu] | None = None,
    ) -> None:
        assert scenario in SCENARIOS or scenario in MACHINES, scenario
        self.scenario = scenario
        self.name = name
        self.lose_after = lose_after
        self.samples = 0
        self.energy_mj = 1_000_000
        self.shut_down = False
        count = 2 if scenario == "two_gpus" else 1
        self.gpus = (
            gpus
            if gpus is not None
            else [FakeGpu(name=name, bus_id=f"00000000:{0x10 + i:02X}:00.0") for i in range(count)]
        )
        self.environ: dict[str, str] = {}
        self.refuses: dict[str, int] = SYSTEM_REFUSES.get(scenario, {})
        self.pending_xids: list[tuple[int, int]] = []
        self.event_sets = 0
        self.freed_sets = 0

    # The machine side: what fake probe processes and tests drive.
    def set_loaded(self, index: int, loaded: bool) -> None:
        self.gpus[index].loaded = loaded

    def uuid_of(self, index: int) -> str:
        return f"GPU-0000000{index}-fake"

    def pinned(self, env: dict[str, str]) -> int | None:
        """The GPU a process's environment pins it to, read as CUDA reads it; None: not one."""
        entry = env.get("CUDA_VISIBLE_DEVICES")
        if entry is None:
            return None
        if entry.isascii() and entry.isdigit():
            # CUDA's own order differs from NVML's unless told to sort by PCI bus id.
            index = int(entry) if env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" else None
            return index if index is not None and index < len(self.gpus) else None
        uuids = [self.uuid_of(i) for i in range(len(self.gpus))]
        return uuids.index(entry) if entry in uuids else None

    def _gpu(self, handle: int, call: str = "", argument: int | None = None) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        for key in (call, f"{call}:{argument}"):
            if key in gpu.refuses:
                raise NVMLError(gpu.refuses[key])
        return gpu

    def _unsupported_here(self) -> bool:
        return self.scenario == "unsupported"

    def nvmlInit(self) -> None:
        if self.scenario == "no_driver":
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.scenario == "mismatch":
            raise NVMLError(NVML_ERROR_LIB_RM_VERSION_MISMATCH)

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def _system(self, call: str) -> None:
        if call in self.refuses:
            raise NVMLError(self.refuses[call])

    def nvmlDeviceGetCount(self) -> int:
        self._system("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._system("nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        refused = self.gpus[handle].refuses.get("nvmlDeviceGetUUID")
        if refused is not None:
            raise NVMLError(refused)
        return self.uuid_of(handle)

    def nvmlDeviceGetPciInfo(self, handle: int) -> Any:
        return SimpleNamespace(busId=self._gpu(handle).bus_id.encode())

    def nvmlSystemGetDriverVersion(self) -> str:
        self._system("nvmlSystemGetDriverVersion")
        return "580.95.05"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return 13000

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self._gpu(handle).capability

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetCurrPcieLinkGeneration")
        return (gpu.pcie_load if gpu.loaded else gpu.pcie_idle)[0]

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: int) -> int:
        gpu = self._gpu(handle)
        return (gpu.pcie_load if gpu.loaded else gpu.pcie_idle)[1]

    def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetGpuMaxPcieLinkGeneration").pcie_max[0]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetMaxPcieLinkGeneration").pcie_max[1]

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetMaxPcieLinkWidth").pcie_max[2]

    def nvmlDeviceGetPcieReplayCounter(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetPcieReplayCounter").pcie_replay

    def nvmlDeviceGetEccMode(self, handle: int) -> list[int]:
        enabled = self._gpu(handle, "nvmlDeviceGetEccMode").ecc_enabled
        if enabled is None:
            raise unsupported()
        return [int(enabled), int(enabled)]

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEccErrors", counter)
        if gpu.ecc_enabled is None:
            raise unsupported()
        return gpu.ecc_uncorrected[counter]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: int) -> int:
        pending = self._gpu(handle, "nvmlDeviceGetRetiredPagesPendingStatus").retired_pages_pending
        if pending is None:
            raise unsupported()
        return int(pending)

    def nvmlDeviceGetRemappedRows(self, handle: int) -> tuple[int, int, int, int]:
        rows = self._gpu(handle, "nvmlDeviceGetRemappedRows").remapped_rows
        if rows is None:
            raise unsupported()
        return rows

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:
        slowdown = self._gpu(handle).slowdown_c
        if slowdown is None:
            raise unsupported()
        return slowdown

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        if self._unsupported_here():
            raise unsupported()
        return 700_000

    def nvmlDeviceGetPersistenceMode(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetPersistenceMode").persistence

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        total = self._gpu(handle).memory_gib * 2**30
        return SimpleNamespace(total=total, used=(2 + self.samples) * 2**30, free=0)

    def _tick(self) -> None:
        if self.scenario == "lost" and self.samples >= self.lose_after:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._tick()
        self.samples += 1
        return SimpleNamespace(gpu=min(100, 10 * self.samples), memory=5)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if self._unsupported_here():
            raise unsupported()
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if self._unsupported_here():
            raise unsupported()
        # A counter, as the driver's: 300 W for each 0.2 s reading so far, however often read.
        return self.energy_mj + 60_000 * self.samples

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        if self.scenario == "throttling":
            return 88
        gpu = self._gpu(handle, "nvmlDeviceGetTemperature")
        return gpu.temp_c[1] if gpu.loaded else gpu.temp_c[0]

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        if self.scenario == "throttling":
            return 1005
        if self.scenario in SCENARIOS:
            return 1980
        gpu = self._gpu(handle)
        slowed = gpu.loaded and gpu.loaded_reads <= gpu.thermal_reads
        return 1005 if slowed else 1980 if gpu.loaded else 210

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        if self._unsupported_here():
            raise unsupported()
        if self.scenario == "throttling":
            return 0x4 | 0x40
        if self.scenario in SCENARIOS:
            return 0x0
        gpu = self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        if not gpu.loaded:
            return 0x1  # idle
        gpu.loaded_reads += 1
        if gpu.xid_after_reads and gpu.loaded_reads == gpu.xid_after_reads[0]:
            self.pending_xids.append((handle, gpu.xid_after_reads[1]))
            gpu.lost = True  # Xid 79: fallen off the bus; every later call says so
        return 0x4 | (0x40 if gpu.loaded_reads <= gpu.thermal_reads else 0)

    # Events: Xids queue up in pending_xids and come out of nvmlEventSetWait_v2.
    def nvmlEventSetCreate(self) -> str:
        self.event_sets += 1
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle: int, types: int, event_set: str) -> None:
        if self.scenario in SCENARIOS:
            raise unsupported()

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> Any:
        if self.pending_xids:
            handle, xid = self.pending_xids.pop(0)
            return SimpleNamespace(device=handle, eventType=0x8, eventData=xid)
        time.sleep(min(timeout_ms, 5) / 1000)  # the real call blocks up to timeout_ms
        raise NVMLError(NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: str) -> None:
        self.freed_sets += 1


def machine(scenario: str) -> FakeNvml:
    """The fake NVML of one named machine scenario (see MACHINES)."""
    if scenario in ("mismatch", "no_driver"):
        return FakeNvml(scenario)
    fake = FakeNvml(scenario, gpus=MACHINES[scenario]())
    fake.environ = ENVIRON.get(scenario, {})
    return fake
