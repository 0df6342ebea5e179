"""The same model, optimizer, loss, metrics, batches and shuffling as `fit`, without Keras's
per-step Python loop: each epoch's training is one compiled program over the batches of a
per-epoch permutation (JAX: lax.scan in an AOT-compiled jit; TensorFlow: a loop inside one
tf.function graph), validation another, over data kept on the device.

The data are arguments of the programs, never constants in them: constants would put the
data set into the program text (gigabytes) and into every compile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.training.modes import EpochObserver, TrainSettings

SUPPORTED_BACKENDS = ("jax", "tensorflow")


class CompiledModeUnsupportedError(RuntimeError):
    """The backend has no compiled mode; the message says what to use instead."""


def enable_compilation_cache(folder: Path) -> None:
    """JAX's persistent cache: a second run on this machine skips XLA's compile."""
    import jax

    # A cache we cannot use only costs compile time; JAX itself reads a corrupt entry as a miss.
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"dlbench: JAX compilation cache off, {folder}: {error}", file=sys.stderr)
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _accuracy_fn(loss: str) -> Callable[[Any, Any], Any]:
    """Keras's "accuracy" for these losses, per row: binary at 0.5, or argmax agreement."""
    import jax.numpy as jnp

    if loss == "binary_crossentropy":
        return lambda y, p: ((p[:, 0] > 0.5).astype(jnp.float32) == y).astype(jnp.float32)
    return lambda y, p: (jnp.argmax(p, axis=-1) == jnp.argmax(y, axis=-1)).astype(jnp.float32)


def build_programs(keras: Any, model: Any, loss_name: str, batch_size: int) -> dict[str, Any]:
    """The train-epoch and validation functions (not yet jitted), closed over the model only."""
    import jax
    import jax.numpy as jnp

    loss_fn = keras.losses.get(loss_name)
    correct = _accuracy_fn(loss_name)
    optimizer = model.optimizer
    binary = loss_name == "binary_crossentropy"

    def forward_loss(trainable: Any, non_trainable: Any, x: Any, y: Any, w: Any) -> Any:
        predictions, non_trainable = model.stateless_call(
            trainable, non_trainable, x.astype(jnp.float32), training=True
        )
        # The loss in float32 whatever the compute dtype: in bfloat16, Keras's 1 - 1e-7 clip
        # rounds to 1 and the cross-entropy's log gives NaN (--opt-in bf16).
        predictions = predictions.astype(jnp.float32)
        target = y[:, None] if binary else y
        # The mean over the rows whose weight is 1: padding rows (weight 0) change nothing.
        # (These models have no layer whose state a padding row could move, e.g. BatchNorm.)
        loss = jnp.sum(loss_fn(target, predictions) * w) / jnp.sum(w)
        return loss, (predictions, non_trainable)

    gradient = jax.value_and_grad(forward_loss, has_aux=True)

    def step(state: Any, rows: Any, w: Any, x: Any, y: Any) -> tuple[Any, Any]:
        trainable, non_trainable, optimizer_vars = state
        xb, yb = x[rows], y[rows]
        (loss, (predictions, non_trainable)), grads = gradient(trainable, non_trainable, xb, yb, w)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        hits = jnp.sum(correct(yb, predictions) * w)
        return (trainable, non_trainable, optimizer_vars), (loss * jnp.sum(w), hits)

    def train_epoch(state: Any, x: Any, y: Any, key: Any, shuffle: Any) -> tuple[Any, Any]:
        samples = x.shape[0]
        steps = -(-samples // batch_size)
        order = jnp.where(shuffle, jax.random.permutation(key, samples), jnp.arange(samples))
        # The last, smaller batch (as fit takes it) is padded to full size with weight-0 rows,
        # so that one traced step serves every batch: tracing the step a second time for it
        # made tracing the epoch 20 to 25 % slower (0.33 against 0.27 s on a 2-core CPU).
        padding = steps * batch_size - samples
        order = jnp.concatenate([order, jnp.zeros(padding, dtype=order.dtype)])
        weights = (jnp.arange(steps * batch_size) < samples).astype(jnp.float32)
        state, (losses, hits) = jax.lax.scan(
            lambda carry, batch: step(carry, batch[0], batch[1], x, y),
            state,
            (order.reshape(steps, batch_size), weights.reshape(steps, batch_size)),
        )
        return state, {"loss": jnp.sum(losses) / samples, "accuracy": jnp.sum(hits) / samples}

    def validate(state: Any, x: Any, y: Any) -> Any:
        trainable, non_trainable, _ = state
        predictions, _ = model.stateless_call(trainable, non_trainable, x.astype(jnp.float32))
        predictions = predictions.astype(jnp.float32)
        target = y[:, None] if binary else y
        return {
            "val_loss": jnp.mean(loss_fn(target, predictions)),
            "val_accuracy": jnp.sum(correct(y, predictions)) / x.shape[0],
        }

    return {"train_epoch": train_epoch, "validate": validate}


EVALUATION_CHUNK = 4096  # rows scored per step: bounds the float32 copy of the inputs


def evaluate_jax(keras: Any, model: Any, x: Any, y: Any) -> tuple[float, float]:
    """Test loss and accuracy as Keras's evaluate gives them, from one compiled program that
    scores the set in chunks (the last padded with weight-0 rows)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    loss_name = model.loss if isinstance(model.loss, str) else model.loss.name
    loss_fn = keras.losses.get(loss_name)
    correct = _accuracy_fn(loss_name)
    binary = loss_name == "binary_crossentropy"
    samples = len(x)
    chunk = min(EVALUATION_CHUNK, samples)
    steps = -(-samples // chunk)
    padding = steps * chunk - samples
    rows = np.concatenate([np.arange(samples), np.zeros(padding, dtype=np.int64)])
    weights = (np.arange(steps * chunk) < samples).astype(np.float32)

    def score(trainable: Any, non_trainable: Any, x: Any, y: Any) -> tuple[Any, Any]:
        def one(carry: Any, batch: Any) -> tuple[Any, Any]:
            index, w = batch
            xb, yb = x[index], y[index]
            predictions, _ = model.stateless_call(trainable, non_trainable, xb.astype(jnp.float32))
            predictions = predictions.astype(jnp.float32)
            target = yb[:, None] if binary else yb
            losses = jnp.sum(loss_fn(target, predictions) * w)
            return carry, (losses, jnp.sum(correct(yb, predictions) * w))

        _, (losses, hits) = jax.lax.scan(
            one, None, (rows.reshape(steps, chunk), weights.reshape(steps, chunk))
        )
        return jnp.sum(losses) / samples, jnp.sum(hits) / samples

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    inputs = jnp.asarray(np.asarray(x, dtype=np.uint8)), jnp.asarray(y)
    loss, accuracy = jax.jit(score)(trainable, non_trainable, *inputs)
    return float(loss), float(accuracy)


def train(
    keras: Any, model: Any, data: Any, settings: TrainSettings, observer: EpochObserver
) -> None:
    """Epoch by epoch, timed like fit's: training and validation apart, synced on the device."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        train_tensorflow(keras, model, data, settings, observer)
        return
    if backend != "jax":
        raise CompiledModeUnsupportedError(
            f"--mode compiled is implemented for the jax and tensorflow backends, not "
            f"{backend}; use one of those, or --mode fit"
        )
    train_jax(keras, model, data, settings, observer)


def epoch_record(
    epoch: int, train_s: float, val_s: float, metrics: dict[str, Any], startup: dict[str, float]
) -> dict[str, Any]:
    """The observer's record; the first epoch carries the start-up, as fit's first epoch does."""
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_s": train_s + (sum(startup.values()) if epoch == 0 else 0.0),
        "val_s": val_s,
        **{k: float(v) for k, v in metrics.items()},
    }
    if epoch == 0:
        record.update(startup)
    record["wall_s"] = record["train_s"] + record["val_s"]
    return record


