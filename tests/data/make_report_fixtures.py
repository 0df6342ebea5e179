"""Record the result files the report tests read (tests/data/results). Rerun after a schema change:

    DLSTATION_DATA_DIR=../shared/datasets python -m tests.data.make_report_fixtures

Every figure in them was measured by a real run on the machine that ran this script; only the
GPU is the tests' fake NVML (named in the file), and host names are set to tell machines apart.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import hostinfo, nvml
from bench.results import document as results
from bench.results.cost import Pricing
from bench.training import data
from bench.training.runner import RunPlan, run_plan
from bench.training.workloads import WORKLOADS
from tests.fakes.nvml import FakeNvml

OUT = Path(__file__).parent / "results"


def record(name: str, hostname: str, session: nvml.NvmlSession | str, price: float) -> None:
    data_dir = data.resolve_data_dir(None)
    assert data_dir is not None, "set DLSTATION_DATA_DIR"
    cache = data.resolve_cache_dir(None)
    workload = dataclasses.replace(WORKLOADS["reuters"], epochs=4)
    keras_home = data.prepare_keras_home(data.verify_data_file(workload, data_dir), cache)
    plan = RunPlan(
        workloads=(workload,),
        backend="tensorflow",
        mode="fit",
        seed=0,
        repeats=2,
        synthetic=False,
        cache_dir=cache,
        keras_home=keras_home,
        output=OUT / f"{name}.json",
        telemetry_interval_s=0.1,
    )
    host = {**hostinfo.describe_host(), "hostname": hostname}
    pricing = Pricing(price, "fixture: --price-per-hour", None)
    command = ["dlbench", "run", "reuters", "--epochs", "4"]
    run_plan(plan, session, pricing, command, data_dir=data_dir, host=host)


def interrupted(name: str) -> None:
    """A real run stopped by SIGINT after two epochs."""
    output = OUT / f"{name}.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "reuters",
            "--synthetic",
            "--epochs",
            "50",
            "--output",
            str(output),
            "--quiet",
        ]
    )
    while True:
        time.sleep(0.2)
        try:
            runs = json.loads(output.read_text())["runs"]
        except (OSError, ValueError):
            continue
        if runs and len(runs[0]["epochs"]) >= 2:
            break
    process.send_signal(signal.SIGINT)
    process.wait()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fake = nvml.open_nvml(lambda: FakeNvml("healthy", name="NVIDIA A10G (fake NVML)"))
    record("fixture-gpu-a", "fixture-a", fake, 1.006)
    record("fixture-cpu-b", "fixture-b", "fixture: no NVIDIA GPU on this host", 0.526)
    interrupted("fixture-incomplete")
    for path in OUT.glob("*.json"):
        results.load(path)
    shutil.rmtree(OUT / "logs", ignore_errors=True)
    print(sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
