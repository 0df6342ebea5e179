"""What the idle watchdog counts as use, against real processes the test starts (scoped by the
box's marker) and a controlled boot clock: short-lived and summed CPU, processes without argv,
tmux, traffic, time nobody watched, and every field it reads from disk or the network."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloud import guard, idle
from tests.conftest import REPO, free_port
from tests.fakes.idle import MINUTE, T0, Box, Kernels, held_start_env, idle_box

WAIT_S = 120.0
TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    with idle_box(tmp_path) as fake:
        yield fake


def wait_for(what: str, condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def ticks(pid: int, own: bool = True, children: bool = True) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * own + (
        int(fields[13]) + int(fields[14])
    ) * children


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def started(box: Box, argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A real process in the box's scope, in its own process group, killed with it after."""
    env = box.scoped_env(kwargs.pop("env", dict(os.environ)))
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def test_cpu_of_children_shorter_than_a_round_counts(box: Box) -> None:
    """A loop of short steps (make -j, a sweep): each step ends before the next round."""
    step = "while :; do timeout 0.2 sh -c 'while :; do :; done'; done"
    with started(box, ["sh", "-c", step]) as loop:
        wait_for("a first step reaped", lambda: ticks(loop.pid, own=False) > 0)
        assert box.run(0)[0] is False
        first = ticks(loop.pid, own=False)
        wait_for(
            "half a second of reaped CPU", lambda: ticks(loop.pid, own=False) >= first + TICKS // 2
        )
        powered, line = box.run(1 / 60)
    assert not powered and "cpu: pid" in line and "in all" in line, line


