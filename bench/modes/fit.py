"""The text's own training loop: `model.fit` with validation data, timed per epoch."""

from __future__ import annotations

import time
from typing import Any

import keras

from bench.modes import EpochObserver, TrainSettings


class EpochTimer(keras.callbacks.Callback):
    """Times training and validation of each epoch apart, so throughput counts training only."""

    def __init__(self, observer: EpochObserver) -> None:
        super().__init__()
        self.observer = observer
        self.epoch_started = 0.0
        self.train_ended = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.perf_counter()
        self.train_ended = 0.0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.train_ended = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        ended = time.perf_counter()
        train_ended = self.train_ended or ended
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        self.observer(
            {
                "epoch": epoch + 1,
                "wall_s": ended - self.epoch_started,
                "train_s": train_ended - self.epoch_started,
                "val_s": ended - train_ended,
                **metrics,
            }
        )


def train(
    keras_module: Any, model: Any, data: Any, settings: TrainSettings, observer: EpochObserver
) -> None:
    """model.fit(partial_x_train, partial_y_train, ..., validation_data) as in the text."""
    model.fit(
        data.x_train,
        data.y_train,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        validation_data=(data.x_val, data.y_val),
        shuffle=settings.shuffle,
        callbacks=[EpochTimer(observer)],
        verbose=0,
    )
