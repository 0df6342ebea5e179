"""Raw device rates through the Keras backend's own framework, in a process of its own.

Run as `python -m bench.machine.probe` with KERAS_BACKEND set; prints one JSON object. Measures a
square matrix product in float32 (TF32 off: true float32) and bfloat16, and an on-device
elementwise copy (one read and one write per element), each timed after a warm-up call.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import exitcodes

GPU_MATMUL_N = 8192
CPU_MATMUL_N = 1024
GPU_COPY_BYTES = 1 << 30
CPU_COPY_BYTES = 1 << 28
MIN_SECONDS = 0.5


# Where the probe's time went, per measurement (warm-up and compilation included).
TIMING: dict[str, float] = {}


def seconds_per_call(
    run: Callable[[], Any], sync: Callable[[Any], Any], label: str = "measure"
) -> float:
    """Warm up once (compiles), then repeat until MIN_SECONDS have passed."""
    warm_up = time.perf_counter()
    sync(run())
    calls, started = 0, time.perf_counter()
    while True:
        out = run()
        calls += 1
        if calls % 4 == 0:
            sync(out)
            elapsed = time.perf_counter() - started
            if elapsed >= MIN_SECONDS:
                TIMING[f"{label}_s"] = round(time.perf_counter() - warm_up, 3)
                return elapsed / calls


def jax_probe() -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    on_gpu = device.platform != "cpu"

    def block(out: Any) -> Any:
        return out.block_until_ready()

    n = GPU_MATMUL_N if on_gpu else CPU_MATMUL_N
    key = jax.random.PRNGKey(0)
    rates = {}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        if name == "bfloat16" and not on_gpu:
            continue
        a = jax.random.normal(key, (n, n), dtype)
        multiply = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
        per_call = seconds_per_call(partial(multiply, a, a), block, f"matmul_{name}")
        rates[name] = {"n": n, "tflops": 2 * n**3 / per_call / 1e12}
    size = (GPU_COPY_BYTES if on_gpu else CPU_COPY_BYTES) // 4
    x = jnp.ones((size,), jnp.float32)
    add_one = jax.jit(lambda v: v + 1.0)
    per_copy = seconds_per_call(partial(add_one, x), block, "copy")
    from bench.training.backends import jax_cuda_plugin

    return {
        "device_type": "GPU" if on_gpu else "CPU",
        "device_name": device.device_kind if on_gpu else "CPU",
        "cuda_build": on_gpu or jax_cuda_plugin(),
        "matmul": rates,
        "copy_gbps": 2 * size * 4 / per_copy / 1e9,
    }


def torch_probe() -> dict[str, Any]:
    import torch

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sync = (lambda o: torch.cuda.synchronize()) if on_gpu else (lambda o: None)
    n = GPU_MATMUL_N if on_gpu else CPU_MATMUL_N
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        if name == "bfloat16" and not on_gpu:
            continue
        a = torch.randn(n, n, device=device, dtype=dtype)
        per_call = seconds_per_call(partial(torch.matmul, a, a), sync, f"matmul_{name}")
        rates[name] = {"n": n, "tflops": 2 * n**3 / per_call / 1e12}
    size = (GPU_COPY_BYTES if on_gpu else CPU_COPY_BYTES) // 4
    x = torch.ones(size, device=device)
    y = torch.empty_like(x)
    per_copy = seconds_per_call(lambda: torch.add(x, 1.0, out=y), sync, "copy")
    return {
        "device_type": "GPU" if on_gpu else "CPU",
        "device_name": torch.cuda.get_device_name(0) if on_gpu else "CPU",
        "cuda_build": torch.version.cuda is not None,
        "matmul": rates,
        "copy_gbps": 2 * size * 4 / per_copy / 1e9,
    }


def tensorflow_probe() -> dict[str, Any]:
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
    gpus = tf.config.list_physical_devices("GPU")
    on_gpu = bool(gpus)
    where = "/GPU:0" if on_gpu else "/CPU:0"
    n = GPU_MATMUL_N if on_gpu else CPU_MATMUL_N
    # Syncing on one element of the result waits for the whole product, copying 4 bytes back.
    sync = lambda o: o.numpy()  # noqa: E731
    rates = {}
    with tf.device(where):
        for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
            if name == "bfloat16" and not on_gpu:
                continue
            a = tf.cast(tf.random.normal((n, n)), dtype)
            multiply = tf.function(lambda x: tf.matmul(x, x)[0, 0])
            per_call = seconds_per_call(partial(multiply, a), sync, f"matmul_{name}")
            rates[name] = {"n": n, "tflops": 2 * n**3 / per_call / 1e12}
        size = (GPU_COPY_BYTES if on_gpu else CPU_COPY_BYTES) // 4
        x = tf.ones((size,))
        add_one = tf.function(lambda v: (v + 1.0)[0])
        per_copy = seconds_per_call(lambda: add_one(x), sync, "copy")
    name = "CPU"
    if on_gpu:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return {
        "device_type": "GPU" if on_gpu else "CPU",
        "device_name": name,
        "cuda_build": bool(tf.test.is_built_with_cuda()),
        "matmul": rates,
        "copy_gbps": 2 * size * 4 / per_copy / 1e9,
    }


FRAMEWORKS = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}
PROBES = {"jax": jax_probe, "torch": torch_probe, "tensorflow": tensorflow_probe}


# What a framework raises when its install or the device is the problem: a finding about the
# machine. Anything else (KeyError, TypeError, ...) is a bug in this probe.
FINDINGS = (ImportError, OSError, RuntimeError, MemoryError)


def finding(error: Exception) -> bool:
    """The backend or device failed (a verdict), rather than the probe's own code (a bug)."""
    module = type(error).__module__.split(".")[0]
    return isinstance(error, FINDINGS) or module in FRAMEWORKS or module == "jaxlib"


def main() -> int:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    started = time.perf_counter()
    try:
        importlib.import_module(FRAMEWORKS[backend])
        TIMING["import_s"] = round(time.perf_counter() - started, 3)
        result = PROBES[backend]()
    except Exception as error:
        if finding(error):  # the parent turns it into a FAIL line about this machine
            print(json.dumps({"backend": backend, "error": f"{type(error).__name__}: {error}"}))
            return 1
        traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        said = f"{type(error).__name__}: {first}" if first else type(error).__name__
        print(json.dumps({"backend": backend, "internal_error": said}))
        return exitcodes.INTERNAL
    result.update(backend=backend, elapsed_s=time.perf_counter() - started, timing=TIMING)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
