"""Mutation testing of the trust code: does a test fail when a branch is deleted or negated?

For each enabled target of targets.toml, every branch of its functions is changed in turn
(an if negated or its body deleted, a comparison or and/or flipped, a boolean return flipped,
an early return deleted, `with <lock>:` made a nullcontext, a call to a named guard deleted).
Each mutant is compiled into the imported module in a forked child, which runs (-x, with a
timeout) only the target's tests that called the mutated function in the unmutated run; no file
is written but the summary. Code that runs in processes the tests start (a script such as the
idle watchdog, or dlcloud run as a command) is a `processes = true` target: its mutant is written
into that file in a scratch copy of the clone, and the tests run there in a child process, so
every process they start runs the mutant too. A mutant whose tests still pass "survived": a
branch no test notices.

    python -m tests.mutation.run [--target NAME] [--only FUNCTION] [--out FILE]

With --only, the functions named run again and their rows replace theirs in the summary; the
other functions' rows stay as the run before wrote them, and the section says so.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import inspect
import multiprocessing
import os
import re
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TARGETS = HERE / "targets.toml"
SUMMARY = HERE / "last-run.md"
TIMEOUT_S = 300.0
FLIPPED = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass
class Target:
    """One unit of trust code and the narrowest tests that should notice a change to it."""

    name: str
    module: str
    functions: list[str]
    tests: list[str]
    guards: list[str] = field(default_factory=list)
    locks: list[str] = field(default_factory=lambda: ["lock"])
    processes: bool = False  # the code runs in processes the tests start: mutate a copy's file
    # Which kinds of mutant to make: lock, guard, branch (default: all of them).
    kinds: list[str] = field(default_factory=list)
    # Which tests run again, in a copy, for a mutant that survived in process (default: tests).
    copy_tests: list[str] = field(default_factory=list)
    enabled: bool = True
    note: str = ""


@dataclass
class Mutant:
    function: str  # "name" or "Class.method"
    index: int  # which site of the function, in ast.walk order
    variant: int  # which change at that site
    line: int
    what: str


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, timeout, error
    seconds: float


def load_targets(path: Path = TARGETS) -> list[Target]:
    return [Target(**entry) for entry in tomllib.loads(path.read_text())["target"]]


def short(node: ast.AST, limit: int = 60) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def changes(  # noqa: PLR0912 - one branch per kind of mutation
    node: ast.AST, target: Target, early: set[int]
) -> list[tuple[str, Callable[[Any], None]]]:
    """The mutations of one node: (description, change applied to the node's copy)."""
    found: list[tuple[str, Callable[[Any], None]]] = []

    def negate(n: Any) -> None:
        n.test = ast.UnaryOp(ast.Not(), n.test)

    def empty_body(n: Any) -> None:
        n.body = [ast.Pass()]

    def empty_else(n: Any) -> None:
        n.orelse = [ast.Pass()]

    if isinstance(node, ast.If):
        found.append((f"negate `if {short(node.test)}`", negate))
        found.append((f"delete the body of `if {short(node.test)}`", empty_body))
        if node.orelse and not (len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If)):
            found.append((f"delete the else of `if {short(node.test)}`", empty_else))
    elif isinstance(node, ast.IfExp):
        found.append((f"negate `{short(node.test)}` in `... if ... else ...`", negate))
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in FLIPPED:
        flipped = FLIPPED[type(node.ops[0])]

        def flip(n: Any, op: type[ast.cmpop] = flipped) -> None:
            n.ops = [op()]

        after = copy.deepcopy(node)
        flip(after)
        found.append((f"`{short(node)}` -> `{short(after)}`", flip))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And

        def swap(n: Any, op: type[ast.boolop] = other) -> None:
            n.op = op()

        found.append((f"`{short(node)}`: {'and -> or' if other is ast.Or else 'or -> and'}", swap))
    elif isinstance(node, ast.Return):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool):

            def flip_return(n: Any) -> None:
                n.value = ast.Constant(not n.value.value)

            found.append((f"`{short(node)}` -> return {not node.value.value}", flip_return))
        if id(node) in early:
            found.append((f"delete the early `{short(node)}`", _to_pass))
    elif isinstance(node, ast.With):
        for position, item in enumerate(node.items):
            if any(word in short(item.context_expr).lower() for word in target.locks):

                def unlock(n: Any, at: int = position) -> None:
                    n.items[at].context_expr = ast.parse(
                        "__import__('contextlib').nullcontext()", mode="eval"
                    ).body

                found.append((f"`with {short(item.context_expr)}` -> nullcontext()", unlock))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        called = short(node.value.func)
        if any(called == g or called.endswith("." + g) for g in target.guards):
            found.append((f"delete the guard call `{short(node)}`", _to_pass))
    if target.kinds:
        found = [f for f in found if kind_of(f[0]) in target.kinds]
    return found


