"""Opt-in changes to the compiled mode, applied in the worker before the backend's import, and
the choice of how the test set is scored. Each change is off by default until a benchmark on
the device kind shows it helps; each one applied, refused or fallen back is recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

# XLA on a GPU runs a loop's small kernels as one CUDA graph (a command buffer) when WHILE is
# among the captured kinds: fewer launches for the compiled epoch's ~30 steps. Some XLA
# versions had bugs with WHILE, hence the probe before a run uses it.
COMMAND_BUFFER_FLAGS = (
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL",
    "--xla_gpu_graph_min_graph_size=1",
)
OPTIONS = {
    "command-buffers": "XLA command buffers (CUDA graphs) for the epoch loop, WHILE included",
    "bf16": "bfloat16 compute (Keras's mixed_bfloat16 policy), float32 weights",
    "compiled-evaluation": "score the test set with a compiled program, not Keras's evaluate",
    "keras-evaluation": "score the test set with Keras's evaluate",
}
# How the compiled mode scores the test set, per device kind, by measurement: on a 2-core CPU
# Keras's evaluate was as fast on IMDB (warm caches) and the compiled program faster only on
# Reuters; on a GPU Keras's until a run there says otherwise (bench/perf/modes.py measures both).
EVALUATION_BY_DEVICE = {"CPU": "keras", "GPU": "keras"}
# A program small enough to compile in a second, run with the flags in a fresh interpreter.
PROBE = "import jax, jax.numpy as jnp; print(jax.jit(lambda x: (x * 2).sum())(jnp.ones(8)))"


class OptionError(ValueError):
    """An option name that does not exist, or two that contradict each other."""


def check(options: list[str], mode: str | None = None, backend: str | None = None) -> None:
    """Refuse unknown or contradicting options, and those the mode and backend cannot use."""
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise OptionError(f"unknown option(s) {unknown}: one of {sorted(OPTIONS)}")
    if {"compiled-evaluation", "keras-evaluation"} <= set(options):
        raise OptionError("compiled-evaluation and keras-evaluation exclude each other")
    if "compiled-evaluation" in options and (mode, backend) not in (
        (None, None),
        ("compiled", "jax"),
    ):
        raise OptionError(
            "--opt-in compiled-evaluation needs --mode compiled --backend jax; drop it or use those"
        )


def probe_flags(flags: str, environ: MutableMapping[str, str]) -> str | None:
    """None when a fresh JAX compiles and runs with XLA_FLAGS=flags; else why not (XLA aborts
    on a flag it does not know, so the trial runs in its own process)."""
    env = {**environ, "XLA_FLAGS": flags}
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "a JAX program with these XLA flags did not finish in 120 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"a JAX program with these XLA flags failed (exit {done.returncode}): {last}"
    return None


def apply(
    options: list[str],
    backend: str,
    environ: MutableMapping[str, str] = os.environ,
    probe: Callable[[str, MutableMapping[str, str]], str | None] = probe_flags,
) -> dict[str, Any]:
    """Set what the options need before the backend's import; the record of what was done."""
    check(options)
    record: dict[str, Any] = {
        "requested": list(options),
        "applied": [],
        "fallbacks": {},
        "xla_flags": environ.get("XLA_FLAGS", ""),
    }
    if "command-buffers" in options:
        if backend != "jax":
            record["fallbacks"]["command-buffers"] = f"XLA flags apply to JAX, not {backend}"
        else:
            flags = " ".join([environ.get("XLA_FLAGS", ""), *COMMAND_BUFFER_FLAGS]).strip()
            failure = probe(flags, environ)
            if failure is None:
                environ["XLA_FLAGS"] = flags
                record["applied"].append("command-buffers")
            else:
                record["fallbacks"]["command-buffers"] = failure
    record["xla_flags"] = environ.get("XLA_FLAGS", "")
    for name in ("bf16", "compiled-evaluation", "keras-evaluation"):
        if name in options:
            record["applied"].append(name)  # applied later, in the model build and scoring
    return record


def evaluation_method(mode: str, backend: str, device_type: str, options: list[str]) -> str:
    """'compiled' or 'keras': how the test set is scored in this run."""
    if mode != "compiled" or backend != "jax":
        return "keras"
    if "compiled-evaluation" in options:
        return "compiled"
    if "keras-evaluation" in options:
        return "keras"
    return EVALUATION_BY_DEVICE.get(device_type, "keras")
