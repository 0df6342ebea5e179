"""dlbench from Python, for notebooks: the data folder, this runtime, `verify` and short runs.

Each function does what the matching command does and returns values instead of printing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import app
from bench.app import NOT_PRICED, UsageError
from bench.machine import fingerprint, nvml, verify_measure
from bench.machine.verify import Check
from bench.results.document import Document
from bench.training import backends
from bench.training.workloads import WORKLOADS

KERAS_HOME_ENV = "KERAS_HOME"


def notebooks_dir() -> Path:
    """The folder of notebooks that ships inside the package (IMDB, Reuters, this machine)."""
    return Path(__file__).resolve().parent / "notebooks"


def keras_home(data_dir: str | None = None, cache_dir: str | None = None) -> Path | None:
    """A KERAS_HOME holding the data folder's files, as `dlbench run` builds it; None without one.

    The folder is --data-dir's value, else $DLSTATION_DATA_DIR; bad data raises UsageError.
    """
    return app.keras_home(tuple(WORKLOADS.values()), data_dir, app.checked_cache_dir(cache_dir))


def use_data_dir(data_dir: str | None = None, cache_dir: str | None = None) -> Path | None:
    """Point Keras's loaders at the data folder; call it before `import keras`."""
    home = keras_home(data_dir, cache_dir)
    if home is None:
        return None
    if "keras" in sys.modules and os.environ.get(KERAS_HOME_ENV) != str(home):
        raise UsageError(
            "keras was imported before the data folder was set, and reads KERAS_HOME only at "
            "import: restart the kernel and run this cell before `import keras`"
        )
    os.environ[KERAS_HOME_ENV] = str(home)
    return home


@dataclass
class Runtime:
    """Which Python, backend and device this process computes on, and the GPUs NVML sees."""

    python: str
    keras_version: str
    backend: dict[str, Any]
    nvml_gpus: list[str]
    nvml_reason: str | None
    diagnosis: dict[str, Any] | None

    def summary(self) -> str:
        """A few lines for a notebook's first cell."""
        backend = self.backend
        gpus = ", ".join(self.nvml_gpus) or f"none ({self.nvml_reason})"
        lines = [
            f"kernel:  {self.python}",
            f"keras:   {self.keras_version}, backend {backend['name']} {backend['version']}",
            f"device:  {backend['device_type']} ({backend['device_name']}), "
            f"placement {backend['placement']}",
            f"NVIDIA GPUs on this machine: {gpus}",
        ]
        if self.diagnosis:
            lines += [
                f"WARNING: {self.diagnosis['problem']}.",
                f"  cause: {self.diagnosis['cause']}",
                f"  what to do: {self.diagnosis['fix']}; or pick the dlstation kernel "
                "(Kernel > Change Kernel) if this is another Python",
            ]
        return "\n".join(lines)


def describe_runtime() -> Runtime:
    """Ask the backend where a weight really lives, and NVML which GPUs exist."""
    import keras

    probe = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
    backend = backends.describe(keras, probe)
    session = nvml.open_nvml()
    try:
        gpus = fingerprint.gpus(session)
    finally:
        if isinstance(session, nvml.NvmlSession):
            session.close()
    return Runtime(
        python=sys.executable,
        keras_version=keras.__version__,
        backend=backend,
        nvml_gpus=[gpu["name"] for gpu in gpus],
        nvml_reason=session if isinstance(session, str) else None,
        diagnosis=fingerprint.diagnose(gpus, backend),
    )


@dataclass
class VerifyReport:
    """`dlbench verify --json`'s answer; `text` is what the command prints."""

    verdict: str
    exit_code: int
    checks: list[Check]
    details: dict[str, Any]
    text: str


def verify(backend: str, expect_gpu: bool = False, workload: bool = True) -> VerifyReport:
    """Run `dlbench verify` (probes and, unless workload=False, its short Reuters run)."""
    options = verify_measure.Options(backend=backend, expect_gpu=expect_gpu, workload=workload)
    verified = app.verify(options)
    return VerifyReport(
        verdict=verified.verdict,
        exit_code=verified.exit_code,
        checks=verified.checks,
        details=verified.document(),
        text=verified.text(),
    )


def run(
    workload: str,
    backend: str,
    mode: str = "fit",
    epochs: int | None = None,
    *,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    synthetic: bool = False,
    seed: int = 0,
    output: Path | None = None,
    telemetry_interval_s: float = 0.2,
) -> Document:
    """One `dlbench run` of one workload in a fresh worker process; the result document.

    The document is kept in `output` when given, else only returned. Nothing asks EC2 for a
    price, as `--no-imds` would not either.
    """
    with tempfile.TemporaryDirectory(prefix="dlbench-api-") as scratch:
        request = app.RunRequest(
            workloads=(workload,),
            backend=backend,
            mode=mode,
            epochs=epochs,
            seed=seed,
            data_dir=data_dir,
            cache_dir=cache_dir,
            synthetic=synthetic,
            output=str(output or Path(scratch) / "result.json"),
            telemetry_interval_s=telemetry_interval_s,
        )
        command = ["bench.api.run", workload, f"--backend={backend}", f"--mode={mode}"]
        _, document = app.run(app.prepare_run(request), command)
        return document


__all__ = [
    "NOT_PRICED",
    "Runtime",
    "UsageError",
    "VerifyReport",
    "describe_runtime",
    "keras_home",
    "notebooks_dir",
    "run",
    "use_data_dir",
    "verify",
]