def kind_of(description: str) -> str:
    """lock (a `with` made a no-op), guard (a guard call deleted) or branch (the rest)."""
    if description.endswith("-> nullcontext()"):
        return "lock"
    return "guard" if description.startswith("delete the guard call") else "branch"


def _to_pass(node: Any) -> None:
    """Turn a statement into `pass` in place (its class and fields replaced)."""
    node.__class__ = ast.Pass
    for name in list(vars(node)):
        if name not in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
            delattr(node, name)


def early_returns(function: ast.FunctionDef) -> set[int]:
    """Returns that are not the function's last statement: deleting one lets it run on."""
    last = function.body[-1] if function.body else None
    return {id(n) for n in ast.walk(function) if isinstance(n, ast.Return) and n is not last}


def function_nodes(module: Any, name: str) -> tuple[ast.FunctionDef, int]:
    """The function's AST (dedented when a method) and its first line in the file."""
    owner, _, attribute = name.rpartition(".")
    obj = getattr(getattr(module, owner), attribute) if owner else getattr(module, name)
    lines, first = inspect.getsourcelines(obj)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef), name
    return node, first


def mutants(module: Any, target: Target, name: str) -> Iterator[Mutant]:
    function, first = function_nodes(module, name)
    early = early_returns(function)
    for index, node in enumerate(ast.walk(function)):
        for variant, (what, _) in enumerate(changes(node, target, early)):
            yield Mutant(name, index, variant, first + getattr(node, "lineno", 1) - 1, what)


def install(module: Any, target: Target, mutant: Mutant) -> None:
    """Compile the mutated function into the imported module (or onto its class)."""
    function, _ = function_nodes(module, mutant.function)
    mutated = copy.deepcopy(function)
    nodes = list(ast.walk(mutated))
    early = early_returns(mutated)
    _, change = changes(nodes[mutant.index], target, early)[mutant.variant]
    change(nodes[mutant.index])
    tree = ast.fix_missing_locations(ast.Module([mutated], type_ignores=[]))
    code = compile(tree, inspect.getsourcefile(module) or "<mutant>", "exec")
    scratch: dict[str, Any] = {}
    exec(code, module.__dict__, scratch)
    replace(module, mutant.function, scratch[mutant.function.rpartition(".")[2]])


def replace(module: Any, function: str, new: Any) -> Any:
    """Put new in the place of module's function (or Class.method); the function it replaced."""
    owner, _, attribute = function.rpartition(".")
    if owner:
        original = vars(getattr(module, owner))[attribute]
        setattr(getattr(module, owner), attribute, new)
        return original
    original = getattr(module, attribute)
    # `from module import f` elsewhere holds the original: every such name gets the new one.
    for other in list(sys.modules.values()):
        space = getattr(other, "__dict__", {})
        for name, held in list(space.items()):
            if held is original:
                space[name] = new
    return original


def mutated_source(module: Any, target: Target, mutant: Mutant) -> str:
    """The whole file of module with the mutant applied to its function (comments dropped)."""
    path = Path(inspect.getsourcefile(module) or "")
    tree = ast.parse(path.read_text())
    owner, _, attribute = mutant.function.rpartition(".")
    scope: list[ast.stmt] = tree.body
    if owner:
        scope = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner).body
    function = next(n for n in scope if isinstance(n, ast.FunctionDef) and n.name == attribute)
    nodes = list(ast.walk(function))
    _, change = changes(nodes[mutant.index], target, early_returns(function))[mutant.variant]
    change(nodes[mutant.index])
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def scratch_clone(where: Path) -> Path:
    """A copy of the clone's tracked files, for mutants that must be real files."""
    import shutil
    import subprocess

    if where.exists():
        shutil.rmtree(where)
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / name)
    return where


def clone_env(tree: Path) -> dict[str, str]:
    """The environment the tests run in inside the copy: its packages before the installed ones."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def imported_from(tree: Path, module: str) -> Path:
    """Which file a process started in the copy imports for module (the copy's, or it is wrong)."""
    import subprocess

    found = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
        cwd=tree,
        env=clone_env(tree),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip()).resolve()


