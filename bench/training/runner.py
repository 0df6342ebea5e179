"""Run workloads, each repeat in a fresh worker process, and keep the result file valid throughout.

The file is rewritten atomically after every epoch, so a run stopped by Ctrl-C, SIGTERM or even
SIGKILL leaves a schema-valid result marked incomplete that holds the epochs that finished.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

import psutil

from bench.machine import hostinfo
from bench.machine.fingerprint import diagnose
from bench.machine.fingerprint import gpus as fingerprint_gpus
from bench.machine.nvml import NvmlSession
from bench.machine.telemetry import DEFAULT_INTERVAL_S, Sampler, memory_peak, unavailable
from bench.results import document as results
from bench.results import output as result_output
from bench.results.cost import Pricing, run_cost
from bench.training.backends import DEFAULT_GPU_MEMORY
from bench.training.process import WorkerProcess
from bench.training.progress import Progress
from bench.training.workloads import get_workload
from bench.training.workloads.spec import Workload

# Parts of the first epoch a mode reports apart (the compiled mode; fit's are inside its epoch).
FIRST_EPOCH_PARTS: dict[
    str, Literal["first_epoch_transfer_s", "first_epoch_trace_s", "first_epoch_compile_s"]
] = {
    "transfer_s": "first_epoch_transfer_s",
    "trace_s": "first_epoch_trace_s",
    "compile_s": "first_epoch_compile_s",
}
PHASE_TIMINGS: dict[
    str, Literal["import_s", "backend_start_s", "data_s", "build_s", "fit_setup_s", "eval_s"]
] = {
    "startup": "import_s",
    "backend_start": "backend_start_s",
    "data_load": "data_s",
    "build": "build_s",
    "fit_setup": "fit_setup_s",
    "evaluation": "eval_s",
}
# A run's wall time, cut at the worker's phase boundaries: the parent's spawn to the worker's
# first line, the worker's own imports, each phase, and the worker's exit after its report.
PARTS = {
    "startup": "keras_import_s",
    "backend_start": "backend_start_s",
    "data_load": "data_s",
    "build": "build_s",
    "fit_setup": "fit_setup_s",
    "first_epoch": "first_epoch_s",
    "steady_epochs": "steady_epochs_s",
    "evaluation": "evaluation_s",
}


@dataclass(frozen=True)
class RunPlan:
    """Everything a `dlbench run` invocation decided before the first worker starts."""

    workloads: tuple[Workload, ...]
    backend: str
    mode: str
    seed: int
    repeats: int
    synthetic: bool
    cache_dir: Path
    keras_home: Path | None
    output: Path
    telemetry_interval_s: float = DEFAULT_INTERVAL_S
    gpu_memory: str = DEFAULT_GPU_MEMORY
    options: tuple[str, ...] = ()  # opt-in compiled-mode changes (bench/training/modes/options.py)

    def job(self, workload: Workload, repeat: int) -> dict[str, Any]:
        """The worker's instructions for one repeat of one workload."""
        return {
            "workload": workload.name,
            "overrides": {
                "epochs": workload.epochs,
                "batch_size": workload.batch_size,
                "target_accuracy": workload.target_accuracy,
            },
            "seed": self.seed + repeat,
            "mode": self.mode,
            "synthetic": self.synthetic,
            "cache_dir": str(self.cache_dir),
            "gpu_memory": self.gpu_memory,
            "options": list(self.options),
        }

    def settings(self, data_dir: Path | None = None) -> dict[str, Any]:
        """The result file's `settings`, derived from the plan."""
        return {
            "backend": self.backend,
            "mode": self.mode,
            "workloads": [w.name for w in self.workloads],
            "repeats": self.repeats,
            "synthetic": self.synthetic,
            "data_dir": None if self.synthetic or data_dir is None else str(data_dir),
            "seed": self.seed,
            "gpu_memory": self.gpu_memory,
            "options": list(self.options),
        }

    def worker_env(self) -> dict[str, str]:
        """KERAS_BACKEND (and KERAS_HOME for a data dir) must be set before keras is imported."""
        env = {"KERAS_BACKEND": self.backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        if self.keras_home is not None:
            env["KERAS_HOME"] = str(self.keras_home)
        return env


def short_check_plan(
    backend: str,
    epochs: int,
    cache_dir: Path,
    output: Path,
    telemetry_interval_s: float = DEFAULT_INTERVAL_S,
) -> RunPlan:
    """A few epochs of the text's Reuters model on synthetic data in fit mode: for checks
    (verify, the sampler benchmark, tests), not for figures to compare."""
    return RunPlan(
        workloads=(dataclasses.replace(get_workload("reuters"), epochs=epochs),),
        backend=backend,
        mode="fit",
        seed=0,
        repeats=1,
        synthetic=True,
        cache_dir=cache_dir,
        keras_home=None,
        output=output,
        telemetry_interval_s=telemetry_interval_s,
    )


class RunInterruptedError(Exception):
    """SIGINT or SIGTERM arrived; the result is saved as incomplete."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise RunInterruptedError while inside; old handlers come
    back after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise RunInterruptedError(signum)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in stops}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class RunRecorder:
    """Applies a worker's events to its run record (and its phases to the GPU sampler)."""

    def __init__(self, run: results.Run, started: float, sampler: Sampler | None) -> None:
        self.run = run
        self.started = started
        self.sampler = sampler
        self.done = False
        self.done_at: float | None = None
        self.worker_clock: float | None = None  # the worker's start on the shared clock
        self.done_at_s: float | None = None  # the worker's "done", on its own clock

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.pop("event")
        handler: Callable[[dict[str, Any]], None] | None = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(event)

    def on_started(self, event: dict[str, Any]) -> None:
        # Both clocks are the system's monotonic one: spawn to the worker's first line.
        self.run["timing"]["interpreter_s"] = event["clock_s"] - self.started
        self.worker_clock = event["clock_s"]

    def on_phase(self, event: dict[str, Any]) -> None:
        if self.sampler is not None:
            self.sampler.set_phase(event["phase"])
        phases = self.run["phases"]
        if phases:
            phases[-1]["end_s"] = event["at_s"]
        phases.append({"phase": event["phase"], "start_s": event["at_s"]})

    def on_data(self, event: dict[str, Any]) -> None:
        self.run["data"] = {
            **event["provenance"],
            "train_samples": event["train_samples"],
            "val_samples": event["val_samples"],
            "test_samples": event["test_samples"],
            "input_shape": event["input_shape"],
        }

    def on_built(self, event: dict[str, Any]) -> None:
        self.run["definition"]["parameters"] = event["parameters"]

    def on_epoch(self, event: dict[str, Any]) -> None:
        event.pop("at_s", None)
        # Kept whole: besides the schema's keys it carries Keras's other metrics and, on the
        # first epoch, the compiled mode's start-up parts (the schema allows extra keys).
        self.run["epochs"].append(cast(results.Epoch, event))

    def on_evaluated(self, event: dict[str, Any]) -> None:
        self.run["evaluation"] = {"method": event["method"], "eval_s": event["eval_s"]}
        if (self.run["data"] or {}).get("source") != "synthetic":
            self.run["test"] = {"loss": event["loss"], "accuracy": event["accuracy"]}

    def on_options(self, event: dict[str, Any]) -> None:
        self.run["options"] = event

    def on_gpu_memory(self, event: dict[str, Any]) -> None:
        # The peak comes from the telemetry when the run closes.
        self.run["gpu_memory"] = {**event, "peak_mib": None, "run_peak_mib": None}

    def on_backend(self, event: dict[str, Any]) -> None:
        self.run["backend"] = event

    def on_done(self, event: dict[str, Any]) -> None:
        self.run["peak_rss_mb"] = event["peak_rss_mb"]
        self.done = True
        self.done_at = time.perf_counter()
        self.done_at_s = event["at_s"]
        if self.run["phases"]:
            self.run["phases"][-1]["end_s"] = event["at_s"]

    def on_error(self, event: dict[str, Any]) -> None:
        self.run["error"] = event

    def finish(self, status: results.RunStatus) -> None:
        """Close the record: status, phase timings, end-to-end time and derived figures."""
        run = self.run
        run["status"] = status
        timing = run["timing"]
        for phase in run["phases"]:
            name = PHASE_TIMINGS.get(phase["phase"])
            if name and "end_s" in phase:
                timing[name] = phase["end_s"] - phase["start_s"]
        ended = time.perf_counter()
        if self.done_at is not None:
            timing["exit_s"] = ended - self.done_at  # the worker's teardown after its report
        timing["end_to_end_s"] = ended - self.started
        run["parts"] = self.parts(ended)
        results.derive_figures(run)
        # The parts are keys beyond the typed epoch's (see on_epoch), so read it as a mapping.
        first: Mapping[str, Any] = run["epochs"][0] if run["epochs"] else {}
        parts = {part: first[k] for k, part in FIRST_EPOCH_PARTS.items() if k in first}
        if parts:
            for part, seconds in parts.items():
                timing[part] = seconds
            timing["first_epoch_run_s"] = max(0.0, first["wall_s"] - sum(parts.values()))

    def parts(self, ended: float) -> dict[str, float]:
        """Every second from the run's start to `ended` in one named part; they sum to it."""
        if self.worker_clock is None:
            return {"before_worker_s": ended - self.started}
        bounds = [("interpreter_s", self.started), ("worker_imports_s", self.worker_clock)]
        bounds += [
            (PARTS.get(p["phase"], f"{p['phase']}_s"), self.worker_clock + p["start_s"])
            for p in self.run["phases"]
        ]
        if self.done_at_s is not None:
            bounds.append(("exit_s", self.worker_clock + self.done_at_s))
        bounds.append(("end", ended))
        return {
            name: max(0.0, end - start) for (name, start), (_, end) in itertools.pairwise(bounds)
        }


class Runner:
    """Executes a plan, writing the document after each step."""

    def __init__(
        self,
        plan: RunPlan,
        document: results.Document,
        progress: Progress,
        nvml: NvmlSession | str,
        pricing: Pricing | str,
    ) -> None:
        self.plan = plan
        self.document = document
        self.progress = progress
        self.nvml = nvml
        self.pricing = pricing
        self.worker: WorkerProcess | None = None
        self.written = False  # whether the result file holds a document yet

    def start_sampler(self) -> Sampler | None:
        if isinstance(self.nvml, str) or self.plan.telemetry_interval_s <= 0:
            return None
        return Sampler(self.nvml, self.plan.telemetry_interval_s).start()

    def close_run(self, recorder: RunRecorder, status: results.RunStatus) -> None:
        """Finish the record: figures, telemetry (or why none), diagnosis and cost."""
        run = recorder.run
        recorder.finish(status)
        if recorder.sampler is not None:
            telemetry = recorder.sampler.stop()
        elif isinstance(self.nvml, str):
            telemetry = unavailable(self.nvml)
        else:
            telemetry = unavailable("telemetry disabled (--telemetry-interval 0)")
        run["telemetry"] = telemetry
        run["gpu_memory"] = {
            **(run.get("gpu_memory") or {"policy": self.plan.gpu_memory, "env": {}}),
            **memory_peak(telemetry),
        }
        run["diagnosis"] = diagnose(self.document["gpus"], run["backend"])
        run["cost"] = run_cost(run, self.pricing)

    def save(self) -> None:
        self.document["summary"] = results.summarize(self.document["runs"])
        results.write_atomic(self.plan.output, self.document)
        self.written = True

    def execute(self) -> int:
        """0 when every run completed, 1 when one failed or the result could not be written,
        128+signal when interrupted."""
        try:
            return self.execute_plan()
        except results.ResultWriteError as error:
            return self.write_failed(error)
        finally:
            self.stop_worker()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker = None

    def write_failed(self, error: results.ResultWriteError) -> int:
        """Stop the worker; mark the result failed with why, where the disk still allows."""
        self.stop_worker()
        reason = str(error.strerror)
        output = self.plan.output
        if not self.written:
            results.mark_failed(self.document, reason)
            result_output.release(output)
            kept = "no result was written"
        else:
            kept = {
                "all": f"{output} is marked failed",
                "last write": f"{output} is marked failed, with the epochs written before",
                "none": f"{output} keeps its last write, which still says running: the failure "
                "could not be recorded in it",
            }[results.record_failure(output, self.document, reason)]
        self.progress.write_failed(f"{error.strerror}; the run stopped and {kept}")
        return 1

    def execute_plan(self) -> int:
        self.document["startup_s"] = command_startup_s()
        self.save()
        try:
            with signals_raise():
                for workload in self.plan.workloads:
                    for repeat in range(self.plan.repeats):
                        self.run_one(workload, repeat)
        except RunInterruptedError as stop:
            self.document["status"] = "incomplete"
            self.document["incomplete_reason"] = str(stop)
            self.document["finished"] = results.utc_now()
            self.save()
            self.progress.interrupted(str(stop), self.plan.output)
            return 128 + stop.signum
        failed = any(r["status"] != "complete" for r in self.document["runs"])
        self.document["status"] = "failed" if failed else "complete"
        self.document["incomplete_reason"] = None
        self.document["finished"] = results.utc_now()
        self.save()
        self.progress.finished(self.document, self.plan.output)
        return 1 if failed else 0

    def run_one(self, workload: Workload, repeat: int) -> None:
        definition = {
            **workload.describe(),
            "seed": self.plan.seed + repeat,
            "mode": self.plan.mode,
            "backend": self.plan.backend,
        }
        run = results.new_run(workload.name, repeat, definition)
        self.document["runs"].append(run)
        recorder = RunRecorder(run, time.perf_counter(), self.start_sampler())
        self.progress.run_started(workload, repeat, self.plan.repeats)
        log = (
            self.plan.output.parent
            / "logs"
            / f"{self.plan.output.stem}-{workload.name}-{repeat}.log"
        )
        try:
            worker = WorkerProcess(self.plan.job(workload, repeat), self.plan.worker_env(), log)
        except OSError as log_error:
            raise results.ResultWriteError(
                log_error.errno,
                f"cannot write the worker's log {log}: {log_error.strerror or log_error}",
            ) from log_error
        self.worker = worker
        try:
            for event in worker.events():
                kind = event["event"]
                if kind in ("epoch", "evaluated") and (diverged := non_finite(event)):
                    # JSON has no NaN: keep the finite epochs and say where training broke.
                    worker.terminate()
                    run["error"] = {"type": "Diverged", "message": diverged}
                    break
                recorder.apply(event)
                if kind == "epoch":
                    results.derive_figures(run)
                    self.progress.epoch(run)
                    writing = time.perf_counter()
                    self.save()
                    # In the parent, beside the worker's next epoch: a cost, not on its path.
                    timing = run["timing"]
                    timing["result_write_s"] = (
                        (timing.get("result_write_s") or 0.0) + time.perf_counter() - writing
                    )
        except RunInterruptedError:
            worker.terminate()
            self.close_run(recorder, "incomplete")
            run["error"] = {"type": "Interrupted", "message": "stopped before the run finished"}
            raise
        code = worker.wait()
        self.worker = None
        if recorder.done and code == 0:
            self.close_run(recorder, "complete")
        else:
            error = run["error"]
            if error is None:
                error = {
                    "type": "WorkerExited",
                    "message": f"worker exited with code {code}: {worker.log_tail(5)}",
                }
                run["error"] = error
            error["log"] = str(log)
            self.close_run(recorder, "failed")
        self.progress.run_finished(run)
        self.save()


def command_startup_s() -> float:
    """Seconds from this process's start (the kernel's clock, 10 ms steps) to now."""
    return max(0.0, time.time() - psutil.Process().create_time())


def non_finite(event: dict[str, Any]) -> str | None:
    """Why an epoch's or the evaluation's figures cannot be recorded (NaN or infinite), or None."""
    for key, value in event.items():
        if isinstance(value, float) and not math.isfinite(value):
            where = f"at epoch {event['epoch']}" if "epoch" in event else "in the evaluation"
            return (
                f"training diverged: {key} is {value} {where}; the epochs before it are kept "
                "(a smaller learning rate, or without --opt-in bf16, may train)"
            )
    return None


def new_document(
    plan: RunPlan,
    nvml: NvmlSession | str,
    pricing: Pricing | str,
    command: list[str],
    *,
    data_dir: Path | None = None,
    host: dict[str, Any] | None = None,
) -> results.Document:
    """The result document a plan starts from: settings, host, code, GPUs and price."""
    document = results.new_document(
        command, plan.settings(data_dir), host or hostinfo.describe_host(), hostinfo.describe_code()
    )
    document["gpus"] = fingerprint_gpus(nvml)
    document["host"]["machine_id"] = results.machine_id(document["host"], document["gpus"])
    document["nvml"] = nvml if isinstance(nvml, str) else None
    document["pricing"] = pricing if isinstance(pricing, str) else pricing.describe()
    return document


def run_plan(
    plan: RunPlan,
    nvml: NvmlSession | str,
    pricing: Pricing | str,
    command: list[str],
    *,
    data_dir: Path | None = None,
    host: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> results.Document:
    """Execute a plan with a fresh document (fingerprint and price filled in); the document."""
    document = new_document(plan, nvml, pricing, command, data_dir=data_dir, host=host)
    quiet = progress or Progress(quiet=True, stream=io.StringIO())
    Runner(plan, document, quiet, nvml, pricing).execute()
    return document
