"""One workload run in its own process; the parent set KERAS_BACKEND (and KERAS_HOME) first."""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: start-up is part of what we measure

import dataclasses
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.training import backends, data
from bench.training.modes import TrainSettings, get_trainer, options
from bench.training.process import EVENT_FD_ENV, EventWriter
from bench.training.workloads import get_workload


def _since_start() -> float:
    return time.perf_counter() - STARTED


# Imported by Keras at its own import only to offer plotting, which a worker never calls:
# matplotlib.pyplot alone was 0.35 of the 1.3 s `import keras` took (JAX backend, -X importtime).
# Keras catches the ImportError and goes on without plotting.
UNUSED_IMPORTS = ("matplotlib",)
# keras.utils.set_random_seed imports TensorFlow whenever it is installed, to seed tf.data
# pipelines, which a worker of another backend never uses: 6 to 12 s of every JAX run on a
# loaded 2-core machine. Keras asks for it through a lazy module that takes ImportError as
# "not installed".
OTHER_BACKENDS_UNUSED = ("tensorflow",)


def skip_unused_imports(backend: str) -> None:
    """Make the imports this worker never uses fail fast (a None entry in sys.modules is
    Python's 'not here')."""
    names = UNUSED_IMPORTS + (OTHER_BACKENDS_UNUSED if backend != "tensorflow" else ())
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def start_backend(job: dict[str, Any], emit: EventWriter) -> Any:
    """Memory policy and options set, Keras imported, the backend's client started: keras."""
    # STARTED is on the system's monotonic clock, as the parent's: its spawn to here is the
    # interpreter's own start.
    emit("started", clock_s=STARTED)
    emit("phase", phase="startup", at_s=_since_start())
    # Before the backend's import: JAX and TensorFlow read these when their GPU client starts.
    policy = job.get("gpu_memory", backends.DEFAULT_GPU_MEMORY)
    emit("gpu_memory", **backends.apply_gpu_memory_policy(policy))
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    emit("options", **options.apply(job.get("options", []), backend))
    skip_unused_imports(backend)
    import keras

    keras.utils.set_random_seed(job["seed"])
    emit("imported", import_s=_since_start())
    # The backend's client (on a GPU: the driver context, the allocator) starts at its first
    # device query; asked here, it is not counted as model build.
    emit("phase", phase="backend_start", at_s=_since_start())
    backends.start_client(keras.backend.backend())
    return keras


def score(keras: Any, model: Any, loaded: Any, method: str) -> tuple[float, float]:
    """Test loss and accuracy, by Keras's evaluate or the compiled program."""
    if method == "compiled":
        from bench.training.modes.compiled import evaluate_jax

        return evaluate_jax(keras, model, loaded.x_test, loaded.y_test)
    loss, accuracy = model.evaluate(loaded.x_test, loaded.y_test, verbose=0)
    return float(loss), float(accuracy)


def run(job: dict[str, Any], emit: EventWriter) -> None:
    """Import the backend, load data, build, train, evaluate; report each step as an event."""
    workload = dataclasses.replace(get_workload(job["workload"]), **job["overrides"])
    settings = TrainSettings(
        epochs=workload.epochs, batch_size=workload.batch_size, seed=job["seed"]
    )

    keras = start_backend(job, emit)

    emit("phase", phase="data_load", at_s=_since_start())
    # The compiled mode takes its 0/1 inputs as uint8; fit gets float32, as the text builds them.
    dtype = "uint8" if job["mode"] == "compiled" else "float32"
    if job["synthetic"]:
        loaded = data.load_synthetic(workload, settings.seed, dtype)
    else:
        loaded = data.load_real(workload, Path(job["cache_dir"]), dtype=dtype)
    emit(
        "data",
        at_s=_since_start(),
        provenance=loaded.provenance,
        train_samples=len(loaded.x_train),
        val_samples=len(loaded.x_val),
        test_samples=len(loaded.x_test),
        input_shape=list(loaded.x_train.shape[1:]),
    )

    emit("phase", phase="build", at_s=_since_start())
    from bench.training.model import build_model

    if job["mode"] == "compiled" and keras.backend.backend() == "jax":
        from bench.training.modes.compiled import enable_compilation_cache

        # Before the build: the weights' initialisers are small XLA programs too.
        enable_compilation_cache(Path(job["cache_dir"]) / "jax-compilation")
    chosen = job.get("options", [])
    if "bf16" in chosen:
        keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_model(keras, workload)
    trainer = get_trainer(job["mode"])
    emit("built", at_s=_since_start(), parameters=int(model.count_params()))

    def first_epoch_begins() -> None:
        emit("phase", phase="first_epoch", at_s=_since_start())

    if job["mode"] == "fit":
        # fit() prepares its data adapter and callbacks before epoch 1 begins: a part of its own.
        emit("phase", phase="fit_setup", at_s=_since_start())
        settings = dataclasses.replace(settings, first_epoch_begins=first_epoch_begins)
    else:
        first_epoch_begins()

    def on_epoch(record: dict[str, Any]) -> None:
        emit("epoch", at_s=_since_start(), **record)
        if record["epoch"] == 1:
            emit("phase", phase="steady_epochs", at_s=_since_start())

    trainer(keras, model, loaded, settings, on_epoch)

    emit("phase", phase="evaluation", at_s=_since_start())
    described = backends.describe(keras, model)
    backend = keras.backend.backend()
    method = options.evaluation_method(job["mode"], backend, described["device_type"], chosen)
    eval_started = time.perf_counter()
    test_loss, test_accuracy = score(keras, model, loaded, method)
    emit(
        "evaluated",
        at_s=_since_start(),
        loss=float(test_loss),
        accuracy=float(test_accuracy),
        eval_s=time.perf_counter() - eval_started,
        method=method,
    )
    emit("backend", **described)
    # ru_maxrss is in KiB on Linux.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit("done", at_s=_since_start(), peak_rss_mb=round(peak_mb, 1))


def main(argv: list[str]) -> int:
    emit = EventWriter(int(os.environ[EVENT_FD_ENV]))
    try:
        run(json.loads(argv[1]), emit)
    except data.DataError as error:
        emit("error", type="DataError", message=str(error))
        return 3
    except BrokenPipeError:
        return 1  # the parent is gone: nobody to report to
    except Exception as error:
        emit(
            "error",
            type=type(error).__name__,
            message=str(error),
            traceback=traceback.format_exc(limit=8),
        )
        return 1
    return 0


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown of the backend's runtime, which the parent
    would wait for: everything was reported and every file closed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv))
