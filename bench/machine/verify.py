"""`dlbench verify`: is every GPU there, healthy, used by Keras, and as fast as its kind?

This module judges: `judge()` turns recorded observations (bench/machine/verify_measure.py measures
them) into one line per GPU and check, and a verdict; tests drive it with the fake NVML.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench import exitcodes
from bench.machine import fingerprint as fingerprints
from bench.machine.nvml import COUNT_UNREAD, NO_BINDING, NOT_SUPPORTED, Reading

PASS, WARN, FAIL, INFO = "PASS", "WARN", "FAIL", "INFO"
# A signal was read (its line judges the value) or could not be (its line says why, no value).
READ, UNREAD = "read", "unread"
EXIT_CODES = {PASS: exitcodes.OK, FAIL: exitcodes.FAILED, WARN: exitcodes.WARN}
_RANK = {INFO: 0, PASS: 0, WARN: 1, FAIL: 2}
# Fractions of the datasheet peak: at or above the first is PASS, above the second WARN.
MATMUL_BANDS = (0.5, 0.25)
COPY_BANDS = (0.6, 0.35)
WORKLOAD_BAND = 0.7  # steady samples/s against this project's reference for the same card
SIBLING_BAND = 0.85  # below this share of its same-model siblings' median, a GPU is named
BAD_THROTTLE_FAIL = 0.2  # a bad throttle reason held for this share of the load is a FAIL
TEMP_MARGIN_C = 5  # closer than this to the slowdown threshold under load is a WARN
REPLAY_WARN = 100  # PCIe replays since boot: a few are normal, many mean a marginal link
UNDER_LOAD = ("pcie link", "throttle", "temperature")  # the checks only a loaded GPU answers
HARMLESS_THROTTLE = ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "sync_boost")
BAD_THROTTLE = (
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
# Xid codes worth naming: (meaning, status). Others are a WARN pointing at NVIDIA's catalog.
XIDS = {
    13: ("graphics engine exception (often the application's fault)", WARN),
    31: ("GPU memory page fault (MMU fault; often the application's fault)", WARN),
    43: ("GPU stopped processing", WARN),
    45: ("preemptive cleanup after an earlier error", WARN),
    48: ("double-bit ECC error", FAIL),
    63: ("row remapping or page retirement recorded: reset the GPU to apply it", WARN),
    64: ("row remapping or page retirement failed", FAIL),
    74: ("NVLink error", FAIL),
    79: ("GPU has fallen off the bus", FAIL),
    92: ("high single-bit ECC error rate", WARN),
    94: ("contained ECC error", WARN),
    95: ("uncontained ECC error", FAIL),
    119: ("GSP RPC timeout", FAIL),
    120: ("GSP error", FAIL),
}
DOCUMENT_KIND = "dlbench verify"  # marks a --json document, e.g. for `dlbench report`
RESET_FIX = (
    "reset the GPU when idle (sudo nvidia-smi -r -i {index}) or reboot; cloud: stop and start "
    "the instance to move to another host"
)
NVML_READ_FIX = "run nvidia-smi -q; if it fails too, reboot, then verify again"
# A crash of dlstation's own child process: a bug to report, not a finding about the machine.
INTERNAL_ERROR = (
    "internal error in dlstation (a bug, not a verdict on this machine): {}; please report it"
)
REPLACE_FIX = "the GPU needs replacing; cloud: stop and start the instance to move to another host"


@dataclass
class Check:
    """One line of the verdict: where (machine or a GPU), what, how it went, what to do."""

    name: str
    status: str
    detail: str
    fix: str | None = None
    scope: str = "machine"
    value: Any = None
    state: str = READ

    def __post_init__(self) -> None:
        # What was not read can be a WARN or an INFO, never a PASS or a FAIL.
        if self.state == UNREAD and self.status not in (WARN, INFO):
            raise ValueError(f"{self.name}: a signal that was not read cannot be {self.status}")


def unread(name: str, why: str, fix: str | None = None, status: str = WARN) -> Check:
    """The line of a signal that could not be read: what and why, never a value."""
    return Check(name, status, why, fix, state=UNREAD)


@dataclass
class GpuSeen:
    """What was measured on one GPU (or on the host's CPU when there is no GPU)."""

    key: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Reading] = field(default_factory=dict)
    load: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    workload: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    xids: list[dict[str, Any]] = field(default_factory=list)
    xid_watch: str | None = None  # why live Xid events were not available for this GPU
    xid_stopped: str | None = None  # why the Xid watch stopped before the verify ended

    @property
    def name(self) -> str:
        if self.key == "host":
            probe = self.probe or {}
            return str(probe["device_name"]) if probe.get("device_type") == "GPU" else "this CPU"
        return str(self.fingerprint.get("name") or f"GPU {self.index} (name not read)")

    @property
    def index(self) -> int:
        return int(self.fingerprint.get("index", 0))


@dataclass
class Observations:
    """Everything verify measured, in the shape judge() reads."""

    backend: str
    level: str
    expected: dict[str, Any]
    nvml_reason: str | None
    nvml_mismatch: bool = False
    counted: bool = True  # NVML started, so the GPU count (even 0) was read
    gpus: list[GpuSeen] = field(default_factory=list)
    cuda_visible: str | None = None  # CUDA_VISIBLE_DEVICES in verify's environment
    python: str = "python"  # the interpreter verify runs in, to name in install advice
    host: GpuSeen | None = None
    kernel_log: str | None = None  # why the kernel log was not read, None when it was
    unplaced_xids: list[dict[str, Any]] = field(default_factory=list)
    driver: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)


