"""A box the idle watchdog runs in for real: the real /proc and /proc/net, a fake nvidia-smi on
PATH, a fake JupyterLab API on 127.0.0.1, a controlled clock, and a power-off the test observes.

Processes are scoped: the watchdog counts only those whose environment holds this box's marker
(DLSTATION_IDLE_ONLY_ENV), so the test runner and anything else on the machine stay out of it
while the processes a test starts (and every process of its sshd's sessions) are in.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from tests.conftest import free_port

T0 = 1_800_000_000.0  # the wall clock at minute 0, seconds since the epoch
B0 = 5_000.0  # the boot clock at minute 0
MINUTE = 60.0
TOKEN = "0123456789abcdef"
MARKER = "DLSTATION_IDLE_TEST"
WATCHDOG = Path(str(resources.files("cloud").joinpath("data/idle_watchdog.py")))


def watchdog_module() -> Any:
    """The watchdog script imported as a module (it runs on the instance alone, so it is not
    part of the cloud package): for its defaults and the pure parts of its decision."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("idle_watchdog_script", WATCHDOG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *--query-compute-apps*) /bin/cat {root}/nvidia-smi.apps ;;
  *) /bin/cat {root}/nvidia-smi.gpus ;;
esac
exit "$(/bin/cat {root}/nvidia-smi.code)"
"""


# Holds a Python process at startup, its final argv already in place, until the test lets go:
# the interpreter imports sitecustomize before the main module, which opens this FIFO to read.
HOLD_AT_START = """import os
if "DLSTATION_TEST_HOLD" in os.environ:
    open(os.environ["DLSTATION_TEST_HOLD"]).close()
"""


def held_start_env(root: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment that holds each Python process started with it; the FIFO that lets go."""
    (root / "hold").mkdir()
    (root / "hold" / "sitecustomize.py").write_text(HOLD_AT_START)
    fifo = root / "hold" / "go"
    os.mkfifo(fifo)
    # Before, not instead of, what the environment puts on the path (a mutation run's copy).
    path = os.pathsep.join(filter(None, [str(root / "hold"), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "DLSTATION_TEST_HOLD": str(fifo)}, fifo


def new_marker() -> str:
    """KEY=VALUE in the environment of every process one test's watchdog should count."""
    return f"{MARKER}={uuid.uuid4().hex}"


class Kernels(BaseHTTPRequestHandler):
    """GET /api/kernels as JupyterLab answers it, only with the right token."""

    answer: ClassVar[Any] = []
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        wrong = self.headers.get("Authorization") != f"token {TOKEN}"
        if self.path != "/api/kernels" or wrong or type(self).status != 200:
            self.send_response(403 if wrong else type(self).status)
            self.end_headers()
            return
        body = json.dumps(type(self).answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Box:
    """One instance as the watchdog sees it; `run` is one round of the real script."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    marker: str = field(default_factory=new_marker)

    def gpus(self, gpus: str, apps: str = "", code: int = 0) -> None:
        """What the fake nvidia-smi reports: 'index, util%' lines and 'pid, name' lines."""
        (self.root / "nvidia-smi.gpus").write_text(gpus)
        (self.root / "nvidia-smi.apps").write_text(apps)
        (self.root / "nvidia-smi.code").write_text(str(code))

    def traffic(self, net_bytes: int, disk_bytes: int) -> None:
        """Counters as /proc/net/dev and /proc/diskstats write them: eth0's and nvme0n1's."""
        rx, tx = net_bytes // 2, net_bytes - net_bytes // 2
        (self.root / "net-dev").write_text(
            "Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
            "    lo: 99999999 10 0 0 0 0 0 0 99999999 10 0 0 0 0 0 0\n"
            f"  eth0: {rx} 10 0 0 0 0 0 0 {tx} 10 0 0 0 0 0 0\n"
        )
        sectors = disk_bytes // 512
        (self.root / "diskstats").write_text(
            f" 259       0 nvme0n1 10 0 {sectors // 2} 5 10 0 {sectors - sectors // 2} 5 0 9 9\n"
            f" 259       1 nvme0n1p1 10 0 {sectors} 5 10 0 {sectors} 5 0 9 9\n"
            "   7       0 loop0 10 0 99999999 5 0 0 0 0 0 9 9\n"
        )

    def scoped_env(self, base: dict[str, str]) -> dict[str, str]:
        """An environment for a process the watchdog should count."""
        key, _, value = self.marker.partition("=")
        return {**base, key: value}

    def run(
        self, minutes: float, wall: float | None = None, args: tuple[str, ...] = (), **env: str
    ) -> tuple[bool, str]:
        """One round at boot minute `minutes` (wall clock alongside unless given)."""
        clock = {
            "DLSTATION_IDLE_BOOT_NOW": str(B0 + minutes * MINUTE),
            "DLSTATION_IDLE_NOW": str(T0 + minutes * MINUTE if wall is None else wall),
        }
        done = subprocess.run(
            [sys.executable, str(WATCHDOG), *args],
            env={**self.env, **clock, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == "", done.stderr
        marker = self.root / "powered-off"
        powered = marker.exists()
        marker.unlink(missing_ok=True)
        return powered, done.stdout.strip()


@contextmanager
def idle_box(root: Path, ssh_port: int | None = None, marker: str | None = None) -> Iterator[Box]:
    """A box with an idle GPU, a JupyterLab with no kernels, and no SSH listener of its own."""
    (root / "bin").mkdir()
    (root / "token.env").write_text(f"JUPYTER_TOKEN={TOKEN}\n")
    Kernels.answer, Kernels.status = [], 200
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Kernels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    box = Box(root, marker=marker) if marker else Box(root)
    smi = root / "bin" / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI.format(root=shlex.quote(str(root))))
    smi.chmod(0o755)
    box.gpus("0, 0\n1, 2\n")
    box.env = {
        "PATH": str(root / "bin"),
        "DLSTATION_IDLE_SECONDS": str(30 * MINUTE),
        "DLSTATION_IDLE_STATE": str(root / "state.json"),
        "DLSTATION_KEEPALIVE_FILE": str(root / "keepalive"),
        "DLSTATION_IDLE_POWEROFF": f"{sys.executable} -c \"open('{root}/powered-off', 'w')\"",
        "DLSTATION_JUPYTER_URL": f"http://127.0.0.1:{port}",
        "DLSTATION_JUPYTER_TOKEN_FILE": str(root / "token.env"),
        "DLSTATION_IDLE_SSH_PORTS": str(ssh_port or free_port()),
        "DLSTATION_IDLE_ONLY_ENV": box.marker,
        # The tests' rounds are minutes apart on the controlled clock, not one a minute.
        "DLSTATION_IDLE_MAX_GAP_S": str(86400),
        # The machine's own counters move with whatever else runs here: the box's stay still
        # unless a test moves them.
        "DLSTATION_IDLE_NET_DEV": str(root / "net-dev"),
        "DLSTATION_IDLE_DISKSTATS": str(root / "diskstats"),
    }
    box.traffic(0, 0)
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
