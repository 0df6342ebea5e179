"""Result files a report must refuse one by one, each with its reason, the rest still reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.report import model
from bench.results import document as results
from tests.conftest import REPO

GOOD = REPO / "tests" / "data" / "results" / "fixture-cpu-b.json"


def good_text() -> str:
    return GOOD.read_text()


def set_in_first_run(path: tuple[str, ...], raw: str) -> Callable[[], str]:
    """The good file with one value replaced by raw JSON text (which json.dumps cannot write)."""

    def make() -> str:
        document: dict[str, Any] = json.loads(good_text())
        target = document["runs"][0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = "@@RAW@@"
        return json.dumps(document).replace('"@@RAW@@"', raw)

    return make


def with_epochs(change: Callable[[list[Any]], list[Any]]) -> str:
    """The good file with its first run's epoch list changed."""
    document: dict[str, Any] = json.loads(good_text())
    document["runs"][0]["epochs"] = change(document["runs"][0]["epochs"])
    return json.dumps(document)


def deep(levels: int) -> Callable[[], str]:
    return lambda: '{"tool": "dlbench", "x": ' + "[" * levels + "]" * levels + "}"


HOSTILE: dict[str, tuple[Callable[[], str], str]] = {
    "huge-int": (
        set_in_first_run(("throughput", "steady_samples_per_s"), "1" + "0" * 400),
        "out of range",
    ),
    "nan": (set_in_first_run(("throughput", "steady_samples_per_s"), "NaN"), "NaN is not a number"),
    "infinity": (
        set_in_first_run(("timing", "end_to_end_s"), "Infinity"),
        "Infinity is not a number",
    ),
    "1e999": (set_in_first_run(("throughput", "steady_samples_per_s"), "1e999"), "out of range"),
    "deep": (deep(100_000), "nested deeper than"),
    "bool-rate": (
        set_in_first_run(("throughput", "steady_samples_per_s"), "true"),
        "is not of type",
    ),
    "accuracy-negative": (set_in_first_run(("test", "accuracy"), "-5"), "less than the minimum"),
    "accuracy-huge": (set_in_first_run(("test", "accuracy"), "1e308"), "greater than the maximum"),
    "verify-without-verdict": (lambda: '{"document": "dlbench verify"}', "no verdict"),
    "complete-without-epochs": (
        set_in_first_run(("epochs",), "[]"),
        "marked complete with 0 of its 4 epochs",
    ),
    "epochs-duplicated": (
        lambda: with_epochs(lambda e: [e[0], e[0], *e[1:]]),
        "are not 1..5 in order",
    ),
    "epochs-out-of-order": (lambda: with_epochs(lambda e: e[::-1]), "are not 1..4 in order"),
    "figure-not-from-epochs": (
        set_in_first_run(("timing", "first_epoch_s"), "0.001"),
        "timing.first_epoch_s is 0.001, its epochs give",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_file_is_refused_with_its_reason(tmp_path: Path, name: str) -> None:
    make, reason = HOSTILE[name]
    (tmp_path / "good.json").write_text(good_text())
    (tmp_path / f"{name}.json").write_text(make())
    collection = model.collect([tmp_path])
    assert [r.path.name for r in collection.results] == ["good.json"]
    ((path, why),) = collection.refused
    assert path.name == f"{name}.json"
    assert reason in why, why


def test_a_fifo_and_a_device_are_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    collection = model.collect([fifo, Path("/dev/zero"), GOOD])
    assert len(collection.results) == 1
    assert [why for _, why in collection.refused] == [
        f"{fifo}: not a regular file; refused unread",
        "/dev/zero: not a regular file; refused unread",
    ]


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(" " * 2000 + good_text())
    with pytest.raises(results.ResultError, match="over 0 MiB"):
        results.read_json(big, limit=1000)


def test_a_memory_bomb_is_refused_by_its_size_before_it_is_parsed(tmp_path: Path) -> None:
    """24 MB of small objects: parsed, it took 920 MB; a result file is never that big."""
    bomb = tmp_path / "bomb.json"
    with bomb.open("w") as handle:
        handle.write("[" + '{"a":1},' * 3_000_000 + "{}]")
    with pytest.raises(results.ResultError, match="over 16 MiB, larger than any dlbench result"):
        results.load(bomb)


def test_report_lists_every_refused_file_and_writes_the_rest(tmp_path: Path) -> None:
    """The real executable over all of them at once, a FIFO and /dev/zero included: no hang,
    no traceback, the good file reported."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.json").write_text(good_text())
    for name, (make, _) in HOSTILE.items():
        (inputs / f"{name}.json").write_text(make())
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    out = tmp_path / "report"
    argv = [sys.executable, "-m", "bench", "report", str(inputs), str(fifo), "/dev/zero"]
    done = subprocess.run(
        [*argv, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    skipped = [line for line in done.stderr.splitlines() if line.startswith("dlbench: skipped")]
    assert len(skipped) == len(HOSTILE) + 2, done.stderr
    text = (out / "report.md").read_text()
    assert "## Files not included" in text
    for name in HOSTILE:
        assert f"{name}.json" in text
    assert "/dev/zero: not a regular file" in text
    assert "| 2/2 |" in text, "the good file's two runs are in the summary"


def test_text_from_a_result_file_is_inert_in_the_markdown_report(tmp_path: Path) -> None:
    from bench.report import render

    document: dict[str, Any] = json.loads(good_text())
    document["host"]["hostname"] = "<script>alert(1)</script>|x\n# H\r\n- item"
    (tmp_path / "r.json").write_text(json.dumps(document))
    blocks = render.build(model.collect([tmp_path]))
    text = render.to_markdown(blocks, tmp_path / "img")
    assert "<script>" not in text and "&lt;script&gt;" in text
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(("# H", "- item"))], text


def test_a_folder_lists_every_entry_it_skips_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(good_text())
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "loop.json").symlink_to("loop.json")
    (tmp_path / "gone.json").symlink_to("nowhere.json")
    collection = model.collect([tmp_path])
    assert [loaded.path.name for loaded in collection.results] == ["good.json"]
    refused = {path.name: why for path, why in collection.refused}
    assert sorted(refused) == ["gone.json", "loop.json", "pipe.json", "zero.json"]
    assert (
        "not a regular file" in refused["pipe.json"]
        and "not a regular file" in refused["zero.json"]
    )
    assert "cannot be read" in refused["loop.json"] and "cannot be read" in refused["gone.json"]
