"""A bare JAX training loop for one workload, no Keras: the floor the compiled mode is held to.

Same shapes, batch size, epochs and per-epoch shuffling; a hand-written Dense stack and RMSprop;
training only (no validation pass). Prints one JSON object with its timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.training import data
from bench.training.workloads import get_workload


def main(name: str, data_dir: str | None, epochs: int | None = None) -> None:
    started = time.perf_counter()
    # Keras only loads the data here; left unset it would import TensorFlow, its default.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp

    workload = get_workload(name)
    if epochs is not None:
        workload = dataclasses.replace(workload, epochs=epochs)
    if data_dir:
        cache_dir = data.resolve_cache_dir(None)
        # As dlbench does: Keras's loader reads the verified file through a private KERAS_HOME.
        data_file = data.verify_data_file(workload, Path(data_dir))
        os.environ["KERAS_HOME"] = str(data.prepare_keras_home(data_file, cache_dir))
        loaded = data.load_real(workload, cache_dir)
        source = "keras"
    else:
        loaded = data.load_synthetic(workload, seed=0)
        source = "synthetic"
    x = jax.device_put(np.asarray(loaded.x_train, dtype=np.uint8))
    y = jax.device_put(loaded.y_train)
    sizes = [workload.num_words, *[u for u, _ in workload.layers()]]
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    params = [
        (jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / (a + b)), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    binary = workload.labels == "binary"

    def loss_fn(params: Any, xb: Any, yb: Any) -> Any:
        h = xb.astype(jnp.float32)
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        logits = h @ params[-1][0] + params[-1][1]
        if binary:
            p = jnp.clip(jax.nn.sigmoid(logits[:, 0]), 1e-7, 1 - 1e-7)
            return -jnp.mean(yb * jnp.log(p) + (1 - yb) * jnp.log(1 - p))
        return -jnp.mean(jnp.sum(yb * jax.nn.log_softmax(logits), axis=-1))

    def step(carry: Any, rows: Any) -> tuple[Any, Any]:
        params, velocity = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x[rows], y[rows])
        velocity = jax.tree_util.tree_map(lambda v, g: 0.9 * v + 0.1 * g * g, velocity, grads)
        params = jax.tree_util.tree_map(
            lambda p, g, v: p - 0.001 * g / (jnp.sqrt(v) + 1e-7), params, grads, velocity
        )
        return (params, velocity), loss

    batch = workload.batch_size
    samples = x.shape[0]
    full = samples // batch

    @jax.jit
    def epoch(params: Any, velocity: Any, key: Any) -> Any:
        order = jax.random.permutation(key, samples)[: full * batch].reshape(full, batch)
        (params, velocity), losses = jax.lax.scan(step, (params, velocity), order)
        return params, velocity, jnp.mean(losses)

    times = []
    for index in range(workload.epochs):
        begun = time.perf_counter()
        params, velocity, loss = epoch(params, velocity, jax.random.PRNGKey(index))
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - begun)
    steady = float(np.median(times[1:]))
    print(
        json.dumps(
            {
                "mode": "bare jax",
                "data": source,
                "first_epoch_s": times[0],
                "steady_epoch_s": steady,
                "steady_samples_per_s": full * batch / steady,
                "end_to_end_s": time.perf_counter() - started,
                "device": str(jax.devices()[0]),
                "final_loss": float(loss),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--epochs", type=int, help="default: the workload's")
    args = parser.parse_args()
    main(args.workload, args.data_dir, args.epochs)