def run_in_copy(tree: Path, target: Target, source: str | None, log: Path, timeout_s: float) -> str:
    """The target's tests in the copy, with source in the target's file for their duration."""
    import subprocess

    module = importlib.import_module(target.module)
    relative = Path(inspect.getsourcefile(module) or "").resolve().relative_to(REPO)
    original = (REPO / relative).read_text()
    (tree / relative).write_text(original if source is None else source)
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    argv += ["-p", "no:randomly", *(target.copy_tests or target.tests)]
    try:
        with log.open("w") as sink:
            child = subprocess.Popen(
                argv,
                cwd=tree,
                env=clone_env(tree),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a timeout stops the servers the tests started too
            )
            try:
                code = child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, 9)
                child.wait()
                return "timeout"
    finally:
        (tree / relative).write_text(original)
    return verdict(code, log)


def verdict(code: int | None, log: Path) -> str:
    if code == 0:
        return "survived"
    if code == 1:
        return "killed"
    return f"error (pytest exit {code}, see {log.name})"


Called = dict[tuple[str, str], set[str]]  # (module, function) -> the tests that called it
OUTSIDE_A_TEST = ""  # a call at collection or import time: every test of the target may see it


class CallRecorder:
    """A pytest plugin: which tests call which target functions, each wrapped while they run
    (a wrapper costs nothing elsewhere, where a profiler slows every call)."""

    def __init__(self, wanted: list[tuple[str, str]]) -> None:
        self.callers: Called = {key: set() for key in wanted}
        self.current = OUTSIDE_A_TEST
        self.wrapped: dict[tuple[str, str], tuple[Any, Any]] = {}

    def wrap(self) -> None:
        import functools

        for key in self.callers:
            module = importlib.import_module(key[0])
            owner, _, attribute = key[1].rpartition(".")
            original = (
                vars(getattr(module, owner))[attribute] if owner else getattr(module, attribute)
            )

            # A static or class method keeps its kind: the function inside it is wrapped.
            kind = type(original) if isinstance(original, (staticmethod, classmethod)) else None
            inner = original.__func__ if kind is not None else original

            def wrapper(*args: Any, _key: Any = key, _f: Any = inner, **kwargs: Any) -> Any:
                self.callers[_key].add(self.current)
                return _f(*args, **kwargs)

            functools.update_wrapper(wrapper, inner)
            replace(module, key[1], kind(wrapper) if kind is not None else wrapper)
            self.wrapped[key] = (original, wrapper)

    def unwrap(self) -> None:
        for (module_name, function), (original, _) in self.wrapped.items():
            replace(importlib.import_module(module_name), function, original)
        self.wrapped.clear()

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        self.current = item.nodeid


