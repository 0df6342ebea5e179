"""Run with KERAS_BACKEND=jax: one epoch of fit and of compiled mode from the same initial
weights, shuffling off; prints the largest weight difference and both epochs' metrics as JSON."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import keras
import numpy as np

from bench.training import data
from bench.training.model import build_model
from bench.training.modes import TrainSettings
from bench.training.modes.compiled import train as train_compiled
from bench.training.modes.fit import train as train_fit
from bench.training.workloads import get_workload


def main(name: str) -> None:
    workload = dataclasses.replace(
        get_workload(name),
        synthetic_train_samples=2_300,
        synthetic_test_samples=10,
        validation_samples=500,
        num_words=2_000,
        synthetic_words_per_sample=40,
    )
    loaded = data.load_synthetic(workload, seed=3)
    settings = TrainSettings(epochs=1, batch_size=512, seed=0, shuffle=False)
    keras.utils.set_random_seed(0)
    reference = build_model(keras, workload)
    initial = reference.get_weights()
    records: dict[str, list[dict[str, Any]]] = {"fit": [], "compiled": []}
    models = {}
    for mode, trainer in (("fit", train_fit), ("compiled", train_compiled)):
        model = build_model(keras, workload)
        model.set_weights(initial)

        def observe(record: dict[str, Any], mode: str = mode) -> None:
            records[mode].append(record)

        trainer(keras, model, loaded, settings, observe)
        models[mode] = model
    diffs = [
        float(np.max(np.abs(a - b)))
        for a, b in zip(models["fit"].get_weights(), models["compiled"].get_weights(), strict=True)
    ]
    moved = [
        float(np.max(np.abs(a - b)))
        for a, b in zip(initial, models["fit"].get_weights(), strict=True)
    ]
    print(
        json.dumps(
            {
                "max_weight_diff": max(diffs),
                "min_weight_move": min(moved),
                "fit": records["fit"][0],
                "compiled": records["compiled"][0],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
