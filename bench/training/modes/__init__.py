"""Execution modes: how an epoch is run. `fit` is the text's code and the default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class TrainSettings:
    """The fit loop's values after overrides."""

    epochs: int
    batch_size: int
    seed: int
    shuffle: bool = True
    # Called as the first epoch begins, where a mode has set-up before it (fit's data adapter).
    first_epoch_begins: Callable[[], None] | None = None


class EpochObserver(Protocol):
    """Receives one record per finished epoch (times in seconds, metrics as floats)."""

    def __call__(self, record: dict[str, Any]) -> None: ...


TrainFn = Callable[[Any, Any, Any, TrainSettings, EpochObserver], None]

MODES = ("fit", "compiled")


class UnknownModeError(ValueError):
    """A mode name that does not exist; the message lists the valid ones."""


def get_trainer(mode: str) -> TrainFn:
    """The train function of a mode; imports it lazily since modes import keras."""
    if mode == "fit":
        from bench.training.modes.fit import train

        return train
    if mode == "compiled":
        from bench.training.modes.compiled import train as train_compiled

        return train_compiled
    raise UnknownModeError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