def test_a_process_started_since_the_last_round_counts_all_its_cpu(box: Box) -> None:
    assert box.run(0)[0] is False
    with started(box, [sys.executable, "-c", "while True: pass"]) as loop:
        wait_for("half a second of CPU", lambda: ticks(loop.pid) >= TICKS // 2)
        powered, line = box.run(1 / 60)
    assert not powered and f"cpu: pid {loop.pid} python" in line, line


def test_a_process_without_a_command_line_still_counts(box: Box) -> None:
    with started(box, ["bash", "-c", 'exec -a "" yes >/dev/null']) as yes:
        wait_for("yes to run", lambda: Path(f"/proc/{yes.pid}/cmdline").read_bytes() == b"\0")
        box.run(0)
        first = ticks(yes.pid)
        wait_for("half a second of CPU", lambda: ticks(yes.pid) >= first + TICKS // 2)
        powered, line = box.run(1 / 60)
    assert not powered and f"cpu: pid {yes.pid} yes at" in line, line


def test_the_cpu_share_is_summed_over_processes(box: Box) -> None:
    """Four workers, each under the share, together over it."""
    loop = [sys.executable, "-c", "while True: pass"]
    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(started(box, loop)) for _ in range(4)]
        box.run(0)
        base = [ticks(w.pid) for w in workers]
        wait_for(
            "CPU on every worker",
            lambda: all(ticks(w.pid) > b + 5 for w, b in zip(workers, base, strict=True)),
        )
        for worker in workers:  # held still, so what the round sees is what was measured
            os.kill(worker.pid, signal.SIGSTOP)
        wait_for("them stopped", lambda: all(state(w.pid) == "T" for w in workers))
        used = [ticks(w.pid) - b for w, b in zip(workers, base, strict=True)]
        seconds = sum(used) / TICKS / 0.3  # 30 % of a core in all...
        assert max(used) / TICKS / seconds < 0.2, "...with every one under 20 %"
        powered, line = box.run(seconds / MINUTE)
    assert not powered and "in all" in line, line


def test_a_tmux_server_keeps_it_up(box: Box, tmp_path: Path) -> None:
    """A training job in a detached tmux, waiting on the network: no CPU, no SSH."""
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    socket = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", socket, "-f", "/dev/null"]
    with started(box, [*tmux, "new-session", "-d", "sleep 600"]) as client:
        client.wait(timeout=60)
        try:
            powered, line = box.run(40)
            assert not powered and "session: tmux (pid" in line, line
        finally:
            subprocess.run([*tmux, "kill-server"], check=False, timeout=60)
    assert box.run(41)[1].startswith("dlstation-idle: idle")


def test_mosh_and_ssm_sessions_keep_it_up(box: Box) -> None:
    with started(box, ["bash", "-c", "exec -a mosh-server sleep 600"]) as mosh:
        wait_for("mosh", lambda: b"mosh-server" in Path(f"/proc/{mosh.pid}/cmdline").read_bytes())
        powered, line = box.run(40)
    assert not powered and f"session: mosh (pid {mosh.pid})" in line, line


@pytest.mark.parametrize(
    ("net", "disk", "reason"),
    [(5_000_000, 0, "network: 5.0 MB/s"), (0, 3_000_000, "disk: 3.0 MB/s")],
)
def test_traffic_without_cpu_keeps_it_up(box: Box, net: int, disk: int, reason: str) -> None:
    """A download at 5 MB/s, a copy waiting on the disk: counters over the minute."""
    assert box.run(0)[1].startswith("dlstation-idle: idle 0m")
    box.traffic(net * 60, disk * 60)
    powered, line = box.run(1)
    assert not powered and reason in line, line
    assert box.run(2)[1].startswith("dlstation-idle: idle 1m"), "the counters stood still"
    box.traffic(net * 60 + 30 * 60, disk * 60 + 30 * 60)  # 30 B/s: background noise
    assert box.run(3)[1].startswith("dlstation-idle: idle 2m")


def test_time_no_round_watched_never_counts_as_idle(box: Box) -> None:
    del box.env["DLSTATION_IDLE_MAX_GAP_S"]  # the instance's: two timer intervals
    assert box.run(0)[1].startswith("dlstation-idle: idle 0m")
    powered, line = box.run(45)  # a hung round, a stopped timer
    assert not powered and line.startswith("dlstation-idle: idle 2m of 30m"), line
    assert "no round for 45m" in line


def test_rounds_that_cannot_save_their_state_never_count_as_idle(box: Box) -> None:
    del box.env["DLSTATION_IDLE_MAX_GAP_S"]
    box.run(0)
    (box.root / "state.json.tmp").mkdir()
    (box.root / "keepalive").write_text(f"{5000 + 20 * MINUTE}\n")
    for minute in (10, 20):
        powered, line = box.run(minute)
        assert not powered and "state: cannot save" in line, line
    (box.root / "state.json.tmp").rmdir()
    (box.root / "keepalive").unlink()
    powered, line = box.run(41)
    assert not powered and line.startswith("dlstation-idle: idle 2m of 30m"), line


def test_dlcloud_list_reads_periods_of_an_hour_or_more(box: Box) -> None:
    box.env["DLSTATION_IDLE_SECONDS"] = str(2 * 3600)
    lines = [box.run(0)[1], box.run(65)[1]]
    (box.root / "keepalive").write_text(f"{5000 + 3 * 3600}\n")
    lines.append(box.run(66)[1])
    assert lines[1] == "dlstation-idle: idle 1h05m of 2h00m: nothing in use"
    assert idle.last_decision("\n".join(lines[:2])) == "idle 1h05m of 2h00m"
    assert idle.last_decision("\n".join(lines)) == "busy: keep-alive 1h54m left"


@pytest.mark.parametrize(
    "kernel",
    [
        {"execution_state": "idle", "last_activity": "Tue, 01 Dec 2026 10:00:00 GMT"},
        {"execution_state": "idle", "last_activity": 1800000000},
        {"execution_state": "idle", "last_activity": None},
        {"execution_state": "idle"},
        {"last_activity": "2027-01-15T08:00:00Z"},
        {"execution_state": "restarting", "last_activity": "2027-01-15T08:00:00Z"},
        {"execution_state": "autorestarting", "last_activity": "2027-01-15T08:00:00Z"},
    ],
)
def test_kernel_fields_it_cannot_read_are_busy(box: Box, kernel: dict[str, Any]) -> None:
    Kernels.answer = [{"id": "k1", **kernel}]
    box.run(0)
    powered, line = box.run(40)
    assert not powered and line.startswith("dlstation-idle: busy"), line
    assert "jupyter: " in line


def test_jupyter_refusing_when_installed_is_cannot_tell(box: Box) -> None:
    box.env["DLSTATION_JUPYTER_URL"] = f"http://127.0.0.1:{free_port()}"
    box.run(0)
    powered, line = box.run(40)
    assert not powered and "jupyter: cannot tell for 40m" in line, line
    (box.root / "token.env").unlink()  # no JupyterLab installed: nothing to ask
    assert box.run(41)[1].startswith("dlstation-idle: idle")


class Trickle(BaseHTTPRequestHandler):
    """A server that answers one byte at a time, forever."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        with contextlib.suppress(OSError):
            while True:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_trickling_jupyter_cannot_hold_the_round(box: Box) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        powered, line = box.run(40, DLSTATION_JUPYTER_URL=url, DLSTATION_IDLE_TOOL_TIMEOUT_S="2")
    finally:
        server.shutdown()
        server.server_close()
    assert not powered and "jupyter: cannot tell for 0m (/api/kernels gave no answer in 2s)" in line


def test_a_tool_whose_child_holds_the_pipes_cannot_hold_the_round(box: Box) -> None:
    pidfile = box.root / "held.pid"
    smi = box.root / "bin" / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n/bin/sleep 600 &\necho $! > {pidfile}\nwait\n")
    try:
        powered, line = box.run(40, DLSTATION_IDLE_TOOL_TIMEOUT_S="1")
        assert not powered and "gpu: cannot tell for 0m (nvidia-smi gave no answer in 1s)" in line
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_the_unit_cannot_run_forever() -> None:
    script = guard.idle_watchdog_units(guard.parse_idle("30m") or guard.MAX_TTL)
    assert "Type=oneshot\nTimeoutStartSec=150\n" in script


def test_a_process_name_that_is_not_utf8_is_read(box: Box, tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/\xff\xfe-sleep"))
    shutil.copy("/bin/sleep", odd)
    with started(box, [str(odd), "600"]) as sleeper:
        wait_for("it to run", lambda: b"\xff" in Path(f"/proc/{sleeper.pid}/stat").read_bytes())
        powered, line = box.run(0)
    assert not powered and line.startswith("dlstation-idle: idle 0m"), line


@pytest.mark.parametrize(
    "state",
    [
        {"idle_since": "abc"},
        None,
        {"idle_since": -1e12, "seen_at": 5000.0},
        {"idle_since": 5000.0, "seen_at": 5000.0, "cpu_at": "x"},
        {"idle_since": 5000.0, "seen_at": 5000.0, "cpu": {"1:2": "many"}},
        {"idle_since": 5000.0, "seen_at": 5000.0, "unknown": {"gpu": -1e12}},
    ],
)
def test_a_corrupt_state_field_restarts_the_count(box: Box, state: Any) -> None:
    (box.root / "state.json").write_text(json.dumps(state))
    powered, line = box.run(40)
    assert not powered and line.startswith("dlstation-idle: idle 0m of 30m"), line
    assert "unreadable" in line
    assert box.run(41)[1] == "dlstation-idle: idle 1m of 30m: nothing in use"


@pytest.mark.parametrize("text", ["nan", "inf", "1e309"])
def test_a_keepalive_that_is_no_number_is_cannot_tell(box: Box, text: str) -> None:
    (box.root / "keepalive").write_text(f"{text}\n")
    powered, line = box.run(40)
    assert not powered and "keep-alive: cannot tell for 0m" in line, line


def test_a_keepalive_is_bounded_to_seven_days(box: Box) -> None:
    (box.root / "keepalive").write_text(f"{T0:.0f}\n")  # a wall-clock epoch written by hand
    powered, line = box.run(0)
    assert not powered and "keep-alive: 168h00m left" in line and "beyond 7d" in line, line
    assert "keep-alive: 1h00m left" in box.run(7 * 1440 - 60)[1]
    assert box.run(7 * 1440 + 1)[1].startswith("dlstation-idle: idle")


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-u", "bench/__main__.py"],
        [sys.executable, "-O", str(REPO / "bench" / "__main__.py")],
        [sys.executable, "-c", "import runpy; runpy.run_module('bench', run_name='__main__')"],
    ],
    ids=["-u bench/__main__.py", "-O /abs/bench/__main__.py", "runpy.run_module"],
)
def test_bench_run_any_way_keeps_it_up(box: Box, tmp_path: Path, argv: list[str]) -> None:
    """A real bench process, held at startup (its argv in place) until it has been sampled."""
    env, fifo = held_start_env(tmp_path, dict(os.environ))
    with started(box, [*argv, "--help"], cwd=REPO, env=env) as bench:
        held: list[int] = []

        def reading() -> bool:
            try:
                held.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as error:
                assert error.errno == errno.ENXIO, error
                return False
            return True

        wait_for("bench to open the FIFO", reading)
        powered, line = box.run(40)
        os.close(held[0])
    assert not powered and f"bench: 1 process(es) (pid {bench.pid})" in line, line
