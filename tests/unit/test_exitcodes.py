"""The one exit-code table (bench/exitcodes.py), as every dlbench command returns it.

A crash inside any command exits 70 with its traceback and one line saying so, never 1 (a
FAIL verdict, a failed run); bad input exits 2; verify's verdicts are 0, 3 and 1.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import app, cli, exitcodes
from bench.machine import verify
from bench.results import output
from tests.conftest import REPO, dlbench
from tests.unit.test_verify import FakeMachine

INTERNAL_LINE = "dlbench: internal error in `dlbench {command}` (a bug in dlstation, exit 70)"


def crash(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


class Explodes:
    """The workload table, whose definitions break when `list` reads them."""

    def __iter__(self) -> Any:
        return iter(["imdb", "reuters"])

    def values(self) -> Any:
        raise RuntimeError("injected fault")


# Per command: its argv, and the seam inside it that the crash is injected into.
COMMANDS: dict[str, tuple[list[str], tuple[Any, str, Any]]] = {
    "list": (["list"], (cli, "WORKLOADS", Explodes())),
    "run": (["run", "reuters", "--synthetic"], (app, "prepare_run", crash)),
    "verify": (["verify", "--level", "quick", "--no-imds"], (app, "verify_seams", crash)),
    "report": (["report", "results", "--out", "report"], (app, "report", crash)),
    "compare": (["compare", "a.json", "b.json"], (app, "compare", crash)),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_crash_inside_any_command_exits_70_with_its_traceback_and_one_line(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, (owner, name, fault) = COMMANDS[command]
    monkeypatch.setattr(owner, name, fault)
    assert cli.main(argv) == exitcodes.INTERNAL == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: injected fault" in err
    assert err.rstrip().splitlines()[-1].startswith(INTERNAL_LINE.format(command=command))


def test_a_crash_from_the_shell_exits_70() -> None:
    """A real process: the entry point returns main's 70 to the shell."""
    code = (
        "import sys; from bench import app, cli\n"
        "def crash(*a, **k): raise RuntimeError('injected fault')\n"
        "app.compare = crash\n"
        "sys.exit(cli.main(['compare', 'a.json', 'b.json']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 70, done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith(INTERNAL_LINE.format(command="compare"))
    assert "RuntimeError: injected fault" in done.stderr


def test_bad_input_exits_2_from_the_shell_without_a_traceback(tmp_path: Path) -> None:
    done = dlbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert done.returncode == exitcodes.USAGE == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("dlbench: error: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "extra"],
        ["run", "nosuchworkload", "--synthetic"],
        ["run", "--seed", "-1"],
        ["verify", "--expect-gpus", "0"],
        ["report", "{tmp}", "--out", "{tmp}/report"],
        ["compare", "{tmp}/a.json", "{tmp}/b.json"],
    ],
)
def test_bad_input_to_each_command_exits_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(tmp=tmp_path) for a in argv]
    try:
        code = cli.main(args)
    except SystemExit as stop:  # argparse's own refusals
        code = int(stop.code or 0)
    assert code == exitcodes.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_outside_a_run_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_args: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "compare", interrupted)
    assert cli.main(["compare", "a.json", "b.json"]) == exitcodes.INTERRUPTED == 130
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("scenario", "verdict", "code"),
    [
        ("a100x8", verify.PASS, 0),
        ("ecc_off", verify.WARN, 3),
        ("ecc_counters_unreadable", verify.WARN, 3),
        ("retired_pages_pending", verify.FAIL, 1),
    ],
)
def test_verify_exits_with_its_verdicts_code(
    scenario: str,
    verdict: str,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    box = FakeMachine(scenario)
    monkeypatch.setattr(app, "verify_seams", lambda: box.seams)
    assert cli.main(["verify", "--level", "quick", "--backend", "jax"]) == code
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == f"verdict: {verdict}"


@pytest.mark.parametrize(
    ("runner", "code"),
    [(0, exitcodes.OK), (1, exitcodes.FAILED), (130, 130), (143, 143), (129, 143)],
)
def test_a_runs_outcome_maps_onto_the_table(runner: int, code: int) -> None:
    assert app.exit_code(runner) == code


def test_the_table_names_every_code_and_no_two_outcomes_share_one() -> None:
    codes = [getattr(exitcodes, n) for n in dir(exitcodes) if n.isupper() and n != "TABLE"]
    assert sorted(codes) == sorted(exitcodes.TABLE) == [0, 1, 2, 3, 70, 130, 143]


# A command that prints its verdict line and exits with WARN's code, run through the real entry.
VERDICT_CLI = "def main():\n    print('verdict: WARN')\n    return 3\n"
THROUGH_ENTRY = "import sys; from bench import entry; sys.exit(entry.run('dlbench', 'verdict_cli'))"


def through_entry(tmp_path: Path, stdout: Any, shell: str = "") -> subprocess.CompletedProcess[str]:
    """The verdict command through bench.entry in a real process; `shell` redirects in bash."""
    (tmp_path / "verdict_cli.py").write_text(VERDICT_CLI)
    argv = [sys.executable, "-c", THROUGH_ENTRY]
    if shell:
        argv = ["bash", "-c", f'exec "$0" "$@" {shell}', *argv]
    return subprocess.run(
        argv,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])},
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("command", [["-m", "bench", "list"], ["-m", "cloud", "--help"]])
def test_a_reader_that_stopped_ends_the_output_quietly(command: list[str]) -> None:
    """`dlbench list | head -1`, where head has gone before the first line: like cat, no
    traceback and the command's own code (a closed pipe is not a bug in dlstation)."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, *command],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (exitcodes.OK, "")


def test_a_verdict_into_a_closed_pipe_keeps_its_code(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        done = through_entry(tmp_path, write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (exitcodes.WARN, "")


def command_into(argv: list[str], stdout: Any = None) -> subprocess.CompletedProcess[str]:
    """A real command with its stdout given (inherited when None), its stderr kept."""
    return subprocess.run(
        argv, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300, check=False
    )


@pytest.mark.parametrize("command", [["-m", "bench", "list"], ["-m", "cloud", "--help"]])
def test_output_onto_a_full_disk_fails_with_one_line(command: list[str]) -> None:
    """What was asked for was not delivered: FAIL's code and why, never 70 or a silent 0."""
    with Path("/dev/full").open("w") as full:
        done = command_into([sys.executable, *command], full)
    name = "dlbench" if "bench" in command else "dlcloud"
    assert done.returncode == exitcodes.FAILED, done.stderr
    assert done.stderr == f"{name}: cannot write to standard output: No space left on device\n"