def train_jax(
    keras: Any, model: Any, data: Any, settings: TrainSettings, observer: EpochObserver
) -> None:
    """JAX: stateless_call and the optimizer's stateless_apply in lax.scan, AOT-compiled."""
    import jax
    import jax.numpy as jnp

    started = time.perf_counter()
    model.optimizer.build(model.trainable_variables)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
    )
    device = jax.devices()[0]
    # 0/1 inputs travel as uint8 (4x fewer bytes) and become float32 on the device.
    x_train, y_train, x_val, y_val = (
        jax.device_put(jnp.asarray(a, dtype=jnp.uint8 if i % 2 == 0 else None), device)
        for i, a in enumerate((data.x_train, data.y_train, data.x_val, data.y_val))
    )
    jax.block_until_ready((x_train, y_train, x_val, y_val))
    transfer_s = time.perf_counter() - started

    loss_name = model.loss if isinstance(model.loss, str) else model.loss.name
    programs = build_programs(keras, model, loss_name, settings.batch_size)
    key = jax.random.PRNGKey(settings.seed)
    shuffle = jnp.asarray(settings.shuffle)

    traced = time.perf_counter()
    train_lowered = jax.jit(programs["train_epoch"]).lower(state, x_train, y_train, key, shuffle)
    validate_lowered = jax.jit(programs["validate"]).lower(state, x_val, y_val)
    trace_s = time.perf_counter() - traced
    compiling = time.perf_counter()
    train_epoch = train_lowered.compile()
    validate = validate_lowered.compile()
    compile_s = time.perf_counter() - compiling

    for epoch in range(settings.epochs):
        epoch_key = jax.random.fold_in(key, epoch)
        begun = time.perf_counter()
        state, train_metrics = train_epoch(state, x_train, y_train, epoch_key, shuffle)
        jax.block_until_ready(train_metrics)
        trained = time.perf_counter()
        val_metrics = validate(state, x_val, y_val)
        jax.block_until_ready(val_metrics)
        ended = time.perf_counter()
        startup = {"transfer_s": transfer_s, "trace_s": trace_s, "compile_s": compile_s}
        metrics = {**train_metrics, **val_metrics}
        observer(epoch_record(epoch, trained - begun, ended - trained, metrics, startup))

    trainable, non_trainable, optimizer_vars = state
    for variable, value in zip(model.trainable_variables, trainable, strict=True):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, non_trainable, strict=True):
        variable.assign(value)
    for variable, value in zip(model.optimizer.variables, optimizer_vars, strict=True):
        variable.assign(value)


