"""The measuring half of `dlbench verify`: NVML health, per-GPU probe processes in parallel,
readings under load, Xid events and the kernel log. bench/machine/verify.py judges what
this records.

Every side effect has a seam (`Seams`): NVML, starting processes, the kernel log, instance
metadata, the clock; tests swap in the fake NVML and fake processes.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import exitcodes
from bench.machine import imds, nvml
from bench.machine.verify import GpuSeen, Observations, find_reference

STEP_TIMEOUT_S = 300
KILL_GRACE_S = 10.0
LOAD_INTERVAL_S = 0.1  # between NVML readings of the loaded GPUs
WORKLOAD_EPOCHS = 3
XID_LINE = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F:.]+)\): (\d+)")


class Process(Protocol):
    """A started probe process, as the plan runner sees it."""

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def output(self) -> str: ...


Starter = Callable[[list[str], dict[str, str], Path], Process]


class RealProcess:
    """A subprocess whose stdout and stderr go to a log file (no pipe to fill up)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.popen = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        """SIGTERM without waiting, so that many children stop at once."""
        if self.popen.poll() is None:
            self.popen.terminate()

    def kill(self) -> None:
        """SIGTERM first: `dlbench run` then stops its worker (in a session of its own)."""
        self.popen.terminate()
        try:
            self.popen.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_process(argv: list[str], env: dict[str, str], log: Path) -> Process:
    return RealProcess(argv, env, log)


