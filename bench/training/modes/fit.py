"""The text's own training loop: `model.fit` with validation data, timed per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras

from bench.training.modes import EpochObserver, TrainSettings


def wait_for(variable: Any) -> None:
    """Block until the variable's value is computed (a copy to the host of a small weight)."""
    keras.ops.convert_to_numpy(variable.value)


class EpochTimer(keras.callbacks.Callback):
    """Times training and validation of each epoch apart, so throughput counts training only."""

    def __init__(
        self, observer: EpochObserver, first_epoch_begins: Callable[[], None] | None = None
    ) -> None:
        super().__init__()
        self.observer = observer
        self.first_epoch_begins = first_epoch_begins
        self.epoch_started = 0.0
        self.train_ended = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == 0 and self.first_epoch_begins is not None:
            self.first_epoch_begins()
        self.epoch_started = time.perf_counter()
        self.train_ended = 0.0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # JAX dispatches steps asynchronously: validation begins while the last training steps
        # still run (0.4 to 0.5 s of a 1.4 s IMDB epoch, measured on a 2-core CPU),
        # which credited them to validation. Training ends when its last update has landed.
        wait_for(self.model.trainable_variables[-1])
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
        callbacks=[EpochTimer(observer, settings.first_epoch_begins)],
        verbose=0,
    )
