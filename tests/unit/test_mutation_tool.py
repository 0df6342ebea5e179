"""tests/mutation/run.py: the mutants it makes, and that an installed mutant really runs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

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


def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    """GUARDED imported as module `name`, gone from sys.modules after the test."""
    (tmp_path / f"{name}.py").write_text(GUARDED)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_each_kind_of_branch_gets_its_mutants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sample(tmp_path, monkeypatch, "guarded_sample")
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


def test_a_recorded_run_names_the_tests_that_called_each_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sample(tmp_path, monkeypatch, "recorded_sample")
    held_elsewhere = {"take": module.take}  # as `from recorded_sample import take` holds it
    monkeypatch.setitem(sys.modules, "holder_sample", type(sys)("holder_sample"))
    vars(sys.modules["holder_sample"]).update(held_elsewhere)
    original = module.take
    recorder = run.CallRecorder([("recorded_sample", "take"), ("recorded_sample", "check_owner")])
    recorder.wrap()
    recorder.current = "test_one"
    module.take("a", True)
    recorder.current = "test_two"
    sys.modules["holder_sample"].take("b", False)
    recorder.current = "test_three"
    recorder.unwrap()
    module.take("c", True)
    assert recorder.callers == {
        ("recorded_sample", "take"): {"test_one", "test_two"},
        ("recorded_sample", "check_owner"): {"test_one", "test_two"},
    }
    assert module.take is original and sys.modules["holder_sample"].take is original


def test_a_mutated_file_holds_the_mutant_and_the_rest_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sample(tmp_path, monkeypatch, "file_sample")
    target = run.Target("sample", "file_sample", ["take"], [], guards=["check_owner"])
    mutant = next(m for m in run.mutants(module, target, "take") if "guard" in m.what)
    space: dict[str, object] = {}
    exec(run.mutated_source(module, target, mutant), space)
    take, calls = space["take"], space["CALLS"]
    assert callable(take) and take("a", True) is True and calls == []
    assert callable(space["check_owner"])


WATCHDOG_TEST = """
import subprocess, sys

def test_a_process_started_by_the_test_parses_two_hours():
    subprocess.run(
        [sys.executable, "-c",
         "from cloud.data import idle_watchdog as w; assert w.parse_duration('2h') == 7200"],
        check=True,
    )
"""


def test_a_mutant_in_a_copy_reaches_the_processes_the_tests_start(tmp_path: Path) -> None:
    from cloud.data import idle_watchdog

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_process.py").write_text(WATCHDOG_TEST)
    target = run.Target(
        "w", "cloud.data.idle_watchdog", ["parse_duration"], [str(tmp_path / "tests")]
    )
    tree = run.scratch_clone(tmp_path / "clone")
    assert (
        run.imported_from(tree, target.module)
        == (tree / "cloud" / "data" / "idle_watchdog.py").resolve()
    )
    log = tmp_path / "log"
    assert run.run_in_copy(tree, target, None, log, 120) == "survived", log.read_text()
    found = {m.what: m for m in run.mutants(idle_watchdog, target, "parse_duration")}
    mutant = found["negate `if seconds > MAX_KEEPALIVE_S`"]
    source = run.mutated_source(idle_watchdog, target, mutant)
    assert run.run_in_copy(tree, target, source, log, 120) == "killed", log.read_text()
    # The copy's file is put back after each run; the clone's own file is never written.
    assert (tree / "cloud" / "data" / "idle_watchdog.py").read_text() == Path(
        idle_watchdog.__file__
    ).read_text()


def test_a_static_method_still_works_while_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "static_sample.py").write_text(
        "class K:\n    @staticmethod\n    def f(x):\n        return x + 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("static_sample")
    monkeypatch.setitem(sys.modules, "static_sample", module)
    recorder = run.CallRecorder([("static_sample", "K.f")])
    recorder.wrap()
    recorder.current = "test_k"
    try:
        assert module.K().f(1) == 2 and module.K.f(2) == 3
    finally:
        recorder.unwrap()
    assert recorder.callers == {("static_sample", "K.f"): {"test_k"}}
    assert isinstance(vars(module.K)["f"], staticmethod)


def test_a_function_run_outside_a_test_gets_every_test_of_its_target() -> None:
    target = run.Target("t", "m", ["f", "g", "h"], ["tests/a.py", "tests/b.py"])
    callers: run.Called = {
        ("m", "f"): {"tests/a.py::test_one"},
        ("m", "g"): {run.OUTSIDE_A_TEST, "tests/a.py::test_one"},
        ("m", "h"): set(),
    }
    assert run.tests_for(target, "f", callers) == ["tests/a.py::test_one"]
    assert run.tests_for(target, "g", callers) == ["tests/a.py", "tests/b.py"]
    assert run.tests_for(target, "h", callers) == ["tests/a.py", "tests/b.py"]
    assert "" not in run.tests_for(target, "g", callers), "pytest given '' runs the whole tree"


def test_a_summary_written_mid_run_says_the_target_stopped_early() -> None:
    target = run.Target("judging", "bench.machine.verify", ["band"], ["tests/unit/test_verify.py"])
    mutant = next(run.mutants(verify, target, "band"))
    results = {"judging": [run.Outcome(mutant, "killed", 1.0)]}
    partial = run.render(results, [target], {}, "", {"judging"})
    assert "1 of 1 mutants killed" in partial
    assert "**Stopped before the rest of this target's mutants.**" in partial
    assert "Stopped before" not in run.render(results, [target], {}, "", set())


def test_a_target_of_some_kinds_gets_only_their_mutants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sample(tmp_path, monkeypatch, "kinds_sample")
    target = run.Target(
        "sample", "kinds_sample", ["take"], [], guards=["check_owner"], kinds=["lock", "guard"]
    )
    found = [m.what for m in run.mutants(module, target, "take")]
    assert found == ["delete the guard call `check_owner(name)`", "`with LOCK` -> nullcontext()"]
    mutant = run.mutants(module, target, "take")
    lock = next(m for m in mutant if "nullcontext" in m.what)
    assert "nullcontext()" in run.mutated_source(module, target, lock)


def test_a_run_of_some_functions_keeps_the_other_rows_of_the_last() -> None:
    """--only: the functions run again replace their rows; the others stay, and are counted."""
    target = run.Target(
        "judging", "bench.machine.verify", ["band", "worst"], ["tests/unit/test_verify.py"]
    )
    band, worst = (next(run.mutants(verify, target, name)) for name in ("band", "worst"))
    earlier = run.render(
        {"judging": [run.Outcome(band, "survived", 1.0), run.Outcome(worst, "killed", 1.0)]},
        [target],
        {},
    )
    kept, stopped = run.earlier_outcomes(earlier, target, {"band"})
    assert [(o.mutant.function, o.status, o.mutant.what) for o in kept] == [
        ("worst", "killed", worst.what)
    ]
    assert not stopped
    merged = run.render(
        {"judging": [*kept, run.Outcome(band, "killed", 2.0)]}, [target], {}, rerun={"band"}
    )
    assert "2 of 2 mutants killed in 2 s" in merged
    assert "Run again now: `band`; the other rows" in merged
    assert "survived" not in merged
    assert f"(worst) | {worst.what.replace('|', '/')} |" in merged