def test_a_verdict_onto_a_full_disk_keeps_its_code_and_says_so(tmp_path: Path) -> None:
    with Path("/dev/full").open("w") as full:
        done = through_entry(tmp_path, full)
    assert done.returncode == exitcodes.WARN, done.stderr
    assert done.stderr == "dlbench: cannot write to standard output: No space left on device\n"


def test_a_closed_standard_output_is_refused_before_any_work(tmp_path: Path) -> None:
    done = through_entry(tmp_path, None, shell=">&-")
    assert done.returncode == exitcodes.USAGE, done.stderr
    assert done.stderr == (
        "dlbench: error: standard output is closed; send it to a file or /dev/null\n"
    )
    assert not (tmp_path / "__pycache__").exists(), "the command itself was never imported"


@pytest.mark.parametrize(
    ("redirect", "why"),
    [
        ('ulimit -f 0; exec "$0" "$@" > {tmp}/out', "File too large"),
        ('exec "$0" "$@" 1</dev/null', "Bad file descriptor"),
    ],
)
def test_other_output_errors_fail_with_one_line(tmp_path: Path, redirect: str, why: str) -> None:
    """A file-size limit, or stdout opened for reading only: not a bug in dlstation either."""
    for command in (["-m", "bench", "list"], ["-m", "cloud", "--help"]):
        done = command_into(["bash", "-c", redirect.format(tmp=tmp_path), sys.executable, *command])
        name = "dlbench" if "bench" in command else "dlcloud"
        assert done.returncode == exitcodes.FAILED, done.stderr
        assert done.stderr == f"{name}: cannot write to standard output: {why}\n"


def test_a_result_with_no_room_fails_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk under the results: a failed run (1) and why, not a bug in dlstation."""

    def full(*_args: Any) -> str:
        raise output.NoRoomError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "compare", full)
    assert cli.main(["compare", "a.json", "b.json"]) == exitcodes.FAILED
    assert capsys.readouterr().err == "dlbench: No space left on device\n"
