"""The registry of workloads: a name maps to the text's definition."""

from bench.training.workloads.imdb import IMDB
from bench.training.workloads.reuters import REUTERS
from bench.training.workloads.spec import Workload

WORKLOADS: dict[str, Workload] = {w.name: w for w in (IMDB, REUTERS)}


class UnknownWorkloadError(ValueError):
    """Raised for a name that is not in the registry; the message lists the valid ones."""


def get_workload(name: str) -> Workload:
    """Look a workload up by name, or fail with the list of valid names."""
    try:
        return WORKLOADS[name]
    except KeyError:
        valid = ", ".join(sorted(WORKLOADS))
        raise UnknownWorkloadError(
            f"unknown workload {name!r}; valid workloads: {valid} (see `dlbench list`)"
        ) from None


__all__ = ["WORKLOADS", "UnknownWorkloadError", "Workload", "get_workload"]
