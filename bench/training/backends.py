"""What each Keras backend is and where it really computed: asked of the backend, not assumed."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import MutableMapping
from typing import Any

BACKENDS = ("tensorflow", "jax", "torch")
# The distribution whose version names the backend (tensorflow-cpu installs module `tensorflow`).
_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


# How much GPU memory the frameworks take. JAX reserves 75 % of the card at its first GPU call
# and TensorFlow nearly all of it: 60 GB on an H100 for models of a few MB, which fails or evicts
# a notebook that already holds the GPU. "on-demand" lets both grow as they need; set before
# the framework is imported, for every framework a worker may import, whichever is the backend.
GPU_MEMORY_POLICIES = ("on-demand", "framework-default")
DEFAULT_GPU_MEMORY = "on-demand"
ON_DEMAND_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
# torch's caching allocator already grows on demand; its setting is only read, not set.
GPU_MEMORY_ENV_NAMES = (*ON_DEMAND_ENV, "XLA_PYTHON_CLIENT_MEM_FRACTION", "PYTORCH_CUDA_ALLOC_CONF")


def apply_gpu_memory_policy(
    policy: str, environ: MutableMapping[str, str] = os.environ
) -> dict[str, Any]:
    """Set the policy's variables where the user has not set them; what is now in effect."""
    if policy not in GPU_MEMORY_POLICIES:
        raise ValueError(f"unknown GPU memory policy {policy!r}: one of {GPU_MEMORY_POLICIES}")
    if policy == "on-demand":
        for name, value in ON_DEMAND_ENV.items():
            environ.setdefault(name, value)  # a user's own setting wins
    return {
        "policy": policy,
        "env": {name: environ[name] for name in GPU_MEMORY_ENV_NAMES if name in environ},
    }


def start_client(name: str) -> list[str]:
    """Start the backend's device client (on a GPU: driver context and allocator) by asking
    for its devices; their names."""
    if name == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if name == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    import torch

    if torch.cuda.is_available():
        torch.cuda.init()
    return ["cpu", *[f"cuda:{i}" for i in range(torch.cuda.device_count())]]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def installed(backend: str) -> bool:
    """Whether the backend's package can be imported here (without importing it)."""
    return _importable(_MODULES[backend])


JAX_CUDA_PLUGINS = (
    "jax_cuda12_plugin",
    "jax_cuda13_plugin",
    "jax_plugins.xla_cuda12",
    "jax_plugins.xla_cuda13",
)


def jax_cuda_plugin() -> bool:
    """Whether a CUDA plugin for JAX is installed (the CPU build has none)."""
    return any(_importable(p) for p in JAX_CUDA_PLUGINS)


def _tensorflow_devices(tf: Any, variable: Any) -> dict[str, Any]:
    placed = str(variable.device)
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    on_gpu = ":GPU:" in placed.upper()
    return {
        "device_type": "GPU" if on_gpu else "CPU",
        "device_name": names[0] if on_gpu and names else "CPU",
        "cuda_build": bool(tf.test.is_built_with_cuda()),
        "placement": placed,
        "visible": [d.name for d in tf.config.list_physical_devices()],
        "visible_gpus": names,
    }


def _jax_devices(jax: Any, variable: Any) -> dict[str, Any]:
    device = next(iter(variable.devices()))
    on_gpu = device.platform in ("gpu", "cuda", "rocm")
    return {
        "device_type": "GPU" if on_gpu else "CPU",
        "device_name": device.device_kind if on_gpu else "CPU",
        "cuda_build": on_gpu or jax_cuda_plugin(),
        "placement": str(device),
        "visible": [str(d) for d in jax.devices()],
        "visible_gpus": [d.device_kind for d in jax.devices() if d.platform != "cpu"],
    }


def _torch_devices(torch: Any, variable: Any) -> dict[str, Any]:
    device = variable.device
    on_gpu = device.type == "cuda"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    return {
        "device_type": "GPU" if on_gpu else "CPU",
        "device_name": torch.cuda.get_device_name(device) if on_gpu else "CPU",
        "cuda_build": torch.version.cuda is not None,
        "placement": str(device),
        "visible": ["cpu", *[f"cuda:{i}" for i in range(count)]],
        "visible_gpus": gpus,
    }


_PROBES = {"tensorflow": _tensorflow_devices, "jax": _jax_devices, "torch": _torch_devices}


def describe(keras: Any, model: Any) -> dict[str, Any]:
    """Backend name and versions, and the device holding the model's first weight."""
    name = keras.backend.backend()
    module = importlib.import_module(_MODULES[name])
    variable = model.trainable_variables[0].value
    return {
        "name": name,
        "version": getattr(module, "__version__", "unknown"),
        "keras_version": keras.__version__,
        **_PROBES[name](module, variable),
    }
