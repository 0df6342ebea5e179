"""What a workload is: the text's listing as data, so both workloads share one code path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LabelEncoding = Literal["binary", "one_hot"]


@dataclass(frozen=True)
class KerasDataFile:
    """One file that Keras's loader reads, with the sha256 Keras itself checks."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Workload:
    """A chapter-3 model: data, layers, compile settings and the fit loop's values."""

    name: str
    title: str
    dataset: str  # module name under keras.datasets
    data_file: KerasDataFile
    num_words: int
    hidden_units: tuple[int, ...]
    hidden_activation: str
    output_units: int
    output_activation: str
    labels: LabelEncoding
    loss: str
    optimizer: str
    metrics: tuple[str, ...]
    validation_samples: int  # the first N training samples are held out
    epochs: int
    batch_size: int
    target_accuracy: float  # DAWNBench-style quality bar on validation accuracy
    # Shape of synthetic stand-in data: mean distinct words per sample, measured on the real files.
    synthetic_words_per_sample: int
    synthetic_train_samples: int
    synthetic_test_samples: int
    reference: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def layers(self) -> list[tuple[int, str]]:
        """(units, activation) of every Dense layer, input to output."""
        hidden = [(units, self.hidden_activation) for units in self.hidden_units]
        return [*hidden, (self.output_units, self.output_activation)]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready definition, recorded in every result."""
        record = asdict(self)
        record["layers"] = [f"Dense({u}, {a})" for u, a in self.layers()]
        return record
