"""`dlbench verify`: is the GPU there, healthy, used by Keras, and as fast as its kind should be?

Measuring (NVML, the probe process, a short training run) is kept apart from judging:
`judge()` turns recorded observations into checks and a verdict, and tests drive it directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.nvml import HARMFUL_THROTTLE

PASS, WARN, FAIL, INFO = "PASS", "WARN", "FAIL", "INFO"
EXIT_CODES = {PASS: 0, FAIL: 1, WARN: 3}
# Fractions of the datasheet peak: at or above the first is PASS, above the second WARN.
MATMUL_BANDS = (0.5, 0.25)
COPY_BANDS = (0.6, 0.35)
WORKLOAD_BAND = 0.7  # steady samples/s against this project's reference for the same card
PROBE_TIMEOUT_S = 300


@dataclass
class Check:
    """One line of the verdict: what was checked, how it went, and what to do about it."""

    name: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class Observations:
    """Everything verify measured, in the shape judge() reads (and tests record)."""

    backend: str
    expect_gpu: bool
    nvml_reason: str | None
    gpus: list[dict[str, Any]]
    probe: dict[str, Any]
    throttle_seen: list[str] = field(default_factory=list)
    clocks_mhz: dict[str, float | None] = field(default_factory=dict)
    workload: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None


def datasheet() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("bench").joinpath("data/gpus.json").read_text()
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


def judge(seen: Observations) -> list[Check]:
    """The checks, in the order a person reads them."""
    checks: list[Check] = []
    gpu = seen.gpus[0] if seen.gpus else None
    if gpu is None:
        status = FAIL if seen.expect_gpu else INFO
        checks.append(
            Check(
                "gpu",
                status,
                f"no NVIDIA GPU usable: {seen.nvml_reason}",
                "install the NVIDIA driver (ansible-playbook setup.yml) and reboot"
                if seen.expect_gpu
                else None,
            )
        )
    else:
        names = ", ".join(g["name"] for g in seen.gpus)
        checks.append(
            Check(
                "driver",
                PASS,
                f"NVML answers: driver {gpu['driver_version']}, CUDA {gpu['cuda_driver_version']}, "
                f"{len(seen.gpus)} GPU(s): {names}",
            )
        )
    probe = seen.probe
    if "error" in probe:
        checks.append(
            Check(
                "backend",
                FAIL,
                f"{seen.backend} could not run: {probe['error']}",
                f"check the {seen.backend} install: python -m bench.probe",
            )
        )
        return checks
    if gpu is not None and probe["device_type"] != "GPU":
        checks.append(
            Check(
                "backend",
                FAIL,
                f"{seen.backend} computed on the CPU although {gpu['name']} is present",
                f"install {seen.backend} with CUDA support (see the diagnosis in `dlbench run` "
                "results); `make` with TF_EXTRA=tensorflow-cuda for TensorFlow",
            )
        )
    else:
        checks.append(Check("backend", PASS, f"{seen.backend} computes on {probe['device_name']}"))
    checks += rate_checks(seen, gpu)
    checks += throttle_checks(seen)
    checks += workload_checks(seen)
    return checks


def rate_checks(seen: Observations, gpu: dict[str, Any] | None) -> list[Check]:
    probe = seen.probe
    matmul = probe.get("matmul", {})
    copy = probe.get("copy_gbps")
    if gpu is None or probe["device_type"] != "GPU":
        rates = ", ".join(f"{k} {v['tflops'] * 1000:.1f} GFLOP/s" for k, v in matmul.items())
        return [
            Check(
                "throughput",
                INFO,
                f"CPU: matmul {rates}, copy {copy:.1f} GB/s (no datasheet for CPUs)",
            )
        ]
    model = datasheet_for(gpu["name"])
    if model is None:
        return [
            Check(
                "throughput",
                WARN,
                f"{gpu['name']} is not in bench/data/gpus.json; measured "
                + ", ".join(f"{k} {v['tflops']:.1f} TFLOP/s" for k, v in matmul.items())
                + f", copy {copy:.0f} GB/s",
                "add the card's datasheet figures to bench/data/gpus.json",
            )
        ]
    checks = []
    for dtype, key in (("float32", "fp32_tflops"), ("bfloat16", "bf16_tflops")):
        peak, measured = model[key], matmul.get(dtype)
        if peak is None or measured is None:
            continue
        ratio = measured["tflops"] / peak
        status = band(ratio, MATMUL_BANDS)
        checks.append(
            Check(
                f"matmul {dtype}",
                status,
                f"{measured['tflops']:.1f} TFLOP/s = {ratio:.0%} of the {model['model']} datasheet "
                f"({peak:g}), n={measured['n']}",
                None
                if status == PASS
                else "check clocks, power limit and throttling below; nvidia-smi -q -d PERFORMANCE",
            )
        )
    ratio = copy / model["memory_gbps"]
    status = band(ratio, COPY_BANDS)
    checks.append(
        Check(
            "memory copy",
            status,
            f"{copy:.0f} GB/s = {ratio:.0%} of the {model['model']} datasheet "
            f"({model['memory_gbps']:g} GB/s)",
            None if status == PASS else "another process may share the GPU: nvidia-smi",
        )
    )
    return checks


def throttle_checks(seen: Observations) -> list[Check]:
    if not seen.gpus:
        return []
    clocks = seen.clocks_mhz
    clock_text = (
        f"SM clock mean {clocks['mean']:.0f} MHz, max {clocks['max']:.0f} MHz"
        if clocks.get("mean") is not None
        else "SM clock not reported"
    )
    harmful = sorted(set(seen.throttle_seen) & HARMFUL_THROTTLE - {"sw_power_cap"})
    if harmful:
        return [
            Check(
                "clocks",
                WARN,
                f"{clock_text}; slowed by {', '.join(harmful)}",
                "improve cooling or airflow, check the power limit: nvidia-smi -q -d "
                "PERFORMANCE,POWER,TEMPERATURE",
            )
        ]
    power = (
        " (power cap reached under load, as expected)"
        if "sw_power_cap" in seen.throttle_seen
        else ""
    )
    return [Check("clocks", PASS, f"{clock_text}; no thermal or hardware slowdown{power}")]


def workload_checks(seen: Observations) -> list[Check]:
    run = seen.workload
    if run is None:
        return []
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
    rate = run["throughput"]["steady_samples_per_s"]
    device = (run.get("backend") or {}).get("device_name", "?")
    checks = [
        Check(
            "workload",
            PASS,
            f"the text's reuters model trains on {device}: "
            f"{rate:,.0f} samples/s (synthetic data, fit)",
        )
    ]
    reference = seen.reference
    if reference is None:
        name = seen.gpus[0]["name"] if seen.gpus else "this CPU"
        checks.append(
            Check(
                "reference",
                INFO,
                f"no reference results for {name} with {seen.backend} in bench/reference/",
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
            )
        )
    return checks


def verdict(checks: list[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def find_reference(
    gpu_name: str | None, backend: str, folder: Path | None = None
) -> dict[str, Any] | None:
    """This project's committed result for the same card and backend (fit mode, reuters)."""
    if gpu_name is None:
        return None
    from bench import results

    root = folder or Path(str(resources.files("bench").joinpath("reference")))
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            document = results.load(path)
        except results.ResultError:
            continue
        if not document["gpus"] or document["gpus"][0]["name"] != gpu_name:
            continue
        if document["settings"]["backend"] != backend or document["settings"]["mode"] != "fit":
            continue
        figure = document["summary"].get("reuters", {}).get("steady_samples_per_s", {})
        if figure.get("median"):
            return {"gpu": gpu_name, "steady_samples_per_s": figure["median"], "file": path.name}
    return None


def run_probe(backend: str) -> dict[str, Any]:
    """bench.probe in its own process, as the backend must be chosen before it is imported."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.probe"],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the probe took over {PROBE_TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return {"error": f"the probe printed no result (exit {done.returncode}): {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def render(checks: list[Check], final: str, backend: str, expect_gpu: bool) -> str:
    lines = [f"dlbench verify ({backend} backend, GPU {'expected' if expect_gpu else 'optional'})"]
    for check in checks:
        lines.append(f"  {check.status:<4}  {check.name:<16} {check.detail}")
        if check.fix:
            lines.append(f"  {'':<4}  {'':<16} what to do: {check.fix}")
    lines.append(f"verdict: {final}")
    return "\n".join(lines)


def as_json(checks: list[Check], final: str, seen: Observations) -> str:
    return json.dumps(
        {
            "verdict": final,
            "exit_code": EXIT_CODES[final],
            "checks": [asdict(c) for c in checks],
            "gpus": seen.gpus,
            "probe": seen.probe,
            "throttle_seen": seen.throttle_seen,
            "reference": seen.reference,
        },
        indent=1,
    )
