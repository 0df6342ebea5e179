"""The on-instance idle watchdog, executed for real: fake nvidia-smi and who on PATH, a fake
JupyterLab API on 127.0.0.1, a fake /proc, and a power-off command the test observes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cloud import guard
from tests.conftest import free_port

T0 = 1_800_000_000.0  # a fixed clock, seconds since the epoch
MINUTE = 60.0
TOKEN = "0123456789abcdef"


class Kernels(BaseHTTPRequestHandler):
    """GET /api/kernels as JupyterLab answers it, only with the right token."""

    kernels: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        if self.path != "/api/kernels" or self.headers.get("Authorization") != f"token {TOKEN}":
            self.send_response(403)
            self.end_headers()
            return
        body = json.dumps(type(self).kernels).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Box:
    """A fake instance: what its tools report, and where the watchdog's traces land."""

    root: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    def tool(self, name: str, output: str, code: int = 0) -> None:
        script = self.root / "bin" / name
        script.write_text(f"#!{sys.executable}\nprint({output!r})\nraise SystemExit({code})\n")
        script.chmod(0o755)

    def remove_tool(self, name: str) -> None:
        (self.root / "bin" / name).unlink()

    def process(self, pid: int, *argv: str) -> None:
        folder = self.root / "proc" / str(pid)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    def run(self, minutes: float) -> tuple[bool, str]:
        """One watchdog round at T0 + minutes: (did it power off, its log line)."""
        done = subprocess.run(
            [sys.executable, str(resources.files("cloud").joinpath("data/idle_watchdog.py"))],
            env={**self.env, "DLSTATION_IDLE_NOW": str(T0 + minutes * MINUTE)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        marker = self.root / "powered-off"
        powered = marker.exists()
        marker.unlink(missing_ok=True)
        return powered, done.stdout.strip()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    (tmp_path / "bin").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "token.env").write_text(f"JUPYTER_TOKEN={TOKEN}\n")
    Kernels.kernels = []
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Kernels)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake = Box(tmp_path, port)
    fake.env = {
        "PATH": str(tmp_path / "bin"),
        "DLSTATION_IDLE_SECONDS": str(30 * MINUTE),
        "DLSTATION_IDLE_STATE": str(tmp_path / "idle-since"),
        "DLSTATION_IDLE_POWEROFF": f"{sys.executable} -c \"open('{tmp_path}/powered-off', 'w')\"",
        "DLSTATION_JUPYTER_URL": f"http://127.0.0.1:{port}",
        "DLSTATION_JUPYTER_TOKEN_FILE": str(tmp_path / "token.env"),
        "DLSTATION_IDLE_PROC": str(tmp_path / "proc"),
    }
    fake.tool("nvidia-smi", "0, 0\n1, 2")
    fake.tool("who", "")
    fake.process(1, "/sbin/init")
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def test_powers_off_only_after_the_whole_period_idle(box: Box) -> None:
    assert box.run(0) == (False, "dlstation-idle: idle 0m of 30m: nothing in use")
    assert box.run(29) == (False, "dlstation-idle: idle 29m of 30m: nothing in use")
    powered, line = box.run(30.5)
    assert powered and "idle 30m of 30m" in line and "powering off" in line


def test_gpu_use_restarts_the_period(box: Box) -> None:
    box.run(0)
    box.tool("nvidia-smi", "0, 0\n1, 87")
    powered, line = box.run(10)
    assert not powered and line.endswith("busy, idle 0m of 30m: gpu: GPU 1 at 87%")
    box.tool("nvidia-smi", "0, 0\n1, 0")
    assert box.run(35)[0] is False, "idle only 25 minutes since the GPU was busy"
    assert box.run(41)[0] is True


def test_an_open_ssh_session_keeps_it_up(box: Box) -> None:
    box.tool("who", "ubuntu   pts/0        2026-11-27 12:00 (203.0.113.7)")
    box.run(0)
    powered, line = box.run(60)
    assert not powered and "ssh: 1 session(s) open" in line


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.remove_tool("nvidia-smi"), "gpu: cannot run nvidia-smi"),
        (lambda b: b.tool("nvidia-smi", "NVIDIA-SMI has failed", 9), "gpu: nvidia-smi failed"),
        (lambda b: b.remove_tool("who"), "ssh: cannot run who"),
        (lambda b: (b.root / "token.env").write_text("JUPYTER_TOKEN=wrong\n"), "jupyter: cannot"),
    ],
)
def test_a_check_that_cannot_run_counts_as_busy(box: Box, change: Any, reason: str) -> None:
    box.run(0)
    change(box)
    powered, line = box.run(60)
    assert not powered and reason in line


def test_a_busy_kernel_keeps_it_up(box: Box) -> None:
    Kernels.kernels = [{"id": "k1", "execution_state": "busy", "last_activity": ""}]
    box.run(0)
    powered, line = box.run(60)
    assert not powered and "jupyter: kernel k1 is busy" in line


def test_recent_kernel_activity_counts_as_use(box: Box) -> None:
    used = datetime.fromtimestamp(T0 + 20 * MINUTE, timezone.utc).isoformat()
    Kernels.kernels = [
        {"id": "k1", "execution_state": "idle", "last_activity": used.replace("+00:00", "Z")}
    ]
    box.run(0)
    powered, line = box.run(45)
    assert not powered and "idle 25m of 30m" in line, "idle since the kernel's last activity"
    assert box.run(51)[0] is True


def test_no_jupyter_server_is_no_busy_kernel(box: Box) -> None:
    box.env["DLSTATION_JUPYTER_URL"] = f"http://127.0.0.1:{free_port()}"
    box.run(0)
    assert box.run(31)[0] is True


@pytest.mark.parametrize(
    "argv",
    [
        ("/opt/dlstation/venv/bin/python", "/opt/dlstation/venv/bin/dlbench", "run"),
        ("/usr/bin/python3", "/usr/bin/ansible-playbook", "setup.yml"),
    ],
)
def test_dlbench_or_ansible_running_keeps_it_up(box: Box, argv: tuple[str, ...]) -> None:
    box.process(4242, *argv)
    box.run(0)
    powered, line = box.run(60)
    assert not powered and "processes:" in line and "pid 4242" in line


def test_the_boot_script_installs_this_very_watchdog(tmp_path: Path) -> None:
    script = guard.watchdog_user_data(
        datetime(2026, 11, 27, tzinfo=timezone.utc), timedelta(minutes=30)
    )
    (tmp_path / "boot.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "boot.sh")], check=False).returncode == 0
    installed = script.split("<<'WATCHDOG'\n", 1)[1].split("\nWATCHDOG\n", 1)[0]
    packaged = resources.files("cloud").joinpath("data/idle_watchdog.py").read_text()
    assert installed == packaged.rstrip()
    assert "DLSTATION_IDLE_SECONDS=1800" in script
    assert len(script.encode()) < 16 * 1024, "EC2 user data holds at most 16 KiB"