def datasheet() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("bench.facts").joinpath("gpus.json").read_text()
    )
    return loaded


def datasheet_for(gpu_name: str, table: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The first model whose substrings all occur in the name and whose exclusions do not."""
    upper = gpu_name.upper()
    for model in (table or datasheet())["models"]:
        wanted = all(m.upper() in upper for m in model["match"])
        unwanted = any(x.upper() in upper for x in model["exclude"])
        if wanted and not unwanted:
            found: dict[str, Any] = model
            return found
    return None


def band(ratio: float, bands: tuple[float, float]) -> str:
    return PASS if ratio >= bands[0] else WARN if ratio >= bands[1] else FAIL


def worst(statuses: list[str]) -> str:
    """The verdict of a set of lines: the worst of them (INFO counts as PASS)."""
    rank = max((_RANK[s] for s in statuses), default=0)
    return FAIL if rank == 2 else WARN if rank == 1 else PASS


def verdict(checks: list[Check]) -> str:
    return worst([c.status for c in checks])


def gpu_verdicts(checks: list[Check]) -> dict[str, str]:
    """Each GPU's verdict, in the order the GPUs were checked."""
    scopes = dict.fromkeys(c.scope for c in checks if c.scope != "machine")
    return {s: verdict([c for c in checks if c.scope == s]) for s in scopes}


def judge(seen: Observations) -> list[Check]:
    """The checks, in the order a person reads them: the machine, then each GPU."""
    checks = machine_checks(seen)
    for gpu in seen.gpus:
        checks += [dataclasses.replace(c, scope=gpu.key) for c in gpu_checks(seen, gpu)]
    if seen.host is not None:
        checks += [dataclasses.replace(c, scope="host") for c in host_checks(seen, seen.host)]
    checks += sibling_checks(seen)
    order = {"machine": -1, **{g.key: i for i, g in enumerate(seen.gpus)}}
    return sorted(checks, key=lambda c: order.get(c.scope, len(order)))


def machine_checks(seen: Observations) -> list[Check]:
    expected = seen.expected.get("count")
    checks = []
    if seen.nvml_mismatch:
        checks.append(
            Check(
                "nvml",
                FAIL,
                f"{seen.nvml_reason}",
                "reboot (or reload the nvidia module: sudo systemctl stop nvidia-persistenced; "
                "sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia; sudo modprobe nvidia)",
            )
        )
    elif seen.nvml_reason is not None and seen.counted:
        checks.append(Check("nvml", INFO, f"NVML answers: {seen.nvml_reason}"))
    elif seen.nvml_reason == COUNT_UNREAD:
        checks.append(unread("nvml", seen.nvml_reason, NVML_READ_FIX))
    elif seen.nvml_reason == NO_BINDING:
        checks.append(
            unread(
                "nvml",
                "NVML not asked: the Python package nvidia-ml-py is not installed in this "
                "environment, so the GPUs' health was not read",
                f"{seen.python} -m pip install nvidia-ml-py",
            )
        )
    elif seen.nvml_reason is not None:
        wanted = bool(expected)
        checks.append(
            Check(
                "nvml",
                FAIL if wanted else INFO,
                f"no NVIDIA GPU usable: {seen.nvml_reason}",
                "install the NVIDIA driver (ansible-playbook setup.yml) and reboot"
                if wanted
                else None,
            )
        )
    else:
        checks += driver_checks(seen)
    checks.append(count_check(seen))
    if seen.gpus:
        checks.append(cuda_visible_check(seen))
    if seen.gpus and seen.kernel_log is not None:
        checks.append(unread("kernel log", f"Xid history not read: {seen.kernel_log}", status=INFO))
    for event in seen.unplaced_xids:
        checks.append(xid_check(event, None))
    return checks


def driver_checks(seen: Observations) -> list[Check]:
    """NVML answered: the driver and CUDA versions it gave, and a line for each it did not."""
    versions = {"driver": "driver_version", "CUDA": "cuda_driver_version"}
    read = {what: seen.driver.get(key) for what, key in versions.items() if seen.driver.get(key)}
    said = ", ".join(f"{what} {version}" for what, version in read.items())
    checks = [Check("nvml", PASS, f"NVML answers: {said}" if said else "NVML answers")]
    for what in versions:
        if what not in read and seen.gpus:
            checks.append(
                unread(f"{what.lower()} version", f"{what} version not read from NVML", status=INFO)
            )
    return checks


def uncounted(seen: Observations) -> Check:
    """The count's line when NVML gave none: why, by what NVML said, never a number."""
    expected = seen.expected.get("count")
    source = seen.expected.get("source", "")
    wanted = f"{expected} expected ({source})" if expected else source
    if seen.nvml_reason == COUNT_UNREAD:
        return unread("gpu count", f"not counted: {seen.nvml_reason}; {wanted}")
    if seen.nvml_reason == NO_BINDING:
        return unread(
            "gpu count",
            f"not counted: NVML not asked (nvidia-ml-py is not installed); {wanted}",
            status=WARN if expected else INFO,
        )
    return unread(
        "gpu count",
        f"not counted: no NVIDIA driver answers (NVML did not start); {wanted}",
        "install the NVIDIA driver (ansible-playbook setup.yml) and reboot, then verify again"
        if expected
        else None,
        status=WARN if expected else INFO,
    )


def count_check(seen: Observations) -> Check:
    """How many GPUs NVML sees against how many the machine should have."""
    expected = seen.expected.get("count")
    source = seen.expected.get("source", "")
    if not seen.counted:
        return uncounted(seen)
    found = len(seen.gpus)
    models: dict[str, int] = {}
    for gpu in seen.gpus:
        models[gpu.name] = models.get(gpu.name, 0) + 1
    inventory = ", ".join(f"{n}x {name}" for name, n in models.items()) or "none"
    measured = {"found": found, "expected": expected}
    if expected and found < expected:
        missing = expected - found
        model = seen.expected.get("model")
        return Check(
            "gpu count",
            FAIL,
            f"{found} of {expected} expected GPUs ({source}): {missing} "
            f"{model + ' ' if model else ''}missing; NVML sees {inventory}",
            "a GPU fell off the bus or did not initialise: sudo dmesg | grep -i xid, "
            "nvidia-smi; reboot, then reseat or replace the card (cloud: stop and start "
            "the instance)",
            value=measured,
        )
    if expected and found > expected:
        return Check(
            "gpu count",
            WARN,
            f"{found} GPUs where {expected} expected ({source}): {inventory}",
            f"check that this is the machine you meant; if {found} is right, expect {found} "
            f"(--expect-gpus {found})",
            value=measured,
        )
    if expected:
        return Check(
            "gpu count",
            PASS,
            f"{found} of {expected} expected GPUs ({source}): {inventory}",
            value=measured,
        )
    return Check("gpu count", INFO, f"{found} GPU(s): {inventory}; {source}", value=measured)


HIDDEN = ("", "-1", "none", "nodevfiles")  # CUDA_VISIBLE_DEVICES values that hide every GPU


def named_gpu(entry: str, gpus: list[GpuSeen]) -> GpuSeen | None:
    """The GPU one CUDA_VISIBLE_DEVICES entry names: an index, or a unique prefix of a UUID."""
    if entry.isascii() and entry.isdigit():  # CUDA reads only 0-9 as an index
        index = int(entry)
        return next((g for g in gpus if g.index == index), None)
    if not entry.upper().startswith("GPU-"):
        return None
    found = [
        g for g in gpus if str(g.fingerprint.get("uuid") or "").upper().startswith(entry.upper())
    ]
    return found[0] if len(found) == 1 else None


def cuda_sees(variable: str, gpus: list[GpuSeen]) -> tuple[list[GpuSeen], str | None]:
    """The GPUs CUDA shows for the variable, and the entry where it stopped reading (None: all).

    CUDA reads the list in order and ignores everything from the first entry that names no GPU.
    """
    shown: list[GpuSeen] = []
    for entry in variable.split(","):
        gpu = named_gpu(entry.strip(), gpus)
        if gpu is None:
            return shown, entry.strip()
        shown.append(gpu)
    return shown, None


def cuda_visible_check(seen: Observations) -> Check:
    """verify pins each probe to its GPU itself; the user's own runs inherit this variable."""
    variable = seen.cuda_visible
    if variable is None:
        return Check(
            "cuda visible",
            PASS,
            f"CUDA_VISIBLE_DEVICES is not set: runs see all {len(seen.gpus)} GPU(s)",
            value=None,
        )
    fix = (
        "unset CUDA_VISIBLE_DEVICES (or set it to the GPUs to use, e.g. "
        "CUDA_VISIBLE_DEVICES=0), also in ~/.bashrc and the Jupyter kernel's environment"
    )
    if variable.strip().lower() in HIDDEN:
        return Check(
            "cuda visible",
            FAIL,
            f"CUDA_VISIBLE_DEVICES={variable!r} hides every GPU: runs started from this shell "
            "compute on the CPU",
            fix,
            value=variable,
        )
    if "MIG-" in variable.upper():  # MIG instances are not among the GPUs NVML listed here
        return Check(
            "cuda visible",
            INFO,
            f"CUDA_VISIBLE_DEVICES={variable!r}: runs see only those devices (verify checks all)",
            value=variable,
        )
    shown, stop = cuda_sees(variable, seen.gpus)
    where = "the empty entry" if stop == "" else repr(stop)
    if not shown:
        return Check(
            "cuda visible",
            FAIL,
            f"CUDA_VISIBLE_DEVICES={variable!r} hides every GPU: {where} names none of the "
            f"{len(seen.gpus)} GPU(s) here and CUDA reads no further; runs started from this "
            "shell compute on the CPU",
            fix,
            value=variable,
        )
    if stop is not None:
        names = ", ".join(f"GPU {g.index}" for g in shown)
        return Check(
            "cuda visible",
            INFO,
            f"CUDA_VISIBLE_DEVICES={variable!r}: CUDA stops at {where} (it names no GPU here), "
            f"so runs see only {names} (verify checks all)",
            value=variable,
        )
    return Check(
        "cuda visible",
        INFO,
        f"CUDA_VISIBLE_DEVICES={variable!r}: runs see only those GPUs (verify checks all)",
        value=variable,
    )


def missing(gpu: GpuSeen, key: str) -> str | None:
    """Why a health counter has no value: its reason, or that it was never asked for."""
    reading = gpu.health.get(key)
    if reading is None:
        return "not read"
    return reading.missing


def reading_line(gpu: GpuSeen, key: str, check: str, what: str | None = None) -> Check | None:
    """The 'not supported' (INFO) or 'could not read' (WARN) line when a counter is missing."""
    why = missing(gpu, key)
    if why is None:
        return None
    subject = f"{what} " if what else ""
    if why.startswith(NOT_SUPPORTED):
        return unread(check, f"{subject}{why} by {gpu.name}: nothing to check", status=INFO)
    return unread(check, f"{subject}could not be read: {why}", "nvidia-smi -q")


def value(gpu: GpuSeen, key: str) -> Any:
    reading = gpu.health.get(key)
    return None if reading is None else reading.value


def gpu_checks(seen: Observations, gpu: GpuSeen) -> list[Check]:
    if gpu.fingerprint.get("unread"):
        why = gpu.fingerprint["unread"]
        return [unread("nvml", f"nothing read from this GPU: {why}", NVML_READ_FIX)]
    if not gpu.health:
        why = (gpu.load or {}).get("lost", "no health counters were read")
        return [Check("nvml", FAIL, f"the GPU does not answer NVML: {why}", REPLACE_FIX)]
    checks = health_checks(gpu)
    checks += xid_checks(gpu, seen.kernel_log is None)
    if seen.level == "full":
        checks += load_checks(gpu)
        checks += host_checks(seen, gpu)
    persistence = value(gpu, "persistence_mode")
    line = reading_line(gpu, "persistence_mode", "persistence", "persistence mode")
    if line is not None:
        checks.append(line)
    elif persistence == 0:
        checks.append(
            Check(
                "persistence",
                INFO,
                "persistence mode is off: each CUDA start pays the GPU's initialisation",
                "sudo systemctl enable --now nvidia-persistenced (or sudo nvidia-smi -pm 1)",
                value=0,
            )
        )
    else:
        checks.append(Check("persistence", PASS, "persistence mode on", value=persistence))
    return checks


def ecc_check(gpu: GpuSeen) -> Check:
    fix = RESET_FIX.format(index=gpu.index)
    line = reading_line(gpu, "ecc_mode", "ecc", "ECC mode")
    if line is not None:
        return line
    mode = value(gpu, "ecc_mode")
    enabled = bool(mode[0] if isinstance(mode, list | tuple) else mode)
    volatile = value(gpu, "ecc_uncorrected_volatile")
    aggregate = value(gpu, "ecc_uncorrected_aggregate")
    counts = {"volatile": volatile, "aggregate": aggregate}
    if not enabled:
        return Check(
            "ecc",
            WARN,
            "ECC is off: memory errors go undetected",
            "sudo nvidia-smi -e 1, then reboot",
            value=counts,
        )
    not_read = {
        name: why
        for name, why in (
            ("since the driver loaded", missing(gpu, "ecc_uncorrected_volatile")),
            ("lifetime", missing(gpu, "ecc_uncorrected_aggregate")),
        )
        if why is not None
    }
    lifetime = (
        "the lifetime count not read"
        if "lifetime" in not_read
        else f"{aggregate} in the card's lifetime"
    )
    if volatile:
        return Check(
            "ecc",
            FAIL,
            f"{volatile} uncorrected ECC error(s) since the driver loaded ({lifetime})",
            fix,
            value=counts,
        )
    if not_read:
        why = "; ".join(f"{name}: {reason}" for name, reason in not_read.items())
        read = "" if "since the driver loaded" in not_read else ", 0 since the driver loaded"
        return unread(
            "ecc",
            f"ECC on{read}; uncorrected error counters not read ({why})",
            "nvidia-smi -q -d ECC",
        )
    if aggregate:
        return Check(
            "ecc",
            WARN,
            f"no uncorrected ECC error since the driver loaded, {aggregate} in the card's lifetime",
            "watch it: a card that keeps adding them needs replacing",
            value=counts,
        )
    return Check("ecc", PASS, "ECC on; 0 uncorrected errors (volatile, aggregate)", value=counts)


def health_checks(gpu: GpuSeen) -> list[Check]:
    """ECC, retired pages and row remapping: read without load."""
    checks = [ecc_check(gpu)]
    fix = RESET_FIX.format(index=gpu.index)
    line = reading_line(gpu, "retired_pages_pending", "retired pages")
    if line is not None:
        checks.append(line)
    elif value(gpu, "retired_pages_pending"):
        checks.append(Check("retired pages", FAIL, "a page retirement is pending", fix, value=True))
    else:
        checks.append(Check("retired pages", PASS, "no page retirement pending", value=False))
    line = reading_line(gpu, "remapped_rows", "row remap")
    if line is not None:
        checks.append(line)
    else:
        corrected, uncorrected, pending, failed = value(gpu, "remapped_rows")
        rows = {"corrected": corrected, "uncorrected": uncorrected, "pending": pending}
        rows["failed"] = failed
        if failed:
            checks.append(
                Check(
                    "row remap",
                    FAIL,
                    f"row remapping failed ({uncorrected} rows remapped for uncorrectable "
                    "errors): the memory cannot be repaired",
                    REPLACE_FIX,
                    value=rows,
                )
            )
        elif pending:
            checks.append(
                Check(
                    "row remap",
                    FAIL,
                    f"a row remap is pending ({uncorrected} uncorrectable, {corrected} "
                    "correctable rows remapped): the bad row stays in use until a reset",
                    fix,
                    value=rows,
                )
            )
        else:
            checks.append(
                Check(
                    "row remap",
                    PASS,
                    f"none pending, none failed ({uncorrected} uncorrectable, {corrected} "
                    "correctable rows remapped)",
                    value=rows,
                )
            )
    return checks


def xid_check(event: dict[str, Any], index: int | None) -> Check:
    xid = int(event["xid"])
    meaning, status = XIDS.get(xid, ("see NVIDIA's Xid catalog", WARN))
    where = (
        f"at {event['at_s']:.1f} s into the verify (NVML event)"
        if event["source"] == "NVML event"
        else f"in the kernel log since boot ({event.get('bus', '?')})"
    )
    fix = REPLACE_FIX if xid in (64, 79, 95) else RESET_FIX.format(index=index or 0)
    return Check("xid", status, f"Xid {xid} {where}: {meaning}", fix, value=xid)


def xid_checks(gpu: GpuSeen, kernel_log_read: bool) -> list[Check]:
    checks = [xid_check(event, gpu.index) for event in gpu.xids]
    if gpu.xid_stopped is not None:
        # Events after the stop were never seen: the watch's silence is not a reading.
        still = (
            "the kernel log since boot was still checked"
            if kernel_log_read
            else "the kernel log was not read either"
        )
        checks.append(
            unread(
                "xid events",
                f"NVML Xid events not watched to the end of the verify: {gpu.xid_stopped}; {still}",
                "sudo dmesg | grep -i xid; nvidia-smi -q",
            )
        )
    if gpu.xids:
        return checks
    sources = []
    if gpu.xid_watch is None and gpu.xid_stopped is None:
        sources.append("NVML events during the verify")
    if kernel_log_read:
        sources.append("the kernel log since boot")
    if sources:
        return [Check("xid", PASS, f"none ({' and '.join(sources)})", value=[]), *checks]
    if gpu.xid_watch is not None:
        why = f"no Xid source: NVML events {gpu.xid_watch}, kernel log unread"
        return [unread("xid", why, status=INFO)]
    return checks


def load_checks(gpu: GpuSeen) -> list[Check]:
    """PCIe link, throttling and temperature, all read while the probes ran."""
    load = gpu.load or {}
    checks = []
    if load.get("lost"):
        checks.append(
            Check(
                "nvml",
                FAIL,
                f"the GPU stopped answering NVML under load: {load['lost']}",
                REPLACE_FIX,
            )
        )
    if not load.get("readings"):
        return [*checks, unread("load", "no NVML readings were taken under load")]
    device = (gpu.probe or {}).get("device_type")
    idle = isinstance(device, str) and device != "GPU"
    # A probe on the CPU leaves its GPU idle: its link and clocks say nothing about load.
    unloaded = [
        unread(name, f"no load reached this GPU: the probe computed on the {device}", status=INFO)
        for name in UNDER_LOAD
    ]
    checks.append(unloaded[0] if idle else pcie_check(gpu, load))
    replay = value(gpu, "pcie_replay")
    line = reading_line(gpu, "pcie_replay", "pcie replay", "the PCIe replay counter")
    if line is not None:
        checks.append(line)
    else:
        status = WARN if replay > REPLAY_WARN else PASS
        checks.append(
            Check(
                "pcie replay",
                status,
                f"{replay} replays since boot (WARN above {REPLAY_WARN})",
                None if status == PASS else "a marginal link: reseat the card, check the riser",
                value=replay,
            )
        )
    if idle:
        return checks + unloaded[1:]
    checks.append(throttle_check(load))
    checks.append(temperature_check(gpu, load))
    return checks


def pcie_check(gpu: GpuSeen, load: dict[str, Any]) -> Check:
    gen, width = load.get("pcie_gen_max_seen"), load.get("pcie_width_max_seen")
    gpu_gen, slot_gen = value(gpu, "pcie_gen_max_gpu"), value(gpu, "pcie_gen_max_slot")
    max_width = value(gpu, "pcie_width_max")
    measured = {"gen": gen, "width": width, "gpu_max_gen": gpu_gen, "slot_max_gen": slot_gen}
    measured["max_width"] = max_width
    if gen is None or width is None:
        return unread("pcie link", "link generation and width not reported under load", None, INFO)
    text = f"x{width} Gen {gen} under load"
    above = [
        said
        for said, limit, current in (
            (f"GPU max gen {gpu_gen}", gpu_gen, gen),
            (f"slot max gen {slot_gen}", slot_gen, gen),
            (f"max width x{max_width}", max_width, width),
        )
        if limit is not None and current > limit
    ]
    if above:
        return unread(
            "pcie link",
            f"{text}, above the maximum NVML read ({', '.join(above)}), so the maxima are "
            "not trusted",
            "nvidia-smi -q -d PCIE",
        )
    not_read = {
        what: why
        for what, key in (
            ("GPU max gen", "pcie_gen_max_gpu"),
            ("slot max gen", "pcie_gen_max_slot"),
            ("max width", "pcie_width_max"),
        )
        if (why := missing(gpu, key)) is not None
    }
    # The link trained down only where a maximum that was read proves it: the generation
    # needs both the GPU's and the slot's, the width its own.
    able = [f"x{max_width}"] if max_width is not None else []
    narrow = max_width is not None and width < max_width
    slow = gpu_gen is not None and slot_gen is not None and gen < min(gpu_gen, slot_gen)
    if gpu_gen is not None and slot_gen is not None:
        able.append(f"Gen {min(gpu_gen, slot_gen)}")
    if narrow or slow:
        unknown = "; ".join(f"{what} not read: {why}" for what, why in not_read.items())
        return Check(
            "pcie link",
            FAIL,
            f"{text}; this GPU and slot can do {' '.join(able)}"
            + (f" ({unknown})" if unknown else ""),
            "the link trained down: reseat the card or its riser, use a full x16 slot, check "
            "the BIOS PCIe setting; cloud: stop and start the instance",
            value=measured,
        )
    if not_read:
        why = "; ".join(f"{what}: {reason}" for what, reason in not_read.items())
        return unread(
            "pcie link",
            f"{text}; what the GPU and slot can do was not read ({why})",
            "nvidia-smi -q -d PCIE",
            status=INFO if all(r.startswith(NOT_SUPPORTED) for r in not_read.values()) else WARN,
        )
    if slot_gen < gpu_gen:
        return Check(
            "pcie link",
            WARN,
            f"{text}: the slot limits it (the GPU can do Gen {gpu_gen})",
            "move the card to a slot of its generation",
            value=measured,
        )
    return Check("pcie link", PASS, f"{text}, the maximum of GPU and slot", value=measured)


def throttle_check(load: dict[str, Any]) -> Check:
    readings = load.get("throttle_read", load["readings"])
    if not readings:
        return unread(
            "throttle",
            f"clock event reasons not reported in {load['readings']} readings under load",
            "nvidia-smi -q -d PERFORMANCE",
        )
    held = load.get("throttle_readings", {})
    seconds = load.get("load_s", 0.0)
    shares = {reason: count / readings for reason, count in held.items()}
    clocks = load.get("sm_clock_mhz") or {}
    clock = (
        f"; SM clock mean {clocks['mean']:.0f} MHz, max {clocks['max']:.0f} MHz"
        if clocks.get("mean") is not None
        else ""
    )
    bad = {r: s for r, s in shares.items() if r in BAD_THROTTLE}
    harmless = [f"{r} {s:.0%}" for r, s in shares.items() if r in HARMLESS_THROTTLE]
    harmless_text = f" (harmless: {', '.join(harmless)})" if harmless else ""
    measured = {"share_of_load": shares, "load_s": seconds, "readings": readings}
    if bad:
        text = ", ".join(
            f"{r} held {s:.0%} of the load ({held[r]} of {readings} readings, about "
            f"{s * seconds:.1f} s of {seconds:.1f} s)"
            for r, s in bad.items()
        )
        status = FAIL if max(bad.values()) >= BAD_THROTTLE_FAIL else WARN
        return Check(
            "throttle",
            status,
            f"{text}{harmless_text}{clock} (FAIL from {BAD_THROTTLE_FAIL:.0%})",
            "improve cooling or airflow, check the power supply: nvidia-smi -q -d "
            "PERFORMANCE,POWER,TEMPERATURE",
            value=measured,
        )
    return Check(
        "throttle",
        PASS,
        f"no thermal, power-brake or hardware slowdown under load{harmless_text}{clock}",
        value=measured,
    )


def temperature_check(gpu: GpuSeen, load: dict[str, Any]) -> Check:
    hottest = load.get("temp_max_c")
    slowdown = value(gpu, "temp_slowdown_c")
    measured = {"max_c": hottest, "slowdown_c": slowdown}
    if hottest is None:
        return unread("temperature", "not reported under load", status=INFO)
    if slowdown is None:
        return unread(
            "temperature",
            f"{hottest} C under load; slowdown threshold not read: "
            f"{missing(gpu, 'temp_slowdown_c')}",
            status=INFO,
        )
    margin = slowdown - hottest
    if margin < TEMP_MARGIN_C:
        return Check(
            "temperature",
            WARN,
            f"{hottest} C under load, {margin} C from the slowdown threshold ({slowdown} C; "
            f"WARN within {TEMP_MARGIN_C} C)",
            "improve cooling or airflow: fans, blocked intakes, room temperature",
            value=measured,
        )
    return Check(
        "temperature",
        PASS,
        f"{hottest} C max under load, {margin} C below the slowdown threshold ({slowdown} C)",
        value=measured,
    )


def host_checks(seen: Observations, gpu: GpuSeen) -> list[Check]:
    """The probe's rates and the short training run of one GPU (or of the CPU)."""
    probe = gpu.probe
    if probe is None:
        return []
    on_gpu = bool(gpu.fingerprint)
    if "internal_error" in probe:
        return [
            unread(
                "backend",
                INTERNAL_ERROR.format(probe["internal_error"]),
                "python -m bench.machine.probe shows the traceback",
            )
        ]
    if "unread" in probe:
        return [unread("backend", probe["unread"], "python -m bench.machine.probe")]
    if "error" in probe:
        return [
            Check(
                "backend",
                FAIL,
                f"{seen.backend} could not run: {probe['error']}",
                f"check the {seen.backend} install: python -m bench.machine.probe",
            )
        ]
    checks = []
    if on_gpu and probe["device_type"] != "GPU":
        checks.append(cpu_instead_of_gpu(seen.backend, gpu, probe))
    else:
        device = probe.get("device_name") or probe["device_type"]
        checks.append(Check("backend", PASS, f"{seen.backend} computes on {device}"))
    checks += rate_checks(gpu.fingerprint if on_gpu else None, probe)
    checks += workload_checks(seen, gpu)
    return checks


def cpu_instead_of_gpu(backend: str, gpu: GpuSeen, probe: dict[str, Any]) -> Check:
    """The beginner's question, answered with its cause: a CPU-only build or no usable CUDA."""
    found = fingerprints.diagnose(
        [gpu.fingerprint], {**probe, "name": backend, "device_type": "CPU"}
    ) or {"cause": "unknown", "fix": f"python -m bench.machine.probe with KERAS_BACKEND={backend}"}
    return Check(
        "backend",
        FAIL,
        f"{backend} computed on the CPU although {gpu.name} is present: {found['cause']}",
        found["fix"],
        value={"device_type": probe["device_type"], "cuda_build": probe.get("cuda_build")},
    )


def finite(figure: Any) -> float | None:
    """A rate the probe measured, or None where it gave no finite, non-negative number."""
    if isinstance(figure, bool) or not isinstance(figure, int | float):
        return None
    return float(figure) if math.isfinite(figure) and figure >= 0 else None


def rate_checks(fingerprint: dict[str, Any] | None, probe: dict[str, Any]) -> list[Check]:
    matmul = probe.get("matmul") or {}
    sizes = {dtype: (m or {}).get("n") for dtype, m in matmul.items()}
    tflops = {dtype: finite((m or {}).get("tflops")) for dtype, m in matmul.items()}
    copy = finite(probe.get("copy_gbps"))
    figures = {**{f"matmul {d}": f for d, f in tflops.items()}, "memory copy": copy}
    no_number = [
        unread(name, "the probe gave no number") for name, f in figures.items() if f is None
    ]
    on_gpu = probe["device_type"] == "GPU"
    if fingerprint is None or not on_gpu:
        # The label is the device the probe computed on, whatever NVML could say.
        if on_gpu:
            said = [f"{k} {v:.1f} TFLOP/s" for k, v in tflops.items() if v is not None]
            where = probe.get("device_name") or "GPU"
            why = "not judged: NVML did not say which GPU this is"
        else:
            said = [f"{k} {v * 1000:.1f} GFLOP/s" for k, v in tflops.items() if v is not None]
            where, why = "CPU", "no datasheet for CPUs"
        rates = f"matmul {', '.join(said)}" if said else ""
        text = ", ".join(t for t in (rates, "" if copy is None else f"copy {copy:.1f} GB/s") if t)
        summary = [Check("throughput", INFO, f"{where}: {text} ({why})")] if text else []
        return summary + no_number
    model = datasheet_for(fingerprint["name"])
    if model is None:
        measured = [f"{k} {v:.1f} TFLOP/s" for k, v in tflops.items() if v is not None]
        measured += [] if copy is None else [f"copy {copy:.0f} GB/s"]
        summary = [
            Check(
                "throughput",
                WARN,
                f"{fingerprint['name']} is not in bench/facts/gpus.json; measured "
                + ", ".join(measured),
                "add the card's datasheet figures to bench/facts/gpus.json",
            )
        ]
        return (summary if measured else []) + no_number
    checks = []
    for dtype, key in (("float32", "fp32_tflops"), ("bfloat16", "bf16_tflops")):
        peak, measured_tflops = model[key], tflops.get(dtype)
        if peak is None or measured_tflops is None:
            continue
        ratio = measured_tflops / peak
        status = band(ratio, MATMUL_BANDS)
        checks.append(
            Check(
                f"matmul {dtype}",
                status,
                f"{measured_tflops:.1f} TFLOP/s = {ratio:.0%} of the {model['model']} datasheet "
                f"({peak:g}), n={sizes[dtype]}",
                None
                if status == PASS
                else "check clocks, power limit and throttling; nvidia-smi -q -d PERFORMANCE",
                value=measured_tflops,
            )
        )
    if copy is not None:
        ratio = copy / model["memory_gbps"]
        status = band(ratio, COPY_BANDS)
        checks.append(
            Check(
                "memory copy",
                status,
                f"{copy:.0f} GB/s = {ratio:.0%} of the {model['model']} datasheet "
                f"({model['memory_gbps']:g} GB/s)",
                None if status == PASS else "another process may share the GPU: nvidia-smi",
                value=copy,
            )
        )
    return checks + no_number


def workload_checks(seen: Observations, gpu: GpuSeen) -> list[Check]:
    run = gpu.workload
    if run is None:
        return []
    if "internal_error" in run:
        return [
            unread(
                "workload",
                INTERNAL_ERROR.format(run["internal_error"]),
                "`dlbench run reuters --synthetic --epochs 2` shows the traceback",
            )
        ]
    if run.get("status") != "complete":
        return [
            Check(
                "workload",
                FAIL,
                f"the text's reuters model did not train: "
                f"{(run.get('error') or {}).get('message', 'unknown error')}",
                "run `dlbench run reuters --synthetic --epochs 2` and read its log",
            )
        ]
    rate = finite((run.get("throughput") or {}).get("steady_samples_per_s"))
    if rate is None:
        return [
            unread(
                "workload",
                "the run gave no steady rate",
                "run `dlbench run reuters --synthetic --epochs 2` and read its log",
            )
        ]
    device = (run.get("backend") or {}).get("device_name", "?")
    checks = [
        Check(
            "workload",
            PASS,
            f"the text's reuters model trains on {device}: "
            f"{rate:,.0f} samples/s (synthetic data, fit)",
            value=rate,
        )
    ]
    reference = gpu.reference
    if reference is None:
        checks.append(
            Check(
                "reference",
                INFO,
                f"no reference results for {gpu.name} with {seen.backend} in bench/reference/",
            )
        )
    else:
        ratio = rate / reference["steady_samples_per_s"]
        status = PASS if ratio >= WORKLOAD_BAND else WARN
        checks.append(
            Check(
                "reference",
                status,
                f"{ratio:.0%} of this project's reference for {reference['gpu']} "
                f"({reference['steady_samples_per_s']:,.0f} samples/s, {reference['file']})",
                None if status == PASS else "compare `dlbench report` of both results",
                value=ratio,
            )
        )
    return checks


def sibling_figure(gpu: GpuSeen) -> tuple[str, float] | None:
    """The figure GPUs of one model are compared by: bfloat16 matmul, else float32."""
    probe = gpu.probe or {}
    if probe.get("device_type") != "GPU":
        return None
    for dtype in ("bfloat16", "float32"):
        figure = finite(((probe.get("matmul") or {}).get(dtype) or {}).get("tflops"))
        if figure:
            return f"matmul {dtype}", figure
    return None


def sibling_checks(seen: Observations) -> list[Check]:
    """Name a GPU markedly slower than the median of the GPUs of its model."""
    checks = []
    models: dict[str, list[GpuSeen]] = {}
    for gpu in seen.gpus:
        if sibling_figure(gpu) is not None:
            models.setdefault(gpu.name, []).append(gpu)
    for name, members in models.items():
        if len(members) < 2:
            continue
        figures = {g.key: sibling_figure(g) for g in members}
        median = statistics.median(f[1] for f in figures.values() if f)
        for gpu in members:
            what, rate = figures[gpu.key] or ("", 0.0)
            share = rate / median
            status = PASS if share >= SIBLING_BAND else WARN
            checks.append(
                Check(
                    "siblings",
                    status,
                    f"{what} {rate:.1f} TFLOP/s = {share:.0%} of the median of its "
                    f"{len(members)} {name} (named below {SIBLING_BAND:.0%})",
                    None
                    if status == PASS
                    else "slower than its siblings: check its clocks, throttling and PCIe "
                    "lines above; nvidia-smi -q -i " + str(gpu.index),
                    scope=gpu.key,
                    value=share,
                )
            )
    return checks


def find_reference(
    gpu_name: str | None, backend: str, folder: Path | None = None
) -> dict[str, Any] | None:
    """This project's committed result for the same card and backend (fit mode, reuters)."""
    root = folder or Path(str(resources.files("bench").joinpath("reference")))
    for name, document in reference_documents(str(root)):
        if not document["gpus"] or document["gpus"][0]["name"] != gpu_name:
            continue
        if document["settings"]["backend"] != backend or document["settings"]["mode"] != "fit":
            continue
        figure = document["summary"].get("reuters", {}).get("steady_samples_per_s", {})
        if figure.get("median"):
            return {"gpu": gpu_name, "steady_samples_per_s": figure["median"], "file": name}
    return None


@functools.cache
def reference_documents(root: str) -> tuple[tuple[str, Any], ...]:
    """The folder's readable result files, read once: each load validates a whole document."""
    from bench.results import document as results

    folder = Path(root)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append((path.name, results.load(path)))
        except results.ResultError:
            continue
    return tuple(found)


def signal_counts(checks: list[Check]) -> dict[str, int]:
    return {
        READ: sum(c.state == READ for c in checks),
        UNREAD: sum(c.state == UNREAD for c in checks),
    }


def render(checks: list[Check], final: str, seen: Observations) -> str:
    """One line per machine check, then per GPU and check; the verdict and each GPU's last."""
    count = seen.expected.get("count")
    wanted = f"{count} GPU(s) expected" if count else "no GPU count expected"
    lines = [f"dlbench verify ({seen.backend} backend, {seen.level} level, {wanted})"]
    for check in checks:
        lines.append(f"  {check.status:<4}  {check.scope:<7} {check.name:<15} {check.detail}")
        if check.fix:
            lines.append(f"  {'':<4}  {'':<7} {'':<15} what to do: {check.fix}")
    per_gpu = gpu_verdicts(checks)
    counts = signal_counts(checks)
    lines.append(
        f"signals: {counts[READ]} read, {counts[UNREAD]} could not be read "
        "(said above, never counted as PASS)"
    )
    if seen.gpus:
        lines.append("per GPU: " + ", ".join(f"{k} {v}" for k, v in per_gpu.items()))
    lines.append(f"verdict: {final}")
    return "\n".join(lines)


def _run_summary(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The short run's record, cut to what the verdict used."""
    if run is None:
        return None
    return {
        "status": run.get("status"),
        "steady_samples_per_s": (run.get("throughput") or {}).get("steady_samples_per_s"),
        "device_name": (run.get("backend") or {}).get("device_name"),
        "error": run.get("error"),
        "internal_error": run.get("internal_error"),
    }


def as_document(checks: list[Check], final: str, seen: Observations, host: str) -> dict[str, Any]:
    """The --json document: the machine's lines, then a record per GPU with its checks."""
    per_gpu = gpu_verdicts(checks)
    records = []
    for gpu in [*seen.gpus, *([seen.host] if seen.host else [])]:
        records.append(
            {
                "key": gpu.key,
                "index": gpu.fingerprint.get("index"),
                "uuid": gpu.fingerprint.get("uuid"),
                "name": gpu.name,
                "verdict": per_gpu.get(gpu.key, PASS),
                "checks": [asdict(c) for c in checks if c.scope == gpu.key],
                "fingerprint": gpu.fingerprint,
                "health": {k: asdict(r) for k, r in gpu.health.items()},
                "load": gpu.load,
                "probe": gpu.probe,
                "workload": _run_summary(gpu.workload),
                "reference": gpu.reference,
                "xids": gpu.xids,
            }
        )
    return {
        "document": DOCUMENT_KIND,
        "host": host,
        "backend": seen.backend,
        "level": seen.level,
        "verdict": final,
        "exit_code": EXIT_CODES[final],
        "signals": signal_counts(checks),
        "expected": seen.expected,
        "nvml": seen.nvml_reason,
        "machine": [asdict(c) for c in checks if c.scope == "machine"],
        "gpus": records,
        "timing": seen.timing,
    }


def as_json(checks: list[Check], final: str, seen: Observations, host: str) -> str:
    # Strict JSON: a NaN would break every parser but Python's; rates without a number are None.
    return json.dumps(
        as_document(checks, final, seen, host), indent=1, default=str, allow_nan=False
    )
