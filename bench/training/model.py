"""The text's model for a workload: Dense layers in a Sequential, compiled as the listing says."""

from __future__ import annotations

from typing import Any

from bench.training.workloads.spec import Workload


def build_model(keras: Any, workload: Workload) -> Any:
    """The Sequential Dense stack of the definition, compiled with its loss and optimizer."""
    layers = [keras.Input(shape=(workload.num_words,))]
    layers += [keras.layers.Dense(units, activation=act) for units, act in workload.layers()]
    model = keras.Sequential(layers, name=workload.name)
    model.compile(optimizer=workload.optimizer, loss=workload.loss, metrics=list(workload.metrics))
    return model
