"""The on-instance idle watchdog, executed for real over the real /proc with a controlled clock:
the clock, the GPU, Jupyter's answers, the keep-alive, and the boot script that installs it.
The process trees (SSH, Ansible, bench, CPU) are in tests/integration/test_idle_sessions.py."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloud import guard, idle
from tests.conftest import free_port
from tests.fakes.idle import B0, MINUTE, T0, WATCHDOG, Box, Kernels, idle_box, watchdog_module


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    with idle_box(tmp_path) as fake:
        yield fake


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def test_powers_off_only_after_the_whole_period_idle(box: Box) -> None:
    assert box.run(0) == (False, "dlstation-idle: idle 0m of 30m: nothing in use")
    assert box.run(29) == (False, "dlstation-idle: idle 29m of 30m: nothing in use")
    assert box.run(30.5) == (True, "dlstation-idle: idle 30m of 30m: nothing in use; powering off")


def test_a_gpu_process_at_zero_percent_keeps_it_up(box: Box) -> None:
    box.run(0)
    box.gpus("0, 0\n1, 0\n", apps="4242, python\n")
    powered, line = box.run(45)
    assert not powered
    assert line == "dlstation-idle: busy, idle 0m of 30m: gpu: 1 process(es) on a GPU (pid 4242)"
    box.gpus("0, 0\n1, 0\n")
    assert box.run(74)[0] is False, "idle only 29 minutes since the process let go of the GPU"
    assert box.run(75)[0] is True


def test_gpu_utilisation_alone_also_counts(box: Box) -> None:
    box.gpus("0, 0\n1, 87\n")
    powered, line = box.run(40)
    assert not powered and line.endswith("busy, idle 0m of 30m: gpu: GPU 1 at 87%")


@pytest.mark.parametrize(
    ("clock_step_h", "powered_at_31m"),
    [(+2, True), (-10, True)],
)
def test_the_wall_clock_stepping_changes_nothing(
    box: Box, clock_step_h: float, powered_at_31m: bool
) -> None:
    assert box.run(0)[0] is False
    stepped = T0 + clock_step_h * 3600
    powered, line = box.run(1, wall=stepped + MINUTE)
    assert not powered and "idle 1m of 30m" in line, "one idle minute on the boot clock"
    assert box.run(31, wall=stepped + 31 * MINUTE)[0] is powered_at_31m


def test_recent_kernel_activity_counts_as_use(box: Box) -> None:
    Kernels.answer = [
        {"id": "k1", "execution_state": "idle", "last_activity": stamp(T0 + 20 * MINUTE)}
    ]
    box.run(0)
    powered, line = box.run(45)
    assert not powered and "idle 25m of 30m" in line, "idle since the kernel's last activity"
    assert box.run(51)[0] is True


def test_kernel_activity_survives_a_wall_clock_step(box: Box) -> None:
    """Activity read at minute 20 stays at minute 20 of the boot clock after a 10 h step back."""
    Kernels.answer = [{"id": "k1", "execution_state": "idle", "last_activity": stamp(T0)}]
    box.run(0)
    Kernels.answer = [
        {"id": "k1", "execution_state": "idle", "last_activity": stamp(T0 + 20 * MINUTE)}
    ]
    assert "idle 0m" in box.run(20)[1]
    back = T0 - 10 * 3600
    powered, line = box.run(45, wall=back + 45 * MINUTE)
    assert not powered and "idle 25m of 30m" in line, line
    assert box.run(50.5, wall=back + 50.5 * MINUTE)[0] is True


def test_a_kernel_stamp_in_the_future_is_clamped_and_logged(box: Box) -> None:
    Kernels.answer = [
        {"id": "k1", "execution_state": "idle", "last_activity": "2099-01-01T00:00:00Z"}
    ]
    powered, line = box.run(0)
    assert not powered and line.startswith("dlstation-idle: idle 0m of 30m: nothing in use")
    assert "kernel k1 last_activity 2099-01-01T00:00:00Z is in the future" in line
    powered, line = box.run(20)
    assert "idle 20m of 30m" in line and "first seen, 20m ago" in line
    assert box.run(30)[0] is True, "a stamp stuck in the future must not keep it up forever"


def test_a_busy_kernel_keeps_it_up(box: Box) -> None:
    Kernels.answer = [{"id": "k1", "execution_state": "busy", "last_activity": stamp(T0)}]
    box.run(0)
    powered, line = box.run(60)
    assert not powered and line.endswith("jupyter: kernel k1 is busy")


@pytest.mark.parametrize(
    "answer",
    [[1, 2], {"kernels": []}, "busy", None, [{"id": "k1", "last_activity": 7}]],
)
def test_an_answer_that_cannot_be_parsed_is_busy_with_its_reason(box: Box, answer: Any) -> None:
    Kernels.answer = answer
    powered, line = box.run(60)
    assert not powered
    if isinstance(answer, list) and answer and isinstance(answer[0], dict):
        assert line.startswith("dlstation-idle: busy, idle 0m of 30m: jupyter: cannot tell")
        assert "kernel k1 last_activity 7" in line
    else:
        assert line.startswith("dlstation-idle: busy, idle 0m of 30m: jupyter: cannot tell")
        assert "not a list of kernels" in line


def test_a_check_that_cannot_tell_for_hours_says_so_in_every_line(box: Box) -> None:
    (box.root / "token.env").write_text("JUPYTER_TOKEN=wrong\n")
    lines = [box.run(minutes)[1] for minutes in (0, 1, 90, 200)]
    assert all(line.startswith("dlstation-idle: busy, idle 0m of 30m:") for line in lines)
    assert "jupyter: cannot tell for 0m (/api/kernels: HTTP Error 403: Forbidden)" in lines[0]
    assert "jupyter: cannot tell for 1h30m" in lines[2]
    assert "jupyter: cannot tell for 3h20m" in lines[3]
    (box.root / "token.env").write_text("JUPYTER_TOKEN=0123456789abcdef\n")
    assert box.run(201)[1] == "dlstation-idle: idle 1m of 30m: nothing in use"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: (b.root / "bin" / "nvidia-smi").unlink(), "gpu: cannot tell for 0m (["),
        (lambda b: b.gpus("NVIDIA-SMI has failed", code=9), "gpu: cannot tell for 0m (nvidia-smi"),
        (lambda b: b.gpus("0, ??\n"), "gpu: cannot tell for 0m (unreadable"),
        (lambda b: b.gpus("0, nan\n"), "gpu: cannot tell for 0m (unreadable"),
        (lambda b: b.gpus("0, -5\n"), "gpu: cannot tell for 0m (unreadable"),
        (lambda b: b.gpus("0, 250\n"), "gpu: cannot tell for 0m (unreadable"),
        (lambda b: b.gpus("0\n"), "gpu: cannot tell for 0m (unreadable"),
    ],
)
def test_a_gpu_that_cannot_be_read_counts_as_busy(box: Box, change: Any, reason: str) -> None:
    box.run(0)
    change(box)
    powered, line = box.run(60)
    assert not powered and reason in line
    assert line.count("gpu:") == 1, f"one reason, said once: {line}"


def test_the_gpus_after_an_unreadable_line_are_still_read(box: Box) -> None:
    """One GPU that cannot be read must not hide another that is busy."""
    box.run(0)
    box.gpus("0, ??\n1, 93\n2, ??\n")
    powered, line = box.run(60)
    assert not powered and "gpu: GPU 1 at 93%" in line, line
    assert line.count("gpu: cannot tell") == 1 and "'0, ??'" in line, line


def test_a_blank_line_from_nvidia_smi_is_no_gpu_at_all(box: Box) -> None:
    box.run(0)
    box.gpus("0, 0\n\n1, 2\n")
    assert box.run(30)[0], "every GPU line was read, and none was in use"


def test_a_gpu_that_reports_no_utilisation_is_judged_by_its_processes(box: Box) -> None:
    """MIG GPUs say [N/A] for utilisation, every round: were that 'cannot tell', an idle MIG
    instance would never power off. The processes holding a GPU are listed all the same."""
    box.gpus("0, [N/A]\n1, [Not Supported]\n")
    box.run(0)
    box.gpus("0, [N/A]\n1, [Not Supported]\n", apps="4242, python3\n")
    powered, line = box.run(30)
    assert not powered and "gpu: 1 process(es) on a GPU (pid 4242)" in line, line
    box.gpus("0, [N/A]\n1, [Not Supported]\n")
    powered, line = box.run(61)
    assert powered, line
    assert "(note: GPU 0, 1: no utilisation reported, its processes decide)" in line, line


def test_no_jupyter_installed_is_no_busy_kernel(box: Box) -> None:
    box.env["DLSTATION_JUPYTER_URL"] = f"http://127.0.0.1:{free_port()}"
    (box.root / "token.env").unlink()
    box.run(0)
    assert box.run(31)[0] is True


def test_a_broken_state_file_restarts_the_count_and_says_so(box: Box) -> None:
    box.run(0)
    (box.root / "state.json").write_text("{not json")
    powered, line = box.run(40)
    assert not powered and line.startswith("dlstation-idle: idle 0m of 30m: nothing in use")
    assert "unreadable" in line
    assert box.run(70)[0] is True


def keepalive(box: Box, minutes: float, *args: str) -> subprocess.CompletedProcess[str]:
    clock = {"DLSTATION_IDLE_BOOT_NOW": str(B0 + minutes * MINUTE)}
    return subprocess.run(
        [sys.executable, str(WATCHDOG), "keepalive", *args],
        env={**box.env, **clock},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_keepalive_holds_it_up_until_it_expires(box: Box) -> None:
    box.run(0)
    done = keepalive(box, 10, "2h")
    assert done.returncode == 0 and "keep-alive set: busy for 2h00m" in done.stdout
    powered, line = box.run(100)
    assert not powered and line.endswith("busy, idle 0m of 30m: keep-alive: 30m left")
    assert box.run(129)[1].endswith("keep-alive: 1m left")
    assert box.run(131)[1] == "dlstation-idle: idle 2m of 30m: nothing in use"
    assert box.run(160)[0] is True


def test_a_keepalive_can_be_cleared_and_bad_ones_are_refused(box: Box) -> None:
    box.run(0)
    keepalive(box, 0, "1d")
    assert box.run(1)[1].endswith("keep-alive: 23h59m left")
    assert keepalive(box, 1, "off").returncode == 0
    assert box.run(31)[0] is True
    bad = keepalive(box, 0, "soon")
    assert bad.returncode == 2 and "write e.g. 90m, 2h or 1d" in bad.stderr
    (box.root / "keepalive").write_text("tomorrow\n")
    powered, line = box.run(40)
    assert not powered and "keep-alive: cannot tell" in line


def test_the_decision_line_is_what_dlcloud_list_shows(box: Box) -> None:
    lines = [box.run(0)[1]]
    keepalive(box, 1, "90m")
    lines.append(box.run(2)[1])
    console = "boot noise\n" + "\n".join(lines) + "\n"
    assert idle.last_decision(console) == "busy: keep-alive 1h29m left"
    assert idle.last_decision(lines[0]) == "idle 0m of 30m"
    assert idle.last_decision("booting\n") is None
    (box.root / "token.env").write_text("JUPYTER_TOKEN=wrong\n")
    box.run(3)
    stuck = box.run(200)[1]
    assert idle.last_decision(console + stuck) == "busy: jupyter cannot tell for 3h17m"


def test_the_boot_script_installs_this_very_watchdog(tmp_path: Path) -> None:
    script = guard.watchdog_user_data(
        datetime(2026, 11, 27, tzinfo=timezone.utc), timedelta(minutes=30)
    )
    (tmp_path / "boot.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "boot.sh")], check=False).returncode == 0
    packed = script.split("idle_watchdog.py\n", 1)[1].split("\nWATCHDOG\n", 1)[0]
    assert gzip.decompress(base64.b64decode(packed)) == WATCHDOG.read_bytes()
    assert "DLSTATION_IDLE_SECONDS=1800" in script
    assert f"/usr/local/bin/{guard.KEEPALIVE_COMMAND}" in script
    assert len(script.encode()) < 16 * 1024, "EC2 user data holds at most 16 KiB"


def test_the_boot_scripts_decoder_gives_back_the_file(tmp_path: Path) -> None:
    """The same base64 | gunzip the instance runs, here, byte for byte."""
    script = guard.idle_watchdog_units(timedelta(minutes=30))
    decode = script.split("\n", 1)[1].split("\nWATCHDOG\n", 1)[0] + "\nWATCHDOG\n"
    decode = decode.replace("/usr/local/lib/dlstation/", f"{tmp_path}/")
    subprocess.run(["bash", "-c", decode], check=True, timeout=60)
    assert (tmp_path / "idle_watchdog.py").read_bytes() == WATCHDOG.read_bytes()


def test_state_is_json_on_the_boot_clock(box: Box) -> None:
    box.run(3)
    state = json.loads((box.root / "state.json").read_text())
    assert state["idle_since"] == B0 + 3 * MINUTE
    assert state["last"] == "dlstation-idle: idle 0m of 30m: nothing in use"


@pytest.mark.parametrize(
    ("argv", "bench"),
    [
        (["/usr/bin/python3", "-m", "bench", "run", "imdb"], True),
        (["python3", "-u", "-m", "bench.training.worker", "{}"], True),
        (["python3", "-mbench", "verify"], True),
        (["/opt/dlstation/venv/bin/dlbench", "run"], True),
        (["python3", "/home/u/dlstation/bench/cli.py"], True),
        (["python3", "-m", "benchmark"], False),
        (["python3", "-m", "pytest", "tests/"], False),
        (["/usr/bin/bash", "-l"], False),
    ],
)
def test_a_bench_command_line_is_recognised_in_every_shape(argv: list[str], bench: bool) -> None:
    assert watchdog_module().is_bench(argv) is bench
