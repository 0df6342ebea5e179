"""The one way both tools run a child: a timeout or an interrupt leaves no child behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.subprocesses import run_streamed

SLEEPER = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_child_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(subprocess.TimeoutExpired):
        run_streamed(
            [sys.executable, "-c", SLEEPER],
            env=dict(os.environ),
            cwd=tmp_path,
            log=tmp_path / "child.log",
            on_line=lines.append,
            timeout_s=2,
        )
    assert gone(int(lines[0]))
    assert lines[0] in (tmp_path / "child.log").read_text()


def test_an_interrupt_while_reading_stops_the_child_first(tmp_path: Path) -> None:
    pids: list[int] = []

    def interrupted(line: str) -> None:
        pids.append(int(line))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_streamed(
            [sys.executable, "-c", SLEEPER],
            env=dict(os.environ),
            cwd=tmp_path,
            log=tmp_path / "child.log",
            on_line=interrupted,
        )
    assert gone(pids[0])


def test_the_exit_code_and_every_line_come_back(tmp_path: Path) -> None:
    lines: list[str] = []
    code = run_streamed(
        [sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"],
        env=dict(os.environ),
        cwd=tmp_path,
        log=tmp_path / "child.log",
        on_line=lines.append,
    )
    assert code == 3 and lines == ["a\n", "b\n"]
