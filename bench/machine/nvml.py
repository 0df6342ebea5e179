"""The one module that talks to NVML (nvidia-ml-py): every call guarded, every failure a reason.

A metric the card does not support reads as None (or, through `read`, with the reason); a
missing library or driver makes `open_nvml` return the reason instead of a session; a GPU lost
mid-run raises GpuLostError so the sampler can record it and carry on.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


NOT_SUPPORTED = "not supported"
NO_BINDING = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"  # NVML was never asked
NO_VALUE = "NVML gave no value"
IMPOSSIBLE = "NVML gave an impossible value"
# What NVML and its binding put where a value is not available: an unsigned -1 of 32 or 64 bits.
SENTINELS = (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
NO_GPU_FOUND = "NVML found no NVIDIA GPU"  # NVML started and counted none
COUNT_UNREAD = "NVML started but did not say how many GPUs there are"  # the count call failed
# NVML error codes this module acts on (the binding's values).
ERROR_NOT_SUPPORTED = 3
ERROR_TIMEOUT = 10
ERROR_VERSION_MISMATCH = 18
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError
# NVML start-up error codes: what each means for the user.
_START_ADVICE = {
    12: "no NVIDIA driver is installed here (libnvidia-ml.so not found)",
    9: "the NVIDIA kernel module is not loaded: reboot after installing the driver, and check "
    "that Secure Boot is not blocking it (mokutil --sb-state)",
    ERROR_VERSION_MISMATCH: "driver/library version mismatch: the driver's user libraries were "
    "upgraded under the loaded kernel module; reboot (or reload the nvidia module)",
    4: "no permission to use the GPU device files (/dev/nvidia*)",
}


class StartFailure(str):
    """Why NVML gave no session (a str everywhere a reason is shown) with NVML's error code."""

    code: int | None = None

    @classmethod
    def of(cls, text: str, code: int | None = None) -> StartFailure:
        failure = cls(text)
        failure.code = code
        return failure

    @property
    def version_mismatch(self) -> bool:
        return self.code == ERROR_VERSION_MISMATCH


@dataclass
class Reading:
    """One guarded NVML answer: the value, or why there is none ('not supported' or the error)."""

    value: Any = None
    missing: str | None = None


