"""The registry and the text's definitions."""

import pytest

from bench.training.workloads import WORKLOADS, UnknownWorkloadError, get_workload


def test_unknown_workload_lists_valid_names() -> None:
    with pytest.raises(UnknownWorkloadError, match="valid workloads: imdb, reuters"):
        get_workload("mnist")


@pytest.mark.parametrize(
    ("name", "layers", "loss", "val", "labels"),
    [
        (
            "imdb",
            [(16, "relu"), (16, "relu"), (1, "sigmoid")],
            "binary_crossentropy",
            10_000,
            "binary",
        ),
        (
            "reuters",
            [(64, "relu"), (64, "relu"), (46, "softmax")],
            "categorical_crossentropy",
            1_000,
            "one_hot",
        ),
    ],
)
def test_definitions_match_the_text(name, layers, loss, val, labels) -> None:
    workload = get_workload(name)
    assert workload.layers() == layers
    assert (workload.loss, workload.optimizer, workload.metrics) == (loss, "rmsprop", ("accuracy",))
    assert (workload.num_words, workload.epochs, workload.batch_size) == (10_000, 20, 512)
    assert workload.validation_samples == val
    assert workload.labels == labels


def test_describe_is_json_ready_and_complete() -> None:
    import json

    record = json.loads(json.dumps(WORKLOADS["imdb"].describe()))
    assert record["layers"] == ["Dense(16, relu)", "Dense(16, relu)", "Dense(1, sigmoid)"]
    assert record["data_file"]["name"] == "imdb.npz"