def read_kernel_log() -> list[str] | str:
    """The kernel ring buffer's lines, or why it could not be read."""
    try:
        # Kernel messages carry whatever bytes drivers printed: never let one stop the read.
        done = subprocess.run(
            ["dmesg"], capture_output=True, text=True, errors="replace", timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"dmesg did not run ({error})"
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit {done.returncode}"
        return f"dmesg: {why}; run verify with sudo, or sudo sysctl kernel.dmesg_restrict=0"
    return done.stdout.splitlines()


DMI_FILES = ("/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/board_vendor")


def looks_like_ec2() -> bool:
    """DMI says Amazon EC2 (or DLSTATION_IMDS_URL points elsewhere): only then ask metadata."""
    if os.environ.get(imds.IMDS_URL_ENV):
        return True
    for path in DMI_FILES:
        try:
            if "amazon" in Path(path).read_text().lower():
                return True
        except OSError:
            continue
    return False


@dataclass
class Seams:
    """Where verify touches the world."""

    open_nvml: Callable[[], nvml.NvmlSession | str] = nvml.open_nvml
    start: Starter = start_process
    kernel_log: Callable[[], list[str] | str] = read_kernel_log
    imds_lookup: Callable[[], imds.Placement | str] = imds.lookup
    on_ec2: Callable[[], bool] = looks_like_ec2
    environ: Callable[[str], str | None] = os.environ.get
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    python: str = sys.executable


@dataclass
class Options:
    """What the user asked `dlbench verify` for."""

    backend: str = "tensorflow"
    level: str = "full"
    expect_gpus: int | None = None
    expect_gpu: bool = False
    use_imds: bool = True
    workload: bool = True


@dataclass
class Step:
    name: str
    argv: list[str]
    output: Path | None = None  # the result file a workload step writes


@dataclass
class TargetPlan:
    """The processes one GPU (or the CPU, key 'host') runs, one after the other."""

    key: str
    index: int | None
    env: dict[str, str]
    steps: list[Step]


@dataclass
class StepRun:
    name: str
    exit_code: int | None
    seconds: float
    output: str
    result_file: Path | None = None


def pinned_to(gpu: dict[str, Any]) -> dict[str, str]:
    """The environment that shows a process only this GPU: by UUID, else by NVML's index."""
    if gpu.get("uuid"):
        return {"CUDA_VISIBLE_DEVICES": str(gpu["uuid"])}
    # CUDA numbers GPUs fastest first unless told to number them by PCI bus, as NVML does.
    return {"CUDA_VISIBLE_DEVICES": str(gpu["index"]), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def probe_plan(
    gpus: list[dict[str, Any]], options: Options, folder: Path, python: str = sys.executable
) -> list[TargetPlan]:
    """Per GPU: the probe, then the short training run, each pinned by CUDA_VISIBLE_DEVICES."""
    base = {"KERAS_BACKEND": options.backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    targets: list[tuple[str, int | None, dict[str, str]]] = [
        (f"gpu{g['index']}", g["index"], pinned_to(g)) for g in gpus
    ] or [("host", None, {})]
    plans = []
    for key, index, pin in targets:
        steps = [Step("probe", [python, "-m", "bench.machine.probe"])]
        if options.workload:
            output = folder / f"workload-{key}.json"
            argv = [python, "-m", "bench", "run", "reuters", "--synthetic"]
            argv += ["--epochs", str(WORKLOAD_EPOCHS), "--backend", options.backend]
            argv += ["--output", str(output), "--quiet", "--no-imds", "--telemetry-interval", "0"]
            steps.append(Step("workload", argv, output))
        plans.append(TargetPlan(key, index, {**base, **pin}, steps))
    return plans


@dataclass
class LoadMonitor:
    """Readings of each loaded GPU, taken while its probe processes run."""

    session: nvml.NvmlSession | None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    clocks: dict[str, list[float]] = field(default_factory=dict)

    def sample(self, busy: list[tuple[str, int]]) -> None:
        if self.session is None:
            return
        for key, index in busy:
            record = self.records.setdefault(
                key,
                {
                    "readings": 0,
                    "throttle_read": 0,
                    "throttle_readings": {},
                    "pcie_gen_max_seen": None,
                },
            )
            if record.get("lost"):
                continue
            try:
                reading = self.session.load_reading(index)
            except nvml.GpuLostError as error:
                record["lost"] = str(error)
                continue
            record["readings"] += 1
            if reading["throttle"] is not None:
                record["throttle_read"] += 1
            for reason in reading["throttle"] or []:
                held = record["throttle_readings"]
                held[reason] = held.get(reason, 0) + 1
            for name, seen in (
                ("pcie_gen_max_seen", reading["pcie_gen"]),
                ("pcie_width_max_seen", reading["pcie_width"]),
                ("temp_max_c", reading["temp_c"]),
            ):
                if seen is not None:
                    record[name] = max(seen, record.get(name) or seen)
            if reading["sm_clock_mhz"] is not None:
                self.clocks.setdefault(key, []).append(float(reading["sm_clock_mhz"]))

    def result(self, key: str, load_s: float) -> dict[str, Any] | None:
        record = self.records.get(key)
        if record is None:
            return None
        clocks = self.clocks.get(key)
        record["sm_clock_mhz"] = (
            {"mean": statistics.fmean(clocks), "max": max(clocks)} if clocks else {}
        )
        record["load_s"] = round(load_s, 3)
        return record


def run_plans(
    plans: list[TargetPlan],
    seams: Seams,
    monitor: LoadMonitor,
    folder: Path,
    timeout_s: float = STEP_TIMEOUT_S,
) -> dict[str, list[StepRun]]:
    """Every target's steps, targets in parallel; NVML read between polls of the processes."""
    done: dict[str, list[StepRun]] = {p.key: [] for p in plans}
    running: dict[str, tuple[TargetPlan, int, Process, float]] = {}

    def launch(plan: TargetPlan, position: int) -> None:
        step = plan.steps[position]
        log = folder / f"{step.name}-{plan.key}.log"
        running[plan.key] = (plan, position, seams.start(step.argv, plan.env, log), seams.clock())

    try:
        for plan in plans:
            launch(plan, 0)
        while running:
            busy = [(k, p.index) for k, (p, _, _, _) in running.items() if p.index is not None]
            monitor.sample([(k, i) for k, i in busy if i is not None])
            seams.sleep(LOAD_INTERVAL_S)
            for key, (plan, position, process, started) in list(running.items()):
                code = process.poll()
                elapsed = seams.clock() - started
                if code is None and elapsed < timeout_s:
                    continue
                if code is None:
                    process.kill()
                step = plan.steps[position]
                done[key].append(StepRun(step.name, code, elapsed, process.output(), step.output))
                del running[key]
                if code == 0 and position + 1 < len(plan.steps):
                    launch(plan, position + 1)
    except BaseException:
        # The children run in sessions of their own: a Ctrl-C at the terminal never reaches them.
        stop_all([process for _, _, process, _ in running.values()])
        raise
    return done


def stop_all(processes: list[Process]) -> None:
    """SIGTERM to all at once, then each waited for (and killed after the grace)."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.kill()


def internal_line(output: str) -> str:
    """The line that names a crash: the traceback's last line, else the output's last."""
    lines = [t.strip() for t in output.strip().splitlines() if t.strip()]
    told = [t for t in lines if not t.startswith("dlbench: internal error")]
    return (told or lines or ["no output"])[-1][:200]


def probe_result(run: StepRun) -> dict[str, Any]:
    """The probe's JSON line, or what went wrong."""
    if run.exit_code is None:
        return {"error": f"the probe took over {run.seconds:.0f} s and was stopped"}
    lines = [line for line in run.output.splitlines() if line.startswith("{")]
    for candidate in reversed(lines):
        try:
            # NaN and infinities are no measured rate: None, as JSON can say.
            result = json.loads(candidate, parse_constant=lambda _constant: None)
        except ValueError:
            continue  # a framework's log line that happens to start with a brace
        if isinstance(result, dict) and ("error" in result or "internal_error" in result):
            return result
        if isinstance(result, dict) and isinstance(result.get("device_type"), str):
            return result
    if run.exit_code == exitcodes.INTERNAL:
        return {"internal_error": internal_line(run.output)}
    if lines:
        return {"unread": f"the probe's result is not readable JSON: {lines[-1][:120]}"}
    tail = " ".join(run.output.strip().splitlines()[-3:])
    return {"error": f"the probe printed no result (exit {run.exit_code}): {tail}"}


def workload_result(run: StepRun) -> dict[str, Any]:
    """The short run's record from its result file, or a failed record saying why."""
    if run.exit_code == exitcodes.INTERNAL:
        return {"status": "internal error", "internal_error": internal_line(run.output)}
    try:
        text = run.result_file.read_text() if run.result_file else "{}"
        # NaN and infinities are no measured rate: None, as JSON can say.
        document = json.loads(text, parse_constant=lambda _constant: None)
        record: dict[str, Any] = document["runs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        tail = " ".join(run.output.strip().splitlines()[-3:])
        return {"status": "failed", "error": {"message": f"exit {run.exit_code}: {tail}"}}
    return record


def expected_count(options: Options, seams: Seams) -> dict[str, Any]:
    """How many GPUs this machine should have, and who says so."""
    if options.expect_gpus:
        return {"count": options.expect_gpus, "source": f"--expect-gpus {options.expect_gpus}"}
    if options.use_imds and seams.on_ec2():
        placement = seams.imds_lookup()
        if isinstance(placement, imds.Placement):
            from bench.facts.catalog import Catalog, CatalogError

            try:
                kind = Catalog.load().get(placement.instance_type)
            except CatalogError:
                return {
                    "count": 1 if options.expect_gpu else None,
                    "source": f"EC2 {placement.instance_type} is not in dlstation's catalog",
                }
            return {
                "count": kind.gpu_count,
                "model": kind.gpu,
                "source": f"EC2 {placement.instance_type} has {kind.gpu_count}x {kind.gpu}",
            }
    if options.expect_gpu:
        return {"count": 1, "source": "--expect-gpu"}
    return {"count": None, "source": "no expected count: pass --expect-gpus N"}


def bus_key(bus_id: str) -> str:
    """'00000000:3B:00.0' (NVML) and '0000:3b:00' (kernel log) both become '3b:00'."""
    parts = bus_id.lower().split(":")
    return ":".join(p.split(".")[0] for p in parts[-2:])


def kernel_xids(lines: list[str]) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        match = XID_LINE.search(line)
        if match:
            found.append(
                {
                    "xid": int(match.group(2)),
                    "bus": match.group(1),
                    "source": "kernel log",
                    "line": line.strip()[:200],
                }
            )
    return found


def measure(
    options: Options, seams: Seams | None = None, say: Callable[[str], None] = print
) -> Observations:
    """Everything verify judges, measured in the order that keeps the load window short."""
    seams = seams or Seams()
    started = seams.clock()
    timing: dict[str, Any] = {}
    session = seams.open_nvml()
    timing["nvml_start_s"] = seams.clock() - started
    reason = session if isinstance(session, str) else None
    mismatch = isinstance(session, nvml.StartFailure) and session.version_mismatch
    live = session if isinstance(session, nvml.NvmlSession) else None
    gpus, lost = fingerprints(live)
    seen = Observations(
        backend=options.backend,
        level=options.level,
        expected=expected_count(options, seams),
        nvml_reason=reason,
        nvml_mismatch=mismatch,
        counted=live is not None or reason == nvml.NO_GPU_FOUND,
        cuda_visible=seams.environ("CUDA_VISIBLE_DEVICES"),
        python=seams.python,
        gpus=[GpuSeen(f"gpu{g['index']}", g) for g in gpus],
        driver=gpus[0] if gpus else {},
        timing=timing,
    )
    timing["expected_count_s"] = seams.clock() - started - timing["nvml_start_s"]
    watch = nvml.XidWatch(live, [g.index for g in seen.gpus]).start() if live else None
    if live is not None:
        for gpu in seen.gpus:
            if gpu.fingerprint.get("unread"):
                continue  # no handle: nothing more can be asked of it
            try:
                gpu.health = live.health(gpu.index)
            except nvml.GpuLostError as error:
                lost[gpu.index] = str(error)
            if gpu.index in lost:
                gpu.load = {"lost": lost[gpu.index], "readings": 0}
        read_kernel_xids(seen, seams)
    timing["startup_s"] = seams.clock() - started
    if options.level == "full" and not mismatch:
        answering = [g for g in gpus if g["index"] not in lost]
        what = f"{len(answering)} GPU(s) in parallel" if gpus else "the CPU"
        say(f"probing {what}: matrix products, memory copy, a short training run...")
        if answering or not gpus:
            probe_all(seen, answering, options, seams, live)
    if watch is not None:
        collect_xids(seen, watch)
    if live is not None:
        live.close()
    timing["total_s"] = seams.clock() - started
    for name, figure in list(timing.items()):
        if isinstance(figure, float):
            timing[name] = round(figure, 3)
    return seen


def collect_xids(seen: Observations, watch: nvml.XidWatch) -> None:
    """Stop the watch and place its events; read after the stop, which a failure may precede."""
    events = watch.stop()
    by_index = {g.index: g for g in seen.gpus}
    for event in events:
        owner = by_index.get(event["gpu"])
        (owner.xids if owner else seen.unplaced_xids).append(event)
    for gpu in seen.gpus:
        gpu.xid_watch = watch.unsupported.get(gpu.index)
        if gpu.xid_watch is None and watch.stopped is None:
            gpu.xid_watch = watch.failure
        elif gpu.xid_watch is None:
            gpu.xid_stopped = watch.stopped


def fingerprints(session: nvml.NvmlSession | None) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Every GPU's fingerprint, and the ones that did not answer (index: why)."""
    if session is None:
        return [], {}
    found, lost = [], {}
    for index in range(session.device_count()):
        try:
            found.append(session.fingerprint(index))
        except nvml.GpuUnreadError as error:
            found.append({"index": index, "name": None, "uuid": None, "unread": str(error)})
            lost[index] = str(error)
        except nvml.GpuLostError as error:
            found.append({"index": index, "name": None, "uuid": None})
            lost[index] = str(error)
    return found, lost


def read_kernel_xids(seen: Observations, seams: Seams) -> None:
    """Xids since boot from the kernel log, placed on the GPU at their PCI address."""
    lines = seams.kernel_log()
    if isinstance(lines, str):
        seen.kernel_log = lines
        return
    by_bus = {}
    for gpu in seen.gpus:
        bus = gpu.health.get("pci_bus_id")
        if bus is not None and bus.value:
            by_bus[bus_key(str(bus.value))] = gpu
    for event in kernel_xids(lines):
        owner = by_bus.get(bus_key(event["bus"]))
        (owner.xids if owner else seen.unplaced_xids).append(event)


def probe_all(
    seen: Observations,
    gpus: list[dict[str, Any]],
    options: Options,
    seams: Seams,
    session: nvml.NvmlSession | None,
) -> None:
    """The probes on every GPU at once, NVML read under their load; results onto `seen`."""
    monitor = LoadMonitor(session)
    with tempfile.TemporaryDirectory(prefix="dlbench-verify-") as folder:
        plans = probe_plan(gpus, options, Path(folder), seams.python)
        began = seams.clock()
        runs = run_plans(plans, seams, monitor, Path(folder))
        seen.timing["probes_wall_s"] = seams.clock() - began
        targets = {g.key: g for g in seen.gpus}
        if not gpus:
            seen.host = GpuSeen("host")
            targets["host"] = seen.host
        per_target: dict[str, Any] = {}
        for key, steps in runs.items():
            target = targets[key]
            per_target[key] = {f"{s.name}_s": round(s.seconds, 3) for s in steps}
            for step in steps:
                if step.name == "probe":
                    target.probe = probe_result(step)
                    per_target[key]["probe_parts"] = target.probe.get("timing")
                else:
                    target.workload = workload_result(step)
                    per_target[key]["workload_parts"] = target.workload.get("timing")
            target.load = monitor.result(key, sum(s.seconds for s in steps))
            if target.workload is not None:
                name = target.fingerprint.get("name")
                target.reference = find_reference(name, options.backend)
        seen.timing["per_gpu"] = per_target