class GpuUnreadError(RuntimeError):
    """NVML gave no handle for a GPU it counted: nothing about it could be read."""


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
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# What a reading must look like to count as read; anything else is a reading NVML did not give.
def is_count(value: Any) -> bool:
    """A counter or a level: a non-negative integer that is not a not-available filler."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 0
        and value not in SENTINELS
    )


def is_positive(value: Any) -> bool:
    """A PCIe generation or width, a temperature limit, a version: zero is no answer."""
    return is_count(value) and value > 0


# Bounds no real reading passes: a GPU shuts down long before MAX_TEMP_C, PCIe has no
# generation above MAX_PCIE_GEN, and a link has one of PCIE_WIDTHS lanes.
MAX_TEMP_C = 150
MAX_PCIE_GEN = 7
PCIE_WIDTHS = (1, 2, 4, 8, 12, 16, 32)


def is_temperature(value: Any) -> bool:
    return is_count(value) and value <= MAX_TEMP_C


def is_temperature_limit(value: Any) -> bool:
    return is_positive(value) and value <= MAX_TEMP_C


def is_pcie_gen(value: Any) -> bool:
    return is_positive(value) and value <= MAX_PCIE_GEN


def is_pcie_width(value: Any) -> bool:
    return is_count(value) and value in PCIE_WIDTHS


def is_flag(value: Any) -> bool:
    return isinstance(value, int) and value in (0, 1)


def is_flags(value: Any) -> bool:
    """A mode as NVML gives it: a flag, or [current, pending] flags."""
    if isinstance(value, list | tuple):
        return bool(value) and all(is_flag(v) for v in value)
    return is_flag(value)


def is_rows(value: Any) -> bool:
    """Remapped rows: (correctable, uncorrectable, pending, failed)."""
    return isinstance(value, list | tuple) and len(value) == 4 and all(is_count(v) for v in value)


def is_text(value: Any) -> bool:
    return isinstance(value, str | bytes) and bool(value)


def unread_reason(value: Any, expect: Callable[[Any], bool]) -> str | None:
    """Why a returned value is no reading (None, a filler, negative, the wrong type), or None."""
    if value is None:
        return NO_VALUE
    if not expect(value):
        return f"{IMPOSSIBLE} {value!r}"
    return None


class NvmlSession:
    """An initialised NVML with guarded accessors; close() shuts it down."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self._handles: dict[int, Any] = {}

    def guarded(
        self, call: Callable[..., Any], *args: Any, expect: Callable[[Any], bool] | None = None
    ) -> Any:
        """The call's value, None if unsupported, failing or not what `expect` accepts;
        GpuLostError if the GPU is gone."""
        try:
            found = call(*args)
        except self.lib.NVMLError as error:
            if getattr(error, "value", None) == self.lib.NVML_ERROR_GPU_IS_LOST:
                raise GpuLostError(str(error)) from error
            return None
        if expect is not None and unread_reason(found, expect) is not None:
            return None
        return found

    def read(self, call: Callable[..., Any], *args: Any, expect: Callable[[Any], bool]) -> Reading:
        """Like guarded, but keeps the reason: 'not supported' is a finding, not a silence."""
        try:
            found = call(*args)
        except self.lib.NVMLError as error:
            code = getattr(error, "value", None)
            if code == self.lib.NVML_ERROR_GPU_IS_LOST:
                raise GpuLostError(str(error)) from error
            return Reading(missing=NOT_SUPPORTED if code == ERROR_NOT_SUPPORTED else str(error))
        except AttributeError:  # an older binding without this call
            return Reading(missing=f"{NOT_SUPPORTED} by this nvidia-ml-py")
        why = unread_reason(found, expect)
        return Reading(missing=why) if why else Reading(found)

    def health(self, index: int) -> dict[str, Reading]:
        """The health counters and limits verify judges, read once (no load needed)."""
        lib, handle = self.lib, self.handle(index)
        uncorrected = getattr(lib, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
        read = self.read
        return {
            "ecc_mode": read(lib.nvmlDeviceGetEccMode, handle, expect=is_flags),
            "ecc_uncorrected_volatile": read(
                lib.nvmlDeviceGetTotalEccErrors,
                handle,
                uncorrected,
                getattr(lib, "NVML_VOLATILE_ECC", 0),
                expect=is_count,
            ),
            "ecc_uncorrected_aggregate": read(
                lib.nvmlDeviceGetTotalEccErrors,
                handle,
                uncorrected,
                getattr(lib, "NVML_AGGREGATE_ECC", 1),
                expect=is_count,
            ),
            "retired_pages_pending": read(
                lib.nvmlDeviceGetRetiredPagesPendingStatus, handle, expect=is_flag
            ),
            "remapped_rows": read(lib.nvmlDeviceGetRemappedRows, handle, expect=is_rows),
            "pcie_gen_max_gpu": read(
                lib.nvmlDeviceGetGpuMaxPcieLinkGeneration, handle, expect=is_pcie_gen
            ),
            "pcie_gen_max_slot": read(
                lib.nvmlDeviceGetMaxPcieLinkGeneration, handle, expect=is_pcie_gen
            ),
            "pcie_width_max": read(lib.nvmlDeviceGetMaxPcieLinkWidth, handle, expect=is_pcie_width),
            "pcie_replay": read(lib.nvmlDeviceGetPcieReplayCounter, handle, expect=is_count),
            "temp_slowdown_c": read(
                lib.nvmlDeviceGetTemperatureThreshold,
                handle,
                getattr(lib, "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN", 1),
                expect=is_temperature_limit,
            ),
            "persistence_mode": read(lib.nvmlDeviceGetPersistenceMode, handle, expect=is_flag),
            "pci_bus_id": read(
                lambda h: _text(lib.nvmlDeviceGetPciInfo(h).busId), handle, expect=is_text
            ),
        }

    def load_reading(self, index: int) -> dict[str, Any]:
        """What can only be judged under load: link, throttle reasons, temperature, clock."""
        lib, handle = self.lib, self.handle(index)
        if handle is None:
            raise GpuLostError(f"GPU {index} no longer has a handle")
        guarded = self.guarded
        return {
            "pcie_gen": guarded(
                lib.nvmlDeviceGetCurrPcieLinkGeneration, handle, expect=is_pcie_gen
            ),
            "pcie_width": guarded(lib.nvmlDeviceGetCurrPcieLinkWidth, handle, expect=is_pcie_width),
            "throttle": decode_throttle(
                guarded(lib.nvmlDeviceGetCurrentClocksEventReasons, handle, expect=is_count)
            ),
            "temp_c": guarded(
                lib.nvmlDeviceGetTemperature,
                handle,
                lib.NVML_TEMPERATURE_GPU,
                expect=is_temperature,
            ),
            "sm_clock_mhz": guarded(
                lib.nvmlDeviceGetClockInfo, handle, lib.NVML_CLOCK_SM, expect=is_count
            ),
        }

    def device_count(self) -> int:
        return int(self.guarded(self.lib.nvmlDeviceGetCount, expect=is_count) or 0)

    def handle(self, index: int) -> Any:
        """The device handle, looked up once: every NVML call costs a driver round trip."""
        if self._handles.get(index) is None:
            self._handles[index] = self.guarded(self.lib.nvmlDeviceGetHandleByIndex, index)
        return self._handles[index]

    def fingerprint(self, index: int) -> dict[str, Any]:
        """What identifies a GPU and its setup, as recorded in every result."""
        lib, handle = self.lib, self.handle(index)
        if handle is None:
            raise GpuUnreadError(f"NVML gave no handle for GPU {index}")
        guarded = self.guarded
        memory = guarded(lib.nvmlDeviceGetMemoryInfo, handle)
        capability = guarded(lib.nvmlDeviceGetCudaComputeCapability, handle)
        cuda = guarded(lib.nvmlSystemGetCudaDriverVersion, expect=is_positive)
        power_limit = guarded(lib.nvmlDeviceGetPowerManagementLimit, handle, expect=is_positive)
        persistence = guarded(lib.nvmlDeviceGetPersistenceMode, handle, expect=is_flag)
        name = guarded(lib.nvmlDeviceGetName, handle, expect=is_text)
        uuid = guarded(lib.nvmlDeviceGetUUID, handle, expect=is_text)
        driver = guarded(lib.nvmlSystemGetDriverVersion, expect=is_text)
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
            "pcie_generation": guarded(
                lib.nvmlDeviceGetCurrPcieLinkGeneration, handle, expect=is_pcie_gen
            ),
            "pcie_width": guarded(lib.nvmlDeviceGetCurrPcieLinkWidth, handle, expect=is_pcie_width),
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
        return NO_BINDING
    try:
        lib.nvmlInit()
    except lib.NVMLError as error:
        code = int(getattr(error, "value", -1))
        advice = _START_ADVICE.get(code, "")
        return StartFailure.of(f"NVML did not start: {error}; {advice}", code)
    session = NvmlSession(lib)
    count = session.guarded(lib.nvmlDeviceGetCount, expect=is_count)
    if not count:
        session.close()
        return COUNT_UNREAD if count is None else NO_GPU_FOUND
    return session


@dataclass
class XidWatch:
    """Xid events of every GPU, collected on a thread for as long as the watch runs.

    NVML only reports Xids raised while subscribed; earlier ones are in the kernel log.
    """

    session: NvmlSession
    indices: list[int]
    wait_ms: int = 200
    events: list[dict[str, Any]] = field(default_factory=list)
    unsupported: dict[int, str] = field(default_factory=dict)
    failure: str | None = None

    def start(self) -> XidWatch:
        lib = self.session.lib
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._by_handle: dict[Any, int] = {}
        self._set: Any = None
        try:
            self._set = lib.nvmlEventSetCreate()
        except (lib.NVMLError, AttributeError) as error:
            self.failure = f"Xid events not available: {error}"
            return self
        for index in self.indices:
            try:
                handle = self.session.handle(index)
                lib.nvmlDeviceRegisterEvents(handle, XID_EVENT, self._set)
            except GpuLostError as error:
                self.unsupported[index] = f"GPU lost ({error})"
                continue
            except lib.NVMLError as error:
                code = getattr(error, "value", None)
                why = NOT_SUPPORTED if code == ERROR_NOT_SUPPORTED else str(error)
                self.unsupported[index] = why
                continue
            self._by_handle[_key(handle)] = index
        self._thread = threading.Thread(target=self._loop, name="xid-watch", daemon=True)
        self._thread.start()
        return self

    def _wait_once(self, timeout_ms: int) -> bool:
        """One wait; True if an event came (recorded), False on timeout or error."""
        lib = self.session.lib
        try:
            data = lib.nvmlEventSetWait_v2(self._set, timeout_ms)
            event = {
                "gpu": self._by_handle.get(_key(data.device)),
                "xid": int(data.eventData),
                "at_s": round(time.perf_counter() - self._started, 3),
                "source": "NVML event",
            }
        except lib.NVMLError as error:
            if getattr(error, "value", None) != ERROR_TIMEOUT:
                self._end(str(error))
            return False
        except Exception as error:  # an event the binding filled oddly must not end it unsaid
            self._end(f"{type(error).__name__}: {error}")
            return False
        self.events.append(event)
        return True

    def _end(self, why: str) -> None:
        self.failure = f"Xid watch stopped: {why}"
        self._stop.set()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wait_once(self.wait_ms)
        except Exception as error:  # whatever ends the thread is the watch's failure
            self._end(f"{type(error).__name__}: {error}")

    @property
    def stopped(self) -> str | None:
        """Why a watch that started ended early (NVML failed mid-run), else None."""
        return self.failure if self._set is not None else None

    def stop(self) -> list[dict[str, Any]]:
        """Stop the thread, collect what is still queued, free the set; the events."""
        if self._set is None:
            return self.events
        self._stop.set()
        self._thread.join()
        while self.failure is None and self._wait_once(0):
            pass
        with contextlib.suppress(self.session.lib.NVMLError):
            self.session.lib.nvmlEventSetFree(self._set)
        return self.events


def _key(handle: Any) -> Any:
    """The device a handle points to: the binding returns a fresh ctypes pointer each time."""
    if isinstance(handle, int):
        return handle
    return ctypes.cast(handle, ctypes.c_void_p).value