def _child(target: Target, mutant: Mutant | None, log: str, tests: list[str]) -> None:
    import pytest

    with Path(log).open("w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    if mutant is not None:
        install(importlib.import_module(target.module), target, mutant)
    argv = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    os._exit(int(pytest.main(argv)))


def baseline(targets: list[Target], tests: list[str], log: Path) -> tuple[int, Called]:
    """The tests without a mutant, here in this process (every fork then starts warm), and
    which of them called each function of the targets."""
    import pytest

    recorder = CallRecorder([(t.module, name) for t in targets for name in t.functions])
    saved = os.dup(1), os.dup(2)
    with log.open("w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        recorder.wrap()
        try:
            argv = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
            code = int(pytest.main(argv, plugins=[recorder]))
        finally:
            recorder.unwrap()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    return code, recorder.callers


def run_one(
    target: Target, mutant: Mutant | None, log: Path, timeout_s: float, tests: list[str]
) -> str:
    """killed (the tests failed), survived (they passed), timeout, or error (no test ran)."""
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(target, mutant, str(log), tests)
    )
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
        return "timeout"
    return verdict(process.exitcode, log)


def previous_section(previous: str, target: Target) -> list[str] | None:
    """This target's section of an earlier summary, kept when a run leaves the target out."""
    for section in previous.split("\n## ")[1:]:
        if (
            section.startswith(f"{target.name} (`{target.module}`)")
            and "): not run" not in (section.splitlines()[0])
        ):
            return ["## " + section.rstrip("\n"), ""]
    return None


# One row of a summary's table, as render writes it.
ROW = re.compile(
    r"^\| (?P<status>[^|]+?) \| (?P<file>[^|]+?):(?P<line>\d+) \((?P<function>[^)|]+)\) "
    r"\| (?P<what>.*) \|$"
)


def earlier_outcomes(previous: str, target: Target, rerun: set[str]) -> tuple[list[Outcome], bool]:
    """This target's rows in an earlier summary for the functions not in rerun, and whether
    that run stopped before the rest of its mutants."""
    section = previous_section(previous, target)
    if section is None:
        return [], False
    text = section[0]
    rows = (ROW.match(line) for line in text.splitlines())
    kept = [
        Outcome(Mutant(m["function"], -1, -1, int(m["line"]), m["what"]), m["status"], 0.0)
        for m in rows
        if m and m["function"] not in rerun
    ]
    return kept, "**Stopped before" in text


def render(
    results: dict[str, list[Outcome]],
    targets: list[Target],
    notes: dict[str, str],
    previous: str = "",
    unfinished: set[str] | None = None,
    *,
    rerun: set[str] | None = None,
) -> str:
    """The summary; `rerun`: the functions this run ran again among rows kept from the last."""
    lines = [
        "# Mutation run",
        "",
        "Made by `make mutate` (tests/mutation/run.py, targets in tests/mutation/targets.toml).",
        "Each mutant changes one branch of a target function; **killed** means a test failed.",
        "",
    ]
    for target in targets:
        outcomes = results.get(target.name)
        kept = previous_section(previous, target) if outcomes is None and target.enabled else None
        if kept is not None:
            lines += kept
            continue
        if outcomes is None:
            lines += [f"## {target.name} (`{target.module}`): not run", "", target.note, ""]
            continue
        killed = sum(o.status.startswith("killed") for o in outcomes)
        seconds = sum(o.seconds for o in outcomes)
        lines += [
            f"## {target.name} (`{target.module}`)",
            "",
            f"{killed} of {len(outcomes)} mutants killed in {seconds:.0f} s; tests: "
            f"`{' '.join(target.tests)}`"
            + (
                f"; survivors tried again in a copy with `{' '.join(target.copy_tests)}`"
                if target.copy_tests
                else ""
            )
            + "."
            + (
                f" Run again now: `{', '.join(sorted(rerun & set(target.functions)))}`; the "
                "other rows (their seconds not counted) are from the run before."
                if rerun
                else ""
            )
            + (
                " **Stopped before the rest of this target's mutants.**"
                if target.name in (unfinished or set())
                else ""
            ),
            "",
            "| status | where | mutant |",
            "|---|---|---|",
        ]
        path = importlib.import_module(target.module).__file__ or target.module
        where = Path(path).resolve().relative_to(REPO)
        for o in sorted(outcomes, key=lambda o: (o.status.startswith("killed"), o.mutant.line)):
            lines.append(
                f"| {o.status} | {where}:{o.mutant.line} ({o.mutant.function}) "
                f"| {o.mutant.what.replace('|', '/')} |"
            )
        survivors = [o for o in outcomes if not o.status.startswith("killed")]
        if survivors:
            lines += ["", "Why these survive:", ""]
            for o in survivors:
                key = f"{o.mutant.function}:{o.mutant.what}"
                lines.append(
                    f"- {where}:{o.mutant.line} {o.mutant.what}: {notes.get(key, 'UNEXPLAINED')}"
                )
        lines.append("")
    return "\n".join(lines)


def tests_for(target: Target, function: str, callers: Called) -> list[str]:
    """Only the tests that ran this function can notice a change to it in process; all the
    target's tests when none did, or when it ran outside a test (at collection, say)."""
    called = callers.get((target.module, function), set())
    return target.tests if OUTSIDE_A_TEST in called or not called else sorted(called)


def prepared_copy(target: Target, logs: Path, timeout_s: float) -> Path | None:
    """A scratch copy of the clone whose processes import its own files, where the target's
    tests pass unmutated; None (and why, printed) when either is not so."""
    module = importlib.import_module(target.module)
    tree = scratch_clone(logs / "clone")
    relative = Path(inspect.getsourcefile(module) or "").resolve().relative_to(REPO)
    if imported_from(tree, target.module) != tree.resolve() / relative:
        print(f"{target.name}: a process in the copy does not import the copy's {relative}")
        return None
    if run_in_copy(tree, target, None, logs / "baseline-copy.log", timeout_s) != "survived":
        print(f"{target.name}: its tests fail in the copy; see {logs / 'baseline-copy.log'}")
        return None
    return tree


def run_target(
    target: Target,
    logs: Path,
    only: str | None,
    timeout_s: float,
    callers: Called,
    *,
    outcomes: list[Outcome],
    saved: Callable[[], None] = lambda: None,
) -> list[Outcome] | None:
    """Every mutant of one target into outcomes (saved() after each), or None when its tests
    fail without one."""
    module = importlib.import_module(target.module)
    tree = prepared_copy(target, logs, timeout_s) if target.processes else None
    if target.processes and tree is None:
        return None
    for name in target.functions:
        if only is not None and name not in only.split(","):
            continue
        tests = tests_for(target, name, callers)
        for n, mutant in enumerate(mutants(module, target, name)):
            started = time.monotonic()
            log = logs / f"{name}-{n}.log"
            if target.processes and tree is not None:
                source = mutated_source(module, target, mutant)
                status = run_in_copy(tree, target, source, log, timeout_s)
            else:
                status = run_one(target, mutant, log, timeout_s, tests)
            if status == "survived" and not target.processes:
                # The tests' own processes (dlcloud run as a command) ran the unmutated file:
                # every test of the target runs again, the mutant written into a copy's file.
                tree = tree or prepared_copy(target, logs, timeout_s)
                if tree is None:
                    return None
                source = mutated_source(module, target, mutant)
                again = run_in_copy(tree, target, source, log, timeout_s)
                status = "killed in a copy" if again == "killed" else again
            outcomes.append(Outcome(mutant, status, time.monotonic() - started))
            print(f"{status:<9} {name}:{mutant.line} {mutant.what}", flush=True)
            saved()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", help="run only the targets whose names (in targets.toml) begin with this"
    )
    parser.add_argument("--only", help="run only the mutants of these functions (a,b,...)")
    parser.add_argument("--out", type=Path, default=SUMMARY, help="the summary to write")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per mutant")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    targets = load_targets()
    notes = tomllib.loads((HERE / "survivors.toml").read_text()).get("explained", {})
    chosen = [t for t in targets if t.enabled and t.name.startswith(args.target or "")]
    results: dict[str, list[Outcome]] = {}
    # A folder of this run's own: two runs at once never share the scratch copy.
    logs = Path(tempfile.mkdtemp(prefix="dlstation-mutation-"))
    print(f"logs and the scratch copy: {logs}", flush=True)
    recorded: dict[tuple[str, ...], Called] = {}
    unfinished: set[str] = set()

    rerun = set(args.only.split(",")) if args.only else set()
    # The rows --only keeps, read before this run writes any: its own saves are no earlier run.
    start = args.out.read_text() if args.out.is_file() else ""
    earlier = {t.name: earlier_outcomes(start, t, rerun) for t in chosen} if rerun else {}

    def save() -> None:
        # Read again each time: another run (of other targets) may have written its sections.
        previous = args.out.read_text() if args.out.is_file() else ""
        if not rerun:
            args.out.write_text(render(results, targets, notes, previous, unfinished))
            return
        merged, stopped = {}, set(unfinished)
        for target in chosen:
            if target.name in results:
                kept, was_stopped = earlier[target.name]
                merged[target.name] = kept + results[target.name]
                stopped |= {target.name} if was_stopped else set()
        args.out.write_text(render(merged, targets, notes, previous, stopped, rerun=rerun))

    for target in chosen:
        tests = tuple(target.tests)
        if not target.processes and tests not in recorded:
            # One unmutated run records the callers for every target with these tests.
            group = [t for t in chosen if not t.processes and tuple(t.tests) == tests]
            code, recorded[tests] = baseline(group, target.tests, logs / "baseline.log")
            if code != 0:
                print(
                    f"{target.name}: its tests fail without a mutant; see {logs / 'baseline.log'}"
                )
                return 1
        # The summary is written after every mutant: a run stopped early still says what it did.
        results[target.name] = []
        unfinished.add(target.name)
        done = run_target(
            target,
            logs,
            args.only,
            args.timeout,
            recorded.get(tests, {}),
            outcomes=results[target.name],
            saved=save,
        )
        if done is None:
            return 1
        unfinished.discard(target.name)
        save()
    print(f"summary: {args.out}")
    survived = [o for outs in results.values() for o in outs if not o.status.startswith("killed")]
    unexplained = [o for o in survived if f"{o.mutant.function}:{o.mutant.what}" not in notes]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
