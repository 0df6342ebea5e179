"""Opt-in compiled-mode changes: checked, applied before the backend's import, and a flag that
breaks falls back with its reason recorded."""

from __future__ import annotations

from collections.abc import MutableMapping

import pytest

from bench.training.modes import options


def refuse(flags: str, environ: MutableMapping[str, str]) -> str | None:
    return "a JAX program with these XLA flags failed (exit 134): Unknown flag"


def accept(flags: str, environ: MutableMapping[str, str]) -> str | None:
    return None


def test_nothing_asked_changes_nothing() -> None:
    environ: dict[str, str] = {}
    record = options.apply([], "jax", environ, probe=refuse)
    assert environ == {} and record["applied"] == [] and record["fallbacks"] == {}


def test_command_buffers_add_the_xla_flags_after_the_users() -> None:
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    record = options.apply(["command-buffers"], "jax", environ, probe=accept)
    assert environ["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/x ")
    assert "WHILE" in environ["XLA_FLAGS"] and record["xla_flags"] == environ["XLA_FLAGS"]
    assert record["applied"] == ["command-buffers"]


def test_a_flag_that_breaks_falls_back_with_the_reason() -> None:
    environ: dict[str, str] = {}
    record = options.apply(["command-buffers", "bf16"], "jax", environ, probe=refuse)
    assert "XLA_FLAGS" not in environ and record["xla_flags"] == ""
    assert record["applied"] == ["bf16"]
    assert "Unknown flag" in record["fallbacks"]["command-buffers"]


def test_the_real_probe_reports_a_flag_xla_does_not_know() -> None:
    """XLA aborts on an unknown flag: the probe's own process dies, not the worker."""
    why = options.probe_flags("--xla_no_such_flag_at_all=1", {})
    assert why is not None and "failed" in why


def test_command_buffers_are_jax_only() -> None:
    record = options.apply(["command-buffers"], "tensorflow", {}, probe=accept)
    assert record["applied"] == [] and "not tensorflow" in record["fallbacks"]["command-buffers"]


@pytest.mark.parametrize(
    ("chosen", "mode", "backend", "message"),
    [
        (["fast"], "compiled", "jax", "unknown option"),
        (["compiled-evaluation", "keras-evaluation"], "compiled", "jax", "exclude each other"),
        (["compiled-evaluation"], "fit", "jax", "needs --mode compiled --backend jax"),
    ],
)
def test_refused(chosen: list[str], mode: str, backend: str, message: str) -> None:
    with pytest.raises(options.OptionError, match=message):
        options.check(chosen, mode, backend)


def test_evaluation_method_by_device_kind_and_option() -> None:
    assert options.evaluation_method("fit", "jax", "GPU", ["compiled-evaluation"]) == "keras"
    assert options.evaluation_method("compiled", "jax", "CPU", ["compiled-evaluation"]) == (
        "compiled"
    )
    for device, method in options.EVALUATION_BY_DEVICE.items():
        assert options.evaluation_method("compiled", "jax", device, []) == method
    assert options.evaluation_method("compiled", "jax", "GPU", ["keras-evaluation"]) == "keras"
