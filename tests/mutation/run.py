"""Mutation testing of the trust code: does a test fail when a branch is deleted or negated?

For each enabled target of targets.toml, every branch of its functions is changed in turn
(an if negated or its body deleted, a comparison or and/or flipped, a boolean return flipped,
an early return deleted, `with <lock>:` made a nullcontext, a call to a named guard deleted).
Each mutant is compiled into the imported module in a forked child, which runs the target's
pytest selection (-x, with a timeout); no file is written but the summary. A mutant whose tests
still pass "survived": a branch no test notices.

    python -m tests.mutation.run [--target NAME] [--only FUNCTION] [--out FILE]
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import inspect
import multiprocessing
import os
import sys
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
    return found


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
    owner, _, attribute = mutant.function.rpartition(".")
    scratch: dict[str, Any] = {}
    exec(code, module.__dict__, scratch)
    if owner:
        setattr(getattr(module, owner), attribute, scratch[attribute])
        return
    original = getattr(module, attribute)
    # `from module import f` elsewhere holds the original: every such name gets the mutant.
    for other in list(sys.modules.values()):
        space = getattr(other, "__dict__", {})
        for name, held in list(space.items()):
            if held is original:
                space[name] = scratch[attribute]


def _child(target: Target, mutant: Mutant | None, log: str) -> None:
    import pytest

    with Path(log).open("w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    if mutant is not None:
        install(importlib.import_module(target.module), target, mutant)
    argv = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *target.tests]
    os._exit(int(pytest.main(argv)))


def baseline(target: Target, log: Path) -> int:
    """The tests without a mutant, here in this process: every fork then starts warm."""
    import pytest

    saved = os.dup(1), os.dup(2)
    with log.open("w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            return int(pytest.main(["-q", "-p", "no:cacheprovider", *target.tests]))
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


def run_one(target: Target, mutant: Mutant | None, log: Path, timeout_s: float) -> str:
    """killed (the tests failed), survived (they passed), timeout, or error (no test ran)."""
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(target, mutant, str(log))
    )
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
        return "timeout"
    code = process.exitcode
    if code == 0:
        return "survived"
    if code == 1:
        return "killed"
    return f"error (pytest exit {code}, see {log.name})"


def render(results: dict[str, list[Outcome]], targets: list[Target], notes: dict[str, str]) -> str:
    lines = [
        "# Mutation run",
        "",
        "Made by `make mutate` (tests/mutation/run.py, targets in tests/mutation/targets.toml).",
        "Each mutant changes one branch of a target function; **killed** means a test failed.",
        "",
    ]
    for target in targets:
        outcomes = results.get(target.name)
        if outcomes is None:
            lines += [f"## {target.name} (`{target.module}`): not run", "", target.note, ""]
            continue
        killed = sum(o.status == "killed" for o in outcomes)
        seconds = sum(o.seconds for o in outcomes)
        lines += [
            f"## {target.name} (`{target.module}`)",
            "",
            f"{killed} of {len(outcomes)} mutants killed in {seconds:.0f} s; tests: "
            f"`{' '.join(target.tests)}`.",
            "",
            "| status | where | mutant |",
            "|---|---|---|",
        ]
        path = importlib.import_module(target.module).__file__ or target.module
        where = Path(path).resolve().relative_to(REPO)
        for o in sorted(outcomes, key=lambda o: (o.status == "killed", o.mutant.line)):
            lines.append(
                f"| {o.status} | {where}:{o.mutant.line} ({o.mutant.function}) "
                f"| {o.mutant.what.replace('|', '/')} |"
            )
        survivors = [o for o in outcomes if o.status != "killed"]
        if survivors:
            lines += ["", "Why these survive:", ""]
            for o in survivors:
                key = f"{o.mutant.function}:{o.mutant.what}"
                lines.append(
                    f"- {where}:{o.mutant.line} {o.mutant.what}: {notes.get(key, 'UNEXPLAINED')}"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="run only this target (its name in targets.toml)")
    parser.add_argument("--only", help="run only the mutants of these functions (a,b,...)")
    parser.add_argument("--out", type=Path, default=SUMMARY, help="the summary to write")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per mutant")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    targets = load_targets()
    notes = tomllib.loads((HERE / "survivors.toml").read_text()).get("explained", {})
    chosen = [t for t in targets if t.enabled and (args.target in (None, t.name))]
    results: dict[str, list[Outcome]] = {}
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "dlstation-mutation"
    logs.mkdir(exist_ok=True)
    for target in chosen:
        if baseline(target, logs / "baseline.log") != 0:
            print(f"{target.name}: its tests fail without a mutant; see {logs / 'baseline.log'}")
            return 1
        module = importlib.import_module(target.module)
        outcomes = []
        for name in target.functions:
            if args.only is not None and name not in args.only.split(","):
                continue
            for n, mutant in enumerate(mutants(module, target, name)):
                started = time.monotonic()
                log = logs / f"{name}-{n}.log"
                status = run_one(target, mutant, log, args.timeout)
                outcomes.append(Outcome(mutant, status, time.monotonic() - started))
                print(f"{status:<9} {name}:{mutant.line} {mutant.what}", flush=True)
        results[target.name] = outcomes
    if args.only is None:
        args.out.write_text(render(results, targets, notes))
        print(f"summary: {args.out}")
    survived = [o for outs in results.values() for o in outs if o.status != "killed"]
    unexplained = [o for o in survived if f"{o.mutant.function}:{o.mutant.what}" not in notes]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