def tensorflow_programs(keras: Any, model: Any, batch: int) -> tuple[Any, Any]:
    """The train-epoch and validation tf.functions for this model."""
    import tensorflow as tf

    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    loss_name = model.loss if isinstance(model.loss, str) else model.loss.name
    loss_fn = keras.losses.get(loss_name)
    binary = loss_name == "binary_crossentropy"

    def hits(y: Any, p: Any) -> Any:
        if binary:
            return tf.reduce_sum(tf.cast(tf.cast(p[:, 0] > 0.5, tf.float32) == y, tf.float32))
        same = tf.argmax(p, axis=-1) == tf.argmax(y, axis=-1)
        return tf.reduce_sum(tf.cast(same, tf.float32))

    def step(xb: Any, yb: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            predictions = model(tf.cast(xb, tf.float32), training=True)
            loss = tf.reduce_mean(loss_fn(yb[:, None] if binary else yb, predictions))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss, hits(yb, predictions)

    @tf.function
    def train_epoch(x: Any, y: Any, order: Any) -> dict[str, Any]:
        samples = tf.shape(order)[0]
        full = samples // batch
        loss_sum, hit_sum = tf.constant(0.0), tf.constant(0.0)
        for index in tf.range(full):
            rows = order[index * batch : (index + 1) * batch]
            loss, hit = step(tf.gather(x, rows), tf.gather(y, rows))
            loss_sum += loss * batch
            hit_sum += hit
        rest = order[full * batch :]
        if tf.size(rest) > 0:  # the last, smaller batch, as fit takes it
            loss, hit = step(tf.gather(x, rest), tf.gather(y, rest))
            loss_sum += loss * tf.cast(tf.size(rest), tf.float32)
            hit_sum += hit
        count = tf.cast(samples, tf.float32)
        return {"loss": loss_sum / count, "accuracy": hit_sum / count}

    @tf.function
    def validate(x: Any, y: Any) -> dict[str, Any]:
        predictions = model(tf.cast(x, tf.float32), training=False)
        loss = tf.reduce_mean(loss_fn(y[:, None] if binary else y, predictions))
        return {
            "val_loss": loss,
            "val_accuracy": hits(y, predictions) / tf.cast(tf.shape(x)[0], tf.float32),
        }

    return train_epoch, validate


def train_tensorflow(
    keras: Any, model: Any, data: Any, settings: TrainSettings, observer: EpochObserver
) -> None:
    """TensorFlow: the batch loop inside one tf.function, Keras's optimizer applied in-graph."""
    import numpy as np
    import tensorflow as tf

    started = time.perf_counter()
    device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        # 0/1 inputs travel as uint8 (4x fewer bytes) and become float32 on the device.
        x_train, x_val = (
            tf.constant(np.asarray(a, dtype=np.uint8)) for a in (data.x_train, data.x_val)
        )
        y_train, y_val = tf.constant(data.y_train), tf.constant(data.y_val)
    transfer_s = time.perf_counter() - started
    train_epoch, validate = tensorflow_programs(keras, model, settings.batch_size)
    samples = int(x_train.shape[0])
    traced = time.perf_counter()
    order_spec = tf.TensorSpec([samples], tf.int32)
    train_epoch.get_concrete_function(x_train, y_train, order_spec)
    validate.get_concrete_function(x_val, y_val)
    trace_s = time.perf_counter() - traced
    rng = np.random.default_rng(settings.seed)
    for epoch in range(settings.epochs):
        order_host = rng.permutation(samples) if settings.shuffle else np.arange(samples)
        order = tf.constant(order_host.astype(np.int32))
        begun = time.perf_counter()
        train_metrics = {k: v.numpy() for k, v in train_epoch(x_train, y_train, order).items()}
        trained = time.perf_counter()
        val_metrics = {k: v.numpy() for k, v in validate(x_val, y_val).items()}
        ended = time.perf_counter()
        # TensorFlow optimises the graph on its first call: that is in epoch 1's train_s.
        startup = {"transfer_s": transfer_s, "trace_s": trace_s}
        metrics = {**train_metrics, **val_metrics}
        observer(epoch_record(epoch, trained - begun, ended - trained, metrics, startup))
