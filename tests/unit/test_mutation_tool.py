"""tests/mutation/run.py: the mutants it makes, and that an installed mutant really runs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from bench.machine import verify
from tests.mutation import run

GUARDED = """
import threading

LOCK = threading.Lock()
CALLS = []


def check_owner(name):
    CALLS.append(name)


def take(name, owned):
    check_owner(name)
    with LOCK:
        if not owned:
            return False
        return True
"""


def test_each_kind_of_branch_gets_its_mutants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "guarded_sample.py").write_text(GUARDED)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("guarded_sample")
    monkeypatch.setitem(sys.modules, "guarded_sample", module)
    target = run.Target("sample", "guarded_sample", ["take"], [], guards=["check_owner"])
    found = {m.what for m in run.mutants(module, target, "take")}
    assert found == {
        "delete the guard call `check_owner(name)`",
        "`with LOCK` -> nullcontext()",
        "negate `if not owned`",
        "delete the body of `if not owned`",
        "`return False` -> return True",
        "delete the early `return False`",
        "`return True` -> return False",
        "delete the early `return True`",  # the function's last statement is the with
    }
    mutant = next(m for m in run.mutants(module, target, "take") if "guard" in m.what)
    run.install(module, target, mutant)
    assert module.take("a", True) is True and module.CALLS == []


def test_an_installed_mutant_replaces_the_function_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "band", verify.band)  # put back after the test
    target = run.Target("judging", "bench.machine.verify", ["band"], [])
    mutant = next(
        m
        for m in run.mutants(verify, target, "band")
        if m.what == "negate `ratio >= bands[0]` in `... if ... else ...`"
    )
    assert verify.band(0.9, (0.5, 0.25)) == verify.PASS
    run.install(verify, target, mutant)
    assert verify.band(0.9, (0.5, 0.25)) != verify.PASS


def test_the_targets_name_real_functions() -> None:
    for target in run.load_targets():
        if not target.enabled:
            continue
        module = importlib.import_module(target.module)
        for name in target.functions:
            assert list(run.mutants(module, target, name)), f"{target.module}.{name}"
