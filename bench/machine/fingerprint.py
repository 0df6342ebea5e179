"""Which GPUs this machine has; a diagnosis when one is there but Keras computed on the CPU."""

from __future__ import annotations

from typing import Any

from bench.machine.nvml import GpuUnreadError, NvmlSession

# Per backend: (cause when the wheel has no CUDA, cause when it has but saw no GPU, fix).
_CAUSES = {
    "tensorflow": (
        "the installed TensorFlow is a CPU-only build (tensorflow-cpu, or a wheel without CUDA)",
        "TensorFlow has CUDA support but found no usable GPU: its CUDA/cuDNN libraries are "
        "missing or do not match the driver",
        "pip install 'tensorflow[and-cuda]' (make: TF_EXTRA=tensorflow-cuda), then check "
        "python -c \"import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))\"",
    ),
    "jax": (
        "the installed JAX is the CPU build (no CUDA plugin)",
        "JAX has a CUDA plugin but found no usable GPU: CUDA libraries missing or too old "
        "for the driver",
        "pip install -U 'jax[cuda12]' (or jax[cuda13] with a CUDA 13 driver), then check "
        "python -c 'import jax; print(jax.devices())'",
    ),
    "torch": (
        "the installed PyTorch is a CPU-only wheel",
        "PyTorch has CUDA support but torch.cuda.is_available() is False: driver too old "
        "for this wheel's CUDA, or no device access",
        "install a CUDA build of torch (pip install torch from the PyTorch CUDA index), then "
        "check python -c 'import torch; print(torch.cuda.is_available())'",
    ),
}


def gpus(session: NvmlSession | str) -> list[dict[str, Any]]:
    if isinstance(session, str):
        return []
    return [_fingerprint(session, i) for i in range(session.device_count())]


def _fingerprint(session: NvmlSession, index: int) -> dict[str, Any]:
    """One GPU's fingerprint; every field None (not read) when NVML gave no handle for it."""
    try:
        return session.fingerprint(index)
    except GpuUnreadError:
        return dict.fromkeys(UNREAD_FINGERPRINT) | {"index": index}


UNREAD_FINGERPRINT = (
    "name",
    "uuid",
    "memory_total_mib",
    "driver_version",
    "cuda_driver_version",
    "compute_capability",
    "pcie_generation",
    "pcie_width",
    "power_limit_w",
    "persistence_mode",
)


def diagnose(
    nvml_gpus: list[dict[str, Any]], backend: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Name the problem when NVML sees a GPU and the backend computed on the CPU."""
    if not nvml_gpus or backend is None or backend.get("device_type") != "CPU":
        return None
    name = backend["name"]
    no_cuda, no_device, fix = _CAUSES[name]
    cause = no_cuda if backend.get("cuda_build") is False else no_device
    return {
        "problem": f"an NVIDIA GPU is present ({nvml_gpus[0]['name']}) but {name} computed on "
        "the CPU",
        "cause": cause,
        "fix": fix,
    }
